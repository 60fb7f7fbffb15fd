"""The members of a tar file, in order, one at a time: ``(name, bytes)`` of each regular file,
and ``(name, Link)`` of each hard or symbolic link (whose data is not in the file; names-only
listings, ``read_data=False``, pass over links as over directories).

Shards hold tens of thousands of small members, and ``tarfile`` spends more time building a
``TarInfo`` per header than reading the bytes. A plain tar (the ustar headers ``tarfile``,
``webdataset`` and img2dataset write for ordinary names) is therefore parsed here directly: a
512-byte header, the name, the size, the data. At the first header this does not handle (PAX
extended headers, GNU long names, sparse files, base-256 sizes) the rest of the file is handed to
``tarfile``, starting at that header. Compressed shards are decompressed here
(:func:`decompressed`) and their tar read by ``tarfile``'s stream mode.

Damage is never taken for the end: a tar, compressed or not, must end with its end-of-archive
marker (a zero block). What follows the marker is read as ``tar --ignore-zeros`` reads it: zero
blocks (a tar is padded to 10 KiB records) are passed over, and a block that is not zeros starts
a further archive, whose members follow (``cat a.tar b.tar``, or ``cat a.tar.gz b.tar.gz``, whose
gzip members hold one whole tar each); anything else there is damage, :class:`DataAfterEnd`, after
members that are all whole.
A file cut short inside a member raises :class:`MemberCutShort` (naming the member); cut inside a
header or between two members, or with a garbled header, ``EOFError``; a file that is not a tar
at all, ``tarfile.ReadError``. Nothing is
held in memory but the current member. Gzip shards are decompressed by :class:`Gunzipped`
(every member, each one's CRC checked at its end), which the reader first runs through the whole
shard (:func:`gzip_damage`, a second read of it): a damaged byte must not reach a sample.
"""
from __future__ import annotations

import bz2
import collections
import io
import lzma
import tarfile
import zlib
from typing import Iterator, NamedTuple, Optional, Tuple, Union

BLOCK = tarfile.BLOCKSIZE
_REGULAR = (b"0", b"\0", b"7")  # regular, old regular, contiguous
_LINKS = {b"1": "hard link", b"2": "symbolic link"}
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, directories, FIFOs
STREAM_BUFFER = 1 << 16  # tarfile's stream mode copies its buffer on every read: larger is slower
GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
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


class DataAfterEnd(EOFError):
    """What follows an archive's end-of-archive marker, at byte ``offset`` of the tar, is neither
    zeros nor another tar. The archive itself ended at its marker: every member before is whole
    (``tar`` and ``tarfile`` stop there, and do not look further)."""

    def __init__(self, offset: int):
        super().__init__(f"the data after an end-of-archive marker, at byte {offset}, is neither zeros "
                         "nor another tar")
        self.offset = offset


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


def _header_damage(header: bytes) -> Optional[tuple]:
    """None for a whole header block with a valid checksum; else what is wrong with it, said for
    the first block of a file and (with ``{}`` for its offset) for a later one."""
    if len(header) < BLOCK:
        return ("empty file" if not header else "shorter than one tar header",
                "no end-of-archive marker at byte {}: the data stops there")
    try:
        valid = sum(header) - sum(header[148:156]) + 8 * 32 == _octal(header[148:156], -1)
    except ValueError:
        valid = False
    return None if valid else ("bad header checksum at byte 0", "damaged header at byte {}")


def _headers(f, read_data: bool, offset: int = 0):
    """``(name, data)`` of the regular members of a plain tar from the header at ``offset`` on
    (``data`` is b"" unless ``read_data``; then the data is sought over), and with ``read_data``
    ``(name, Link)`` of its links; returns the offset of the end-of-archive marker. Raises
    ``_Unusual`` at a header it leaves to tarfile, EOFError (DataAfterEnd) or tarfile.ReadError on
    damage."""
    first = offset
    while True:
        f.seek(offset)
        header = f.read(BLOCK)
        if len(header) == BLOCK and header.count(0) == BLOCK:
            return offset
        damage = _header_damage(header)
        if damage is not None:
            at_start, inside = damage
            if offset == 0:
                raise tarfile.ReadError(at_start)
            # (at ``first``: what follows an archive's end is neither zeros nor another archive)
            raise DataAfterEnd(offset) if offset == first else EOFError(inside.format(offset))
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


