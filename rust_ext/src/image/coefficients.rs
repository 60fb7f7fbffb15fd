//! JPEG at a reduced scale, rebuilt in f32 from the luma plane's DCT coefficients.
//!
//! libjpeg-turbo's 1/2 and 1/4 scaled IDCTs fold each block's high odd coefficients into the
//! reduced pixels, and they round the result to 8 bits. A low-quality copy quantises those
//! coefficients to zero where its original keeps them, and at 1/4 scale one grey level is close
//! to a low-contrast picture's weak frequencies: both moved pHash 16's bits under JPEG q30
//! (`benchmarks/eval_decode.py`). Here each 8 x 8 block's low (8/d) x (8/d) coefficients are
//! dequantised, and each of the block's (8/d)² reduced pixels is the mean of that low-passed
//! block over its d x d pixels, kept in f32. For d = 8 that is the block's mean, as libjpeg's;
//! for d = 1 the exact IDCT, which the decoder takes from libjpeg-turbo's SIMD code instead (at
//! full size nothing is folded, and on 177 web JPEGs decoded at full size the f32 rebuild moved
//! pHash 16 under JPEG q30 and q70 about as much as the 8-bit decode did).
//!
//! A baseline JPEG's coefficients come from this crate's own entropy decoder (`baseline.rs`),
//! which keeps only the luma's low coefficients and skips the rest. Any other JPEG's, and any
//! baseline JPEG that decoder declines, come from libjpeg-turbo itself: `tj3Transform` with no
//! transform and no output (`TJXOPT_NOOUTPUT`) hands each row of luma blocks to a callback
//! (`tjtransform::customFilter`). Both give the same integers, so the same plane. They are quantised; the steps come from the file's DQT segment
//! for the frame's first component. A progressive JPEG is handed over without the scans the
//! plane does not read (`scans.rs`): its chroma AC scans, and at 1/8 its luma AC scans. Only
//! 8-bit grey and YCbCr JPEGs are taken; for the rest (and on any error or warning) this answers
//! `None` and the caller decodes through the scaled IDCT.
use std::cell::RefCell;
use std::f64::consts::PI;
use std::panic::{catch_unwind, AssertUnwindSafe};

use turbojpeg::libc::{c_int, c_short, c_uchar};
use turbojpeg::raw;

use crate::image::baseline;
use crate::image::decode::Plane;
use crate::image::jpeg::header_segments;
use crate::image::scans;

/// JPEG's zig-zag order: the natural (row-major) index of the i-th coefficient stored in a DQT.
pub(crate) const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61,
    54, 47, 55, 62, 63,
];

/// A TurboJPEG instance initialised for transforms, destroyed with its thread.
struct Transformer(raw::tjhandle);

impl Drop for Transformer {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { raw::tj3Destroy(self.0) }
    }
}

thread_local! {
    static TRANSFORMER: RefCell<Option<Transformer>> = const { RefCell::new(None) };
}

/// The quantisation steps (natural order) of the table the frame's first component uses, from
/// the DQT segments before the first scan (where a table cut short by the end of the data, or
/// any other oddity, gives `None`); `None` unless the frame is 8-bit DCT (baseline,
/// extended or progressive, Huffman or arithmetic) and the table is there.
pub(crate) fn luma_steps(data: &[u8]) -> Option<[u16; 64]> {
    let mut tables = [None::<[u16; 64]>; 4];
    let mut luma = None;
    for (marker, body) in header_segments(data) {
        match marker {
            0xDB => {
                let mut at = 0;
                while at < body.len() {
                    let (wide, id) = (body[at] >> 4 == 1, usize::from(body[at] & 0x0F));
                    let size = if wide { 2 } else { 1 };
                    let entries = body.get(at + 1..at + 1 + 64 * size)?;
                    let mut steps = [0u16; 64];
                    for (k, &natural) in ZIGZAG.iter().enumerate() {
                        steps[natural] =
                            if wide { u16::from_be_bytes([entries[2 * k], entries[2 * k + 1]]) } else { u16::from(entries[k]) };
                    }
                    *tables.get_mut(id)? = Some(steps);
                    at += 1 + 64 * size;
                }
            }
            // SOF0-2 and SOF9-10: 8-bit DCT frames. Body: precision, height, width, count, then
            // (id, sampling, table) per component.
            0xC0..=0xC2 | 0xC9 | 0xCA => {
                if body.first() != Some(&8) {
                    return None;
                }
                luma = Some(usize::from(*body.get(8)? & 0x0F));
            }
            0xC3 | 0xC5..=0xC7 | 0xCB | 0xCD..=0xCF => return None, // lossless, hierarchical
            _ => {}
        }
    }
    tables.get(luma?).copied().flatten().filter(|steps| steps.iter().all(|&s| s > 0))
}

