"""Deduplicate a folder (or glob, or list) of image files with ImagePhashDedup.

    python -m pipelines.dedup_images --input DIR_OR_GLOB [--input ...] --output OUT_DIR \\
        [--hash-size 16] [--algorithm phash] [--backend ray|state] [--num-buckets 16] \\
        [--ray-address ADDR] [Beam pipeline options ...]

Files are matched and read through Beam's filesystems (fileio.MatchFiles / ReadMatches), so
gs:// and s3:// paths work when those Beam extras are installed. Unknown flags are passed to Beam
as PipelineOptions (--runner, --direct_num_workers, ...). Output, in OUT_DIR:

    kept/*.parquet        id (the file path), image_phash
    duplicates/*.parquet  id, image_phash, duplicate_of
    failed/*.parquet      id, error
    summary.json          counts, whether they add up, wall time, images/s
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import List, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

import beam_phash
from beam_phash import ImagePhashDedup

SAMPLE_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data")

KEPT_SCHEMA = pa.schema([("id", pa.string()), ("image_phash", pa.string())])
DUPLICATES_SCHEMA = pa.schema([("id", pa.string()), ("image_phash", pa.string()),
                               ("duplicate_of", pa.string())])
FAILED_SCHEMA = pa.schema([("id", pa.string()), ("error", pa.string())])


class ConfigError(Exception):
    """A problem with the command line, reported in one line before anything runs."""


def parse_args(argv: Optional[List[str]]):
    ap = argparse.ArgumentParser(prog="beam-phash", description=__doc__.splitlines()[0])
    ap.add_argument("--input", action="append", default=None,
                    help="directory, glob or file; repeat for several (default: the bundled sample)")
    ap.add_argument("--output", default="out/dedup", help="output directory (default: out/dedup)")
    ap.add_argument("--hash-size", type=int, default=16)
    ap.add_argument("--algorithm", default="phash", choices=beam_phash.ALGORITHMS)
    ap.add_argument("--backend", default="ray", choices=["ray", "state"])
    ap.add_argument("--num-buckets", type=int, default=16)
    ap.add_argument("--ray-address", default=None)
    return ap.parse_known_args(argv)


def patterns_for(inputs: List[str]) -> List[str]:
    """Directories become DIR/*; globs and files are used as they are. Each must match."""
    patterns = []
    for item in inputs:
        is_dir = os.path.isdir(item) or item.endswith("/")
        pattern = FileSystems.join(item.rstrip("/"), "*") if is_dir else item
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # noqa: BLE001 - e.g. an unknown scheme or a missing bucket
            matched = []
        if not matched:
            raise ConfigError(f"--input {item!r} matched no files")
        patterns.append(pattern)
    return patterns


def check_output(output: str) -> None:
    probe = FileSystems.join(output, f".write-test-{uuid.uuid4().hex}")
    try:
        FileSystems.mkdirs(output) if not FileSystems.exists(output) else None
        FileSystems.create(probe).close()
        FileSystems.delete([probe])
    except Exception as e:  # noqa: BLE001 - any failure means "not writable"
        raise ConfigError(f"--output {output!r} is not writable: {e}") from None


def to_record(readable: fileio.ReadableFile) -> dict:
    return {"id": readable.metadata.path, "image": readable.read()}


def project(fields):
    return lambda r: {f: r.get(f) for f in fields}


def build(p, patterns: List[str], output: str, dedup: ImagePhashDedup):
    records = (p
               | "Patterns" >> beam.Create(patterns)
               | "MatchFiles" >> fileio.MatchAll()
               | "ReadMatches" >> fileio.ReadMatches()
               | "ToRecords" >> beam.Map(to_record))
    kept, duplicates, failed = records | "Dedup" >> dedup.with_outputs()
    for name, pcoll, schema in (("kept", kept, KEPT_SCHEMA),
                                ("duplicates", duplicates, DUPLICATES_SCHEMA),
                                ("failed", failed, FAILED_SCHEMA)):
        (pcoll
         | f"Project{name.title()}" >> beam.Map(project(schema.names))
         | f"Write{name.title()}" >> beam.io.WriteToParquet(
             FileSystems.join(output, name, "part"), schema, file_name_suffix=".parquet"))


def counts_of(result) -> dict:
    found = result.metrics().query(MetricsFilter().with_namespace(beam_phash.METRICS_NAMESPACE))
    return {c.key.metric.name: c.committed for c in found["counters"]}


def main(argv: Optional[List[str]] = None) -> int:
    args, beam_args = parse_args(argv)
    try:
        patterns = patterns_for(args.input or [SAMPLE_DATA])
        check_output(args.output)
        dedup = ImagePhashDedup(hash_size=args.hash_size, algorithm=args.algorithm,
                                backend=args.backend, num_buckets=args.num_buckets,
                                ray_address=args.ray_address)
        options = PipelineOptions(beam_args)
    except (ConfigError, ValueError) as e:
        print(f"beam-phash: error: {e}", file=sys.stderr)
        return 2
    started = time.time()
    p = beam.Pipeline(options=options)
    build(p, patterns, args.output, dedup)
    result = p.run()
    result.wait_until_finish()
    wall = time.time() - started
    counts = {k: counts_of(result).get(k, 0) for k in ("inputs", "kept", "duplicates", "failed")}
    summary = {
        **counts,
        "adds_up": counts["inputs"] == counts["kept"] + counts["duplicates"] + counts["failed"],
        "wall_seconds": round(wall, 3),
        "images_per_second": round(counts["inputs"] / wall, 1) if wall > 0 else None,
        "algorithm": args.algorithm,
        "hash_size": args.hash_size,
        "bits": beam_phash.hash_bits(args.algorithm, args.hash_size),
        "backend": args.backend,
        "inputs_matched": patterns,
    }
    with FileSystems.create(FileSystems.join(args.output, "summary.json")) as f:
        f.write(json.dumps(summary, indent=2).encode())
    print(f"{counts['inputs']} images: {counts['kept']} kept, {counts['duplicates']} duplicates, "
          f"{counts['failed']} failed ({'adds up' if summary['adds_up'] else 'DOES NOT ADD UP'}) "
          f"in {wall:.1f} s")
    print(f"output: {args.output}/{{kept,duplicates,failed}}/*.parquet and {args.output}/summary.json")
    return 0 if summary["adds_up"] else 1


if __name__ == "__main__":
    sys.exit(main())
