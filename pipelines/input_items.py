"""What each --input or --reference item names, found at start: the pattern it is read by and
the files it matches (a local folder listed by itself, a local glob walked, Beam's match
otherwise), the hidden files and subfolders passed over, and the items refused (an earlier
run's output folder, a folder of another format's files). :func:`located` is the entry."""
from __future__ import annotations

import fnmatch
import functools
import os
import posixpath
import re
from typing import Dict, List, NamedTuple, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from pipelines import webdataset_read as wds
from pipelines.errors import ConfigError
from pipelines.input_paths import WILDCARDS, hidden_part, literal, pattern_regex, wildcards


class NoMatch(ConfigError):
    """An input or reference that matched no files."""


class OnlyHidden(NoMatch):
    """An input or reference that matched hidden files only (``input_paths.hidden_part``)."""


def is_folder(item: str) -> bool:
    """Whether an --input or --reference item names a folder: a local directory, or any path
    ending in '/' (a remote prefix). A remote name without the '/' may be one too (see
    :func:`remote_name`)."""
    return os.path.isdir(item) or item.endswith("/")


def remote_name(item: str) -> bool:
    """Whether ``item`` is a remote name without wildcards or a trailing '/': an object, or a
    folder (``gs://bucket/images``, as ``gsutil`` and the cloud consoles show one), read as the
    folder when it matches no object."""
    return "://" in item and not item.endswith("/") and not wildcards(item)


def _pattern(item: str, fmt: str) -> str:
    """A directory becomes DIR/* (DIR/*.parquet for Parquet; for WebDataset DIR/*, of which
    ``resolve`` reads the shards, compressed or not); an existing local file is that file (``x[1].jpg``
    is not x1.jpg); globs stay as they are."""
    if os.path.isfile(item):
        return _anchored(literal(item))
    if is_folder(item):
        suffix = folder_names(fmt)
        # A local folder is named as it is: `crawl[1]` is that folder, not crawl1.
        folder = literal(item.rstrip("/")) if os.path.isdir(item) else item.rstrip("/")
        return FileSystems.join(folder, suffix)
    if "://" not in item:
        # A local glob as the listing spells its paths: `in//*.tar` would match no `in/x.tar`.
        return _anchored(re.sub("/{2,}", "/", item))
    return item


def _anchored(pattern: str) -> str:
    """A relative local glob whose first wildcard lies in its first part (``*.jpg``, ``in*/*.jpg``,
    or ``x[[]1].jpg``, an existing ``x[1].jpg``) as ``./*.jpg``: Beam's local match lists the
    folder that the text before the first wildcard names, and finds nothing in none. Its paths
    are then spelt ``./x.jpg``, as the shell spells ``./*.jpg``'s."""
    before = re.match(f"[^{re.escape(WILDCARDS)}]*", pattern).group(0)
    if before == pattern or posixpath.dirname(before):
        return pattern
    return "./" + pattern


def listing_error(e: Exception) -> str:
    """What went wrong listing a path, in one line: a filesystem Beam does not have (a missing
    extra), or the error itself (credentials, permissions, a missing bucket), by its type."""
    text = " ".join(str(e).split())
    # Beam up to 2.77 has no filesystem for the scheme; 2.78 registers gs:// and s3:// without
    # their client libraries, and the listing fails on them instead.
    missing = ("Unable to get filesystem", "Unable to get the Filesystem", "dependencies are not installed")
    if any(m in text for m in missing):
        return ("no Beam filesystem for this path's scheme: install its extra (beam-phash is not on "
                "PyPI: pip install '.[gcp]' for gs://, '.[aws]' for s3://, in the beam-phash repository, "
                f"or the wheel with [gcp] or [aws] after its name), or check the path ({text[:300]})")
    return f"{type(e).__name__}: {text[:300]}"


def _match(pattern: str, item: str, flag: str = "--input") -> Dict[str, int]:
    """The files ``pattern`` matches, sorted by path, with their sizes in bytes."""
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # noqa: BLE001 - said as what it is, never as "matched no files"
        raise ConfigError(f"{flag} {item!r} cannot be listed: {listing_error(e)}") from None
    if not found:
        raise NoMatch(f"{flag} {item!r} matched no files{_what_a_folder_means(pattern, item, flag)}")
    return {m.path: m.size_in_bytes for m in sorted(found, key=lambda m: m.path)}