/// The last zig-zag position of the m x m low coefficients, the ones the plane at 1/(8 / m) reads.
fn last_position(m: usize) -> u8 {
    (0u8..64).filter(|&k| ZIGZAG[usize::from(k)] / 8 < m && ZIGZAG[usize::from(k)] % 8 < m).max().unwrap_or(0)
}

/// `weights[i * m + u]`: the mean of JPEG's (orthonormal) 8-point DCT basis function u over the
/// d samples of reduced pixel i, for m = 8 / d.
fn pixel_weights(d: usize) -> Vec<f32> {
    let m = 8 / d;
    let mut weights = vec![0f32; m * m];
    for i in 0..m {
        for u in 0..m {
            let scale = if u == 0 { (1.0f64 / 8.0).sqrt() } else { 0.5 };
            let sum: f64 = (i * d..(i + 1) * d).map(|x| (PI * u as f64 * (2 * x + 1) as f64 / 16.0).cos()).sum();
            weights[i * m + u] = (scale * sum / d as f64) as f32;
        }
    }
    weights
}

/// Where the callback writes the reduced luma plane.
struct Sink {
    /// Each kept coefficient's step (`steps[u * m + v]`) and the pixel weights (`pixel_weights`).
    steps: Vec<f32>,
    weights: Vec<f32>,
    m: usize,
    /// The luma plane in blocks, as the frame's size says it must be.
    blocks: (usize, usize),
    /// (blocks.0 * m) x (blocks.1 * m), row-major.
    pixels: Vec<f32>,
}

impl Sink {
    fn new(steps: &[u16; 64], d: usize, blocks: (usize, usize)) -> Sink {
        let m = 8 / d;
        let kept = (0..m * m).map(|i| f32::from(steps[(i / m) * 8 + i % m])).collect();
        Sink { steps: kept, weights: pixel_weights(d), m, blocks, pixels: vec![0.0; blocks.0 * m * blocks.1 * m] }
    }

    /// One array of block rows (`coeffs`, 64 per block, natural order, quantised) at block row
    /// `first_row`; false when it does not fit the plane expected.
    fn take(&mut self, coeffs: &[c_short], width_blocks: usize, first_row: usize) -> bool {
        if width_blocks < self.blocks.0 {
            return false;
        }
        match self.m {
            8 => self.take_sized::<8>(coeffs, width_blocks, first_row),
            4 => self.take_sized::<4>(coeffs, width_blocks, first_row),
            2 => self.take_sized::<2>(coeffs, width_blocks, first_row),
            _ => self.take_sized::<1>(coeffs, width_blocks, first_row),
        }
        true
    }

    /// `take` for m = M, with the block's arithmetic on arrays of a size known when compiled
    /// (the compiler vectorises the rows), without a branch on the coefficients' values: a row
    /// of zero coefficients adds exact zeros (128 + w 0 is 128 exactly).
    fn take_sized<const M: usize>(&mut self, coeffs: &[c_short], width_blocks: usize, first_row: usize) {
        let stride = self.blocks.0 * M;
        // weights[i][u], and by_column[v][j] = weights[j][v]; steps[u][v]
        let mut weights = [[0f32; M]; M];
        let mut by_column = [[0f32; M]; M];
        let mut steps = [[0f32; M]; M];
        for i in 0..M {
            for u in 0..M {
                weights[i][u] = self.weights[i * M + u];
                by_column[u][i] = self.weights[i * M + u];
                steps[i][u] = self.steps[i * M + u];
            }
        }
        for (r, row) in coeffs.chunks_exact(64 * width_blocks).enumerate() {
            let by = first_row + r;
            if by >= self.blocks.1 {
                break; // rows of padding blocks
            }
            let out = &mut self.pixels[by * M * stride..(by + 1) * M * stride];
            for (bx, block) in row.chunks_exact(64).take(self.blocks.0).enumerate() {
                // rows[u][j]: coefficient row u through the horizontal weights of pixel column j.
                let mut rows = [[0f32; M]; M];
                for u in 0..M {
                    let coefficients: &[c_short; M] = block[u * 8..u * 8 + M].try_into().expect("M <= 8");
                    for v in 0..M {
                        let q = f32::from(coefficients[v]) * steps[u][v];
                        for (r, b) in rows[u].iter_mut().zip(&by_column[v]) {
                            *r += q * b;
                        }
                    }
                }
                for (i, pixel_weights) in weights.iter().enumerate() {
                    let mut line = [128f32; M];
                    for u in 0..M {
                        let w = pixel_weights[u];
                        for (p, r) in line.iter_mut().zip(&rows[u]) {
                            *p += w * r;
                        }
                    }
                    out[i * stride + bx * M..][..M].copy_from_slice(&line);
                }
            }
        }
    }
}

