"""Every use of Ray's private API, in one place.

Checked against Ray 2.60.0, the version ``make`` installed when this was written
(pyproject.toml allows ray>=2.40). If a Ray upgrade moves one of these, this file is the only
one to change; ``tests/test_reliability.py`` (lost buckets) and the embedded-Ray tests fail first.

* ``ray.experimental.internal_kv``: the GCS key-value store. It records which bucket actors a
  backend created, so that a bucket whose actor died without a state directory is reported as
  lost instead of silently recreated empty, and each backend's number of actors, so that every
  client routes a bucket to the same actor. Ray has no public KV API.
* ``ray._private.node.Node`` and ``ray._private.parameter.RayParams``: the embedded Ray is a head
  node started as ``ray.init()`` starts one, minus the processes the backend never uses (the
  dashboard's API server, the autoscaler's monitor, the log monitor): about 30% less CPU at
  start-up on 2 cores. ``ray.init()`` has no switch for them. The token-auth set-up that
  ``ray.init()`` does for a new local cluster is done the same way, with its functions.
* ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``: Ray parses ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``
  and the loopback settings once, at import; an embedded Ray bound to 127.0.0.1 needs the parsed
  constant set as well (see ``ray_cluster._use_loopback``).
* ``ray._raylet.Config.initialize``: Ray reads its configuration (``RAY_AUTH_MODE`` among it)
  once, at import; a worker that turns token mode on afterwards has it read again, as Ray
  itself does when it turns token mode on (see ``ray_cluster._enable_token_mode``).
* ``ray._private.utils.read_ray_address``: the address file the last ``ray start`` wrote, which
  ``ray.init(address="auto")`` connects to. A stale one (its cluster stopped) made ``ray.init``
  retry for minutes; it is checked first (see ``ray_cluster._check_reachable``).
"""
from __future__ import annotations

from typing import Optional


def kv_get(key: bytes, namespace: str) -> Optional[bytes]:
    from ray.experimental import internal_kv

    return internal_kv._internal_kv_get(key, namespace=namespace)


def kv_put(key: bytes, value: bytes, namespace: str, overwrite: bool = True) -> bool:
    """Store ``value``; whether the key existed already (then, with ``overwrite=False``, the
    stored value is left as it was)."""
    from ray.experimental import internal_kv

    return bool(internal_kv._internal_kv_put(key, value, overwrite=overwrite, namespace=namespace))


def kv_del(key: bytes, namespace: str) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(key, namespace=namespace)


def lean_head_params(num_cpus: Optional[int], gcs_port: int):
    """The parameters of a single-node Ray head on 127.0.0.1 with only what actors need (GCS,
    raylet and its agents), its GCS on ``gcs_port``. Raises ImportError or TypeError at once
    when a Ray upgrade moved this API, before anyone was told the head's address."""
    from ray._private.authentication.authentication_token_setup import (  # noqa: F401 - checked here
        enable_token_auth_by_default, ensure_token_if_auth_enabled)
    from ray._private.node import Node  # noqa: F401 - checked here, used by start_lean_head
    from ray._private.parameter import RayParams

    return RayParams(node_ip_address="127.0.0.1", num_cpus=num_cpus, include_dashboard=False,
                     include_log_monitor=False, no_monitor=True, gcs_server_port=gcs_port)


def start_lean_head(params):
    """Start the head of :func:`lean_head_params` and return its ``Node`` (``.address``,
    ``.kill_all_processes()``). The caller then joins it with ``ray.init(address=...)``."""
    from ray._private.authentication.authentication_token_setup import (
        enable_token_auth_by_default, ensure_token_if_auth_enabled)
    from ray._private.node import Node

    enable_token_auth_by_default()  # as ray.init() does for a new local cluster
    ensure_token_if_auth_enabled({}, create_token_if_missing=True)
    node = Node.__new__(Node)  # its processes stay reachable when the start fails
    try:
        # A reaper process kills the node's processes if this one dies without shutting it down.
        node.__init__(params, head=True, shutdown_at_exit=False, spawn_reaper=True, ray_init_cluster=True)
    except BaseException:
        # Started before the failure (Ray gives its raylet a fixed 30 s to register): the GCS,
        # holding the head's port, the raylet, the reaper. Stopped here, so that the start can be
        # tried again on the same port and nothing outlives the failure.
        if getattr(node, "all_processes", None):
            try:
                node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
            except Exception:  # noqa: BLE001 - the start's own error is the one to report
                pass
        raise
    return node


def disable_cluster_mode() -> None:
    """Set Ray's parsed ``ENABLE_RAY_CLUSTER`` to False in this process."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def reload_config() -> None:
    """Have Ray read its configuration from the environment again; nothing on a Ray without
    token auth (no ``Config`` there: the environment variable is all there is)."""
    try:
        from ray._raylet import Config
    except ImportError:
        return
    Config.initialize("")


def last_started_address() -> Optional[str]:
    """The host:port in the address file of the last ``ray start`` (None: no file), which
    ``ray.init(address="auto")`` connects to when RAY_ADDRESS is not set."""
    from ray._private.utils import read_ray_address

    return read_ray_address(None) or None
