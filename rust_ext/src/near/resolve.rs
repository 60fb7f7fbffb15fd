//! The keep rule, greedy by rank: in rank order an image is kept unless an already kept image lies
//! within k, in which case it is dropped as a duplicate of the nearest such image (ties: the
//! better ranked). No two kept images are within k, and every dropped image names a kept one
//! within k. An image's fate depends only on its component, so any set of whole components can
//! be resolved on its own.
//!
//! Resolution reads no edges: each image is compared, by popcount over its key, with the images
//! kept so far in its component. Two images of one component within k are always an edge of the
//! search (its recall is exact), so this decides exactly as the edges would, while what crosses
//! the shuffle stays linear in the images: a tight group of c images (thousands of re-encodes of
//! one picture) has c^2/2 edges but one or a few kept images. The cost is c times the kept count
//! per component, in popcounts.
use rayon::prelude::*;

use crate::error::Error;
use crate::near::bits::{image_distance, Owners, Packed};
use crate::pool;

/// How an image key is laid out (`beam_phash.near.batches.Ranked`): the hash, then with dihedral
/// its 8 variant hashes (the first the identity), then one byte: 1 for a flat image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLayout {
    pub hash_bytes: usize,
    pub dihedral: bool,
}

impl KeyLayout {
    pub fn key_bytes(&self) -> usize {
        self.hash_bytes * if self.dihedral { 9 } else { 1 } + 1
    }

    /// The distance of two images as the search computes it (with variants, the smallest between
    /// one's hash and any variant of the other, both ways) if it makes them an edge: within `k`,
    /// or, when either is flat, identical (distance 0).
    #[inline]
    fn edge<'k>(&self, x: &'k [u8], y: &'k [u8], k: u32) -> Option<u32> {
        let hb = self.hash_bytes;
        let variants = |key: &'k [u8]| self.dihedral.then(|| &key[hb..9 * hb]);
        let d = image_distance(&x[..hb], variants(x), &y[..hb], variants(y));
        let flat = x[x.len() - 1] != 0 || y[y.len() - 1] != 0;
        (d <= if flat { 0 } else { k }).then_some(d)
    }
}

/// Rank: smaller `primary` first, then the smaller owner (UTF-8 bytes), then the smaller key
/// (the image's hash bytes: a tie-break that does not depend on how ids were assigned).
fn rank_order(primary: &[u64], owners: &Owners, keys: &Packed) -> Vec<u32> {
    let mut order: Vec<u32> = (0..primary.len() as u32).collect();
    order.sort_unstable_by(|&x, &y| {
        let (x, y) = (x as usize, y as usize);
        primary[x]
            .cmp(&primary[y])
            .then_with(|| owners.get(x).cmp(owners.get(y)))
            .then_with(|| keys.row(x).cmp(keys.row(y)))
    });
    order
}

/// A dropped image (index into the nodes), a kept neighbour (index) and their distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub node: u32,
    pub keeper: u32,
    pub distance: u32,
}

/// One component's nodes in rank order (`rank`: each node's position in the global rank order).
fn resolve_component(members: &[u32], rank: &[u32], keys: &Packed, layout: KeyLayout, k: u32) -> Vec<Dropped> {
    let mut kept: Vec<u32> = Vec::new();
    let mut dropped: Vec<u32> = Vec::new();
    for &node in members {
        let row = keys.row(node as usize);
        if kept.iter().any(|&other| layout.edge(row, keys.row(other as usize), k).is_some()) {
            dropped.push(node);
        } else {
            kept.push(node);
        }
    }
    // For every dropped node, all its kept neighbours, nearest first (ties: better ranked). Its
    // keeper is the first one ranked before it; the rest let a record of the same image that is
    // ranked after it choose among the images kept before that record (see ApplyDoFn).
    let mut out = Vec::new();
    for node in dropped {
        let row = keys.row(node as usize);
        let mut near: Vec<(u32, u32, u32)> = kept
            .iter()
            .filter_map(|&other| layout.edge(row, keys.row(other as usize), k).map(|d| (d, rank[other as usize], other)))
            .collect();
        near.sort_unstable();
        out.extend(near.into_iter().map(|(distance, _, keeper)| Dropped { node, keeper, distance }));
    }
    out
}

