"""End to end: the main job (DirectRunner, Ray backend) against bare hash_images on the same files.

    python benchmarks/bench_pipeline.py FOLDER [--backend ray|state] [--shards] [extra Beam flags ...]
    python benchmarks/bench_pipeline.py FOLDER --cold [--count 1000] [--repeat 3] \
        [--imagededup-python out/imagededup-venv/bin/python] [extra job flags ...]

Rate mode (the default; the issue's target is for 10,000 images or more, `make bench-10k`):

1. Reads every image in FOLDER into memory and times ``hash_images`` on all cores (best of 3):
   the ceiling, with no framework at all.
2. Runs ``python -m pipelines.dedup_images --no-report`` on FOLDER as a fresh subprocess: fully
   cold, the interpreter's start-up, the imports, the embedded Ray and the actors included, timed
   from spawn to exit.
3. Starts the embedded Ray in this process (so its start-up is not counted), then runs
   ``pipelines.dedup_images`` in-process on FOLDER twice with one named backend and times each run
   (Beam's start-up, reading the files with fileio, batching, hashing, the backend round trips and
   the Parquet writes; no report): "actors starting", which includes starting the bucket-actor
   processes, and with the actors already running.
4. Times ``hash_images`` again (the load of a shared machine moves the ceiling too) and prints
   the rates and their ratio to the higher ceiling (target: at least 0.75x).

Cold-start mode (``--cold``, `make bench-cold`): the default job against imagededup, as a user
would run each, on the first ``--count`` images of FOLDER (hard links, or copies, in
``out/bench-cold-COUNT``). In one run and alternately, ``--repeat`` times each, it spawns
(a) ``python -m pipelines.dedup_images --input DIR --output TMPDIR`` (the default job, report
included) and (b) imagededup's venv python running ``PHash().find_duplicates(image_dir=DIR)``,
and times each from spawn to exit. It prints every run, the median and best of each and the ratio
ours / imagededup (target: at most 1.25x). imagededup lives in a venv of its own
(`make bench-imagededup`), never in the project's.

CPU time of a spawned run (steadier than wall time on a shared machine, but no target): the user
and system seconds of the spawned process and all its descendants, a lower bound, the larger of
two: the sum of each process's last sample in /proc, and ``os.wait4``'s figure (exact, but only for
the spawned process and the children it waited for).

Peak memory of a spawned run: a sampler thread lists /proc every ``--sample-interval`` seconds,
follows the spawned process and every process it (or its children) started, which includes Ray's
GCS, raylet and worker processes, and reads each one's VmHWM (the kernel's peak resident set of
that process, shared libraries and mapped files included). It reports the largest single process
(the larger of that and wait4's figure below where that is the spawned process's own), the tree's
anonymous memory (the largest sum of RssAnon over the tree at one sample: private memory, without
the shared libraries, mapped files and Ray's shared-memory object store that every process maps)
and the number of processes. A process that lives less than one interval may be missed, and the
tree figure is a sample, not a peak. Also printed: the ``ru_maxrss`` that ``os.wait4`` returns for
the spawned process, the largest peak of it and of the descendants it waited for; Ray's daemons are
not waited for, so that figure (like ``RUSAGE_CHILDREN``) misses them. A forked process inherits
its launcher's peak in that figure (``peak_memory``), so it is the spawned process's own only when
larger than this launcher's peak (read after the run, so at least the one the fork passed on);
otherwise it is printed as "n/a" and not used.

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
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import beam_phash
from bench_hash import SUFFIXES
from peak_memory import own_peak_bytes, status_bytes



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


REPO = pathlib.Path(__file__).resolve().parent.parent
IMAGEDEDUP_PYTHON = REPO / "out" / "imagededup-venv" / "bin" / "python"


def machine_info() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.machine()}, {os.cpu_count()} cores, load average {load} (1, 5, 15 min), "
            f"Python {platform.python_version()}")


def measure_ceiling(blobs, hash_size: int) -> float:
    """hash_images on all cores, images/s, best of 3."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        beam_phash.hash_images(blobs, hash_size=hash_size)
        best = min(best, time.perf_counter() - t0)
    return len(blobs) / best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=pathlib.Path)
    ap.add_argument("--backend", default=None, choices=["ray", "state"],
                    help="default: ray (in --cold mode: the job's own default, no flag passed)")
    ap.add_argument("--hash-size", type=int, default=None, help="default 16 (--cold: the job's default)")
    ap.add_argument("--shards", action="store_true",
                    help="also run the job on the same images packed into WebDataset shards")
    ap.add_argument("--samples-per-shard", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=None,
                    help="--shards: runs of each input (best is kept; default 2); "
                         "--cold: runs of each tool (default 3); otherwise: runs with the actors "
                         "running (the median is compared; default 1)")
    ap.add_argument("--cold", action="store_true",
                    help="cold start: the default job as a fresh process against imagededup's PHash")
    ap.add_argument("--count", type=int, default=1000, help="--cold: the first COUNT images of FOLDER")
    ap.add_argument("--imagededup-python", type=pathlib.Path, default=IMAGEDEDUP_PYTHON,
                    help="--cold: the python of the venv with imagededup (make bench-imagededup)")
    ap.add_argument("--sample-interval", type=float, default=0.2,
                    help="seconds between the samples of a spawned run's processes (peak memory)")
    args, beam_args = ap.parse_known_args(argv)
    if args.cold:
        return compare_cold(args, beam_args)
    args.backend = args.backend or "ray"
    args.hash_size = args.hash_size or 16
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise SystemExit(f"no images in {args.folder}")
    blobs = [p.read_bytes() for p in files]
    print(f"{len(files)} images, {sum(map(len, blobs)) / 2**20:.0f} MiB; {machine_info()}")

    ceiling = measure_ceiling(blobs, args.hash_size)
    print(f"hash_images, all cores:        {ceiling:8.0f} images/s")

    job_flags = ["--backend", args.backend, "--hash-size", str(args.hash_size), "--no-report"]
    if not args.shards:
        # Fully cold first, before this process starts a Ray of its own.
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as out:
            res = spawn_job([str(args.folder.resolve())], out, [*job_flags, *beam_args], args.sample_interval)
        print(f"fresh process: {res.wall:.1f} s; {res.memory()}")
        results = [(f"{args.backend} backend, fresh process (interpreter, imports, Ray, all)", res.inputs / res.wall)]

    from pipelines import dedup_images

    def run(extra, source=("--input", str(args.folder))):
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as out:
            t0 = time.perf_counter()
            code = dedup_images.main([*source, "--output", out, *job_flags, *extra, *beam_args])
            wall = time.perf_counter() - t0
            if code != 0:
                raise SystemExit(f"the job failed with exit code {code}")
            return json.loads(pathlib.Path(out, "summary.json").read_text())["inputs"] / wall

    if args.shards:
        args.repeat = args.repeat or 2
        return compare_shards(args, files, run)
    if args.backend == "ray":
        from beam_phash.exact import ray_cluster
        from beam_phash.exact.ray_client import RayDedupBackend

        address = ray_cluster.start_local_ray()
        name = f"bench-{os.getpid()}"
        try:
            cold = run(["--backend-name", name])
            # The same job again: the bucket actors are up, the same ids claim the same hashes.
            warm = [run(["--backend-name", name]) for _ in range(args.repeat or 1)]
        finally:
            RayDedupBackend(address, name, 16).connect().release()
        results.append(("ray backend, in-process, Ray up, actors starting", cold))
        if len(warm) > 1:
            print("in-process, actors running, each run: " + ", ".join(f"{r:.0f}" for r in warm) + " images/s")
        results.append((f"ray backend, in-process, actors running{', median' if len(warm) > 1 else ''}",
                        statistics.median(warm)))
    else:
        results.append(("state backend, in-process", run([])))
    # Again, after the jobs: on a shared machine the ceiling moves too, and the higher one gives
    # the lower, safer ratio.
    after = measure_ceiling(blobs, args.hash_size)
    print(f"hash_images, all cores:        {ceiling:8.0f} images/s before the jobs, {after:.0f} after; "
          f"ratios to the higher")
    ceiling = max(ceiling, after)
    for label, rate in results:
        print(f"pipeline, {label + ':':62s} {rate:8.0f} images/s  {rate / ceiling:.2f}x")
    print(f"(ratios to hash_images on all cores; target >= 0.75x on 10,000 images or more; "
          f"this run: {len(files)} images; load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    return 0


class Run:
    """One spawned run: wall time from spawn to exit, its output's counts, and the peak memory of
    the process tree it started."""

    def __init__(self, wall, inputs, detail, peak_process, peak_tree, processes, maxrss, cpu):
        self.wall, self.inputs, self.detail = wall, inputs, detail
        self.peak_process, self.peak_tree, self.processes, self.maxrss = peak_process, peak_tree, processes, maxrss
        self.cpu = cpu

    def memory(self) -> str:
        return (f"CPU {self.cpu:.1f} s, largest process {self.peak_process / 2**20:.0f} MiB, "
                f"tree anon {self.peak_tree / 2**20:.0f} MiB in {self.processes} processes, "
                + (f"wait4 maxrss {self.maxrss / 2**20:.0f} MiB" if self.maxrss else
                   "wait4 maxrss n/a (not above the launcher's own peak, which a forked child inherits)"))


_TICKS = os.sysconf("SC_CLK_TCK")


class TreeSampler(threading.Thread):
    """Follows a process and all its descendants through /proc (see the module's docstring)."""

    def __init__(self, root: int, interval: float):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.ours = {root}       # descendants seen (a pid stays ours after it is re-parented)
        self.known = set()       # pids already classified
        self.hwm = {}            # pid -> peak resident bytes seen
        self.cpu = {}            # pid -> user + system seconds at its last sample
        self.peak_tree = 0
        self.stop = threading.Event()

    @staticmethod
    def _ppid(pid: str) -> int:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])

    def sample(self) -> None:
        listing = {int(p) for p in os.listdir("/proc") if p.isdigit()}
        # A pid that vanished may come back as another process: classify it again then.
        self.known &= listing
        new = listing - self.known
        parents = {}
        for pid in new:
            try:
                parents[pid] = self._ppid(str(pid))
            except (OSError, ValueError, IndexError):
                pass
        self.known |= new
        grew = True
        while grew:  # a child and its parent may both be new
            grew = False
            for pid, ppid in list(parents.items()):
                if ppid in self.ours:
                    self.ours.add(pid)
                    del parents[pid]
                    grew = True
        tree = 0
        for pid in self.ours & listing:
            try:
                memory = status_bytes(str(pid), ("RssAnon", "VmHWM"))
            except OSError:
                continue
            self.hwm[pid] = max(self.hwm.get(pid, 0), memory.get("VmHWM", 0))
            tree += memory.get("RssAnon", 0)
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    stat = f.read()
                fields = stat[stat.rindex(b")") + 2:].split()
                self.cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
            except (OSError, ValueError, IndexError):
                pass
        self.peak_tree = max(self.peak_tree, tree)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.sample()
            except OSError:
                pass
            self.stop.wait(self.interval)