unsafe extern "C" fn take_luma(
    coeffs: *mut c_short,
    array: raw::tjregion,
    plane: raw::tjregion,
    component: c_int,
    _transform_id: c_int,
    transform: *mut raw::tjtransform,
) -> c_int {
    if component != 0 {
        return 0;
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        let (width_blocks, rows) = ((array.w / 8) as usize, (array.h / 8) as usize);
        // SAFETY: `data` is the Sink `luma_plane` passed in, alive for the whole call, and
        // libjpeg-turbo hands `rows` rows of `width_blocks` blocks of 64 coefficients.
        let sink = unsafe { &mut *((*transform).data as *mut Sink) };
        if ((plane.w / 8) as usize, (plane.h / 8) as usize) != sink.blocks {
            return false; // luma is not the full-size plane (an unusual sampling)
        }
        let coeffs = unsafe { std::slice::from_raw_parts(coeffs, width_blocks * rows * 64) };
        sink.take(coeffs, width_blocks, (array.y / 8) as usize)
    }));
    crate::error::forget_panic(); // a panic here is this callback's failure, said by its -1
    if matches!(result, Ok(true)) {
        0
    } else {
        -1
    }
}

/// The `width` x `height` JPEG `data` (grey or YCbCr, 8-bit) reduced by 1/`d` (d = 1, 2, 4 or 8):
/// ceil(width / d) x ceil(height / d) pixels of luma in f32, as stored (not turned upright).
pub fn luma_plane(data: &[u8], width: usize, height: usize, d: usize) -> Option<Plane> {
    if ![1, 2, 4, 8].contains(&d) {
        return None;
    }
    let steps = luma_steps(data)?;
    from_baseline(data, &steps, width, height, d)
        .or_else(|| rebuild(&scans::for_luma(data, last_position(8 / d)), &steps, width, height, d))
}

/// `luma_plane` of a baseline JPEG through this crate's entropy decoder; `None` where it declines.
fn from_baseline(data: &[u8], steps: &[u16; 64], width: usize, height: usize, d: usize) -> Option<Plane> {
    let blocks = (width.div_ceil(8), height.div_ceil(8));
    let mut sink = Sink::new(steps, d, blocks);
    baseline::luma_rows(data, 8 / d, blocks, |rows, width_blocks, first_row| sink.take(rows, width_blocks, first_row))?;
    finish(sink, width, height, d)
}

/// `luma_plane` from `stream`, the JPEG's bytes or those of the scans the plane reads, through
/// libjpeg-turbo.
fn rebuild(stream: &[u8], steps: &[u16; 64], width: usize, height: usize, d: usize) -> Option<Plane> {
    let blocks = (width.div_ceil(8), height.div_ceil(8));
    let mut sink = Sink::new(steps, d, blocks);
    let done = TRANSFORMER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            // SAFETY: tj3Init has no preconditions; a null handle is checked.
            let handle = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_TRANSFORM as c_int) };
            if handle.is_null() {
                return false;
            }
            *slot = Some(Transformer(handle));
        }
        let handle = slot.as_ref().expect("transformer was just created").0;
        let transform = raw::tjtransform {
            r: raw::tjregion { x: 0, y: 0, w: 0, h: 0 },
            op: raw::TJXOP_TJXOP_NONE as c_int,
            options: (raw::TJXOPT_NOOUTPUT | raw::TJXOPT_GRAY | raw::TJXOPT_COPYNONE) as c_int,
            data: (&mut sink as *mut Sink).cast(),
            customFilter: Some(take_luma),
        };
        let mut out: *mut c_uchar = std::ptr::null_mut();
        let mut out_size = 0;
        // SAFETY: `stream` outlives the call; with TJXOPT_NOOUTPUT nothing is written to `out`;
        // `transform.data` points at `sink`, which outlives the call.
        let status =
            unsafe { raw::tj3Transform(handle, stream.as_ptr(), stream.len() as _, 1, &mut out, &mut out_size, &transform) };
        if status != 0 {
            // libjpeg-turbo keeps state in the handle; after an image it refused, start afresh.
            *slot = None;
        }
        status == 0
    });
    if !done {
        return None;
    }
    finish(sink, width, height, d)
}

