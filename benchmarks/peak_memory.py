"""A process's own peak resident memory, for the benchmarks' memory figures.

``ru_maxrss`` (``resource.getrusage``, ``os.wait4``) is not that for a process started by fork:
Linux copies the parent's peak into the child at fork and keeps it across exec, so a fresh job
started by a launcher that once held 800 MiB reports at least 800 MiB, whatever it used itself.
``VmHWM`` in ``/proc/PID/status`` starts anew at exec: the process's own peak, read while it
lives."""
from __future__ import annotations


def status_bytes(pid: str, names: tuple) -> dict:
    """The memory lines ``names`` (``"VmHWM"``, ``"RssAnon"``, ...) of ``/proc/PID/status`` in
    bytes, by name; a line the kernel does not write is left out. OSError when ``pid`` is gone."""
    wanted = {name.encode() + b":": name for name in names}
    out = {}
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            key = line.split(None, 1)[0] if line.strip() else b""
            if key in wanted:
                out[wanted[key]] = int(line.split()[1]) * 1024
    return out


def own_peak_bytes(pid: str = "self") -> int:
    """``VmHWM`` of ``pid`` (this process by default) in bytes."""
    peak = status_bytes(pid, ("VmHWM",)).get("VmHWM")
    if peak is None:
        raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")
    return peak
