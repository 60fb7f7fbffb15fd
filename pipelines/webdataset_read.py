"""Reading WebDataset shards (``00000.tar`` ...) as one dict record per sample.

A shard is read as a stream through ``FileSystems.open``, one member at a time
(:mod:`pipelines.tar_members`): never the whole shard in memory, nothing extracted to disk. Members are grouped into
samples the WebDataset way: the key is the member path up to the first dot of its basename
(``a/b/000012.seg.png`` -> key ``a/b/000012``, member suffix ``seg.png``), and consecutive
members with the same key form one sample. A shard made with plain ``tar -cf`` from a folder
stores members in the folder's order, which may split a sample (``k1.txt k2.jpg k1.jpg``): a part
without a member named as an image (``K.jpg``) is held back (its members are small; at most
``HELD_BYTES`` of them) until a later part of its key with none of its suffixes comes, and joined
to it; a later part that repeats one of its suffixes is a sample of its own, and the part held
then goes out alone. A part without an image that comes after its sample's image (``k1.jpg
k2.jpg k1.txt``) cannot join it, and is a failed record saying so.

A sample record holds:

* ``key``: the sample key (the id), ``shard``: the shard's path;
* ``image``: the bytes of the first member whose suffix is in ``image_exts`` (in that order),
  and ``image_member``: that suffix;
* ``members``: every member suffix, in shard order; ``member_bytes``: the bytes of every other
  member (``.txt``, ``.json``, and any unknown suffix), so that ``--write-shards`` writes the
  sample out again byte for byte;
* with a sidecar (``00000.parquet`` beside ``00000.tar``, as img2dataset writes): that row's
  columns, joined on ``key``;
* ``DEDUP_ID``, when the shards lie in several folders (``first_folder``): the sample's id for
  dedup (``ImagePhashDedup``'s ``id_field``), its key in the first folder by path and
  ``KEY (SHARD)`` in the others, since two datasets number their keys alike
  (:mod:`pipelines.repeated_keys`).

Bad input is data, never a crash: each problem is a failed record (``FAILED`` tag) whose ``error``
names the shard and the sample:

* a sample with no image member (only unknown suffixes, or only ``.txt``/``.json``), in any of
  its parts;
* a key seen before: again later in the same shard (a part with an image after the sample's
  image), or in an earlier shard of its folder (shards are ranked by
  path; the first occurrence wins). Keys repeated across shards are found by a pre-pass that lists
  the member names only (``repeated_keys.FindRepeatedKeys``), a shuffle of keys, never of images;
* a shard that is not a tar: one record ``SHARD#unreadable``;
* a truncated shard: the sample being read when the data ran out, and one record
  ``SHARD#truncated`` standing for whatever the shard held after it;
* a gzip shard whose CRC-32 or length does not match its data (a changed byte can decompress to
  altered members without any other error): every sample, since none can be trusted, and
  ``SHARD#damaged`` when it holds none;
* sidecar rows whose ``status`` is not ``success`` (img2dataset's failed downloads, which are in
  the Parquet only), and sidecar rows marked ``success`` that the shard does not hold.
"""
from __future__ import annotations

import posixpath
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_phash._native import tar_member_names
from beam_phash.records import ERROR_FIELD, FAILED
from pipelines.input_paths import BadName, InputPaths, Listing, open_stored, printable
from pipelines.repeated_keys import DEDUP_ID, FindRepeatedKeys, Repeated, dedup_id, id_file, in_process
from pipelines.tar_members import (HEAD, DataAfterEnd, Link, Member, MemberCutShort, compression, gzip_damage,
                                   plain_members, stream_members)

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
OWN_FIELDS = (KEY, SHARD, IMAGE, IMAGE_MEMBER, MEMBERS, MEMBER_BYTES, DEDUP_ID)

