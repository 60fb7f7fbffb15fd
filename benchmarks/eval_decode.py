"""The JPEG decode's share of pHash's distances under the mild edits: the same hash rule on the
pixels of libjpeg-turbo's scaled decode (what beam-phash hashes) and on pixels rebuilt from each
block's low DCT coefficients.

    python benchmarks/eval_decode.py SOURCE_DIR [SOURCE_DIR ...] [--limit N] [--hash-size 16]
        [--markdown PATH]

Why. JPEG q30 is the one mild edit whose p95 stays above 4 bits at pHash 16 (README, *What is
still short*). Part of its distance is the edit itself; this measures the part the decoder adds.
libjpeg-turbo's 1/2 and 1/4 scaled IDCTs (jidctred.c) fold high odd coefficients (3, 5, 7) into
each reduced pixel, and its output is rounded to 8 bits. JPEG q30 quantises those coefficients
to zero where the q90 original keeps them, and at 1/4 scale a rounding step of one grey level is
close to the low-contrast pictures' weak coefficients.

Method. The photos and their edited copies are `eval_near_dup`'s (800 px originals, JPEG q90).
Each file is brought to the reduced size beam-phash decodes it at (the largest 1/d, d in 1, 2, 4,
8, that keeps both sides at least 6n; `HashSpec::working_side`), in three ways:

    libjpeg scaled      Pillow's draft mode: libjpeg-turbo's scaled IDCT, 8-bit (beam-phash's path)
    coefficients, f32   each 8 x 8 block's low (8/d) x (8/d) coefficients, dequantised, and each
                        reduced pixel the mean of the block's low-passed signal over its d x d
                        pixels, in floating point
    coefficients, u8    the same, rounded to 8 bits

The coefficients are recovered from the full-size decode (Pillow, luma only) by an 8 x 8 DCT and
rounding to the file's luma quantisation steps; a decoder that reads them from the file gets the
same values except where the full-size decode clipped at 0 or 255. Each reduced image is then
resampled (Pillow's Lanczos, over the picture's exact extent) onto a 4n x 4n grid and hashed by
a model of pHash's rule (version 8's knee, up to n = 16 since version 10; the DCT; Hadamard
groups of four; `rust_ext/src/hash/phash.rs`). Each decode's model hashes are checked against
beam-phash's own hashes of the same files: the share of files where the two are identical, and
the mean distance between them. The decode beam-phash uses comes close to 100% (hash version 8:
libjpeg scaled, 100%; version 9: coefficients, f32 for the files it reduces and libjpeg at full
size, short of it where the full-size decode clipped or a block is partial, whose coefficients
the model only estimates).

Output. For each decode and mild edit, the p95 and the mean of the distances between copy and
original (bits); then the three closest pairs of distinct originals, which a change of decoder
must not bring closer.
"""
from __future__ import annotations

import argparse
import io
import sys

import numpy as np
from PIL import Image

import beam_phash
from eval_near_dup import EDITS, MILD, make_set, md_table, text_table
from make_web_set import sources

#: pHash's knee (`KNEE_QUANTILE`, `KNEE_SLOPE`, `KNEE_MAX_SIZE` in phash.rs): version 8 on, for
#: hash sizes up to 16 since version 10.
KNEE_QUANTILE, KNEE_SLOPE, KNEE_MAX_SIZE = 0.9, 0.25, 16


def dct_matrix(m: int, orthonormal: bool) -> np.ndarray:
    """Rows: the DCT-II basis of length m, orthonormal (JPEG's) or unnormalised (pHash's, rustdct's)."""
    k, i = np.arange(m)[:, None], np.arange(m)[None, :]
    basis = np.cos(np.pi * k * (2 * i + 1) / (2 * m))
    return basis * np.where(k == 0, np.sqrt(1 / m), np.sqrt(2 / m)) if orthonormal else basis


BLOCK = dct_matrix(8, orthonormal=True)


