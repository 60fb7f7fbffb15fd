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

import atexit
import gc
import json
import logging
import os
import posixpath
import re
import signal
import time
from typing import Iterator, List, NoReturn, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

import beam_phash
from beam_phash import ImagePhashDedup
from beam_phash.hashed_as import made, unlike
from beam_phash.records import QUALITY_FIELD, WRITTEN_FIELDS
from pipelines import arguments, early_start
from pipelines.arguments import as_flags, check_beam_options, check_mode_options, mode_options, parse_args
from pipelines.output_directory import (check_output, check_output_apart, check_plain_name, check_write_shards,
                                        clear_outputs, clear_shards, discard_unless_committed, output_rows,
                                        read_reference_failures)
from pipelines import inputs as job_inputs
from pipelines.errors import ConfigError
from pipelines.input_items import deep_glob, folder_names
from pipelines.inputs import InputSpec, ReadImageRecords, ReadReference, reference_hash_field
from pipelines.outputs import DEDUP_ID_COLUMN, WriteOutputs
from pipelines.console import Console, close_console, open_console, say_interrupted, say_interrupted_before_help
from pipelines.early_start import LOCAL_RUNNERS
from pipelines.local_runner import local_runner, quick_state_samplers
from pipelines.input_paths import identity
from pipelines.progress import ProgressBoard, ProgressDoFn
from pipelines.read_failures import with_read_failures
from pipelines.report import CollectReportData, write_report
from pipelines.report_distances import hint as distance_hint, read_stats as read_distances
from pipelines.webdataset_read import DEFAULT_IMAGE_EXTS
from pipelines.webdataset_write import KEPT_KEYS, WriteShards, written_shards

log = logging.getLogger(__name__)
SAMPLE_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data")
HASH_FIELD = job_inputs.OUTPUT_HASH_COLUMN


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
        references = p | "ReadReference" >> ReadReference(reference, spec.dedup_id, spec.image_column)
        dedup = dedup.with_reference(references, hash_column=reference_hash_field(reference, spec.dedup_id))
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
        written.extend(outputs | "Report" >> CollectReportData(output, id_field=spec.dedup_id,
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
                            image_field=spec.image_column, id_field=spec.dedup_id,
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
        arguments.parser().print_help()
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
        if DEDUP_ID_COLUMN in spec.columns and spec.id_column != DEDUP_ID_COLUMN:  # an earlier run's outputs
            hint = (f" (such as {DEDUP_ID_COLUMN}, the ids an earlier run over several folders deduplicated "
                    "these rows under)")
        elif {"id", job_inputs.DETECTED_ID_COLUMN} & set(spec.columns):
            hint = ""
        else:
            hint = ", or none (each row's id is then FILE#ROW)"
        con.tell(f"beam-phash: --input's id column {spec.id_column!r} is not unique: it holds {spec.repeated_id}; rows "
                 f"that share an id are taken as retries of one record, so copies among them are all kept: give "
                 f"--id-column a column of unique values{hint}")
    started = time.time()
    board = None
    local = options.view_as(StandardOptions).runner in LOCAL_RUNNERS  # the run dies with this process
    if local:
        board = ProgressBoard(con.err, total=known_count(spec))
    try:
        runner = local_runner(options)
        p = beam.Pipeline(runner=runner, options=options)
        build(p, spec, args.output, dedup, report=not args.no_report, reference=reference,
              write_shards=args.write_shards, shard_mb=args.shard_size,
              progress=board.address if board else None)
        # Everything allocated so far (the imports, the pipeline) outlives the run: frozen, the
        # collections the run triggers skip it (a full one walked some 180,000 objects, up to
        # 0.18 s, on the 10,000-image job).
        gc.freeze()
        with quick_state_samplers(runner):
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

