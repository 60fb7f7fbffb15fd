"""Near-duplicate dedup at scale, on hashes of real images (``make_hash_set.py``'s cached set).

    python benchmarks/bench_near_dup.py kernel [--count 1000000] [--max-distance 16 28] [--check]
    python benchmarks/bench_near_dup.py job [--count 1000000] [--max-distance 16] [beam options]
    python benchmarks/bench_near_dup.py group [--count 10000] [--group 9000 18000 36000] [beam options]
    python benchmarks/bench_near_dup.py against [--count 1000000] [--earlier 10000000] [--max-distance 16] [--runs alone,reference,state] [beam options]

``kernel``: the Rust banded search alone, on one core, over every band of the chosen layout, on
the distinct hashes of the set. Counts beyond the cached set are made by flipping about 50
random bits of its hashes (distinct images with the real hashes' bit statistics). ``--check`` compares
the pairs with the brute-force all-pairs oracle (all cores; minutes at 1M).

``job``: the whole job on the DirectRunner with ``--hash-column``, from Parquet read to the three
outputs written; prints wall time and the peak resident memory of this process (``VmHWM``: the
data set's preparation on a first run included).

``group``: the whole job (as ``job``, each run a fresh process) on ``--count`` random distinct hashes
plus one tight group of ``--group`` records: copies of one hash with 1-8 random bits flipped, so
every two of them lie within 16 bits. Exact recall makes the search verify every pair of the
group's distinct hashes (its time grows with their square); only a spanning forest of them
leaves the search, so its memory should grow with the group, not with its pairs. Prints each
run's wall time, peak resident memory, and that memory over ``--group 0`` (which always runs
first) per distinct hash of the group.

``against``: ``--count`` new records deduplicated alone, against ``--earlier`` hashes as a
``--reference`` (the cached ``job`` set of that size), and against the same hashes as a near-mode
``--state`` (built directly with ``beam_phash.near.state``; each run gets a fresh copy, since a run
adds its kept hashes). 90% of the new records are distinct images (a real hash with about 50 bits
flipped), 10% copies of a random earlier hash with 0-8 bits flipped, which every run against the
earlier hashes must match. Each run is a fresh process: prints wall time, its ratio to ``alone``
and the run's peak resident memory.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from beam_phash import _native
from peak_memory import own_peak_bytes

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent / "out"
SET = OUT / "hashes"
PART_ROWS = 100_000
RESULT = "against-result: "


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
            a, b, d, c, *_ = _native.near_search(hashes, ids.view(np.uint8), hash_bytes=32, bits=256,
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


def _write_parts(dst: pathlib.Path, hashes: np.ndarray, id_format: str) -> None:
    """Parquet parts of PART_ROWS rows: ``id`` (``id_format % row``) and ``image_phash`` (hex),
    written into a temporary folder renamed to ``dst`` at the end (an interrupted run leaves no
    half set behind)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i in range(0, len(hashes), PART_ROWS):
        part = hashes[i:i + PART_ROWS]
        pq.write_table(pa.table({"id": [id_format % j for j in range(i, i + len(part))],
                                 "image_phash": [h.tobytes().hex() for h in part]}),
                       tmp / f"part-{i // PART_ROWS:04d}.parquet")
    tmp.rename(dst)


def parquet_set(count: int) -> pathlib.Path:
    """The cached Parquet set of ``load(count)`` (ids ``r%09d``), made when missing."""
    src = SET / f"parquet_{count}"
    if not src.exists():
        print(f"writing {src}", flush=True)
        _write_parts(src, load(count), "r%09d")
    return src


def job(args, beam_args) -> int:
    from pipelines import dedup_images

    k = args.max_distance[0]
    src = parquet_set(args.count)
    out = OUT / f"bench_near_job_{args.count}_{k}"
    started = time.perf_counter()
    code = dedup_images.main(["--input", str(src), "--input-format", "parquet", "--hash-column", "image_phash",
                              "--max-distance", str(k), "--output", str(out), "--no-report", *beam_args])
    wall = time.perf_counter() - started
    peak = own_peak_bytes() / 2**20
    print(f"job: {args.count:,} hashes at k={k} in {wall:.1f} s; peak RSS {peak:,.0f} MiB (this process)")
    return code


NEAR_SHARE = 10     # one new record in NEAR_SHARE is a near-copy of an earlier hash
NEAR_MAX_FLIPS = 8  # ... with 0..NEAR_MAX_FLIPS random bits flipped


