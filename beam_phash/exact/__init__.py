"""Exact dedup: first seen wins, through a backend. ``ExactDedup(RayBackend(...))`` claims hashes
from Ray bucket actors (``ray_client``, ``ray_actor``, ``ray_cluster``, ``store``);
``ExactDedup(StateBackend())`` keeps the first claimant in Beam state (``state_backend``)."""
from beam_phash.exact.config import RayBackend, StateBackend

__all__ = ["ExactDedup", "RayBackend", "StateBackend"]


def __getattr__(name: str):
    # ExactDedup imports apache_beam; Ray bucket actors import this package and must not.
    if name == "ExactDedup":
        from beam_phash.exact.transform import ExactDedup

        return ExactDedup
    raise AttributeError(f"module 'beam_phash.exact' has no attribute {name!r}")
