//! Decode-and-hash, one image or a batch. Each input gets exactly one result, and a panic in
//! the decoder or hasher becomes that input's error instead of unwinding further. `algorithm`
//! holds the supported algorithms and their bit counts; `phash`, `dhash` and `average` (aHash and
//! the median hash) the last steps we compute ourselves, `blockhash` image_hasher's blockhash
//! computed faster, `threshold` the median and bit packing they share, `dihedral` the turns the
//! variants are hashed from.
pub mod algorithm;
pub mod average;
pub mod blockhash;
pub mod dihedral;
pub mod dhash;
pub mod phash;
pub mod threshold;

use rayon::prelude::*;

use crate::error::{guarded, Error};
use crate::hash::algorithm::{Algorithm, HashSpec};
use crate::hash::average::Level;
pub use crate::hash::dihedral::DIHEDRAL;
use crate::hash::dihedral::turn;
use crate::image::decode::{decode, Decoded, Limits};
use crate::image::grid::{block_means, quality, Picture, QUALITY_SIDE};
use crate::pool;

/// The version of the hashes this crate computes. Bump it whenever any image's hash changes (a
/// new resize, a fixed rounding): state written with another version would silently miss
/// duplicates, so it is recorded in every state manifest and checked on load.
///
/// 2: the picture's exact extent is resampled onto the hash grid (`image/grid.rs`; pHash in
/// f32, `phash.rs`), and dihedral variants turn the extent with the pixels.
/// 3: dHash, aHash, median and double-gradient decode at a larger working side
/// (`HashSpec::working_side`), so turned copies land near their dihedral variant.
/// 4: dHash compares its grid in f32, with a dead zone, instead of image_hasher's 8-bit grid
/// (`dhash.rs`), and decodes at 6x its grid's width instead of 8x. Only dHash hashes changed.
/// 5: pHash decodes at 3x its DCT grid instead of 2x (`HashSpec::working_side`), and every grid
/// is resampled with a Lanczos3 of one polynomial sine (`grid.rs`; the same kernel to 1e-9).
/// pHash hashes changed.
/// 6: pHash's DCT grid is 4n x 4n instead of 2n x 2n (`phash.rs`), and its quality score comes
/// from the block means of that grid. pHash hashes changed.
/// 7: aHash and the median hash compare their grid in f32 instead of image_hasher's 8-bit grid
/// (`average.rs`), and double-gradient does as dHash does, in f32 with its dead zone, from 6x its
/// grid (`dhash.rs`). pHash and dHash hashes did not change.
/// 8: pHash compresses its grid's highlights (a knee at the 90th percentile) and makes each bit
/// from four low coefficients of about the same frequency (a Hadamard transform, against zero)
/// instead of one coefficient against their median (`phash.rs`). Only pHash hashes changed.
/// 9: grey and YCbCr JPEGs that are decoded at a reduced scale are rebuilt in f32 from their
/// luma coefficients (`coefficients.rs`) instead of by libjpeg-turbo's scaled IDCT to 8 bits,
/// and `shrink` no longer rounds. Any hash of such a JPEG, or of another format that is shrunk,
/// may move (by a bit or two on the shared photos).
/// 10: pHash takes its knee only up to hash size 16 (`phash.rs`, `KNEE_MAX_SIZE`). Only pHash
/// hashes of larger sizes (phash 32) changed.
/// 11: a progressive JPEG reaches libjpeg-turbo without the scans the hash does not read
/// (`scans.rs`): its chroma AC scans, and when it is rebuilt at 1/8 from its coefficients, its
/// luma AC scans. The luma coefficients read are the same, and so is the hash of every JPEG that
/// decodes without a warning. A progressive JPEG whose only damage lies in a scan that is cut now hashes from its
/// luma, where before libjpeg-turbo's warning sent it to the `image` crate's decoder.
/// 12: dHash's dead zone is 0.35 of the mean absolute difference instead of 0.08, and up to hash
/// size 16 no more than the differences' 40th percentile (`dhash.rs`). Only dHash hashes changed.
/// 13: above hash size 16, pHash takes its coefficients two at a time instead of four
/// (`phash.rs`). Only pHash hashes of sizes over 16 changed.
/// 14: up to hash size 16, dHash's dead zone is capped at the differences' 60th percentile
/// instead of their 40th (`dhash.rs`). Only dHash hashes of sizes up to 16 changed.
pub const HASH_VERSION: u32 = 14;

/// Raw hash bytes plus the number of meaningful bits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HashBits {
    pub bytes: Vec<u8>,
    pub bits: u32,
}

