"""Make a cached benchmark set of >= 1M perceptual hashes of real images, with real near-duplicates.

    python benchmarks/make_hash_set.py [SOURCE_DIR ...] [--count 1000000] [--seed 0]
        [--near-fraction 0.1] [--threads 1] [--out out/hashes]

Each record is a distinct random crop of a source photo (each side 20-70% of the photo's short
side, aspect ratio 0.6-1.6; photos picked in proportion to their area), resized to 96-192 px on
its long side, encoded as JPEG quality 90 (the fastest encoding to make and hash) and hashed with
beam_phash.hash_images(algorithm="phash", hash_size=16). A --near-fraction of the records is
instead an edited copy of an earlier crop: halved in size, re-encoded at JPEG quality 70,
brightened by 10% or blurred (Gaussian, radius 1). The sources (default ../shared/images from the
repo root) are read recursively (.jpg/.jpeg/.png) and downscaled once to at most 1024 px. Images
are made, hashed and dropped chunk by chunk; deterministic for a given --seed.

Writes OUT/phash16_<count>.npz (np.savez, uncompressed), with the arrays
    hashes    uint8 (n, 32)  row i = bytes(PHash) of record i
    pixels    uint32 (n,)    width * height of the hashed image
    original  int64 (n,)     -1, or the row of the record an edited copy was made from
    edit      uint8 (n,)     0 = none, else 1 + the index of the edit in meta["edits"]
    meta      str            JSON: seed, count, source, near_fraction, algorithm, hash_size, edits
If that file already holds the requested count and seed, nothing is done.
"""
from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import pathlib
import random
import sys
import time

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

import beam_phash

ROOT = pathlib.Path(__file__).resolve().parent.parent
SUFFIXES = {".jpg", ".jpeg", ".png"}
ALGORITHM, HASH_SIZE = "phash", 16
HASH_BYTES = HASH_SIZE * HASH_SIZE // 8
MAX_SIDE = 1024
CHUNK = 4096
PROGRESS_EVERY = 100_000
EDITS = ("half_size", "jpeg_q70", "brightness_+10%", "gaussian_blur_r1")


def load_photos(dirs) -> list[Image.Image]:
    """Every photo under `dirs`, as RGB, at most MAX_SIDE px on its long side."""
    paths = sorted(p for d in dirs for p in pathlib.Path(d).rglob("*") if p.suffix.lower() in SUFFIXES)
    if not paths:
        raise SystemExit(f"no photos under {', '.join(map(str, dirs))}")
    photos = []
    for path in paths:
        with Image.open(path) as im:
            im.draft("RGB", (MAX_SIDE, MAX_SIDE))  # big JPEG wallpapers: a DCT-scaled decode
            photo = ImageOps.exif_transpose(im).convert("RGB")
        photo.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        photos.append(photo)
    return photos


def random_crop(rng: random.Random, photos, cum_area) -> tuple[int, ...]:
    """(photo, left, top, right, bottom, width, height): a crop box and the size to resize it to."""
    k = rng.choices(range(len(photos)), cum_weights=cum_area)[0]
    w, h = photos[k].size
    side, aspect = rng.uniform(0.2, 0.7) * min(w, h), rng.uniform(0.6, 1.6)
    cw, ch = max(1, min(w, round(side * aspect**0.5))), max(1, min(h, round(side / aspect**0.5)))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    scale = rng.randint(96, 192) / max(cw, ch)
    return k, x, y, x + cw, y + ch, max(8, round(cw * scale)), max(8, round(ch * scale))


def pack(spec: tuple[int, ...]) -> int:
    """A crop spec as one int (every field after the first is below 2**11), for a compact set."""
    key = 0
    for v in spec:
        key = key << 11 | v
    return key


def render(photos, spec, edit: int) -> bytes:
    """The encoded image of a crop `spec`, with edit code `edit` (0 = none) applied."""
    k, x0, y0, x1, y1, w, h = spec
    img = photos[k].resize((w, h), Image.Resampling.BOX, box=(x0, y0, x1, y1))
    quality = 90
    if edit == 1:
        img = img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BOX)
    elif edit == 2:
        quality = 70
    elif edit == 3:
        img = ImageEnhance.Brightness(img).enhance(1.1)
    elif edit == 4:
        img = img.filter(ImageFilter.GaussianBlur(1))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def cached(path: pathlib.Path, count: int, seed: int) -> bool:
    if not path.exists():
        return False
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
    return meta["count"] == count and meta["seed"] == seed


