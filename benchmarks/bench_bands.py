"""How crowded a hash's bands are on real pictures: what the near-duplicate search pays for.

    python benchmarks/bench_bands.py FOLDER [--algorithms phash,dhash] [--hash-size 16]
        [--band-bits 16] [--limit N] [--threads 2]

The search cuts each hash into bands and compares every pair of hashes that share a band value
(README, "Band layout"). Pictures with flat parts give the same band value to many pictures (an
all-zero band for dHash, whose dead zone clears the bits of a flat area), and each such pair is a
candidate to verify. For each algorithm this hashes every image under FOLDER, keeps the distinct
hashes (identical ones collapse to one image before the search) and prints:

    distinct    hashes left after collapsing identical ones
    ones        the share of bits set
    pairs       pairs of distinct hashes that share the value of some --band-bits band, summed
                over the bands (bits / band-bits of them)
    per hash    pairs / distinct hashes
    largest     the most hashes sharing one band value

Random hashes would give about bands * n^2 / 2^(band-bits + 1) pairs, printed beside them.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

import beam_phash
from bench_hash import read_folder


def distinct_hashes(blobs: list[bytes], algorithm: str, hash_size: int, threads: int) -> np.ndarray:
    """The distinct hashes of the images that decode, one row of 0/1 per hash (its true bits)."""
    found = [h for h in beam_phash.hash_images(blobs, algorithm=algorithm, hash_size=hash_size, threads=threads)
             if isinstance(h, beam_phash.PHash)]
    if not found:
        raise SystemExit(f"{algorithm}: no image decoded")
    rows = np.array([np.frombuffer(bytes(h), np.uint8) for h in found])
    return np.unique(np.unpackbits(rows, axis=1, count=found[0].bits), axis=0)


def band_values(bits: np.ndarray, band_bits: int) -> np.ndarray:
    """(hashes, bands) integers: each hash's bits, in `np.unpackbits` order, cut into
    consecutive bands of `band_bits` (a remainder shorter than a band is left out)."""
    bands = bits.shape[1] // band_bits
    cut = bits[:, : bands * band_bits].reshape(len(bits), bands, band_bits)
    return cut.astype(np.uint64) @ (np.uint64(1) << np.arange(band_bits, dtype=np.uint64)[::-1])


def crowding(values: np.ndarray) -> tuple[int, int]:
    """(pairs sharing a value on some band, summed over bands; the largest group on one value)."""
    pairs = largest = 0
    for column in values.T:
        _, counts = np.unique(column, return_counts=True)
        pairs += int((counts * (counts - 1) // 2).sum())
        largest = max(largest, int(counts.max()))
    return pairs, largest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=pathlib.Path)
    ap.add_argument("--algorithms", default="phash,dhash")
    ap.add_argument("--hash-size", type=int, default=16)
    ap.add_argument("--band-bits", type=int, default=16)
    ap.add_argument("--limit", type=int, default=0, help="use at most N files (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not 1 <= args.band_bits <= 32:
        ap.error("--band-bits must be between 1 and 32")

    blobs = read_folder(args.folder, args.limit)
    print(f"{len(blobs)} images from {args.folder}; bands of {args.band_bits} bits")
    print(f"{'hash':<10} {'bits':>5} {'distinct':>9} {'ones':>6} {'pairs':>12} {'per hash':>9} "
          f"{'largest':>8} {'random':>10}")
    for algorithm in args.algorithms.split(","):
        t = time.perf_counter()
        hashes = distinct_hashes(blobs, algorithm, args.hash_size, args.threads)
        values = band_values(hashes, args.band_bits)
        pairs, largest = crowding(values)
        n, bands = len(hashes), values.shape[1]
        random = bands * n * (n - 1) / 2 / 2 ** args.band_bits
        print(f"{algorithm}-{args.hash_size:<4} {hashes.shape[1]:>5} {n:>9} {hashes.mean():>6.0%} "
              f"{pairs:>12,} {pairs / n:>9.1f} {largest:>8} {random:>10,.0f}   "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