def planted(count: int) -> int:
    """How many of ``count`` new records are near-copies of earlier hashes."""
    return count // NEAR_SHARE


def new_set(count: int, earlier: int) -> pathlib.Path:
    """The cached new records (ids ``n%09d``), made when missing: 90% distinct images (a random
    real hash with each bit flipped with probability 50/256), 10% near-copies of a random hash of
    ``load(earlier)`` with 0..8 random bits flipped, in random order. Deterministic."""
    dst = SET / f"new_{count}_vs_{earlier}"
    if dst.exists():
        return dst
    print(f"writing {dst}", flush=True)
    rng = np.random.default_rng(1)
    n_near = planted(count)
    n_new = count - n_near
    real = load(1_000_000)
    out = np.empty((count, 32), dtype=np.uint8)
    chunk = 100_000
    for lo in range(0, n_new, chunk):
        n = min(chunk, n_new - lo)
        flips = np.packbits(rng.random((n, 256)) < 50 / 256, axis=1, bitorder="little")
        out[lo:lo + n] = real[rng.integers(0, len(real), n)] ^ flips
    del real
    earlier_hashes = load(earlier)
    for lo in range(n_new, count, chunk):
        n = min(chunk, count - lo)
        base = earlier_hashes[rng.integers(0, len(earlier_hashes), n)]
        how_many = rng.integers(0, NEAR_MAX_FLIPS + 1, n)
        # per row, the first how_many of NEAR_MAX_FLIPS distinct random bit positions
        positions = rng.random((n, 256)).argsort(axis=1)[:, :NEAR_MAX_FLIPS]
        mask = np.zeros((n, 256), dtype=bool)
        rows = np.repeat(np.arange(n), NEAR_MAX_FLIPS)
        mask[rows, positions.ravel()] = (np.arange(NEAR_MAX_FLIPS)[None, :] < how_many[:, None]).ravel()
        out[lo:lo + n] = base ^ np.packbits(mask, axis=1, bitorder="little")
    del earlier_hashes
    _write_parts(dst, out[rng.permutation(count)], "n%09d")
    return dst


GROUP_MAX_FLIPS = 8  # a group's copies: 1..GROUP_MAX_FLIPS bits flipped, so any two within 16 bits


def group_set(count: int, size: int) -> tuple[pathlib.Path, int]:
    """The cached Parquet set (ids ``g%09d``) of ``count`` uniformly random hashes (distinct
    images: two lie about 128 bits apart) and ``size`` copies of one random hash with
    1..GROUP_MAX_FLIPS random bits flipped, in random order; and the group's distinct hashes.
    Deterministic."""
    background = np.random.default_rng(1).integers(0, 256, (count, 32), dtype=np.uint8)  # the same for every size
    rng = np.random.default_rng(2)
    centre = rng.integers(0, 256, 32, dtype=np.uint8)
    mask = np.zeros((size, 256), dtype=bool)
    for row, flips in enumerate(rng.integers(1, GROUP_MAX_FLIPS + 1, size)):
        mask[row, rng.choice(256, flips, replace=False)] = True
    group = centre ^ np.packbits(mask, axis=1, bitorder="little")
    distinct = len(np.unique(group.view(np.dtype((np.void, 32))).ravel()))
    dst = SET / f"group_{count}_{size}"
    if not dst.exists():
        print(f"writing {dst}", flush=True)
        hashes = np.concatenate([background, group])
        _write_parts(dst, hashes[rng.permutation(len(hashes))], "g%09d")
    return dst, distinct


