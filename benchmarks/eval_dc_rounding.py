"""How much of JPEG q30's pHash noise a decoder could take back by estimating each block's mean.

    python benchmarks/eval_dc_rounding.py SOURCE_DIR [SOURCE_DIR ...] [--limit N] [--every K]
        [--hash-size 16]

Why. JPEG q30 is the one mild edit whose p95 stays above 4 bits at pHash 16 on the web crops
(docs/hash-evaluation.md, *What is still short*), and `eval_decode.py`'s model puts it down to
the rounding of each 8 x 8 block's mean (its DC term, +-1.7 grey levels at q30). A decoder knows
only the bin each mean was rounded into. This measures whether an estimate inside the bins
brings the copy's hash coefficients nearer the original's than the bin centres do.

Method. Each photo is brought to 800 px (`bench_quality.web_size`) and saved at JPEG q95 (the
reference) and q30 (the copy). Each file's luma coefficients are recovered as `eval_decode.py`
recovers them (a full-size decode, an 8 x 8 DCT, the file's quantisation steps). The copy is
rebuilt as beam-phash rebuilds it (`eval_decode.reduced_plane`: each block's low
coefficients at the reduced scale) with each block's mean taken from:

    bin centre        the rounded DC term (what the decoder reads; the build's rule)
    original's means  the reference's DC terms (an oracle: what a perfect estimate would reach)
    AC edges          the mean of a Gaussian truncated to the block's bin, centred on what its four
                      neighbours predict: each neighbour's mean plus the step across the shared
                      edge that the two blocks' AC-rebuilt pixels, extrapolated half a pixel to
                      the edge, call for; weighted by how steady that step is along the edge;
                      20 rounds
    smooth, clipped   where every AC term is zero, the mean of the four neighbours' means,
                      clipped into the bin; 200 rounds (the smoothest field the bins allow)
    smooth, Gaussian  the same, the mean of a Gaussian truncated to the bin instead of a clip

Output. For each rule, the root mean square over the photos of (1) each block's error against
the reference's mean, grey levels, and (2) the error of the hash's low n x n DCT coefficients of
the 4n x 4n grid (DC term left out; grid DCT scaled to orthonormal), against the reference's.
Only (2) moves pHash's bits. A rule that lowers (1) but not (2) fixes block-to-block detail the
hash never reads.
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from bench_quality import jpeg, web_size
from eval_decode import BLOCK, block_means, dct_matrix, grid, quantised, reduced_plane
from make_web_set import sources


def truncated_mean(m, sd, lo, hi):
    """The mean of N(m, sd²) truncated to [lo, hi]."""
    erf = np.frompyfunc(math.erf, 1, 1)
    a, b = (lo - m) / sd, (hi - m) / sd
    mass = (erf(b / np.sqrt(2)) - erf(a / np.sqrt(2))).astype(np.float64) / 2
    shift = (np.exp(-a * a / 2) - np.exp(-b * b / 2)) / np.sqrt(2 * np.pi)
    inside = mass > 1e-9
    return np.clip(np.where(inside, m + sd * shift / np.where(inside, mass, 1), m), lo, hi)


def neighbour_sum(values, weights_h, weights_v, steps_h, steps_v):
    """Σ w (neighbour + predicted step) and Σ w over each block's four neighbours."""
    num, den = np.zeros_like(values), np.zeros_like(values)
    num[:, :-1] += weights_h * (values[:, 1:] - steps_h)
    num[:, 1:] += weights_h * (values[:, :-1] + steps_h)
    num[:-1] += weights_v * (values[1:] - steps_v)
    num[1:] += weights_v * (values[:-1] + steps_v)
    den[:, :-1] += weights_h
    den[:, 1:] += weights_h
    den[:-1] += weights_v
    den[1:] += weights_v
    return num, den


