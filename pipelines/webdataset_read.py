"""Reading WebDataset shards (``00000.tar`` ...) as one dict record per sample.

A shard is read as a stream (``tarfile`` mode ``r|*``, through ``FileSystems.open``): one member
at a time, never the whole shard in memory, nothing extracted to disk. Members are grouped into
samples the WebDataset way: the key is the member path up to the first dot of its basename
(``a/b/000012.seg.png`` -> key ``a/b/000012``, member suffix ``seg.png``), and consecutive
members with the same key form one sample.

A sample record holds:

* ``key``: the sample key (the id), ``shard``: the shard's path;
* ``image``: the bytes of the first member whose suffix is in ``image_exts`` (in that order),
  and ``image_member``: that suffix;
* ``members``: every member suffix, in shard order; ``member_bytes``: the bytes of every other
  member (``.txt``, ``.json``, and any unknown suffix), so that ``--write-shards`` writes the
  sample out again byte for byte;
* with a sidecar (``00000.parquet`` beside ``00000.tar``, as img2dataset writes): that row's
  columns, joined on ``key``.

Bad input is data, never a crash: each problem is a failed record (``FAILED`` tag) whose ``error``
names the shard and the sample:

* a sample with no image member (only unknown suffixes, or only ``.txt``/``.json``);
* a key seen before: again later in the same shard, or in an earlier shard (shards are ranked by
  path; the first occurrence wins). Keys repeated across shards are found by a pre-pass that lists
  the member names only (:class:`FindRepeatedKeys`), a shuffle of keys, never of images;
* a shard that is not a tar: one record ``SHARD#unreadable``;
* a truncated shard: the sample being read when the data ran out, and one record
  ``SHARD#truncated`` standing for whatever the shard held after it;
* sidecar rows whose ``status`` is not ``success`` (img2dataset's failed downloads, which are in
  the Parquet only), and sidecar rows marked ``success`` that the shard does not hold.
"""
from __future__ import annotations

import posixpath
import tarfile
import zlib
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_phash.records import ERROR_FIELD, FAILED

DEFAULT_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")

KEY = "key"
SHARD = "shard"
IMAGE = "image"
IMAGE_MEMBER = "image_member"
MEMBERS = "members"
MEMBER_BYTES = "member_bytes"
#: Fields of a sample record that are written to the Parquet outputs (image bytes never are).
WRITTEN = (KEY, SHARD, MEMBERS, IMAGE_MEMBER)
#: Fields the reader sets; sidecar columns of these names are not joined.
OWN_FIELDS = (KEY, SHARD, IMAGE, IMAGE_MEMBER, MEMBERS, MEMBER_BYTES)

READ_BUFFER = 1 << 16  # tarfile copies its buffer on every read: larger is slower
STATUS_COLUMN = "status"
ERROR_MESSAGE_COLUMN = "error_message"


def split_name(name: str) -> Tuple[str, str]:
    """``(key, suffix)`` of a member path, the WebDataset way: the key runs to the first dot of
    the basename. A basename without a dot is all key (suffix ``""``)."""
    directory, base = posixpath.split(name)
    stem, dot, suffix = base.partition(".")
    return (posixpath.join(directory, stem) if directory else stem), suffix


def member_name(key: str, suffix: str) -> str:
    return f"{key}.{suffix}" if suffix else key


def sidecar_path(shard: str) -> str:
    """``00000.parquet`` beside ``00000.tar`` (also for ``.tar.gz`` and friends)."""
    base = shard
    for ext in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base + ".parquet"


def _open(path: str):
    # tarfile's r|* recognises gzip, bz2 and xz itself: no decompression by file name here.
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_sidecar(shard: str) -> Optional[Dict[str, dict]]:
    """The sidecar's rows by key, or None when the shard has none. Sidecars hold metadata only
    (one row of a few hundred bytes per sample), so one shard's is read whole."""
    path = sidecar_path(shard)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        rows = pq.read_table(f).to_pylist()
    return {str(r[KEY]): r for r in rows if r.get(KEY) is not None}