#: Bytes of samples' parts without an image held back, per shard read, at most, while they wait
#: for their image (:meth:`ReadShardDoFn._take`): the oldest go out as failed beyond it (a shard
#: of captions or audio alone is not held whole).
HELD_BYTES = 64 << 20
#: What a part held costs beside its members' bytes (its objects; measured at about 600 bytes).
PART_BYTES = 1024

#: img2dataset marks each row with a status and an error message; only "success" rows hold images.
STATUS_COLUMN = "status"
ERROR_MESSAGE_COLUMN = "error_message"


def status_reason(status_column: str, status, message) -> str:
    """Why an img2dataset row that is not "success" failed, as failed/ says it."""
    return f"{status_column} {status}: {message or 'no error message'}"


def split_name(name: str) -> Tuple[str, str]:
    """``(key, suffix)`` of a member path, the WebDataset way: the key runs to the first dot of
    the basename. A basename without a dot is all key (suffix ``""``). A leading ``./`` or ``/``
    (``tar -C DIR -cf shard.tar .``) is not part of the key, so the sidecar's keys still match;
    bytes of a name that are not UTF-8 (tar decodes them as lone surrogates, which no output can
    encode) are kept as ``\\xNN`` escapes."""
    name = printable(name)
    while name.startswith(("./", "/")):
        name = name[2:] if name.startswith("./") else name[1:]
    directory, base = posixpath.split(name)
    stem, dot, suffix = base.partition(".")
    return (posixpath.join(directory, stem) if directory else stem), suffix


def is_hidden(name: str) -> bool:
    """Whether a member belongs to no sample: its basename starts with a dot (``._k.jpg``, the
    AppleDouble file macOS tar stores before each file with extended attributes, ``.DS_Store``).
    The ``webdataset`` library passes these over too (its key needs a character before the
    dot); read as samples, each would split the sample it sits in."""
    return posixpath.basename(name).startswith(".")


def member_name(key: str, suffix: str) -> str:
    return f"{key}.{suffix}" if suffix else key


#: The names of shards (case ignored: ``00000.TAR`` too), plain or compressed. What a shard
#: holds is told by its first bytes, not by this suffix (:func:`tar_members.compression`).
SHARD_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")


def is_shard(path: str) -> bool:
    """Whether ``path`` is named as a shard (by its suffix, :data:`SHARD_SUFFIXES`)."""
    return path.lower().endswith(SHARD_SUFFIXES)


def shards_among(paths: Iterable[str]) -> List[str]:
    """The shards among ``paths`` (a folder's files, say), in their order."""
    return [p for p in paths if is_shard(p)]


def _base(shard: str) -> str:
    for ext in SHARD_SUFFIXES:
        if shard.lower().endswith(ext):
            return shard[: -len(ext)]
    return shard


def sidecar_path(shard: str) -> str:
    """``00000.parquet`` beside ``00000.tar`` (also for ``.tar.gz`` and friends)."""
    return _base(shard) + ".parquet"


#: img2dataset's per-shard statistics: ``00000_stats.json`` beside ``00000.tar``.
STATS_SUFFIX = "_stats.json"


def stats_path(shard: str) -> str:
    return _base(shard) + STATS_SUFFIX


def read_sidecar(shard: str) -> Optional[Dict[str, dict]]:
    """The sidecar's rows by key, or None when the shard has none. Sidecars hold metadata only
    (one row of a few hundred bytes per sample), so one shard's is read whole."""
    path = sidecar_path(shard)
    if not FileSystems.exists(path):
        return None
    with open_stored(path) as f:
        rows = pq.read_table(f).to_pylist()
    return {str(r[KEY]): r for r in rows if r.get(KEY) is not None}


