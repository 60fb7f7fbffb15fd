//! The one mixer of a hash's own bits (never a salted hash): it routes hashes to buckets and
//! partitions (`route`, behind `beam_phash.routing`) and places them in the seen-set's index,
//! with a different seed for each use so that one does not bias the other. Every 64-bit word is
//! chained through a multiply-xorshift (a plain XOR fold would cancel repeated words), because
//! single bits of a perceptual hash are far from uniform (pHash's DC bit is almost always set).

/// The seed of bucket and partition routing. Part of the on-disk layout of exact-mode state
/// (bucket-N directories): changing it needs a new `HASH_VERSION`.
pub const ROUTE_SEED: u64 = 0;
/// The seed of the seen-set's index.
pub const INDEX_SEED: u64 = 0x243F_6A88_85A3_08D3;

#[inline]
pub fn mix(hash: &[u8], seed: u64) -> u64 {
    let mut h = seed;
    let mut words = hash.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 31;
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(buf)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 31;
    }
    h = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    h ^ (h >> 32)
}

/// The bucket in [0, buckets) of each packed hash (rows of `width` bytes).
pub fn route(rows: &[u8], width: usize, buckets: u32) -> Vec<u32> {
    rows.chunks_exact(width)
        .map(|h| ((u128::from(mix(h, ROUTE_SEED)) * u128::from(buckets)) >> 64) as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_pinned_and_spread() {
        // Pinned: the bucket of a hash is part of exact-mode state on disk.
        let rows: Vec<u8> = (0u8..64).collect();
        assert_eq!(route(&rows, 32, 16), vec![10, 12]);
        // Hashes that differ in one word only still spread over every bucket.
        let mut rows = Vec::new();
        for i in 0u64..4096 {
            let mut h = [0xFFu8; 32];
            h[8..16].copy_from_slice(&i.to_le_bytes());
            rows.extend_from_slice(&h);
        }
        let mut counts = [0usize; 16];
        for b in route(&rows, 32, 16) {
            counts[b as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (192..=320).contains(&c)), "{counts:?}");
    }
}
