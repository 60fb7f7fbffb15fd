"""Shared fixtures: real photos from tests/data (licences in tests/data/LICENSES.md)."""
import io
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent  # the repository
DATA = pathlib.Path(__file__).parent / "data"
PHOTOS = sorted(p for p in DATA.iterdir() if p.suffix in (".jpg", ".png"))


def encode(image, fmt="JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def buckets(backend: str) -> list[str]:
    """The job's ``--num-buckets 3`` where it applies (the Ray backend; the job refuses it with
    ``--backend state``): more than one bucket, fewer than the default."""
    return ["--num-buckets", "3"] if backend == "ray" else []


@pytest.fixture(scope="session")
def photo_bytes() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in PHOTOS}


# Beam's multi-process workers unpickle matchers defined in test modules by reference.
import os as _os
import sys as _sys

_TESTS = str(pathlib.Path(__file__).parent)
_os.environ["PYTHONPATH"] = _os.pathsep.join(
    p for p in (_TESTS, _os.environ.get("PYTHONPATH", "")) if p)
if _TESTS not in _sys.path:
    _sys.path.insert(0, _TESTS)


@pytest.fixture(scope="session")
def ray_cluster():
    """One embedded Ray for the Ray tests, started here and stopped at the end of the session."""
    from beam_phash.exact import ray_cluster as rc
    address = rc.start_local_ray(num_cpus=2)
    yield address
    rc.shutdown_local_ray()
