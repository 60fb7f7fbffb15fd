"""Deduplicate images with ImagePhashDedup, from image files, Parquet or WebDataset shards, on any Beam runner.

    python -m pipelines.dedup_images --input DIR_OR_GLOB [--input ...] --output OUT_DIR \\
        [--input-format files|parquet|webdataset] [--image-column image] [--id-column id] \\
        [--image-ext jpg,jpeg,png,webp] [--no-shard-metadata] [--write-shards DIR [--shard-size MB]] \\
        [--hash-size 16] [--algorithm phash] [--backend ray|state] [--num-buckets 16] [--num-actors N] \\
        [--ray-address ADDR] [--backend-name NAME] [--state DIR] \\
        [--max-distance K] [--dihedral] [--keep largest|smallest_id] \\
        [--hash-column COL] [--band-partition-bits B] [--search-partitions S] \\
        [--reference PATH [--reference ...] [--reference-format auto|files|parquet|webdataset] \\
         [--reference-image-column C] [--reference-id-column C] [--reference-hash-column C]] \\
        [--max-decode-failures FRACTION] [--max-internal-failures FRACTION] [--no-report] \\
        [Beam pipeline options: --runner, ...]

Without --input the job reads the bundled sample; without --output it writes to out/dedup.

Inputs are matched and read through Beam's filesystems, so gs:// and s3:// paths work when those
Beam extras are installed. Flags this job does not know pass through to Beam as PipelineOptions.
Output, in OUT_DIR:

    kept/*.parquet        the input columns (files: id = the path) + image_phash, image_quality
    duplicates/*.parquet  the same + duplicate_of (id of the kept record, of an earlier run's, or
                          of a reference), matched (input, state or reference) [+ distance]
    failed/*.parquet      the same + error (the reason)
    reference_failed/*.parquet  references that could not be hashed: id, error
    (--write-shards DIR: the kept samples as DIR/00000.tar ..., and DIR/kept_keys/*.parquet)
    summary.json          counts, whether they add up, reference and state matches, wall time
    report.html           counts, the distances to each image's nearest other image (which
                          threshold?), the largest duplicate groups as thumbnails, the failures
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # run as the `beam-phash` command, which starts what it can before
    from pipelines import cli  # Beam's import (see early_start) and says Ctrl-C in one line

    cli.run()

import argparse
import atexit
import bisect
import gc
import glob
import itertools
import json
import logging
import math
import os
import posixpath
import re
import shutil
import signal
import time
from typing import Iterator, List, NoReturn, Optional, Set, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

import beam_phash
from beam_phash import ImagePhashDedup
from beam_phash.hashed_as import made, unlike
from beam_phash.failures import DEFAULT_MAX_INTERNAL
from beam_phash.near.policy import KEEP_POLICIES
from beam_phash.records import QUALITY_FIELD, WRITTEN_FIELDS
from pipelines import early_start
from pipelines import inputs as job_inputs
from pipelines.inputs import (ConfigError, InputSpec, ReadImageRecords, ReadReference, deep_glob, folder_names,
                             reference_hash_field)
from pipelines.outputs import WriteOutputs
from pipelines.console import Console, close_console, open_console, say_interrupted, say_interrupted_before_help
from pipelines.early_start import LOCAL_RUNNERS
from pipelines.input_paths import identity, pattern_regex, wildcards
from pipelines.progress import ProgressBoard, ProgressDoFn
from pipelines.read_failures import with_read_failures
from pipelines.report import CollectReportData, write_report
from pipelines.report_distances import hint as distance_hint, read_stats as read_distances
from pipelines.webdataset_read import DEFAULT_IMAGE_EXTS
from pipelines.temp_parts import TMP_DIR_GLOB
from pipelines.webdataset_write import DEFAULT_SHARD_MB, KEPT_KEYS, WriteShards, written_shards

log = logging.getLogger(__name__)
SAMPLE_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data")
HASH_FIELD = job_inputs.OUTPUT_HASH_COLUMN


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit code 2, like every other
    configuration error of this job."""

    def error(self, message):
        raise ConfigError(message)


def _distance(value: str):
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of bits or 'auto', got {value!r}") from None


def _fraction(value: str) -> float:
    """A failure threshold: a fraction of the inputs, 0 to 1."""
    try:
        fraction = float(value)
    except ValueError:
        fraction = None
    if fraction is None or not 0 <= fraction <= 1:  # (NaN is not in range either)
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value!r}")
    return fraction


def parse_args(argv: Optional[List[str]]):
    """(the job's arguments, the flags left for Beam)."""
    args, beam_args = _parser().parse_known_args(argv)
    args.output = _directory(args.output)
    if args.write_shards is not None:
        args.write_shards = _directory(args.write_shards)
    return args, beam_args


def _directory(name: str) -> str:
    """An output directory named without its trailing slashes, as the job prints and joins it
    ("out/" and "out" are one directory; "/" and "gs://" stay as given)."""
    stripped = name.rstrip("/")
    return stripped if stripped and not stripped.endswith(":") else name


