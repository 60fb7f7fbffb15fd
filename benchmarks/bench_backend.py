"""Seen-set memory and throughput, and a scale run through the Ray backend.

    python benchmarks/bench_backend.py                 # SeenSet at 1M and 10M, Python dict/set baseline
    python benchmarks/bench_backend.py --ray 50000000  # also push 50M hashes through 16 bucket actors

Hashes are random 256-bit values (a perceptual hash of distinct photos is close to that); owners
are random uint64. Memory per entry is the set's allocated bytes (``nbytes``) divided by entries,
and is cross-checked against the process's resident memory growth. The Ray run reports each
actor's seen-set bytes and resident memory, and the aggregate rate through the client
(routing, packing, one call per bucket per batch), as the Beam DoFn does it.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

import beam_phash
from beam_phash.exact.ray_actor import resident_bytes

BATCH = 5000


def seen_set_run(n: int, rng: np.random.Generator) -> None:
    s = beam_phash.SeenSet(32)
    rss0 = resident_bytes()
    spent = 0.0
    for start in range(0, n, BATCH):
        m = min(BATCH, n - start)
        hashes = rng.bytes(32 * m)
        owners = rng.integers(0, 2**63, size=m, dtype=np.uint64)
        t0 = time.perf_counter()
        s.check_and_insert(hashes, owners)
        spent += time.perf_counter() - t0
    rss = resident_bytes() - rss0
    print(f"SeenSet   {n:>11,} hashes: {s.nbytes / n:6.1f} B/entry allocated, "
          f"{rss / n:6.1f} B/entry resident growth, {n / spent / 1e6:5.2f} M check_and_insert/s "
          f"(batches of {BATCH})")
    # Re-check every batch as a retry would: all must be False for other owners.
    del s


def python_baseline(n: int, rng: np.random.Generator) -> None:
    rss0 = resident_bytes()
    seen: dict = {}
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        m = min(BATCH, n - start)
        packed = rng.bytes(32 * m)
        owners = rng.integers(0, 2**63, size=m, dtype=np.uint64).tolist()
        for i in range(m):
            seen.setdefault(packed[32 * i:32 * (i + 1)], owners[i])
    spent = time.perf_counter() - t0
    rss = resident_bytes() - rss0
    print(f"dict      {n:>11,} hashes: {rss / n:6.1f} B/entry resident growth, "
          f"{n / spent / 1e6:5.2f} M inserts/s (Python dict bytes -> int)")
    del seen


def ray_run(n: int, num_buckets: int, batch: int) -> None:
    from beam_phash.exact import ray_cluster
    from beam_phash.exact.ray_client import RayDedupBackend

    address = ray_cluster.start_local_ray()
    backend = RayDedupBackend(address, f"bench-{os.getpid()}", num_buckets, max_in_flight=num_buckets).connect()
    rng = np.random.default_rng(7)
    try:
        t0 = time.perf_counter()
        done = 0
        next_report = time.perf_counter() + 30
        while done < n:
            m = min(batch, n - done)
            packed = rng.bytes(32 * m)
            hashes = [packed[32 * i:32 * (i + 1)] for i in range(m)]
            owners = [f"r{done + i}" for i in range(m)]
            backend.claim(hashes, owners)
            done += m
            if time.perf_counter() > next_report:
                print(f"  {done:,} hashes, {done / (time.perf_counter() - t0):,.0f}/s", flush=True)
                next_report += 30
        spent = time.perf_counter() - t0
        stats = backend.stats()
        sizes = [b["hashes"] for b in stats]
        nbytes = [b["nbytes"] for b in stats]
        rss = [b["rss"] for b in stats]
        print(f"Ray backend, {num_buckets} buckets on {backend.actors} actors, batches of {batch}: "
              f"{n:,} hashes in {spent:.0f} s = {n / spent:,.0f} hashes/s aggregate")
        print(f"  per bucket: {np.mean(sizes):,.0f} hashes, seen-set {np.mean(nbytes) / 2**20:,.0f} MiB "
              f"({sum(nbytes) / sum(sizes):.1f} B/entry incl. ids), resident "
              f"{np.mean(rss) / 2**20:,.0f} MiB (max {max(rss) / 2**20:,.0f} MiB)")
    finally:
        backend.release()
        ray_cluster.shutdown_local_ray()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--baseline", type=int, default=1_000_000, help="Python dict baseline size (0: skip)")
    ap.add_argument("--ray", type=int, default=0, help="hashes to push through the Ray backend (0: skip)")
    ap.add_argument("--num-buckets", type=int, default=16)
    ap.add_argument("--ray-batch", type=int, default=20000)
    args = ap.parse_args(argv)
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"beam-phash {beam_phash.__version__}")
    rng = np.random.default_rng(1)
    for n in map(int, args.sizes.split(",")):
        seen_set_run(n, rng)
    if args.baseline:
        python_baseline(args.baseline, rng)
    if args.ray:
        ray_run(args.ray, args.num_buckets, args.ray_batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
