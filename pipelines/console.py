"""What the job shows on the terminal, and where everything else goes.

While the job runs, the process's own standard output and error (file descriptors 1 and 2) point
at ``OUTPUT/logs/job.log``, and so does Python's root logger, at INFO. So Beam's and Ray's log
lines, the C++ logs of Ray's core, and whatever Beam's worker processes or Ray's processes print
land there, not on the terminal. The job's own lines (its summary, one-line errors, the progress
bar) go to the terminal through :meth:`Console.say`, :meth:`Console.tell` and :attr:`Console.err`.

Light on purpose (no Beam, no Ray): ``dedup_images`` opens it before importing Beam, whose
import already logs warnings.

When ``sys.stdout`` and ``sys.stderr`` are not the process's descriptors (a notebook, a test
capture), the job's lines go to them, and the descriptors still go to the log.

A reader that goes away (``beam-phash ... | head -1``) does not end the run: the job's lines
after that go nowhere (:class:`Terminal`), and the exit code is the run's.

A refused run (a configuration error, an output that cannot be written: exit code 2) takes its
own lines out of the log on :meth:`Console.close` (what Beam and Ray printed while it started;
the one line on stderr says what was wrong); a log then empty is removed, with the folders the
console made for it. Neither happens while another run on the same output has the log open (each
run holds a shared ``flock`` on it).
"""
from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import time
from typing import Callable, Optional, TextIO

import fcntl  # POSIX only, as the state store

LOG_NAME = "job.log"


def log_dir_for(output: str) -> str:
    """``OUTPUT/logs`` for a local output; a local temporary directory for ``gs://`` and the like
    (the job says where at the end)."""
    if "://" in output:
        return tempfile.mkdtemp(prefix="beam-phash-logs-")
    return os.path.join(output, "logs")


class Terminal:
    """One of the job's terminal streams (stdout or stderr). Once its reader has gone (a closed
    pipe), writes go nowhere instead of raising ``BrokenPipeError`` into the run."""

    def __init__(self, stream: TextIO, owned: bool):
        self.stream = stream
        self.owned = owned  # opened for the console (a dup of the saved descriptor): closed with it
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self.gone = True
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self.gone = True

    def close(self) -> None:
        if self.owned:
            try:
                self.stream.close()
            except BrokenPipeError:  # its last flush: the reader had gone
                pass

    def __getattr__(self, name):  # isatty, fileno, encoding: the stream's
        return getattr(self.stream, name)