impl HashBits {
    pub fn hamming(&self, other: &HashBits) -> Option<u32> {
        if self.bits != other.bits {
            return None;
        }
        Some(crate::near::bits::hamming(&self.bytes, &other.bytes))
    }

    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parse the hex form of a `bits`-bit hash: exactly `ceil(bits / 8)` bytes, padding bits zero.
    pub fn from_hex(s: &str, bits: u32) -> Result<HashBits, String> {
        let want = bits.div_ceil(8) as usize;
        if s.len() != 2 * want {
            return Err(format!("expected {} hex digits for a {bits}-bit hash, got {}", 2 * want, s.len()));
        }
        let bytes = (0..want)
            .map(|i| {
                s.get(2 * i..2 * i + 2)
                    .filter(|pair| pair.bytes().all(|c| c.is_ascii_hexdigit()))
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| format!("not hex near position {}", 2 * i))
            })
            .collect::<Result<Vec<u8>, String>>()?;
        HashBits::new(bytes, bits)
    }

    /// A `bits`-bit hash from its bytes (`ceil(bits / 8)` of them), refused when a padding bit
    /// past `bits` is set: such a hash would be further than `bits` from another.
    pub fn new(bytes: Vec<u8>, bits: u32) -> Result<HashBits, String> {
        let want = bits.div_ceil(8) as usize;
        if bytes.len() != want {
            return Err(format!("a {bits}-bit hash has {want} bytes, got {}", bytes.len()));
        }
        let spare = want as u32 * 8 - bits;
        if spare > 0 && bytes[want - 1] >> (8 - spare) != 0 {
            return Err(format!("bits set past the {bits} bits of the hash"));
        }
        Ok(HashBits { bytes, bits })
    }
}

/// The hash of one image, with its upright full-resolution size and, when asked for, the hashes
/// of its 8 dihedral variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageHash {
    pub hash: HashBits,
    pub width: u32,
    pub height: u32,
    /// How much the picture has to hash, 0-100 (`grid::quality`); flat pictures score low.
    pub quality: u8,
    /// Empty, or the 8 variants in [`DIHEDRAL`] order (the first is `hash` itself).
    pub variants: Vec<HashBits>,
}

/// The hash bytes of one picture, resampled or read anew, without variants: what the variants
/// (`hash_unguarded`) are tested against, turned picture by turned picture.
#[cfg(test)]
fn hash_picture(picture: &Picture, spec: &HashSpec) -> Result<Vec<u8>, Error> {
    Ok(match (spec.phasher(), spec.algorithm) {
        (Some(p), _) => p.hash(picture)?,
        (None, Algorithm::Blockhash) => blockhash::hash(&blockhash::View::upright(&picture.gray8()), spec.hash_size, spec.blockhasher()),
        _ => grid_hashes(picture, spec, 1)?.swap_remove(0),
    })
}

fn hash_unguarded(data: &[u8], spec: &HashSpec, limits: &Limits, dihedral: bool) -> Result<ImageHash, Error> {
    let Decoded { pixels, width, height, extent } = decode(data, limits, spec.working_side())?;
    let picture = Picture::new(pixels, extent);
    let turns = if dihedral { 8 } else { 1 };
    let (hashes, quality) = match (spec.phasher(), spec.algorithm) {
        // pHash: one grid gives the hash, the variants (one DCT for all eight, `phash.rs`) and,
        // by its block means when its side is a multiple, the quality grid.
        (Some(p), _) => {
            let grid = picture.resample_f32(p.side(), p.side())?;
            let q = if p.side() % QUALITY_SIDE == 0 {
                let side = p.side() as usize;
                quality(&block_means(&grid, side, QUALITY_SIDE as usize), QUALITY_SIDE as usize)
            } else {
                quality_of(&picture)?
            };
            (p.hash_grid_turns(grid, dihedral), q)
        }
        // blockhash: one 8-bit picture, read turned for the variants (`blockhash.rs`).
        (None, Algorithm::Blockhash) => {
            let gray = picture.gray8();
            let hashes = (0..turns).map(|i| blockhash::hash(&blockhash::View::turned(&gray, i), spec.hash_size, spec.blockhasher()));
            (hashes.collect(), quality_of(&picture)?)
        }
        _ => (grid_hashes(&picture, spec, turns)?, quality_of(&picture)?),
    };
    let mut variants: Vec<HashBits> = hashes.into_iter().map(|bytes| HashBits { bytes, bits: spec.bits() }).collect();
    let hash = variants[0].clone();
    if !dihedral {
        variants.clear();
    }
    Ok(ImageHash { hash, width, height, quality, variants })
}

