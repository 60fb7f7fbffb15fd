//! The keep rule, greedy by rank: in rank order an image is kept unless an already kept image lies
//! within k (an edge), in which case it is dropped as a duplicate of the nearest such image
//! (ties: the better ranked). No two kept images are within k, and every dropped image names a
//! kept one within k. An image's fate depends only on its component, so any set of whole
//! components can be resolved on its own.
use std::cmp::Ordering;

use crate::error::HashError;
use crate::near::bits::Owners;

/// Rank: smaller `primary` first, then the smaller owner (UTF-8 bytes), then the smaller id.
fn rank_order(primary: &[u64], owners: &Owners, ids: &[u64]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..ids.len() as u32).collect();
    order.sort_unstable_by(|&x, &y| {
        let (x, y) = (x as usize, y as usize);
        primary[x]
            .cmp(&primary[y])
            .then_with(|| owners.get(x).cmp(owners.get(y)))
            .then_with(|| ids[x].cmp(&ids[y]))
    });
    order
}

/// A dropped image (index into the nodes), its keeper (index) and their distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub node: u32,
    pub keeper: u32,
    pub distance: u32,
}

/// Greedy resolution over the nodes `ids` (with their ranks) and the edges among them.
pub fn resolve(
    ids: &[u64],
    primary: &[u64],
    owners: &Owners,
    a: &[u64],
    b: &[u64],
    distance: &[u32],
) -> Result<Vec<Dropped>, HashError> {
    let n = ids.len();
    if primary.len() != n || owners.len() != n {
        return Err(HashError::Config(format!("{n} nodes with {} ranks and {} owners", primary.len(), owners.len())));
    }
    if a.len() != b.len() || a.len() != distance.len() {
        return Err(HashError::Config("edge arrays differ in length".into()));
    }
    // Compact ids: each node's position in rank order.
    let order = rank_order(primary, owners, ids);
    let mut by_id: Vec<(u64, u32)> = order.iter().enumerate().map(|(pos, &i)| (ids[i as usize], pos as u32)).collect();
    by_id.sort_unstable();
    if by_id.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(HashError::Internal("a node id appears twice".into()));
    }
    let pos = |id: u64| -> Result<u32, HashError> {
        by_id
            .binary_search_by(|p| p.0.cmp(&id))
            .map(|i| by_id[i].1)
            .map_err(|_| HashError::Internal(format!("edge end {id} is not a node")))
    };
    // Each node's better-ranked neighbours (CSR by rank position).
    let mut better: Vec<(u32, u32, u32)> = Vec::with_capacity(a.len());
    for ((&x, &y), &d) in a.iter().zip(b).zip(distance) {
        let (px, py) = (pos(x)?, pos(y)?);
        match px.cmp(&py) {
            Ordering::Less => better.push((py, px, d)),
            Ordering::Greater => better.push((px, py, d)),
            Ordering::Equal => {}
        }
    }
    better.sort_unstable();
    let mut kept = vec![false; n];
    let mut dropped = Vec::new();
    let mut e = 0;
    for node in 0..n as u32 {
        let mut best: Option<(u32, u32)> = None; // (distance, keeper position)
        while e < better.len() && better[e].0 == node {
            let (_, other, d) = better[e];
            if kept[other as usize] && best.map_or(true, |b| (d, other) < b) {
                best = Some((d, other));
            }
            e += 1;
        }
        match best {
            Some((d, keeper)) => dropped.push(Dropped { node: order[node as usize], keeper: order[keeper as usize], distance: d }),
            None => kept[node as usize] = true,
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_keeps_both_ends() {
        // ranks a < b < c; a-b and b-c within k: b is dropped for a, c stays.
        let offsets = [0u64, 1, 2, 3];
        let owners = Owners::new(&offsets, b"abc").unwrap();
        let got = resolve(&[10, 20, 30], &[0, 0, 0], &owners, &[10, 20], &[20, 30], &[5, 5]).unwrap();
        assert_eq!(got, vec![Dropped { node: 1, keeper: 0, distance: 5 }]);
    }

    #[test]
    fn nearest_kept_wins_then_rank() {
        // x ranked last, kept neighbours p (distance 7) and q (distance 3): dropped for q.
        let offsets = [0u64, 1, 2, 3];
        let owners = Owners::new(&offsets, b"pqx").unwrap();
        let got = resolve(&[1, 2, 3], &[0, 0, 0], &owners, &[1, 2], &[3, 3], &[7, 3]).unwrap();
        assert_eq!(got, vec![Dropped { node: 2, keeper: 1, distance: 3 }]);
        // primary beats the owner: q (primary 0) before p (primary 5).
        let got = resolve(&[1, 2], &[5, 0], &Owners::new(&[0, 1, 2], b"pq").unwrap(), &[1], &[2], &[4]).unwrap();
        assert_eq!(got, vec![Dropped { node: 0, keeper: 1, distance: 4 }]);
    }
}