def _parser() -> argparse.ArgumentParser:
    ap = _OneLineParser(prog="beam-phash", description=__doc__.splitlines()[0])
    ap.add_argument("--input", action="append", default=None,
                    help="directory, glob or file; repeat for several (default: the bundled sample); "
                         "names starting with a dot (.DS_Store, macOS's ._NAME) are passed over unless the "
                         "pattern spells the dot ('DIR/.*')")
    ap.add_argument("--input-format", default="files", choices=job_inputs.FORMATS,
                    help="files: each file is one image; parquet: rows with an image column; "
                         "webdataset: tar shards, plain or compressed (a directory means its .tar, .tar.gz, .tgz, "
                         ".tar.bz2 and .tar.xz shards), one record per sample")
    ap.add_argument("--image-column", default="image",
                    help="Parquet: column with the image bytes, or a struct with a 'bytes' field "
                         "(default image, else img2dataset's jpg/png/webp)")
    ap.add_argument("--id-column", default="id",
                    help="Parquet: column with a unique record id (default id, else img2dataset's key)")
    ap.add_argument("--image-ext", default=None, metavar="EXTS",
                    help="WebDataset: the image member is the first of these suffixes a sample has "
                         f"(default {','.join(DEFAULT_IMAGE_EXTS)})")
    ap.add_argument("--no-shard-metadata", action="store_true",
                    help="WebDataset: do not read the sidecar Parquet (00000.parquet beside 00000.tar): no "
                         "columns joined, and its failed downloads are not counted")
    ap.add_argument("--write-shards", default=None, metavar="DIR",
                    help="WebDataset: write the kept samples, byte-identical, as new shards "
                         "DIR/00000.tar ... and their keys as DIR/kept_keys/*.parquet")
    ap.add_argument("--shard-size", type=float, default=None, metavar="MB",
                    help=f"--write-shards: target shard size in MiB (default {DEFAULT_SHARD_MB:g})")
    ap.add_argument("--output", default="out/dedup", help="output directory (default: out/dedup)")
    ap.add_argument("--hash-size", type=int, default=16)
    ap.add_argument("--algorithm", default="phash", choices=beam_phash.ALGORITHMS)
    ap.add_argument("--backend", default=None, choices=["ray", "state"],
                    help="exact dedup: ray (bucket actors, the default) or state (Beam state)")
    ap.add_argument("--num-buckets", type=int, default=None,
                    help="Ray: buckets the hashes are routed to (default 16; a --state keeps one "
                         "directory each)")
    ap.add_argument("--num-actors", type=int, default=None,
                    help="Ray: actor processes hosting the buckets (default: one per CPU of the cluster, "
                         "at most --num-buckets)")
    ap.add_argument("--ray-address", default=None,
                    help="existing Ray cluster (host:port or auto); default: an embedded local Ray")
    ap.add_argument("--backend-name", default=None,
                    help="Ray: a named backend that outlives the job, so later jobs dedup against it")
    ap.add_argument("--state", default=None, metavar="DIR",
                    help="dedup against everything earlier jobs with the same DIR kept, then add "
                         "what this job keeps (exact mode with Ray: the bucket seen-set, which also "
                         "survives actors dying; near-duplicate mode: Parquet segments of kept hashes)")
    ap.add_argument("--reference", action="append", default=None, metavar="PATH",
                    help="drop every input within --max-distance of these images (exact mode: the "
                         "same hash): image files (a folder or glob), Parquet with an image or hash "
                         "column, such as an earlier run's kept/, or WebDataset shards; repeat for "
                         "several. References are never output")
    ap.add_argument("--reference-format", default="auto", choices=("auto",) + job_inputs.FORMATS,
                    help="auto (default): Parquet when every matched file ends in .parquet, WebDataset "
                         "when they are shards, plain or compressed (with their .parquet sidecars), "
                         "else image files")
    ap.add_argument("--reference-image-column", default=None, metavar="COL",
                    help="Parquet references: the image column (default: --image-column)")
    ap.add_argument("--reference-id-column", default=None, metavar="COL",
                    help="Parquet references: the id column (default: --id-column)")
    ap.add_argument("--reference-hash-column", default=None, metavar="COL",
                    help="Parquet references: hex hashes in COL instead of images (default: "
                         f"{HASH_FIELD} when the files have it)")
    ap.add_argument("--max-distance", type=_distance, default=0, metavar="K",
                    help="near-duplicates: drop images within K bits of a kept one (0: exact dedup; "
                         "auto: the measured threshold for the algorithm and hash size)")
    ap.add_argument("--dihedral", action="store_true",
                    help="near-duplicates: rotated and mirrored copies count as duplicates too")
    ap.add_argument("--keep", default=None, choices=KEEP_POLICIES,
                    help="near-duplicates: which image of a group is kept (default: largest)")
    ap.add_argument("--hash-column", default=None, metavar="COL",
                    help="Parquet: dedup the hex hashes in COL (an earlier run's image_phash, or "
                         "another tool's) without decoding images")
    ap.add_argument("--band-partition-bits", type=int, default=None, metavar="B",
                    help="near-duplicates: cut each band's search into 2^B partitions per sub-block "
                         "(for inputs too large for one band on one worker; default 0)")
    ap.add_argument("--search-partitions", type=int, default=None, metavar="S",
                    help="near-duplicates: band groups searched in parallel, each one copy of the "
                         "hashes through the shuffle (default 4)")
    ap.add_argument("--max-decode-failures", type=_fraction, default=None, metavar="FRACTION",
                    help="fail the run when more than this fraction of the inputs cannot be hashed "
                         "(default: no limit; failed inputs are listed in failed/)")
    ap.add_argument("--max-internal-failures", type=_fraction, default=DEFAULT_MAX_INTERNAL, metavar="FRACTION",
                    help="fail the run when more than this fraction of the inputs hit an internal "
                         f"error of the Rust code (a bug; default {DEFAULT_MAX_INTERNAL})")
    ap.add_argument("--no-report", action="store_true", help="skip report.html")
    return ap


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


