"""A short fuzz run of the Rust decode-and-hash entry point (the long one is
benchmarks/fuzz_decode.py): random bytes, and real JPEG, PNG, GIF and WebP files mutated by
bit flips, overwrites, truncation, splicing and header edits. Every input must give a PHash or an
ImageDecodeError, never a crash, within one second, and memory must stay bounded."""
import io
import os
import struct
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import beam_phash
from conftest import DATA

MAX_SECONDS = 1.0


def resident_kib() -> int:
    """Current resident memory (ru_maxrss is the process's peak, which earlier tests set)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _small(name: str, fmt: str, **kw) -> bytes:
    with Image.open(DATA / name) as im:
        im = im.convert("RGB")
        im.thumbnail((96, 96))
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        return buf.getvalue()


SEEDS = {
    "jpeg": (DATA / "pool.jpg").read_bytes(),
    "jpeg-progressive": _small("skagen.jpg", "JPEG", progressive=True, quality=80),
    "png": _small("chelsea.png", "PNG"),
    "gif": _small("coffee.png", "GIF"),
    "webp": _small("grace_hopper.jpg", "WEBP", quality=70),
}


def check(data: bytes) -> None:
    started = time.perf_counter()
    (result,) = beam_phash.hash_images([data])
    elapsed = time.perf_counter() - started
    assert isinstance(result, (beam_phash.PHash, beam_phash.ImageDecodeError)), type(result)
    assert elapsed < MAX_SECONDS, f"{len(data)}-byte input took {elapsed:.2f} s"
    if isinstance(result, beam_phash.ImageDecodeError):
        assert len(str(result)) < 400, "an error message must not echo the input"


@st.composite
def mutated(draw):
    seed = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "splice", "header"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0xD9, 0xDA]))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "splice":
            end = min(len(data), at + draw(st.integers(1, 256)))
            data[at:at] = data[at:end]
        else:  # header: overwrite one of the first 64 bytes (dimensions, markers, chunk sizes)
            data[at % 64] = draw(st.integers(0, 255))
    return bytes(data)


FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    check(data)


@FUZZ
@given(mutated())
def test_mutated_real_files(data):
    check(data)


def test_seeds_are_valid_images():
    for name, data in SEEDS.items():
        assert isinstance(beam_phash.hash_images([data])[0], beam_phash.PHash), name


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with a tiny compressed body."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (60_000, 60_000), (1, 2_000_000_000)])
def test_decompression_bombs_are_refused_before_allocating(width, height):
    before = resident_kib()
    started = time.perf_counter()
    with pytest.raises(beam_phash.ImageDecodeError, match="exceeds limits|limit"):
        beam_phash.hash_image(_png_bomb(width, height))
    assert time.perf_counter() - started < 1.0  # header only: far faster, bounded loosely for busy CI
    # Allocating the declared image would take 10 GB (100000 x 100000); nothing near that is held.
    grown_kib = resident_kib() - before
    assert grown_kib < 64 * 1024, f"resident memory grew by {grown_kib} KiB"


def test_a_damaged_tiff_header_is_damage_not_a_size():
    """A TIFF whose tag count was hit (a flipped high byte) declares far more values than the
    decoder reads: the error says damage, not "exceeds limits", for a file of 2 KB."""
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), 90).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    struct.pack_into("<I", data, ifd + 2 + 4, 0x0D000001)  # the first tag's count
    with pytest.raises(beam_phash.ImageDecodeError, match="^cannot decode image: Tiff: a header field declares"):
        beam_phash.hash_image(bytes(data))


def test_a_png_too_wide_for_one_row_is_too_large_not_damaged():
    """PNG's decoder sizes a row against max_alloc while it reads the header, before our own
    check: that is still the image's size."""
    with pytest.raises(beam_phash.ImageDecodeError, match="^image exceeds limits: Png"):
        beam_phash.hash_image(_png_bomb(600_000_000, 1))


def test_memory_stays_bounded_over_many_bad_inputs():
    """Thousands of mutated inputs: the peak resident size must not keep growing (no leak)."""
    import random

    rng = random.Random(5)
    seeds = list(SEEDS.values())

    def batch():
        out = []
        for _ in range(200):
            data = bytearray(rng.choice(seeds))
            for _ in range(4):
                data[rng.randrange(len(data))] = rng.randrange(256)
            out.append(bytes(data[: rng.randrange(1, len(data) + 1)]))
        return out

    beam_phash.hash_images(batch())  # warm up pools and allocator
    before = resident_kib()
    for _ in range(5):
        results = beam_phash.hash_images(batch())
        assert all(isinstance(r, (beam_phash.PHash, beam_phash.ImageDecodeError)) for r in results)
    grown_kib = resident_kib() - before
    assert grown_kib < 64 * 1024, f"resident memory grew by {grown_kib} KiB over 1000 inputs"