class _Sample:
    """Members of one sample as they come off the stream."""

    __slots__ = ("key", "suffixes", "data")

    def __init__(self, key: str):
        self.key = key
        self.suffixes: List[str] = []
        self.data: Dict[str, bytes] = {}

    def add(self, suffix: str, data: bytes) -> None:
        if suffix in self.data:  # the same member name twice: keep both, the later one renamed
            n = 2
            while f"{suffix}~{n}" in self.data:
                n += 1
            suffix = f"{suffix}~{n}"
        self.suffixes.append(suffix)
        self.data[suffix] = data


class SampleStream:
    """Samples of an open tar stream, in order. ``pending`` is the sample being assembled: when
    the stream breaks (``tarfile.TarError``, ``EOFError``, ``OSError``), it is the sample the
    break cut into (perhaps complete, perhaps not), and every sample yielded before is complete."""

    def __init__(self, tar: tarfile.TarFile):
        self._tar = tar
        self.pending: Optional[_Sample] = None

    def __iter__(self) -> Iterator[_Sample]:
        tar = self._tar
        while True:
            info = tar.next()
            if info is None:
                break
            tar.members = []  # tarfile keeps every TarInfo it read: not ours
            if not info.isfile():
                continue  # directories, links: not sample data
            key, suffix = split_name(info.name)
            if self.pending is not None and key != self.pending.key:
                done, self.pending = self.pending, None
                yield done
            if self.pending is None:
                self.pending = _Sample(key)
            extracted = tar.extractfile(info)
            data = extracted.read() if extracted is not None else b""
            if len(data) != info.size:
                raise EOFError(f"member {info.name} is cut short ({len(data)} of {info.size} bytes)")
            self.pending.add(suffix, data)
        if self.pending is not None:
            done, self.pending = self.pending, None
            yield done


def check_end_marker(f, offset: int) -> None:
    """``tarfile`` ends quietly at a header that is cut short or garbled: a tar that stops
    anywhere but at its end-of-archive marker (a zero block) is damaged, and raises EOFError."""
    f.seek(offset)
    block = f.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
        raise EOFError(f"no end-of-archive marker at byte {offset}: the data stops or is damaged there")