def _tarfile_members(f, offset: int, read_data: bool):
    """The same, through tarfile's file mode, from the header at ``offset`` on; returns the
    offset of the end-of-archive marker."""
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
    return tar.offset


def _first_data(read, start: int) -> Tuple[Optional[int], bytes]:
    """Past zero blocks: ``read(n)`` gives the bytes from ``start`` (a block boundary) on. Returns
    the offset of the first block that is not all zeros and the bytes read of it and after it,
    or ``(None, b"")`` when only zeros follow."""
    offset = start
    while True:
        chunk = read(CHECK_BUFFER)
        if not chunk:
            return None, b""
        stripped = chunk.lstrip(b"\0")
        if stripped:
            found = (offset + len(chunk) - len(stripped)) // BLOCK * BLOCK
            # (the block may start in an earlier chunk, which was all zeros up to this one)
            return found, (bytes(offset - found) + chunk) if found < offset else chunk[found - offset:]
        offset += len(chunk)


def plain_members(f, read_data: bool = True) -> Iterator[Member]:
    """Members of an uncompressed tar on a seekable file (``read_data=False``: names only, the
    data sought over), and of the archives after it (see the module doc)."""
    offset: Optional[int] = 0
    while offset is not None:
        try:
            marker = yield from _headers(f, read_data, offset)
        except _Unusual as unusual:
            marker = yield from _tarfile_members(f, unusual.offset, read_data)
        f.seek(marker + BLOCK)
        offset, _ = _first_data(f.read, marker + BLOCK)


#: How many first bytes of a file :func:`compression` reads.
HEAD = 10


def compression(head: bytes) -> Optional[str]:
    """``gzip``, ``bzip2`` or ``xz`` for a file beginning with ``head`` (its first :data:`HEAD`
    bytes), None for any other (a plain tar). By content, never by name: a compressed shard
    named ``.tar`` is read as ``tar -tf`` and ``webdataset`` read it."""
    if head.startswith(GZIP_MAGIC + b"\x08"):  # gzip's magic, then deflate (its one method)
        return "gzip"
    # bzip2: "BZh", the block size, then a block's or the end's magic (a plain tar's first
    # member may be named BZh...)
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[3:4] != b"0" and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bzip2"
    if head.startswith(XZ_MAGIC):
        return "xz"
    return None


def decompressed(f, verify: bool = True):
    """The tar bytes of a shard read forward only, by its first bytes (:func:`compression`): gzip
    through :class:`Gunzipped` (``verify``: each member's CRC checked), bzip2 through the
    standard library's reader and xz through :class:`Unxz` (every stream of the file, as ``cat``
    joins them; bytes after the last one that do not begin another are ignored, as for gzip),
    anything else as it is."""
    head = f.read(HEAD)
    source = _Joined(head, f)
    kind = compression(head)
    if kind == "gzip":
        return Gunzipped(source, verify)
    if kind == "bzip2":
        return bz2.BZ2File(source)
    if kind == "xz":
        return Unxz(source)
    return source


def stream_members(f, verify: bool = True) -> Iterator[Member]:
    """Members of a tar read forward only, compressed or not (see :func:`decompressed`), and of
    the archives after it (see the module doc). tarfile stops quietly at a header that is cut
    short, empty or garbled, as at the end-of-archive marker, and a cut compressed stream just
    ends: so the header tarfile stopped at is watched, and anything but the marker raises
    EOFError."""
    marker = []

    class Watched(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tar):
            try:
                return super().fromtarfile(tar)
            except tarfile.EOFHeaderError:  # a zero block: the end-of-archive marker
                marker.append(True)
                raise

    fed = _Fed(decompressed(f, verify))
    base = 0  # where the archive tarfile reads starts in the tar stream
    tar = tarfile.open(fileobj=fed, mode="r|", bufsize=STREAM_BUFFER, tarinfo=Watched)
    while True:
        info = tar.next()
        if info is None:
            if not marker:
                raise EOFError(f"no end-of-archive marker at byte {base + tar.offset} of the tar: the data "
                               "stops or is damaged there")
            # Another archive after the marker? tarfile read ahead of it: those bytes again first.
            after = base + tar.offset + BLOCK
            fed.back_to(after)
            start, head = _first_data(fed.read, after)
            if start is None:
                return
            fed.unread(head)
            marker.clear()
            base = start
            try:
                tar = tarfile.open(fileobj=fed, mode="r|", bufsize=STREAM_BUFFER, tarinfo=Watched)
            except tarfile.ReadError as e:
                raise DataAfterEnd(start) from e
            continue
        tar.members = []
        if info.islnk() or info.issym():
            yield info.name, _link(info)
            continue
        if not info.isfile():
            continue
        yield info.name, _read_member(info.name, tar.extractfile(info).read, info.size)


