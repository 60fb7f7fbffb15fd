"""Hashing throughput, measured side by side in one run on the same files.

    python benchmarks/bench_hash.py FOLDER [--hash-size 16] [--repeat 3] [--limit N]

Prints images/s for: beam-phash at 1 thread and at all cores, imagehash.phash on PIL, and the
JPEG decode floor (PIL's DCT-scaled decode, Image.draft('L', (32, 32)), no hashing), then the
ratios between them. All inputs are read into memory first; only decoding and hashing are timed.
"""
from __future__ import annotations

import argparse
import io
import os
import pathlib
import platform
import sys
import time

import beam_phash

SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def best_rate(fn, n_items: int, repeat: int) -> float:
    """Images per second of the fastest of `repeat` runs."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_items / best


def read_folder(folder: pathlib.Path, limit: int = 0) -> list[bytes]:
    """The bytes of the images under `folder` (recursively, by suffix, sorted), the first `limit`
    of them when it is not 0."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    if limit:
        files = files[:limit]
    if not files:
        raise SystemExit(f"no images under {folder}")
    return [p.read_bytes() for p in files]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=pathlib.Path)
    ap.add_argument("--hash-size", type=int, default=16)
    ap.add_argument("--algorithm", default="phash")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="use at most N files (0: all)")
    args = ap.parse_args(argv)

    from PIL import Image
    import imagehash

    blobs = read_folder(args.folder, args.limit)
    n = len(blobs)
    mb = sum(map(len, blobs)) / 1e6
    print(f"{n} images, {mb:.1f} MB, from {args.folder}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")

    kw = dict(algorithm=args.algorithm, hash_size=args.hash_size)
    errors = sum(not isinstance(h, beam_phash.PHash) for h in beam_phash.hash_images(blobs, **kw))

    def ours(threads):
        return lambda: beam_phash.hash_images(blobs, threads=threads, **kw)

    def pil_imagehash():
        for b in blobs:
            imagehash.phash(Image.open(io.BytesIO(b)), hash_size=args.hash_size)

    def decode_floor():
        for b in blobs:
            im = Image.open(io.BytesIO(b))
            im.draft("L", (32, 32))
            im.convert("L")

    rates = {
        "beam-phash, 1 thread": best_rate(ours(1), n, args.repeat),
        f"beam-phash, {os.cpu_count()} threads": best_rate(ours(None), n, args.repeat),
        f"imagehash.phash(hash_size={args.hash_size}), PIL": best_rate(pil_imagehash, n, args.repeat),
        "JPEG decode floor (PIL draft to 32x32, no hash)": best_rate(decode_floor, n, args.repeat),
    }
    width = max(map(len, rates))
    print(f"\n{'':<{width}}  images/s   ({args.algorithm}, hash_size {args.hash_size}, best of {args.repeat}, "
          f"{errors} undecodable)")
    for name, r in rates.items():
        print(f"{name:<{width}}  {r:9.1f}")
    one, alln, ih, floor = rates.values()
    print("\nratios:")
    print(f"  1 thread / imagehash        {one / ih:6.2f}x")
    print(f"  1 thread / decode floor     {one / floor:6.2f}x")
    print(f"  all cores / 1 thread        {alln / one:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
