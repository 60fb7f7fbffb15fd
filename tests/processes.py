"""Processes left behind, for the tests that check an embedded Ray is gone with its launcher."""
import os
import subprocess


def processes_of(session: str) -> list:
    """Processes whose command line names the Ray session directory (every Ray process does):
    ``pgrep -a`` lines, pgrep itself left out."""
    out = subprocess.run(["pgrep", "-a", "-f", os.path.basename(session)], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "pgrep" not in line]
