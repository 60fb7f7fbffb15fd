"""beam-phash: perceptual-hash image deduplication for Apache Beam, with a Rust core.

Hashing (Rust, releases the GIL, parallel with rayon)::

    from beam_phash import hash_image, hash_images
    h = hash_image(jpeg_bytes, hash_size=16)      # PHash, 256 bits for "phash"
    hs = hash_images(blobs, hash_size=16)         # one PHash or ImageDecodeError per input
    h1 - h2                                       # Hamming distance
"""
from beam_phash._native import (
    ALGORITHMS,
    ALPHA_BACKGROUND,
    DEFAULT_MAX_ALLOC,
    DEFAULT_MAX_PIXELS,
    MAX_HASH_SIZE,
    MIN_HASH_SIZE,
    ImageDecodeError,
    InternalError,
    PHash,
    SeenSet,
    hash_bits,
    hash_image,
    hash_images,
)

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "ALPHA_BACKGROUND",
    "DEFAULT_MAX_ALLOC",
    "DEFAULT_MAX_PIXELS",
    "MAX_HASH_SIZE",
    "MIN_HASH_SIZE",
    "ImageDecodeError",
    "InternalError",
    "PHash",
    "SeenSet",
    "hash_bits",
    "hash_image",
    "hash_images",
]

from beam_phash.records import DUPLICATE_OF_FIELD, ERROR_FIELD  # noqa: E402

__all__ += ["ImagePhashDedup", "METRICS_NAMESPACE", "DUPLICATE_OF_FIELD", "ERROR_FIELD"]


def __getattr__(name: str):
    # The Beam parts load on first use: Ray bucket actors import this package too, and must not
    # pay for importing apache_beam (about a second of CPU per actor process).
    if name == "ImagePhashDedup":
        from beam_phash.transform import ImagePhashDedup

        return ImagePhashDedup
    if name == "METRICS_NAMESPACE":
        from beam_phash.metrics import NAMESPACE

        return NAMESPACE
    raise AttributeError(f"module 'beam_phash' has no attribute {name!r}")