def ac_edges(k, steps, rounds=20, steadiness=2.0, spread=0.25):
    """The block means from their AC-rebuilt edges and their neighbours' (*AC edges* above)."""
    q = steps[0, 0] / 8
    centre = block_means(k, steps)
    lo, hi = centre - q / 2, centre + q / 2
    ac = k * steps
    ac[:, :, 0, 0] = 0
    px = np.einsum("ui,abuv,vj->abij", BLOCK, ac, BLOCK)  # [a, b, y, x]
    out_right = 1.5 * px[:, :-1, :, 7] - 0.5 * px[:, :-1, :, 6]
    out_left = 1.5 * px[:, 1:, :, 0] - 0.5 * px[:, 1:, :, 1]
    out_down = 1.5 * px[:-1, :, 7, :] - 0.5 * px[:-1, :, 6, :]
    out_up = 1.5 * px[1:, :, 0, :] - 0.5 * px[1:, :, 1, :]
    step_h, step_v = out_right - out_left, out_down - out_up  # the right (lower) mean minus the left (upper)
    w_h, w_v = 1 / (step_h.var(-1) + steadiness**2), 1 / (step_v.var(-1) + steadiness**2)
    mu = centre.copy()
    for _ in range(rounds):
        num, den = neighbour_sum(mu, w_h, w_v, step_h.mean(-1), step_v.mean(-1))
        mu = truncated_mean(num / den, np.sqrt(1 / den + (spread * q) ** 2), lo, hi)
    return mu


def smooth(k, steps, gaussian: bool, rounds=200):
    """The smoothest block means the bins allow where a block has no AC term (*smooth* above)."""
    q = steps[0, 0] / 8
    centre = block_means(k, steps)
    lo, hi = centre - q / 2, centre + q / 2
    flat = ~np.any(k.reshape(*k.shape[:2], 64)[:, :, 1:], axis=-1)
    ones_h, ones_v = np.ones((k.shape[0], k.shape[1] - 1)), np.ones((k.shape[0] - 1, k.shape[1]))
    zeros_h, zeros_v = np.zeros_like(ones_h), np.zeros_like(ones_v)
    mu = centre.copy()
    for _ in range(rounds):
        num, den = neighbour_sum(mu, ones_h, ones_v, zeros_h, zeros_v)
        new = truncated_mean(num / den, 0.3 * q, lo, hi) if gaussian else np.clip(num / den, lo, hi)
        mu = np.where(flat, new, centre)
    return mu


RULES = {
    "bin centre": lambda k, s, ref: block_means(k, s),
    "original's means": lambda k, s, ref: ref,
    "AC edges": lambda k, s, ref: ac_edges(k, s),
    "smooth, clipped": lambda k, s, ref: smooth(k, s, gaussian=False),
    "smooth, Gaussian": lambda k, s, ref: smooth(k, s, gaussian=True),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    ap.add_argument("--every", type=int, default=1, help="then only every K-th of them")
    ap.add_argument("--hash-size", type=int, default=16)
    args = ap.parse_args(argv)
    n = args.hash_size
    side, dct = 6 * n, dct_matrix(4 * n, orthonormal=True)

    def low(reduced):
        return (dct @ grid(reduced, 4 * n) @ dct.T)[:n, :n].ravel()[1:]

    paths = sources(args.sources)[: args.limit][:: args.every]
    block_err = {name: [] for name in RULES}
    coef_err = {name: [] for name in RULES}
    for path in paths:
        im = web_size(path)
        k_ref, s_ref, size = quantised(jpeg(im, 95))
        ref_means, ref_low = block_means(k_ref, s_ref), low(reduced_plane(k_ref, s_ref, size, side))
        k, s, _ = quantised(jpeg(im, 30))
        for name, rule in RULES.items():
            means = rule(k, s, ref_means)
            block_err[name].append(np.mean((means - ref_means) ** 2))
            coef_err[name].append(np.mean((low(reduced_plane(k, s, size, side, means)) - ref_low) ** 2))
    print(f"{len(paths)} photos, JPEG q30 against q95, pHash {n}: root mean square error")
    print(f"  {'block means from':18s} {'each block (grey levels)':>26s} {'hash coefficients':>18s}")
    for name in RULES:
        print(f"  {name:18s} {np.sqrt(np.mean(block_err[name])):26.3f} {np.sqrt(np.mean(coef_err[name])):18.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