#: The library's argument names in its messages, and this job's flags for them (names of plain
#: words, such as keep, are left: they read as prose too).
_FLAGS = (("backend='ray'", "--backend ray"), ("backend='state'", "--backend state"),
          ("dihedral=True", "--dihedral"), ("max_distance", "--max-distance"), ("hash_size", "--hash-size"),
          ("state_dir", "--state"), ("ray_address", "--ray-address"), ("backend_name", "--backend-name"),
          ("num_actors", "--num-actors"), ("num_buckets", "--num-buckets"),
          ("band_partition_bits", "--band-partition-bits"), ("search_partitions", "--search-partitions"),
          ("reference_hash_column", "--reference-hash-column"), ("hash_column", "--hash-column"),
          ("reference=", "--reference"),
          ("image_field", "--image-column"), ("id_field", "--id-column"), ("backend", "--backend"))


def as_flags(message: str) -> str:
    """A message of ImagePhashDedup's argument checks with this job's flag names; the values it
    quotes ('...', as repr gives them) are left as they are."""
    for name, flag in _FLAGS:
        if "'" in name:  # backend='ray': a name with its quoted value
            message = message.replace(name, flag)
    parts = re.split(r"('[^']*')", message)
    for i in range(0, len(parts), 2):  # the text between quoted values
        for name, flag in _FLAGS:
            parts[i] = re.sub(r"(?<![\w-])" + re.escape(name) + (r"(?!\w)" if name[-1].isalnum() else ""), flag,
                              parts[i])
    return "".join(parts)


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


def beam_flags() -> Set[str]:
    """Every flag Beam's options take, as typed (``--extra_package``, ``--experiment``,
    ``--no_use_public_ips``): the option strings of the parser Beam itself builds from its
    ``PipelineOptions`` classes. Not the options' names (``extra_packages``), which many flags
    are not."""
    flags: Set[str] = set()
    PipelineOptions([]).get_all_options(add_extra_args_fn=lambda parser: flags.update(
        flag for action in parser._actions for flag in action.option_strings))
    return flags


def check_beam_options(beam_args: List[str]) -> None:
    """Flags the job does not know go to Beam; one Beam does not know either is a typo
    (--hash_size for --hash-size), which Beam would only warn about and drop."""
    known = beam_flags()
    own = {flag for action in _parser()._actions for flag in action.option_strings}
    for arg in beam_args:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0]
        if "--" + name not in known:
            dashed = "--" + name.replace("_", "-")
            underscored = "--" + name.replace("-", "_")
            hint = (f" (did you mean {dashed}?)" if dashed in own else
                    f" (did you mean {underscored}?)" if underscored in known else "")
            raise ConfigError(f"unknown option --{name}{hint}")


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


def release_backend(dedup: ImagePhashDedup) -> None:
    """After a failed run on a Ray cluster that outlives it: its bucket actors would stay, holding
    the state directory's locks, and the rerun would be refused. (An embedded Ray stops with the
    command.)"""
    try:
        dedup.release()
    except Exception:  # noqa: BLE001 - the run's own error is the one to report
        log.warning("could not stop the run's bucket actors", exc_info=True)


def one_local_worker(options: PipelineOptions) -> bool:
    """The job runs on the FnApiRunner (the default, see :func:`local_runner`) with one worker,
    in this process: its steps can use what the launcher found, and spreading the input over
    workers has nowhere to go."""
    runner = options.view_as(StandardOptions).runner
    return runner in (None, "FnApiRunner") and options.view_as(DirectOptions).direct_num_workers == 1


def check_made_alike(flag: str, spec: InputSpec, algorithm: str, hash_size: int) -> None:
    """Hashes read from a column that an earlier run of this job wrote must have been made as this
    run makes them: another algorithm of the same width, or another hash version, would match
    nothing, or the wrong images, without a word."""
    if spec.hashed_as is None:
        return
    why = unlike(spec.hashed_as, algorithm, hash_size, retune="pass --algorithm/--hash-size as they were")
    if why is not None:
        raise ConfigError(f"{flag} {spec.given[0] if spec.given else spec.patterns[0]!r} holds {why}")


