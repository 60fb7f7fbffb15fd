"""Type stubs for the Rust extension module ``beam_phash._native``."""
from typing import Any, Iterable, Literal, Optional, Union

BytesLike = Union[bytes, bytearray, memoryview]
Algorithm = Literal["phash", "double_gradient", "dhash", "ahash", "median", "blockhash"]

ALGORITHMS: tuple[str, ...]
MIN_HASH_SIZE: int
MAX_HASH_SIZE: int
DEFAULT_MAX_PIXELS: int
DEFAULT_MAX_ALLOC: int
ALPHA_BACKGROUND: int

class ImageDecodeError(ValueError):
    """The bytes are not a usable image (empty, unknown format, corrupt, or over the limits)."""

class PHash:
    """An immutable perceptual hash: raw bytes plus the true bit count."""

    def __init__(
        self,
        data: bytes,
        bits: Optional[int] = None,
        width: int = 0,
        height: int = 0,
        variants: Optional[list[bytes]] = None,
    ) -> None: ...
    @staticmethod
    def from_hex(s: str, bits: Optional[int] = None) -> PHash: ...
    @property
    def bits(self) -> int: ...
    @property
    def width(self) -> int:
        """Upright width of the hashed image in pixels (0 when unknown)."""
    @property
    def height(self) -> int:
        """Upright height of the hashed image in pixels (0 when unknown)."""
    @property
    def variants(self) -> tuple[PHash, ...]:
        """With dihedral=True, the 8 hashes of the image's dihedral variants (identity; rotations by
        90, 180, 270 degrees clockwise; the mirror image, then it rotated by 90, 180, 270); else ()."""
    def hex(self) -> str: ...
    def __len__(self) -> int: ...
    def __sub__(self, other: PHash) -> int: ...
    def __bytes__(self) -> bytes: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

def hash_image(
    data: BytesLike,
    *,
    algorithm: Algorithm = "phash",
    hash_size: int = 16,
    max_pixels: int = ...,
    max_alloc: int = ...,
    dihedral: bool = False,
) -> PHash: ...
def hash_images(
    blobs: Iterable[BytesLike],
    *,
    algorithm: Algorithm = "phash",
    hash_size: int = 16,
    threads: Optional[int] = None,
    max_pixels: int = ...,
    max_alloc: int = ...,
    dihedral: bool = False,
) -> list[Union[PHash, ImageDecodeError]]: ...
def hash_bits(algorithm: Algorithm, hash_size: int) -> int: ...

class SeenSet:
    """Compact seen-set: fixed-width hashes with their first owner (uint64) and, with
    keep_labels=True, a label (the keeper's record id). About 46 bytes per 256-bit entry."""

    def __init__(self, hash_bytes: int = 32, *, keep_labels: bool = False) -> None: ...
    # owners: a uint64 buffer (numpy uint64 array, array('Q'), memoryview cast to 'Q') or ints.
    def check_and_insert(self, hashes: BytesLike, owners: Union[Iterable[int], Any]) -> list[bool]: ...
    def claim(
        self, hashes: BytesLike, owners: Union[Iterable[int], Any], labels: list[str]
    ) -> list[Optional[str]]: ...
    def owners_of(self, hashes: BytesLike) -> list[Optional[int]]: ...
    def entries(self) -> tuple[bytes, bytes, list[str]]:
        """(packed hashes, packed little-endian uint64 owners, labels) in insertion order."""
    @property
    def keeps_labels(self) -> bool: ...
    def __len__(self) -> int: ...
    @property
    def hash_bytes(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
