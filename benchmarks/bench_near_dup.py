"""Near-duplicate dedup at scale: 1M hashes through the near-duplicate stages on the DirectRunner.

    python benchmarks/bench_near_dup.py FOLDER [--count 1000000] [--max-distance 12] [--dihedral]
        [--near-fraction 0.1]

The hashes are real: every image in FOLDER (e.g. ``make bench-data``'s web set) is hashed, and
the 1M are made from them by random bit flips: each record flips 40-60 random bits of a real hash
(a distinct image: far beyond the threshold, but with the real hashes' bit statistics, so the band
groups are as lopsided as real ones), and ``--near-fraction`` of them are near copies of an
earlier record (1 to max_distance bits flipped). The records are generated inside the pipeline, so
only the dedup stages are measured (no decoding): exact groups, band groups, verification, the
single-worker resolution and the join back to the records.

Prints wall time, rate, peak resident memory of this process (the in-process runner runs every
step here), the counts, and checks the result: every near copy is dropped or keeps its original.
"""
from __future__ import annotations

import argparse
import pathlib
import platform
import random
import resource
import sys
import time

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

import beam_phash
from beam_phash.hash_dofn import Hashed
from beam_phash.near_dup_transform import NearDupDedup
from bench_hash import SUFFIXES

SHARD = 10_000


def _flip(h: bytes, rng: random.Random, n: int) -> bytes:
    value = int.from_bytes(h, "big")
    for bit in rng.sample(range(len(h) * 8), n):
        value ^= 1 << bit
    return value.to_bytes(len(h), "big")


def generate(shard: int, bases: list, count: int, k: int, near_fraction: float, dihedral: bool):
    """The records of one shard, deterministic in the shard number."""
    rng = random.Random(shard)
    start = shard * SHARD
    made: list = []
    batch = []
    for i in range(start, min(count, start + SHARD)):
        if made and rng.random() < near_fraction:
            h = _flip(rng.choice(made), rng, rng.randint(1, k))
        else:
            h = _flip(rng.choice(bases), rng, rng.randint(40, 60))
            made.append(h)
        variants = tuple(_flip(h, rng, 64) for _ in range(8)) if dihedral else ()
        owner = f"r{i:08d}"
        batch.append(Hashed(h, owner, {"id": owner}, 640 * 480, variants))
        if len(batch) == 500:
            yield batch
            batch = []
    if batch:
        yield batch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=pathlib.Path)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--max-distance", type=int, default=12)
    ap.add_argument("--near-fraction", type=float, default=0.1)
    ap.add_argument("--dihedral", action="store_true")
    args, beam_args = ap.parse_known_args(argv)
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in SUFFIXES)
    hashes = beam_phash.hash_images([p.read_bytes() for p in files])
    bases = [bytes(h) for h in hashes if isinstance(h, beam_phash.PHash)]
    if not bases:
        raise SystemExit(f"no images in {args.folder}")
    k = args.max_distance
    print(f"{len(bases)} real hashes from {args.folder}; {args.count:,} records, k={k}, "
          f"near fraction {args.near_fraction}, dihedral={args.dihedral}; {platform.machine()}, "
          f"{platform.python_version()}", flush=True)

    started = time.perf_counter()
    p = beam.Pipeline(options=PipelineOptions(beam_args or ["--direct_num_workers=1"]))
    shards = -(-args.count // SHARD)
    kept, dups = (p
                  | beam.Create(range(shards))
                  | "Generate" >> beam.FlatMap(generate, bases, args.count, k, args.near_fraction, args.dihedral)
                  | NearDupDedup(k, len(bases[0]) * 8, keep="largest"))
    result = p.run()
    result.wait_until_finish()
    wall = time.perf_counter() - started
    found = result.metrics().query(MetricsFilter().with_namespace(beam_phash.METRICS_NAMESPACE))
    counts = {c.key.metric.name: c.committed for c in found["counters"]}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{args.count:,} hashes in {wall:.0f} s = {args.count / wall:,.0f} hashes/s; "
          f"peak RSS {peak:,.0f} MiB (this process), {peak_children:,.0f} MiB (largest child)")
    print("counters: " + ", ".join(f"{k}={v:,}" for k, v in sorted(counts.items())))
    ok = counts.get("kept", 0) + counts.get("duplicates", 0) == args.count
    print("PASS: every record is kept or a duplicate" if ok else "FAIL: records lost or invented")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
