//! The supported hash algorithms, their validated configuration and their true bit counts.
use image_hasher::{HashAlg, Hasher, HasherConfig};

use crate::error::Error;
use crate::hash::phash::PHasher;

pub const MIN_HASH_SIZE: u32 = 4;
pub const MAX_HASH_SIZE: u32 = 64;
/// The most bits any hash has (every algorithm at `MAX_HASH_SIZE`; blockhash rounds the size up
/// to a multiple of 4, which 64 is).
pub const MAX_BITS: u32 = MAX_HASH_SIZE * MAX_HASH_SIZE;
/// The most bytes a packed hash takes.
pub const MAX_HASH_BYTES: usize = (MAX_BITS / 8) as usize;

/// A bit count given by a caller (hex parsing, the near kernels): 1 to `MAX_BITS`. Larger
/// counts name no hash, and would size buffers by them.
pub fn check_bits(bits: u32) -> Result<(), Error> {
    if (1..=MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(Error::Config(format!("bits must be between 1 and {MAX_BITS} (the most any hash has), got {bits}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// The low-frequency DCT coefficients, four at a time through a Hadamard transform, each sum
    /// against zero (`phash.rs`): hash_size² bits.
    PHash,
    /// image_hasher's DoubleGradient, what the original Ray operator used:
    /// 2·(n/2)·(n/2+1) bits for hash_size n (144 at 16, not 256).
    DoubleGradient,
    /// Horizontal gradient (dHash): hash_size² bits.
    DHash,
    /// Mean (aHash): hash_size² bits.
    AHash,
    /// Median of the downscaled pixels: hash_size² bits.
    Median,
    /// blockhash.io: hash_size² bits (hash_size rounded up to a multiple of 4).
    Blockhash,
}

impl Algorithm {
    pub const NAMES: [&'static str; 6] = ["phash", "double_gradient", "dhash", "ahash", "median", "blockhash"];

    pub fn parse(name: &str) -> Result<Self, Error> {
        Ok(match name {
            "phash" => Algorithm::PHash,
            "double_gradient" => Algorithm::DoubleGradient,
            "dhash" => Algorithm::DHash,
            "ahash" => Algorithm::AHash,
            "median" => Algorithm::Median,
            "blockhash" => Algorithm::Blockhash,
            other => {
                return Err(Error::Config(format!(
                    "unknown algorithm {other:?}; expected one of {}",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }
}

/// A validated (algorithm, hash_size) pair with its last step ready. Build once, share across
/// threads.
pub struct HashSpec {
    pub algorithm: Algorithm,
    pub hash_size: u32,
    /// image_hasher's blockhash at this size, for the pictures our own blockhash hands to it (a
    /// side of m pixels or fewer that m does not divide, `blockhash.rs`); every other last step
    /// is ours (`phash`, `dhash`, `average`, `blockhash`).
    blockhasher: Hasher,
    /// pHash's own last step (see `phash`); None for the other algorithms.
    phasher: Option<PHasher>,
}

impl HashSpec {
    pub fn new(algorithm: Algorithm, hash_size: u32) -> Result<Self, Error> {
        if !(MIN_HASH_SIZE..=MAX_HASH_SIZE).contains(&hash_size) {
            return Err(Error::Config(format!(
                "hash_size must be between {MIN_HASH_SIZE} and {MAX_HASH_SIZE}, got {hash_size}"
            )));
        }
        let blockhasher = HasherConfig::new().hash_alg(HashAlg::Blockhash).hash_size(hash_size, hash_size).to_hasher();
        let phasher = (algorithm == Algorithm::PHash).then(|| PHasher::new(hash_size));
        Ok(HashSpec { algorithm, hash_size, blockhasher, phasher })
    }

    pub fn parse(algorithm: &str, hash_size: u32) -> Result<Self, Error> {
        Self::new(Algorithm::parse(algorithm)?, hash_size)
    }

    /// The number of bits this configuration produces.
    pub fn bits(&self) -> u32 {
        bit_count(self.algorithm, self.hash_size)
    }

    /// The smallest side the decoder keeps: it reduces images by powers of two (DCT scaling for
    /// JPEG, box averages otherwise) only while both sides stay at least this: 4x the grid the
    /// picture is resampled to, 6x dHash's n + 1 columns and double-gradient's n/2 + 1, 6n for
    /// pHash (1.5x its 4n DCT grid), and at least 32. The reduction's box filter starts at the
    /// picture's corner, so a turned copy is reduced in another phase; from a smaller working
    /// side its hash moved further from the matching dihedral variant (hash version 2, p95 on the
    /// 85 shared photos: median hash 16 8 bits, dHash 16 14; version 3, dHash at 8x: 3 and 5).
    /// dHash's grid in f32 (version 4) gets its rotation variant to 3 at 6x (2 at 8x, 4 at 4x; 2, 2 and 3 on 400 web crops), and
    /// 6x hashes faster than version 3's 8x did. pHash at 6n (version 5; 4n before) resamples a
    /// 256 px copy from 128 px instead of 64, and a 3:2 photo of 800 px from its 1/4 decode: the
    /// copies' mean distances fell by 6-8% (resize to 256 px by a quarter, the rotation variant's
    /// by a third to a half). With version 6's 4n grid, working sides of 4n, 6n and 8n gave sums
    /// of the mean distances (eight mild edits and the two dihedral variants) of 15.7, 14.5 and
    /// 14.2 bits on the 85 photos, and 15.7, 14.4 and 14.2 on 400 web crops (`eval_near_dup.py`,
    /// one run each); 8n decodes up to four times the pixels for that last 0.3. Double-gradient
    /// in f32 (version 7) at 6x instead of 4x: sum of the mean distances 3.80 bits against 4.55
    /// at hash size 16 on the 85 photos, rotation variant p95 2 against 2.8 (one run each).
    pub fn working_side(&self) -> u32 {
        let n = self.hash_size;
        let side = match self.algorithm {
            Algorithm::PHash => 6 * n,
            Algorithm::DHash => 6 * (n + 1),
            Algorithm::DoubleGradient => 6 * (n.div_ceil(2) + 1),
            Algorithm::AHash | Algorithm::Median => 4 * n,
            // blockhash averages blocks of the full image itself; give it a generous grid.
            Algorithm::Blockhash => 16 * n,
        };
        side.max(32)
    }

    pub fn blockhasher(&self) -> &Hasher {
        &self.blockhasher
    }

    pub fn phasher(&self) -> Option<&PHasher> {
        self.phasher.as_ref()
    }
}

/// True bit count of `algorithm` at `hash_size` (matches what the hasher emits).
pub fn bit_count(algorithm: Algorithm, n: u32) -> u32 {
    match algorithm {
        Algorithm::DoubleGradient => {
            let m = (n + 1) & !1; // rounded up to even, as image_hasher does
            2 * (m / 2) * (m / 2 + 1)
        }
        Algorithm::Blockhash => {
            let m = (n + 3) & !3;
            m * m
        }
        _ => n * n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_counts_match_the_documented_table() {
        assert_eq!(bit_count(Algorithm::PHash, 8), 64);
        assert_eq!(bit_count(Algorithm::PHash, 16), 256);
        assert_eq!(bit_count(Algorithm::PHash, 32), 1024);
        assert_eq!(bit_count(Algorithm::DoubleGradient, 16), 144);
        assert_eq!(bit_count(Algorithm::DoubleGradient, 8), 40);
        assert_eq!(bit_count(Algorithm::DoubleGradient, 32), 544);
    }

    #[test]
    fn no_hash_has_more_than_max_bits() {
        for alg in ["phash", "double_gradient", "dhash", "ahash", "median", "blockhash"] {
            let alg = Algorithm::parse(alg).unwrap();
            for n in MIN_HASH_SIZE..=MAX_HASH_SIZE {
                assert!(check_bits(bit_count(alg, n)).is_ok(), "{alg:?} {n}");
            }
        }
        assert!(check_bits(0).is_err() && check_bits(MAX_BITS + 1).is_err());
    }

    #[test]
    fn rejects_unknown_algorithms_and_sizes() {
        assert!(matches!(Algorithm::parse("sha1"), Err(Error::Config(_))));
        assert!(HashSpec::parse("phash", 3).is_err());
        assert!(HashSpec::parse("phash", 65).is_err());
        assert!(HashSpec::parse("phash", 64).is_ok());
    }
}
