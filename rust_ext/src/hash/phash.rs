//! pHash, computed on the picture's exact extent and in floating point.
//!
//! image_hasher's pHash resamples the whole reduced image to a 2n x 2n grid and rounds the
//! result to 8 bits. Both move the hash of a resized copy: the reduced image's last row or column
//! may stand for part of a block only (see `extent`), and at the grid's small size the rounding
//! step is close to the contrast of the high frequencies. Here the grid is resampled from the
//! extent (a sub-pixel crop, Lanczos3 whose support scales with the reduction) onto 4n x 4n (as
//! imagehash's pHash: 64 x 64 for n = 16), kept in f32, transformed by a DCT-II over its rows and
//! the first n columns, and the low n x n coefficients (row-major, the DC term included) are
//! compared with their median (the mean of the two middle values): a bit is set where the
//! coefficient is at least the median, least significant bit first, as image_hasher packs them.
//! The low n x n are the same frequencies on either grid; the finer one folds less of the
//! frequencies above them onto them (hash version 6; 2n before).
use std::sync::Arc;

use rustdct::{DctPlanner, TransformType2And3};

use crate::error::Error;
use crate::hash::threshold::{bits_at_least, median};
use crate::image::grid::Picture;

/// The planned DCT of one hash size (shared by all threads).
pub struct PHasher {
    n: usize,
    dct: Arc<dyn TransformType2And3<f32>>,
}

impl PHasher {
    pub fn new(hash_size: u32) -> PHasher {
        let n = hash_size as usize;
        PHasher { n, dct: DctPlanner::new().plan_dct2(4 * n) }
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
    pub fn hash_grid(&self, mut grid: Vec<f32>) -> Vec<u8> {
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
        bits_at_least(&low, median(&mut low.clone()))
    }
}
