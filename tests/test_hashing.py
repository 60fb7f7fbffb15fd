"""The Python hashing API: value type, algorithms, formats, decoding rules, bad input."""
import io
import itertools
import os
import pickle
import random
import struct
import subprocess
import sys
import zlib

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageEnhance

import beam_phash
from beam_phash import ImageDecodeError, PHash, hash_image, hash_images
from conftest import DATA, encode

NEAR = 16  # bits of 256: the largest distance we accept for an edited copy
FAR = 60  # bits of 256: the smallest distance we accept between different photos


def rgb(name):
    return Image.open(DATA / name).convert("RGB")


# --- bit counts -------------------------------------------------------------------------

EXPECTED_BITS = {
    "phash": {8: 64, 16: 256, 32: 1024},
    "double_gradient": {8: 40, 16: 144, 32: 544},
    "dhash": {8: 64, 16: 256, 32: 1024},
    "ahash": {8: 64, 16: 256, 32: 1024},
    "median": {8: 64, 16: 256, 32: 1024},
    "blockhash": {8: 64, 16: 256, 32: 1024},
}


@pytest.mark.parametrize("algorithm", sorted(EXPECTED_BITS))
@pytest.mark.parametrize("size", [8, 16, 32])
def test_bit_counts(photo_bytes, algorithm, size):
    h = hash_image(photo_bytes["skagen.jpg"], algorithm=algorithm, hash_size=size)
    assert len(h) == h.bits == EXPECTED_BITS[algorithm][size] == beam_phash.hash_bits(algorithm, size)
    assert len(bytes(h)) * 8 == len(h)


def test_algorithms_constant_lists_them_all():
    assert set(beam_phash.ALGORITHMS) == set(EXPECTED_BITS)


