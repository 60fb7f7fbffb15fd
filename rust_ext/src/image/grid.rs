//! The picture's extent (see `extent`) resampled onto a hash grid: Lanczos3 on a sub-pixel crop,
//! its support scaled with the reduction (fast_image_resize, SIMD), one resizer per thread. The
//! resizer reads a `Picture`'s reduced image (f32) in place, for every grid asked of it (the
//! quality grid and dHash's, say).
use std::cell::RefCell;
use std::f64::consts::{FRAC_PI_2, FRAC_PI_3, PI};

use fast_image_resize::images::{Image as Grid, ImageRef};
use fast_image_resize::{Filter, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::GrayImage;

use crate::error::Error;
use crate::image::decode::Plane;
use crate::image::extent::Extent;

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// Lanczos3, sinc(x) sinc(x / 3) on (-3, 3), as fast_image_resize's own but with one sine, and
/// that one a polynomial: sin(pi x) = s (3 - 4 s^2) for s = sin(pi x / 3). A reduction by r
/// takes about 12 r weights per grid pixel, and libm's two sines per weight were 4% of pHash 16's
/// hashing time at a 64 px working side and 7% at 128 px (perf, `out/webset`).
fn lanczos3(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    if !(-3.0..3.0).contains(&x) {
        return 0.0;
    }
    let s2 = sin_to_pi(FRAC_PI_3 * x.abs()).powi(2);
    3.0 * s2 * (3.0 - 4.0 * s2) / (PI * PI * x * x)
}

/// sin(t) for t in [0, pi], within 1e-9: the Taylor polynomial to t^13 of min(t, pi - t).
fn sin_to_pi(t: f64) -> f64 {
    let u = if t > FRAC_PI_2 { PI - t } else { t };
    let u2 = u * u;
    // 1/3!, 1/5!, ..., 1/13! with alternating signs, innermost last.
    let c = [-1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362_880.0, -1.0 / 39_916_800.0, 1.0 / 6_227_020_800.0];
    u * (1.0 + u2 * c.iter().rev().fold(0.0, |acc, &k| k + u2 * acc))
}

fn resample(src: &ImageRef, extent: Extent, dst: &mut Grid) -> Result<(), Error> {
    let (w, h) = (f64::from(src.width()), f64::from(src.height()));
    let (x, y) = (extent.x.clamp(0.0, w), extent.y.clamp(0.0, h));
    let (cw, ch) = (extent.w.min(w - x).max(1e-3), extent.h.min(h - y).max(1e-3));
    let filter = Filter::new("Lanczos3", lanczos3, 3.0).map_err(|e| Error::Internal(format!("filter: {e}")))?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Custom(filter))).crop(x, y, cw, ch);
    RESIZER
        .with(|r| r.borrow_mut().resize(src, dst, Some(&options)))
        .map_err(|e| Error::Internal(format!("resize: {e}")))
}

/// A reduced image and the rectangle its picture covers in it (see `extent`).
pub struct Picture {
    pub pixels: Plane,
    pub extent: Extent,
}

impl Picture {
    pub fn new(pixels: Plane, extent: Extent) -> Picture {
        Picture { pixels, extent }
    }

    /// The reduced image rounded to 8 bits, for blockhash (`hash/blockhash.rs`).
    pub fn gray8(&self) -> GrayImage {
        let (w, h) = self.pixels.dimensions();
        let bytes = self.pixels.as_raw().iter().map(|&v| v.round().clamp(0.0, 255.0) as u8).collect();
        GrayImage::from_raw(w, h, bytes).expect("same size")
    }

    /// A `width` x `height` grid of f32, row-major.
    pub fn resample_f32(&self, width: u32, height: u32) -> Result<Vec<f32>, Error> {
        let (w, h) = self.pixels.dimensions();
        let src = ImageRef::new(w, h, bytemuck::cast_slice(self.pixels.as_raw()), PixelType::F32)
            .map_err(|e| Error::Internal(format!("resize source: {e}")))?;
        let mut dst = Grid::new(width, height, PixelType::F32);
        resample(&src, self.extent, &mut dst)?;
        Ok(dst.buffer().chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

/// Pictures scoring below this are flat (blank, a plain colour, a faint gradient): near-duplicate
/// dedup matches them by identical hash only.
pub const FLAT_QUALITY: u8 = 10;
/// The side of the grid a quality score is measured on, whatever the algorithm and hash size.
pub const QUALITY_SIDE: u32 = 32;
/// Mean absolute difference of neighbouring grid pixels (0..255 luma) that scores 100.
const FULL_QUALITY_GRADIENT: f32 = 12.0;

/// The `to` x `to` grid of the means of a `side` x `side` grid's blocks (`side` a multiple of `to`).
pub fn block_means(grid: &[f32], side: usize, to: usize) -> Vec<f32> {
    let k = side / to;
    let mut out = vec![0f32; to * to];
    for (y, row) in grid.chunks_exact(side).enumerate() {
        let line = &mut out[(y / k) * to..(y / k + 1) * to];
        for (o, block) in line.iter_mut().zip(row.chunks_exact(k)) {
            *o += block.iter().sum::<f32>();
        }
    }
    let scale = 1.0 / (k * k) as f32;
    out.iter_mut().for_each(|v| *v *= scale);
    out
}

/// How much a picture has to hash, 0-100: the mean absolute difference between neighbouring
/// pixels of its `QUALITY_SIDE` grid (luma 0-255; resampled, or the block means of pHash's grid
/// when its side is a multiple), scaled so that FULL_QUALITY_GRADIENT and more scores 100. Blank
/// and flat pictures score near 0; their hashes are noise around a few bits, close to other flat
/// pictures' (PDQ gives its hashes a similar gradient-energy score).
pub fn quality(grid: &[f32], side: usize) -> u8 {
    let mut sum = 0f32;
    let mut pairs = 0usize;
    for y in 0..side {
        for x in 0..side {
            let v = grid[y * side + x];
            if x + 1 < side {
                sum += (grid[y * side + x + 1] - v).abs();
                pairs += 1;
            }
            if y + 1 < side {
                sum += (grid[(y + 1) * side + x] - v).abs();
                pairs += 1;
            }
        }
    }
    let mean = if pairs == 0 { 0.0 } else { sum / pairs as f32 };
    (100.0 * mean / FULL_QUALITY_GRADIENT).round().clamp(0.0, 100.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_means_average_each_block() {
        let side = 4;
        let grid: Vec<f32> = (0..side * side).map(|i| i as f32).collect();
        // Rows 0-1 and 2-3, columns 0-1 and 2-3: (0 + 1 + 4 + 5) / 4 = 2.5, and so on.
        assert_eq!(block_means(&grid, side, 2), vec![2.5, 4.5, 10.5, 12.5]);
        assert_eq!(block_means(&grid, side, side), grid);
    }

    /// The one-sine form against the definition, sinc(x) sinc(x / 3).
    #[test]
    fn lanczos3_is_the_product_of_two_sincs() {
        let sinc = |x: f64| if x == 0.0 { 1.0 } else { (PI * x).sin() / (PI * x) };
        for i in -3500..=3500 {
            let x = f64::from(i) / 1000.0;
            let want = if x.abs() < 3.0 { sinc(x) * sinc(x / 3.0) } else { 0.0 };
            assert!((lanczos3(x) - want).abs() < 1e-9, "x = {x}: {} against {want}", lanczos3(x));
        }
    }
}
