"""Soak: ImagePhashDedup with 5% of bundles failing once must give the same output as a clean run.

    python benchmarks/soak_retries.py [--records 100000] [--backend ray|state|both]
        [--failure-rate 0.05] [--bundle-size 1000] [--sources N] [--seed 0] [IMAGE_DIR ...]

Input: ``--sources`` pictures (default records/100, at most 1000) cut by make_web_set.py from the
photos in IMAGE_DIR (default ../shared/images beside the repository) and shrunk to 128-256 px, so that 100k records
take minutes on 2 cores. Each gives a JPEG plus two near copies with other bytes: a PNG of its
pixels as PIL decodes them and a quality-60 re-encode (~40% and ~80% of these hash differently from
their JPEG: PIL decodes JPEG unlike the hasher). Records ``{"id", "image"}`` pick blobs at random
(each at least once: ~33 copies at 100k); 0.2% get a broken image; the list is shuffled.

Per backend: an untimed warm-up, a clean run, then a faulty run of the same input, all on the
BundleBasedDirectRunner, the local runner that retries a failed bundle (4 attempts; the FnApiRunner
fails the job). It makes one bundle per Create, kept by every later step, hence one Create per
``--bundle-size`` records, flattened. The faulty run fails a bundle's first attempt with
probability ``--failure-rate`` (by a hash of the seed, the site and the bundle's first id) at three
sites: the hashing step; the dedup step before its backend call (Ray: before a batch's claims are
sent; state: before the state is read); and after it (Ray: in ``RayDedupDoFn._route``, once the
actors answered; state: once the record's state was written). Each site fails a bundle once at
most, so no bundle runs out of attempts. Ray starts before the runs; each run has its own actors.

Checks, per run, against a brute-force oracle (hash_images on each distinct blob): every input id
comes out exactly once; failed = what the oracle cannot hash; one kept record per hash and kept
hashes = the oracle's; each record carries its oracle hash; each duplicate points at its hash's
kept id. Which id is kept (the first claim processed) depends on the order the runner takes the
bundles in, which Beam leaves open and which varies from run to run, so the runs' kept ids are
compared but not required to match. Beam's counters are not used: this runner keeps only each
step's first bundle in them. Prints wall times (building + running the pipeline), records/s and
PASS/FAIL; exits 1 on a mismatch.
"""
from __future__ import annotations

import argparse
import functools
import glob
import hashlib
import io
import json
import logging
import os
import pathlib
import platform
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict

import apache_beam as beam
from PIL import Image

import beam_phash
from beam_phash import ImagePhashDedup
from beam_phash.exact.ray_dofns import RayDedupDoFn
from beam_phash.exact.state_backend import StateDedupDoFn
from beam_phash.hashing import HashBatchDoFn
from beam_phash.records import Hashed
import make_web_set

HASH = dict(algorithm="phash", hash_size=16)


