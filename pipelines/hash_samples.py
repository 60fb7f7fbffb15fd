"""Hash the sample photos and print their hashes and pairwise Hamming distances.

    python -m pipelines.hash_samples [FILE_OR_DIR ...] [--algorithm phash] [--hash-size 16]

Without paths, the sample photos that ship with the job code (``pipelines/sample_data``).
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import beam_phash

DEFAULT_INPUT = pathlib.Path(__file__).resolve().parent / "sample_data"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def collect(paths: list[str]) -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for p in map(pathlib.Path, paths):
        if not p.exists():
            raise FileNotFoundError(p)
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(p)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", default=[str(DEFAULT_INPUT)])
    parser.add_argument("--algorithm", default="phash", choices=beam_phash.ALGORITHMS)
    parser.add_argument("--hash-size", type=int, default=16)
    args = parser.parse_args(argv)
    try:
        files = collect(args.inputs)
    except FileNotFoundError as e:
        parser.error(f"no such file or directory: {e}")
    if not files:
        parser.error("no image files found in " + ", ".join(args.inputs))
    hashes = beam_phash.hash_images([f.read_bytes() for f in files],
                                    algorithm=args.algorithm, hash_size=args.hash_size)
    bits = beam_phash.hash_bits(args.algorithm, args.hash_size)
    print(f"{len(files)} images, {args.algorithm} at hash_size {args.hash_size} = {bits} bits\n")
    width = max(len(f.name) for f in files)
    for f, h in zip(files, hashes):
        print(f"{f.name:<{width}}  {h}" if isinstance(h, beam_phash.PHash) else f"{f.name:<{width}}  ERROR {h}")
    ok = [(f, h) for f, h in zip(files, hashes) if isinstance(h, beam_phash.PHash)]
    pairs = sorted(((h1 - h2, f1.name, f2.name) for i, (f1, h1) in enumerate(ok) for f2, h2 in ok[i + 1:]))
    print(f"\nclosest pairs (Hamming distance of {bits} bits):")
    for d, a, b in pairs[:5]:
        print(f"  {d:4d}  {a} ~ {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
