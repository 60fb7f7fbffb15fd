//! blockhash (blockhash.io) bit for bit as image_hasher 3.1.1 computes it, in one pass over the
//! 8-bit pixels, read through a view that may turn them.
//!
//! image_hasher sums each pixel into its block through a closure per pixel (where m does not
//! divide the sides, with two float divisions and four weighted adds, three of which add zero
//! whenever a block is wider and taller than a pixel); and a dihedral variant was a turned copy
//! of the picture hashed again. Here the
//! block of each column and of each row is looked up once, and a variant reads the upright pixels
//! in the turned picture's order (`View::turned`), so its sums are added in the same order as
//! image_hasher's over the turned copy, and come out the same in f32.
//!
//! The rule, as image_hasher's: an m x m grid of blocks (the hash size rounded up to a multiple of
//! 4); where the picture's sides are multiples of m, u32 sums over whole blocks; otherwise block
//! `floor(x / (w / m))` in f32, f32 sums. The blocks are cut into runs of 4m (four rows of blocks),
//! each against its median (the element at index len / 2 once sorted): a bit is set where a block
//! is above it, or equal to it (within 0.001 in f32) while the median is above half of a block's
//! full brightness. A picture that m does not divide and with a side of m pixels or fewer goes to
//! image_hasher itself: its weights then split pixels between blocks.
use std::ops::AddAssign;

use image::{GrayImage, ImageBuffer, Luma};
use image_hasher::Hasher;

use crate::hash::dihedral::Turn;
use crate::hash::threshold::pack;

/// An 8-bit picture seen upright or turned (`dihedral::Turn`).
pub struct View<'a> {
    pixels: &'a [u8],
    turn: Turn,
}

impl<'a> View<'a> {
    pub fn upright(image: &'a GrayImage) -> View<'a> {
        View::turned(image, 0)
    }

    /// Dihedral variant `i` of `image`, in `hash::DIHEDRAL` order.
    pub fn turned(image: &'a GrayImage, i: usize) -> View<'a> {
        View { pixels: image.as_raw(), turn: Turn::new(image.width(), image.height(), i) }
    }

    /// The view as a picture of its own (for image_hasher).
    fn to_image(&self) -> GrayImage {
        ImageBuffer::from_fn(self.turn.width, self.turn.height, |x, y| Luma([self.pixels[self.turn.index(x, y)]]))
    }
}

/// The blockhash of `view` at `hash_size` (image_hasher's bytes: bit i of the hash is bit i % 8 of
/// byte i / 8). `hasher` is image_hasher's blockhash at the same size, for the pictures that m
/// does not divide with a side of m pixels or fewer.
pub fn hash(view: &View, hash_size: u32, hasher: &Hasher) -> Vec<u8> {
    let m = hash_size.next_multiple_of(4);
    let (w, h) = (view.turn.width, view.turn.height);
    if w % m == 0 && h % m == 0 {
        let (bw, bh) = (w / m, h / m);
        let blocks = sums::<u32>(view, m, |x| (x / bw) as usize, |y| (y / bh) as usize);
        let half = 255 * (bw * bh) / 2;
        bits(&blocks, m, |b, median| b > median || (b == median && median > half))
    } else if w > m && h > m {
        let (bw, bh) = (w as f32 / m as f32, h as f32 / m as f32);
        let blocks = sums::<f32>(view, m, |x| (x as f32 / bw).floor() as usize, |y| (y as f32 / bh).floor() as usize);
        let half = 255.0 * (bw * bh) / 2.0;
        bits(&blocks, m, |b, median| b > median || ((b - median).abs() < 0.001 && median > half))
    } else {
        hasher.hash_image(&view.to_image()).as_bytes().to_vec()
    }
}

/// The m x m block sums of `view`, each pixel added to block (column `col(x)`, row `row(y)`) in
/// the view's row-major order.
fn sums<T: Copy + Default + AddAssign + From<u8>>(
    view: &View,
    m: u32,
    col: impl Fn(u32) -> usize,
    row: impl Fn(u32) -> usize,
) -> Vec<T> {
    let (m, t) = (m as usize, view.turn);
    let cols: Vec<usize> = (0..t.width).map(col).collect();
    let mut blocks = vec![T::default(); m * m];
    for y in 0..t.height {
        // Indexed as image_hasher indexes, row * m + column (a column of m would reach the next row).
        let base = row(y) * m;
        let first = t.index(0, y) as isize;
        for (x, &c) in cols.iter().enumerate() {
            blocks[base + c] += T::from(view.pixels[(first + x as isize * t.dx) as usize]);
        }
    }
    blocks
}

/// One bit per block, each run of 4m blocks against its median.
fn bits<T: Copy + PartialOrd>(blocks: &[T], m: u32, set: impl Fn(T, T) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len());
    for run in blocks.chunks(4 * m as usize) {
        let mut sorted = run.to_vec();
        let k = sorted.len() / 2;
        let (_, &mut median, _) = sorted.select_nth_unstable_by(k, |a, b| a.partial_cmp(b).expect("sums are finite"));
        out.extend(run.iter().map(|&b| set(b, median)));
    }
    pack(out.into_iter(), blocks.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::dihedral::by_image_crate;
    use image_hasher::{HashAlg, HasherConfig};

    fn picture(w: u32, h: u32, seed: u64) -> GrayImage {
        let mut s = seed | 1;
        ImageBuffer::from_fn(w, h, |x, y| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Smooth shapes plus noise, and flat patches, so that medians tie now and then.
            let v = 128.0 + 60.0 * ((x as f32) / 9.0).sin() * ((y as f32) / 13.0).cos() + (s % 40) as f32 - 20.0;
            Luma([if (x / 7 + y / 5) % 11 == 0 { 200 } else { v.clamp(0.0, 255.0) as u8 }])
        })
    }

    /// Against image_hasher's own blockhash of the turned picture, bit for bit: sides that are
    /// multiples of m (u32 sums), sides that are not (f32), a side of m or fewer pixels (image_hasher
    /// itself), hash sizes rounded up to a multiple of 4, and every dihedral variant. The last
    /// pictures are flat, so every block ties with its median: a checkerboard of 127 and 128,
    /// whose blocks of an even area sum to exactly half their full brightness, and flat 128.
    #[test]
    fn every_view_hashes_as_image_hasher_hashes_the_turned_picture() {
        let sizes = [(64, 64), (128, 96), (100, 75), (257, 31), (33, 500), (16, 16), (12, 40), (5, 9), (48, 17)];
        let checkerboard = |w, h| ImageBuffer::from_fn(w, h, |x, y| Luma([127 + ((x + y) % 2) as u8]));
        let flat = [checkerboard(64, 64), checkerboard(96, 80), ImageBuffer::from_pixel(100, 75, Luma([128]))];
        let pictures = sizes.iter().enumerate().map(|(k, &(w, h))| picture(w, h, 11 + k as u64)).chain(flat);
        let mut checked = 0;
        for p in pictures {
            let (w, h) = p.dimensions();
            for n in [4, 5, 8, 12, 16] {
                let hasher = HasherConfig::new().hash_alg(HashAlg::Blockhash).hash_size(n, n).to_hasher();
                for i in 0..8 {
                    let want = hasher.hash_image(&by_image_crate(&p, i)).as_bytes().to_vec();
                    assert_eq!(hash(&View::turned(&p, i), n, &hasher), want, "{w}x{h}, size {n}, variant {i}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 12 * 5 * 8);
    }
}
