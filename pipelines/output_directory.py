"""The job's output directory and --write-shards directory: checks before a run (writable, no
wildcards, not read by the inputs), clearing an earlier run's parts, removing what a failed run
left, and reading the written outputs back (their rows, the failed references)."""
from __future__ import annotations

import bisect
import glob
import itertools
import logging
import math
import os
import re
import shutil
from typing import List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from beam_phash import ImagePhashDedup
from pipelines.console import Console
from pipelines.input_paths import pattern_regex, wildcards
from pipelines.errors import ConfigError
from pipelines.inputs import InputSpec
from pipelines.temp_parts import TMP_DIR_GLOB
from pipelines.webdataset_write import KEPT_KEYS, written_shards

log = logging.getLogger(__name__)


def check_plain_name(path: str, flag: str) -> None:
    """Beam matches the paths it clears, deletes and renames as glob patterns: an output folder
    named `run?` or `run[1]` would reach `run1`, an earlier run's results, and remove them."""
    # (an unclosed `[` too: Beam's match then lists no folder, and the final clean-up fails)
    wild = wildcards(path)
    if wild:
        raise ConfigError(f"{flag} {path!r} holds {' and '.join(repr(c) for c in wild)}, which Beam reads as "
                          "wildcards where it clears and renames files (reaching other folders): choose a "
                          "name without *, ? or [")


def check_output(output: str) -> None:
    probe = FileSystems.join(output, ".write-test")
    try:
        if not FileSystems.exists(output):
            FileSystems.mkdirs(output)
        # One byte: Beam's S3 writer cannot complete an empty file (a multipart upload of no parts).
        with FileSystems.create(probe) as f:
            f.write(b"\n")
        FileSystems.delete([probe])
    except Exception as e:  # noqa: BLE001 - any failure means "not writable"
        raise ConfigError(f"--output {output!r} is not writable: {e}") from None


#: The folders under --output whose files the job clears at start (an earlier run's parts).
CLEARED = ("kept", "duplicates", "failed", "reference_failed", "report")


#: Paths this job writes under --output (one of each kind), to test the input patterns against.
_OUTPUT_SAMPLES = ("report.html", "summary.json", "logs/job.log", "report/groups-00000-of-00001.jsonl") + tuple(
    f"{sub}/part-00000-of-00001.parquet" for sub in ("kept", "duplicates", "failed", "reference_failed"))


def check_output_apart(output: str, specs: List[Tuple[str, InputSpec]]) -> None:
    """The job clears and writes files under --output; an input pattern that matches them would
    read this run's own outputs as inputs (and a reference there would be cleared before it is
    read). Local paths only; symbolic links are followed on both sides."""
    if "://" in output:
        return
    base = os.path.realpath(output)
    written = [os.path.join(base, sample) for sample in _OUTPUT_SAMPLES]
    # and what an earlier run left there, which this one clears (its parts may be named
    # -of-00002, and an input matched by name is a literal pattern of that name)
    for sub in CLEARED:
        folder = os.path.join(base, sub)
        try:
            names = os.listdir(folder)
        except OSError:  # none there (or unreadable: then clearing it fails, with its own error)
            continue
        for name in names:
            written += {os.path.join(folder, name), os.path.realpath(os.path.join(folder, name))}
    written.sort()
    for flag, spec in specs:
        for pattern in spec.patterns:
            if "://" in pattern:
                continue
            real = os.path.realpath(pattern)
            # Only paths that begin as the pattern does can match it (one pattern per file, for
            # inputs matched by name, against every part of an earlier run: a lookup each).
            prefix = re.split(r"[*?\[]", real, maxsplit=1)[0]
            regex = pattern_regex(real)
            if any(regex.match(path) for path in
                   itertools.takewhile(lambda w: w.startswith(prefix),
                                       itertools.islice(written, bisect.bisect_left(written, prefix), None))):
                raise ConfigError(f"{flag} {pattern!r} would read what this job writes under --output "
                                  f"{output!r} (and clears first); choose an --output outside the inputs")


