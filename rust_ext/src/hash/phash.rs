//! pHash, computed on the picture's exact extent and in floating point.
//!
//! image_hasher's pHash resamples the whole reduced image to a 2n x 2n grid and rounds the
//! result to 8 bits. Both move the hash of a resized copy: the reduced image's last row or column
//! may stand for part of a block only (see `extent`), and at the grid's small size the rounding
//! step is close to the contrast of the high frequencies. Here the grid is resampled from the
//! extent (a sub-pixel crop, Lanczos3 whose support scales with the reduction) onto 4n x 4n (as
//! imagehash's pHash: 64 x 64 for n = 16), kept in f32, and transformed by a DCT-II over its rows
//! and the first n columns. The low n x n are the same frequencies on either grid; the finer one
//! folds less of the frequencies above them onto them (hash version 6; 2n before).
//!
//! The bits (hash version 8). image_hasher compares each low coefficient with their median, and
//! a coefficient close to the median flips its bit under the slightest edit; a picture with many
//! of them (a banded sky, a dark wallpaper) moved 10-28 bits under JPEG q30. Here:
//! - before the DCT, for hash sizes up to 16 (`KNEE_MAX_SIZE`), the grid's values above its 90th
//!   percentile are compressed four to one (`KNEE_QUANTILE`, `KNEE_SLOPE`): a brightened copy
//!   clips its highlights, and the knee gives them less say. Larger hashes go without it (hash
//!   version 10): their high frequencies are where a watermark's strokes lie, and the knee
//!   flattens the highlights' own texture there, which left phash 32's watermark further than
//!   imagehash's;
//! - after it, the low n x n coefficients, the DC term left out, are taken in order of frequency
//!   (u² + v², then row-major) four at a time through a 4-point Hadamard transform, and a bit is
//!   set where the result is at least zero. Each bit then sums four coefficients of about the same
//!   frequency, and a large one among them holds it steady. Above hash size 16
//!   (`FOURS_MAX_SIZE`) they are taken two at a time (hash version 13; the first four, the DC
//!   term's zero among them, still four at a time): at 1024 bits the sums of four follow the
//!   strong coefficients that many photos share, and distinct photos came closer than with
//!   version 1's median rule. n² bits (the last group may be short: its coefficients
//!   keep their own signs); least significant bit first, as image_hasher packs.
//!
//! Measured against version 7 (the median rule) in the README, *Why pHash's bits changed in
//! version 8*.
use std::sync::Arc;

use rustdct::{DctPlanner, TransformType2And3};

use crate::error::Error;
use crate::hash::threshold::{pack, quantile};
use crate::image::grid::Picture;

/// The grid values above this quantile are compressed (the knee's point) ...
const KNEE_QUANTILE: f64 = 0.9;
/// ... to this fraction of their height above it ...
const KNEE_SLOPE: f32 = 0.25;
/// ... for hash sizes up to this one (README, *Hash version 10*).
const KNEE_MAX_SIZE: usize = 16;
/// The coefficients go four at a time up to this hash size, two at a time above it (README,
/// *Hash version 13*).
const FOURS_MAX_SIZE: usize = 16;

/// The planned DCT of one hash size (shared by all threads).
pub struct PHasher {
    n: usize,
    dct: Arc<dyn TransformType2And3<f32>>,
    /// The low coefficients' indices (row-major in the n x n block) in order of frequency: by
    /// u² + v², then by index. The bits are made from them `group` at a time.
    order: Vec<usize>,
    /// 4 up to `FOURS_MAX_SIZE`, 2 above.
    group: usize,
    /// Whether the grid's highlights go through the knee first (n <= `KNEE_MAX_SIZE`).
    knee: bool,
}

impl PHasher {
    pub fn new(hash_size: u32) -> PHasher {
        let n = hash_size as usize;
        let mut order: Vec<usize> = (0..n * n).collect();
        order.sort_by_key(|&i| ((i / n).pow(2) + (i % n).pow(2), i));
        let group = if n <= FOURS_MAX_SIZE { 4 } else { 2 };
        PHasher { n, dct: DctPlanner::new().plan_dct2(4 * n), order, group, knee: n <= KNEE_MAX_SIZE }
    }

    /// The side of the grid this hash is computed on (4n).
    pub fn side(&self) -> u32 {
        4 * self.n as u32
    }

    /// The hash bytes (n² bits, least significant bit first) of `picture`.
    pub fn hash(&self, picture: &Picture) -> Result<Vec<u8>, Error> {
        Ok(self.hash_grid(picture.resample_f32(self.side(), self.side())?))
    }