class ReadShardDoFn(beam.DoFn):
    """One shard path in, its sample records out (main output), failures on ``FAILED``.

    ``repeated``: a side input mapping ``(shard, key)`` to the shard that holds the key's first
    occurrence, for keys that occur in more than one shard."""

    def __init__(self, image_exts: Tuple[str, ...], sidecar_columns: Tuple[str, ...] = (),
                 join_sidecar: bool = True):
        self._image_exts = tuple(e.lower().lstrip(".") for e in image_exts)
        self._sidecar_columns = tuple(sidecar_columns)
        self._join_sidecar = join_sidecar

    def _base(self, shard: str, key: str) -> dict:
        record = {KEY: key, SHARD: shard, MEMBERS: [], IMAGE_MEMBER: None}
        for c in self._sidecar_columns:
            record[c] = None
        return record

    def _failure(self, shard: str, key: str, reason: str, sidecar_row: Optional[dict] = None,
                 sample: Optional[_Sample] = None):
        record = self._base(shard, key)
        if sample is not None:
            record[MEMBERS] = list(sample.suffixes)
        if sidecar_row is not None:
            for c in self._sidecar_columns:
                record[c] = sidecar_row.get(c)
        record[ERROR_FIELD] = f"shard {shard}: {reason}"
        return beam.pvalue.TaggedOutput(FAILED, record)

    def _record(self, shard: str, sample: _Sample, sidecar: Optional[Dict[str, dict]]):
        row = sidecar.get(sample.key) if sidecar is not None else None
        lowered = {s.lower(): s for s in sample.suffixes}
        image_member = next((lowered[e] for e in self._image_exts if e in lowered), None)
        if image_member is None:
            names = ", ".join(member_name(sample.key, s) for s in sample.suffixes)
            return self._failure(shard, sample.key,
                                 f"sample {sample.key} has no image member with a suffix among "
                                 f"{','.join(self._image_exts)} (members: {names})", row, sample)
        record = self._base(shard, sample.key)
        record[MEMBERS] = list(sample.suffixes)
        record[IMAGE_MEMBER] = image_member
        record[IMAGE] = sample.data.pop(image_member)
        record[MEMBER_BYTES] = sample.data
        if row is not None:
            for c in self._sidecar_columns:
                record[c] = row.get(c)
        return record

    def process(self, shard: str, repeated=None) -> Iterable:
        repeated = repeated or {}
        try:
            sidecar = read_sidecar(shard) if self._join_sidecar else None
        except Exception as e:  # noqa: BLE001 - a damaged sidecar: the samples are still read
            sidecar = None
            yield self._failure(shard, f"{sidecar_path(shard)}#unreadable",
                                f"sidecar {sidecar_path(shard)} cannot be read: {e}")
        seen = set()
        last: Optional[str] = None
        stream = None
        try:
            with _open(shard) as f:
                plain = shard.endswith(".tar") and f.seekable()
                try:
                    # A plain tar on a seekable file: read in order with tarfile's file mode, which
                    # reads each member's bytes straight from the file. Otherwise (compressed) the
                    # stream mode, which decompresses as it goes.
                    tar = (tarfile.open(fileobj=f, mode="r:") if plain
                           else tarfile.open(fileobj=f, mode="r|*", bufsize=READ_BUFFER))
                except (tarfile.TarError, EOFError, OSError, ValueError) as e:
                    yield self._failure(shard, f"{shard}#unreadable", f"not a tar archive ({e})")
                    tar = None
                if tar is not None:
                    stream = SampleStream(tar)
                    for sample in stream:
                        last = sample.key
                        failure = self._check_key(shard, sample, seen, repeated)
                        yield failure if failure is not None else self._record(shard, sample, sidecar)
                    if plain:
                        check_end_marker(f, tar.offset)
        except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
            pending = stream.pending if stream is not None else None
            if pending is not None:
                repeated_key = self._check_key(shard, pending, seen, repeated)
                yield repeated_key if repeated_key is not None else self._failure(
                    shard, pending.key, f"sample {pending.key}: the shard breaks inside it "
                    f"({type(e).__name__}: {e})", sample=pending)
                last = pending.key
            where = f"after sample {last}" if last is not None else "before its first sample"
            yield self._failure(shard, f"{shard}#truncated", f"truncated or damaged {where}, the rest of the "
                                f"shard is lost ({type(e).__name__}: {e})")
        if sidecar is not None:
            for key, row in sidecar.items():
                if key in seen or repeated.get((shard, key)) not in (None, shard):
                    continue
                status = row.get(STATUS_COLUMN)
                if status is not None and status != "success":
                    reason = f"sample {key}: {status}: {row.get(ERROR_MESSAGE_COLUMN) or 'no error message'}"
                else:
                    reason = f"sample {key} is listed in {sidecar_path(shard)} but not in the shard"
                yield self._failure(shard, key, reason, row)

    def _check_key(self, shard: str, sample: _Sample, seen: set, repeated) -> Optional[beam.pvalue.TaggedOutput]:
        """None for a key's first occurrence (and records it in ``seen``), else the failure."""
        if sample.key in seen:
            return self._failure(shard, sample.key, f"sample {sample.key}: key repeated within the "
                                 "shard (its first occurrence is used)", sample=sample)
        seen.add(sample.key)
        first = repeated.get((shard, sample.key))
        if first is not None and first != shard:
            return self._failure(shard, sample.key, f"sample {sample.key}: key already in shard "
                                 f"{first} (the first shard by path is used)", sample=sample)
        return None


class _Unusual(Exception):
    """A header the quick scan does not handle (PAX, GNU long names, sparse, base-256 sizes)."""


_REGULAR = (b"0", b"\0", b"7")
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")


