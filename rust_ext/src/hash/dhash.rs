//! dHash, computed on the picture's exact extent and in floating point.
//!
//! image_hasher's dHash (`HashAlg::Gradient`) resamples to an (n + 1) x n grid of 8-bit pixels
//! and sets a bit where a pixel is less than its right-hand neighbour. Rounding the grid to 8 bits
//! decides the bits of the smooth parts of a picture (sky, walls): neighbours less than a grey
//! level apart round to one value (a tie, 0) or to two, differently for a resized, re-encoded or
//! turned copy. Here the grid is resampled from the extent in f32 and a bit is set where the
//! right-hand neighbour is brighter by more than a dead zone: a share of the grid's mean absolute
//! difference between horizontal neighbours (a change of contrast or brightness scales the
//! differences and the zone alike), and at least a quarter grey level (so that the noise of a
//! flat picture reads 0, as its ties did on the 8-bit grid). The layout is image_hasher's: bit
//! y·n + x for pixel (x, y) against pixel (x + 1, y), least significant bit first.
//!
//! The double-gradient hash is the same in both directions (hash version 7): on a (k + 1) x
//! (k + 1) grid, k = n/2 rounded up, first each pixel against its right-hand neighbour row by
//! row, then each against the one below it column by column (image_hasher's `DoubleGradient`
//! layout), with one dead zone for both.
use crate::error::Error;
use crate::hash::threshold::pack;
use crate::image::grid::Picture;

/// The dead zone, as a share of the mean absolute difference of horizontal neighbours...
const DEAD_ZONE_SHARE: f32 = 0.08;
/// ... and at least this many grey levels (of 255).
const DEAD_ZONE_MIN: f32 = 0.25;

/// The hash bytes (n² bits) of `picture`.
pub fn hash(picture: &Picture, n: u32) -> Result<Vec<u8>, Error> {
    Ok(gradient_bits(&picture.resample_f32(n + 1, n)?, n as usize))
}

/// The double-gradient hash bytes (2k(k + 1) bits, k = n/2 rounded up) of `picture`.
pub fn double_hash(picture: &Picture, n: u32) -> Result<Vec<u8>, Error> {
    let side = n.div_ceil(2) + 1;
    Ok(double_gradient_bits(&picture.resample_f32(side, side)?, side as usize - 1))
}

/// The bits of an (n + 1) x n grid (row-major): each pixel against its right-hand neighbour.
pub fn gradient_bits(grid: &[f32], n: usize) -> Vec<u8> {
    bits_above(|| rightward(grid, n + 1), n * n)
}

/// The bits of a (k + 1) x (k + 1) grid (row-major): each pixel against its right-hand
/// neighbour, row by row, then against the one below it, column by column.
pub fn double_gradient_bits(grid: &[f32], k: usize) -> Vec<u8> {
    bits_above(|| both_ways(grid, k + 1), 2 * k * (k + 1))
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

/// `count` differences packed least significant bit first: 1 where above the dead zone, a share
/// of their mean absolute value (and at least `DEAD_ZONE_MIN`).
fn bits_above<I: Iterator<Item = f32>>(differences: impl Fn() -> I, count: usize) -> Vec<u8> {
    let mean = differences().map(f32::abs).sum::<f32>() / count.max(1) as f32;
    bits_over(differences(), count, (DEAD_ZONE_SHARE * mean).max(DEAD_ZONE_MIN))
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
}