class _Sample:
    """Members of one sample as they come off the stream."""

    __slots__ = ("key", "suffixes", "data", "links")

    def __init__(self, key: str):
        self.key = key
        self.suffixes: List[str] = []
        self.data: Dict[str, bytes] = {}
        self.links: List[str] = []  # its members that are links, said as such

    def add(self, suffix: str, data: Union[bytes, Link]) -> None:
        """The member's suffix is listed as it is; its bytes go under ``stored_as``, which tells
        the n-th member of one name from the first. A link has no bytes here: it is noted."""
        self.suffixes.append(suffix)
        if isinstance(data, Link):
            self.links.append(f"{member_name(self.key, suffix)} is a {data.kind} to {data.target}")
            return
        self.data[stored_as(suffix, self.suffixes.count(suffix))] = data

    def size(self) -> int:
        """Its bytes as held: its members' and about ``PART_BYTES`` of bookkeeping."""
        return PART_BYTES + sum(len(data) for data in self.data.values())

    def joined(self, later: "_Sample") -> "_Sample":
        """This part of a sample and a ``later`` one with no suffix in common and no links, as one
        sample, members in shard order."""
        whole = _Sample(self.key)
        for part in (self, later):
            for n, suffix in enumerate(part.suffixes):
                whole.add(suffix, part.data[stored_as(suffix, part.suffixes[:n + 1].count(suffix))])
        return whole


def stored_as(suffix: str, n: int) -> str:
    """Where the bytes of the n-th member (from 1) with ``suffix`` are kept in a sample's
    ``member_bytes``: the suffix itself, then ``suffix\\0n`` (no member name holds a NUL)."""
    return suffix if n == 1 else f"{suffix}\0{n}"


class SampleStream:
    """Samples of a shard's ``(name, bytes)`` members, in order. ``pending`` is the sample being
    assembled: when the members break off (``tarfile.TarError``, ``EOFError``, ``OSError``), it
    is the sample the break cut into (perhaps complete, perhaps not), and every sample yielded
    before is complete; at ``DataAfterEnd`` (damage after an archive's end) no sample is
    pending. ``started``: whether any member was read."""

    def __init__(self, members: Iterator[Member]):
        self._members = members
        self.pending: Optional[_Sample] = None
        self.started = False

    def __iter__(self) -> Iterator[_Sample]:
        # A break at a header (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) goes
        # out as it is: the members read so far are whole, but the sample being assembled may
        # have had more (its .txt, .json) after them, so it stays ``pending``, the broken one.
        members = iter(self._members)
        while True:
            try:
                name, data = next(members)
            except StopIteration:
                break
            except DataAfterEnd:
                # The archive ended whole at its marker: the sample assembled is complete, and
                # only what follows the marker is damage.
                if self.pending is not None:
                    done, self.pending = self.pending, None
                    yield done
                raise
            except MemberCutShort as e:
                if is_hidden(e.name):  # in no sample: a break between members, as at a header
                    raise EOFError(str(e)) from e
                # The break is inside a member: its sample is the broken one.
                key, _ = split_name(e.name)
                if self.pending is not None and key != self.pending.key:
                    done, self.pending = self.pending, _Sample(key)
                    yield done
                elif self.pending is None:
                    self.pending = _Sample(key)
                raise
            self.started = True
            if is_hidden(name):
                continue
            key, suffix = split_name(name)
            if self.pending is not None and key != self.pending.key:
                done, self.pending = self.pending, None
                yield done
            if self.pending is None:
                self.pending = _Sample(key)
            self.pending.add(suffix, data)
        if self.pending is not None:
            done, self.pending = self.pending, None
            yield done


def open_members(f, shard: str, read_data: bool = True, checked: bool = True) -> Iterator[Member]:
    """A shard's members: a plain tar on a seekable file is parsed directly, anything else
    (compressed, told by its first bytes whatever its name) read as a stream
    (:func:`stream_members`), gzip through :class:`Gunzipped` (every member, each one's CRC
    checked). ``checked=False`` (a gzip shard known to fail its check, read only to name its
    samples): every member read without its check, which would raise in the last block read."""
    if f.seekable():
        head = f.read(HEAD)
        f.seek(0)
        if compression(head) is None:
            return plain_members(f, read_data)
    return stream_members(f, verify=checked)


