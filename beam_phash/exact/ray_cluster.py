"""Finding or starting the Ray cluster that holds the bucket actors.

* ``ray_address=None``: reuse the Ray this process is already connected to, or else start an
  embedded local Ray: every socket on 127.0.0.1, no dashboard. It is shut down when the process
  that started it (the pipeline launcher) exits, or by :func:`shutdown_local_ray`.
* ``ray_address="auto"`` or ``"host:port"``: connect to an existing cluster.

Token auth: Ray may switch token authentication on for a local cluster (writing
``~/.ray/auth_token``) and sets ``RAY_AUTH_MODE=token`` in the starting process's environment.
Beam's local worker processes are started after that and inherit it, so they can connect. For a
cluster of your own, export ``RAY_AUTH_MODE=token`` and make the token available as
``RAY_AUTH_TOKEN`` or in ``~/.ray/auth_token`` wherever Beam workers run.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
import time
from typing import Optional

import ray

from beam_phash.exact import ray_private

NAMESPACE = "beam_phash"
#: Seconds a stop waits for a head that is still starting (about 2 s on 2 cores).
STOP_WAIT = 60.0
#: Starts of the embedded head before its error is raised. Ray gives a new raylet a fixed 30 s to
#: register with the GCS; once on a loaded machine (a full test run beside a benchmark) it did not
#: come up in time, and the job failed where a second start would have served it.
START_ATTEMPTS = 3
# On Linux Ray advertises (and binds) the machine's routable address, even when asked for
# 127.0.0.1; with this set it uses the loopback address for every socket.
_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

_lock = threading.Lock()
_started_here: Optional[str] = None
log = logging.getLogger(__name__)


class _RoutineNotices(logging.Filter):
    """Drops two warnings Ray prints on every start of the embedded Ray, where they say nothing
    the user can act on: that Ray switched token authentication on for the local cluster (the
    safe default; the module docstring says what it means for workers), and that ``ray.init()``
    ran off the main thread and so set no SIGTERM handler (a DoFn's ``setup()`` runs on a worker
    thread of Beam's; the process's signals are Beam's). Every other line of Ray's passes, the
    warning that token authentication is *disabled* among them."""

    ROUTINE = ("Token authentication is enabled for this Ray cluster",
               "SIGTERM handler is not set because current thread is not the main thread")
    LOGGERS = ("ray._private.authentication.authentication_token_setup", "ray._private.worker")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.ROUTINE)


for _name in _RoutineNotices.LOGGERS:
    logging.getLogger(_name).addFilter(_RoutineNotices())


def _use_loopback() -> None:
    """Keep Ray on 127.0.0.1 in this process and the processes it starts. Ray reads the variable
    once, at import, and otherwise rewrites a loopback address to the machine's routable one,
    where a cluster bound to 127.0.0.1 does not listen; so the parsed constant is set as well."""
    os.environ.update(_LOOPBACK_ENV)
    ray_private.disable_cluster_mode()


def resolve_address(ray_address: Optional[str]) -> str:
    """Where workers should connect; called once, at pipeline construction. For an embedded Ray
    that is still starting, its address at once (see :func:`is_starting`)."""
    if ray_address:
        return ray_address
    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address
    return start_local_ray_soon()


def is_starting(address: str) -> bool:
    """Whether ``address`` is the embedded Ray this process is starting and has not joined yet:
    then a client waits for it to come up instead of failing fast."""
    return _head is not None and _head.address == address and not (_started_here and ray.is_initialized())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Head:
    """The embedded head node, started in a thread of its own that lives until shutdown: Ray's
    processes die with the thread that started them (they are started with the parent-death
    signal, which Linux ties to the starting thread), so a thread that started them and ended
    would take them along."""

    def __init__(self, address: str, num_cpus: Optional[int], port: int):
        self.address = address
        self.node = None
        self.error: Optional[BaseException] = None
        self._ready = threading.Event()
        self._stopping = threading.Event()  # no further start once a stop is asked for
        self._stop = threading.Event()
        threading.Thread(target=self._keep, args=(num_cpus, port), name="beam-phash-ray-head", daemon=True).start()

    def _keep(self, num_cpus: Optional[int], port: int) -> None:
        try:
            self.node = self._start(num_cpus, port)
            log.info("embedded Ray head up at %s (logs in %s)", self.address,
                     os.path.join(self.node.get_session_dir_path(), "logs"))
        except BaseException as e:  # noqa: BLE001 - handed to the thread that waits for the head
            self.error = e
        finally:
            self._ready.set()
        self._stop.wait()

    def _start(self, num_cpus: Optional[int], port: int):
        """The node, started up to ``START_ATTEMPTS`` times on the port whose address was handed
        out; a failed start leaves nothing running (``ray_private.start_lean_head``)."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                # Fresh parameters each time: Ray fills a start's choices into them.
                return ray_private.start_lean_head(ray_private.lean_head_params(num_cpus, port))
            except Exception as e:  # noqa: BLE001 - the last one is raised
                if attempt == START_ATTEMPTS or self._stopping.is_set():
                    raise
                log.warning("the embedded Ray head at %s did not start (%s: %s); starting it again "
                            "(attempt %d of %d)", self.address, type(e).__name__, e, attempt + 1, START_ATTEMPTS)

    def wait(self):
        """The started node; raises what starting it raised."""
        self._ready.wait()
        if self.error is not None:
            raise self.error
        return self.node

    def stop(self) -> None:
        """Stop the node's processes. A node still starting (this process exits during the start)
        is waited for, up to ``STOP_WAIT`` seconds, and then stopped: left to die with this
        process, its raylet's agents outlived it by a minute or more. (After a Ctrl-C the
        command does not wait: ``stop_before_exit``.)"""
        self._stopping.set()
        self._ready.wait(STOP_WAIT)
        if self.node is not None:
            self.node.kill_all_processes(check_alive=False, allow_graceful=True)
        self._stop.set()


_head: Optional[_Head] = None


def _join(**how) -> str:
    """``ray.init`` this process into the embedded Ray (under ``_lock``); its address."""
    global _started_here
    ctx = ray.init(namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING, **how)
    _started_here = ctx.address_info["gcs_address"]
    log.info("started embedded Ray at %s", _started_here)
    return _started_here


def start_local_ray_soon(num_cpus: Optional[int] = None) -> str:
    """Begin starting the embedded Ray's processes and return its address at once, so that they
    come up while the caller imports Beam, builds the pipeline and hashes (about 2 s of start-up
    on 2 cores); :func:`start_local_ray` or :func:`connect` then joins them. Starts nothing when
    Ray is already up or starting. With a Ray whose private API moved, it starts Ray with
    ``ray.init()`` instead, and returns once it is up."""
    global _head
    with _lock:
        if _started_here and ray.is_initialized():
            return _started_here
        if _head is None:
            _use_loopback()
            port = _free_port()  # chosen here, so that the address is known before the head is up
            try:
                ray_private.lean_head_params(num_cpus, port)  # the lean start's API is there
            except (ImportError, AttributeError, TypeError) as e:
                log.warning("starting Ray with ray.init(): the lean start is unavailable (%s: %s)",
                            type(e).__name__, e)
                atexit.register(shutdown_local_ray)
                return _join(address="local", include_dashboard=False, num_cpus=num_cpus,
                             _node_ip_address="127.0.0.1")
            _head = _Head(f"127.0.0.1:{port}", num_cpus, port)
            # Stopped at exit even when this process never joins it (Beam's worker processes do).
            atexit.register(shutdown_local_ray)
        return _head.address


def start_local_ray(num_cpus: Optional[int] = None) -> str:
    """Start an embedded single-node Ray on 127.0.0.1 with only what the backend needs (no
    dashboard, no autoscaler monitor, no log monitor; see ``ray_private.lean_head_params``), or
    join the one :func:`start_local_ray_soon` began; return its address."""
    global _head
    if ray.is_initialized() and not _started_here:
        return ray.get_runtime_context().gcs_address
    start_local_ray_soon(num_cpus)
    with _lock:
        if _started_here and ray.is_initialized():
            return _started_here
        try:
            node = _head.wait()
        except KeyboardInterrupt:
            raise  # at once: the head is left to stop_before_exit, or to the stop at exit
        except BaseException:
            _head.stop()
            _head = None
            raise
        return _join(address=node.address)


def shutdown_local_ray() -> None:
    """Stop the embedded Ray started by this process, if any."""
    global _started_here, _head
    with _lock:
        if _started_here and ray.is_initialized():
            ray.shutdown()
        if _head is not None:
            _head.stop()
        _started_here = None
        _head = None


def stop_before_exit() -> None:
    """Stop what of the embedded Ray would outlive this process, which is about to end after a
    Ctrl-C (``os._exit``, or a return from the command): at once, whatever state Ray is in.

    Not through ``ray.shutdown()`` or a stop of the raylet: under a thread still talking to Ray
    (a DoFn's connection), either ends this process itself (exit 1), and a stop waits for a head
    still starting. The raylet and every process below it are frozen (SIGSTOP), so that none
    answers what follows or forks again, and those below it are killed: its agents, which would
    outlive us by a minute, and its workers. The frozen raylet and the GCS die with this process
    (Ray starts them with the parent-death signal). Nothing when this process started no Ray (an
    external cluster); Linux only (``/proc``)."""
    global _head
    if _head is None and not _started_here:
        return
    raylets = set(_children(os.getpid(), _named("raylet")))
    frozen: set = set()
    for _ in range(10):  # until no process below appeared since the last look (one that forked)
        new = (raylets | set(_descendants(list(raylets)))) - frozen
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        frozen |= new
    for pid in frozen - raylets:
        _signal(pid, signal.SIGKILL)
    # A process Ray's start has forked but not yet turned into its program (the GCS, the raylet)
    # sets its parent-death signal only then: once this process has ended, never (seen: a
    # gcs_server left alone after a Ctrl-C 0.3 s into a run).
    for pid in _forks_not_executed():
        _signal(pid, signal.SIGKILL)
    _head = None  # nothing left for the stop at exit to wait for


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:  # gone meanwhile
        pass


def _parents() -> dict:
    """pid -> parent pid of every process this one can see (Linux /proc; empty elsewhere)."""
    out = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
                out[int(entry)] = int(stat.rsplit(b")", 1)[1].split()[1])  # the name may hold spaces
            except (OSError, IndexError, ValueError):  # gone meanwhile, or read cut short
                continue
    return out


def _children(pid: int, test) -> list:
    """The children of ``pid`` for which ``test(child)`` holds (children gone meanwhile, whose
    /proc entries can no longer be read, are left out)."""
    found = []
    for child, parent in _parents().items():
        if parent == pid:
            try:
                if test(child):
                    found.append(child)
            except OSError:  # gone meanwhile
                continue
    return found


def _named(name: str):
    """A test of ``_children``: the process name is ``name``."""
    def test(pid: int) -> bool:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == name
    return test


def _forks_not_executed() -> list:
    """The children of this process that are still copies of it: forked, not yet executing a
    program of their own (same executable, same command line)."""
    try:
        exe = os.readlink("/proc/self/exe")
        with open("/proc/self/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return []

    def copy(pid: int) -> bool:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.readlink(f"/proc/{pid}/exe") == exe and f.read() == cmdline

    return _children(os.getpid(), copy)


def _descendants(pids: list) -> list:
    """Every process below ``pids``, not those themselves."""
    parents, out, seen, level = _parents(), [], set(pids), set(pids)
    while level:
        level = {child for child, parent in parents.items() if parent in level} - seen
        seen |= level
        out.extend(level)
    return out


def token_available() -> bool:
    """Whether this process has a Ray auth token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, or the
    default ~/.ray/auth_token (written by `ray get-auth-token --generate`, a local ray.init()
    or our embedded head; `ray start --head` only uses one that is there)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    return os.path.isfile(path)


def _enable_token_mode() -> None:
    """RAY_AUTH_MODE=token for this process and its children. Ray caches its configuration at
    import, so it must re-read it, as Ray itself does when it turns token mode on."""
    os.environ["RAY_AUTH_MODE"] = "token"
    ray_private.reload_config()


def _auto_address() -> tuple[Optional[str], str]:
    """The address ``ray.init(address="auto")`` would connect to, and where it was found:
    RAY_ADDRESS, else the address file of the last ``ray start`` (None: neither, and Ray looks
    for a running cluster itself, or says it found none, at once)."""
    env = os.environ.get("RAY_ADDRESS")
    if env and env != "auto":
        return env, "RAY_ADDRESS"
    try:
        return ray_private.last_started_address(), "the address file of the last `ray start`"
    except Exception:  # noqa: BLE001 - a Ray without it: let ray.init find the cluster
        return None, ""


def _check_reachable(address: str, timeout: float, starting: bool = False) -> None:
    """Fail fast with a clear message: ray.init() waits for minutes on an address nobody serves.
    For a cluster that is ``starting`` (the embedded one), wait up to ``timeout`` for it."""
    shown = address
    if address == "auto":  # the address Ray would find, when it finds one
        found, where = _auto_address()
        if found is None or found == "auto":
            return
        address, shown = found, f"{found} (ray_address='auto' found it in {where})"
    if "://" in address:
        return  # "ray://..." (Ray Client): let Ray resolve it
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit():
        return  # not host:port: let Ray say what it makes of it
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
            return
        except OSError as e:
            if not starting or time.monotonic() > deadline:
                raise ConnectionError(f"cannot reach the Ray cluster at {shown}: {e}") from None
        time.sleep(0.1)


def connect(address: str, timeout: float = 30.0, starting: bool = False) -> None:
    """Connect this process (a Beam worker) to the cluster; a no-op when already connected.
    ``starting``: the address is an embedded Ray that may still be starting; the process that
    starts it joins it (:func:`start_local_ray`), other processes wait for it (up to 120 s).

    Token auth: Ray turns token mode on for clusters found automatically, never for an explicit
    address. When RAY_AUTH_MODE is unset and a token is available, we set RAY_AUTH_MODE=token, so
    that a worker can join a token-protected cluster by address (a cluster without token auth
    accepts such a client too). Set RAY_AUTH_MODE yourself to override.
    """
    if is_starting(address):
        start_local_ray()
        return
    with _lock:
        if ray.is_initialized():
            return
        if address.split(":")[0] in ("127.0.0.1", "localhost"):
            _use_loopback()
        if "RAY_AUTH_MODE" not in os.environ and token_available():
            _enable_token_mode()
        if not starting:
            _check_reachable(address, timeout)
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
            return
        # The embedded head's start may fail after its GCS answered and be tried again on the
        # same port (``_Head._start``): a worker that joined the failed start's cluster joins the
        # next one.
        deadline = time.monotonic() + max(timeout, 120.0) * START_ATTEMPTS
        while True:
            _check_reachable(address, max(1.0, deadline - time.monotonic()), starting=True)
            try:
                ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
                return
            except Exception as e:  # noqa: BLE001 - Ray raises several types for a cluster that went away
                ray.shutdown()
                if time.monotonic() > deadline:
                    raise
                log.warning("could not join the embedded Ray at %s while it starts (%s: %s); trying again",
                            address, type(e).__name__, " ".join(str(e).split())[:200])
                time.sleep(1.0)
