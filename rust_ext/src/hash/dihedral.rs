//! The dihedral group of the square on row-major grids, in `DIHEDRAL` order: the image crate's
//! `rotate90`, `rotate180` and `rotate270` (clockwise), then the same after `flip_horizontal`.
//! The variants of a hash are hashes of turned grids (or, for pHash, of turned coefficients), not
//! of turned pictures: a picture's extent turns with its pixels, so the grid resampled from a
//! turned picture is the picture's grid turned.
#[cfg(test)]
use image::imageops::{flip_horizontal, rotate180, rotate270, rotate90};
#[cfg(test)]
use image::metadata::Orientation;
#[cfg(test)]
use image::{ImageBuffer, Pixel};

#[cfg(test)]
use crate::image::grid::Picture;

/// The dihedral group of the square, in the order of `ImageHash::variants`: the identity, the
/// rotations by 90, 180 and 270 degrees clockwise, then the horizontal mirror followed by each.
pub const DIHEDRAL: [&str; 8] =
    ["identity", "rot90", "rot180", "rot270", "flip", "flip+rot90", "flip+rot180", "flip+rot270"];

/// Where variant `i` of a `width` x `height` grid reads the grid: its pixel (x, y) is the grid's
/// `start + x * dx + y * dy` (row-major). `width` and `height` are the variant's own, swapped
/// for the turns by 90 and 270 degrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    pub width: u32,
    pub height: u32,
    pub start: isize,
    pub dx: isize,
    pub dy: isize,
}

impl Turn {
    pub fn new(width: u32, height: u32, i: usize) -> Turn {
        let (w, h) = (width as isize, height as isize);
        // The grid's (x, y) for the variant's (0, 0), and how it moves with the variant's x and y.
        let ((x0, y0), (xdx, ydx), (xdy, ydy)) = match i % 8 {
            0 => ((0, 0), (1, 0), (0, 1)),
            1 => ((0, h - 1), (0, -1), (1, 0)),
            2 => ((w - 1, h - 1), (-1, 0), (0, -1)),
            3 => ((w - 1, 0), (0, 1), (-1, 0)),
            4 => ((w - 1, 0), (-1, 0), (0, 1)),
            5 => ((w - 1, h - 1), (0, -1), (-1, 0)),
            6 => ((0, h - 1), (1, 0), (0, -1)),
            _ => ((0, 0), (0, 1), (1, 0)),
        };
        let (vw, vh) = if i % 2 == 1 { (height, width) } else { (width, height) };
        Turn { width: vw, height: vh, start: x0 + y0 * w, dx: xdx + ydx * w, dy: xdy + ydy * w }
    }

    /// The grid's index of the variant's pixel (x, y).
    pub fn index(&self, x: u32, y: u32) -> usize {
        (self.start + x as isize * self.dx + y as isize * self.dy) as usize
    }
}

/// Variant `i` of a row-major `width` x `height` grid.
pub fn turn<T: Copy>(values: &[T], width: u32, height: u32, i: usize) -> Vec<T> {
    let t = Turn::new(width, height, i);
    (0..t.height).flat_map(|y| (0..t.width).map(move |x| values[t.index(x, y)])).collect()
}

/// Variant `i` of an image, turned by the image crate: what the turns here are tested against.
#[cfg(test)]
pub(crate) fn by_image_crate<P: Pixel + 'static>(image: &ImageBuffer<P, Vec<P::Subpixel>>, i: usize) -> ImageBuffer<P, Vec<P::Subpixel>> {
    let base = if i >= 4 { flip_horizontal(image) } else { image.clone() };
    match i % 4 {
        0 => base,
        1 => rotate90(&base),
        2 => rotate180(&base),
        _ => rotate270(&base),
    }
}

/// The EXIF orientation that turns a picture as variant `i` does: the mirror first, as here,
/// is the image crate's turn followed by a mirror there.
#[cfg(test)]
pub(crate) fn orientation(i: usize) -> Orientation {
    use Orientation::*;
    [NoTransforms, Rotate90, Rotate180, Rotate270, FlipHorizontal, Rotate270FlipH, FlipVertical, Rotate90FlipH][i % 8]
}

/// Variant `i` of a picture, its extent turned alike: what the turned grids are tested against
/// (`hash::tests`).
#[cfg(test)]
pub(crate) fn picture(picture: &Picture, i: usize) -> Picture {
    let (w, h) = picture.pixels.dimensions();
    Picture::new(by_image_crate(&picture.pixels, i), picture.extent.oriented(w, h, orientation(i)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    #[test]
    fn turns_read_the_grid_as_the_image_crate_turns_it() {
        for (w, h) in [(7u32, 4u32), (4, 7), (5, 5), (1, 3)] {
            let grid: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_fn(w, h, |x, y| Luma([(y * w + x) as u16]));
            for i in 0..8 {
                let want = by_image_crate(&grid, i);
                let t = Turn::new(w, h, i);
                assert_eq!((t.width, t.height), want.dimensions(), "{w}x{h}, {}", DIHEDRAL[i]);
                assert_eq!(turn(grid.as_raw(), w, h, i), want.into_raw(), "{w}x{h}, {}", DIHEDRAL[i]);
            }
        }
    }

    #[test]
    fn each_variant_is_its_exif_orientation() {
        let grid: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_fn(7, 4, |x, y| Luma([(y * 7 + x) as u16]));
        for i in 0..8 {
            let mut oriented = image::DynamicImage::ImageLuma16(grid.clone());
            oriented.apply_orientation(orientation(i));
            assert_eq!(oriented.into_luma16(), by_image_crate(&grid, i), "{}", DIHEDRAL[i]);
        }
    }
}
