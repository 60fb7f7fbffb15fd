"""The members of a tar file, in order, one at a time: ``(name, bytes)`` of each regular file,
and ``(name, Link)`` of each hard or symbolic link (whose data is not in the file; names-only
listings, ``read_data=False``, pass over links as over directories).

Shards hold tens of thousands of small members, and ``tarfile`` spends more time building a
``TarInfo`` per header than reading the bytes. A plain tar (the ustar headers ``tarfile``,
``webdataset`` and img2dataset write for ordinary names) is therefore parsed here directly: a
512-byte header, the name, the size, the data. At the first header this does not handle (PAX
extended headers, GNU long names, sparse files, base-256 sizes) the rest of the file is handed to
``tarfile``, starting at that header. Compressed shards go through ``tarfile``'s stream mode.

Damage is never taken for the end: a tar, compressed or not, must end with its end-of-archive
marker (a zero block).
A file cut short inside a member raises :class:`MemberCutShort` (naming the member); cut inside a
header or between two members, or with a garbled header, ``EOFError``; a file that is not a tar
at all, ``tarfile.ReadError``. Nothing is
held in memory but the current member. tarfile does not check a gzip stream's CRC: the reader
first checks it with :func:`gzip_damage`, a second read of the shard.
"""
from __future__ import annotations

import gzip
import tarfile
import zlib
from typing import Iterator, NamedTuple, Optional, Tuple, Union

BLOCK = tarfile.BLOCKSIZE
_REGULAR = (b"0", b"\0", b"7")  # regular, old regular, contiguous
_LINKS = {b"1": "hard link", b"2": "symbolic link"}
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, directories, FIFOs
STREAM_BUFFER = 1 << 16  # tarfile's stream mode copies its buffer on every read: larger is slower
GZIP_MAGIC = b"\x1f\x8b"
CHECK_BUFFER = 1 << 20


class Link(NamedTuple):
    """A member that is a link: its kind (``hard link``, ``symbolic link``) and its target. The
    reader does not follow links (a stream cannot go back to a hard link's data)."""

    kind: str
    target: str


Member = Tuple[str, Union[bytes, Link]]


class MemberCutShort(EOFError):
    """The data of member ``name`` breaks off: the sample it belongs to is incomplete."""

    def __init__(self, name: str, detail: str):
        super().__init__(f"member {name} is cut short ({detail})")
        self.name = name


def _read_member(name: str, read, size: int) -> bytes:
    try:
        data = read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise MemberCutShort(name, f"{type(e).__name__}: {e}") from e
    if len(data) != size:
        raise MemberCutShort(name, f"{len(data)} of {size} bytes")
    return data


class _Unusual(Exception):
    """A header the plain parser leaves to tarfile; ``offset`` is where it starts."""

    def __init__(self, offset: int, what: str):
        super().__init__(what)
        self.offset = offset


def _field(field: bytes) -> bytes:
    """A header field up to its first NUL."""
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def _nts(field: bytes) -> str:
    return _field(field).decode("utf-8", "surrogateescape")


def _octal(field: bytes, empty: int) -> int:
    """A numeric header field: octal digits, space- or NUL-terminated (``int`` takes bytes)."""
    digits = _field(field).strip()
    return int(digits, 8) if digits else empty


