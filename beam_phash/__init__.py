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
    MAX_THREADS,
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
    "MAX_THREADS",
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

#: The Beam parts, loaded on first use: Ray bucket actors import this package too, and must not
#: pay for importing apache_beam (about a second of CPU per actor process).
_LAZY = {
    "ImagePhashDedup": ("beam_phash.transform", "ImagePhashDedup"),
    "DedupOutputs": ("beam_phash.transform", "DedupOutputs"),
    "HashImages": ("beam_phash.hashing", "HashImages"),
    "HashConfig": ("beam_phash.hashing", "HashConfig"),
    "ExactDedup": ("beam_phash.exact.transform", "ExactDedup"),
    "RayBackend": ("beam_phash.exact.config", "RayBackend"),
    "StateBackend": ("beam_phash.exact.config", "StateBackend"),
    "NearDedup": ("beam_phash.near.transform", "NearDedup"),
    "NearConfig": ("beam_phash.near.config", "NearConfig"),
    "FailureThreshold": ("beam_phash.failures", "FailureThreshold"),
    "METRICS_NAMESPACE": ("beam_phash.metrics", "NAMESPACE"),
}

__all__ += ["DUPLICATE_OF_FIELD", "ERROR_FIELD", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'beam_phash' has no attribute {name!r}")