/// The plane a filled `sink` holds, without its padding.
fn finish(sink: Sink, width: usize, height: usize, d: usize) -> Option<Plane> {
    let blocks = sink.blocks;
    // The plane holds whole blocks: drop the padding columns and rows in place (each row moves
    // to an offset at or before its own), without a second copy of the image.
    let stride = blocks.0 * 8 / d;
    let (w, h) = (width.div_ceil(d), height.div_ceil(d));
    let mut pixels = sink.pixels;
    if stride != w {
        for row in 1..h {
            pixels.copy_within(row * stride..row * stride + w, row * w);
        }
    }
    pixels.truncate(w * h);
    Plane::from_raw(w as u32, h as u32, pixels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use turbojpeg::{Compressor, Decompressor, Image, PixelFormat, ScalingFactor, Subsamp};

    /// A textured 8-bit grey test picture, `w` x `h`.
    fn picture(w: usize, h: usize) -> Vec<u8> {
        (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f64, (i / w) as f64);
                (128.0 + 60.0 * (x / 9.0).sin() * (y / 13.0).cos() + 40.0 * ((x + 2.0 * y) / 5.0).sin()) as u8
            })
            .collect()
    }

    fn encode(pixels: &[u8], w: usize, h: usize, format: PixelFormat, quality: i32) -> Vec<u8> {
        let mut c = Compressor::new().unwrap();
        c.set_quality(quality).unwrap();
        c.set_subsamp(if format == PixelFormat::GRAY { Subsamp::Gray } else { Subsamp::Sub2x2 }).unwrap();
        let channels = format.size();
        let image = Image { pixels, width: w, pitch: w * channels, height: h, format };
        c.compress_to_vec(image).unwrap()
    }

    /// libjpeg-turbo's own decode of `jpeg` at 1/d, grey.
    fn libjpeg(jpeg: &[u8], w: usize, h: usize, d: usize) -> Vec<u8> {
        let mut dec = Decompressor::new().unwrap();
        let factor = ScalingFactor::new(1, d);
        dec.set_scaling_factor(factor).unwrap();
        let (sw, sh) = (factor.scale(w), factor.scale(h));
        let mut out = vec![0u8; sw * sh];
        dec.decompress(jpeg, Image { pixels: &mut out[..], width: sw, pitch: sw, height: sh, format: PixelFormat::GRAY }).unwrap();
        out
    }

    fn max_difference(ours: &Plane, theirs: &[u8]) -> f32 {
        ours.as_raw().iter().zip(theirs).map(|(a, &b)| (a - f32::from(b)).abs()).fold(0.0, f32::max)
    }

    /// At full size every coefficient is kept, and at 1/8 only the DC term: both are what
    /// libjpeg-turbo's decode gives at that scale, to its rounding (and its fixed-point IDCT).
    #[test]
    fn full_and_eighth_scale_match_libjpeg() {
        let (w, h) = (67, 45); // partial blocks on both edges
        let grey = picture(w, h);
        let rgb: Vec<u8> = grey.iter().flat_map(|&v| [v, v, v]).collect();
        for jpeg in [encode(&grey, w, h, PixelFormat::GRAY, 75), encode(&rgb, w, h, PixelFormat::RGB, 40)] {
            for d in [1, 8] {
                let ours = luma_plane(&jpeg, w, h, d).expect("a grey or YCbCr JPEG");
                assert_eq!(ours.dimensions(), (w.div_ceil(d) as u32, h.div_ceil(d) as u32));
                let diff = max_difference(&ours, &libjpeg(&jpeg, w, h, d));
                assert!(diff <= 1.0, "1/{d}: {diff} grey levels from libjpeg-turbo's");
            }
        }
    }

    /// The basis functions but the DC term average to nothing over a block, so at every scale
    /// a block's reduced pixels keep its mean: the 1/8 plane's pixel.
    #[test]
    fn every_scale_keeps_each_blocks_mean() {
        let (w, h) = (64, 48);
        let jpeg = encode(&picture(w, h), w, h, PixelFormat::GRAY, 60);
        let eighth = luma_plane(&jpeg, w, h, 8).unwrap();
        for d in [1, 2, 4] {
            let plane = luma_plane(&jpeg, w, h, d).unwrap();
            let m = (8 / d) as u32;
            for (bx, by, mean) in eighth.enumerate_pixels() {
                let sum: f32 = (0..m * m).map(|k| plane.get_pixel(bx * m + k % m, by * m + k / m).0[0]).sum();
                let ours = sum / (m * m) as f32;
                assert!((ours - mean.0[0]).abs() < 1e-3, "1/{d}, block ({bx}, {by}): {ours} against {}", mean.0[0]);
            }
        }
    }

    /// A progressive JPEG of `picture(w, h)`: grey, or YCbCr with `subsamp`, Huffman or arithmetic.
    fn progressive(w: usize, h: usize, subsamp: Option<Subsamp>, arithmetic: bool) -> Vec<u8> {
        let grey = picture(w, h);
        let rgb: Vec<u8> = grey.iter().enumerate().flat_map(|(i, &v)| [v, v.wrapping_add((i % 7) as u8), 255 - v]).collect();
        let mut c = Compressor::new().unwrap();
        c.set_quality(85).unwrap();
        c.set_progressive(true).unwrap();
        c.set_arithmetic(arithmetic).unwrap();
        let image = match subsamp {
            Some(s) => {
                c.set_subsamp(s).unwrap();
                Image { pixels: &rgb[..], width: w, pitch: w * 3, height: h, format: PixelFormat::RGB }
            }
            None => {
                c.set_subsamp(Subsamp::Gray).unwrap();
                Image { pixels: &grey[..], width: w, pitch: w, height: h, format: PixelFormat::GRAY }
            }
        };
        c.compress_to_vec(image).unwrap()
    }

    /// Without the scans it does not read, a progressive JPEG gives the plane its every scan gives.
    #[test]
    fn cut_scans_leave_the_plane_as_it_was() {
        let (w, h) = (75, 53);
        for subsamp in [None, Some(Subsamp::Sub2x2), Some(Subsamp::None), Some(Subsamp::Sub2x1)] {
            for arithmetic in [false, true] {
                let jpeg = progressive(w, h, subsamp, arithmetic);
                let steps = luma_steps(&jpeg).unwrap();
                for d in [2, 4, 8] {
                    let stream = scans::for_luma(&jpeg, last_position(8 / d));
                    let case = format!("{subsamp:?}, arithmetic {arithmetic}, 1/{d}");
                    // Colour always has chroma scans to cut; grey has luma AC bands above 1/8's.
                    if subsamp.is_some() || d == 8 {
                        assert!(stream.len() < jpeg.len(), "{case}: nothing cut");
                    }
                    let cut = rebuild(&stream, &steps, w, h, d).unwrap_or_else(|| panic!("{case}: refused"));
                    let whole = rebuild(&jpeg, &steps, w, h, d).unwrap();
                    assert_eq!(cut.as_raw(), whole.as_raw(), "{case}");
                }
            }
        }
    }

    /// Damaged copies: whenever libjpeg-turbo takes a mutated progressive JPEG whole, without a
    /// warning, it takes the cut bytes too and the plane is the same (a cut scan can only hide
    /// damage, never add any).
    #[test]
    fn a_damaged_file_that_decodes_whole_decodes_alike_cut() {
        let (w, h) = (75, 53);
        let mut state = 12345u32;
        let mut next = move || {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (state >> 8) as usize
        };
        let (mut whole_ok, mut cut_differs) = (0, 0);
        for subsamp in [Some(Subsamp::Sub2x2), Some(Subsamp::None), None] {
            let jpeg = progressive(w, h, subsamp, false);
            let steps = luma_steps(&jpeg).unwrap();
            for _ in 0..600 {
                let mut copy = jpeg.clone();
                for _ in 0..1 + next() % 3 {
                    let at = 2 + next() % (copy.len() - 2);
                    copy[at] = next() as u8;
                }
                for d in [2, 4, 8] {
                    let Some(whole) = rebuild(&copy, &steps, w, h, d) else { continue };
                    whole_ok += 1;
                    let stream = scans::for_luma(&copy, last_position(8 / d));
                    cut_differs += usize::from(stream.len() != copy.len());
                    let cut = rebuild(&stream, &steps, w, h, d).expect("the whole file decoded");
                    assert_eq!(cut.as_raw(), whole.as_raw(), "{subsamp:?}, 1/{d}");
                }
            }
        }
        // The property was tested on cut streams, not only on copies left whole.
        assert!(whole_ok > 100 && cut_differs > 100, "{whole_ok} decoded whole, {cut_differs} of them cut");
    }

    /// A baseline JPEG of `picture(w, h)` through libjpeg-turbo's own options: grey or colour
    /// with `subsamp` (a `TJSAMP`), optimised Huffman tables or the standard ones, and a restart
    /// marker every `restart` MCUs (0: none).
    fn baseline_jpeg(w: usize, h: usize, subsamp: i32, quality: i32, optimize: bool, restart: i32) -> Vec<u8> {
        let grey = picture(w, h);
        let rgb: Vec<u8> = grey.iter().enumerate().flat_map(|(i, &v)| [v, v.wrapping_add((i % 11) as u8), 255 - v]).collect();
        let is_grey = subsamp == raw::TJSAMP_TJSAMP_GRAY;
        let (pixels, format, channels) =
            if is_grey { (&grey, raw::TJPF_TJPF_GRAY, 1) } else { (&rgb, raw::TJPF_TJPF_RGB, 3) };
        // SAFETY: the handle is checked and destroyed; the source holds w x h pixels of
        // `channels` bytes; the output buffer is libjpeg-turbo's, copied, then freed.
        unsafe {
            let handle = raw::tj3Init(raw::TJINIT_TJINIT_COMPRESS as c_int);
            assert!(!handle.is_null());
            for (param, value) in [
                (raw::TJPARAM_TJPARAM_QUALITY, quality),
                (raw::TJPARAM_TJPARAM_SUBSAMP, subsamp),
                (raw::TJPARAM_TJPARAM_OPTIMIZE, i32::from(optimize)),
                (raw::TJPARAM_TJPARAM_RESTARTBLOCKS, restart),
            ] {
                assert_eq!(raw::tj3Set(handle, param as c_int, value), 0);
            }
            let (mut out, mut size): (*mut c_uchar, _) = (std::ptr::null_mut(), 0);
            let status = raw::tj3Compress8(
                handle,
                pixels.as_ptr(),
                w as c_int,
                (w * channels) as c_int,
                h as c_int,
                format as c_int,
                &mut out,
                &mut size,
            );
            assert_eq!(status, 0);
            let jpeg = std::slice::from_raw_parts(out, size as usize).to_vec();
            raw::tj3Free(out.cast());
            raw::tj3Destroy(handle);
            jpeg
        }
    }

    /// The plane from our own entropy decoder (`baseline.rs`) alone; `None` where it declines.
    fn decoded_here(jpeg: &[u8], w: usize, h: usize, d: usize) -> Option<Plane> {
        from_baseline(jpeg, &luma_steps(jpeg)?, w, h, d)
    }

    /// The plane through libjpeg-turbo's coefficients alone; `None` where it refuses the file.
    fn through_libjpeg(jpeg: &[u8], w: usize, h: usize, d: usize) -> Option<Plane> {
        rebuild(jpeg, &luma_steps(jpeg).expect("the file's luma quantisation steps"), w, h, d)
    }

    /// Every sampling, both kinds of Huffman table, with and without restart markers, sizes
    /// that end in partial blocks and MCUs: the baseline decoder takes the file and gives the
    /// very plane libjpeg-turbo's coefficients give.
    #[test]
    fn baseline_decoder_gives_libjpegs_plane() {
        let samplings = [
            raw::TJSAMP_TJSAMP_GRAY,
            raw::TJSAMP_TJSAMP_444,
            raw::TJSAMP_TJSAMP_422,
            raw::TJSAMP_TJSAMP_420,
            raw::TJSAMP_TJSAMP_440,
            raw::TJSAMP_TJSAMP_411,
            raw::TJSAMP_TJSAMP_441,
        ];
        let mut cases = 0;
        for (i, &subsamp) in samplings.iter().enumerate() {
            for (w, h) in [(75, 53), (64, 48), (131, 9)] {
                for (quality, optimize, restart) in [(90, false, 0), (30, true, 0), (75, false, 3), (5, true, 1), (100, true, 0)] {
                    let jpeg = baseline_jpeg(w, h, subsamp, quality, optimize, restart);
                    assert_eq!(jpeg.windows(2).any(|p| p == [0xFF, 0xDD]), restart > 0);
                    for d in [1, 2, 4, 8] {
                        let case = format!("sampling {i}, {w}x{h}, q{quality}, optimise {optimize}, restart {restart}, 1/{d}");
                        let ours = decoded_here(&jpeg, w, h, d).unwrap_or_else(|| panic!("{case}: declined"));
                        let theirs = through_libjpeg(&jpeg, w, h, d).unwrap();
                        assert_eq!(ours.as_raw(), theirs.as_raw(), "{case}");
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 7 * 3 * 5 * 4);
    }

    /// The baseline photos under `tests/data` decode alike both ways.
    #[test]
    fn baseline_photos_decode_alike() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
        let mut taken = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")) {
                continue;
            }
            let jpeg = std::fs::read(&path).unwrap();
            let Ok(header) = Decompressor::new().unwrap().read_header(&jpeg) else { continue };
            let (w, h) = (header.width, header.height);
            for d in [2, 4, 8] {
                let Some(ours) = decoded_here(&jpeg, w, h, d) else { continue };
                let theirs = through_libjpeg(&jpeg, w, h, d);
                assert_eq!(Some(ours.as_raw()), theirs.as_ref().map(|p| p.as_raw()), "{}, 1/{d}", path.display());
                taken += 1;
            }
        }
        assert!(taken >= 12, "only {taken} baseline decodes");
    }

    /// Damaged copies, in the header and in the data (bytes changed, inserted and deleted,
    /// markers and fill bytes inserted, the file cut short): whatever the baseline decoder takes,
    /// libjpeg-turbo takes without an error or a warning, and to the same plane.
    #[test]
    fn a_damaged_file_the_baseline_decoder_takes_decodes_alike() {
        let mut state = 777u32;
        let mut next = move || {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (state >> 8) as usize
        };
        let (mut taken, mut declined) = (0, 0);
        for (subsamp, restart, optimize) in [
            (raw::TJSAMP_TJSAMP_420, 0, false),
            (raw::TJSAMP_TJSAMP_GRAY, 2, true),
            (raw::TJSAMP_TJSAMP_422, 1, false),
            (raw::TJSAMP_TJSAMP_444, 5, true),
        ] {
            let jpeg = baseline_jpeg(37, 29, subsamp, 85, optimize, restart);
            let scan = jpeg.windows(2).position(|p| p == [0xFF, 0xDA]).unwrap();
            for round in 0..1500 {
                let mut copy = jpeg.clone();
                for _ in 0..1 + next() % 2 {
                    // Half of the damage in the header, half in the data and its end.
                    let at = if round % 2 == 0 { 2 + next() % (scan - 2) } else { scan + next() % (copy.len() - scan - 1) };
                    match next() % 8 {
                        0 => copy.insert(at, next() as u8),
                        1 => drop(copy.remove(at)),
                        2 => copy.splice(at..at, [0xFF, [0xD0, 0xD1, 0xD7, 0xD9, 0xFE, 0xDC, 0x01, 0xFF][next() % 8]]).for_each(drop),
                        3 => copy[at] ^= 1 << (next() % 8),
                        4 => copy[at] = 0xFF,
                        5 => copy[at] = 0,
                        _ => copy[at] = next() as u8,
                    }
                }
                if next() % 8 == 0 {
                    copy.truncate(copy.len() - 1 - next() % 6);
                }
                // The size the caller passes is the header's, as in `decode_scaled`.
                let Ok(header) = Decompressor::new().unwrap().read_header(&copy) else { continue };
                let (w, h) = (header.width, header.height);
                for d in [1, 2, 8] {
                    let Some(ours) = decoded_here(&copy, w, h, d) else {
                        declined += 1;
                        continue;
                    };
                    taken += 1;
                    let theirs = through_libjpeg(&copy, w, h, d);
                    assert_eq!(Some(ours.as_raw()), theirs.as_ref().map(|p| p.as_raw()), "round {round}, 1/{d}");
                }
            }
        }
        assert!(taken > 3000 && declined > 3000, "{taken} taken, {declined} declined");
    }

    /// One JPEG segment: marker, length, body.
    fn segment(marker: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0xFF, marker];
        bytes.extend(((body.len() + 2) as u16).to_be_bytes());
        bytes.extend(body);
        bytes
    }

    /// A grey baseline JPEG written by hand, `w` x `h`: every quantisation step 1, a DC table
    /// whose one code "0" means size 0, an AC table with end of block "00", a run of 16 "01" and
    /// 0xF1 (run 15, size 1) "10", then `data` and the end of image.
    fn handmade_grey(w: u16, h: u16, data: &[u8]) -> Vec<u8> {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend(segment(0xDB, &[[0u8].as_slice(), &[1; 64]].concat()));
        jpeg.extend(segment(0xC0, &[&[8u8][..], &h.to_be_bytes(), &w.to_be_bytes(), &[1, 1, 0x11, 0]].concat()));
        jpeg.extend(segment(0xC4, &[&[0x00u8, 1][..], &[0; 15], &[0x00]].concat()));
        jpeg.extend(segment(0xC4, &[&[0x10u8, 0, 3][..], &[0; 14], &[0x00, 0xF0, 0xF1]].concat()));
        jpeg.extend(segment(0xDA, &[1, 1, 0x00, 0, 63, 0]));
        jpeg.extend(data);
        jpeg.extend([0xFF, 0xD9]);
        jpeg
    }

    /// A run that ends past position 63 sets coefficient 63, as libjpeg's natural order has it.
    #[test]
    fn a_run_past_the_last_position_lands_on_it() {
        // DC size 0, three runs of 16 (k = 49), then run 15 (k = 64) with the value +1.
        let jpeg = handmade_grey(8, 8, &[0b0010_1011, 0b0111_1111]);
        let ours = decoded_here(&jpeg, 8, 8, 1).expect("taken");
        let theirs = through_libjpeg(&jpeg, 8, 8, 1).unwrap();
        assert_eq!(ours.as_raw(), theirs.as_raw());
        assert!(ours.as_raw().iter().any(|&v| v != 128.0), "coefficient 63 was set");
    }

    /// libjpeg refuses sides over 65500 pixels; so does the baseline decoder.
    #[test]
    fn sides_over_65500_are_declined() {
        let data = [vec![0u8; 3070], vec![0x0F]].concat(); // 8188 blocks of "0 00" (DC 0, end)
        let wide = handmade_grey(65501, 8, &data);
        assert!(decoded_here(&wide, 65501, 8, 8).is_none());
        assert!(through_libjpeg(&wide, 65501, 8, 8).is_none());
        let widest = handmade_grey(65500, 8, &data);
        assert!(decoded_here(&widest, 65500, 8, 8).is_some());
    }

    /// Three components are taken as YCbCr only where libjpeg reads them so: with JFIF, with an
    /// Adobe transform of 1, or with no such segment and ids other than 'R', 'G', 'B'.
    #[test]
    fn only_ycbcr_is_taken() {
        let jpeg = baseline_jpeg(75, 53, raw::TJSAMP_TJSAMP_420, 80, false, 0);
        let app0 = jpeg.windows(4).position(|p| p == [0xFF, 0xE0, 0x00, 0x10]).unwrap();
        let adobe = |transform: u8| {
            let mut copy = jpeg.clone();
            copy[app0 + 1] = 0xEE;
            copy[app0 + 4..app0 + 16].copy_from_slice(&[b'A', b'd', b'o', b'b', b'e', 0, 100, 0, 0, 0, 0, transform]);
            copy
        };
        let mut rgb_ids = jpeg.clone();
        rgb_ids[app0 + 7] = b'X'; // no longer JFIF
        let sof = rgb_ids.windows(2).position(|p| p == [0xFF, 0xC0]).unwrap();
        let sos = rgb_ids.windows(2).position(|p| p == [0xFF, 0xDA]).unwrap();
        for (i, id) in b"RGB".iter().enumerate() {
            rgb_ids[sof + 10 + 3 * i] = *id;
            rgb_ids[sos + 5 + 2 * i] = *id;
        }
        for (name, copy, ycc) in [("JFIF", jpeg.clone(), true), ("Adobe 1", adobe(1), true), ("Adobe 0", adobe(0), false), ("Adobe 2", adobe(2), false), ("RGB ids", rgb_ids, false)] {
            let ours = decoded_here(&copy, 75, 53, 2);
            let theirs = through_libjpeg(&copy, 75, 53, 2);
            assert_eq!(ours.is_some(), ycc, "{name}");
            assert_eq!(theirs.is_some(), ycc, "{name}: libjpeg");
        }
    }

    #[test]
    fn last_positions_cover_the_low_coefficients() {
        assert_eq!([1, 2, 4, 8].map(last_position), [0, 4, 24, 63]);
    }

    #[test]
    fn weights_average_the_basis() {
        // d = 8: the one pixel is the DC term over sqrt(8), and the other basis functions
        // average to nothing over a whole block.
        let w = pixel_weights(8);
        assert!((w[0] - (1.0f32 / 8.0).sqrt()).abs() < 1e-7);
        // d = 1: the basis itself, orthonormal.
        let w = pixel_weights(1);
        for u in 0..8 {
            for v in 0..8 {
                let dot: f32 = (0..8).map(|i| w[i * 8 + u] * w[i * 8 + v]).sum();
                assert!((dot - if u == v { 1.0 } else { 0.0 }).abs() < 1e-6, "{u} {v} {dot}");
            }
        }
    }

    #[test]
    fn steps_are_read_in_natural_order() {
        let jpeg = encode(&picture(16, 16), 16, 16, PixelFormat::GRAY, 50);
        let steps = luma_steps(&jpeg).unwrap();
        // The standard luma table at quality 50: its first row and first column.
        assert_eq!(&steps[..4], &[16, 11, 10, 16]);
        assert_eq!([steps[8], steps[16], steps[24]], [12, 14, 14]);
    }

    #[test]
    fn not_a_dct_frame_is_not_taken() {
        let mut jpeg = encode(&picture(16, 16), 16, 16, PixelFormat::GRAY, 50);
        let sof = jpeg.windows(2).position(|p| p == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 1] = 0xC3; // lossless
        assert!(luma_steps(&jpeg).is_none());
        assert!(luma_steps(b"not a jpeg").is_none());
    }
}