@pytest.mark.parametrize("kwargs, message", [
    ({"algorithm": "sha256"}, "unknown algorithm"),
    ({"hash_size": 3}, "hash_size must be between"),
    ({"hash_size": 65}, "hash_size must be between"),
    ({"hash_size": 100000}, "hash_size must be between"),
])
def test_bad_configuration_is_value_error(photo_bytes, kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        hash_image(photo_bytes["pool.jpg"], **kwargs)
    assert not isinstance(err.value, ImageDecodeError)
    with pytest.raises(ValueError, match=message):
        hash_images([photo_bytes["pool.jpg"]], **kwargs)


@pytest.mark.parametrize("one", [b"\xff\xd8 one image", bytearray(b"img"), memoryview(b"img"), "path.jpg",
                                 pa.py_buffer(b"img"), np.frombuffer(b"img", np.int8), memoryview(b"img").cast("b")])
def test_one_image_where_a_sequence_belongs_is_a_type_error(one):
    """Iterated, a bytes object would be one failed "image" per byte."""
    with pytest.raises(TypeError, match=r"sequence of images.*pass \[data\]"):
        hash_images(one)


class Index:
    """Not an int, but usable as one (``__index__``), as numpy's integers are."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


def test_ints_given_through_index_are_taken(photo_bytes):
    assert beam_phash.hash_bits("phash", Index(16)) == 256
    assert len(hash_images([photo_bytes["pool.jpg"]], hash_size=Index(8), threads=Index(1))[0]) == 64


@pytest.mark.parametrize("call, message", [
    (lambda d: hash_images([d], threads=-1), "threads must be between 1 and 1024, got -1"),
    (lambda d: hash_images([d], max_pixels=-1), "max_pixels must be at least 1, got -1"),
    (lambda d: hash_images([d], hash_size=-1), "hash_size must be between 4 and 64, got -1"),
    (lambda d: hash_image(d, max_alloc=-5), "max_alloc must be at least 1, got -5"),
    (lambda d: PHash.from_hex("ab", bits=-1), "bits must be between 1 and"),
    (lambda d: PHash(b"ab", quality=500), "quality must be between 0 and 100, got 500"),
    (lambda d: PHash(b"ab", width=-3), "width must be between 0 and"),
    (lambda d: beam_phash.hash_bits("phash", -2), "hash_size must be between 4 and 64, got -2"),
    # ints past 64 bits, and one past the thread cap
    (lambda d: hash_images([d], hash_size=2**64), "hash_size must be between 4 and 64, got 18446744073709551616"),
    (lambda d: hash_images([d], threads=2**64), "threads must be between 1 and 1024, got 18446744073709551616"),
    (lambda d: hash_images([d], threads=beam_phash.MAX_THREADS + 1), "threads must be between 1 and 1024, got 1025"),
    (lambda d: hash_image(d, max_pixels=2**63), "max_pixels must be below 2\\*\\*63, got 9223372036854775808"),
    (lambda d: hash_images([d], threads=Index(2**70)), "threads must be between 1 and 1024, got 1180591620717411303424"),
    (lambda d: hash_image(d, max_alloc=-2**200), "max_alloc must be at least 1, got an int of -2\\*\\*127 or less"),
    (lambda d: PHash.from_hex("ab", bits=2**300), "bits must be between 1 and 4294967295, got an int of 2\\*\\*127 - 1 or more"),
    (lambda d: PHash(b"ab", quality=-2**70), "quality must be between 0 and 100, got -1180591620717411303424"),
    (lambda d: beam_phash.hash_bits("phash", 2**64), "hash_size must be between 4 and 64, got 18446744073709551616"),
])
def test_negative_and_out_of_range_ints_are_value_errors_naming_the_argument(photo_bytes, call, message):
    """Not PyO3's OverflowError, for a negative value where the core takes an unsigned one or an
    int past 64 bits."""
    with pytest.raises(ValueError, match=message):
        call(photo_bytes["pool.jpg"])


def test_threads_must_be_positive(photo_bytes):
    with pytest.raises(ValueError, match="threads"):
        hash_images([photo_bytes["pool.jpg"]], threads=0)


# --- the value type -----------------------------------------------------------------------

def test_hamming_hex_bytes_pickle(photo_bytes):
    a = hash_image(photo_bytes["pool.jpg"])
    b = hash_image(photo_bytes["snow.jpg"])
    expected = sum(bin(x ^ y).count("1") for x, y in zip(bytes(a), bytes(b)))
    assert a - b == b - a == expected > 0
    assert a - a == 0
    assert str(a) == a.hex() and len(a.hex()) == 64
    assert PHash.from_hex(a.hex()) == a
    assert PHash(bytes(a), bits=256) == a
    assert pickle.loads(pickle.dumps(a)) == a
    assert a != b and hash(a) == hash(PHash.from_hex(a.hex()))
    assert len({a, PHash.from_hex(a.hex()), b}) == 2
    assert "PHash('" in repr(a)


def test_odd_bit_counts_round_trip(photo_bytes):
    h = hash_image(photo_bytes["pool.jpg"], algorithm="double_gradient", hash_size=12)
    assert len(h) == 84
    assert PHash.from_hex(h.hex(), bits=84) == h
    assert pickle.loads(pickle.dumps(h)) == h


def test_length_mismatch_is_type_error(photo_bytes):
    a = hash_image(photo_bytes["pool.jpg"], hash_size=16)
    b = hash_image(photo_bytes["pool.jpg"], hash_size=8)
    with pytest.raises(TypeError, match="256-bit.*64-bit"):
        a - b
    with pytest.raises(TypeError):
        a - 3
    assert a != b


def test_value_type_is_immutable(photo_bytes):
    h = hash_image(photo_bytes["pool.jpg"])
    with pytest.raises(AttributeError):
        h.bits = 3


def test_padding_bits_past_the_bit_count_are_refused():
    """As from_hex refuses them: a stray bit would put a hash further than its bit count."""
    with pytest.raises(ValueError, match="bits set past the 12 bits"):
        PHash(b"\xff\xff", bits=12)
    with pytest.raises(ValueError, match="bits set past the 12 bits"):
        PHash(b"\xff\x0f", bits=12, variants=[b"\xff\x0f"] * 7 + [b"\x00\x10"])
    assert PHash(b"\xff\x0f", bits=12) - PHash(b"\x00\x00", bits=12) == 12


@pytest.mark.parametrize("text", ["", "abc", "zz", "0g", "+f+f", "-1"])
def test_from_hex_rejects_garbage(text):
    with pytest.raises(ValueError):
        PHash.from_hex(text)


# --- batches ------------------------------------------------------------------------------

def test_batch_matches_single_and_keeps_order(photo_bytes):
    names = list(photo_bytes)
    blobs = [photo_bytes[n] for n in names]
    batch = hash_images(blobs)
    assert batch == [hash_image(b) for b in blobs]


def test_results_do_not_depend_on_thread_count(photo_bytes):
    blobs = list(photo_bytes.values()) * 3
    one = hash_images(blobs, threads=1)
    assert hash_images(blobs, threads=2) == one
    assert hash_images(blobs, threads=5) == one
    assert hash_images(blobs) == one


def test_borrows_bytes_bytearray_and_memoryview(photo_bytes):
    data = photo_bytes["chelsea.png"]
    expected = hash_image(data)
    buf = bytearray(data)
    big = b"xx" + data + b"yy"
    for view in (buf, memoryview(data), memoryview(buf), memoryview(big)[2:-2]):
        assert hash_image(view) == expected
    assert hash_images([buf, memoryview(big)[2:-2], data]) == [expected] * 3


def test_borrows_signed_bytes_and_pyarrow_binary(photo_bytes):
    """Buffers of format "b" (pyarrow's Buffer, numpy int8) are the same bytes; a pyarrow binary
    array's elements are borrowed from its data, sliced and chunked arrays too, a null is an error."""
    png, jpg = photo_bytes["chelsea.png"], photo_bytes["pool.jpg"]
    expected = hash_images([png, jpg])
    for view in (pa.py_buffer(png), np.frombuffer(png, np.int8), memoryview(png).cast("b")):
        assert hash_image(view) == expected[0]
    column = pa.array([b"x", png, None, jpg], pa.binary())
    got = hash_images(column)
    assert got[1::2] == expected and isinstance(got[0], ImageDecodeError)
    assert isinstance(got[2], ImageDecodeError) and "null" in str(got[2])
    assert hash_images(column.slice(3)) == expected[1:]
    assert hash_images(pa.chunked_array([column.slice(1, 1), pa.array([jpg])])) == expected
    assert hash_images(column.cast(pa.large_binary()))[1::2] == expected
    assert hash_image(column[1]) == expected[0]
    with pytest.raises(TypeError, match="null"):
        hash_image(column[2])
    with pytest.raises(TypeError, match="C-contiguous"):
        hash_image(memoryview(png)[::2])


def test_one_bad_image_never_fails_the_batch(photo_bytes):
    good = photo_bytes["pool.jpg"]
    batch = hash_images([good, b"", "a string", None, good[:500], good])
    assert isinstance(batch[0], PHash) and batch[0] == batch[5]
    for i in (1, 2, 3, 4):
        assert isinstance(batch[i], ImageDecodeError), batch[i]
    assert "bytes-like" in str(batch[2]) and "NoneType" in str(batch[3])


def test_hashing_works_in_a_forked_child(photo_bytes):
    """The rayon pool must be rebuilt in a child forked after the parent used it."""
    blobs = list(photo_bytes.values())
    expected = [h.hex() for h in hash_images(blobs, threads=2)]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            out = ",".join(h.hex() for h in hash_images(blobs, threads=2)).encode()
            os.write(write, out)
        finally:
            os._exit(0)
    os.close(write)
    got = b""
    import select
    while True:
        ready, _, _ = select.select([read], [], [], 60)
        assert ready, "forked child hung while hashing"
        chunk = os.read(read, 1 << 16)
        if not chunk:
            break
        got += chunk
    os.waitpid(pid, 0)
    assert got.decode().split(",") == expected


def test_threads_the_system_will_not_start_are_a_runtime_error(tmp_path):
    """Under an address-space limit (a container's), a pool of 1,000 threads cannot start: the
    call raises RuntimeError (not a panic, which `except Exception` would not catch), and once
    the limit is lifted the next call works (nothing of the failed start is left in the way)."""
    code = """
import resource, sys
import beam_phash
data = open(sys.argv[1], "rb").read()
expected = beam_phash.hash_image(data).hex()
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + (256 << 20), resource.RLIM_INFINITY))
try:
    beam_phash.hash_images([data, data], threads=1000)
    print("no error")
except RuntimeError as e:
    print("RuntimeError", e)
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print([h.hex() == expected for h in beam_phash.hash_images([data, data], threads=2)])
"""
    out = subprocess.run([sys.executable, "-c", code, str(DATA / "pool.jpg")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("RuntimeError cannot start 1000 threads:"), out.stdout
    assert lines[1] == "[True, True]"


# --- near and far -------------------------------------------------------------------------

def edits(image):
    return {
        "resized 50%": encode(image.resize((image.width // 2, image.height // 2), Image.LANCZOS)),
        "jpeg q30": encode(image, quality=30),
        "jpeg q70": encode(image, quality=70),
        "brightened 15%": encode(ImageEnhance.Brightness(image).enhance(1.15)),
    }


@pytest.mark.parametrize("name", ["pool.jpg", "skagen.jpg", "chelsea.png", "grace_hopper.jpg", "sunset.jpg"])
def test_edited_copies_come_out_close(photo_bytes, name):
    original = hash_image(photo_bytes[name])
    for what, data in edits(rgb(name)).items():
        assert original - hash_image(data) <= NEAR, what


def test_different_photos_come_out_far(photo_bytes):
    hashes = {n: hash_image(b) for n, b in photo_bytes.items()}
    for (n1, h1), (n2, h2) in itertools.combinations(hashes.items(), 2):
        assert h1 - h2 >= FAR, (n1, n2, h1 - h2)


# --- formats --------------------------------------------------------------------------------

def formats(image):
    gray16 = (np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    rgba = image.convert("RGBA")
    return {
        "jpeg baseline": encode(image, quality=95),
        "jpeg progressive": encode(image, quality=95, progressive=True),
        "jpeg cmyk": encode(image.convert("CMYK"), quality=95),
        "png rgb": encode(image, "PNG"),
        "png 16-bit": encode(Image.fromarray(gray16), "PNG"),
        "png palette": encode(image.convert("P", palette=Image.ADAPTIVE, colors=256), "PNG"),
        "png alpha (opaque)": encode(rgba, "PNG"),
        "gif": encode(image, "GIF"),
        "webp": encode(image, "WEBP", quality=90),
        "bmp": encode(image, "BMP"),
        "tiff": encode(image, "TIFF"),
    }


@pytest.mark.parametrize("name", ["pool.jpg", "chelsea.png"])
def test_every_format_decodes_to_the_same_picture(photo_bytes, name):
    image = rgb(name)
    reference = hash_image(encode(image, "PNG"))
    for what, data in formats(image).items():
        assert reference - hash_image(data) <= NEAR, what


def test_gif_uses_the_first_frame(photo_bytes):
    first, second = rgb("pool.jpg"), rgb("snow.jpg").resize(rgb("pool.jpg").size)
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=[second])
    h = hash_image(buf.getvalue())
    assert h - hash_image(encode(first, "GIF")) <= NEAR
    assert h - hash_image(encode(second, "GIF")) >= FAR


# EXIF orientation, and the turn that shows the stored pixels upright.
ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("fmt, options", [("JPEG", {"quality": 95}), ("PNG", {}), ("TIFF", {}),
                                          ("WEBP", {"quality": 95})])
@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(fmt, options, orientation):
    """JPEG reads its APP1 itself; PNG (eXIf), TIFF and WebP through the image crate's decoders."""
    upright = rgb("pool.jpg")
    # The stored pixels are the upright picture turned the other way: the tag turns them back.
    stored = upright.transpose(ORIENTATIONS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    tagged = encode(stored, fmt, exif=exif.tobytes(), **options)
    untagged = encode(stored, fmt, **options)
    reference = hash_image(encode(upright, "PNG"))
    assert reference - hash_image(tagged) <= NEAR
    assert reference - hash_image(untagged) >= FAR  # proves the tag, not luck, did it


def test_alpha_is_composited_onto_white():
    assert beam_phash.ALPHA_BACKGROUND == 255
    photo = rgb("chelsea.png")
    w, h = photo.size
    # Left half transparent, with random colours behind the transparency.
    rng = np.random.default_rng(7)
    arr = np.dstack([np.asarray(photo), np.full((h, w), 255, np.uint8)])
    arr[:, : w // 2, :3] = rng.integers(0, 256, (h, w // 2, 3), dtype=np.uint8)
    arr[:, : w // 2, 3] = 0
    on_white = np.asarray(photo).copy()
    on_white[:, : w // 2] = 255
    transparent = hash_image(encode(Image.fromarray(arr, "RGBA"), "PNG"))
    assert transparent == hash_image(encode(Image.fromarray(on_white), "PNG"))
    assert transparent - hash_image(encode(photo, "PNG")) >= FAR // 2


# --- bad input ------------------------------------------------------------------------------

def png_declaring(width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def bad_inputs(photo_bytes):
    jpeg = photo_bytes["pool.jpg"]
    return {
        "empty": b"",
        "random": random.Random(1).randbytes(5000),
        "truncated jpeg": jpeg[: len(jpeg) // 2],
        "truncated png": photo_bytes["chelsea.png"][:3000],
        "text": b"Definitely not an image.\n" * 10,
        "giant declared dimensions": png_declaring(100_000, 100_000),
    }


def test_every_bad_input_is_an_image_decode_error(photo_bytes):
    for what, data in bad_inputs(photo_bytes).items():
        with pytest.raises(ImageDecodeError):
            hash_image(data)
        assert isinstance(hash_images([data])[0], ImageDecodeError), what
    assert issubclass(ImageDecodeError, ValueError)


def test_messages_are_precise_and_never_echo_bytes(photo_bytes):
    cases = bad_inputs(photo_bytes)
    msg = {k: str(hash_images([v])[0]) for k, v in cases.items()}
    assert "empty" in msg["empty"]
    assert "unrecognised image format" in msg["text"]
    assert "truncated" in msg["truncated jpeg"]
    assert "100000x100000" in msg["giant declared dimensions"] and "limit" in msg["giant declared dimensions"]
    for text in msg.values():
        assert len(text) < 300 and "Definitely" not in text


@pytest.mark.parametrize("data, named", [
    (b"<!DOCTYPE html><html><head><title>404 Not Found</title>", "an HTML page, not an image"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n", "a Git LFS pointer"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(40), "HEIC/HEIF, which is not decoded"),
    (b"PK\x03\x04" + bytes(40), "a zip archive"),
])
def test_files_that_are_not_images_we_read_are_named(data, named):
    """What a crawl or a folder holds in an image's place, said by name where the first bytes
    tell: an HTML error page, a Git LFS pointer, a HEIC photo, a zip of photos."""
    (error,) = hash_images([data])
    assert isinstance(error, ImageDecodeError)
    assert str(error).startswith(f"cannot decode image: unrecognised image format: {named}"), str(error)
    assert f"({len(data)} bytes, starts with 0x{data[:4].hex()})" in str(error)


def test_bytes_appended_after_the_image_are_never_read(photo_bytes):
    """A phone's motion photo appends a video after the JPEG's end, some tools a zip or junk:
    the image is the JPEG itself, whatever byte pairs (FF DA, FF D9) the trailer holds. Bytes
    appended to a JPEG cut inside its scan do not make it whole."""
    rng = random.Random(7)
    for name in ("pool.jpg", "snow.jpg"):
        jpeg = photo_bytes[name]
        plain = hash_image(jpeg)
        trailers = [b"\xff\xda", b"\xff\xda\x00\x08" + b"\x00" * 100, b"\xff\xd9" * 3 + b"\xff\xda",
                    *(rng.randbytes(rng.randint(1000, 60000)) for _ in range(20))]
        for trailer in trailers:
            assert hash_image(jpeg + trailer) == plain, (name, trailer[:8])
        with pytest.raises(ImageDecodeError, match="truncated"):
            hash_image(jpeg[: len(jpeg) * 2 // 3] + b"\x00" * 100)


def test_pixel_limit_is_configurable(photo_bytes):
    data = photo_bytes["pool.jpg"]  # 800x600
    with pytest.raises(ImageDecodeError, match="480000 pixels"):
        hash_image(data, max_pixels=100_000)
    assert isinstance(hash_image(data, max_pixels=480_000), PHash)
    assert beam_phash.DEFAULT_MAX_PIXELS == 64_000_000


@pytest.mark.parametrize("fmt, mode, per_pixel", [("JPEG", "RGB", 3), ("JPEG", "L", 1), ("PNG", "RGB", 3),
                                                  ("BMP", "RGB", 3), ("GIF", "P", 4), ("WEBP", "RGB", 3),
                                                  ("TIFF", "RGB", 3)])
def test_the_allocation_limit_holds_for_every_format(fmt, mode, per_pixel):
    """max_alloc is checked against the full-size pixels the header declares, before decoding,
    whatever the format's decoder would allocate (the image crate's decoders do it unevenly, and
    a JPEG is decoded reduced). GIF decodes to RGBA."""
    from PIL import Image
    w, h = 300, 200
    buf = io.BytesIO()
    Image.new(mode, (w, h), 90).save(buf, fmt)
    need = w * h * per_pixel
    with pytest.raises(ImageDecodeError, match=f"{need} bytes of pixels, limit is {need - 1} bytes"):
        hash_image(buf.getvalue(), max_alloc=need - 1)
    if fmt != "TIFF":  # TIFF's own decoder asks for more than its pixels, and refuses that itself
        assert isinstance(hash_image(buf.getvalue(), max_alloc=need), PHash)


def test_dihedral_variants_and_size():
    from PIL import Image

    data = (DATA / "chelsea.png").read_bytes()
    h = beam_phash.hash_image(data, dihedral=True)
    img = Image.open(io.BytesIO(data))
    assert (h.width, h.height) == img.size
    assert len(h.variants) == 8 and h.variants[0] == h
    buf = io.BytesIO()
    img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buf, "PNG")
    mirrored = beam_phash.hash_image(buf.getvalue())
    assert mirrored - h > 64 and mirrored - h.variants[4] <= 4
    assert pickle.loads(pickle.dumps(h)).variants == h.variants
    assert beam_phash.hash_images([data])[0].variants == ()


def test_a_refused_jpeg_leaves_no_state_behind(photo_bytes):
    """The JPEG decoder is reused per thread: a corrupt or truncated JPEG before a good one must
    not change the good one's hash (it once did, by 2 bits)."""
    good = photo_bytes["grace_hopper.jpg"]
    expected = hash_image(good)
    rng = random.Random(0)
    for name in ("pool.jpg", "skagen.jpg", "grace_hopper.jpg"):
        data = photo_bytes[name]
        broken = [data[:100] + b"\xff\xd9", data[: len(data) // 2] + b"\xff\xd9"]
        for _ in range(40):
            m = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                m[rng.randrange(len(m))] = rng.randrange(256)
            broken.append(bytes(m))
        for b in broken:
            try:
                hash_image(b)
            except ImageDecodeError:
                pass
            assert hash_image(good) == expected
        assert hash_images(broken + [good], threads=1)[-1] == expected
