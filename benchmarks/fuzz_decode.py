"""Long fuzz run of the decode-and-hash entry point (CI runs a short one: tests/test_fuzz_decode.py).

    python benchmarks/fuzz_decode.py [SEED_DIR ...] [--seconds 600] [--out out/fuzz]

Seeds are the images in SEED_DIR (default tests/data) plus PNG, GIF, WebP and progressive-JPEG
re-encodings of them. Each round mutates a seed (bit flips, byte overwrites, truncation, inserted
or repeated runs, header bytes) and hashes it alone. Before each call the input is written to
OUT/current.bin, so a crash leaves its reproducer behind; inputs slower than 1 s are kept as
OUT/slow-N.bin. At the end it prints the counts, the slowest input and the peak resident memory.
"""
from __future__ import annotations

import argparse
import io
import pathlib
import random
import resource
import sys
import time

from PIL import Image

import beam_phash

ROOT = pathlib.Path(__file__).resolve().parent.parent


def seeds(dirs) -> list[bytes]:
    out = []
    for d in dirs:
        for p in sorted(pathlib.Path(d).iterdir()):
            if p.suffix.lower() not in {".jpg", ".jpeg", ".png", ".gif", ".webp"}:
                continue
            data = p.read_bytes()
            out.append(data)
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB")
                im.thumbnail((160, 160))
                for fmt, kw in (("PNG", {}), ("GIF", {}), ("WEBP", {"quality": 60}),
                                ("JPEG", {"progressive": True, "quality": 75})):
                    buf = io.BytesIO()
                    im.save(buf, fmt, **kw)
                    out.append(buf.getvalue())
    return out


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 10)):
        if not data:
            break
        at = rng.randrange(len(data))
        kind = rng.randrange(6)
        if kind == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[at] = rng.choice([0, 0xFF, 0x7F, 0x80, 0xD9, 0xDA, rng.randrange(256)])
        elif kind == 2:
            del data[at:]
        elif kind == 3:
            data[at:at] = rng.randbytes(rng.randint(1, 64))
        elif kind == 4:
            data[at:at] = data[at:at + rng.randint(1, 512)] * rng.randint(1, 4)
        else:
            data[at % 64] = rng.randrange(256)
    return bytes(data)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seed_dirs", nargs="*", default=[str(ROOT / "tests" / "data")])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "out" / "fuzz")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    corpus = seeds(args.seed_dirs)
    current = args.out / "current.bin"
    counts = {"hashed": 0, "rejected": 0}
    slowest = (0.0, b"")
    slow = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        data = mutate(rng, rng.choice(corpus))
        current.write_bytes(data)
        started = time.perf_counter()
        (result,) = beam_phash.hash_images([data], threads=1)
        elapsed = time.perf_counter() - started
        counts["hashed" if isinstance(result, beam_phash.PHash) else "rejected"] += 1
        if elapsed > slowest[0]:
            slowest = (elapsed, data)
        if elapsed > 1.0:
            slow += 1
            (args.out / f"slow-{slow}.bin").write_bytes(data)
    current.unlink(missing_ok=True)
    total = sum(counts.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{total} inputs in {args.seconds:.0f} s from {len(corpus)} seeds: {counts['hashed']} hashed, "
          f"{counts['rejected']} rejected with ImageDecodeError, 0 crashes")
    print(f"slowest input {slowest[0] * 1000:.1f} ms ({len(slowest[1])} bytes); {slow} over 1 s; "
          f"peak resident memory {peak:.0f} MiB")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