/// The bytes of dHash ((n + 1) x n grid), double-gradient ((k + 1) x (k + 1), k = n/2 rounded
/// up), aHash or the median hash (n x n) for `picture` and its first `turns` dihedral variants.
/// The grid of a turned picture is the picture's grid turned, so each
/// grid is resampled once; the turns by 90 and 270 degrees read the one resampled with its sides
/// swapped, when they differ (dHash's n + 1 x n).
fn grid_hashes(picture: &Picture, spec: &HashSpec, turns: usize) -> Result<Vec<Vec<u8>>, Error> {
    let n = spec.hash_size;
    let k = n.div_ceil(2);
    let ((w, h), rule): ((u32, u32), fn(&[f32], u32) -> Vec<u8>) = match spec.algorithm {
        Algorithm::DHash => ((n + 1, n), |g, n| dhash::gradient_bits(g, n as usize)),
        Algorithm::DoubleGradient => ((k + 1, k + 1), |g, n| dhash::double_gradient_bits(g, n.div_ceil(2) as usize)),
        Algorithm::AHash => ((n, n), |g, _| average::grid_bits(g, Level::Mean)),
        Algorithm::Median => ((n, n), |g, _| average::grid_bits(g, Level::Median)),
        Algorithm::PHash | Algorithm::Blockhash => return Err(Error::Internal(format!("{:?} is not hashed from a plain grid", spec.algorithm))),
    };
    let grid = picture.resample_f32(w, h)?;
    let across = if turns > 1 && w != h { Some(picture.resample_f32(h, w)?) } else { None };
    Ok((0..turns)
        .map(|i| match (&across, i % 2) {
            _ if i == 0 => rule(&grid, n),
            (Some(swapped), 1) => rule(&turn(swapped, h, w, i), n),
            _ => rule(&turn(&grid, w, h, i), n),
        })
        .collect())
}

/// The quality score of `picture` from its own `QUALITY_SIDE` grid.
fn quality_of(picture: &Picture) -> Result<u8, Error> {
    Ok(quality(&picture.resample_f32(QUALITY_SIDE, QUALITY_SIDE)?, QUALITY_SIDE as usize))
}

/// Hash one encoded image (with its dihedral variants when `dihedral`). Never panics.
pub fn hash_image(data: &[u8], spec: &HashSpec, limits: &Limits, dihedral: bool) -> Result<ImageHash, Error> {
    guarded(|| hash_unguarded(data, spec, limits, dihedral))
}

/// Hash one encoded image: the hash alone. Never panics.
pub fn hash_one(data: &[u8], spec: &HashSpec, limits: &Limits) -> Result<HashBits, Error> {
    hash_image(data, spec, limits, false).map(|h| h.hash)
}

/// [`hash_image`] over a batch, in parallel on `threads` threads (None: all cores). One result
/// per input, in order; an error of the whole batch only when its threads cannot be started.
pub fn hash_batch(
    blobs: &[&[u8]],
    spec: &HashSpec,
    limits: &Limits,
    threads: Option<usize>,
    dihedral: bool,
) -> Result<Vec<Result<ImageHash, Error>>, Error> {
    if blobs.len() <= 1 || threads == Some(1) {
        return Ok(blobs.iter().map(|b| hash_image(b, spec, limits, dihedral)).collect());
    }
    pool::install(threads, || blobs.par_iter().map(|b| hash_image(b, spec, limits, dihedral)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::algorithm::MAX_HASH_SIZE;

    /// Every algorithm's variants, from turned grids, coefficients or views, against the hash of
    /// each turned picture (`dihedral::picture`, resampled anew), bit for bit: photos decoded as
    /// `hash_image` decodes them (a JPEG reduced from its coefficients, a PNG at full size), odd
    /// and even hash sizes.
    #[test]
    fn variants_are_the_hashes_of_the_turned_pictures() {
        let limits = Limits::default();
        for name in ["pool.jpg", "chelsea.png", "grace_hopper.jpg"] {
            let data = std::fs::read(format!("{}/../tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            for alg in Algorithm::NAMES {
                for n in [5, 8, 13, 16, 32, MAX_HASH_SIZE] {
                    let spec = HashSpec::parse(alg, n).unwrap();
                    let got = hash_image(&data, &spec, &limits, true).unwrap();
                    let Decoded { pixels, extent, .. } = decode(&data, &limits, spec.working_side()).unwrap();
                    let picture = Picture::new(pixels, extent);
                    assert_eq!(got.variants.len(), 8);
                    for (i, v) in got.variants.iter().enumerate() {
                        let want = hash_picture(&dihedral::picture(&picture, i), &spec).unwrap();
                        assert_eq!(v.bytes, want, "{name}, {alg} {n}, {}", DIHEDRAL[i]);
                    }
                    assert_eq!(got.hash, got.variants[0]);
                }
            }
        }
    }
}
