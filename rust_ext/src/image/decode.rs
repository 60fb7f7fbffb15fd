//! Bytes -> small grayscale image, ready for hashing.
//!
//! * Format is sniffed from the bytes (JPEG, PNG, GIF first frame, WebP, BMP, TIFF).
//! * Declared dimensions are checked against `Limits` *before* any pixel buffer is allocated,
//!   so a header that declares 100000x100000 fails at once.
//! * EXIF orientation is applied, so a copy rotated only by its tag hashes like the upright one.
//! * Transparent pixels are composited onto opaque white (`ALPHA_BACKGROUND`).
//! * Luma uses the ITU-R BT.601 weights (as PIL's `convert("L")`).
//! * JPEGs are decoded at a reduced scale from their luma coefficients (`coefficients.rs`), or by
//!   libjpeg-turbo's scaled IDCT (`jpeg.rs`); other formats, and JPEGs libjpeg-turbo will not
//!   take, through the `image` crate.
//! * Images are reduced by powers of two while both sides stay at least the working side, so the
//!   hash resampler never runs over full-resolution pixels. The reduced image is kept in f32.
use std::io::Cursor;

use image::imageops::{flip_horizontal, flip_vertical, rotate180, rotate270, rotate90};
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageBuffer, ImageDecoder, ImageReader, Luma};

use crate::error::Error;
use crate::image::extent::Extent;
use crate::image::scans;

/// The background that transparent pixels are composited onto: white.
pub const ALPHA_BACKGROUND: u8 = 255;

/// Default maximum number of pixels (width x height) of an image we agree to decode: 64 MP.
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;
/// Default maximum bytes the decoder may allocate for one image: 512 MiB.
pub const DEFAULT_MAX_ALLOC: u64 = 512 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_pixels: u64,
    pub max_alloc: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_pixels: DEFAULT_MAX_PIXELS, max_alloc: DEFAULT_MAX_ALLOC }
    }
}

impl Limits {
    pub fn new(max_pixels: u64, max_alloc: u64) -> Result<Self, Error> {
        if max_pixels == 0 || max_alloc == 0 {
            return Err(Error::Config("max_pixels and max_alloc must be positive".into()));
        }
        Ok(Limits { max_pixels, max_alloc })
    }

    pub(crate) fn check(&self, width: u32, height: u32) -> Result<(), Error> {
        if width == 0 || height == 0 {
            return Err(Error::Decode(format!("image has zero size {width}x{height}")));
        }
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels {
            return Err(Error::TooLarge(format!(
                "{width}x{height} = {pixels} pixels, limit is {} pixels",
                self.max_pixels
            )));
        }
        Ok(())
    }

    /// `max_alloc` against the bytes of the full-size pixels the header declares (`format`'s
    /// samples: 3 bytes a pixel for an 8-bit colour JPEG, 8 for 16-bit RGBA), before anything is
    /// decoded. The same rule for every format, whatever its decoder would allocate: a JPEG
    /// reduced by its DCT never holds its full size, and the `image` crate's decoders apply
    /// their own `max_alloc` unevenly.
    pub(crate) fn check_bytes(&self, bytes: u64, format: &str) -> Result<(), Error> {
        if bytes > self.max_alloc {
            return Err(Error::TooLarge(format!(
                "{format}: {bytes} bytes of pixels, limit is {} bytes (max_alloc)",
                self.max_alloc
            )));
        }
        Ok(())
    }
}

/// Grey pixels in f32 (luma 0-255): the reduced image the hashes are computed from.
pub type Plane = ImageBuffer<Luma<f32>, Vec<f32>>;

/// A decoded image: the reduced grayscale pixels to hash, the upright full-resolution size, and
/// the rectangle of `pixels` the picture covers (see `extent`).
pub struct Decoded {
    pub pixels: Plane,
    pub width: u32,
    pub height: u32,
    pub extent: Extent,
}

/// `plane` turned upright from EXIF `orientation` (as `DynamicImage::apply_orientation`).
pub(crate) fn orient(plane: Plane, orientation: Orientation) -> Plane {
    use Orientation::*;
    match orientation {
        NoTransforms => plane,
        Rotate90 => rotate90(&plane),
        Rotate180 => rotate180(&plane),
        Rotate270 => rotate270(&plane),
        FlipHorizontal => flip_horizontal(&plane),
        FlipVertical => flip_vertical(&plane),
        Rotate90FlipH => flip_horizontal(&rotate90(&plane)),
        Rotate270FlipH => flip_horizontal(&rotate270(&plane)),
    }
}

/// The upright size of a `width` x `height` image stored with EXIF `orientation`.
pub(crate) fn upright_size(width: u32, height: u32, orientation: Orientation) -> (u32, u32) {
    use Orientation::*;
    match orientation {
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH => (height, width),
        _ => (width, height),
    }
}

