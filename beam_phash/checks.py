"""Argument checks shared by the configuration objects: each raises a ValueError naming the
argument, what it must be, and what it got."""
from __future__ import annotations

import os
from typing import Optional


def int_in(name: str, value, low: int, high: Optional[int] = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def text(name: str, value, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def state_dir(value) -> None:
    """A state directory: a non-empty local (or mounted) path that is not an existing file.
    Object stores are refused: opened as a local path, "gs://b/x" would become ./gs:/b/x."""
    text("state_dir", value)
    if "://" in value:
        raise ValueError(f"state_dir must be a path every worker sees (local or a shared file system); "
                         f"object stores are not supported, got {value!r}")
    if os.path.exists(value) and not os.path.isdir(value):
        raise ValueError(f"state_dir {value!r} exists and is not a directory")


def bounded(pcoll, what: str) -> None:
    """``what`` reads its whole input before it decides (a global join or graph): a ValueError
    when ``pcoll`` is unbounded (a stream), which Beam would refuse later with a GroupByKey
    error that names none of ours."""
    if not pcoll.is_bounded:
        raise ValueError(f"{what} needs a bounded input, and this one is unbounded (a stream); on a "
                         "stream, use exact mode without a reference")