def report(hashes, original, edit, wall: float, failed: int) -> None:
    distinct = len(np.unique(hashes.view(np.dtype((np.void, HASH_BYTES))).ravel()))
    print(f"done: {len(hashes):,} hashes in {wall:.0f} s, {distinct:,} distinct, {failed} failures skipped")
    copies = np.flatnonzero(original >= 0)
    dist = np.bitwise_count(hashes[copies] ^ hashes[original[copies]]).sum(axis=1, dtype=np.int64)
    for name, sel in [("all edits", slice(None))] + [(e, edit[copies] == i + 1) for i, e in enumerate(EDITS)]:
        d = dist[sel]
        print(f"  {name:>17}: {len(d):>7,} copies, within 16 bits {np.mean(d <= 16):6.1%}, "
              f"within 28 bits {np.mean(d <= 28):6.1%}, median {np.median(d):.0f} bits")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="*", default=[str(ROOT / ".." / "shared" / "images")])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--near-fraction", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "out" / "hashes")
    args = ap.parse_args(argv)
    path = args.out / f"phash{HASH_SIZE}_{args.count}.npz"
    if cached(path, args.count, args.seed):
        print(f"{path} already holds {args.count:,} hashes for seed {args.seed}")
        return 0

    start = time.perf_counter()
    rng = random.Random(args.seed)
    photos = load_photos(args.sources)
    cum_area = list(itertools.accumulate(p.width * p.height for p in photos))
    print(f"{len(photos)} photos loaded in {time.perf_counter() - start:.1f} s")

    hashes = np.zeros((args.count, HASH_BYTES), np.uint8)
    pixels = np.zeros(args.count, np.uint32)
    original = np.full(args.count, -1, np.int64)
    edit = np.zeros(args.count, np.uint8)
    specs = np.zeros((args.count, 7), np.int32)  # each row's crop, to make edited copies from
    seen: set[int] = set()  # the crops made so far, each packed into one int
    n = failed = 0
    next_progress = PROGRESS_EVERY
    while n < args.count:
        # Plan a chunk. An original is either a row already written (< n) or a base record earlier
        # in this chunk (n + its position), so the first chunk holds edited copies too.
        size = min(CHUNK, args.count - n)
        c_spec, c_orig, c_edit = [], np.full(size, -1, np.int64), np.zeros(size, np.uint8)
        for j in range(size):
            if n + j > 0 and rng.random() < args.near_fraction:
                while True:
                    o = rng.randrange(n + j)
                    if (original[o] if o < n else c_orig[o - n]) < 0:
                        break
                c_orig[j], c_edit[j] = o, rng.randint(1, len(EDITS))
                c_spec.append(tuple(specs[o].tolist()) if o < n else c_spec[o - n])
            else:
                spec = random_crop(rng, photos, cum_area)
                while (key := pack(spec)) in seen:
                    spec = random_crop(rng, photos, cum_area)
                seen.add(key)
                c_spec.append(spec)
        results = beam_phash.hash_images(
            (render(photos, s, int(e)) for s, e in zip(c_spec, c_edit)),
            algorithm=ALGORITHM, hash_size=HASH_SIZE, threads=args.threads,
        )
        # Skip failures, and copies of failed originals; then number the survivors from n.
        ok = np.array([not isinstance(r, Exception) for r in results])
        for j in np.flatnonzero(c_orig >= n):
            ok[j] &= ok[c_orig[j] - n]
        failed += size - int(ok.sum())
        row = n + np.cumsum(ok) - 1
        local = c_orig >= n
        c_orig[local] = row[c_orig[local] - n]
        keep = np.flatnonzero(ok)
        m = len(keep)
        hashes[n:n + m] = np.frombuffer(b"".join(bytes(results[j]) for j in keep), np.uint8).reshape(m, HASH_BYTES)
        pixels[n:n + m] = [results[j].width * results[j].height for j in keep]
        original[n:n + m], edit[n:n + m] = c_orig[keep], c_edit[keep]
        specs[n:n + m] = [c_spec[j] for j in keep]
        n += m
        if n >= next_progress or n == args.count:
            elapsed = time.perf_counter() - start
            print(f"{n:>10,} records, {elapsed:6.0f} s, {n / elapsed:,.0f} records/s", flush=True)
            next_progress += PROGRESS_EVERY

    meta = {
        "seed": args.seed, "count": args.count, "source": [str(s) for s in args.sources],
        "near_fraction": args.near_fraction, "algorithm": ALGORITHM, "hash_size": HASH_SIZE,
        "edits": ["none", *EDITS],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, hashes=hashes, pixels=pixels, original=original, edit=edit, meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)  # no half-written file is ever taken for a cached set
    report(hashes, original, edit, time.perf_counter() - start, failed)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