@dataclass
class _Reading:
    """One shard as it is read: its path, its sidecar's rows by key (None without a sidecar), the
    keys whose first occurrence is in another shard, the keys seen so far, and the first parts of
    samples that hold no image yet (:meth:`ReadShardDoFn._take`)."""
    shard: str
    sidecar: Optional[Dict[str, dict]] = None
    repeated: dict = field(default_factory=dict)
    seen: set = field(default_factory=set)
    held: Dict[str, "_Sample"] = field(default_factory=dict)  # parts without an image, by key
    held_bytes: int = 0
    imaged: set = field(default_factory=set)  # keys recorded with an image member
    imageless: set = field(default_factory=set)  # keys whose parts so far went out failed
    id_file: Optional[str] = None  # with shards in several folders: ``repeated_keys.id_file``


class ReadShardDoFn(beam.DoFn):
    """One shard path in, its sample records out (main output), failures on ``FAILED``.

    ``repeated``: a side input mapping ``(shard, key)`` to the shard of its folder that holds the
    key's first occurrence, for keys that occur in more than one shard of a folder.
    ``first_folder``: when the shards lie in several folders, the first's: each record then has
    its id for dedup (``DEDUP_ID``)."""

    def __init__(self, image_exts: Tuple[str, ...], sidecar_columns: Tuple[str, ...] = (),
                 join_sidecar: bool = True, first_folder: Optional[str] = None):
        self._image_exts = tuple(e.lower().lstrip(".") for e in image_exts)
        self._sidecar_columns = tuple(sidecar_columns)
        self._join_sidecar = join_sidecar
        self._first_folder = first_folder

    def _reading(self, shard: str, repeated: Optional[dict] = None) -> _Reading:
        return _Reading(shard, repeated=repeated or {},
                        id_file=None if self._first_folder is None else id_file(shard, self._first_folder))

    def _base(self, reading: _Reading, key: str) -> dict:
        """A record of ``key`` with the key's sidecar columns (None where the sidecar lacks it)."""
        record = {KEY: key, SHARD: reading.shard, MEMBERS: [], IMAGE_MEMBER: None,
                  **({} if self._first_folder is None else {DEDUP_ID: dedup_id(key, reading.id_file)})}
        row = reading.sidecar.get(key) if reading.sidecar is not None else None
        for c in self._sidecar_columns:
            record[c] = row.get(c) if row is not None else None
        return record

    def _failure(self, reading: _Reading, key: str, reason: str, sample: Optional[_Sample] = None):
        record = self._base(reading, key)
        if sample is not None:
            record[MEMBERS] = list(sample.suffixes)
        record[ERROR_FIELD] = f"shard {reading.shard}: {reason}"
        return beam.pvalue.TaggedOutput(FAILED, record)

    def _record(self, reading: _Reading, sample: _Sample):
        if sample.links:  # its bytes are elsewhere, perhaps not in the shard: never guessed at
            return self._failure(reading, sample.key, f"sample {sample.key}: member {'; '.join(sample.links)}, "
                                 "and links in shards are not followed", sample)
        lowered: Dict[str, str] = {}
        for s in sample.suffixes:  # the first member of each suffix, case ignored
            lowered.setdefault(s.lower(), s)
        held = [lowered[e] for e in self._image_exts if e in lowered]
        # the first in --image-ext's order that holds bytes (an empty K.jpg beside K.png: the png)
        image_member = next((m for m in held if sample.data[m]), held[0] if held else None)
        if image_member is None:
            # A suffix of parts whose last is an image's (IMG_1.edited.jpg: key IMG_1, suffix
            # edited.jpg): the image when it is the only one. Several (v1.2.jpg and v1.3.jpg,
            # keys with a dot, which split into one sample v1) are never chosen between.
            tails = [s for s in dict.fromkeys(sample.suffixes) if s.rpartition(".")[2].lower() in self._image_exts]
            if len(tails) > 1:
                names = ", ".join(member_name(sample.key, s) for s in tails)
                return self._failure(reading, sample.key, f"sample {sample.key} has several image members "
                                     f"({names}) and none named {sample.key}.<ext>: keys with a dot split at "
                                     "their first one, so these may be several samples", sample)
            image_member = tails[0] if tails else None
        if image_member is None:
            names = ", ".join(member_name(sample.key, s) for s in sample.suffixes)
            return self._failure(reading, sample.key,
                                 f"sample {sample.key} has no image member with a suffix among "
                                 f"{','.join(self._image_exts)} (members: {names})", sample)
        if not sample.data[image_member]:  # said by member, not as the record's internal field
            members = ", ".join(member_name(sample.key, m) for m in held) or member_name(sample.key, image_member)
            return self._failure(reading, sample.key, f"sample {sample.key}: its image member"
                                 f"{'s' if len(held) > 1 else ''} {members} "
                                 f"{'are' if len(held) > 1 else 'is'} empty", sample)
        record = self._base(reading, sample.key)
        record[MEMBERS] = list(sample.suffixes)
        record[IMAGE_MEMBER] = image_member
        record[IMAGE] = sample.data.pop(image_member)
        record[MEMBER_BYTES] = sample.data
        return record

    def process(self, shard: str, repeated=None) -> Iterable:
        if isinstance(shard, BadName):
            yield self._failure(self._reading(shard.shown), f"{shard.shown}#unreadable", shard.reason("shard"))
            return
        reading = self._reading(shard, repeated)
        if self._join_sidecar:
            try:
                reading.sidecar = read_sidecar(shard)
            except Exception as e:  # noqa: BLE001 - a damaged sidecar: the samples are still read
                yield self._failure(reading, f"{sidecar_path(shard)}#unreadable",
                                    f"sidecar {sidecar_path(shard)} cannot be read: {e}")
        damage: Optional[str] = None  # why a gzip shard cannot be trusted: checked before any sample
        last: Optional[str] = None
        stream = None
        broken: Optional[Tuple[str, str]] = None  # where the shard breaks off, and how
        try:
            with open_stored(shard) as f:
                if f.seekable():  # one open: its first bytes, and a gzip shard's whole check
                    damage = gzip_damage(f)
                    f.seek(0)
                else:
                    damage = _gzip_damage(shard)
                stream = SampleStream(open_members(f, shard, checked=damage is None))
                for sample in stream:
                    last = sample.key
                    yield from self._take(reading, sample, damage)
        except tarfile.ReadError as e:
            if stream is None or not stream.started:
                yield self._failure(reading, f"{shard}#unreadable", f"not a tar archive ({e})")
                damage = None  # said as unreadable
            else:
                broken = yield from self._broken(reading, stream, last, e, damage)
        except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
            # (a damaged gzip shard's read meets the damage itself: zlib.error)
            broken = yield from self._broken(reading, stream, last, e, damage)
        for sample in reading.held.values():  # parts whose K.jpg never came: as they are
            out = self._recorded(reading, sample)
            if broken is None or isinstance(out, dict):  # (K.edited.jpg: its image, whole)
                yield out
            else:
                yield self._failure(reading, sample.key, f"sample {sample.key} has no image member among "
                                    f"{', '.join(member_name(sample.key, s) for s in sample.suffixes)}, read "
                                    f"before the shard breaks {broken[0]} ({broken[1]})", sample)
        lost = 0  # samples the sidecar lists after the break
        for key, row in (reading.sidecar or {}).items():
            if key in reading.seen or _first_elsewhere(reading, key) is not None:
                continue
            status = row.get(STATUS_COLUMN)
            if status is not None and status != "success":
                reason = f"sample {key}: {status_reason(STATUS_COLUMN, status, row.get(ERROR_MESSAGE_COLUMN))}"
            elif broken is not None:
                reason = (f"sample {key} is listed in {sidecar_path(shard)}, and the shard is truncated or "
                          f"damaged {broken[0]} ({broken[1]})")
                lost += 1
            else:
                reason = f"sample {key} is listed in {sidecar_path(shard)} but not in the shard"
            yield self._failure(reading, key, reason)
        if broken is not None and not lost and damage is not None:
            yield self._failure(reading, f"{shard}#damaged", f"{broken[1]}; its read stopped {broken[0]}, "
                                "and whatever it held after that is lost")
        elif broken is not None and not lost:  # nothing else stands for the rest of the shard
            yield self._failure(reading, f"{shard}#truncated", f"truncated or damaged {broken[0]}, the rest "
                                f"of the shard is lost ({broken[1]})")
        elif damage is not None and last is None:  # no sample stands for the shard
            yield self._failure(reading, f"{shard}#damaged", f"the shard's gzip check fails ({damage})")

    def _has_image(self, sample: _Sample) -> bool:
        """Whether a sample (or a part of one) has a member named as an image (``K.jpg``), or a
        link (which it reports): a part without either waits for the rest of its sample (a part
        with only ``K.seg.png``, which ``_record`` takes when nothing else comes, too)."""
        return bool(sample.links) or any(s.lower() in self._image_exts for s in sample.suffixes)

    def _join(self, reading: _Reading, sample: _Sample) -> Tuple[Optional[_Sample], Optional[_Sample]]:
        """``(sample, None)`` with the part of its key held before it joined to it, when there is
        one with none of its suffixes; ``(sample, held)`` when the part held has some (a sample
        of its own, now let go); ``(None, None)`` when none is held."""
        held = reading.held.pop(sample.key, None)
        if held is None:
            return None, None
        reading.held_bytes -= held.size()
        if sample.links or set(held.suffixes) & set(sample.suffixes):
            return sample, held
        return held.joined(sample), None

    def _part(self, reading: _Reading, sample: _Sample):
        """Yields the part held for ``sample``'s key when it goes out alone (``_join``); returns
        the sample to go on with (joined to the part held, whose key was checked with it) and the
        failure of its key, if any (``_check_key``)."""
        joined, let_go = self._join(reading, sample)
        if let_go is not None:
            yield self._recorded(reading, let_go)
        if joined is not None:
            return joined, None
        return sample, self._check_key(reading, sample)

    def _take(self, reading: _Reading, sample: _Sample, damage: Optional[str]) -> Iterator:
        """A sample (or a part of one) as the stream gives it -> its record or failure, or nothing
        while it is held: a part without an image waits in ``reading.held`` for a later part of
        its key with none of its suffixes, and is joined to it."""
        sample, failure = yield from self._part(reading, sample)
        if failure is not None:
            yield failure
        elif damage is not None:
            yield self._untrusted(reading, sample, damage)
        elif not self._has_image(sample):
            reading.held[sample.key] = sample
            reading.held_bytes += sample.size()
            while reading.held_bytes > HELD_BYTES:  # a shard of samples without images: no longer held
                oldest = reading.held.pop(next(iter(reading.held)))
                reading.held_bytes -= oldest.size()
                yield self._recorded(reading, oldest)
        else:
            yield self._recorded(reading, sample)

    def _recorded(self, reading: _Reading, sample: _Sample):
        """``_record`` of a sample (or of parts that went out without a K.jpg), noting whether its
        key has an image recorded now (a later part without one comes after it) or not (a later
        part with one is taken)."""
        out = self._record(reading, sample)
        (reading.imaged if isinstance(out, dict) else reading.imageless).add(sample.key)
        return out

    def _untrusted(self, reading: _Reading, sample: _Sample, damage: str):
        return self._failure(reading, sample.key, f"sample {sample.key}: the shard's gzip check fails "
                             f"({damage}), so none of its bytes can be trusted", sample)

    def _broken(self, reading: _Reading, stream: Optional[SampleStream], last: Optional[str], e: Exception,
                damage: Optional[str] = None):
        """Yields the sample a break cut into; returns where the shard breaks off, and how (for
        a shard whose gzip check failed, ``damage``: that check). The caller reports the rest:
        the samples its sidecar lists after the break, or when none, ``SHARD#truncated`` (or
        ``SHARD#damaged``)."""
        pending = stream.pending if stream is not None else None
        if pending is not None:
            if isinstance(e, MemberCutShort):
                where = "inside it"
            else:  # at a header: perhaps between two of its members
                read = ", ".join(member_name(pending.key, s) for s in pending.suffixes)
                where = f"after its members {read}, and members of it after them would be lost"
            pending, repeated_key = yield from self._part(reading, pending)
            if repeated_key is not None:
                yield repeated_key
            elif damage is not None:
                yield self._untrusted(reading, pending, damage)
            else:
                yield self._failure(reading, pending.key, f"sample {pending.key}: the shard breaks {where} "
                                    f"({type(e).__name__}: {e})", pending)
            last = pending.key
        where = f"after sample {last}" if last is not None else "before its first sample"
        return where, (f"the shard's gzip check fails ({damage})" if damage is not None else f"{type(e).__name__}: {e}")

    def _check_key(self, reading: _Reading, sample: _Sample) -> Optional[beam.pvalue.TaggedOutput]:
        """None for a key's first occurrence (and records it as seen), else the failure."""
        first = _first_elsewhere(reading, sample.key)
        if first is not None:  # every part of a sample first in another shard of its folder
            reading.seen.add(sample.key)
            return self._failure(reading, sample.key, f"sample {sample.key}: key already in shard {first} (the "
                                 "first shard by path is used)", sample)
        if not sample.suffixes:  # a part the shard's break cut in its first member: no repeat of anything
            reading.seen.add(sample.key)
            return None
        if sample.key in reading.seen and sample.key in reading.imageless and sample.key not in reading.imaged:
            return None  # its parts so far failed without an image (held past HELD_BYTES): this one is taken
        if sample.key in reading.seen:
            if sample.key in reading.imaged and not self._has_image(sample):
                members = ", ".join(member_name(sample.key, s) for s in sample.suffixes)
                return self._failure(reading, sample.key, f"sample {sample.key}: its members {members} come after "
                                     "its image, past other samples' members, and are not carried with it (a shard "
                                     "made with plain tar -cf from a folder splits samples; tar --sort=name keeps "
                                     "each sample's members together)", sample)
            return self._failure(reading, sample.key, f"sample {sample.key}: key repeated within the "
                                 "shard (its first occurrence is used)", sample)
        reading.seen.add(sample.key)
        return None


