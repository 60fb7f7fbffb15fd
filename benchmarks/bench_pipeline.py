"""End to end: the main job (DirectRunner, Ray backend) against bare hash_images on the same files.

    python benchmarks/bench_pipeline.py FOLDER [--backend ray|state] [extra Beam flags ...]

1. Reads every image in FOLDER into memory and times ``hash_images`` on all cores (best of 3):
   the ceiling, with no framework at all.
2. Starts the embedded Ray first (so its start-up is not counted), then runs
   ``pipelines.dedup_images`` on FOLDER twice with one named backend and times each run (Beam's
   start-up, reading the files with fileio, batching, hashing, the backend round trips and the
   Parquet writes; no report): cold, which includes starting the 16 bucket-actor processes, and
   with the actors already running.
3. Prints the rates and their ratio to the ceiling (target: at least 0.5x).
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
from bench_hash import SUFFIXES



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

    def run(extra):
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as out:
            t0 = time.perf_counter()
            code = dedup_images.main(["--input", str(args.folder), "--output", out, "--backend", args.backend,
                                      "--hash-size", str(args.hash_size), "--no-report", *extra, *beam_args])
            wall = time.perf_counter() - t0
            if code != 0:
                raise SystemExit(f"the job failed with exit code {code}")
            return json.loads(pathlib.Path(out, "summary.json").read_text())["inputs"] / wall

    if args.backend == "ray":
        from beam_phash.exact import ray_cluster
        from beam_phash.exact.ray_client import RayDedupBackend

        address = ray_cluster.start_local_ray()
        name = f"bench-{os.getpid()}"
        try:
            cold = run(["--backend-name", name])
            # The same job again: the bucket actors are up, the same ids claim the same hashes.
            warm = run(["--backend-name", name])
        finally:
            RayDedupBackend(address, name, 16).connect().release()
        print(f"pipeline, ray backend, cold (starts 16 bucket actors): {cold:8.0f} images/s  {cold / ceiling:.2f}x")
        print(f"pipeline, ray backend, actors running:                  {warm:8.0f} images/s  {warm / ceiling:.2f}x")
    else:
        rate = run([])
        print(f"pipeline, state backend:                               {rate:8.0f} images/s  {rate / ceiling:.2f}x")
    print("(ratios to hash_images on all cores; target >= 0.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
