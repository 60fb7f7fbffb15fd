"""Every use of Ray's private API, in one place.

Checked against Ray 2.60.0, the version ``make`` installed when this was written
(pyproject.toml allows ray>=2.40). If a Ray upgrade moves one of these, this file is the only
one to change; ``tests/test_reliability.py`` (lost buckets) and the embedded-Ray tests fail first.

* ``ray.experimental.internal_kv``: the GCS key-value store. It records which bucket actors a
  backend created, so that a bucket whose actor died without a state directory is reported as
  lost instead of silently recreated empty, and each backend's number of actors, so that every
  client routes a bucket to the same actor. Ray has no public KV API.
* ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``: Ray parses ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``
  and the loopback settings once, at import; an embedded Ray bound to 127.0.0.1 needs the parsed
  constant set as well (see ``ray_cluster._use_loopback``).
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


def disable_cluster_mode() -> None:
    """Set Ray's parsed ``ENABLE_RAY_CLUSTER`` to False in this process."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