def build(p, spec: InputSpec, output: str, dedup: ImagePhashDedup, report: bool = True,
          reference: Optional[InputSpec] = None, write_shards: Optional[str] = None,
          shard_mb: Optional[float] = None, progress: Optional[Tuple[str, int]] = None) -> None:
    read, read_failed = p | "Read" >> ReadImageRecords(spec)
    records = read if progress is None else read | "Progress" >> beam.ParDo(ProgressDoFn(progress))
    # The run commits its state (and releases its backend) once every output is written: a run
    # that fails writing them then adds nothing to --state, as one that fails before.
    dedup = dedup.with_deferred_commit()
    if reference is not None:
        references = p | "ReadReference" >> ReadReference(reference, spec.id_column, spec.image_column)
        dedup = dedup.with_reference(references, hash_column=reference_hash_field(reference, spec.id_column))
    outputs = with_read_failures(records | "Dedup" >> dedup.with_outputs(), read_failed, dedup.hash_field)
    written = []
    if write_shards is not None:
        written.extend(outputs.kept | "WriteShards" >> WriteShards(write_shards, shard_mb))
    # DedupOutputs carries reference_failed as an attribute, which Beam drops from a transform's
    # input: the four go as a plain tuple.
    written.append((*outputs, outputs.reference_failed) | "Write" >> WriteOutputs(spec, output, dedup.hash_field,
                                          dedup.near_duplicates or reference is not None,
                                          reference=reference is not None,
                                          quality=dedup.hash_column is None,
                                          made=made(dedup.algorithm, dedup.hash_size) if dedup.hash_column is None else spec.hashed_as))
    if report:
        distances = dict(algorithm=dedup.algorithm, hash_size=dedup.hash_size, bits=dedup.bits,
                         max_distance=dedup.max_distance)
        written.extend(outputs | "Report" >> CollectReportData(output, id_field=spec.id_column,
                                                               image_field=spec.image_column,
                                                               hash_field=dedup.hash_field, distances=distances,
                                                               ids_are_paths=spec.fmt == "files"))
    dedup.commit(*written)


MAX_LISTED = 100
#: Hidden files, or subfolders, named in the line that says they were passed over (the rest
#: are counted).
MAX_HIDDEN_SHOWN = 3


def passed_over(flag: str, noun: str, names: List[str], why: str) -> str:
    """The start line that says what ``flag``'s inputs held and the job does not read: how many
    ``noun``s, the first ``MAX_HIDDEN_SHOWN`` of their ``names``, and ``why``."""
    shown = ", ".join(names[:MAX_HIDDEN_SHOWN]) + (", ..." if len(names) > MAX_HIDDEN_SHOWN else "")
    return f"beam-phash: {flag} passed over {len(names)} {noun}{'' if len(names) == 1 else 's'} ({shown}): {why}"


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


def counts_of(result) -> dict:
    """The job's counters, summed over steps; {} when the runner reports no metrics."""
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(beam_phash.METRICS_NAMESPACE))
    except (NotImplementedError, AttributeError):
        return {}
    totals = {}
    for c in found["counters"]:  # one entry per step on some runners: add them up
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + c.committed
    return totals


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


def verified_counts(found: dict, spec: InputSpec, output: str) -> tuple:
    """(counts, how they were obtained, whether inputs = kept + duplicates + failed is checked).
    From the runner's metrics; a runner that reports none gets the written rows, checked against
    the input count when the inputs say it (files, Parquet rows); else unverified."""
    if "inputs" in found:
        return {k: found.get(k, 0) for k in ("inputs", "kept", "duplicates", "failed")}, "metrics", True
    rows = output_rows(output)
    inputs = known_count(spec)
    return {"inputs": inputs, **rows}, "outputs", inputs is not None


def known_count(spec: InputSpec) -> Optional[int]:
    """Records an input holds, when it says: Parquet rows (from the footers), matched files;
    None for shards (their samples are known once read)."""
    return spec.rows if spec.fmt == "parquet" else spec.matched if spec.fmt == "files" else None


def short(con: Console, what: str, spec: Optional[InputSpec], declared: Optional[int], read: int) -> bool:
    """Whether fewer (or more) records were ``read`` than ``declared`` (known_count), said once."""
    if declared is None or read == declared:
        return False
    files = "Parquet files" if spec.fmt == "parquet" else "files"
    con.tell(f"beam-phash: the {what} held {declared} records at the start ({spec.matched} {files}), {read} were read")
    return True


def _count(spec: InputSpec) -> int:
    """:func:`known_count`, or for shards an estimate from their size (100 KiB a sample)."""
    known = known_count(spec)
    return job_inputs.estimated_samples(spec) if known is None else known


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


#: Options that only one mode reads: (flag, ImagePhashDedup's argument, where it applies).
_MODE_OPTIONS = (("--num-buckets", "num_buckets", "exact mode with the Ray backend"),
                 ("--band-partition-bits", "band_partition_bits", "near-duplicate mode (--max-distance)"),
                 ("--search-partitions", "search_partitions", "near-duplicate mode (--max-distance)"))


def check_mode_options(args, near: bool) -> None:
    """An option the chosen mode would not read is refused rather than ignored (their defaults are
    None here, so only the options given are checked)."""
    applies = {"num_buckets": not near and args.backend != "state", "band_partition_bits": near,
               "search_partitions": near}
    for flag, name, where in _MODE_OPTIONS:
        if getattr(args, name) is not None and not applies[name]:
            raise ConfigError(f"{flag} applies to {where} only")