def _local_folder(item: str, pattern: str) -> bool:
    """Whether ``item`` is a local folder, read as ``pattern`` (DIR/*, DIR/*.parquet)."""
    return pattern != item and "://" not in item and os.path.isdir(item)


def _is(check) -> bool:
    """``entry.is_dir`` or ``entry.is_file``, False where the entry cannot be followed (a link in
    a loop raises ELOOP): such an entry is read by name, where it fails with its reason."""
    try:
        return check()
    except OSError:
        return False


def _glob_folder(item: str, pattern: str) -> Optional[str]:
    """The folder of a local glob whose wildcards all lie in its last part (``in/*.jpg``,
    ``./shard-0?.tar``), which is listed as a folder is; None for any other pattern (``in/*/x.jpg``,
    ``in/**.jpg``, ``gs://...``, a file given by name)."""
    if "://" in pattern or os.path.isfile(item):
        return None
    folder, names = posixpath.split(pattern)
    # Beam's `?` and `[!a]` match a '/' too (in/a?b.jpg matches in/a/b.jpg), which a scan of one
    # folder cannot: such globs stay Beam's, so that the workers' match agrees with this one.
    wild = any(c in names for c in "*[") and not any(w in names for w in ("**", "?", "[!", "[^"))
    return folder if wild and folder and not wildcards(folder) and os.path.isdir(folder) else None


def _holds_some(folder: str, names: str) -> bool:
    """Whether a subfolder may hold what its folder's ``names`` take: a name they take or a
    folder, neither hidden (a folder of images beside Parquet files, or an empty one, is not said
    as unread); True when it cannot be looked into."""
    try:
        with os.scandir(folder) as entries:
            return any(not entry.name.startswith(".") and (fnmatch.fnmatchcase(entry.name, names) or _is(entry.is_dir))
                       for entry in entries)
    except OSError:
        return True


def _size(stat) -> Optional[Tuple[int, bool]]:
    """A listed entry's size in bytes through ``stat`` (``DirEntry.stat`` or ``os.stat`` of its
    path), and whether Beam's listing drops it: a link to nothing or in a loop, sized as the
    link. None for an entry gone since it was listed (left out, as Beam leaves it out)."""
    try:
        return stat().st_size, False
    except OSError:
        try:
            return stat(follow_symlinks=False).st_size, True
        except OSError:
            return None


def _list_folder(folder: str, pattern: str, item: str, flag: str) -> Tuple[Dict[str, int], bool, List[str]]:
    """A local folder's entries that the last part of ``pattern`` takes, sorted by path (spelt
    as Beam's match spells them), with their sizes; whether Beam's own listing of ``pattern``
    would leave some of them out; and its subfolders that are not hidden (not read: said). One
    scan of the folder alone: Beam's local match walks every subfolder, stats every file in
    them, and drops a symbolic link to nothing (its size cannot be read) and names holding a
    backslash (its ``*`` takes none), which are read by name instead, where they fail with
    their reason (or are read after all)."""
    names = posixpath.basename(pattern)  # "*", "*.parquet", "shard-0?.tar"
    found, dropped, folders = {}, False, []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if _is(entry.is_dir):
                    if not entry.name.startswith(".") and _holds_some(entry.path, names):
                        folders.append(os.path.join(folder, entry.name))
                    continue
                if not fnmatch.fnmatchcase(entry.name, names) or (sized := _size(entry.stat)) is None:
                    continue
                dropped = dropped or sized[1] or "\\" in entry.name
                found[os.path.join(folder, entry.name)] = sized[0]
    except OSError as e:
        raise ConfigError(f"{flag} {item!r} cannot be listed: {listing_error(e)}") from None
    if not found:
        raise NoMatch(f"{flag} {item!r} matched no files{_what_a_folder_means(pattern, item, flag)}")
    return dict(sorted(found.items())), dropped, sorted(folders)


