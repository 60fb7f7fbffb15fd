//! dHash, computed on the picture's exact extent and in floating point.
//!
//! image_hasher's dHash (`HashAlg::Gradient`) resamples to an (n + 1) x n grid of 8-bit pixels
//! and sets a bit where a pixel is less than its right-hand neighbour. Rounding the grid to 8 bits
//! decides the bits of the smooth parts of a picture (sky, walls): neighbours less than a grey
//! level apart round to one value (a tie, 0) or to two, differently for a resized, re-encoded or
//! turned copy. Here the grid is resampled from the extent in f32 and a bit is set where the
//! right-hand neighbour is brighter by more than a dead zone. The zone scales with the grid's
//! absolute differences between horizontal neighbours (a change of contrast or brightness scales
//! the differences and the zone alike), and at least a quarter grey level (so that the noise of
//! a flat picture reads 0, as its ties did on the 8-bit grid). The layout is image_hasher's: bit
//! y·n + x for pixel (x, y) against pixel (x + 1, y), least significant bit first.
//!
//! The zone (`docs/hash-evaluation.md`, *dHash's dead zone* and *dHash's cap at the 60th
//! percentile*) is 0.35 of the differences' mean, and up to hash size 16
//! no more than their 60th percentile (versions 4 to 11: 0.08 of the mean; versions 12 and 13
//! capped it at the 40th percentile, hash version 14 at the 60th). A difference close to
//! the zone flips its bit under JPEG q30's noise (a fifth of a grey level at the median). 0.08 of
//! the mean sits among many such differences; 0.35 moves the zone above most of a textured
//! picture's noise, and the cap keeps it low on a picture whose mean is made by a few strong
//! edges over a smooth field (a sky, a studio backdrop), whose slow gradients then still tell one
//! such picture from another. The 40th percentile of versions 12 and 13 lowered the zone under a
//! watermark's strokes on pictures at their own size (dhash 16 moved 3.8 bits at p95 on the 85
//! photos, imagehash 3); from the 60th up it moves 2 bits there. The 60th still keeps the steps
//! of a smooth field while they are fewer than 40% of the differences (the 40th kept them up to
//! 60%). At dhash 32 a cap took the watermark further than imagehash's, so above hash size 16 the
//! zone is not capped.
//!
//! The double-gradient hash is the same in both directions (hash version 7): on a (k + 1) x
//! (k + 1) grid, k = n/2 rounded up, first each pixel against its right-hand neighbour row by
//! row, then each against the one below it column by column (image_hasher's `DoubleGradient`
//! layout), with one dead zone for both: 0.08 of the mean at every size. Tried on it, version
//! 12's zone brought the closest distinct photos of its 144 bits closer (25 → 18 bits).
use crate::hash::threshold::{pack, quantile};

/// A dead zone: a share of the grid's mean absolute difference, no more than a quantile of the
/// absolute differences (if any), and at least `DEAD_ZONE_MIN`.
struct DeadZone {
    share: f32,
    cap: Option<f64>,
}

/// dHash's zone up to `CAPPED_ZONE_MAX_SIZE` (hash version 14) ...
const CAPPED_ZONE: DeadZone = DeadZone { share: 0.35, cap: Some(0.6) };
/// The largest hash size whose dHash zone is capped.
const CAPPED_ZONE_MAX_SIZE: usize = 16;
/// ... and above it (version 12) ...
const UNCAPPED_ZONE: DeadZone = DeadZone { share: 0.35, cap: None };
/// ... and double-gradient's (hash version 7).
const MEAN_ZONE: DeadZone = DeadZone { share: 0.08, cap: None };
/// Either zone is at least this many grey levels (of 255).
const DEAD_ZONE_MIN: f32 = 0.25;

/// The bits (n² of them) of an (n + 1) x n grid (row-major): each pixel against its right-hand
/// neighbour.
pub fn gradient_bits(grid: &[f32], n: usize) -> Vec<u8> {
    let zone = if n <= CAPPED_ZONE_MAX_SIZE { &CAPPED_ZONE } else { &UNCAPPED_ZONE };
    bits_above(|| rightward(grid, n + 1), n * n, zone)
}