def mode_options(args) -> dict:
    """The mode options given, for ImagePhashDedup (the others keep its defaults)."""
    return {name: getattr(args, name) for _, name, _ in _MODE_OPTIONS if getattr(args, name) is not None}


def configure(argv: Optional[List[str]], command_line: bool = False):
    """Parse and check everything; raises ConfigError or ValueError before anything runs.
    ``command_line``: the job runs as the command, whose embedded Ray stops with it (a caller's
    process keeps its Ray, and a named backend in it, for its later jobs)."""
    args, beam_args = parse_args(argv)
    options = PipelineOptions(beam_args)
    # Paths are listed here, before the pipeline exists (which would hand Beam's filesystems its
    # options): S3's needs --s3_endpoint_url, --s3_region_name and its keys from them, and would
    # fail every listing without ("Must provide one of client or options").
    FileSystems.set_options(options)
    if args.input_format != "parquet" and (args.image_column != "image" or args.id_column != "id"):
        raise ConfigError("--image-column and --id-column apply to --input-format parquet")
    if args.hash_column and args.input_format != "parquet":
        raise ConfigError("--hash-column applies to --input-format parquet")
    if args.input_format != "webdataset" and (args.image_ext is not None or args.no_shard_metadata):
        raise ConfigError("--image-ext and --no-shard-metadata apply to --input-format webdataset")
    bits = beam_phash.hash_bits(args.algorithm, args.hash_size)
    image_exts = tuple(args.image_ext.split(",")) if args.image_ext is not None else DEFAULT_IMAGE_EXTS
    spec = job_inputs.resolve(args.input or [SAMPLE_DATA], args.input_format,
                              args.image_column, args.id_column, args.hash_column, bits,
                              image_exts=image_exts, join_sidecar=not args.no_shard_metadata,
                              reserved=(HASH_FIELD, *WRITTEN_FIELDS), in_process=one_local_worker(options))
    # With hashes given, nothing is decoded: the hash and quality columns pass through.
    written = {HASH_FIELD, *WRITTEN_FIELDS} - ({args.hash_column, QUALITY_FIELD} if args.hash_column else set())
    taken = sorted(written & set(spec.columns))
    if taken:
        hint = "" if args.hash_column else job_inputs.earlier_output_hint(taken)
        raise ConfigError(f"the input already has column(s) {', '.join(taken)}, which the job writes{hint}")
    reference = None
    if args.reference:
        reference = job_inputs.reference_spec(
            # As documented: --image-column / --id-column as given (by default image / id, which
            # the reference's own columns are detected from), not the columns the input's format
            # or detection chose (a WebDataset input's `key`, an img2dataset Parquet's `jpg`).
            args.reference, args.reference_format, args.reference_image_column or args.image_column,
            args.reference_id_column or args.id_column, args.reference_hash_column, HASH_FIELD, bits,
            image_column_given=args.reference_image_column is not None, in_process=one_local_worker(options))
        if args.reference_image_column is not None and args.reference_hash_column is not None:
            raise ConfigError("give --reference-image-column or --reference-hash-column, not both")
        if reference.fmt != "parquet" and (args.reference_image_column or args.reference_id_column):
            raise ConfigError("--reference-image-column and --reference-id-column apply to Parquet references "
                              f"(these are {'image files' if reference.fmt == 'files' else 'WebDataset shards'})")
    elif any(v is not None for v in (args.reference_image_column, args.reference_id_column,
                                     args.reference_hash_column)) or args.reference_format != "auto":
        raise ConfigError("--reference-format and --reference-*-column apply with --reference")
    check_made_alike("--input", spec, args.algorithm, args.hash_size)
    if reference is not None:
        check_made_alike("--reference", reference, args.algorithm, args.hash_size)
    check_write_shards(args, spec, reference)
    near = args.max_distance != 0 or args.dihedral
    if args.keep is not None and not near:
        raise ConfigError("--keep applies with --max-distance (exact mode keeps the first record of each "
                          "hash to reach the backend)")
    args.keep = args.keep or "largest"
    check_mode_options(args, near)
    if command_line and args.backend_name is not None and args.ray_address is None and args.backend != "state" \
            and not near:  # (the other modes' refusal of Ray options is the library's)
        raise ConfigError("--backend-name applies with --ray-address only: the command's own Ray stops with "
                          "it, and a named backend with it (--state DIR carries what a job kept to later jobs)")
    check_beam_options(beam_args)
    check_plain_name(args.output, "--output")
    check_output_apart(args.output, [("--input", spec)] + ([("--reference", reference)] if reference else []))
    check_output(args.output)
    # The job's own output folders inside an input folder are not among its unread subfolders.
    own = {identity(d) for d in (args.output, args.write_shards, args.state) if d and "://" not in d}
    for some in (spec, reference):
        if some is not None:
            some.subfolders = [f for f in some.subfolders if identity(f) not in own]
    dedup = ImagePhashDedup(hash_size=args.hash_size, algorithm=args.algorithm,
                            image_field=spec.image_column, id_field=spec.id_column,
                            hash_field=HASH_FIELD, backend=args.backend,
                            num_actors=args.num_actors, ray_address=args.ray_address,
                            backend_name=args.backend_name, state_dir=args.state,
                            max_distance=args.max_distance, dihedral=args.dihedral,
                            keep=args.keep if near else None,
                            hash_column=args.hash_column, **mode_options(args),
                            # (at least 1: an empty input is a run of no records, not a bad setting)
                            expected_count=max(1, _count(spec) + (_count(reference) if reference else 0)) if near else None
                            ).with_failure_threshold(args.max_decode_failures, args.max_internal_failures)
    if args.write_shards is not None:  # last: a refused run leaves no folder made for it
        try:
            check_output(args.write_shards)
        except ConfigError:
            raise ConfigError(f"--write-shards {args.write_shards!r} is not writable") from None
    return args, spec, dedup, options, reference


