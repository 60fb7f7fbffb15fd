"""Near-duplicate quality of the hash: distances of edited copies against distances between
distinct photos, so a faster decoder can be shown not to blur the two together.

    python benchmarks/bench_quality.py SOURCE_DIR [SOURCE_DIR ...] [--hash-size 16] [--limit 120]

Each source photo (recursively, .jpg/.jpeg/.png; one per photo, so every pair is distinct) is
decoded with PIL, brought to a web size (longest side 800 px) and re-encoded as JPEG quality 90:
the "original". Its edits are then hashed against it. Prints, per edit, the mean, 95th
percentile and maximum Hamming distance to the original and the share of copies whose hash is
identical (what exact mode catches), and for all pairs of distinct originals
the minimum, 1st percentile and mean distance. A good hash keeps every edit's maximum well below
the distinct pairs' minimum.
"""
from __future__ import annotations

import argparse
import io
import itertools
import sys

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

import beam_phash
from make_web_set import sources


def web_size(path, fit: int = 800) -> Image.Image:
    """The photo upright, in RGB, resized (LANCZOS) to fit `fit` x `fit` px (larger or smaller):
    the "original" before JPEG q90. `fit` 0 keeps the photo's own size."""
    with Image.open(path) as im:
        if fit:
            im.draft("RGB", (2 * fit, 2 * fit))
        upright = ImageOps.exif_transpose(im).convert("RGB")
    return ImageOps.contain(upright, (fit, fit), Image.Resampling.LANCZOS) if fit else upright


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


EDITS = {
    "resize 50%": lambda im: jpeg(im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)),
    "resize to 256 px": lambda im: jpeg(ImageOps.contain(im, (256, 256), Image.Resampling.LANCZOS)),
    "JPEG quality 30": lambda im: jpeg(im, 30),
    "JPEG quality 70": lambda im: jpeg(im, 70),
    "brightness +15%": lambda im: jpeg(ImageEnhance.Brightness(im).enhance(1.15)),
    "PNG re-encode": lambda im: _png(im),
    # The original file's own pixels, stored again: what exact mode should still call identical.
    "original as PNG": lambda im: _png(_decoded(jpeg(im))),
    "original at q95": lambda im: jpeg(_decoded(jpeg(im)), 95),
}


def _decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--hash-size", type=int, default=16)
    ap.add_argument("--algorithm", default="phash")
    ap.add_argument("--limit", type=int, default=120)
    args = ap.parse_args(argv)
    paths = sources(args.sources)[: args.limit]
    kw = {"algorithm": args.algorithm, "hash_size": args.hash_size}
    originals, dists = [], {name: [] for name in EDITS}
    for p in paths:
        im = web_size(p)
        base = beam_phash.hash_image(jpeg(im), **kw)
        originals.append(base)
        for name, edit in EDITS.items():
            dists[name].append(beam_phash.hash_image(edit(im), **kw) - base)
    bits = len(originals[0])
    print(f"{len(paths)} photos, {args.algorithm} at hash_size {args.hash_size} = {bits} bits")
    print(f"{'edit':<20} {'mean':>6} {'p95':>6} {'max':>6} {'same':>6}")
    for name, d in dists.items():
        same = np.mean(np.array(d) == 0)
        print(f"{name:<20} {np.mean(d):6.1f} {np.percentile(d, 95):6.1f} {max(d):6d} {same:6.0%}")
    pairs = [a - b for a, b in itertools.combinations(originals, 2)]
    print(f"{'distinct pairs':<20} min {min(pairs)}, 1st percentile {np.percentile(pairs, 1):.1f}, "
          f"mean {np.mean(pairs):.1f} ({len(pairs)} pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