def _headers(f, read_data: bool) -> Iterator[Member]:
    """``(name, data)`` of the regular members of a plain tar (``data`` is b"" unless
    ``read_data``; then the data is sought over), and with ``read_data`` ``(name, Link)`` of its
    links. Raises ``_Unusual`` at a header it leaves to tarfile, EOFError or tarfile.ReadError on
    damage."""
    offset = 0
    while True:
        f.seek(offset)
        header = f.read(BLOCK)
        if len(header) < BLOCK:
            if offset == 0:
                raise tarfile.ReadError("empty file" if not header else "shorter than one tar header")
            raise EOFError(f"no end-of-archive marker at byte {offset}: the data stops there")
        if header.count(0) == BLOCK:
            return
        try:
            valid = sum(header) - sum(header[148:156]) + 8 * 32 == _octal(header[148:156], -1)
        except ValueError:
            valid = False
        if not valid:
            if offset == 0:
                raise tarfile.ReadError("bad header checksum at byte 0")
            raise EOFError(f"damaged header at byte {offset}")
        kind = header[156:157]
        if kind not in _REGULAR and kind not in _NO_DATA or header[124] & 0x80:
            raise _Unusual(offset, f"header type {kind!r}")
        size = _octal(header[124:136], 0)
        name = _nts(header[0:100])
        if header[345]:  # a ustar prefix
            name = _nts(header[345:500]) + "/" + name
        if kind in _NO_DATA:
            if read_data and kind in _LINKS:
                yield name, Link(_LINKS[kind], _nts(header[157:257]))
            offset += BLOCK
            continue
        if not (kind == b"\0" and name.endswith("/")):  # an old-style directory otherwise
            yield name, (_read_member(name, lambda: f.read(size), size) if read_data else b"")
        offset += BLOCK + -(-size // BLOCK) * BLOCK


def _link(info: tarfile.TarInfo) -> Link:
    return Link("hard link" if info.islnk() else "symbolic link", info.linkname)


def _tarfile_members(f, offset: int, read_data: bool) -> Iterator[Member]:
    """The same, through tarfile's file mode, from the header at ``offset`` on."""
    f.seek(offset)
    tar = tarfile.open(fileobj=f, mode="r:")
    while True:
        info = tar.next()
        if info is None:
            break
        tar.members = []  # tarfile keeps every TarInfo it read: not ours
        if read_data and (info.islnk() or info.issym()):
            yield info.name, _link(info)
            continue
        if not info.isfile():
            continue
        yield info.name, (_read_member(info.name, tar.extractfile(info).read, info.size) if read_data else b"")
    # tarfile stops quietly at a header that is cut short or garbled.
    f.seek(tar.offset)
    block = f.read(BLOCK)
    if len(block) < BLOCK or block.count(0) != BLOCK:
        raise EOFError(f"no end-of-archive marker at byte {tar.offset}: the data stops or is damaged there")


def plain_members(f, read_data: bool = True) -> Iterator[Member]:
    """Members of an uncompressed tar on a seekable file (``read_data=False``: names only, the
    data sought over)."""
    try:
        yield from _headers(f, read_data)
    except _Unusual as unusual:
        yield from _tarfile_members(f, unusual.offset, read_data)


def stream_members(f) -> Iterator[Member]:
    """Members of any tar tarfile reads as a stream (gzip, bzip2, xz or none), read forward only.
    tarfile stops quietly at a header that is cut short, empty or garbled, as at the end-of-archive
    marker, and a cut compressed stream just ends: so the header tarfile stopped at is watched,
    and anything but the marker raises EOFError."""
    marker = []

    class Watched(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tar):
            try:
                return super().fromtarfile(tar)
            except tarfile.EOFHeaderError:  # a zero block: the end-of-archive marker
                marker.append(True)
                raise

    tar = tarfile.open(fileobj=f, mode="r|*", bufsize=STREAM_BUFFER, tarinfo=Watched)
    while True:
        info = tar.next()
        if info is None:
            if not marker:
                raise EOFError(f"no end-of-archive marker at byte {tar.offset} of the tar: the data "
                               "stops or is damaged there")
            return
        tar.members = []
        if info.islnk() or info.issym():
            yield info.name, _link(info)
            continue
        if not info.isfile():
            continue
        yield info.name, _read_member(info.name, tar.extractfile(info).read, info.size)


def gzip_damage(f) -> Optional[str]:
    """Why the gzip stream in the seekable file ``f`` cannot be trusted, or None (for a file that
    is not gzip too). tarfile's stream mode never checks gzip's CRC-32 and length (CPython
    computes them only when writing), so a byte changed inside a deflate block can read as a
    whole tar with altered members. This reads every gzip member through ``gzip``, which checks
    each one's trailer, and keeps none of the data. A stream cut short gives None: the data before
    the cut is as written, and the read reports the cut."""
    if f.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
        return None
    f.seek(0)
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as stream:
            while stream.read(CHECK_BUFFER):
                pass
    except EOFError:
        return None
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        return f"{type(e).__name__}: {e}"
    return None
