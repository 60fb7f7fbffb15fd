"""End to end: the main job (DirectRunner, Ray backend) against bare hash_images on the same files.

    python benchmarks/bench_pipeline.py FOLDER [--backend ray|state] [extra Beam flags ...]

1. Reads every image in FOLDER into memory and times ``hash_images`` on all cores (best of 3):
   the ceiling, with no framework at all.
2. Starts the embedded Ray first (so its start-up is not counted), then runs
   ``pipelines.dedup_images`` on FOLDER and times the pipeline run (reading the files with Beam's
   fileio, batching, hashing, the backend round trips and the Parquet writes; no report).
3. Prints both rates and their ratio (target: the pipeline reaches at least 0.5x the ceiling).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

import beam_phash

SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=pathlib.Path)
    ap.add_argument("--backend", default="ray", choices=["ray", "state"])
    ap.add_argument("--hash-size", type=int, default=16)
    args, beam_args = ap.parse_known_args(argv)
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise SystemExit(f"no images in {args.folder}")
    blobs = [p.read_bytes() for p in files]
    print(f"{len(files)} images, {sum(map(len, blobs)) / 2**20:.0f} MiB; {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")

    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        beam_phash.hash_images(blobs, hash_size=args.hash_size)
        best = min(best, time.perf_counter() - t0)
    ceiling = len(blobs) / best
    print(f"hash_images, all cores:        {ceiling:8.0f} images/s")

    from pipelines import dedup_images

    if args.backend == "ray":
        from beam_phash import ray_cluster
        ray_cluster.start_local_ray()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as out:
        t0 = time.perf_counter()
        code = dedup_images.main(["--input", str(args.folder), "--output", out, "--backend", args.backend,
                                  "--hash-size", str(args.hash_size), "--no-report", *beam_args])
        wall = time.perf_counter() - t0
        summary = json.loads(pathlib.Path(out, "summary.json").read_text())
    if code != 0:
        raise SystemExit(f"the job failed with exit code {code}")
    rate = summary["inputs"] / wall
    print(f"pipeline ({args.backend} backend), end to end: {rate:8.0f} images/s "
          f"({summary['inputs']} records in {wall:.1f} s, {summary['kept']} kept)")
    print(f"ratio pipeline / hash_images:  {rate / ceiling:8.2f}x (target >= 0.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
