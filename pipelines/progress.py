"""Progress while the job runs: records read so far, images/s and, when the input count is known,
an ETA; a bar on a terminal, a plain line every 10 s otherwise.

Two halves:
* :class:`ProgressDoFn`, a pass-through step right after reading (fused with reading, batching and
  hashing, so its rate is that stage's). Each instance sends its running count, at most twice a
  second, as a UDP datagram to the launcher on 127.0.0.1. One cheap call per record; nothing is
  copied, and a datagram nobody reads costs nothing.
* :class:`ProgressBoard`, in the launcher: receives the counts, adds up the latest of each
  instance, and draws.

Only for runners whose workers run on this machine (the DirectRunner and Prism): a remote
runner's workers could not reach the launcher's 127.0.0.1, and their UIs show progress.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from typing import Dict, Optional, TextIO, Tuple

import apache_beam as beam


class ProgressDoFn(beam.DoFn):
    """Passes records through and reports how many it saw to ``address`` (host, port)."""

    def __init__(self, address: Tuple[str, int], every_seconds: float = 0.5):
        self._address = address
        self._every = every_seconds

    def setup(self):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._sender = uuid.uuid4().hex[:12].encode()
        self._count = 0
        self._last = 0.0

    def process(self, record):
        self._count += 1
        if self._count & 63 == 0:
            self._maybe_send()
        yield record

    def finish_bundle(self):
        self._send()  # so the last count of a worker arrives, whenever teardown runs

    def teardown(self):
        if getattr(self, "_socket", None) is not None:
            self._send()
            self._socket.close()
            self._socket = None

    def _maybe_send(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._send()

    def _send(self) -> None:
        try:
            self._socket.sendto(b"%s %d" % (self._sender, self._count), self._address)
        except OSError:  # nobody listening, or a full buffer: progress is never worth a failure
            pass


class ProgressBoard:
    """Receives :class:`ProgressDoFn` counts on 127.0.0.1 and draws them on ``stream``."""

    def __init__(self, stream: TextIO, total: Optional[int] = None, line_every: float = 10.0):
        self._stream = stream
        self._total = total
        self._line_every = line_every
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._counts: Dict[bytes, int] = {}
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.address: Tuple[str, int] = self._socket.getsockname()
        self._started = time.monotonic()
        self._first: Optional[float] = None
        self._latest: Optional[float] = None
        # A bar is drawn from the first count on; plain lines start after line_every.
        self._drawn = 0.0 if self._tty else self._started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beam-phash-progress", daemon=True)
        self._thread.start()

    @property
    def count(self) -> int:
        return sum(self._counts.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._socket.recv(256)
            except socket.timeout:
                data = None
            except OSError:
                return
            if data:
                sender, _, count = data.partition(b" ")
                if count.isdigit() and int(count) > self._counts.get(sender, 0):
                    self._counts[sender] = int(count)
                    self._latest = time.monotonic()
                    if self._first is None:
                        self._first = self._latest
            now = time.monotonic()
            if now - self._drawn >= (0.2 if self._tty else self._line_every) and self._counts:
                self._drawn = now
                self._draw(now)

    def line(self, now: Optional[float] = None) -> str:
        """The progress as one line: count[/total], images/s, ETA."""
        now = time.monotonic() if now is None else now
        n = self.count
        # The rate until the latest count: it holds still while the outputs are written.
        until = now if self._latest is None else min(now, self._latest)
        spent = until - (until if self._first is None else self._first)
        rate = n / spent if spent > 0.5 else None
        parts = []
        if self._total:
            done = min(n / self._total, 1.0)
            width = 24
            parts.append("[" + "#" * int(done * width) + "-" * (width - int(done * width)) + "]")
            parts.append(f"{n:,}/{self._total:,} records")
        else:
            parts.append(f"{n:,} records")
        if rate:
            parts.append(f"{rate:,.0f} images/s")
            if self._total and n < self._total:
                parts.append(f"ETA {_duration((self._total - n) / rate)}")
        if self._total and n >= self._total:
            parts.append("writing outputs")
        return "beam-phash: " + "  ".join(parts)

    def _draw(self, now: float) -> None:
        text = self.line(now)
        if self._tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self._stream.write("\r" + text[:width].ljust(width))
        else:
            self._stream.write(text + os.linesep)
        self._stream.flush()

    def close(self) -> None:
        """Stop listening; on a terminal, clear the bar's line."""
        self._stop.set()
        try:  # wake the listener now rather than at its next receive timeout (up to 0.2 s)
            self._socket.sendto(b"", self.address)
        except OSError:
            pass
        self._thread.join()
        self._socket.close()
        if self._tty and self._counts:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self._stream.write("\r" + " " * width + "\r")
            self._stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