def local_runner(options: PipelineOptions):
    """The runner of a job given no ``--runner``: Beam's in-process FnApiRunner, set up as the
    DirectRunner sets it up. The DirectRunner itself would first try Prism, downloading its
    binary when the machine is online (a quarter of a second of failed attempt when it is not),
    so the same command would run on two different runners depending on the network. None when
    a runner is named."""
    if options.view_as(StandardOptions).runner is not None:
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def main(argv: Optional[List[str]] = None, held: Optional[List[int]] = None) -> int:
    """The job: exit code 0 when the counts add up, 1 when they do not or the run failed, 2 for
    a configuration error, 3 when they cannot be checked. Only its own lines reach the terminal;
    the rest goes to OUTPUT/logs/job.log (see ``console``).

    ``held``: the Ctrl-C presses a caller's own SIGINT handler notes until now (``cli``, while
    the command starts). Python's handler is put back once the job's console is open, and a
    press noted by then is acted on as one during the run; once the run and its stops are over,
    Ctrl-C is ignored (the command is exiting)."""
    command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if early_start.wants_help(argv):
        if held:  # pressed while the command started: it ends there, as any run would
            say_interrupted_before_help()
            return 130
        # Before the console: once it is open, stdout is the log, and help is for the terminal.
        _parser().print_help()
        return 0
    con = open_console(early_start.output_of(argv))
    code = None  # the run's exit code, once it has one
    try:
        if held is not None:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if held:
                raise KeyboardInterrupt
        code = _run(argv, con, command_line)
        if command_line:  # a run in a process of its own (not a caller's, which may use Ray on)
            stop_embedded_ray()
            run_exit_handlers()
        if held is not None:
            # The run and its stops are over; what is left, closing the console and the command's
            # exit (``cli.run``), takes milliseconds, and a press there would only add a traceback.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return code
    except KeyboardInterrupt:
        if not command_line:  # a caller's Ctrl-C, and perhaps its Ray: theirs to handle
            raise
        return interrupted(con, code)
    finally:
        close_console(refused=code == 2)


def stop_embedded_ray() -> None:
    """Stop the embedded Ray, if this process started one, while the console still sends its
    output to the log (atexit would do it after the terminal is given back)."""
    cluster = early_start.loaded_ray_cluster()
    if cluster is not None:
        cluster.shutdown_local_ray()


def run_exit_handlers() -> None:
    """Python's exit handlers, now, while the console still sends the process's output to the
    log: those a portable runner (Flink, Prism) registered stop its job server ("Really
    destroying service ...") and its LOOPBACK workers, whose threads print tracebacks when the
    server goes first. They run once: ``cli.run``'s own call afterwards finds none left."""
    atexit._run_exitfuncs()


def interrupted(con: Console, code: Optional[int] = None) -> NoReturn:
    """Ctrl-C on the command line: one line, then exit 130 at once. Not through Ray's shutdown:
    with a thread still talking to the embedded Ray (a DoFn's connection), Ray ends the process
    itself (exit 1) when the driver shuts down under it. The embedded Ray's GCS and raylet stop
    with this process (they are started with the parent-death signal, see ``ray_cluster``);
    what would outlive it is stopped first (``early_start.stop_ray_before_exit``).

    A press after the run ended (``code``, its exit code: while the embedded Ray stops) cut
    nothing short: the job says so and exits with the run's own code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second press does not cut the stop short
    try:
        say_interrupted(con, stop=early_start.stop_ray_before_exit,
                        line=None if code is None else "Ctrl-C while the embedded Ray stopped; the run had ended")
    finally:
        os._exit(130 if code is None else code)


def _chain(e: Optional[BaseException]) -> Iterator[BaseException]:
    """``e`` and the exceptions it was raised from or while handling, once each (runners wrap
    what a step raised)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _interrupt_in(e: BaseException) -> bool:
    """Whether a run's failure is Ctrl-C, as runners pass it on (wrapped, or as text)."""
    return any(isinstance(x, KeyboardInterrupt) or str(x).strip() == "KeyboardInterrupt" for x in _chain(e))


