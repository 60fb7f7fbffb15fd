"""Type stubs for the Rust extension module ``beam_phash._native``, checked against the built
module by ``python -m mypy.stubtest beam_phash._native`` in ``make test``."""
import os
from typing import Any, Iterable, Literal, Optional, Sequence, Tuple, Union, final

from typing_extensions import Buffer, Self

# Any C-contiguous buffer of bytes, of format "B" or "b": bytes, bytearray, memoryview, numpy
# uint8/int8, pyarrow.Buffer. hash_image/hash_images also take a pyarrow binary scalar (an element
# of a binary array, borrowed through its as_buffer()), and hash_images a pyarrow binary array.
_BytesLike = Buffer
_Algorithm = Literal["phash", "double_gradient", "dhash", "ahash", "median", "blockhash"]

__all__ = [
    "ImageDecodeError", "InternalError", "PHash", "SeenSet", "hash_image", "hash_images", "hash_bits",
    "Components", "near_layout", "near_fields", "near_search", "near_pairs_brute", "spanning_forest",
    "near_resolve", "collapse_heads", "parse_hex_hashes", "parse_hex_column", "ALGORITHMS",
    "MIN_HASH_SIZE", "MAX_HASH_SIZE", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_ALLOC", "ALPHA_BACKGROUND",
    "HASH_VERSION", "MAX_THREADS", "FLAT_QUALITY", "route_rows", "tar_member_names",
]

ALGORITHMS: tuple[str, ...]
MIN_HASH_SIZE: int
MAX_HASH_SIZE: int
DEFAULT_MAX_PIXELS: int
DEFAULT_MAX_ALLOC: int
ALPHA_BACKGROUND: int
HASH_VERSION: int
MAX_THREADS: int
FLAT_QUALITY: int

class ImageDecodeError(ValueError):
    """The bytes are not a usable image (empty, unknown format, corrupt, or over the limits)."""

class InternalError(ImageDecodeError):
    """The Rust code failed on this input (a caught panic): a bug to report, not a bad image."""

@final
class PHash:
    """An immutable perceptual hash: raw bytes plus the true bit count."""

    def __new__(
        cls,
        data: bytes,
        bits: Optional[int] = None,
        width: int = 0,
        height: int = 0,
        variants: Optional[list[bytes]] = None,
        quality: Optional[int] = None,
    ) -> Self: ...
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
    def quality(self) -> Optional[int]:
        """How much the picture has to hash, 0-100 (mean gradient of its 32 x 32 grid); below
        FLAT_QUALITY it is flat (blank, plain, faint). None when unknown (a hash from hex)."""
    @property
    def variants(self) -> tuple[PHash, ...]:
        """With dihedral=True, the 8 hashes of the image's dihedral variants (identity; rotations by
        90, 180, 270 degrees clockwise; the mirror image, then it rotated by 90, 180, 270); else ()."""
    def hex(self) -> str: ...
    def __len__(self) -> int: ...
    def __sub__(self, other: PHash, /) -> int: ...
    def __rsub__(self, other: PHash, /) -> int: ...
    def __bytes__(self) -> bytes: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def hash_image(
    data: _BytesLike,
    *,
    algorithm: _Algorithm = "phash",
    hash_size: int = 16,
    max_pixels: int = ...,
    max_alloc: int = ...,
    dihedral: bool = False,
) -> PHash: ...
def hash_images(
    blobs: Iterable[_BytesLike],
    *,
    algorithm: _Algorithm = "phash",
    hash_size: int = 16,
    threads: Optional[int] = None,
    max_pixels: int = ...,
    max_alloc: int = ...,
    dihedral: bool = False,
) -> list[Union[PHash, ImageDecodeError]]: ...
def hash_bits(algorithm: _Algorithm, hash_size: int) -> int: ...