class _Joined(io.RawIOBase):
    """``head``, then what ``rest.read`` gives."""

    def __init__(self, head: bytes, rest):
        super().__init__()
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._head:
            self._head = self._rest.read(len(buffer))
        n = min(len(buffer), len(self._head))
        buffer[:n] = self._head[:n]
        self._head = self._head[n:]
        return n


class _Fed(io.RawIOBase):
    """The tar stream tarfile reads, one object for every archive in it: it counts the bytes it
    gave (``given``) and keeps the last ones, so that what tarfile read ahead of an archive's end
    can be given again to the next archive's reader (``back_to``), and takes back bytes read
    ahead of it (``unread``). tarfile reads at most ``STREAM_BUFFER`` ahead of what it used."""

    KEEP = 4 * STREAM_BUFFER

    def __init__(self, source):
        super().__init__()
        self._source = source
        self._head = b""
        self._recent: collections.deque = collections.deque()  # the last pieces given, KEEP bytes or more
        self._kept = 0
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._head:
            self._head = self._source.read(len(buffer))
        piece, self._head = self._head[:len(buffer)], self._head[len(buffer):]
        buffer[:len(piece)] = piece
        self.given += len(piece)
        self._recent.append(piece)
        self._kept += len(piece)
        while self._recent and self._kept - len(self._recent[0]) >= self.KEEP:
            self._kept -= len(self._recent.popleft())
        return len(piece)

    def unread(self, data: bytes) -> None:
        """``data`` is given again next, as the bytes just before what is left."""
        self._head = data + self._head
        self.given -= len(data)
        self._recent.clear()
        self._kept = 0

    def back_to(self, position: int) -> None:
        """The next byte given is the one at ``position`` of the stream (read before, lately)."""
        extra = self.given - position
        if extra < 0 or extra > self._kept:  # (damage as the reader reports it, never a crash)
            raise EOFError(f"cannot go back {extra} bytes in the tar stream (kept {self._kept})")
        kept = b"".join(self._recent)
        self.unread(kept[len(kept) - extra:] if extra else b"")


class _Decompressing(io.RawIOBase):
    """A compressed file's bytes, read forward only: ``_fill`` decompresses the next piece into
    ``_out`` from ``_raw`` (read from the file by ``_more``), or sets ``_ended``."""

    def __init__(self, f):
        super().__init__()
        self._f = f
        self._raw = b""  # read from the file, not yet decompressed
        self._out = b""
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._out and not self._ended:
            self._fill()
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _more(self) -> bool:
        chunk = self._f.read(STREAM_BUFFER)
        self._raw += chunk
        return bool(chunk)

    def _fill(self) -> None:
        raise NotImplementedError


