"""Near-duplicate dedup at scale, on hashes of real images (``make_hash_set.py``'s cached set).

    python benchmarks/bench_near_dup.py kernel [--count 1000000] [--max-distance 16 28] [--check]
    python benchmarks/bench_near_dup.py job [--count 1000000] [--max-distance 16] [beam options]

``kernel``: the Rust banded search alone, on one core, over every band of the chosen layout, on
the distinct hashes of the set. Counts beyond the cached set are made by flipping about 50
random bits of its hashes (distinct images with the real hashes' bit statistics). ``--check`` compares
the pairs with the brute-force all-pairs oracle (all cores; minutes at 1M).

``job``: the whole job on the DirectRunner with ``--hash-column``, from Parquet read to the three
outputs written; prints wall time and the peak resident memory of this process and of its
largest child.
"""
from __future__ import annotations

import argparse
import pathlib
import platform
import resource
import sys
import time

import numpy as np

from beam_phash import _native

HERE = pathlib.Path(__file__).resolve().parent
SET = HERE.parent / "out" / "hashes"


def load(count: int) -> np.ndarray:
    """(count, 32) uint8 phash-16 hashes: the cached real set, extended by bit flips (each bit of
    a random real hash flipped with probability 50/256: about 50 bits, a distinct image)."""
    base = SET / "phash16_1000000.npz"
    if not base.exists():
        raise SystemExit(f"{base} is missing: run python benchmarks/make_hash_set.py --count 1000000")
    hashes = np.load(base)["hashes"]
    if count <= len(hashes):
        return hashes[:count]
    rng = np.random.default_rng(0)
    parts = [hashes]
    for start in range(len(hashes), count, 500_000):
        n = min(500_000, count - start)
        flips = np.packbits(rng.random((n, 256)) < 50 / 256, axis=1, bitorder="little")
        parts.append(hashes[rng.integers(0, len(hashes), n)] ^ flips)
    return np.concatenate(parts)


def kernel(args) -> int:
    loaded = load(args.count)
    hashes = np.unique(loaded.view(np.dtype((np.void, 32))).ravel()).view(np.uint8).reshape(-1, 32)
    ids = np.arange(len(hashes), dtype=np.uint64)
    print(f"{len(hashes):,} distinct hashes ({args.count:,} records); one core; {platform.machine()}")
    for k in args.max_distance:
        layout = _native.near_layout(256, k, len(hashes))
        started = time.perf_counter()
        found, candidates = [], 0
        for band in range(len(layout)):
            a, b, d, c, _ = _native.near_search(hashes, ids.view(np.uint8), hash_bytes=32, bits=256,
                                                 max_distance=k, layout=layout, band=band)
            found.append((np.frombuffer(a, np.uint64), np.frombuffer(b, np.uint64)))
            candidates += c
        wall = time.perf_counter() - started
        pairs = sum(len(a) for a, _ in found)
        radii = sorted({r for _, _, r in layout})
        print(f"k={k}: {len(layout)} bands (radii {radii}): {pairs:,} pairs, {candidates:,} candidates "
              f"in {wall:.2f} s")
        if args.check:
            t = time.perf_counter()
            a, b, _ = _native.near_pairs_brute(hashes, ids.view(np.uint8), hash_bytes=32, max_distance=k)
            want = set(zip(np.frombuffer(a, np.uint64).tolist(), np.frombuffer(b, np.uint64).tolist()))
            got = set()
            for x, y in found:
                got.update(zip(np.minimum(x, y).tolist(), np.maximum(x, y).tolist()))
            ok = got == want and len(got) == pairs
            print(f"  brute force ({time.perf_counter() - t:.0f} s): {len(want):,} pairs: "
                  f"{'PASS' if ok else 'FAIL'}")
            if not ok:
                return 1
    return 0


def job(args, beam_args) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines import dedup_images

    k = args.max_distance[0]
    src = SET / f"parquet_{args.count}"
    if not src.exists():
        hashes = load(args.count)
        src.mkdir(parents=True)
        per = 100_000
        for i in range(0, len(hashes), per):
            part = hashes[i:i + per]
            pq.write_table(pa.table({"id": [f"r{j:09d}" for j in range(i, i + len(part))],
                                     "image_phash": [h.tobytes().hex() for h in part]}),
                           src / f"part-{i // per:04d}.parquet")
    out = HERE.parent / "out" / f"bench_near_job_{args.count}_{k}"
    started = time.perf_counter()
    code = dedup_images.main(["--input", str(src), "--input-format", "parquet", "--hash-column", "image_phash",
                              "--max-distance", str(k), "--output", str(out), "--no-report", *beam_args])
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"job: {args.count:,} hashes at k={k} in {wall:.1f} s; peak RSS {peak:,.0f} MiB (this process), "
          f"{child:,.0f} MiB (largest child)")
    return code


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["kernel", "job"])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--max-distance", type=int, nargs="+", default=[16, 28])
    ap.add_argument("--check", action="store_true")
    args, beam_args = ap.parse_known_args(argv)
    return kernel(args) if args.what == "kernel" else job(args, beam_args)


if __name__ == "__main__":
    sys.exit(main())