class Console:
    """The terminal of one job run: open with :meth:`open`, restore with :meth:`close`."""

    def __init__(self, output: str):
        self.output = output
        self.log_dir = log_dir_for(output)
        self.log_path = os.path.join(self.log_dir, LOG_NAME)
        self.out = Terminal(sys.stdout, owned=False)
        self.err = Terminal(sys.stderr, owned=False)
        self._saved_fds: Optional[tuple] = None
        self._log: Optional[io.TextIOWrapper] = None
        self._handler: Optional[logging.Handler] = None
        self._root_handlers: list = []
        self._root_level = logging.WARNING
        #: the outermost folder made for the log (None: it existed), removed with an empty log
        self._made: Optional[str] = self.log_dir if "://" in output else None
        self._abs_dir = ""  # the log's folder as an absolute path, set by open()
        self._start = 0  # the log's size when this run opened it: what earlier runs wrote

    def open(self) -> "Console":
        try:
            self._made = self._made or _first_missing(self.log_dir)
            os.makedirs(self.log_dir, exist_ok=True)
            self._log = _open_shared(self.log_path)
        except OSError:  # an output that cannot be written: the job says so; the log goes elsewhere
            self.log_dir = self._made = tempfile.mkdtemp(prefix="beam-phash-logs-")
            self.log_path = os.path.join(self.log_dir, LOG_NAME)
            self._log = _open_shared(self.log_path)
        self._abs_dir = os.path.abspath(self.log_dir)  # for close(), whatever the cwd is by then
        self._start = os.fstat(self._log.fileno()).st_size
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        if _is_open(1) and _is_open(2):
            self._saved_fds = (os.dup(1), os.dup(2))
            # Our lines go where sys.stdout/sys.stderr went: the saved descriptors when those
            # streams wrote to fds 1 and 2, else the streams themselves (a capture, a notebook).
            if _fd_of(sys.stdout) == 1:
                self.out = Terminal(open(os.dup(self._saved_fds[0]), "w", buffering=1, encoding="utf-8",
                                         errors="replace"), owned=True)
            if _fd_of(sys.stderr) == 2:
                self.err = Terminal(open(os.dup(self._saved_fds[1]), "w", buffering=1, encoding="utf-8",
                                         errors="replace"), owned=True)
            os.dup2(self._log.fileno(), 1)
            os.dup2(self._log.fileno(), 2)
        root = logging.getLogger()
        self._root_handlers, self._root_level = root.handlers[:], root.level
        for handler in self._root_handlers:
            root.removeHandler(handler)
        self._handler = logging.StreamHandler(self._log)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(self._handler)
        root.setLevel(logging.INFO)
        return self

    def say(self, line: str) -> None:
        """A line of the job's result, on standard output."""
        print(line, file=self.out, flush=True)

    def tell(self, line: str) -> None:
        """A line about the run (start, warnings, one-line errors), on standard error."""
        print(line, file=self.err, flush=True)

    def close(self, refused: bool = False) -> None:
        """Give the terminal back, as it was before :meth:`open`. ``refused``: the run was
        refused before it started, and its lines leave the log."""
        root = logging.getLogger()
        if self._handler is not None:
            root.removeHandler(self._handler)
            for handler in self._root_handlers:
                root.addHandler(handler)
            root.setLevel(self._root_level)
            self._handler = None
        if self._saved_fds is not None:
            for stream in (sys.stdout, sys.stderr, self.out, self.err):
                stream.flush()
            os.dup2(self._saved_fds[0], 1)
            os.dup2(self._saved_fds[1], 2)
            for fd in self._saved_fds:
                os.close(fd)
            for terminal in (self.out, self.err):
                terminal.close()
            self.out, self.err = Terminal(sys.stdout, owned=False), Terminal(sys.stderr, owned=False)
            self._saved_fds = None
        if self._log is not None:
            removed = self._remove_if_empty(refused)
            self._log.close()
            self._log = None
            if removed:
                self._remove_folders()

    def _remove_if_empty(self, refused: bool = False) -> bool:
        """Remove the log if it is empty (``refused``: once this run's lines are cut off) and no
        other run on this output has it open (each holds a shared lock on it while open):
        whether it was removed."""
        log = os.path.join(self._abs_dir, LOG_NAME)
        self._log.flush()
        try:
            fcntl.flock(self._log.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another run has it open
            return False
        except OSError:  # a filesystem without locks: nobody can say; removed, as without them
            pass
        try:
            if refused:
                os.ftruncate(self._log.fileno(), self._start)
            mine = os.fstat(self._log.fileno())
            if mine.st_size > 0 or not os.path.samestat(mine, os.stat(log)):
                return False
            os.remove(log)
        except OSError:  # gone
            return False
        return True

    def _remove_folders(self) -> None:
        """The folders made for the log that its removal left empty, innermost first."""
        if self._made is None:
            return
        folder, made = self._abs_dir, self._made
        while folder.startswith(made):  # from the log's folder up to the outermost one made
            try:
                os.rmdir(folder)
            except OSError:  # not empty (the job wrote there), or gone
                return
            folder = os.path.dirname(folder)


def _open_shared(path: str) -> io.TextIOWrapper:
    """``path`` opened for appending, with a shared lock that tells another run on the same
    output that it is in use. Opened again when a run that was closing removed it meanwhile; left
    unlocked where the filesystem has no locks, or after a few seconds of trying."""
    for _ in range(100):
        log = open(path, "a+", buffering=1, encoding="utf-8", errors="replace")  # a+: NFS locks need read
        try:
            fcntl.flock(log.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # a closing run is removing it: open it again in a moment
            log.close()
            time.sleep(0.05)
            continue
        except OSError:  # no locks here
            return log
        try:
            if os.path.samestat(os.fstat(log.fileno()), os.stat(path)):
                return log
        except OSError:  # removed meanwhile
            pass
        log.close()
    return open(path, "a+", buffering=1, encoding="utf-8", errors="replace")


def _first_missing(path: str) -> Optional[str]:
    """The outermost folder of ``path`` that does not exist yet (None if ``path`` exists)."""
    path = os.path.abspath(path)
    missing = None
    while not os.path.lexists(path):
        missing, parent = path, os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _fd_of(stream) -> Optional[int]:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


_current: Optional[Console] = None


def open_console(output: str) -> Console:
    """The run's console, opened on first use for ``output`` (again if the output changed)."""
    global _current
    if _current is not None and _current.output != output:
        close_console()
    if _current is None:
        _current = Console(output).open()
    return _current


def say_interrupted(con: Console, stop: Optional[Callable[[], None]] = None, line: Optional[str] = None) -> None:
    """Ctrl-C: the traceback to the log, one line to the terminal ("interrupted", or ``line``),
    then ``stop`` (while what it prints still goes to the log), and the terminal given back."""
    logging.getLogger("pipelines").warning("interrupted", exc_info=True)
    con.tell(f"beam-phash: {line or 'interrupted'} (details in {con.log_path})")
    try:
        if stop is not None:
            stop()
    except BaseException:  # noqa: BLE001 - a second Ctrl-C, or a failed stop: to the log only
        logging.getLogger("pipelines").warning("stopping after Ctrl-C", exc_info=True)
    finally:
        close_console()


def say_interrupted_before_help() -> None:
    """Ctrl-C while a request for help starts: the one line, with no console (help writes
    nothing under the output, so there is no log to name)."""
    print("beam-phash: interrupted", file=sys.stderr, flush=True)


def close_console(refused: bool = False) -> None:
    global _current
    if _current is not None:
        _current.close(refused)
        _current = None