def spawn(cmd, log_path: pathlib.Path, interval: float, cwd=None, env=None):
    """Runs cmd as a fresh process; (wall seconds, exit code, peak largest process, peak tree sum,
    processes seen, wait4 maxrss in bytes or 0 where it may be the launcher's, CPU seconds of the tree)."""
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop.set()
    sampler.join()
    # The last sample may precede a process's final growth; wait4's figure is exact for the
    # spawned process (and the children it waited for) where it exceeds the launcher's peak,
    # which the fork passed on to it.
    maxrss = usage.ru_maxrss * 1024
    # (this launcher's peak read after the run: at least what it was at the fork)
    maxrss = maxrss if maxrss > own_peak_bytes() else 0
    peak = max(max(sampler.hwm.values(), default=0), maxrss)
    # CPU seconds of the tree, two lower bounds: the sum of each process's last sample (misses
    # what came after it) and wait4's (exact, but only the spawned process and the children it
    # waited for, so not Ray's daemons).
    cpu = max(sum(sampler.cpu.values()), usage.ru_utime + usage.ru_stime)
    return wall, proc.returncode, peak, sampler.peak_tree, len(sampler.hwm), maxrss, cpu


def _fail(what: str, code: int, log_path: pathlib.Path) -> None:
    tail = log_path.read_text(errors="replace").splitlines()[-20:]
    raise SystemExit(f"{what} failed with exit code {code}; the end of its output:\n" + "\n".join(tail))