/// The bits (2k(k + 1) of them) of a (k + 1) x (k + 1) grid (row-major), k = n/2 rounded up: each
/// pixel against its right-hand neighbour, row by row, then against the one below it, column by
/// column.
pub fn double_gradient_bits(grid: &[f32], k: usize) -> Vec<u8> {
    bits_above(|| both_ways(grid, k + 1), 2 * k * (k + 1), &MEAN_ZONE)
}

/// Each pixel of a row-major grid `width` wide less its left-hand neighbour, row by row.
fn rightward(grid: &[f32], width: usize) -> impl Iterator<Item = f32> + '_ {
    grid.chunks_exact(width).flat_map(|row| row.windows(2)).map(|p| p[1] - p[0])
}

/// A square grid's differences: rightward, then each pixel less the one above it, column by
/// column.
fn both_ways(grid: &[f32], side: usize) -> impl Iterator<Item = f32> + '_ {
    let below = (0..side).flat_map(move |x| (1..side).map(move |y| grid[y * side + x] - grid[(y - 1) * side + x]));
    rightward(grid, side).chain(below)
}

/// `count` differences packed least significant bit first: 1 where above `zone`.
fn bits_above<I: Iterator<Item = f32>>(differences: impl Fn() -> I, count: usize, zone: &DeadZone) -> Vec<u8> {
    let magnitudes: Vec<f32> = differences().map(f32::abs).collect();
    bits_over(differences(), count, zone.of(&magnitudes))
}

impl DeadZone {
    /// The zone of a grid's absolute differences.
    fn of(&self, magnitudes: &[f32]) -> f32 {
        if magnitudes.is_empty() {
            return DEAD_ZONE_MIN;
        }
        let mean = magnitudes.iter().sum::<f32>() / magnitudes.len() as f32;
        let zone = self.share * mean;
        self.cap.map_or(zone, |q| zone.min(quantile(magnitudes, q))).max(DEAD_ZONE_MIN)
    }
}