def _first_elsewhere(reading: _Reading, key: str) -> Optional[str]:
    """The shard of this shard's folder that holds ``key`` first, when that is another shard."""
    first = reading.repeated.get((reading.shard, key))
    return None if first in (None, reading.shard) else first


def _gzip_damage(shard: str) -> Optional[str]:
    """``gzip_damage`` of a shard read as a stream, which cannot go back to its start: a second
    open of it. None when it cannot be opened (the read reports that)."""
    try:
        f = open_stored(shard)
    except Exception:  # noqa: BLE001 - a shard that cannot be opened: the read says why
        return None
    with f:
        return gzip_damage(f)


def _member_names(shard: str) -> Iterator[str]:
    # A plain tar on the local disk: the Rust walk over its headers (about 15 times faster than
    # this module's); otherwise, or where that walk gives up, the reader's own.
    if shard.lower().endswith(".tar") and "://" not in shard:
        names = tar_member_names(shard)
        if names is not None:
            yield from names
            return
    with open_stored(shard) as f:
        # (A compressed shard is read to its end, past the last archive's marker: each gzip
        # member's CRC is checked, which a damaged shard fails, zlib.error, even when its last
        # bytes are a read of their own.)
        for name, _ in open_members(f, shard, read_data=False):
            yield name


def list_keys(shard: str) -> Iterator[str]:
    """The key of every sample of a shard, in order, from the member headers (a plain tar is
    read at its headers only, the data sought over). Stops quietly where the shard breaks; the
    read itself reports that. A gzip shard that fails its check has no key: its read fails every
    sample, and none of them may take a key from an intact shard later by path."""
    keys: List[str] = []
    try:
        last = None
        for name in _member_names(shard):
            if is_hidden(name):
                continue
            key, _ = split_name(name)
            if key != last:
                keys.append(key)
                last = key
    except zlib.error:
        return
    except Exception:  # noqa: BLE001 - damaged shards are reported by ReadShardDoFn
        pass
    yield from keys