def remove_unfinished(directories: List[str]) -> None:
    """After a failed run on this machine: the writers' unfinished parts (``DIR/.tmp-<12 hex>``),
    a shard left half-concatenated, and the report's unfinished text writes
    (``DIR/report/beam-temp-*``), in the output (and shards) directories. Not for a runner
    elsewhere: its job may still be running, and would find its parts gone."""
    for directory in directories:
        try:
            partial = [m.path for m in written_shards(directory, partial=True)]
            if partial:
                FileSystems.delete(partial)
        except Exception:  # noqa: BLE001 - best effort, as below
            log.warning("could not remove the unfinished shards in %s", directory, exc_info=True)
        for pattern in (FileSystems.join(directory, TMP_DIR_GLOB),
                        FileSystems.join(directory, "report", "beam-temp-*")):  # Beam's WriteToText
            try:
                if "://" in pattern:  # an object store: the objects under the prefix
                    found = FileSystems.match([FileSystems.join(pattern, "**")])[0].metadata_list
                    if found:
                        FileSystems.delete([m.path for m in found])
                else:
                    for path in glob.glob(pattern):
                        if os.path.isdir(path):
                            shutil.rmtree(path, ignore_errors=True)
                        else:
                            os.remove(path)
            except Exception:  # noqa: BLE001 - best effort: the run's own error is the one to report
                log.warning("could not remove the unfinished files %s", pattern, exc_info=True)


def discard_outputs(args) -> None:
    """After a run on this machine that failed or was interrupted: what it wrote would look like
    a result (near-duplicate mode writes its outputs before its state's commit refuses; an
    interrupted run may have finished some parts, a failed finalize published some shards, a
    failure threshold stopped it after the kept keys were written). Only its log stays in the
    output, and no shards in --write-shards DIR: unfinished parts, outputs, summary and report,
    and the output folders the run made."""
    remove_unfinished([args.output])  # (and clear_shards's own, in the shards directory)
    clear_outputs(args.output)
    if "://" not in args.output:  # an object store has no empty folders
        for sub in CLEARED:
            try:
                os.rmdir(os.path.join(args.output, sub))
            except OSError:  # not there, or not empty (a file of the user's)
                pass
    if args.write_shards is not None:
        clear_shards(args.write_shards)


def discard_unless_committed(args, dedup: ImagePhashDedup, con: Console) -> None:
    """After a run on this machine that failed or was interrupted: its outputs are discarded
    (``discard_outputs``) unless it had committed its state (``--state``) first. The commit comes
    after every output is written, and from then on the state holds the run's keepers as kept: a
    rerun would find their images there, as duplicates of records that only these outputs hold.
    So they stay, without summary.json and report.html, and the job says so."""
    try:
        committed = dedup.committed()
    except Exception:  # noqa: BLE001 - which way it went is unknown: keep rather than lose them
        log.warning("could not tell whether the run committed its state to %s", args.state, exc_info=True)
        committed = None
    if committed is False:
        discard_outputs(args)
        if dedup.committed():  # a worker's commit, landed while the outputs went
            con.tell(f"beam-phash: warning: the run committed its state to {args.state} while its outputs "
                     f"were being removed: that state holds keepers that no output has")
        return
    # (A committed run left none: its writes had finished.)
    remove_unfinished([args.output] + ([] if args.write_shards is None else [args.write_shards]))
    if committed is None:
        con.tell(f"beam-phash: could not tell whether the run had committed its state to {args.state} "
                 f"(details in {con.log_path}); its finished outputs in {args.output} are kept, perhaps "
                 "not all of them")
        return
    shards = f" and its shards in {args.write_shards}" if args.write_shards is not None else ""
    con.tell(f"beam-phash: the run had committed its state to {args.state} before it stopped: its outputs "
             f"in {args.output}{shards} are complete and kept, without summary.json and the report. The "
             "run is done: its keepers are in that state, so a rerun with it would make each of its "
             "records a duplicate (and with this --output, clear these outputs first)")


def clear_outputs(output: str) -> None:
    """The job owns kept/, duplicates/, failed/ and report/: shards of an earlier run there
    (perhaps more of them) would be read as part of this one; and summary.json and report.html,
    which would describe the earlier run if this one fails or writes no report."""
    stale = []
    for sub in CLEARED:
        stale += [m.path for m in FileSystems.match([FileSystems.join(output, sub, "*")])[0].metadata_list]
    for name in ("summary.json", "report.html"):
        stale += [m.path for m in FileSystems.match([FileSystems.join(output, name)])[0].metadata_list]
    if stale:
        FileSystems.delete(stale)


