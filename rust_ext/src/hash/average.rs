//! aHash and the median hash, computed on the picture's exact extent and in floating point.
//!
//! image_hasher compares an 8-bit n x n grid with its mean or median. Rounding the grid to 8 bits
//! ties the cells of a picture's smooth parts (sky, walls) to the threshold, and when a turned or
//! re-encoded copy rounds the threshold one grey level the other way, all of those cells flip
//! together. Here the grid is resampled from the extent in f32, and a cell's bit is set where it
//! is at least the threshold less a quarter grey level: cells cross it one at a time, and a flat
//! picture, whose cells differ by float rounding only, reads all ones, as its ties did on the
//! 8-bit grid. The layout is image_hasher's: bit y·n + x for cell (x, y), least significant bit
//! first.
use crate::hash::threshold::{bits_at_least, median};

/// Cells this many grey levels (of 255) below the threshold still count as reaching it.
const TIE: f32 = 0.25;

/// What a cell is compared with: the grid's mean (aHash) or its median (the median hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Mean,
    Median,
}

/// The bits of an n x n grid (row-major): each cell against the grid's mean or median.
pub fn grid_bits(grid: &[f32], level: Level) -> Vec<u8> {
    let threshold = match level {
        Level::Mean => grid.iter().sum::<f32>() / grid.len().max(1) as f32,
        Level::Median => median(&mut grid.to_vec()),
    };
    bits_at_least(grid, threshold - TIE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma};
    use image_hasher::{HashAlg, HasherConfig};

    /// An n x n grid of grey levels 10 apart, from a fixed pseudo-random sequence.
    fn levels(n: u32, seed: u32) -> GrayImage {
        let mut state = seed;
        GrayImage::from_fn(n, n, |_, _| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            Luma([10 * ((state >> 16) % 20) as u8 + 20])
        })
    }

    fn floats(grid: &GrayImage) -> Vec<f32> {
        grid.as_raw().iter().map(|&v| f32::from(v)).collect()
    }

    /// On a grid already n x n whose threshold lies on a grey level (an odd cell count for the
    /// median, a whole mean), image_hasher's hashes and ours read the same bits in the same
    /// order: the layout stored hashes rely on.
    #[test]
    fn layout_is_image_hashers() {
        for n in [5u32, 7, 9, 15] {
            let mut grid = levels(n, 99 + n);
            let sum: u32 = grid.as_raw().iter().map(|&v| u32::from(v)).sum();
            let spare = (sum % (n * n)) as usize;
            grid.as_mut()[..spare].iter_mut().for_each(|v| *v -= 1); // the mean is now a whole grey level
            for (alg, level) in [(HashAlg::Mean, Level::Mean), (HashAlg::Median, Level::Median)] {
                let hasher = HasherConfig::new().hash_alg(alg).hash_size(n, n).to_hasher();
                assert_eq!(grid_bits(&floats(&grid), level), hasher.hash_image(&grid).as_bytes().to_vec(), "{level:?} n = {n}");
            }
        }
    }

    #[test]
    fn a_flat_grid_reads_all_ones_and_contrast_changes_nothing() {
        let flat: Vec<f32> = (0..256).map(|i| 128.0 + 1e-4 * (i % 7) as f32).collect();
        for level in [Level::Mean, Level::Median] {
            assert!(grid_bits(&flat, level).iter().all(|&b| b == 0xFF), "{level:?}");
            let grid = floats(&levels(16, 7));
            let scaled: Vec<f32> = grid.iter().map(|v| 0.8 * v + 20.0).collect();
            assert_eq!(grid_bits(&scaled, level), grid_bits(&grid, level), "{level:?}");
        }
    }
}