#: Up to this many local shards, holding at most this many bytes, the launcher lists their keys
#: itself (a few milliseconds of header reads) instead of the pipeline's pre-pass, whose extra
#: stages and side input cost about 0.15 s a run: shards then read as fast as files on small inputs.
#: When the pipeline runs in the launcher's process on one worker, the pre-pass would do the same
#: reads there, one after the other, before the samples: the launcher checks local shards of
#: any number and size itself.
LOCAL_KEY_CHECK_SHARDS = 64
LOCAL_KEY_CHECK_BYTES = 1 << 30


def repeated_keys(shards: List[str]) -> Repeated:
    """The keys held by more than one shard (``repeated_keys.first_holders``), listed in this
    process."""
    return in_process(shards, list_keys)


class ReadShards(beam.PTransform):
    """Shards -> sample records (main) and failed records (``FAILED``), as a
    ``DoOutputsTuple``, from the shards ``patterns`` match (or the ``listing``'s); see
    :class:`~pipelines.input_paths.InputPaths`. ``check_repeated_keys``: run
    the key pre-pass (only useful with more than one shard); ``repeated``: its result, found
    beforehand (:func:`repeated_keys`), instead. ``first_folder``: see :class:`ReadShardDoFn`."""

    def __init__(self, patterns: List[str], image_exts: Tuple[str, ...] = DEFAULT_IMAGE_EXTS,
                 sidecar_columns: Tuple[str, ...] = (), join_sidecar: bool = True,
                 check_repeated_keys: bool = True, expected_samples: int = 0,
                 repeated: Optional[Dict[Tuple[str, str], str]] = None, listing: Optional[Listing] = None,
                 first_folder: Optional[str] = None):
        super().__init__()
        self._first_folder = first_folder
        self._patterns = patterns
        self._listing = listing
        self._repeated = repeated
        self._expected_samples = expected_samples
        self._image_exts = image_exts
        self._sidecar_columns = sidecar_columns
        self._join_sidecar = join_sidecar
        self._check_repeated_keys = check_repeated_keys

    def expand(self, pbegin):
        shards = pbegin | "Shards" >> InputPaths(self._patterns, self._listing)
        dofn = ReadShardDoFn(self._image_exts, self._sidecar_columns, self._join_sidecar, self._first_folder)
        if self._repeated is not None:
            return shards | "ReadShard" >> beam.ParDo(dofn, repeated=self._repeated).with_outputs(
                FAILED, main="records")
        if self._check_repeated_keys:
            repeated = shards | "RepeatedKeys" >> FindRepeatedKeys(list_keys, self._expected_samples)
            return shards | "ReadShard" >> beam.ParDo(dofn, repeated=beam.pvalue.AsDict(repeated)).with_outputs(
                FAILED, main="records")
        return shards | "ReadShard" >> beam.ParDo(dofn).with_outputs(FAILED, main="records")
