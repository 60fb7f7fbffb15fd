//! The order in which the band search reads a hash's bits.
//!
//! Neighbouring bits of a perceptual hash are correlated (pHash: neighbouring DCT frequencies of
//! one row; dHash: neighbouring gradients), so a band of contiguous bits takes far fewer distinct
//! values than its width allows and its buckets fill unevenly: more candidates per band than the
//! layout's cost model (uniform bits) expects. The search therefore cuts its bands from the bits
//! in a fixed pseudo-random order: the same for every hash of a bit count, in every run, process
//! and version (pinned below). Hamming distance does not depend on the order of the bits, so the
//! pairs found are the same; only their bucketing changes.
use crate::near::bits::Packed;

/// A fixed permutation of `bits` bit positions: position `p` of the ordered hash holds bit
/// `order(bits)[p]` of the hash. Fisher–Yates driven by splitmix64 seeded with the bit count.
pub fn order(bits: u32) -> Vec<u32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ bits as u64;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut positions: Vec<u32> = (0..bits).collect();
    for i in (1..bits as usize).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        positions.swap(i, j);
    }
    positions
}

/// Reorders the bits of packed hashes: per input byte and value, the 64-bit words it sets in the
/// output (`hash_bytes` × 256 × words), so a hash costs `hash_bytes` × words ORs.
pub struct BitOrder {
    hash_bytes: usize,
    words: usize,
    table: Vec<u64>,
}

impl BitOrder {
    /// The order of `bits` real bits in hashes of `hash_bytes` bytes (`bits <= 8 * hash_bytes`;
    /// the padding bits stay where they are, zero).
    pub fn new(bits: u32, hash_bytes: usize) -> Self {
        assert!(bits as usize <= hash_bytes * 8, "{bits} bits in {hash_bytes}-byte hashes");
        let words = hash_bytes.div_ceil(8);
        let mut to = vec![0u32; bits as usize];
        for (p, &source) in order(bits).iter().enumerate() {
            to[source as usize] = p as u32;
        }
        let mut table = vec![0u64; hash_bytes * 256 * words];
        for byte in 0..hash_bytes {
            for value in 0..256usize {
                let out = &mut table[(byte * 256 + value) * words..][..words];
                for bit in 0..8 {
                    let source = byte * 8 + bit;
                    if value >> bit & 1 == 1 {
                        // a set padding bit (not a real hash) stays in place
                        let p = to.get(source).map_or(source, |&p| p as usize);
                        out[p / 64] |= 1 << (p % 64);
                    }
                }
            }
        }
        BitOrder { hash_bytes, words, table }
    }

    /// Every hash of `hashes` (rows of `hash_bytes`) with its bits reordered, packed the same way.
    pub fn apply(&self, hashes: &Packed) -> Vec<u8> {
        assert_eq!(hashes.width(), self.hash_bytes);
        match self.words {
            1 => self.apply_words::<1>(hashes),
            2 => self.apply_words::<2>(hashes),
            3 => self.apply_words::<3>(hashes),
            4 => self.apply_words::<4>(hashes),
            _ => self.apply_any(hashes),
        }
    }

    /// `apply` for hashes of W words (the common widths: up to 256 bits), unrolled: 17 reorders
    /// of 1M 256-bit hashes (with near_fields) took 0.74-0.75 s this way, 1.76-1.79 s through
    /// `apply_any` (2 runs each, 2026-12-04).
    fn apply_words<const W: usize>(&self, hashes: &Packed) -> Vec<u8> {
        let hb = self.hash_bytes;
        let mut out = vec![0u8; hashes.len() * hb];
        for (i, dst) in out.chunks_exact_mut(hb).enumerate() {
            let mut acc = [0u64; W];
            for (byte, &value) in hashes.row(i).iter().enumerate() {
                let words: &[u64; W] = self.table[(byte * 256 + value as usize) * W..][..W].try_into().unwrap();
                for w in 0..W {
                    acc[w] |= words[w];
                }
            }
            for (w, chunk) in dst.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(&acc[w].to_le_bytes()[..chunk.len()]);
            }
        }
        out
    }

    fn apply_any(&self, hashes: &Packed) -> Vec<u8> {
        let hb = self.hash_bytes;
        let mut out = vec![0u8; hashes.len() * hb];
        let mut acc = vec![0u64; self.words];
        for (i, dst) in out.chunks_exact_mut(hb).enumerate() {
            acc.fill(0);
            for (byte, &value) in hashes.row(i).iter().enumerate() {
                let words = &self.table[(byte * 256 + value as usize) * self.words..][..self.words];
                for (a, w) in acc.iter_mut().zip(words) {
                    *a |= w;
                }
            }
            for (w, chunk) in dst.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(&acc[w].to_le_bytes()[..chunk.len()]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::near::bits::hamming;

    fn bit(h: &[u8], i: usize) -> u8 {
        h[i / 8] >> (i % 8) & 1
    }

    #[test]
    fn the_order_is_pinned() {
        // Workers of one job, and Python's partition routing, must read the same bands: a
        // changed order would split pairs across partitions silently.
        assert_eq!(&order(256)[..8], &[225, 251, 205, 11, 100, 22, 155, 185]);
        assert_eq!(&order(64)[..8], &[63, 32, 41, 40, 14, 60, 25, 55]);
        for bits in [1, 9, 64, 144, 256, 1024] {
            let mut seen = order(bits);
            seen.sort_unstable();
            assert_eq!(seen, (0..bits).collect::<Vec<_>>(), "not a permutation of {bits}");
        }
    }

    #[test]
    fn reordering_moves_each_bit_and_keeps_distances() {
        let mut state = 7u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (bits, hash_bytes) in [(256u32, 32usize), (144, 18), (100, 13), (25, 4), (64, 8), (1024, 128)] {
            let mut data: Vec<u8> = (0..hash_bytes * 40).map(|_| next() as u8).collect();
            for row in data.chunks_mut(hash_bytes) {
                for i in bits as usize..hash_bytes * 8 {
                    row[i / 8] &= !(1 << (i % 8)); // padding is zero
                }
            }
            let packed = Packed::new(&data, hash_bytes).unwrap();
            let ordered = BitOrder::new(bits, hash_bytes).apply(&packed);
            let ordered = Packed::new(&ordered, hash_bytes).unwrap();
            let positions = order(bits);
            for i in 0..packed.len() {
                for (p, &source) in positions.iter().enumerate() {
                    assert_eq!(bit(ordered.row(i), p), bit(packed.row(i), source as usize));
                }
                for i_pad in bits as usize..hash_bytes * 8 {
                    assert_eq!(bit(ordered.row(i), i_pad), 0);
                }
                for j in 0..packed.len() {
                    assert_eq!(hamming(ordered.row(i), ordered.row(j)), hamming(packed.row(i), packed.row(j)));
                }
            }
        }
    }
}
