//! JPEG at a reduced scale, 1/2, 1/4 or 1/8 of the size, luma only, so a hash never pays for
//! full-resolution pixels or for the colour planes.
//!
//! `decode_scaled` picks the largest reduction that keeps both sides at least `min_side`. Grey and
//! YCbCr JPEGs that it reduces are rebuilt in f32 from their luma coefficients
//! (`coefficients.rs`; a baseline file's entropy-decoded here, `baseline.rs`); the others (at full size; CMYK/YCCK, through CMYK, Adobe-inverted as
//! nearly all are), and any the coefficient path refuses, go through libjpeg-turbo's (scaled)
//! IDCT to 8-bit grayscale. It reads the EXIF
//! orientation from the APP1 segment itself. It answers `Ok(None)` for what it does not handle (a
//! decoder error or warning, lossless or 12-bit JPEG), and the caller then falls back to the
//! general decoder, so a file that decoded before still decodes.
use std::borrow::Cow;
use std::cell::RefCell;

use image::metadata::Orientation;
use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat, ScalingFactor};

use crate::image::coefficients::luma_plane;
use crate::image::decode::{luma601, orient, reduction, upright_size, Limits, Plane};
use crate::error::Error;
use crate::image::extent::Extent;
use crate::image::scans;

thread_local! {
    /// One decompressor per thread (it is Send, not Sync), reused across images.
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// The reduction 1/d that keeps both sides >= `min_side`: the decoder's power-of-two rule,
/// capped at the 1/8 the scaled IDCT goes to.
pub fn pick_denominator(width: usize, height: usize, min_side: usize) -> usize {
    let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    reduction(clamp(width), clamp(height), clamp(min_side)).min(8) as usize
}

/// Decode `data` (known to be a complete JPEG) to grayscale at a reduced scale, upright. Also
/// answers the upright full-resolution size, and where the picture lies in the reduced image.
pub fn decode_scaled(data: &[u8], limits: &Limits, min_side: u32) -> Result<Option<(Plane, u32, u32, Extent)>, Error> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            match Decompressor::new() {
                Ok(d) => *slot = Some(d),
                Err(_) => return Ok(None),
            }
        }
        let dec = slot.as_mut().expect("decompressor was just created");
        let result = decode_with(dec, data, limits, min_side as usize);
        if !matches!(result, Ok(Some(_))) {
            // libjpeg-turbo keeps state in the handle; after an image it refused, start afresh so
            // that the next image decodes exactly as it would on a new thread.
            *slot = None;
        }
        result
    })
}

fn decode_with(dec: &mut Decompressor, data: &[u8], limits: &Limits, min_side: usize) -> Result<Option<(Plane, u32, u32, Extent)>, Error> {
    let Ok(header) = dec.read_header(data) else { return Ok(None) };
    if header.is_lossless {
        return Ok(None);
    }
    let (w32, h32) = (u32::try_from(header.width).unwrap_or(u32::MAX), u32::try_from(header.height).unwrap_or(u32::MAX));
    limits.check(w32, h32)?;
    let samples = match header.colorspace {
        Colorspace::Gray => 1,
        Colorspace::CMYK | Colorspace::YCCK => 4,
        _ => 3,
    };
    limits.check_bytes(u64::from(w32) * u64::from(h32) * samples, "Jpeg")?;
    let denom = pick_denominator(header.width, header.height, min_side);
    // At full size libjpeg-turbo's IDCT folds nothing away, and its SIMD code is the faster.
    let from_coefficients = match header.colorspace {
        Colorspace::Gray | Colorspace::YCbCr if denom > 1 => luma_plane(data, header.width, header.height, denom),
        _ => None,
    };
    let plane = match from_coefficients {
        Some(plane) => plane,
        None => match scaled_idct(dec, data, header.width, header.height, denom, header.colorspace) {
            Some(gray) => gray,
            None => return Ok(None),
        },
    };
    let (w, h) = (plane.width(), plane.height());
    let orientation = exif_orientation(data);
    let plane = orient(plane, orientation);
    let (uw, uh) = upright_size(w32, h32, orientation);
    // The scaled image's last row and column may stand for part of a block only.
    let extent = Extent { x: 0.0, y: 0.0, w: header.width as f64 / denom as f64, h: header.height as f64 / denom as f64 }
        .oriented(w, h, orientation);
    Ok(Some((plane, uw, uh, extent)))
}