    /// The hash of a grid already resampled (`side()` x `side()`, row-major).
    pub fn hash_grid(&self, grid: Vec<f32>) -> Vec<u8> {
        self.hash_grid_turns(grid, false).swap_remove(0)
    }

    /// The hash of a grid (as `hash_grid`), then with `dihedral` the hashes of its 7 turns in
    /// `hash::DIHEDRAL` order. One DCT serves all eight: a turned grid's coefficients are the
    /// grid's own, transposed where the turn swaps the axes, and negated at the odd frequencies
    /// across a mirror (`turned`). The knee's quantile does not depend on the pixels' order.
    pub fn hash_grid_turns(&self, mut grid: Vec<f32>, dihedral: bool) -> Vec<Vec<u8>> {
        if self.knee {
            knee(&mut grid);
        }
        let low = self.low(grid);
        let turns = if dihedral { 8 } else { 1 };
        (0..turns).map(|i| if i == 0 { self.bits(&low) } else { self.bits(&turned(&low, self.n, i)) }).collect()
    }

    /// The low n x n DCT-II coefficients of `grid` (row-major: vertical frequency, then
    /// horizontal; unnormalised).
    fn low(&self, mut grid: Vec<f32>) -> Vec<f32> {
        let (n, side) = (self.n, 4 * self.n);
        let mut scratch = vec![0f32; self.dct.get_scratch_len()];
        for row in grid.chunks_exact_mut(side) {
            self.dct.process_dct2_with_scratch(row, &mut scratch);
        }
        let mut low = vec![0f32; n * n];
        let mut column = vec![0f32; side];
        for x in 0..n {
            for (y, c) in column.iter_mut().enumerate() {
                *c = grid[y * side + x];
            }
            self.dct.process_dct2_with_scratch(&mut column, &mut scratch);
            for y in 0..n {
                low[y * n + x] = column[y];
            }
        }
        low
    }

    /// The bits of the low coefficients: the DC term left out, `group` at a time in order of
    /// frequency through a Hadamard transform (with pairs, the first four still four at a
    /// time), each result against zero.
    fn bits(&self, low: &[f32]) -> Vec<u8> {
        let at = |i: usize| if i == 0 { 0.0 } else { low[i] };
        let mut sums = Vec::with_capacity(low.len());
        // The DC term comes first in the order, as a zero. In a pair it would give its partner's
        // sign twice (b and -b), so with pairs the first four still go through the 4-point
        // transform: four bits from the three lowest frequencies, none a copy of another.
        let head = if self.group == 2 { 4.min(self.order.len()) } else { 0 };
        let (first, rest) = self.order.split_at(head);
        for group in first.chunks(4).chain(rest.chunks(self.group)) {
            match *group {
                [a, b, c, d] => sums.extend(hadamard4([at(a), at(b), at(c), at(d)])),
                [a, b] if self.group == 2 => sums.extend([at(a) + at(b), at(a) - at(b)]),
                _ => sums.extend(group.iter().map(|&i| at(i))),
            }
        }
        pack(sums.iter().map(|&s| s >= 0.0), sums.len())
    }
}

/// The low n x n coefficients (row-major, vertical frequency v then horizontal u) of dihedral
/// variant `i` of a square grid, from the grid's own `low`. The DCT-II basis of length m at
/// frequency k is symmetric about the middle for even k and antisymmetric for odd k, so a mirror
/// across columns negates the odd u, one across rows the odd v, and a transposition swaps u and v.
/// image's `rotate90` is a transposition, then a mirror across columns; `rotate270` a
/// transposition, then one across rows; `rotate180` both mirrors; `flip_horizontal` first gives
/// the last four.
fn turned(low: &[f32], n: usize, i: usize) -> Vec<f32> {
    // (transposed, odd u negated, odd v negated)
    let (transpose, odd_u, odd_v) = match i {
        0 => (false, false, false),
        1 => (true, true, false),
        2 => (false, true, true),
        3 => (true, false, true),
        4 => (false, true, false),
        5 => (true, true, true),
        6 => (false, false, true),
        _ => (true, false, false),
    };
    (0..n * n)
        .map(|k| {
            let (v, u) = (k / n, k % n);
            let c = if transpose { low[u * n + v] } else { low[k] };
            if (odd_u && u % 2 == 1) != (odd_v && v % 2 == 1) { -c } else { c }
        })
        .collect()
}