@final
class SeenSet:
    """Compact seen-set: fixed-width hashes with their first owner (uint64) and, with
    keep_labels=True, a label (the keeper's record id). About 46 bytes per 256-bit entry in full
    chunks of 65,536 entries (the first insert allocates one). Not for two threads at once: a
    call while another thread's check_and_insert or claim runs raises RuntimeError ("Already
    borrowed", or "Already mutably borrowed")."""

    def __new__(cls, hash_bytes: int = 32, *, keep_labels: bool = False) -> Self: ...
    # owners: a uint64 buffer (numpy uint64 array, array('Q'), memoryview cast to 'Q') or ints.
    def check_and_insert(self, hashes: _BytesLike, owners: Union[Iterable[int], Any]) -> list[bool]: ...
    def claim(
        self, hashes: _BytesLike, owners: Union[Iterable[int], Any], labels: list[str]
    ) -> list[Optional[str]]: ...
    def claim_entries(
        self, hashes: _BytesLike, owners: Union[Iterable[int], Any], labels: list[str]
    ) -> tuple[list[Optional[str]], bytes]:
        """claim's answers, and per hash the keeper's entry number (insertion order) as
        little-endian int64, -1 where the caller is the first claimant."""
    def owners_of(self, hashes: _BytesLike) -> list[Optional[int]]: ...
    def entries(self) -> tuple[bytes, bytes, list[str]]:
        """(packed hashes, packed little-endian uint64 owners, labels) in insertion order. Fed
        back to claim (owners as numpy.frombuffer(owners, numpy.uint64)), they rebuild the set."""
    @property
    def keeps_labels(self) -> bool: ...
    def __len__(self) -> int: ...
    @property
    def hash_bytes(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

# Near-duplicate kernels (rust_ext/src/near). Buffers are bytes-like (numpy arrays viewed as
# uint8); results are bytes to view with numpy.frombuffer (uint64 ids, uint32 distances/indices).
def near_layout(bits: int, max_distance: int, n: Optional[int] = None) -> list[tuple[int, int, int]]:
    """Band layout: (start bit, width, radius) per band, from the cost model for about n hashes.
    ``bits`` is 1 to 4096 (the most any hash has), as for every kernel that takes one."""
def near_fields(hashes: _BytesLike, *, hash_bytes: int, bits: int, fields: Sequence[Tuple[int, int]]) -> bytes:
    """uint64 (n, len(fields)): each (start, width) field of each hash, in the search's bit order."""
def near_search(
    hashes: _BytesLike,
    ids: _BytesLike,
    *,
    hash_bytes: int,
    bits: int,
    max_distance: int,
    layout: list[tuple[int, int, int]],
    band: Union[int, list[int]],
    variants: Optional[_BytesLike] = None,
    sub: Optional[int] = None,
    prefix_bits: int = 0,
    prefix: int = 0,
    fixed: int = 0,
    threads: Optional[int] = None,
    forest: bool = False,
) -> tuple[bytes, bytes, bytes, int, int, int]:
    """(a ids, b ids, distances, candidates, big runs, pairs of new images) of the pairs that
    qualify first on this part; the last ``fixed`` images (hash only, no variants) pair only with
    the others. With ``forest``, of the pairs between new images only a spanning forest."""
def near_pairs_brute(
    hashes: _BytesLike,
    ids: _BytesLike,
    *,
    hash_bytes: int,
    max_distance: int,
    variants: Optional[_BytesLike] = None,
    threads: Optional[int] = None,
    fixed: int = 0,
) -> tuple[bytes, bytes, bytes]: ...
def spanning_forest(a: _BytesLike, b: _BytesLike) -> bytes: ...
def near_resolve(
    components: _BytesLike,
    primary: _BytesLike,
    owner_offsets: _BytesLike,
    owner_blob: _BytesLike,
    keys: _BytesLike,
    *,
    hash_bytes: int,
    dihedral: bool,
    max_distance: int,
    threads: Optional[int] = None,
) -> tuple[bytes, bytes, bytes]:
    """(dropped node, kept neighbour, distance) indices over whole components (keys: hash, the 8
    variants with ``dihedral``, a flat byte); per dropped node all kept neighbours by (distance,
    rank), its keeper the first ranked before it."""
def collapse_heads(
    keys: _BytesLike, key_bytes: int, primary: _BytesLike, owner_offsets: _BytesLike, owner_blob: _BytesLike
) -> bytes: ...
def parse_hex_hashes(values: Iterable[Any], bits: int) -> tuple[bytes, list[Optional[str]]]:
    """Hex hashes of ``bits`` bits (1 to 4096) -> (packed, one reason or None per value)."""
def parse_hex_column(
    offsets: _BytesLike, data: _BytesLike, bits: int, valid: Optional[_BytesLike] = None
) -> tuple[bytes, bytes, list[str]]:
    """An Arrow string column of hex hashes -> (packed, bad indices as uint32 bytes, reasons)."""

def route_rows(rows: _BytesLike, width: int, buckets: int) -> bytes:
    """The bucket (uint32 bytes) of each packed hash of ``width`` bytes, by its own bits."""

def tar_member_names(path: Union[str, "os.PathLike[str]"]) -> Optional[list[str]]:
    """The regular members' names of the plain tar at local ``path``, from its headers alone (in
    order; up to where the file is damaged); None when the walk does not handle the file (PAX or
    GNU headers, base-256 sizes, names not UTF-8, a file it cannot open or read, anything but a
    regular file: a directory, a device, a FIFO)."""

@final
class Components:
    """The global union-find over forest edges, 12 bytes per id: add_ids, then union, then components."""

    def __init__(self) -> None: ...
    def add_ids(self, ids: _BytesLike) -> None: ...
    def union(self, a: _BytesLike, b: _BytesLike) -> None: ...
    def components(self) -> tuple[bytes, bytes]: ...
    def __len__(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