/// libjpeg-turbo's scaled IDCT to 1/`denom`, 8-bit grey, as stored (not turned upright). Grey
/// from YCbCr is the luma alone, so a progressive file's chroma scans are cut (`scans.rs`).
fn scaled_idct(dec: &mut Decompressor, data: &[u8], width: usize, height: usize, denom: usize, colorspace: Colorspace) -> Option<Plane> {
    let factor = ScalingFactor::new(1, denom);
    dec.set_scaling_factor(factor).ok()?;
    let (w, h) = (factor.scale(width), factor.scale(height));
    let cmyk = matches!(colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let (format, channels) = if cmyk { (PixelFormat::CMYK, 4) } else { (PixelFormat::GRAY, 1) };
    let mut pixels = vec![0u8; w * h * channels];
    let image = Image { pixels: &mut pixels[..], width: w, pitch: w * channels, height: h, format };
    let stream = if matches!(colorspace, Colorspace::YCbCr) { scans::for_luma(data, 63) } else { Cow::Borrowed(data) };
    dec.decompress(&stream, image).ok()?;
    let gray = if cmyk { cmyk_to_gray(&pixels) } else { pixels };
    Plane::from_raw(w as u32, h as u32, gray.into_iter().map(f32::from).collect())
}

/// Adobe CMYK (stored inverted: 255 = no ink) to BT.601 luma of the RGB it stands for.
fn cmyk_to_gray(px: &[u8]) -> Vec<u8> {
    px.chunks_exact(4)
        .map(|p| {
            let k = u16::from(p[3]);
            let ink = |c: u8| (u16::from(c) * k / 255) as u8;
            luma601(ink(p[0]), ink(p[1]), ink(p[2]))
        })
        .collect()
}

/// The marker segments before the image data, as (marker, body), a body cut short where the data
/// ends; the walk stops at the first start of scan or an end of image.
pub(crate) fn header_segments(data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut i = 2; // after SOI
    std::iter::from_fn(move || {
        while i + 4 <= data.len() && data[i] == 0xFF {
            let marker = data[i + 1];
            if marker == 0xFF {
                i += 1; // fill byte
                continue;
            }
            if marker == 0xDA || marker == 0xD9 {
                return None; // start of scan / end of image: no more metadata
            }
            let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
            let end = (i + 2 + len).min(data.len());
            let body = &data[(i + 4).min(end)..end];
            i = end;
            return Some((marker, body));
        }
        None
    })
}

/// The EXIF orientation from the first APP1 "Exif" segment before the image data; no transform
/// when there is none or it cannot be read (a broken EXIF block is not a broken image).
pub fn exif_orientation(data: &[u8]) -> Orientation {
    header_segments(data)
        .find(|(marker, body)| *marker == 0xE1 && body.starts_with(b"Exif\0\0"))
        .and_then(|(_, body)| Orientation::from_exif_chunk(&body[6..]))
        .unwrap_or(Orientation::NoTransforms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denominator_keeps_both_sides_above_the_minimum() {
        assert_eq!(pick_denominator(4000, 3000, 128), 8);
        assert_eq!(pick_denominator(800, 600, 128), 4);
        assert_eq!(pick_denominator(300, 200, 128), 1);
        assert_eq!(pick_denominator(500, 300, 128), 2);
        assert_eq!(pick_denominator(4000, 100, 128), 1);
    }

    #[test]
    fn no_exif_means_no_transform() {
        assert_eq!(exif_orientation(&[0xFF, 0xD8, 0xFF, 0xD9]), Orientation::NoTransforms);
        assert_eq!(exif_orientation(b"not a jpeg at all"), Orientation::NoTransforms);
    }

    /// libjpeg-turbo's grey of all of `jpeg` (`w` x `h`) at 1/`denom`, nothing cut.
    fn whole_grey(jpeg: &[u8], w: usize, h: usize, denom: usize) -> Vec<f32> {
        let factor = ScalingFactor::new(1, denom);
        let (sw, sh) = (factor.scale(w), factor.scale(h));
        let mut grey = vec![0u8; sw * sh];
        let mut dec = Decompressor::new().unwrap();
        dec.set_scaling_factor(factor).unwrap();
        dec.decompress(jpeg, Image { pixels: &mut grey[..], width: sw, pitch: sw, height: sh, format: PixelFormat::GRAY }).unwrap();
        grey.into_iter().map(f32::from).collect()
    }

    /// Grey from a progressive YCbCr JPEG without its chroma scans is the grey of the whole
    /// file, at full size (where the hash takes this path) and reduced.
    #[test]
    fn grey_from_a_progressive_jpeg_needs_no_chroma_scans() {
        use turbojpeg::{Compressor, Subsamp};
        let (w, h) = (75, 53);
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = ((i % w) as f64, (i / w) as f64);
                let v = 128.0 + 60.0 * (x / 9.0).sin() * (y / 13.0).cos();
                [v as u8, (255.0 - v) as u8, (x * 3.0) as u8]
            })
            .collect();
        for subsamp in [Subsamp::Sub2x2, Subsamp::None] {
            let mut c = Compressor::new().unwrap();
            c.set_progressive(true).unwrap();
            c.set_subsamp(subsamp).unwrap();
            let jpeg = c.compress_to_vec(Image { pixels: &rgb[..], width: w, pitch: w * 3, height: h, format: PixelFormat::RGB }).unwrap();
            assert!(scans::for_luma(&jpeg, 63).len() < jpeg.len(), "{subsamp:?}: nothing cut");
            for denom in [1, 2] {
                let mut dec = Decompressor::new().unwrap();
                let ours = scaled_idct(&mut dec, &jpeg, w, h, denom, Colorspace::YCbCr).unwrap();
                assert_eq!(ours.as_raw(), &whole_grey(&jpeg, w, h, denom), "{subsamp:?}, 1/{denom}");
            }
        }
    }

    /// Scan scripts that leave the luma's AC terms incomplete (so libjpeg-turbo smooths the
    /// luma's blocks when every component's tables and DC terms are there) and send each
    /// component's DC term in a scan of its own, one with an Adobe segment after its first scan
    /// (`tests/data/scan_scripts/README.md`). Cut, each gives the grey of the whole file.
    #[test]
    fn scan_scripts_that_smooth_or_reorder_give_the_same_grey() {
        for (name, jpeg) in [
            ("A", &include_bytes!("../../../tests/data/scan_scripts/A.jpg")[..]),
            ("B", &include_bytes!("../../../tests/data/scan_scripts/B.jpg")[..]),
            ("F", &include_bytes!("../../../tests/data/scan_scripts/F.jpg")[..]),
        ] {
            let header = Decompressor::new().unwrap().read_header(jpeg).unwrap();
            let (w, h) = (header.width, header.height);
            assert!(scans::for_luma(jpeg, 63).len() < jpeg.len(), "{name}: nothing cut");
            for denom in [1, 2, 8] {
                let mut dec = Decompressor::new().unwrap();
                let ours = scaled_idct(&mut dec, jpeg, w, h, denom, header.colorspace).unwrap();
                assert_eq!(ours.as_raw(), &whole_grey(jpeg, w, h, denom), "{name}, 1/{denom}");
            }
        }
    }

    #[test]
    fn cmyk_without_ink_is_white() {
        assert_eq!(cmyk_to_gray(&[255, 255, 255, 255, 0, 0, 0, 0]), vec![255, 0]);
    }
}