/// Decode `data` into an upright grayscale image in f32, reduced by a power of two as far as both
/// sides stay at least `min_side` (aspect ratio kept; smaller images are returned as they are),
/// with the image's upright full-resolution size.
pub fn decode(data: &[u8], limits: &Limits, min_side: u32) -> Result<Decoded, Error> {
    if data.is_empty() {
        return Err(Error::Decode("empty input (0 bytes)".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| Error::Decode(format!("cannot read header: {e}")))?;
    let format = reader.format().ok_or_else(|| {
        let what = crate::image::signature::known(data).map(|name| format!(": {name}")).unwrap_or_default();
        Error::Decode(format!(
            "unrecognised image format{what} ({} bytes, starts with {})",
            data.len(),
            describe_magic(data)
        ))
    })?;
    if format == image::ImageFormat::Jpeg {
        check_jpeg_complete(data)?;
        if let Some((plane, width, height, extent)) = crate::image::jpeg::decode_scaled(data, limits, min_side)? {
            let f = reduction(plane.width(), plane.height(), min_side);
            let pixels = if f == 1 { plane } else { shrink(&plane, min_side) };
            return Ok(Decoded { pixels, width, height, extent: extent.reduced(f64::from(f)) });
        }
    }
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(image_limits);

    let mut decoder = reader.into_decoder().map_err(|e| classify(format, e, None))?;
    let (width, height) = decoder.dimensions();
    limits.check(width, height)?;
    limits.check_bytes(decoder.total_bytes(), &format!("{format:?}"))?;
    // A broken EXIF block is not a broken image: fall back to "no transform".
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| classify(format, e, Some((width, height))))?;
    img.apply_orientation(orientation);
    let (width, height) = upright_size(width, height, orientation);
    let gray = to_gray(img);
    let f = reduction(gray.width(), gray.height(), min_side);
    let extent = Extent::full(gray.width(), gray.height()).reduced(f64::from(f));
    Ok(Decoded { pixels: shrink(&gray, min_side), width, height, extent })
}

/// The JPEG decoder fills a truncated scan with grey and reports success, so a file must reach
/// its end-of-image marker (EOI, FF D9) after a scan. The markers are walked from the front as
/// a decoder reads them: each segment skipped by its length (an EXIF thumbnail, with its own
/// SOI, scans and EOI, lies inside its APP1 segment), each scan's entropy-coded data up to the
/// next marker (`scans::entropy_end`: a data byte FF is stuffed as FF 00; FF D0-D7 are restart
/// markers). The first EOI reached that way ends the image: bytes appended after it (the video
/// of a phone's motion photo, a zip) are never read, whatever byte pairs they hold.
fn check_jpeg_complete(data: &[u8]) -> Result<(), Error> {
    let truncated = || Error::Decode("Jpeg: truncated (no end-of-image marker after the last scan)".into());
    let (mut at, mut scanned) = (2, false); // after the SOI the format sniffing found
    loop {
        // The next marker: FF and a code, after any fill bytes FF (and, as libjpeg does, any
        // extraneous bytes before them).
        at += scans::next_ff(data.get(at..).unwrap_or_default()).ok_or_else(truncated)?;
        while data.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&code) = data.get(at) else { return Err(truncated()) };
        at += 1;
        match code {
            0xD9 if scanned => return Ok(()),
            0xD9 => return Err(Error::Decode("Jpeg: no image scan (file truncated before the image data)".into())),
            // No length: SOI, restart markers, TEM (and a stuffed 00 met outside a scan).
            0x00 | 0x01 | 0xD0..=0xD8 => {}
            _ => {
                let length = match data.get(at..at + 2) {
                    Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
                    _ => return Err(truncated()),
                };
                at += length.max(2);
                if at > data.len() {
                    return Err(truncated());
                }
                if code == 0xDA {
                    scanned = true;
                    at = scans::entropy_end(data, at).ok_or_else(truncated)?;
                }
            }
        }
    }
}

/// The decoder's error as ours. Image size is checked by us first where the header allows it
/// (`Limits::check`, `check_bytes`); a limit the decoder itself reaches says what it was reading:
/// * decoding (`size` known, and within our limits): its own buffers for those pixels (TIFF asks
///   for more than the pixels) exceed `max_alloc`;
/// * a TIFF's header: a tag declares more values than the decoder reads (tiff 0.11 refuses a
///   tag whose values would take over its 256 MiB buffer limit). A real image would be far over
///   `max_pixels` first, so this is damage: one flipped byte in a tag's count does it to a file
///   of a few KB;
/// * another format's header: the image's size (PNG sizes a row against `max_alloc` there).
fn classify(format: image::ImageFormat, e: image::ImageError, size: Option<(u32, u32)>) -> Error {
    match (e, size) {
        (image::ImageError::Limits(l), Some((w, h))) => Error::TooLarge(format!(
            "{format:?}: decoding {w}x{h} pixels needs more than max_alloc ({l})"
        )),
        (image::ImageError::Limits(l), None) if format == image::ImageFormat::Tiff => Error::Decode(format!(
            "{format:?}: a header field declares more than the decoder reads, so the file is most likely \
             damaged ({l})"
        )),
        (image::ImageError::Limits(l), None) => Error::TooLarge(format!("{format:?}: {l}")),
        (other, _) => Error::Decode(format!("{format:?}: {other}")),
    }
}

