//! The keep rule, greedy by rank: in rank order an image is kept unless an already kept image lies
//! within k (an edge), in which case it is dropped as a duplicate of the nearest such image
//! (ties: the better ranked). No two kept images are within k, and every dropped image names a
//! kept one within k. An image's fate depends only on its component, so any set of whole
//! components can be resolved on its own.

use crate::error::Error;
use crate::near::bits::{Owners, Packed};

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

/// Greedy resolution over the nodes `ids` (with their ranks) and the edges among them: for each
/// dropped node, every kept neighbour by (distance, rank); the first ranked before the node is
/// its keeper.
pub fn resolve(
    ids: &[u64],
    primary: &[u64],
    owners: &Owners,
    keys: &Packed,
    a: &[u64],
    b: &[u64],
    distance: &[u32],
) -> Result<Vec<Dropped>, Error> {
    let n = ids.len();
    if primary.len() != n || owners.len() != n || keys.len() != n {
        return Err(Error::Config(format!(
            "{n} nodes with {} ranks, {} owners and {} keys",
            primary.len(),
            owners.len(),
            keys.len()
        )));
    }
    if a.len() != b.len() || a.len() != distance.len() {
        return Err(Error::Config("edge arrays differ in length".into()));
    }
    // Compact ids: each node's position in rank order.
    let order = rank_order(primary, owners, keys);
    let mut by_id: Vec<(u64, u32)> = order.iter().enumerate().map(|(pos, &i)| (ids[i as usize], pos as u32)).collect();
    by_id.sort_unstable();
    if by_id.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(Error::Internal("a node id appears twice".into()));
    }
    let pos = |id: u64| -> Result<u32, Error> {
        by_id
            .binary_search_by(|p| p.0.cmp(&id))
            .map(|i| by_id[i].1)
            .map_err(|_| Error::Internal(format!("edge end {id} is not a node")))
    };
    // Each node's neighbours by rank position, better-ranked first.
    let mut adjacent: Vec<(u32, u32, u32)> = Vec::with_capacity(2 * a.len());
    for ((&x, &y), &d) in a.iter().zip(b).zip(distance) {
        let (px, py) = (pos(x)?, pos(y)?);
        if px != py {
            adjacent.push((px, py, d));
            adjacent.push((py, px, d));
        }
    }
    adjacent.sort_unstable();
    let bounds: Vec<usize> = {
        let mut bounds = vec![0usize; n + 1];
        for &(p, _, _) in &adjacent {
            bounds[p as usize + 1] += 1;
        }
        for i in 0..n {
            bounds[i + 1] += bounds[i];
        }
        bounds
    };
    let mut kept = vec![false; n];
    for node in 0..n {
        // Only better-ranked neighbours are decided yet; they come first in the sorted list.
        kept[node] = !adjacent[bounds[node]..bounds[node + 1]]
            .iter()
            .take_while(|&&(_, other, _)| (other as usize) < node)
            .any(|&(_, other, _)| kept[other as usize]);
    }
    // For every dropped node, all its kept neighbours, nearest first (ties: better ranked). Its
    // keeper is the first one ranked before it; the rest let a record of the same image that is
    // ranked after it choose among the images kept before that record (see ApplyDoFn).
    let mut dropped = Vec::new();
    for node in 0..n {
        if kept[node] {
            continue;
        }
        let mut near: Vec<(u32, u32)> = adjacent[bounds[node]..bounds[node + 1]]
            .iter()
            .filter(|&&(_, other, _)| kept[other as usize])
            .map(|&(_, other, d)| (d, other))
            .collect();
        near.sort_unstable();
        for (d, keeper) in near {
            dropped.push(Dropped { node: order[node], keeper: order[keeper as usize], distance: d });
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
        let keys = Packed::new(&[1, 2, 3], 1).unwrap();
        let got = resolve(&[10, 20, 30], &[0, 0, 0], &owners, &keys, &[10, 20], &[20, 30], &[5, 5]).unwrap();
        // b lists both kept neighbours, its keeper a (better ranked at equal distance) first.
        assert_eq!(got, vec![Dropped { node: 1, keeper: 0, distance: 5 }, Dropped { node: 1, keeper: 2, distance: 5 }]);
    }

    #[test]
    fn nearest_kept_wins_then_rank() {
        // x ranked last, kept neighbours p (distance 7) and q (distance 3): dropped for q.
        let offsets = [0u64, 1, 2, 3];
        let owners = Owners::new(&offsets, b"pqx").unwrap();
        let keys = Packed::new(&[9, 9, 9], 1).unwrap();
        let got = resolve(&[1, 2, 3], &[0, 0, 0], &owners, &keys, &[1, 2], &[3, 3], &[7, 3]).unwrap();
        assert_eq!(got, vec![Dropped { node: 2, keeper: 1, distance: 3 }, Dropped { node: 2, keeper: 0, distance: 7 }]);
        // primary beats the owner: q (primary 0) before p (primary 5).
        let keys = Packed::new(&[0, 0], 1).unwrap();
        let got = resolve(&[1, 2], &[5, 0], &Owners::new(&[0, 1, 2], b"pq").unwrap(), &keys, &[1], &[2], &[4]).unwrap();
        assert_eq!(got, vec![Dropped { node: 0, keeper: 1, distance: 4 }]);
    }
}
