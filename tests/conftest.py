"""Shared fixtures: real photos from tests/data (licences in tests/data/LICENSES.md)."""
import io
import pathlib

import pytest

DATA = pathlib.Path(__file__).parent / "data"
PHOTOS = sorted(p for p in DATA.iterdir() if p.suffix in (".jpg", ".png"))


def encode(image, fmt="JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="session")
def photo_bytes() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in PHOTOS}