class PHashModel:
    """pHash (version 10) on a float grid: the knee (n <= 16), the low n x n DCT coefficients
    without the DC term, taken four at a time in order of u² + v² through a 4-point Hadamard
    transform."""

    def __init__(self, n: int):
        self.n = n
        self.dct = dct_matrix(4 * n, orthonormal=False)
        self.order = sorted(range(n * n), key=lambda i: ((i // n) ** 2 + (i % n) ** 2, i))

    def bits(self, grid: np.ndarray) -> np.ndarray:
        g = grid.astype(np.float64)
        if self.n <= KNEE_MAX_SIZE:
            point = np.quantile(g, KNEE_QUANTILE)
            g = np.where(g > point, point + (g - point) * KNEE_SLOPE, g)
        low = (self.dct @ g @ self.dct.T)[: self.n, : self.n].ravel()
        low[0] = 0.0
        sums = []
        for start in range(0, len(self.order), 4):
            group = low[self.order[start:start + 4]]
            if len(group) == 4:
                a, b, c, d = group
                sums += [a + b + c + d, a - b + c - d, a + b - c - d, a - b - c + d]
            else:
                sums += list(group)
        return np.array(sums) >= 0


def denominator(width: int, height: int, side: int) -> int:
    """beam-phash's reduction rule (`decode::reduction`, capped at 1/8 as `jpeg::pick_denominator`)."""
    d = 1
    while d < 8 and -(-width // (2 * d)) >= side and -(-height // (2 * d)) >= side:
        d *= 2
    return d


def libjpeg_scaled(data: bytes, side: int):
    """libjpeg-turbo's scaled decode, luma, 8-bit, and the picture's extent in it."""
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    d = denominator(w, h, side)
    im.draft("L", (w // d, h // d))  # Pillow takes the scale as whole multiples of the request
    if im.size != (-(-w // d), -(-h // d)):
        raise RuntimeError(f"draft gave {im.size} for {w}x{h} at 1/{d}")
    return np.asarray(im.convert("L"), np.float64), (w / d, h / d)


def quantised(data: bytes):
    """Every luma block's quantised coefficients k[a, b, u, v] (natural order), the file's luma
    steps (8 x 8), and the picture's (width, height)."""
    im = Image.open(io.BytesIO(data))
    steps = np.array(im.quantization[0], np.float64).reshape(8, 8)  # natural order
    w, h = im.size
    im.draft("L", im.size)  # luma only, full size
    y = np.asarray(im.convert("L"), np.float64) - 128
    bh, bw = -(-h // 8), -(-w // 8)
    y = np.pad(y, ((0, 8 * bh - h), (0, 8 * bw - w)), mode="edge")  # as the encoder pads
    blocks = y.reshape(bh, 8, bw, 8).transpose(0, 2, 1, 3)
    return np.round(np.einsum("ui,abij,vj->abuv", BLOCK, blocks, BLOCK) / steps), steps, (w, h)


def block_means(k: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Each block's mean (grey levels, less 128) as its rounded DC term gives it."""
    return k[:, :, 0, 0] * steps[0, 0] / 8


def reduced_plane(k: np.ndarray, steps: np.ndarray, size, side: int, means=None):
    """Each block's low (8/d) x (8/d) dequantised coefficients, averaged over each d x d pixel;
    each block's mean replaced by `means` when given. The plane and the picture's extent in it."""
    w, h = size
    d = denominator(w, h, side)
    m = 8 // d
    low = (k[:, :, :m, :m] * steps[:m, :m]).copy()
    if means is not None:
        low[:, :, 0, 0] = means * 8
    bh, bw = k.shape[:2]
    # weights[i, u]: the mean of basis u over reduced pixel i's d samples
    weights = BLOCK[:m].reshape(m, m, d).mean(2).T
    return np.einsum("iu,abuv,jv->aibj", weights, low, weights).reshape(bh * m, bw * m) + 128, (w / d, h / d)


def from_coefficients(data: bytes, side: int, rounded: bool):
    """Each block's low (8/d) x (8/d) dequantised coefficients, averaged over each d x d pixel."""
    pixels, extent = reduced_plane(*quantised(data), side)
    if rounded:
        pixels = np.round(np.clip(pixels, 0, 255))
    return pixels, extent


DECODES = {
    "libjpeg scaled": lambda data, side: libjpeg_scaled(data, side),
    "coefficients, f32": lambda data, side: from_coefficients(data, side, rounded=False),
    "coefficients, u8": lambda data, side: from_coefficients(data, side, rounded=True),
}


def grid(reduced, side: int) -> np.ndarray:
    pixels, (w, h) = reduced
    im = Image.fromarray(pixels.astype(np.float32), "F")
    return np.asarray(im.resize((side, side), Image.Resampling.LANCZOS, box=(0, 0, w, h)), np.float64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    ap.add_argument("--hash-size", type=int, default=16)
    ap.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown")
    args = ap.parse_args(argv)
    photos = make_set(sources(args.sources)[: args.limit])
    n, per = len(photos.names), 1 + len(EDITS)
    model, working = PHashModel(args.hash_size), 6 * args.hash_size
    hashes = {name: np.array([model.bits(grid(decode(f, working), 4 * args.hash_size)) for f in photos.files])
              for name, decode in DECODES.items()}

    built = np.array([np.unpackbits(np.frombuffer(bytes(h), np.uint8), bitorder="little")
                      for h in beam_phash.hash_images(photos.files, algorithm="phash", hash_size=args.hash_size)])
    print(f"{n} photos, {len(photos.files)} files. The model against beam-phash {beam_phash.__version__} "
          f"(hash version {beam_phash._native.HASH_VERSION}), file by file:")
    for name, h in hashes.items():
        apart = (built != h).sum(1)
        print(f"  {name}: {(apart == 0).mean():.1%} identical, mean {apart.mean():.2f} bits apart")

    head = ["decode"] + [EDITS[e][0] for e in MILD] + ["closest distinct"]
    rows = []
    for name, h in hashes.items():
        h = h.reshape(n, per, -1)
        cells = []
        for e in MILD:
            d = (h[:, 0] != h[:, 1 + list(EDITS).index(e)]).sum(1)
            cells.append(f"{np.percentile(d, 95):.1f} / {d.mean():.2f}")
        originals = h[:, 0]
        pairs = (originals[:, None] != originals[None]).sum(2)[np.triu_indices(n, 1)]
        rows.append([name] + cells + [", ".join(map(str, np.sort(pairs)[:3]))])
    print("p95 / mean distance to the original, bits of", args.hash_size ** 2)
    print(text_table(head, rows))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md_table(head, rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
