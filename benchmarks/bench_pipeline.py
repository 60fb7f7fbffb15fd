"""End to end: the main job (DirectRunner, Ray backend) against bare hash_images on the same files.

    python benchmarks/bench_pipeline.py FOLDER [--backend ray|state] [--shards] [extra Beam flags ...]

1. Reads every image in FOLDER into memory and times ``hash_images`` on all cores (best of 3):
   the ceiling, with no framework at all.
2. Starts the embedded Ray first (so its start-up is not counted), then runs
   ``pipelines.dedup_images`` on FOLDER twice with one named backend and times each run (Beam's
   start-up, reading the files with fileio, batching, hashing, the backend round trips and the
   Parquet writes; no report): cold, which includes starting the 16 bucket-actor processes, and
   with the actors already running.
3. Prints the rates and their ratio to the ceiling (target: at least 0.5x).

With ``--shards``: packs the same images into WebDataset shards (``KEY.jpg`` + ``KEY.txt`` +
``KEY.json``, ``--samples-per-shard`` a shard, in a temporary directory), then runs the job on the
files and on the shards (``--input-format webdataset``) alternately, ``--repeat`` times each, and
prints the best rate of each, the least CPU time an image of each (steadier than wall time on a
shared machine), and their ratios (target: shards at least as fast as files). With the
Ray backend every run uses one named backend started by a warm-up run, so no run pays for starting
the actors.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import io
import sys
import tarfile
import tempfile
import time

import beam_phash
from bench_hash import SUFFIXES



def make_shards(files, directory: pathlib.Path, per_shard: int) -> int:
    """The images as WebDataset shards, with a caption and a JSON member per sample, as
    img2dataset writes them. Returns the number of shards."""
    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    shards = 0
    for start in range(0, len(files), per_shard):
        with tarfile.open(directory / f"{shards:05d}.tar", "w") as tar:
            for i, path in enumerate(files[start:start + per_shard], start):
                key = f"{i:09d}"
                add(tar, f"{key}{path.suffix.lower()}", path.read_bytes())
                add(tar, f"{key}.txt", path.stem.encode())
                add(tar, f"{key}.json", json.dumps({"key": key, "source": path.name}).encode())
        shards += 1
    return shards


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=pathlib.Path)
    ap.add_argument("--backend", default="ray", choices=["ray", "state"])
    ap.add_argument("--hash-size", type=int, default=16)
    ap.add_argument("--shards", action="store_true",
                    help="also run the job on the same images packed into WebDataset shards")
    ap.add_argument("--samples-per-shard", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2, help="--shards: runs of each input (best is kept)")
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

    def run(extra, source=("--input", str(args.folder))):
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as out:
            t0 = time.perf_counter()
            code = dedup_images.main([*source, "--output", out, "--backend", args.backend,
                                      "--hash-size", str(args.hash_size), "--no-report", *extra, *beam_args])
            wall = time.perf_counter() - t0
            if code != 0:
                raise SystemExit(f"the job failed with exit code {code}")
            return json.loads(pathlib.Path(out, "summary.json").read_text())["inputs"] / wall

    if args.shards:
        return compare_shards(args, files, run)
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


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads: the in-process runner and the Rust pool) and of
    its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def compare_shards(args, files, run) -> int:
    """Files vs. the same images in shards, alternately, best of ``--repeat`` runs each."""
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        shard_dir = pathlib.Path(tmp)
        count = make_shards(files, shard_dir, args.samples_per_shard)
        size = sum(p.stat().st_size for p in shard_dir.iterdir())
        print(f"{count} shards of up to {args.samples_per_shard} samples (jpg + txt + json), {size / 2**20:.0f} MiB")
        inputs = {"files": ("--input", str(args.folder)),
                  "shards": ("--input", str(shard_dir), "--input-format", "webdataset")}
        extra, release = [], None
        if args.backend == "ray":
            from beam_phash.exact import ray_cluster
            from beam_phash.exact.ray_client import RayDedupBackend

            address = ray_cluster.start_local_ray()
            name = f"bench-{os.getpid()}"
            extra = ["--backend-name", name]
            release = lambda: RayDedupBackend(address, name, 16).connect().release()  # noqa: E731
            run(extra)  # warm-up: starts the bucket actors
        best = {k: 0.0 for k in inputs}
        cpu = {k: float("inf") for k in inputs}
        try:
            for _ in range(args.repeat):
                for mode, source in inputs.items():
                    before = _cpu_seconds()
                    rate = run(extra, source)
                    used = (_cpu_seconds() - before) / len(files) * 1000
                    print(f"  {mode:6s} run: {rate:8.0f} images/s, {used:.2f} ms CPU an image")
                    best[mode] = max(best[mode], rate)
                    cpu[mode] = min(cpu[mode], used)
        finally:
            if release is not None:
                release()
    for mode, label in (("files", "image files:      "), ("shards", "WebDataset shards:")):
        print(f"pipeline, {args.backend} backend, {label} {best[mode]:8.0f} images/s, {cpu[mode]:.2f} ms CPU "
              f"an image (best of {args.repeat})")
    print(f"shards / files: {best['shards'] / best['files']:.2f}x the rate, {cpu['shards'] / cpu['files']:.2f}x the CPU "
          "(target: rate >= 1x; on a shared machine the CPU ratio is the steadier figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