class Gunzipped(_Decompressing):
    """The bytes of a gzip file, decompressed, read forward only: each member in turn (``cat
    a.gz b.gz`` and bgzip write several), each one's CRC-32 and length checked at its end by
    zlib (a mismatch, as any damage to the deflate data, raises ``zlib.error``), zero bytes
    between members skipped as the gzip module skips them; bytes after the last member that do
    not begin another (padding, junk) are ignored, as ``gzip -t`` ignores them. A file cut short
    raises EOFError. ``f`` must begin with a gzip member (:func:`compression`). tarfile's own
    gzip reading checks no CRC and reads one member only. ``verify=False``
    (a shard known to fail its check, read only to name its samples) reads every member without
    checking its CRC and length."""

    def __init__(self, f, verify: bool = True):
        super().__init__(f)
        self._verify = verify
        self._unzip = self._member()

    def _member(self):
        """The decompressor of the member ``_raw`` starts with: zlib's gzip mode, which checks
        its trailer; unverified, raw deflate after the header, which is passed over here."""
        if self._verify:
            return zlib.decompressobj(zlib.MAX_WBITS | 16)
        while (length := _gzip_header_length(self._raw)) is None:
            if not self._more():
                raise EOFError("the gzip stream ends inside a member's header (cut short)")
        self._raw = self._raw[length:]
        return zlib.decompressobj(-zlib.MAX_WBITS)

    def skip_rest(self) -> None:
        """Read on to the end, keeping nothing: every member's CRC and length checked."""
        while self.read(CHECK_BUFFER):
            pass

    def _fill(self) -> None:
        if self._unzip.eof:  # a member ended, its CRC and length checked: another one?
            self._raw = self._unzip.unused_data + self._raw
            if not self._verify:  # its trailer (CRC-32 and length), unchecked
                while len(self._raw) < 8 and self._more():
                    pass
                self._raw = self._raw[8:]
            # (after any zero bytes: a member may be padded with them, as the gzip module reads)
            self._raw = self._raw.lstrip(b"\0")
            while len(self._raw) < len(GZIP_MAGIC) and self._more():
                self._raw = self._raw.lstrip(b"\0")
            if not self._raw.startswith(GZIP_MAGIC):
                self._ended = True  # the end, or trailing bytes that are not a member
                return
            self._unzip = self._member()
        compressed = self._unzip.unconsumed_tail  # what the last call's output limit left over
        if not compressed:
            if not self._raw and not self._more():
                raise EOFError("the gzip stream ends before its member does (cut short)")
            compressed, self._raw = self._raw, b""
        # At most CHECK_BUFFER bytes out at a time: 64 KiB of zeros decompress to 64 MiB.
        self._out = self._unzip.decompress(compressed, CHECK_BUFFER)


class Unxz(_Decompressing):
    """The bytes of an xz file, decompressed, read forward only: each stream in turn (``cat
    a.xz b.xz``), each followed by any zero bytes (xz's stream padding); bytes after that which
    do not begin another stream are ignored, as for gzip. A stream cut short raises EOFError.
    (lzma.LZMAFile raises EOFError at zero bytes after the last stream, which ``xz -t`` accepts.)"""

    def __init__(self, f):
        super().__init__(f)
        self._unxz = lzma.LZMADecompressor(lzma.FORMAT_XZ)

    def _fill(self) -> None:
        if self._unxz.eof:  # a stream ended (its checks passed): another one, after any padding?
            self._raw = (self._unxz.unused_data + self._raw).lstrip(b"\0")
            while len(self._raw) < len(XZ_MAGIC) and self._more():
                self._raw = self._raw.lstrip(b"\0")
            if not self._raw.startswith(XZ_MAGIC):
                self._ended = True
                return
            self._unxz = lzma.LZMADecompressor(lzma.FORMAT_XZ)
        data = b""
        if self._unxz.needs_input:
            if not self._raw and not self._more():
                raise EOFError("the xz stream ends before it does (cut short)")
            data, self._raw = self._raw, b""
        # At most CHECK_BUFFER bytes out at a time, as for gzip.
        self._out = self._unxz.decompress(data, CHECK_BUFFER)


def _gzip_header_length(raw: bytes) -> Optional[int]:
    """The length of the gzip member header ``raw`` starts with (RFC 1952: ten bytes, then the
    extra field, name, comment and header CRC its flags announce), or None when ``raw`` is too
    short to hold it."""
    if len(raw) < 10:
        return None
    flags, at = raw[3], 10
    if flags & 4:  # FEXTRA: its length, then it
        if len(raw) < at + 2:
            return None
        at += 2 + int.from_bytes(raw[at:at + 2], "little")
    for bit in (8, 16):  # FNAME, FCOMMENT: NUL-terminated
        if flags & bit:
            end = raw.find(b"\0", at)
            if end < 0:
                return None
            at = end + 1
    if flags & 2:  # FHCRC
        at += 2
    return at if len(raw) >= at else None


def gzip_damage(f) -> Optional[str]:
    """Why the gzip file ``f`` cannot be trusted (its data does not match a member's CRC-32 or
    length, or does not decompress), or None: for a sound file, for one that is not gzip, and
    for one cut short or unreadable part of the way (the read of the shard reports those; a cut
    that falls after the tar's end leaves the shard read, unchecked). Reads ``f`` forward once
    and keeps none of the data."""
    head = f.read(HEAD)
    if compression(head) != "gzip":
        return None
    try:
        Gunzipped(_Joined(head, f)).skip_rest()
    except zlib.error as e:
        return f"zlib: {e}"
    except (EOFError, OSError):  # cut short, or a failed read of the file
        return None
    return None