def group(args, beam_args) -> int:
    k = args.max_distance[0]
    if k < 2 * GROUP_MAX_FLIPS:
        raise SystemExit(f"group: --max-distance must be at least {2 * GROUP_MAX_FLIPS}, the group's diameter")
    sizes = [0] + [s for s in args.group if s > 0]
    print(f"group: {args.count:,} random distinct hashes plus one tight group, k={k}; "
          f"{platform.machine()}", flush=True)
    rows, ok = [], True
    for size in sizes:
        src, distinct = group_set(args.count, size)
        argv = ["--input", str(src), "--input-format", "parquet", "--hash-column", "image_phash",
                "--max-distance", str(k), "--no-report", "--output", str(OUT / f"bench_group_{size}")]
        done = subprocess.run([sys.executable, __file__, "against-one", *argv, *beam_args],
                              stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
        found = next((json.loads(line[len(RESULT):]) for line in done.stdout.splitlines()
                      if line.startswith(RESULT)), None)
        if done.returncode != 0 or found is None:
            print(f"--- group of {size:,}: FAILED (exit code {done.returncode})", flush=True)
            ok = False
            continue
        # All the group's copies but one (identical hashes collapse; one distinct hash is kept).
        good = found["adds_up"] and found["duplicates"] == size - (size > 0)
        ok = ok and good
        rows.append((size, distinct, distinct * (distinct - 1) // 2, found, good))
        print(f"--- group of {size:,}: {found['wall_seconds']:.1f} s, peak RSS {found['peak_self_mib']:,.0f} MiB",
              flush=True)
    base = rows[0][3]["peak_self_mib"] if rows and rows[0][0] == 0 else None
    print()
    head = (f"{'group':>8} {'distinct':>9} {'pairs':>15} {'wall s':>8} {'peak RSS MiB':>13} {'B/hash':>7} "
            f"{'duplicates':>11}")
    print(head)
    print("-" * len(head))
    for size, distinct, pairs, r, good in rows:
        per = f"{(r['peak_self_mib'] - base) * 2**20 / distinct:,.0f}" if base is not None and distinct else "-"
        print(f"{size:>8,} {distinct:>9,} {pairs:>15,} {r['wall_seconds']:>8.1f} {r['peak_self_mib']:>13,.0f} "
              f"{per:>7} {r['duplicates']:>11,}{'' if good else '  WRONG'}")
    return 0 if ok else 1


STATE_ROWS = 1_000_000
STATE_RUN = "bench-earlier"


def state_set(earlier: int) -> pathlib.Path:
    """A near-mode state directory holding ``load(earlier)`` (labels ``e%09d``), written directly
    with the library's segment and commit functions in parts of STATE_ROWS rows; made when its
    manifest does not already list ``earlier`` rows of this hash version."""
    from beam_phash.near.fixed import STATE, fixed_batch
    from beam_phash.near.state import commit, open_state, write_segment

    dst = SET / f"state_{earlier}"
    if dst.exists():
        try:
            manifest = open_state(str(dst), "phash", 16, 256, create=False)
        except ValueError:  # a cached state of another hash version: made again
            manifest = {"rows": None}
        if manifest["rows"] == earlier:
            return dst
        shutil.rmtree(dst)
    print(f"writing {dst}", flush=True)
    manifest = open_state(str(dst), "phash", 16, 256, create=True)
    hashes = load(earlier)
    entries = []
    for part, lo in enumerate(range(0, earlier, STATE_ROWS)):
        keys = hashes[lo:lo + STATE_ROWS]
        labels = [f"e{j:09d}" for j in range(lo, lo + len(keys))]
        entries.append(write_segment(str(dst), STATE_RUN, part, fixed_batch(keys, STATE, labels)))
    commit(str(dst), STATE_RUN, manifest["generation"], manifest, entries)
    return dst


def against(args, beam_args) -> int:
    k = args.max_distance[0]
    runs = [r for r in args.runs.split(",") if r]
    unknown = set(runs) - {"alone", "reference", "state"}
    if unknown:
        raise SystemExit(f"unknown run(s) {', '.join(sorted(unknown))}: choose from alone, reference, state")
    new = new_set(args.count, args.earlier)
    reference = parquet_set(args.earlier) if "reference" in runs else None
    state = state_set(args.earlier) if "state" in runs else None
    n_near = planted(args.count)
    print(f"against: {args.count:,} new records ({n_near:,} planted near-copies, 0-{NEAR_MAX_FLIPS} bits "
          f"from an earlier hash), {args.earlier:,} earlier hashes, k={k}; {platform.machine()}", flush=True)
    results = {}
    for name in runs:
        argv = ["--input", str(new), "--input-format", "parquet", "--hash-column", "image_phash",
                "--max-distance", str(k), "--no-report", "--output", str(OUT / f"bench_against_{name}")]
        copy = None
        if name == "reference":
            argv += ["--reference", str(reference), "--reference-hash-column", "image_phash",
                     "--reference-id-column", "id"]
        elif name == "state":
            copy = pathlib.Path(tempfile.mkdtemp(prefix="bench_against_state_", dir=OUT))
            shutil.copytree(state, copy / "state")
            argv += ["--state", str(copy / "state")]
        print(f"--- {name}: dedup_images {' '.join(argv + beam_args)}", flush=True)
        try:
            done = subprocess.run([sys.executable, __file__, "against-one", *argv, *beam_args],
                                  stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
        finally:
            if copy is not None:
                shutil.rmtree(copy, ignore_errors=True)
        found = None
        for line in done.stdout.splitlines():
            if line.startswith(RESULT):
                found = json.loads(line[len(RESULT):])
            else:
                print(line)
        if done.returncode != 0 or found is None:
            print(f"--- {name}: FAILED (exit code {done.returncode})", flush=True)
            results[name] = None
            continue
        results[name] = found
        print(f"--- {name}: {found['wall_seconds']:.1f} s, peak RSS {found['peak_self_mib']:,.0f} MiB",
              flush=True)

    alone = (results.get("alone") or {}).get("wall_seconds")
    print()
    print(f"{args.count:,} new vs {args.earlier:,} earlier, k={k}")
    head = f"{'run':<10} {'wall s':>8} {'x alone':>8} {'peak RSS MiB':>13} " \
           f"{'kept':>10} {'duplicates':>10} {'matched earlier':>16}"
    print(head)
    print("-" * len(head))
    for name in runs:
        r = results[name]
        if r is None:
            print(f"{name:<10} FAILED")
            continue
        ratio = f"{r['wall_seconds'] / alone:.2f}" if alone else "-"
        print(f"{name:<10} {r['wall_seconds']:>8.1f} {ratio:>8} {r['peak_self_mib']:>13,.0f} "
              f"{r['kept']:>10,} {r['duplicates']:>10,} {r['matched_earlier']:>16,}")
    ok = all(results[n] is not None and results[n]["adds_up"] for n in runs)
    for name in ("reference", "state"):
        r = results.get(name)
        if r is not None:
            good = r["matched_earlier"] >= n_near
            ok = ok and good
            print(f"sanity {name}: {r['matched_earlier']:,} duplicates matched earlier hashes, "
                  f">= {n_near:,} planted near-copies: {'PASS' if good else 'FAIL'}")
    for name in ("reference", "state"):
        r = results.get(name)
        if r is not None and alone:
            verdict = "met" if r["wall_seconds"] <= 2 * alone else "NOT met"
            print(f"target {name}: {r['wall_seconds']:.1f} s <= 2 x {alone:.1f} s alone: {verdict}")
    return 0 if ok else 1


def against_one(argv) -> int:
    """One measured run of ``dedup_images`` in this fresh process; prints one RESULT line."""
    from pipelines import dedup_images

    output = pathlib.Path(argv[argv.index("--output") + 1])
    started = time.perf_counter()
    code = dedup_images.main(argv)
    wall = time.perf_counter() - started
    summary = json.loads((output / "summary.json").read_text()) if code in (0, 1) else {}
    reference = summary.get("reference") or {}
    result = {
        "exit_code": code,
        "wall_seconds": round(wall, 3),
        # Its own peak: ru_maxrss would count the launcher's, which a forked child inherits.
        "peak_self_mib": own_peak_bytes() / 2**20,
        "inputs": summary.get("inputs"),
        "kept": summary.get("kept"),
        "duplicates": summary.get("duplicates"),
        "adds_up": summary.get("adds_up"),
        "state_matches": summary.get("state_matches", 0),
        "reference_matches": reference.get("matches", 0),
        "references": reference.get("references", 0),
        "matched_earlier": summary.get("state_matches", 0) + reference.get("matches", 0),
    }
    print(RESULT + json.dumps(result), flush=True)
    return code


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["against-one"]:
        return against_one(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["kernel", "job", "group", "against"])
    ap.add_argument("--count", type=int, default=None, help="default: 1,000,000 (group: 10,000)")
    ap.add_argument("--max-distance", type=int, nargs="+", default=[16, 28])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--earlier", type=int, default=10_000_000, help="against: earlier hashes")
    ap.add_argument("--runs", default="alone,reference,state", help="against: comma-separated runs")
    ap.add_argument("--group", type=int, nargs="+", default=[9000, 18000, 36000], help="group: sizes of the tight group")
    args, beam_args = ap.parse_known_args(argv)
    if args.count is None:
        args.count = 10_000 if args.what == "group" else 1_000_000
    if args.what == "kernel":
        return kernel(args)
    if args.what == "group":
        return group(args, beam_args)
    return job(args, beam_args) if args.what == "job" else against(args, beam_args)


if __name__ == "__main__":
    sys.exit(main())
