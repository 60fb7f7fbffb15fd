"""The paths a pipeline reads, for both readers of files (image files and WebDataset shards).

On a runner with several workers, the workers match the patterns and the matched paths are
reshuffled before they are read, so that the reading (and the hashing after it) of one
pattern's files is spread over the workers; without the reshuffle every file of a pattern is
read in the bundle that matched the pattern. When the pipeline runs on one worker in the
launcher's process, it takes the paths the launcher already listed (a :class:`Listing`): matching
them again would repeat that listing, and there is nowhere to spread them to. Inputs read by name
are given as that list too, spread over the workers (``Listing.spread``): matched again there, a name
Beam's listing cannot see (a symbolic link to nothing) would be an empty match, which fails the
run, instead of a failed record.

A local name whose bytes are not UTF-8 comes back from listing with lone surrogates in it, which
no Beam coder, Arrow array or Parquet file can encode: such a path travels as a :class:`BadName`,
and its reader makes it a failed record (its id the name with ``\\xNN`` escapes) instead of the
pipeline failing.
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Any, List, NamedTuple, Optional, Union

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems


def printable(text: str) -> str:
    """``text`` with the bytes that were not UTF-8 (lone surrogates, as ``os`` and ``tarfile``
    decode them) written as ``\\xNN``; other text as it is."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


#: The characters Beam's glob (fnmatch's syntax, without a way to quote) reads as wildcards.
WILDCARDS = "*?["


def wildcards(text: str) -> List[str]:
    """The wildcard characters ``text`` holds, sorted, each once."""
    return sorted(c for c in WILDCARDS if c in text)


def hidden_part(path: str, pattern: str) -> Optional[str]:
    """None, unless ``path`` (one of ``pattern``'s matches) lies under a name starting with a dot
    that the pattern's wildcards took (``.DS_Store``, the ``._IMG_1.jpg`` macOS writes beside
    each file on a foreign disk, a ``.git/`` folder under ``**``): then the part of the path the
    wildcards took, which shows it (``._IMG_1.jpg``, ``sub/.git/HEAD``). Such names are passed
    over, as the shell's ``*`` passes them over; a pattern that spells the dot (``DIR/.*``, a
    file named alone) takes them."""
    cut = min((pattern.find(c) for c in WILDCARDS if c in pattern), default=-1)
    if cut < 0:
        return None
    fixed = pattern[:cut].rfind("/") + 1  # the folder before the first wildcard, with its '/'
    if any(part.startswith(".") for part in pattern[fixed:].split("/")):
        return None
    below = path[fixed:] if path.startswith(pattern[:fixed]) else path.rsplit("/", 1)[-1]
    return below if any(part.startswith(".") for part in below.split("/")) else None


def identity(path: str) -> str:
    """What tells two matched paths apart: for a local file its absolute path, normalised
    (``x.jpg``, ``./x.jpg`` and ``/abs/x.jpg`` are one name; two names linked to one file, as in
    a Hugging Face cache, stay two inputs), for a URL (``gs://``...) the URL."""
    return path if "://" in path else os.path.normpath(os.path.abspath(path))


def literal(path: str) -> str:
    """A pattern that matches ``path`` only: Beam's glob reads ``*``, ``?`` and ``[`` in a file's
    name as wildcards, and ``[*]`` as the character itself."""
    return "".join(f"[{c}]" if c in WILDCARDS else c for c in path)


# literal() writes a `[` as the set `[[]`, which Python's re (inside Beam's matching, and in
# pattern_regex) compiles as meant but flags as a possible nested set of some later syntax.
warnings.filterwarnings("ignore", message="Possible nested set", category=FutureWarning)


def pattern_regex(pattern: str) -> "re.Pattern[str]":
    """Beam's glob ``pattern`` as a regular expression matching the paths it matches."""
    return re.compile(FileSystem.translate_pattern(pattern))


def open_stored(path: str):
    """``path`` opened for reading its bytes as stored, never decompressed by its name's suffix
    (tarfile's ``r|*`` recognises gzip, bz2 and xz itself; a Parquet file is read as it is)."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


class StoredFiles:
    """Files read whole by path, their bytes as stored (an image file is never a .gz to unpack),
    in a step that reads many: ``FileSystems.open`` looks the filesystem up among every subclass
    on each call, here once per scheme."""

    def __init__(self):
        self._filesystems: dict = {}

    def read(self, path: str) -> bytes:
        scheme = FileSystems.get_scheme(path)
        fs = self._filesystems.get(scheme)
        if fs is None:
            fs = self._filesystems[scheme] = FileSystems.get_filesystem(path)
        with fs.open(path, mime_type="application/octet-stream",
                     compression_type=CompressionTypes.UNCOMPRESSED) as f:
            return f.read()


class BadName(NamedTuple):
    """A matched path whose name is not UTF-8, by its printable form (``printable``)."""

    shown: str

    def reason(self, what: str) -> str:
        return (f"the {what}'s name is not UTF-8 ({self.shown}); Beam carries names as UTF-8 text, "
                "so it was not read: rename it")


def carried(path: str) -> Union[str, BadName]:
    """A matched path as the pipeline carries it: the path, or a ``BadName``."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return BadName(printable(path))
    return path


class Listing(NamedTuple):
    """The paths the launcher listed, read instead of matching the patterns again; ``spread``:
    reshuffled over the workers (not when the pipeline runs on one worker in the launcher's
    process)."""

    paths: List[str]
    spread: bool = True


class InputPaths(beam.PTransform):
    """The pipeline's root -> the paths of the files to read (directories left out): those the
    ``patterns`` match, or the ``listing``'s."""

    def __init__(self, patterns: List[str], listing: Optional[Listing] = None):
        super().__init__()
        self._patterns = patterns
        self._listing = listing

    def expand(self, pbegin):
        if self._listing is not None:
            return pbegin | "Listed" >> beam.Create([carried(p) for p in self._listing.paths],
                                                    reshuffle=self._listing.spread).with_output_types(Any)
        return (pbegin
                | "Patterns" >> beam.Create(self._patterns)
                | "Match" >> fileio.MatchAll()
                | "Paths" >> beam.FlatMap(
                    lambda m: [] if m.path.endswith(("/", "\\")) else [carried(m.path)]).with_output_types(Any)
                | "Spread" >> beam.Reshuffle())