/// Greedy resolution over the nodes of whole components: `components` names each node's
/// component, `primary` and `owners` rank them, `keys` (laid out as `layout` says) give their
/// hashes and break the last ties. For each dropped node, every kept neighbour by (distance,
/// rank); the first ranked before the node is its keeper. Components run in parallel on
/// `threads` threads (None: all cores).
pub fn resolve(
    components: &[u64],
    primary: &[u64],
    owners: &Owners,
    keys: &Packed,
    layout: KeyLayout,
    k: u32,
    threads: Option<usize>,
) -> Result<Vec<Dropped>, Error> {
    let n = components.len();
    if primary.len() != n || owners.len() != n || keys.len() != n {
        return Err(Error::Config(format!(
            "{n} nodes with {} ranks, {} owners and {} keys",
            primary.len(),
            owners.len(),
            keys.len()
        )));
    }
    if n > 0 && keys.width() != layout.key_bytes() {
        return Err(Error::Config(format!(
            "keys of {} bytes for {}-byte hashes{}: expected {}",
            keys.width(),
            layout.hash_bytes,
            if layout.dihedral { " with variants" } else { "" },
            layout.key_bytes()
        )));
    }
    let order = rank_order(primary, owners, keys);
    let mut rank = vec![0u32; n];
    for (pos, &node) in order.iter().enumerate() {
        rank[node as usize] = pos as u32;
    }
    // Nodes grouped by component, each group in rank order (the sort is stable).
    let mut grouped = order;
    grouped.sort_by_key(|&node| components[node as usize]);
    let mut groups: Vec<&[u32]> = Vec::new();
    let mut start = 0;
    for end in 1..=n {
        if end == n || components[grouped[end] as usize] != components[grouped[start] as usize] {
            groups.push(&grouped[start..end]);
            start = end;
        }
    }
    let found: Vec<Vec<Dropped>> =
        pool::install(threads, || groups.par_iter().map(|members| resolve_component(members, &rank, keys, layout, k)).collect())?;
    Ok(found.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: KeyLayout = KeyLayout { hash_bytes: 1, dihedral: false };

    fn key(hash: u8, flat: bool) -> [u8; 2] {
        [hash, flat as u8]
    }

    fn run(hashes: &[[u8; 2]], primary: &[u64], owners: &[u8], k: u32) -> Vec<Dropped> {
        let offsets: Vec<u64> = (0..=owners.len() as u64).collect();
        let owners = Owners::new(&offsets, owners).unwrap();
        let keys: Vec<u8> = hashes.iter().flatten().copied().collect();
        resolve(&vec![7; hashes.len()], primary, &owners, &Packed::new(&keys, 2).unwrap(), PLAIN, k, Some(1)).unwrap()
    }

    #[test]
    fn a_chain_keeps_both_ends() {
        // ranks a < b < c; a-b and b-c within k = 2, a-c 4 apart: b is dropped for a, c stays.
        let got = run(&[key(0b0000, false), key(0b0011, false), key(0b1111, false)], &[0, 0, 0], b"abc", 2);
        // b lists both kept neighbours, its keeper a (better ranked at equal distance) first.
        assert_eq!(got, vec![Dropped { node: 1, keeper: 0, distance: 2 }, Dropped { node: 1, keeper: 2, distance: 2 }]);
    }

    #[test]
    fn nearest_kept_wins_then_rank() {
        // x ranked last, kept neighbours p (distance 3) and q (distance 1, 4 from p): q first.
        let got = run(&[key(0b0000_0111, false), key(0b0000_1000, false), key(0b0000_0000, false)], &[0, 0, 0], b"pqx", 3);
        assert_eq!(got, vec![Dropped { node: 2, keeper: 1, distance: 1 }, Dropped { node: 2, keeper: 0, distance: 3 }]);
        // primary beats the owner: q (primary 0) before p (primary 5).
        let got = run(&[key(0, false), key(1, false)], &[5, 0], b"pq", 2);
        assert_eq!(got, vec![Dropped { node: 0, keeper: 1, distance: 1 }]);
    }

    #[test]
    fn a_flat_image_meets_others_at_distance_zero_only() {
        // p flat, q one bit off it and r identical to it (not flat).
        // q stays (one bit from a flat image); r is dropped for p, and also lists q (kept, 1 bit).
        let got = run(&[key(0b1000, true), key(0b1001, false), key(0b1000, false)], &[0, 1, 2], b"pqr", 4);
        assert_eq!(got, vec![Dropped { node: 2, keeper: 0, distance: 0 }, Dropped { node: 2, keeper: 1, distance: 1 }]);
    }

    #[test]
    fn components_are_resolved_apart_and_variants_count() {
        // Two components, each two images within k through a variant only.
        let layout = KeyLayout { hash_bytes: 1, dihedral: true };
        let image = |hash: u8, variant: u8| -> Vec<u8> {
            let mut k = vec![hash; 9];
            k[2] = variant; // the second variant
            k.push(0);
            k
        };
        let keys: Vec<u8> = [image(0x00, 0x00), image(0xff, 0x01), image(0x0f, 0x0f), image(0xf0, 0x0e)].concat();
        let offsets = [0u64, 1, 2, 3, 4];
        let owners = Owners::new(&offsets, b"abcd").unwrap();
        let got = resolve(&[1, 1, 9, 9], &[0; 4], &owners, &Packed::new(&keys, 10).unwrap(), layout, 1, None).unwrap();
        let mut got: Vec<(u32, u32, u32)> = got.iter().map(|d| (d.node, d.keeper, d.distance)).collect();
        got.sort_unstable();
        assert_eq!(got, vec![(1, 0, 1), (3, 2, 1)]);
        // Across components nothing is compared: the same four images named one component each.
        let got = resolve(&[1, 2, 3, 4], &[0; 4], &owners, &Packed::new(&keys, 10).unwrap(), layout, 1, None).unwrap();
        assert!(got.is_empty());
    }
}