def spawn_job(inputs, out: str, flags, interval: float) -> Run:
    """``python -m pipelines.dedup_images --input ... --output OUT FLAGS`` as a fresh process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pipelines.dedup_images"]
    for path in inputs:
        cmd += ["--input", path]
    cmd += ["--output", out, *flags]
    log_path = pathlib.Path(out + ".log")
    try:
        wall, code, peak, tree, n, maxrss, cpu = spawn(cmd, log_path, interval, cwd=REPO, env=env)
        if code != 0:
            _fail("the job", code, log_path)
    finally:
        log_path.unlink(missing_ok=True)
    summary = json.loads(pathlib.Path(out, "summary.json").read_text())
    detail = f"{summary.get('kept')} kept, {summary.get('duplicates')} duplicates"
    return Run(wall, summary["inputs"], detail, peak, tree, n, maxrss, cpu)


IMAGEDEDUP_SCRIPT = """\
import json, sys
from imagededup.methods import PHash
found = PHash().find_duplicates(image_dir=sys.argv[1])
with open(sys.argv[2], "w") as f:
    json.dump({"images": len(found), "with_duplicates": sum(1 for v in found.values() if v)}, f)
"""


def spawn_imagededup(python: pathlib.Path, folder: pathlib.Path, interval: float) -> Run:
    """imagededup's ``PHash().find_duplicates(image_dir=FOLDER)`` in a fresh process of its venv."""
    with tempfile.TemporaryDirectory(prefix="bench-imagededup-") as tmp:
        log_path, result = pathlib.Path(tmp, "log"), pathlib.Path(tmp, "result.json")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        wall, code, peak, tree, n, maxrss, cpu = spawn(
            [str(python), "-c", IMAGEDEDUP_SCRIPT, str(folder), str(result)], log_path, interval, env=env)
        if code != 0:
            _fail("imagededup", code, log_path)
        found = json.loads(result.read_text())
    detail = f"{found['with_duplicates']} images with duplicates"
    return Run(wall, found["images"], detail, peak, tree, n, maxrss, cpu)