def _run(argv: List[str], con: Console, command_line: bool = False) -> int:
    try:
        args, spec, dedup, options, reference = configure(argv, command_line)
    except ConfigError as e:
        con.tell(f"beam-phash: error: {e}")
        return 2
    except ValueError as e:  # the library's check of its arguments: said with this job's flags
        con.tell(f"beam-phash: error: {as_flags(str(e))}")
        return 2
    clear_outputs(args.output)
    if args.write_shards is not None:
        clear_shards(args.write_shards)
    bits = beam_phash.hash_bits(args.algorithm, args.hash_size)
    mode = (f"near-duplicates within {dedup.max_distance} bits{', dihedral' if args.dihedral else ''}"
            if dedup.near_duplicates else f"backend {dedup.backend}")
    noun = {"parquet": "Parquet file", "webdataset": "WebDataset shard"}.get(spec.fmt, "file")
    con.tell(f"beam-phash: {spec.matched} {noun}{'' if spec.matched == 1 else 's'} -> {args.output} "
             f"({args.algorithm}, {bits} bits, {mode}); logs in {con.log_dir}/")
    for what, some in (("--input", spec), ("--reference", reference)):
        if some is None:
            continue
        if some.hidden:
            con.tell(passed_over(what, "hidden file", sorted(some.hidden.values()),
                                 "names starting with a dot are not read unless the pattern spells the dot ('DIR/.*')"))
        if some.subfolders:
            glob = deep_glob(posixpath.dirname(some.subfolders[0]), folder_names(some.fmt))
            con.tell(passed_over(what, "subfolder", [f + "/" for f in some.subfolders],
                                 f"a folder's own files are read, not its subfolders'; give {glob!r} to read them too"))
    if spec.repeated_id is not None:
        con.tell(f"beam-phash: --input's id column {spec.id_column!r} is not unique: it holds {spec.repeated_id}; rows "
                 "that share an id are taken as retries of one record, so copies among them are all kept: give "
                 "--id-column a column of unique values" + ("" if {"id", job_inputs.DETECTED_ID_COLUMN} & set(spec.columns) else
                                                           ", or none (each row's id is then FILE#ROW)"))
    started = time.time()
    board = None
    local = options.view_as(StandardOptions).runner in LOCAL_RUNNERS  # the run dies with this process
    if local:
        board = ProgressBoard(con.err, total=known_count(spec))
    try:
        p = beam.Pipeline(runner=local_runner(options), options=options)
        build(p, spec, args.output, dedup, report=not args.no_report, reference=reference,
              write_shards=args.write_shards, shard_mb=args.shard_size,
              progress=board.address if board else None)
        # Everything allocated so far (the imports, the pipeline) outlives the run: frozen, the
        # collections the run triggers skip it (a full one walked some 180,000 objects, up to
        # 0.18 s, on the 10,000-image job).
        gc.freeze()
        result = p.run()
        result.wait_until_finish()
    except KeyboardInterrupt:
        if local:
            discard_unless_committed(args, dedup, con)
        raise
    except Exception as e:  # noqa: BLE001 - every failure is one line; the traceback is in the log
        if _interrupt_in(e):  # Ctrl-C, as the runner passed it on
            if local:
                discard_unless_committed(args, dedup, con)
            raise KeyboardInterrupt from e
        log.exception("the run failed")
        reason = failure_threshold_reason(e)
        if reason is not None:  # the run stopped before its outputs were written
            reason = reason.replace(_THRESHOLD_TAIL, "no outputs were written: rerun without the threshold "
                                                     "to have failed/ list each with its reason")
        said = reason or one_line(e)
        if args.backend_name is not None and not dedup.near_duplicates:
            # A named backend commits each claim as it answers (it serves many runs): a rerun
            # keeps its records again only under the same ids (a file's is its path as given).
            said += (f"; backend {args.backend_name!r} keeps what this run claimed: rerun it on the same "
                     "inputs, given the same way, to keep their records")
        con.tell(f"beam-phash: error: {said} (details in {con.log_path})")
        if args.ray_address is not None:
            release_backend(dedup)
        if local:
            discard_unless_committed(args, dedup, con)
        return 1
    finally:
        gc.unfreeze()
        if board is not None:
            board.close()
    wall = time.time() - started
    found = counts_of(result)
    counts, counted_from, checkable = verified_counts(found, spec, args.output)
    adds_up = checkable and counts["inputs"] == counts["kept"] + counts["duplicates"] + counts["failed"]
    # What the inputs declared at the start (Parquet footers, matched files), against what was
    # read: a record the readers never produced (a file name Beam's reader takes for a pattern)
    # would otherwise go unseen, as kept + duplicates + failed still equals what was read.
    declared = known_count(spec)
    if adds_up and short(con, "inputs", spec, declared, counts["inputs"]):
        adds_up = False
    # The same for the references: one that was never read would let its copies through unseen.
    reference_declared = known_count(reference) if reference is not None and found else None
    if short(con, "references", reference, reference_declared,
             found.get("references", 0) + found.get("reference_failed", 0)):
        adds_up = False
    summary = {
        **counts,
        "declared_inputs": declared,
        "adds_up": adds_up,
        "counts_from": counted_from,
        "verified": checkable,
        "state_matches": found.get("state_matches", 0),
        "flat_images": found.get("flat_images", 0),
        "wall_seconds": round(wall, 3),
        "images_per_second": round(counts["inputs"] / wall, 1) if wall > 0 and counts["inputs"] else None,
        "algorithm": args.algorithm,
        "hash_size": args.hash_size,
        "bits": bits,
        "backend": None if dedup.near_duplicates else dedup.backend,
        "max_distance": dedup.max_distance,
        "dihedral": args.dihedral,
        "keep": args.keep if dedup.near_duplicates else None,
        "state_dir": args.state,
        "input_format": spec.fmt,
        "input_patterns": spec.given,
        "input_files": spec.matched,
        "hidden_files": len(spec.hidden),
        "subfolders_not_read": len(spec.subfolders),
    }
    if args.write_shards is not None:
        shards = written_shards(args.write_shards)
        summary["write_shards"] = {"dir": args.write_shards, "shards": len(shards),
                                   "bytes": sum(m.size_in_bytes for m in shards)}
    if reference is not None:
        failures = read_reference_failures(args.output)
        summary["reference"] = {
            "patterns": reference.given, "format": reference.fmt, "files": reference.matched,
            "hidden_files": len(reference.hidden),
            "subfolders_not_read": len(reference.subfolders),
            "hash_column": reference.hash_column,
            "declared": reference_declared,
            "references": found.get("references", 0), "matches": found.get("reference_matches", 0),
            "failed": found.get("reference_failed", 0), "failures": failures[:MAX_LISTED],
        }
    with FileSystems.create(FileSystems.join(args.output, "summary.json")) as f:
        f.write(json.dumps(summary, indent=2).encode())
    verdict = ("adds up" if adds_up else "DOES NOT ADD UP" if checkable else
               "UNVERIFIED: the runner reported no counts and the input count is unknown")
    inputs = "?" if counts["inputs"] is None else counts["inputs"]
    con.say(f"{inputs} images: {counts['kept']} kept, {counts['duplicates']} duplicates, "
            f"{counts['failed']} failed ({verdict}) "
            f"in {wall:.1f} s" + ("" if summary["images_per_second"] is None else
                                   f" ({summary['images_per_second']} images/s)"))
    if counted_from == "outputs":
        # (also a runner with metrics whose counters never moved: a run of no records)
        con.tell("beam-phash: counts: the runner reported none of the job's counters; counted from the written rows"
                 + ("" if checkable else ", which cannot be checked against the inputs"))
    if reference is not None:
        ref = summary["reference"]
        con.say(f"reference: {ref['references']} images, {ref['matches']} inputs matched them, "
                f"{ref['failed']} could not be hashed"
                + (f" (listed in {args.output}/reference_failed/)" if ref["failed"] else ""))
    if summary["state_matches"]:
        con.say(f"state: {summary['state_matches']} inputs matched what earlier runs kept")
    con.say(f"output: {args.output}/{{kept,duplicates,failed}}/*.parquet, {args.output}/summary.json")
    if args.write_shards is not None:
        written = summary["write_shards"]
        con.say(f"shards: {counts['kept']} kept samples in {written['shards']} shards in {args.write_shards}/ "
                f"({written['bytes'] / 2**20:.1f} MiB), keys in {args.write_shards}/{KEPT_KEYS}/")
    if not args.no_report:
        con.say(f"report: {write_report(args.output, summary)}")
        note = distance_hint(read_distances(args.output), caught=counts["duplicates"],
                             dihedral=args.dihedral)
        if note:
            con.say(note)
    return 0 if adds_up else 1 if checkable else 3