def _walk(pattern: str, item: str, flag: str) -> Tuple[Dict[str, int], bool]:
    """A local glob that reaches below one folder (``in/*/*.jpg``, ``in/**``), matched as Beam's
    local match matches it (a walk of the folder before the first wildcard, each path against
    the glob's regular expression) but into symbolic links to folders, as the shell's glob goes:
    Beam's walk does not, and a linked folder's files were left out without a word. The folders
    Beam walks are walked first, as Beam spells them; then each link to a folder, in the order
    met, into a folder not walked yet (a link to a folder above it, or to one walked already,
    adds nothing; none of Beam's matches is ever spelt through a link). With the matches and
    their sizes, whether Beam's own listing would differ (a file reached through a link, or an
    entry Beam drops, as ``_list_folder`` keeps them): then they are read by name. A folder the
    walk cannot list is refused (Beam's walk passes over it)."""
    prefix = re.match(f"[^{re.escape(WILDCARDS)}]*", pattern).group(0)
    root, regex = posixpath.dirname(prefix), pattern_regex(pattern)
    if not os.path.isdir(root):  # (Beam lists nothing there either)
        raise NoMatch(f"{flag} {item!r} matched no files")
    found: Dict[str, int] = {}
    walked: set = set()  # the real paths of the folders walked
    links: List[str] = []  # links to folders met, to walk after Beam's folders
    differs = False

    def refuse(e: OSError) -> None:  # a folder that cannot be listed: its files are not left out unsaid
        raise ConfigError(f"{flag} {item!r} cannot be listed: {listing_error(e)}") from None

    def walk(top: str, through: bool) -> None:
        nonlocal differs
        for folder, subfolders, names in os.walk(top, onerror=refuse):  # links to folders not followed
            real = os.path.realpath(folder)
            if real in walked:
                subfolders[:] = []
                continue
            walked.add(real)
            subfolders.sort()
            links.extend(os.path.join(folder, d) for d in subfolders if os.path.islink(os.path.join(folder, d)))
            for name in names:
                path = os.path.join(folder, name)
                if not regex.match(path) or (sized := _size(functools.partial(os.stat, path))) is None:
                    continue
                found[path] = sized[0]
                differs = differs or sized[1] or through

    walk(root, through=False)
    for link in links:  # (grows as linked folders are walked)
        if os.path.realpath(link) not in walked:
            walk(link, through=True)
    if not found:
        raise NoMatch(f"{flag} {item!r} matched no files{_what_a_folder_means(pattern, item, flag)}")
    return dict(sorted(found.items())), differs


def located(item: str, fmt: str, flag: str, checked: frozenset = frozenset()) -> Found:
    """What ``item`` matches (:class:`Found`): a remote name that matches no object is read as
    the folder it names (``remote_name``), with no call to the object store beyond the listings.
    A folder is refused when it is an earlier run's output, unless it is among the ``checked``
    items."""
    if item not in checked and is_folder(item):
        _refuse_an_output(item, flag)
    pattern = _pattern(item, fmt)
    try:
        return _find(item, pattern, flag)
    except NoMatch as nothing:
        if not remote_name(item):
            raise
        if item not in checked:
            _refuse_an_output(item, flag)
        folder = _pattern(item + "/", fmt)
        try:
            return _find(item, folder, flag)
        except OnlyHidden:
            raise
        except NoMatch:
            raise nothing from None


def _refuse_an_output(folder: str, flag: str) -> None:
    """An earlier run's output folder given as an input or a reference would be read as its
    summary.json and report.html, two failed images, and match nothing: refused, naming the
    kept/ folder that holds what it kept (with its hashes). Called for folders only (a remote
    name once it has matched no object), so that files named one by one cost no call each."""
    # (a local folder is named as it is, `out[1]` or under `/data/p[2]/`, as _pattern reads it)
    base = literal(folder.rstrip("/") or "/") if os.path.isdir(folder) else folder.rstrip("/")
    try:
        ran = (FileSystems.exists(FileSystems.join(folder, "summary.json"))
               and bool(FileSystems.match([FileSystems.join(base, "kept", "*.parquet")])[0].metadata_list))
    except Exception:  # noqa: BLE001 - a path that cannot be listed fails with its reason when it is read
        return
    if ran:
        kept = FileSystems.join(folder.rstrip("/"), "kept")
        how = ("give it with --input-format parquet --hash-column image_phash" if flag == "--input" else
               "give that: its image_phash column is read, without decoding")
        raise ConfigError(f"{flag} {folder!r} is an earlier run's output folder; what it kept is {kept!r} ({how})")


class Found(NamedTuple):
    """What an --input or --reference item matches (:func:`located`)."""

    pattern: str  # the pattern it is read by
    matched: Dict[str, int]  # the files, by path, with their sizes
    by_name: bool  # whether Beam's own listing of the pattern would differ: read them by name
    hidden: Dict[str, str]  # the paths passed over as hidden, each with the part that shows it
    subfolders: List[str]  # a local folder's subfolders, which its listing does not read