def cold_folder(files, count: int) -> pathlib.Path:
    """out/bench-cold-COUNT: the first COUNT images, hard-linked (copied across file systems);
    reused when it already holds exactly those files."""
    target = REPO / "out" / f"bench-cold-{count}"
    chosen = files[:count]
    wanted = {p.name: p.stat().st_size for p in chosen}
    if target.is_dir():
        have = {p.name: p.stat().st_size for p in target.iterdir()}
        if have == wanted:
            return target
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for p in chosen:
        try:
            os.link(p.resolve(), target / p.name)
        except OSError:
            shutil.copyfile(p, target / p.name)
    return target


def compare_cold(args, extra) -> int:
    """The default job, cold, against imagededup's PHash, alternately, --repeat times each."""
    repeat = args.repeat or 3
    if not args.imagededup_python.exists():
        raise SystemExit(f"no {args.imagededup_python}: run `make bench-imagededup` first "
                         "(a venv of its own with `pip install imagededup`)")
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if len(files) < args.count:
        raise SystemExit(f"{args.folder} has {len(files)} images, fewer than --count {args.count}")
    folder = cold_folder(files, args.count)
    blobs = [p.read_bytes() for p in sorted(folder.iterdir())]  # also warms the page cache for both
    print(f"cold start: {len(blobs)} images in {folder}, {sum(map(len, blobs)) / 2**20:.0f} MiB; {machine_info()}")
    ceiling = measure_ceiling(blobs, args.hash_size or 16)
    del blobs
    print(f"hash_images, all cores, in memory: {ceiling:.0f} images/s ({args.count / ceiling:.2f} s for the set)")
    flags = []
    if args.backend:
        flags += ["--backend", args.backend]
    if args.hash_size:
        flags += ["--hash-size", str(args.hash_size)]
    flags += extra
    print(f"ours:       {sys.executable} -m pipelines.dedup_images --input DIR --output TMPDIR {' '.join(flags)}".rstrip())
    print(f"imagededup: {args.imagededup_python} -c 'PHash().find_duplicates(image_dir=DIR)'")
    runs = {"ours": [], "imagededup": []}
    for i in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
            r = spawn_job([str(folder)], str(pathlib.Path(tmp, "out")), flags, args.sample_interval)
        runs["ours"].append(r)
        print(f"  run {i + 1} ours:       {r.wall:6.2f} s  ({r.inputs} inputs, {r.detail}; {r.memory()})")
        r = spawn_imagededup(args.imagededup_python, folder, args.sample_interval)
        runs["imagededup"].append(r)
        print(f"  run {i + 1} imagededup: {r.wall:6.2f} s  ({r.inputs} images, {r.detail}; {r.memory()})")
    stats = {}
    for name, rs in runs.items():
        walls = [r.wall for r in rs]
        stats[name] = (statistics.median(walls), min(walls))
        peak = max(rs, key=lambda r: r.peak_process)
        print(f"{name:10s} median {stats[name][0]:6.2f} s, best {stats[name][1]:6.2f} s of {repeat}, "
              f"median CPU {statistics.median(r.cpu for r in rs):.1f} s; "
              f"peak: largest process {peak.peak_process / 2**20:.0f} MiB, "
              f"tree anon {max(r.peak_tree for r in rs) / 2**20:.0f} MiB, up to {max(r.processes for r in rs)} processes")
    median = stats["ours"][0] / stats["imagededup"][0]
    best = stats["ours"][1] / stats["imagededup"][1]
    cpu = statistics.median(r.cpu for r in runs["ours"]) / statistics.median(r.cpu for r in runs["imagededup"])
    print(f"ours / imagededup: {median:.2f}x the wall time (medians), {best:.2f}x (bests); target <= 1.25x: "
          f"{'met' if median <= 1.25 else 'not met'}; {cpu:.2f}x the CPU time (medians)")
    print(f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) on {os.cpu_count()} cores")
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
        # The shards were just written: their writeback to disk would compete with the first runs.
        os.sync()
        size = sum(p.stat().st_size for p in shard_dir.iterdir())
        print(f"{count} shards of up to {args.samples_per_shard} samples (jpg + txt + json), {size / 2**20:.0f} MiB")
        inputs = {"files": ("--input", str(args.folder)),
                  "shards": ("--input", str(shard_dir), "--input-format", "webdataset")}
        extra = {mode: [] for mode in inputs}
        release = None
        if args.backend == "ray":
            from beam_phash.exact import ray_cluster
            from beam_phash.exact.ray_client import RayDedupBackend

            address = ray_cluster.start_local_ray()
            # A backend of its own for each input: the ids differ (paths, sample keys), and in a
            # shared one every run of the other input would find its hashes taken and output
            # duplicates instead of kept records.
            names = {mode: f"bench-{mode}-{os.getpid()}" for mode in inputs}
            extra = {mode: ["--backend-name", name] for mode, name in names.items()}
            release = lambda: [RayDedupBackend(address, name, 16).connect().release()  # noqa: E731
                               for name in names.values()]
            for mode, source in inputs.items():
                run(extra[mode], source)  # warm-up: starts the bucket actors, claims the hashes
        best = {k: 0.0 for k in inputs}
        cpu = {k: float("inf") for k in inputs}
        try:
            for _ in range(args.repeat):
                for mode, source in inputs.items():
                    before = _cpu_seconds()
                    rate = run(extra[mode], source)
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
