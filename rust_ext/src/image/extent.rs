//! Where the picture lies in a reduced image, to the sub-pixel.
//!
//! A reduction by f (the JPEG scaled IDCT, or `decode::shrink`) rounds each side up: the last row
//! or column stands for only part of a block. An image of 537 rows reduced by 8 has 68 rows that
//! span 67.1. Resampling all 68 rows onto the hash grid stretches the picture by a different
//! fraction for the original and for a resized copy, which moves the hash (up to 16 bits at p95
//! for a 50% resize at phash 16). The hasher resamples exactly this rectangle instead; it moves
//! with every flip and rotation, whether from EXIF orientation or a dihedral variant.
use image::metadata::Orientation;

/// A rectangle in an image's pixel coordinates (pixel i covers [i, i + 1)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extent {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Extent {
    /// All of a `width` x `height` image.
    pub fn full(width: u32, height: u32) -> Extent {
        Extent { x: 0.0, y: 0.0, w: f64::from(width), h: f64::from(height) }
    }

    /// The same picture after a reduction by `f` (pixel i covers source pixels [i f, (i + 1) f)).
    pub fn reduced(self, f: f64) -> Extent {
        Extent { x: self.x / f, y: self.y / f, w: self.w / f, h: self.h / f }
    }

    /// In an image of `iw` x `ih` pixels turned by `rotate90` (clockwise): (x, y) -> (ih - y, x).
    pub fn rotated90(self, _iw: u32, ih: u32) -> Extent {
        Extent { x: f64::from(ih) - self.y - self.h, y: self.x, w: self.h, h: self.w }
    }

    pub fn rotated180(self, iw: u32, ih: u32) -> Extent {
        Extent { x: f64::from(iw) - self.x - self.w, y: f64::from(ih) - self.y - self.h, ..self }
    }

    /// `rotate270` (counter-clockwise 90): (x, y) -> (y, iw - x).
    pub fn rotated270(self, iw: u32, _ih: u32) -> Extent {
        Extent { x: self.y, y: f64::from(iw) - self.x - self.w, w: self.h, h: self.w }
    }

    pub fn flipped_h(self, iw: u32) -> Extent {
        Extent { x: f64::from(iw) - self.x - self.w, ..self }
    }

    pub fn flipped_v(self, ih: u32) -> Extent {
        Extent { y: f64::from(ih) - self.y - self.h, ..self }
    }

    /// After `DynamicImage::apply_orientation(orientation)` of an `iw` x `ih` image.
    pub fn oriented(self, iw: u32, ih: u32, orientation: Orientation) -> Extent {
        use Orientation::*;
        match orientation {
            NoTransforms => self,
            Rotate90 => self.rotated90(iw, ih),
            Rotate180 => self.rotated180(iw, ih),
            Rotate270 => self.rotated270(iw, ih),
            FlipHorizontal => self.flipped_h(iw),
            FlipVertical => self.flipped_v(ih),
            Rotate90FlipH => self.rotated90(iw, ih).flipped_h(ih),
            Rotate270FlipH => self.rotated270(iw, ih).flipped_h(ih),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops::{flip_horizontal, rotate270, rotate90};
    use image::{GrayImage, Luma};

    /// The rectangle of the pixels whose value is 1, in a transformed image.
    fn marked(img: &GrayImage) -> Extent {
        let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
        for (x, y, p) in img.enumerate_pixels() {
            if p.0[0] == 1 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
        Extent { x: f64::from(x0), y: f64::from(y0), w: f64::from(x1 - x0), h: f64::from(y1 - y0) }
    }

    #[test]
    fn follows_the_pixels_through_every_turn() {
        // A 7 x 4 image whose picture is the 5 x 3 block at (0, 0).
        let img = GrayImage::from_fn(7, 4, |x, y| Luma([u8::from(x < 5 && y < 3)]));
        let e = Extent { x: 0.0, y: 0.0, w: 5.0, h: 3.0 };
        assert_eq!(marked(&rotate90(&img)), e.rotated90(7, 4));
        assert_eq!(marked(&rotate270(&img)), e.rotated270(7, 4));
        assert_eq!(marked(&flip_horizontal(&rotate90(&img))), e.oriented(7, 4, Orientation::Rotate90FlipH));
        assert_eq!(marked(&flip_horizontal(&rotate270(&img))), e.oriented(7, 4, Orientation::Rotate270FlipH));
        let mut d = image::DynamicImage::ImageLuma8(img.clone());
        d.apply_orientation(Orientation::Rotate180);
        assert_eq!(marked(&d.into_luma8()), e.oriented(7, 4, Orientation::Rotate180));
    }
}