def make_records(args):
    """Distinct blobs (3 per source picture, plus broken ones) and the shuffled records."""
    with tempfile.TemporaryDirectory(prefix="soak-web-") as web:
        make_web_set.main([*args.images, "--out", web, "--count", str(args.sources),
                           "--seed", str(args.seed)])
        rng = random.Random(args.seed)
        blobs = []
        for path in sorted(pathlib.Path(web).iterdir()):
            with Image.open(path) as im:
                im = im.convert("RGB")
            im.thumbnail((rng.randint(128, 256),) * 2)
            jpeg, png, requality = io.BytesIO(), io.BytesIO(), io.BytesIO()
            im.save(jpeg, "JPEG", quality=90)
            Image.open(io.BytesIO(jpeg.getvalue())).save(png, "PNG")
            Image.open(io.BytesIO(jpeg.getvalue())).save(requality, "JPEG", quality=60)
            blobs += [jpeg.getvalue(), png.getvalue(), requality.getvalue()]
    broken = [blobs[0][:300], blobs[3][:len(blobs[3]) // 3], b"not an image", b"\x89PNG\r\n\x1a\n"]
    picks = list(range(len(blobs))) + [rng.randrange(len(blobs)) for _ in range(args.records)]
    picks = [len(blobs) + rng.randrange(len(broken)) if rng.random() < 0.002 else b
             for b in picks[:args.records]]
    blobs += broken
    rng.shuffle(picks)
    records = [{"id": f"r{n:07d}", "image": blobs[b]} for n, b in enumerate(picks)]
    return blobs, records, picks


def oracle(blobs, records, picks):
    """id -> hex hash, and the ids that cannot be hashed: every distinct blob hashed on its own."""
    hashes = [h.hex() if isinstance(h, beam_phash.PHash) else None
              for h in beam_phash.hash_images(blobs, **HASH)]
    hash_of = {r["id"]: hashes[b] for r, b in zip(records, picks)}
    return ({i: h for i, h in hash_of.items() if h}, {i for i, h in hash_of.items() if h is None})


class Injector:
    """Raise in the first attempt of some bundles. The runner is in-process and pickles the
    patched classes by reference, so every copy of a DoFn reaches this one object."""

    def __init__(self, rate: float, seed: int):
        self.rate, self.seed = rate, seed
        self.attempts, self.injected = Counter(), Counter()

    def check(self, dofn, site: str, element) -> None:
        state = dofn.__dict__.setdefault("_soak", {})  # reset by the patched start_bundle
        if site not in state:  # first call of this site in this bundle attempt
            first = element[0] if isinstance(element, list) else element  # a batch or a record
            first = (first.owner if isinstance(first, Hashed)  # hashed, for Ray
                     else first[1][0] if isinstance(first, tuple)  # (hash, (owner, record)), for state
                     else first["id"])  # an input record
            attempt = self.attempts[site, first]
            self.attempts[site, first] += 1
            digest = int.from_bytes(hashlib.blake2b(f"{self.seed}|{site}|{first}".encode(),
                                                    digest_size=8).digest(), "big")
            doomed = attempt == 0 and digest / 2**64 < self.rate
            # Fail at a call chosen in the bundle: a batch (of up to 128) or, for state, a record.
            state[site] = [doomed, digest % (32 if site.startswith("state") else 4), 0]
        doomed, at, calls = state[site]
        if doomed and calls == at:
            self.fail(site)
        state[site][2] += 1

    def fail(self, site: str):
        self.injected[site] += 1
        raise RuntimeError(f"injected failure at {site}")

    def leftovers(self, dofn) -> None:
        """A doomed bundle that had fewer calls than chosen fails at its end."""
        for site, (doomed, _, _) in dofn.__dict__.get("_soak", {}).items():
            if doomed:
                self.fail(site + "@end")


def install(inj: Injector, backend: str):
    """Wrap the methods where failures are injected; returns the originals, to put back."""
    dedup = RayDedupDoFn if backend == "ray" else StateDedupDoFn
    saved = [(cls, name, cls.__dict__.get(name)) for cls in (HashBatchDoFn, dedup)
             for name in ("process", "_route", "start_bundle", "finish_bundle")]

    def wrap(cls, name, before=None, after=None):
        orig = getattr(cls, name)

        @functools.wraps(orig)  # keeps the signature Beam inspects (state, timestamp, window)
        def wrapper(self, element, *a, **kw):
            if before:
                inj.check(self, before, element)
            out = list(orig(self, element, *a, **kw))
            if after:
                inj.check(self, after, element)
            yield from out
        setattr(cls, name, wrapper)

    wrap(HashBatchDoFn, "process", before="hash-step")
    if backend == "ray":
        wrap(RayDedupDoFn, "process", before="ray:before-claims")  # before the batch is sent
        wrap(RayDedupDoFn, "_route", before="ray:after-claims")  # the actors have answered
    else:
        wrap(StateDedupDoFn, "process", before="state:before-read", after="state:after-write")
    for cls in (HashBatchDoFn, dedup):
        start, finish = cls.start_bundle, cls.finish_bundle

        @functools.wraps(start)
        def start_bundle(self, start=start):
            self._soak = {}
            return start(self)

        @functools.wraps(finish)
        def finish_bundle(self, finish=finish):
            yield from finish(self) or ()
            inj.leftovers(self)
        cls.start_bundle, cls.finish_bundle = start_bundle, finish_bundle
    return saved


def uninstall(saved):
    for cls, name, value in saved:
        if value is not None:
            setattr(cls, name, value)
        elif name in cls.__dict__:
            delattr(cls, name)


def run(records, backend, args):
    """One pipeline; returns the seconds it took (all, building it) and its output rows
    [tag, id, hash, duplicate_of]."""
    with tempfile.TemporaryDirectory(prefix="soak-out-") as out:
        t0 = time.perf_counter()
        p = beam.Pipeline(runner="BundleBasedDirectRunner")
        chunks = [p | f"Records{i:07d}" >> beam.Create(records[i:i + args.bundle_size], reshuffle=False)
                  for i in range(0, len(records), args.bundle_size)]
        ray_args = {"num_buckets": args.num_buckets} if backend == "ray" else {}
        dedup = ImagePhashDedup(backend=backend, **HASH, **ray_args)
        outputs = chunks | "AllRecords" >> beam.Flatten() | dedup.with_outputs()
        rows = [o | f"Row{tag}" >> beam.Map(
                    lambda r, t: json.dumps([t, r["id"], r["image_phash"], r.get("duplicate_of")]), tag)
                for tag, o in zip(("kept", "duplicates", "failed"), outputs[:3])]
        _ = rows | "AllRows" >> beam.Flatten() | beam.io.WriteToText(os.path.join(out, "rows"))
        built = time.perf_counter() - t0
        # No runner-API round trip (a check that bz2-pickles every transform, the Create data
        # included: it cost more than the job itself).
        result = p.run(test_runner_api=False)
        result.wait_until_finish()
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for f in glob.glob(os.path.join(out, "rows*")) for line in open(f)]
    return wall, built, rows


def check(rows, records, hash_of, failed):
    """Everything the output must satisfy whatever the processing order; returns the problems."""
    problems = []
    seen = Counter(i for _, i, _, _ in rows)
    ids = {r["id"] for r in records}
    if set(seen) != ids or any(n != 1 for n in seen.values()):
        problems.append(f"{len(ids - set(seen))} ids lost, {len(set(seen) - ids)} invented, "
                        f"{sum(n > 1 for n in seen.values())} emitted more than once")
    if {i for t, i, _, _ in rows if t == "failed"} != failed:
        problems.append("the failed records differ from the oracle's")
    kept = defaultdict(list)
    for tag, i, h, _ in rows:
        if tag != "failed" and h != hash_of.get(i):
            problems.append(f"{i} carries hash {h}, the oracle says {hash_of.get(i)}")
        if tag == "kept":
            kept[h].append(i)
    if set(kept) != set(hash_of.values()):
        problems.append(f"kept hashes: {len(kept)}, oracle: {len(set(hash_of.values()))}")
    problems += [f"hash {h} kept {len(v)} times" for h, v in kept.items() if len(v) != 1]
    problems += [f"{i} points at {d}, kept is {kept.get(h)}" for t, i, h, d in rows
                 if t == "duplicates" and [d] != kept.get(h)]
    return problems, {h: v[0] for h, v in kept.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="*", default=[str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "images")])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--backend", default="both", choices=["ray", "state", "both"])
    ap.add_argument("--failure-rate", type=float, default=0.05)
    ap.add_argument("--bundle-size", type=int, default=1000)
    ap.add_argument("--sources", type=int, help="distinct pictures (default: records/100, 10..1000)")
    ap.add_argument("--num-buckets", type=int, default=4, help="Ray bucket actors")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.sources = args.sources or min(1000, max(10, args.records // 100))
    print(f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, Python "
          f"{platform.python_version()}, Beam {beam.__version__}")
    blobs, records, picks = make_records(args)
    hash_of, failed = oracle(blobs, records, picks)
    print(f"{len(records)} records: {len(blobs)} distinct blobs "
          f"(mean {sum(map(len, blobs)) / len(blobs) / 1024:.1f} KiB), "
          f"{len(set(hash_of.values()))} distinct hashes, {len(failed)} broken; "
          f"{-(-len(records) // args.bundle_size)} bundles of {args.bundle_size}")
    for name in ("apache_beam.runners.direct.executor", "apache_beam.runners.common"):
        # Each failed attempt is logged with its traceback: not the injected ones (counted here).
        logging.getLogger(name).addFilter(lambda record: "injected failure" not in record.getMessage())
    ok = True
    for backend in (["state", "ray"] if args.backend == "both" else [args.backend]):
        if backend == "ray":
            from beam_phash.exact import ray_cluster
            ray_cluster.start_local_ray()  # not timed; each run still starts its own bucket actors
        run(records[:2 * args.bundle_size], backend, args)  # warm-up: first-run costs, not timed
        kept, walls = {}, {}
        for mode in ("clean", "faulty"):
            inj = Injector(args.failure_rate, args.seed)
            saved = install(inj, backend) if mode == "faulty" else []
            try:
                walls[mode], built, rows = run(records, backend, args)
            except Exception as e:  # e.g. a bundle that failed 4 times
                print(f"[{backend}] {mode} FAIL: the pipeline failed: {type(e).__name__}: {e}")
                return 1
            finally:
                uninstall(saved)
            problems, kept[mode] = check(rows, records, hash_of, failed)
            injected = ", ".join(f"{s} {n}" for s, n in sorted(inj.injected.items())) or "none"
            print(f"[{backend}] {mode:6s} {walls[mode]:7.1f} s (build {built:.1f} s)  "
                  f"{len(records) / walls[mode]:6.0f} records/s  "
                  f"kept {len(kept[mode])}  injected failures: {sum(inj.injected.values())} ({injected})")
            for problem in problems[:10]:
                print(f"[{backend}] {mode} MISMATCH: {problem}")
            ok &= not problems
            if mode == "faulty" and not inj.injected:
                print(f"[{backend}] FAIL: no failure was injected; use more records, a smaller "
                      "--bundle-size or a higher --failure-rate")
                ok = False
        same = sum(kept["clean"].get(h) == i for h, i in kept["faulty"].items())
        print(f"[{backend}] kept ids equal in both runs for {same} of {len(kept['faulty'])} hashes "
              f"(not required: bundle order); faulty/clean wall {walls['faulty'] / walls['clean']:.2f}x")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