/// `count` differences packed least significant bit first: 1 where above `zone`.
fn bits_over(differences: impl Iterator<Item = f32>, count: usize, zone: f32) -> Vec<u8> {
    pack(differences.map(|d| d > zone), count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma};
    use image_hasher::{HashAlg, HasherConfig};

    fn noise(width: u32, height: u32, seed: u32, levels: u32) -> GrayImage {
        let mut state = seed;
        GrayImage::from_fn(width, height, |_, _| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            Luma([100 + ((state >> 16) % levels) as u8])
        })
    }

    fn floats(grid: &GrayImage) -> Vec<f32> {
        grid.as_raw().iter().map(|&v| f32::from(v)).collect()
    }

    /// Without a dead zone, on a grid already (n + 1) x n, image_hasher's dHash and ours read the
    /// same bits in the same order: the layout stored hashes rely on. Values from a narrow range,
    /// so ties occur.
    #[test]
    fn layout_is_image_hashers() {
        for n in [4u32, 5, 8, 16, 31] {
            let grid = noise(n + 1, n, 12345 + n, 6);
            let hasher = HasherConfig::new().hash_alg(HashAlg::Gradient).hash_size(n, n).to_hasher();
            let theirs = hasher.hash_image(&grid).as_bytes().to_vec();
            let g = floats(&grid);
            assert_eq!(bits_over(rightward(&g, n as usize + 1), (n * n) as usize, 0.0), theirs, "n = {n}");
        }
    }

    /// The same for the double gradient on a (k + 1) x (k + 1) grid, against image_hasher's
    /// `DoubleGradient` at hash size 2k.
    #[test]
    fn double_layout_is_image_hashers() {
        for k in [2u32, 4, 8, 16] {
            let grid = noise(k + 1, k + 1, 54321 + k, 6);
            let hasher = HasherConfig::new().hash_alg(HashAlg::DoubleGradient).hash_size(2 * k, 2 * k).to_hasher();
            let theirs = hasher.hash_image(&grid).as_bytes().to_vec();
            let (g, k) = (floats(&grid), k as usize);
            assert_eq!(bits_over(both_ways(&g, k + 1), 2 * k * (k + 1), 0.0), theirs, "k = {k}");
            assert_eq!(double_gradient_bits(&g, k).len(), theirs.len(), "k = {k}");
        }
    }

    #[test]
    fn a_faint_ramp_reads_zero_and_contrast_changes_nothing() {
        let ramp: Vec<f32> = (0..17 * 16).map(|i| 100.0 + 0.2 * (i % 17) as f32).collect();
        assert!(gradient_bits(&ramp, 16).iter().all(|&b| b == 0));
        let grid = floats(&noise(17, 16, 7, 60));
        let scaled: Vec<f32> = grid.iter().map(|v| 0.8 * v + 20.0).collect();
        assert_eq!(gradient_bits(&scaled, 16), gradient_bits(&grid, 16));
    }

    /// A smooth field beside one strong edge: the edge makes the mean, and a share of the mean
    /// alone (2.5 grey levels here) would read the field's steps of 2 as 0. The cap at the 60th
    /// percentile (0.5) keeps them.
    #[test]
    fn a_smooth_field_beside_a_strong_edge_keeps_its_steps() {
        let (steps, grid, magnitudes) = field(10, 5, 16);
        assert!((CAPPED_ZONE.share * magnitudes.iter().sum::<f32>() / 256.0) > 2.0);
        assert_eq!(CAPPED_ZONE.of(&magnitudes), 0.5);
        let bits = gradient_bits(&grid, 16);
        let expected = pack((0..16).flat_map(|_| steps.iter().map(|&d| d > 0.5)), 256);
        assert_eq!(bits, expected);
        assert!((0..16).all(|x| bit(&bits, x) == (x >= 10)));
    }

    /// A field whose steps of 2 are 7 of each row's 16 differences (44%, over 40%): the 60th
    /// percentile falls among them (2.0), so they read 0. The 40th percentile of hash versions 12
    /// and 13 (0.5) kept them, and with no cap the zone would be 0.35 of the mean (2.6).
    #[test]
    fn the_cap_is_the_60th_percentile() {
        let (_, grid, magnitudes) = field(8, 7, 16);
        assert_eq!(CAPPED_ZONE.of(&magnitudes), 2.0);
        assert!(CAPPED_ZONE.share * magnitudes.iter().sum::<f32>() / 256.0 > 2.5);
        assert_eq!(quantile(&magnitudes, 0.4), 0.5);
        let bits = gradient_bits(&grid, 16);
        assert!((0..16).all(|x| bit(&bits, x) == (x == 15)));
    }

    /// The same kind of field above hash size 16: the cap at the 60th percentile would keep its
    /// steps (0.5), but there is no cap, so the zone is 0.35 of the mean (2.4 grey levels) and
    /// they read 0.
    #[test]
    fn the_cap_stops_at_hash_size_16() {
        let (_, grid, magnitudes) = field(11, 5, 17);
        assert_eq!(CAPPED_ZONE.of(&magnitudes), 0.5);
        let bits = gradient_bits(&grid, 17);
        assert!((0..17).all(|x| bit(&bits, x) == (x == 16)));
    }

    /// A smooth field beside one strong edge, `rows` identical rows: `quiet` steps of 0.5, then
    /// `slopes` steps of 2, then one of 100. Returns the steps, the grid and its absolute
    /// rightward differences.
    fn field(quiet: usize, slopes: usize, rows: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let steps: Vec<f32> = [vec![0.5f32; quiet], vec![2.0; slopes], vec![100.0]].concat();
        let grid = rows_of_steps(&steps, rows);
        let magnitudes: Vec<f32> = rightward(&grid, steps.len() + 1).map(f32::abs).collect();
        (steps, grid, magnitudes)
    }

    /// `rows` identical rows that start at 0 and rise by `steps` from pixel to pixel.
    fn rows_of_steps(steps: &[f32], rows: usize) -> Vec<f32> {
        let row: Vec<f32> = std::iter::once(0.0)
            .chain(steps.iter().scan(0.0, |v, d| {
                *v += d;
                Some(*v)
            }))
            .collect();
        (0..rows).flat_map(|_| row.iter().copied()).collect()
    }

    /// Bit i of `bytes`, least significant first.
    fn bit(bytes: &[u8], i: usize) -> bool {
        bytes[i / 8] >> (i % 8) & 1 == 1
    }
}