_THRESHOLD_TAIL = "the failed output lists each with its reason"
_THRESHOLD_MESSAGE = re.compile(r"\d+ of \d+ inputs \([^)]*\) [^\n]*? over the failure threshold of [^\n]*?"
                                + re.escape(_THRESHOLD_TAIL))


def failure_threshold_reason(e: BaseException) -> Optional[str]:
    """The message of a FailureThresholdError raised in the pipeline (runners wrap it), or None."""
    for x in _chain(e):
        found = _THRESHOLD_MESSAGE.search(str(x))  # without "[while running ...]"; or a worker's error as text
        if found:
            return found.group(0)
    return None


TRACEBACK = "Traceback (most recent call last):"


def one_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message, with the lines after
    it up to where that line's brackets close (an error quoted inside parentheses, as pyarrow's
    run over several lines, is said whole with what follows it; Ray's details after a first line
    whose brackets are closed are left out), without the step Beam appends ("[while running
    ...]"). A worker's traceback inside the message (portable runners pass one on) stands for
    the exception it ends with. The whole traceback is in the log."""
    lines = str(e).strip().splitlines()
    marks = [i for i, line in enumerate(lines) if TRACEBACK in line]
    if marks:
        # the exception line: the first one after the last traceback that is not indented
        ends = [i for i in range(marks[-1] + 1, len(lines)) if lines[i][:1].strip()]
        lines = lines[ends[0]:] if ends else lines
    taken, depth = [], 0
    for line in lines:
        taken.append(line.strip())
        depth += sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")
        if depth <= 0:
            break
    else:  # brackets that never close (a '(' in a quoted name): the first line alone
        taken = taken[:1]
    said = re.sub(r"\s*\[while running '[^']*'\]", "", " ".join(t for t in taken if t)).strip()
    text = f"{type(e).__name__}: {said}" if said else type(e).__name__
    return text if len(text) <= 400 else text[:397] + "..."