def _nts(field: bytes) -> str:
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _scan_names(f) -> Iterator[str]:
    """Names of the regular members of a plain ustar/GNU tar, from its headers alone (seeking over
    the data): the same names ``tarfile`` gives, an order of magnitude faster, which matters as
    :class:`FindRepeatedKeys` reads every header once more. Raises :class:`_Unusual` on a header
    it does not handle; stops at the end marker or where the data breaks."""
    offset = 0
    while True:
        f.seek(offset)
        header = f.read(tarfile.BLOCKSIZE)
        if len(header) < tarfile.BLOCKSIZE or header.count(0) == tarfile.BLOCKSIZE:
            return
        if sum(header) - sum(header[148:156]) + 8 * 32 != int(_nts(header[148:156]).strip() or "-1", 8):
            raise _Unusual("checksum")
        kind = header[156:157]
        if header[124] & 0x80:
            raise _Unusual("base-256 size")
        size = int(_nts(header[124:136]).strip() or "0", 8)
        name = _nts(header[0:100])
        prefix = _nts(header[345:500])
        if prefix:
            name = prefix + "/" + name
        if kind in _REGULAR:
            if not (kind == b"\0" and name.endswith("/")):  # V7 directories
                yield name
            offset += tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        elif kind in _NO_DATA:
            offset += tarfile.BLOCKSIZE
        else:
            raise _Unusual(f"type {kind!r}")


def _tarfile_names(f) -> Iterator[str]:
    with tarfile.open(fileobj=f, mode="r:*") as tar:
        while True:
            info = tar.next()
            if info is None:
                return
            tar.members = []  # do not accumulate TarInfo objects
            if info.isfile():
                yield info.name


def list_keys(shard: str) -> Iterator[Tuple[str, Tuple[str, int]]]:
    """``(key, (shard, ordinal))`` for every sample of a shard, from the member headers: a
    seekable file is read at its headers only. Plain tars are scanned directly, others (PAX
    headers, GNU long names, compressed) with ``tarfile``. Stops quietly where the shard breaks;
    the read itself reports that."""
    def keys(names):
        last, ordinal = None, 0
        for name in names:
            key, _ = split_name(name)
            if key != last:
                yield key, (shard, ordinal)
                ordinal += 1
                last = key

    try:
        with _open(shard) as f:
            found = list(keys(_scan_names(f)))
    except _Unusual:
        found = None
    except Exception:  # noqa: BLE001 - damaged shards are reported by ReadShardDoFn
        return
    if found is not None:
        yield from found
        return
    try:
        with _open(shard) as f:
            yield from keys(_tarfile_names(f))
    except Exception:  # noqa: BLE001 - as above
        return


def _first_holders(element) -> Iterable[Tuple[Tuple[str, str], str]]:
    key, places = element
    shards = sorted({shard for shard, _ in places})
    if len(shards) > 1:
        for shard in shards[1:]:
            yield (shard, key), shards[0]


class FindRepeatedKeys(beam.PTransform):
    """Shard paths -> ``((shard, key), first shard)`` for every key held by more than one shard."""

    def expand(self, shards):
        return (shards
                | "ListKeys" >> beam.FlatMap(list_keys)
                | "GroupKeys" >> beam.GroupByKey()
                | "FirstHolders" >> beam.FlatMap(_first_holders))


class ReadShards(beam.PTransform):
    """Shard patterns -> sample records (main) and failed records (``FAILED``), as a
    ``DoOutputsTuple``. ``check_repeated_keys``: run the key pre-pass (only useful with more than
    one shard)."""

    def __init__(self, image_exts: Tuple[str, ...] = DEFAULT_IMAGE_EXTS, sidecar_columns: Tuple[str, ...] = (),
                 join_sidecar: bool = True, check_repeated_keys: bool = True):
        super().__init__()
        self._image_exts = image_exts
        self._sidecar_columns = sidecar_columns
        self._join_sidecar = join_sidecar
        self._check_repeated_keys = check_repeated_keys

    def expand(self, patterns):
        shards = (patterns
                  | "MatchShards" >> fileio.MatchAll()
                  | "ShardPaths" >> beam.Map(lambda m: m.path)
                  | "SpreadShards" >> beam.Reshuffle())
        dofn = ReadShardDoFn(self._image_exts, self._sidecar_columns, self._join_sidecar)
        if self._check_repeated_keys:
            repeated = shards | "RepeatedKeys" >> FindRepeatedKeys()
            return shards | "ReadShard" >> beam.ParDo(dofn, repeated=beam.pvalue.AsDict(repeated)).with_outputs(
                FAILED, main="records")
        return shards | "ReadShard" >> beam.ParDo(dofn).with_outputs(FAILED, main="records")