/// A short, printable description of the first bytes; never echoes more than 4 bytes of input.
fn describe_magic(data: &[u8]) -> String {
    let head: Vec<String> = data.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("0x{}", head.join(""))
}

#[inline]
pub(crate) fn luma601(r: u8, g: u8, b: u8) -> u8 {
    // Fixed point BT.601: (299 R + 587 G + 114 B) / 1000, rounded.
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 32768) >> 16) as u8
}

#[inline]
fn over_background(c: u8, a: u8) -> u8 {
    let (c, a) = (u32::from(c), u32::from(a));
    ((c * a + u32::from(ALPHA_BACKGROUND) * (255 - a) + 127) / 255) as u8
}

fn to_gray(img: DynamicImage) -> GrayImage {
    match img {
        DynamicImage::ImageLuma8(g) => g,
        DynamicImage::ImageRgb8(rgb) => {
            let (w, h) = rgb.dimensions();
            let px: Vec<u8> = rgb.as_raw().chunks_exact(3).map(|p| luma601(p[0], p[1], p[2])).collect();
            GrayImage::from_raw(w, h, px).expect("buffer size matches dimensions")
        }
        DynamicImage::ImageLumaA8(la) => {
            let (w, h) = la.dimensions();
            let px: Vec<u8> = la.as_raw().chunks_exact(2).map(|p| over_background(p[0], p[1])).collect();
            GrayImage::from_raw(w, h, px).expect("buffer size matches dimensions")
        }
        other if !other.color().has_alpha() => to_gray(DynamicImage::ImageRgb8(other.to_rgb8())),
        other => {
            let rgba = other.into_rgba8(); // no copy when it already is RGBA8 (GIF, RGBA PNG/WebP)
            let (w, h) = rgba.dimensions();
            let px: Vec<u8> = rgba
                .as_raw()
                .chunks_exact(4)
                .map(|p| {
                    let a = p[3];
                    luma601(over_background(p[0], a), over_background(p[1], a), over_background(p[2], a))
                })
                .collect();
            GrayImage::from_raw(w, h, px).expect("buffer size matches dimensions")
        }
    }
}

/// The largest power of two f such that both sides, divided by f and rounded up, stay at least
/// `min_side`. Both reductions use it: the scaled IDCT for JPEG (capped at 8) and `shrink`.
pub(crate) fn reduction(width: u32, height: u32, min_side: u32) -> u32 {
    let min_side = min_side.max(1);
    let mut f = 1u32;
    while f < 1 << 30 && width.div_ceil(2 * f) >= min_side && height.div_ceil(2 * f) >= min_side {
        f *= 2;
    }
    f
}

