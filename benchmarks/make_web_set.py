"""Make a benchmark set of web-sized JPEGs (0.1-1 MP) from real photographs.

    python benchmarks/make_web_set.py SOURCE_DIR [SOURCE_DIR ...] --out DIR [--count 1200]

Each output is a random crop of a source photo (``ceil(count / photos)`` crops of each, in sorted
order, so the last photos go unused when that does not divide evenly), resized to 0.1-1 megapixels and saved as JPEG at
quality 70-92 (a fifth of them progressive, a few grayscale), as images come from the web. The
sources are read recursively (.jpg/.jpeg/.png/.webp). Deterministic for a given --seed. Every output is
a distinct picture: no crop is used twice.
"""
from __future__ import annotations

import argparse
import pathlib
import random
import sys

from PIL import Image, ImageOps

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def sources(dirs) -> list[pathlib.Path]:
    found = sorted(p for d in dirs for p in pathlib.Path(d).rglob("*") if p.suffix.lower() in SUFFIXES)
    if not found:
        raise SystemExit(f"no photos under {', '.join(map(str, dirs))}")
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--count", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    photos = sources(args.sources)
    args.out.mkdir(parents=True, exist_ok=True)
    per_photo = -(-args.count // len(photos))
    total = made = used = 0
    for path in photos:
        if made == args.count:
            break
        with Image.open(path) as im:
            im.draft("RGB", (im.width // 2, im.height // 2))  # huge wallpapers: a DCT-scaled decode
            src = ImageOps.exif_transpose(im).convert("RGB")
        w, h = src.size
        used += 1
        for _ in range(min(per_photo, args.count - made)):
            # A random crop of 40-100% of each side, then a web size of 0.1-1 MP.
            cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            crop = src.crop((x, y, x + cw, y + ch))
            scale = min(1.0, (rng.uniform(0.1e6, 1.0e6) / (cw * ch)) ** 0.5)
            img = crop.resize((max(16, int(cw * scale)), max(16, int(ch * scale))), Image.Resampling.BILINEAR)
            if rng.random() < 0.05:
                img = img.convert("L")
            target = args.out / f"web_{made:05d}.jpg"
            img.save(target, "JPEG", quality=rng.randint(70, 92), progressive=rng.random() < 0.2)
            total += target.stat().st_size
            made += 1
    print(f"{made} JPEGs from the first {used} of {len(photos)} photos in {args.out} ({total / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
