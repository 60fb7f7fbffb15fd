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
import socket
import threading
from typing import Optional

import ray

from beam_phash.exact import ray_private

NAMESPACE = "beam_phash"
# On Linux Ray advertises (and binds) the machine's routable address, even when asked for
# 127.0.0.1; with this set it uses the loopback address for every socket.
_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

_lock = threading.Lock()
_started_here: Optional[str] = None
log = logging.getLogger(__name__)


def _use_loopback() -> None:
    """Keep Ray on 127.0.0.1 in this process and the processes it starts. Ray reads the variable
    once, at import, and otherwise rewrites a loopback address to the machine's routable one,
    where a cluster bound to 127.0.0.1 does not listen; so the parsed constant is set as well."""
    os.environ.update(_LOOPBACK_ENV)
    ray_private.disable_cluster_mode()


def resolve_address(ray_address: Optional[str]) -> str:
    """Where workers should connect; called once, at pipeline construction."""
    if ray_address:
        return ray_address
    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address
    return start_local_ray()


def start_local_ray(num_cpus: Optional[int] = None) -> str:
    """Start an embedded single-node Ray on 127.0.0.1 without a dashboard; return its address."""
    global _started_here
    with _lock:
        if _started_here and ray.is_initialized():
            return _started_here
        _use_loopback()
        ctx = ray.init(
            address="local",
            namespace=NAMESPACE,
            include_dashboard=False,
            num_cpus=num_cpus,
            log_to_driver=False,
            logging_level=logging.WARNING,
            _node_ip_address="127.0.0.1",
        )
        _started_here = ctx.address_info["gcs_address"]
        atexit.register(shutdown_local_ray)
        log.info("started embedded Ray at %s", _started_here)
        return _started_here


def shutdown_local_ray() -> None:
    """Stop the embedded Ray started by this process, if any."""
    global _started_here
    with _lock:
        if _started_here and ray.is_initialized():
            ray.shutdown()
        _started_here = None


def token_available() -> bool:
    """Whether this process has a Ray auth token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, or the
    default ~/.ray/auth_token (written by `ray start`, `ray get-auth-token --generate`, or a
    local ray.init())."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    return os.path.isfile(path)


def _enable_token_mode() -> None:
    """RAY_AUTH_MODE=token for this process and its children. Ray caches its configuration at
    import, so it must re-read it, as Ray itself does when it turns token mode on."""
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config
    except ImportError:  # a Ray without token auth: the variable is all there is
        return
    Config.initialize("")


def _check_reachable(address: str, timeout: float) -> None:
    """Fail fast with a clear message: ray.init() waits for minutes on an address nobody serves."""
    if "://" in address:
        return  # "ray://..." (Ray Client): let Ray resolve it
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit():
        return  # "auto": let Ray resolve it
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address}: {e}") from None


def connect(address: str, timeout: float = 30.0) -> None:
    """Connect this process (a Beam worker) to the cluster; a no-op when already connected.

    Token auth: Ray turns token mode on for clusters found automatically, never for an explicit
    address. When RAY_AUTH_MODE is unset and a token is available, we set RAY_AUTH_MODE=token, so
    that a worker can join a token-protected cluster by address (a cluster without token auth
    accepts such a client too). Set RAY_AUTH_MODE yourself to override.
    """
    with _lock:
        if ray.is_initialized():
            return
        if address.split(":")[0] in ("127.0.0.1", "localhost"):
            _use_loopback()
        if "RAY_AUTH_MODE" not in os.environ and token_available():
            _enable_token_mode()
        _check_reachable(address, timeout)
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                 logging_level=logging.WARNING)
