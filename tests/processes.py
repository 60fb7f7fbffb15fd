"""Processes left behind, for the tests that check an embedded Ray is gone with its launcher."""
import os
import subprocess
import time


def processes_of(session: str) -> list:
    """Processes whose command line names the Ray session directory: ``pgrep -a`` lines, pgrep
    itself left out. Ray's agents and workers retitle themselves (``ray::DashboardAgent``) once
    up; :func:`left_in_session` finds those too."""
    out = subprocess.run(["pgrep", "-a", "-f", os.path.basename(session)], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "pgrep" not in line]


def left_in_session(sid: int, wait: float = 10.0) -> list:
    """Processes still in session ``sid`` (a child started with ``start_new_session=True``, and
    all it started) after up to ``wait`` seconds for them to go: ``pgrep -a`` lines."""
    deadline = time.monotonic() + wait
    while True:
        out = subprocess.run(["pgrep", "-a", "-s", str(sid)], capture_output=True, text=True)
        left = [line for line in out.stdout.splitlines() if "pgrep" not in line]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)