/// The 4-point Hadamard transform (Sylvester's order, unnormalised).
fn hadamard4([a, b, c, d]: [f32; 4]) -> [f32; 4] {
    let (s, t, u, v) = (a + b, a - b, c + d, c - d);
    [s + u, t + v, s - u, t - v]
}

/// The knee: values above the grid's `KNEE_QUANTILE` come down to `KNEE_SLOPE` of their height
/// above it.
fn knee(grid: &mut [f32]) {
    let point = quantile(grid, KNEE_QUANTILE);
    for v in grid.iter_mut().filter(|v| **v > point) {
        *v = point + (*v - point) * KNEE_SLOPE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unnormalised DCT-II of one row, by its definition.
    fn dct_by_definition(x: &[f64], k: usize) -> f64 {
        let m = x.len() as f64;
        x.iter()
            .enumerate()
            .map(|(i, v)| v * (std::f64::consts::PI * k as f64 * (2.0 * i as f64 + 1.0) / (2.0 * m)).cos())
            .sum()
    }

    /// Bit i of `bytes`, least significant first.
    fn bit(bytes: &[u8], i: usize) -> bool {
        bytes[i / 8] >> (i % 8) & 1 == 1
    }

    #[test]
    fn the_hadamard_butterfly_is_sylvesters_matrix() {
        let h = [[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0], [1.0, -1.0, -1.0, 1.0]];
        let x = [3.0f32, -1.5, 0.25, 7.0];
        let got = hadamard4(x);
        for (row, g) in h.iter().zip(got) {
            let want: f32 = row.iter().zip(x).map(|(r, v)| r * v).sum();
            assert_eq!(g, want);
        }
    }

    #[test]
    fn frequencies_are_taken_in_order_of_u2_plus_v2() {
        let p = PHasher::new(4);
        // (v, u) = (0,0), (0,1), (1,0), (1,1), (0,2), (2,0), (1,2), (2,1), (2,2), (0,3), ...
        assert_eq!(&p.order[..10], &[0, 1, 4, 5, 2, 8, 6, 9, 10, 3]);
        let mut sorted = p.order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..16).collect::<Vec<_>>());
    }

    /// The whole last step against a brute force in f64: knee by sorting (up to
    /// `KNEE_MAX_SIZE`; none for n = 17), the DCT by its definition, then each group's sums
    /// written out, four at a time up to `FOURS_MAX_SIZE` and two at a time for n = 17 and 18
    /// (odd n = 5 and 17 included: the last coefficient keeps its own sign).
    #[test]
    fn hash_grid_matches_a_brute_force() {
        for n in [4usize, 5, 8, 17, 18] {
            let side = 4 * n;
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ n as u64;
            let grid: Vec<f32> = (0..side * side)
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // A smooth picture plus noise, with bright highlights for the knee to act on.
                    let (y, x) = ((i / side) as f32, (i % side) as f32);
                    60.0 + 40.0 * (x / 7.0).sin() + 30.0 * (y / 5.0).cos() + (seed % 1000) as f32 / 20.0
                })
                .collect();
            let p = PHasher::new(n as u32);
            let got = p.hash_grid(grid.clone());

            let mut sorted: Vec<f64> = grid.iter().map(|&v| v as f64).collect();
            sorted.sort_by(f64::total_cmp);
            let r = KNEE_QUANTILE * (sorted.len() - 1) as f64;
            let (lo, frac) = (r.floor() as usize, r - r.floor());
            let point = sorted[lo] + (sorted[lo + 1] - sorted[lo]) * frac;
            let kneed: Vec<f64> = grid
                .iter()
                .map(|&v| v as f64)
                .map(|v| if v > point && n <= KNEE_MAX_SIZE { point + (v - point) * KNEE_SLOPE as f64 } else { v })
                .collect();
            let coefficient = |v: usize, u: usize| -> f64 {
                if (v, u) == (0, 0) {
                    return 0.0;
                }
                let rows: Vec<f64> = (0..side).map(|y| dct_by_definition(&kneed[y * side..(y + 1) * side], u)).collect();
                dct_by_definition(&rows, v)
            };
            let mut freqs: Vec<(usize, usize)> = (0..n).flat_map(|v| (0..n).map(move |u| (v, u))).collect();
            freqs.sort_by_key(|&(v, u)| (v * v + u * u, v * n + u));
            let c: Vec<f64> = freqs.iter().map(|&(v, u)| coefficient(v, u)).collect();
            let fours: &[&[f64]] = &[&[1.0, 1.0, 1.0, 1.0], &[1.0, -1.0, 1.0, -1.0], &[1.0, 1.0, -1.0, -1.0], &[1.0, -1.0, -1.0, 1.0]];
            let pairs: &[&[f64]] = &[&[1.0, 1.0], &[1.0, -1.0]];
            // Four at a time; above FOURS_MAX_SIZE the first four (the DC term's zero among
            // them), then two at a time.
            let mut groups: Vec<(&[f64], &[&[f64]])> = Vec::new();
            let rest = if n <= FOURS_MAX_SIZE {
                &c[..]
            } else {
                groups.push((&c[..4], fours));
                &c[4..]
            };
            let (size, signs) = if n <= FOURS_MAX_SIZE { (4, fours) } else { (2, pairs) };
            groups.extend(rest.chunks(size).map(|g| (g, signs)));
            let mut i = 0;
            for (group, signs) in groups {
                for (k, row) in signs.iter().enumerate().take(group.len()) {
                    let sum: f64 = if group.len() == row.len() { row.iter().zip(group).map(|(s, x)| s * x).sum() } else { group[k] };
                    // Sums this close to zero may differ in f32 (whose DCT is off by under 1e-6 of
                    // the largest coefficient here); none of these grids has one.
                    assert!(sum.abs() > 1e-5 * c.iter().map(|x| x.abs()).fold(0.0, f64::max), "n {n}: a sum too close to 0");
                    assert_eq!(bit(&got, i), sum >= 0.0, "n {n}, bit {i}");
                    i += 1;
                }
            }
            assert_eq!(i, n * n);
            assert_eq!(got.len(), (n * n).div_ceil(8));
        }
    }

    /// Each turn's hash, from the grid's own coefficients, against the hash of the grid turned
    /// by the image crate (`dihedral::by_image_crate`), for even and odd n.
    #[test]
    fn the_turns_of_a_grid_hash_as_the_turned_grids() {
        use crate::hash::dihedral::by_image_crate;
        use image::{ImageBuffer, Luma};
        for n in [4u32, 5, 8, 16] {
            let side = 4 * n;
            let mut seed = 0x2545_f491_4f6c_dd1du64 ^ n as u64;
            let grid: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_fn(side, side, |x, y| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Not symmetric under any turn: a slope, waves of two periods, and noise.
                let (x, y) = (x as f32, y as f32);
                Luma([50.0 + x + 0.3 * y + 30.0 * (x / 5.0 + y / 11.0).sin() + 20.0 * (y / 3.0).cos() + (seed % 100) as f32 / 10.0])
            });
            let p = PHasher::new(n);
            let turns = p.hash_grid_turns(grid.as_raw().clone(), true);
            assert_eq!(turns.len(), 8);
            for (i, got) in turns.iter().enumerate() {
                let want = by_image_crate(&grid, i);
                assert_eq!(got, &p.hash_grid(want.into_raw()), "n {n}, variant {i}");
                if i > 0 {
                    assert_ne!(got, &turns[0], "n {n}, variant {i} is the identity's hash");
                }
            }
            assert_eq!(p.hash_grid_turns(grid.into_raw(), false), turns[..1]);
        }
    }

    /// No bit is a copy of another, or its negation: over many grids, each pair of neighbouring
    /// bits takes both equal and different values (a pair (0, b) with the DC term's zero would
    /// give b's sign twice).
    #[test]
    fn no_bit_repeats_its_neighbour() {
        for n in [8usize, 16, 17, 32] {
            let side = 4 * n;
            let p = PHasher::new(n as u32);
            let mut seed = 0x51_7cc1_b727_220au64 ^ n as u64;
            let hashes: Vec<Vec<u8>> = (0..64)
                .map(|_| {
                    let grid = (0..side * side)
                        .map(|_| {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            (seed % 256) as f32
                        })
                        .collect();
                    p.hash_grid(grid)
                })
                .collect();
            for i in 0..n * n - 1 {
                let same = hashes.iter().filter(|h| bit(h, i) == bit(h, i + 1)).count();
                assert!(same > 0 && same < hashes.len(), "n {n}: bits {i} and {} equal in {same} of 64", i + 1);
            }
        }
    }

    #[test]
    fn a_flat_grid_sets_every_bit() {
        let p = PHasher::new(8);
        assert_eq!(p.hash_grid(vec![128.0; 32 * 32]), vec![0xff; 8]);
    }
}
