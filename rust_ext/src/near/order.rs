//! The order in which the band search reads a hash's bits.
//!
//! Neighbouring bits of a perceptual hash are correlated (pHash: neighbouring DCT frequencies of
//! one row; dHash: neighbouring gradients), so a band of contiguous bits takes far fewer distinct
//! values than its width allows and its buckets fill unevenly: more candidates per band than the
//! layout's cost model (uniform bits) expects. The search therefore cuts its bands from the bits
//! in a fixed pseudo-random order: the same for every hash of a bit count, in every run, process
//! and version (pinned below). Hamming distance does not depend on the order of the bits, so the
//! pairs found are the same; only their bucketing changes. The hashes stay as they are: a band's
//! value is gathered from them (`Field`), and whether two hashes agree on a band is counted
//! through a mask of its bits (`Mask`).
use crate::near::bits::word;

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

/// A run of the ordered positions, `start..start + width` (at most 64), read straight from a
/// hash in its own bit order: bit `j` of the value is bit `order(bits)[start + j]` of the hash.
/// Per hash byte the run draws on, and per value of that byte, the bits it sets in the value; so
/// a field costs one lookup per byte it draws on (about 13 for 16 bits of 256), and no hash is
/// ever copied into the order.
pub struct Field {
    /// (byte of the hash, offset of its 256 entries in `table`)
    bytes: Vec<(usize, usize)>,
    table: Vec<u64>,
}

impl Field {
    pub fn new(positions: &[u32], start: u32, width: u32) -> Self {
        let stop = u64::from(start) + u64::from(width);
        assert!((1..=64).contains(&width) && stop <= positions.len() as u64, "bits {start}..{stop} of {}", positions.len());
        let mut bytes: Vec<(usize, usize)> = Vec::new();
        let mut table = Vec::new();
        for j in 0..width {
            let source = positions[(start + j) as usize] as usize;
            let at = match bytes.iter().find(|&&(b, _)| b == source / 8) {
                Some(&(_, at)) => at,
                None => {
                    bytes.push((source / 8, table.len()));
                    table.resize(table.len() + 256, 0);
                    table.len() - 256
                }
            };
            for value in 0..256 {
                if value >> (source % 8) & 1 == 1 {
                    table[at + value] |= 1 << j;
                }
            }
        }
        Field { bytes, table }
    }

    #[inline]
    pub fn get(&self, hash: &[u8]) -> u64 {
        self.bytes.iter().fold(0, |acc, &(byte, at)| acc | self.table[at + hash[byte] as usize])
    }
}

/// The hash bits of a run of ordered positions, as a mask over the hash's little-endian 64-bit
/// words: how many bits of the run two hashes differ in, without reading the run's value.
pub struct Mask {
    /// (word index, the run's bits in it), for the words that hold any.
    words: Vec<(usize, u64)>,
}

impl Mask {
    pub fn new(positions: &[u32], start: u32, width: u32, hash_bytes: usize) -> Self {
        let mut all = vec![0u64; hash_bytes.div_ceil(8)];
        for &source in &positions[start as usize..(start + width) as usize] {
            all[source as usize / 64] |= 1 << (source % 64);
        }
        Mask { words: all.into_iter().enumerate().filter(|&(_, m)| m != 0).collect() }
    }

    /// The bits of the run in which `x` and `y` differ. (It runs for every pair found within k,
    /// once per earlier band: a tight group of images makes hundreds of millions of them.)
    #[inline]
    pub fn differing(&self, x: &[u8], y: &[u8]) -> u32 {
        self.words.iter().map(|&(w, m)| ((word(x, w) ^ word(y, w)) & m).count_ones()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn fields_and_masks_read_the_ordered_bits() {
        let mut state = 7u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (bits, hash_bytes) in [(256u32, 32usize), (144, 18), (100, 13), (25, 4), (64, 8), (1024, 128)] {
            let positions = order(bits);
            let hashes: Vec<Vec<u8>> = (0..20).map(|_| (0..hash_bytes).map(|_| next() as u8).collect()).collect();
            for (start, width) in [(0, 1), (0, bits.min(64)), (bits - 1, 1), (bits / 3, (bits / 2).min(64)), (bits - bits.min(17), bits.min(17))] {
                let field = Field::new(&positions, start, width);
                let mask = Mask::new(&positions, start, width, hash_bytes);
                let value = |h: &[u8]| (0..width).fold(0u64, |v, j| v | (bit(h, positions[(start + j) as usize] as usize) as u64) << j);
                for x in &hashes {
                    assert_eq!(field.get(x), value(x), "{bits} bits, {start}+{width}");
                    for y in &hashes {
                        assert_eq!(mask.differing(x, y), (value(x) ^ value(y)).count_ones());
                    }
                }
            }
        }
    }
}
