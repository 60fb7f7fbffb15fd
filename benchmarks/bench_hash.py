"""Hashing throughput, measured side by side in one run on the same files.

    python benchmarks/bench_hash.py FOLDER [--hash-size 16] [--repeat 3] [--limit N]

Prints images/s (of the best run and of the median run) for: beam-phash at 1 thread and at all
cores, imagehash.phash on PIL, and the JPEG decode floor (PIL's DCT-scaled decode,
Image.draft('L', (32, 32)), no hashing), then the ratios between them, of the best runs and of
the median runs. All inputs are read into memory first; only decoding and hashing are timed.
"""
from __future__ import annotations

import argparse
import io
import os
import pathlib
import platform
import statistics
import sys
import time

import beam_phash

SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def rates(fn, n_items: int, repeat: int) -> tuple[float, float]:
    """Images per second of the fastest of `repeat` runs, and of their median run."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_items / min(times), n_items / statistics.median(times)


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

    measured = {
        "beam-phash, 1 thread": rates(ours(1), n, args.repeat),
        f"beam-phash, {os.cpu_count()} threads": rates(ours(None), n, args.repeat),
        f"imagehash.phash(hash_size={args.hash_size}), PIL": rates(pil_imagehash, n, args.repeat),
        "JPEG decode floor (PIL draft to 32x32, no hash)": rates(decode_floor, n, args.repeat),
    }
    width = max(map(len, measured))
    print(f"\n{'':<{width}}  images/s   median     ({args.algorithm}, hash_size {args.hash_size}, "
          f"best and median of {args.repeat}, {errors} undecodable)")
    for name, (best, median) in measured.items():
        print(f"{name:<{width}}  {best:9.1f}  {median:9.1f}")
    (one, one_m), (alln, alln_m), (ih, ih_m), (floor, floor_m) = measured.values()
    # The ratios of the best runs, and of the median runs: one fast floor run on a shared machine
    # moves the first, not the second.
    print("\nratios (best; median):")
    print(f"  1 thread / imagehash        {one / ih:6.2f}x  {one_m / ih_m:6.2f}x")
    print(f"  1 thread / decode floor     {one / floor:6.2f}x  {one_m / floor_m:6.2f}x")
    print(f"  all cores / 1 thread        {alln / one:6.2f}x  {alln_m / one_m:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