def output_files(output: str, name: str) -> List[str]:
    """The Parquet files of one output (``kept``, ``reference_failed``...) under ``output``."""
    return [m.path for m in FileSystems.match([FileSystems.join(output, name, "*.parquet")])[0].metadata_list]


def read_reference_failures(output: str) -> List[dict]:
    """The failed references written to ``reference_failed/``, sorted by id."""
    import pyarrow.parquet as pq

    rows: List[dict] = []
    for path in output_files(output, "reference_failed"):
        with FileSystems.open(path) as f:
            rows += pq.read_table(f).to_pylist()
    return sorted(rows, key=lambda r: str(r.get("id")))


def output_rows(output: str) -> dict:
    """Rows written to kept/, duplicates/ and failed/, from the Parquet footers."""
    import pyarrow.parquet as pq

    rows = {}
    for name in ("kept", "duplicates", "failed"):
        rows[name] = 0
        for path in output_files(output, name):
            with FileSystems.open(path) as f:
                rows[name] += pq.ParquetFile(f).metadata.num_rows
    return rows


def check_write_shards(args, spec: InputSpec, reference: Optional[InputSpec] = None) -> None:
    """--write-shards and --shard-size; the shards directory must hold no input or reference
    shard, since the run first removes the shards there."""
    if args.write_shards is None:
        if args.shard_size is not None:
            raise ConfigError("--shard-size applies with --write-shards")
        return
    if spec.fmt != "webdataset":
        raise ConfigError("--write-shards applies to --input-format webdataset")
    if args.shard_size is not None and not (args.shard_size > 0 and math.isfinite(args.shard_size)):
        raise ConfigError(f"--shard-size must be a positive number of MiB, got {args.shard_size:g}")
    check_plain_name(args.write_shards, "--write-shards")
    target = os.path.abspath(args.write_shards.rstrip("/"))
    # What the shards writer writes (and clears first), under the folder's name and its real one:
    # a pattern that could match them, a glob as much as a folder, would have its shards removed
    # before they are read.
    written = [os.path.join(folder, name) for folder in {target, os.path.realpath(target)}
               for name in ("00000.tar", os.path.join(KEPT_KEYS, "part-00000.parquet"))]
    for flag, some in (("--input", spec), ("--reference", reference)):
        for pattern in (some.patterns if some is not None else []):
            if "://" in pattern:
                continue
            absolute = os.path.abspath(pattern)
            regex = pattern_regex(absolute)
            if (os.path.realpath(os.path.dirname(absolute)) == os.path.realpath(target)
                    or any(regex.match(path) for path in written)):
                what = "an input" if flag == "--input" else "a --reference"
                raise ConfigError(f"--write-shards {args.write_shards!r} is {what} directory "
                                  f"({flag} {pattern!r} reaches it); write the new shards elsewhere")
    # Named otherwise (a link to a shard there, a glob matching some of its names only): any
    # input whose file is one the run would remove.
    stale = {os.path.realpath(path) for path in stale_shards(args.write_shards) if "://" not in path}
    if stale:
        for flag, some in (("--input", spec), ("--reference", reference)):
            for path in (matched_local(some) if some is not None else []):
                if path.endswith((".tar", ".parquet")) and os.path.realpath(path) in stale:
                    raise ConfigError(f"{flag} {path!r} is {os.path.realpath(path)!r}, which --write-shards "
                                      f"{args.write_shards!r} would remove before reading it; write the new "
                                      "shards elsewhere")


def stale_shards(directory: str) -> List[str]:
    """The shards and kept keys an earlier run left in the --write-shards directory."""
    keys = FileSystems.match([FileSystems.join(directory, KEPT_KEYS, "*")])[0].metadata_list
    return [m.path for m in written_shards(directory) + keys]


def matched_local(spec: InputSpec) -> List[str]:
    """The local files ``spec`` reads: the launcher's listing, or its patterns matched again."""
    if spec.paths is not None:
        return [p for p in spec.paths if "://" not in p]
    return [m.path for pattern in spec.patterns if "://" not in pattern
            for m in FileSystems.match([pattern])[0].metadata_list]


def clear_shards(directory: str) -> None:
    """Shards and kept keys of an earlier run in the --write-shards directory would mix with this
    run's: removed before it starts (only the names this job writes), with what an earlier run
    killed on the way left unfinished there."""
    stale = stale_shards(directory)
    if stale:
        FileSystems.delete(stale)
    remove_unfinished([directory])