/// Box-average by `reduction(width, height, min_side)`, into f32 (no rounding).
///
/// The same rule as the DCT-scaled JPEG path (`jpeg::pick_denominator`), so one picture stored as
/// JPEG and as PNG reaches the hasher's resampler at the same size and nearly the same pixels.
/// The resampler then works on a small image only.
pub fn shrink<T: Copy + Into<f32>>(img: &ImageBuffer<Luma<T>, Vec<T>>, min_side: u32) -> Plane
where
    Luma<T>: image::Pixel<Subpixel = T>,
{
    let (w, h) = img.dimensions();
    let f = reduction(w, h, min_side);
    let src = img.as_raw();
    if f == 1 {
        return Plane::from_raw(w, h, src.iter().map(|&v| v.into()).collect()).expect("same size");
    }
    // ceil, as the scaled IDCT: the last row and column average the pixels they have.
    let (ow, oh) = (w.div_ceil(f), h.div_ceil(f));
    let mut acc = vec![0f64; ow as usize];
    let mut out = Plane::new(ow, oh);
    for oy in 0..oh {
        acc.iter_mut().for_each(|a| *a = 0.0);
        let rows = oy * f..((oy + 1) * f).min(h);
        let nrows = rows.len() as u32;
        for y in rows {
            let row = &src[(y * w) as usize..((y + 1) * w) as usize];
            for (ox, chunk) in row.chunks(f as usize).enumerate() {
                acc[ox] += chunk.iter().map(|&v| f64::from(v.into())).sum::<f64>();
            }
        }
        for (ox, a) in acc.iter().enumerate() {
            let area = nrows * (f.min(w - ox as u32 * f));
            out.put_pixel(ox as u32, oy, Luma([(a / f64::from(area)) as f32]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The completeness test on marker layouts: the first EOI after a scan, walking the
    /// segments by their lengths, wherever the thumbnails are and whatever bytes are appended.
    #[test]
    fn a_jpeg_is_complete_when_its_marker_walk_reaches_an_eoi_after_a_scan() {
        const SOI: &[u8] = &[0xFF, 0xD8];
        const APP0: &[u8] = &[0xFF, 0xE0, 0x00, 0x04, 0xD9, 0xDA]; // FF D9 / FF DA pairs inside
        // A scan header (length 8), then entropy-coded data with a stuffed FF 00, a restart
        // marker and fill bytes before the next marker.
        const SOS: &[u8] = &[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 63, 0, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xFF];
        const DHT: &[u8] = &[0xFF, 0xC4, 0x00, 0x03, 0xDA];
        const EOI: &[u8] = &[0xFF, 0xD9];
        // An EXIF thumbnail: a whole JPEG inside an APP1 segment.
        let inner = [SOI, SOS, EOI].concat();
        let thumbnail = [&[0xFF, 0xE1][..], &((inner.len() + 2) as u16).to_be_bytes(), &inner].concat();
        let ok = |parts: &[&[u8]]| check_jpeg_complete(&parts.concat()).is_ok();
        assert!(ok(&[SOI, APP0, SOS, EOI]));
        assert!(ok(&[SOI, SOS, DHT, SOS, EOI])); // progressive: several scans
        assert!(ok(&[SOI, &thumbnail, SOS, EOI]));
        // Appended bytes are never read: a later scan without its EOI, a lone EOI, anything.
        assert!(ok(&[SOI, SOS, EOI, SOS]));
        assert!(ok(&[SOI, SOS, EOI, &[0xFF, 0xDA, 0x01, 0xFF], b"PK\x03\x04 zip"]));
        assert!(!ok(&[SOI, SOS])); // cut inside the scan
        assert!(!ok(&[SOI, SOS, &[0xFF]])); // cut in the marker's fill bytes
        assert!(!ok(&[SOI, &thumbnail, SOS])); // the thumbnail's EOI is not the image's
        assert!(!ok(&[SOI, SOS, DHT, SOS])); // a later scan, cut
        assert!(!ok(&[SOI, SOS, DHT, &SOS[..6]])); // cut inside a scan header
        assert!(!ok(&[SOI, &thumbnail[..10]])); // cut inside a segment
        for cut in [&[SOI, &[0xFF, 0xE0, 0x00, 0x02]].concat(), &[SOI, EOI].concat()] {
            let err = check_jpeg_complete(cut).unwrap_err();
            assert!(err.to_string().contains("no image scan") || err.to_string().contains("truncated"), "{err}");
        }
        let err = check_jpeg_complete(&[SOI, APP0, EOI].concat()).unwrap_err();
        assert!(err.to_string().contains("no image scan"), "{err}");
    }

    #[test]
    fn shrink_averages_blocks() {
        let img = GrayImage::from_fn(8, 4, |x, _| Luma([if x % 2 == 0 { 0 } else { 200 }]));
        let out = shrink(&img, 2);
        assert_eq!(out.dimensions(), (4, 2));
        assert!(out.pixels().all(|p| p.0[0] == 100.0));
        // Ceil, with partial edge blocks averaged over the pixels they hold; no rounding.
        let odd = GrayImage::from_fn(9, 9, |x, _| Luma([if x == 8 { 40 } else { 101 }]));
        let out = shrink(&odd, 3);
        assert_eq!(out.dimensions(), (3, 3));
        assert_eq!((out.get_pixel(1, 1).0[0], out.get_pixel(2, 2).0[0]), (101.0, 40.0));
        let halves = GrayImage::from_fn(2, 2, |x, _| Luma([x as u8]));
        assert_eq!(shrink(&halves, 1).as_raw(), &vec![0.5]);
    }

    #[test]
    fn shrink_keeps_small_images() {
        let img = GrayImage::new(10, 7);
        assert_eq!(shrink(&img, 64).dimensions(), (10, 7));
    }

    #[test]
    fn alpha_composites_onto_white() {
        assert_eq!(over_background(0, 0), 255);
        assert_eq!(over_background(0, 255), 0);
        assert_eq!(over_background(100, 255), 100);
    }

    #[test]
    fn magic_never_echoes_more_than_four_bytes() {
        assert_eq!(describe_magic(b"hello world"), "0x68656c6c");
    }
}