def _find(item: str, pattern: str, flag: str) -> Found:
    """What ``pattern`` (``item``'s) matches: a local folder, and a local glob over one folder,
    are listed by themselves, anything else by Beam's match; hidden names are passed over, and
    the rest is then read by name (the workers' match would take the hidden ones)."""
    subfolders: List[str] = []
    if _local_folder(item, pattern):
        matched, by_name, subfolders = _list_folder(item.rstrip("/") or "/", pattern, item, flag)
    elif (folder := _glob_folder(item, pattern)) is not None:
        matched, by_name, _ = _list_folder(folder, pattern, item, flag)
    elif os.path.isfile(item) and "://" not in item:  # named alone (its pattern escapes any `[`)
        path = "./" + item if pattern.startswith("./") and not item.startswith("./") else item
        matched, by_name = {path: os.stat(path).st_size}, False
    elif "://" not in pattern and wildcards(pattern):
        matched, by_name = _walk(pattern, item, flag)
    else:
        matched, by_name = _match(pattern, item, flag), False
    shown = {p: hidden_part(p, pattern) for p in matched}
    passed = {p: part for p, part in shown.items() if part is not None}
    if len(passed) == len(matched):
        raise OnlyHidden(f"{flag} {item!r} matched hidden files only ({len(passed)}, such as "
                         f"{next(iter(passed.values()))!r}): names starting with a dot are passed over "
                         "unless the pattern spells the dot, as 'DIR/.*' does")
    kept = {p: size for p, size in matched.items() if p not in passed} if passed else matched
    return Found(pattern, kept, by_name or bool(passed), passed, subfolders)


def unread(folders: Dict[str, str], files: Dict[str, str]) -> List[str]:
    """The ``folders`` (by identity) that hold none of the ``files`` (by identity) at any depth:
    subfolders no input reads (another input may name one, or a glob reach into it)."""
    if not folders:
        return []
    reached = set()
    for name in files:
        parent = posixpath.dirname(name)
        while parent not in reached and parent not in ("", "/"):
            reached.add(parent)
            parent = posixpath.dirname(parent)
    return sorted(folder for i, folder in folders.items() if i not in reached)


def refuse_other_format(item: str, matched: Dict[str, int]) -> None:
    """Image-file input whose files are all WebDataset shards or Parquet files (with
    img2dataset's statistics beside them, as its output folders hold) would be read as that many
    images failing to decode, and the run end "successfully" with nothing kept: refused, naming
    the format they need."""
    shards = wds.shards_among(matched)
    parquet = [p for p in matched if p.endswith(".parquet")]
    stats = [p for p in matched if p.endswith(wds.STATS_SUFFIX)]
    if not (shards or parquet) or len(shards) + len(parquet) + len(stats) != len(matched):
        return
    needed, held = ("webdataset", f"{len(shards)} WebDataset shard(s)") if shards else \
        ("parquet", f"{len(parquet)} Parquet file(s)")
    raise ConfigError(f"--input {item!r} holds {held} and no image files: give --input-format {needed} "
                      "(the default, files, reads each file as one image)")


def folder_names(fmt: str) -> str:
    """What a folder given in ``fmt`` means, below it: ``*`` (``*.parquet`` for Parquet)."""
    return {"parquet": "*.parquet"}.get(fmt, "*")


def deep_glob(folder: str, names: str) -> str:
    """The glob that reads what ``folder``'s subfolders hold as ``names`` (:func:`folder_names`)
    reads the folder: ``DIR/**``, ``DIR/**.parquet``."""
    return posixpath.join(folder.rstrip("/") or "/", "*" + names)


def _what_a_folder_means(pattern: str, item: str, flag: str) -> str:
    """For a directory that holds files or folders but none of the format's files: what it was
    read as, and what may be wrong (``flag``'s format, or files that lie in subfolders)."""
    if not _local_folder(item, pattern):
        return ""
    entries = list(os.scandir(item))
    others = sum(1 for e in entries if _is(e.is_file))
    folders = sum(1 for e in entries if _is(e.is_dir) and not e.name.startswith("."))
    if not others and not folders:
        return ""
    held = " and ".join(part for part in (f"{others} other file(s)" if others else "",
                                          f"{folders} subfolder(s), which are not read" if folders else "") if part)
    check = ", or ".join(part for part in (f"is {flag}-format right" if others else "",
                                           f"are the files in a subfolder (give it, or {deep_glob(item, posixpath.basename(pattern))!r} "
                                           "for all of them)" if folders else "") if part) + "?"
    return f" (a directory means {pattern}, and it holds {held}: {check})"
