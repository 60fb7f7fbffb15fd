//! Union-find: a partition's edges reduced to a spanning forest, and the one global step that
//! turns all forests into connected components.
//!
//! The global step (`Components`) is compact: the sorted, distinct ids of the images that have a
//! neighbour (8 bytes each) and a parent index per id (4 bytes): 12 bytes per such image. It runs
//! in two passes over the forests: first their ids, then their edges.
use std::collections::HashMap;

use crate::error::Error;

pub(crate) fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize]; // path halving
        x = parent[x as usize];
    }
    x
}

/// Union by smaller index, so that a root is its set's smallest index. True if a and b were apart.
pub(crate) fn union(parent: &mut [u32], a: u32, b: u32) -> bool {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra == rb {
        return false;
    }
    let (lo, hi) = (ra.min(rb), ra.max(rb));
    parent[hi as usize] = lo;
    true
}

/// The edges (by index into `a`/`b`) that form a spanning forest of the graph: same components,
/// no cycles, at most (distinct ids - 1) edges.
pub fn spanning_forest(a: &[u64], b: &[u64]) -> Result<Vec<usize>, Error> {
    if a.len() != b.len() {
        return Err(Error::Config(format!("{} edge starts for {} edge ends", a.len(), b.len())));
    }
    let mut index: HashMap<u64, u32> = HashMap::with_capacity(a.len());
    let mut parent: Vec<u32> = Vec::new();
    let mut slot = |id: u64, parent: &mut Vec<u32>| -> u32 {
        *index.entry(id).or_insert_with(|| {
            parent.push(parent.len() as u32);
            (parent.len() - 1) as u32
        })
    };
    let mut keep = Vec::new();
    for (e, (&x, &y)) in a.iter().zip(b).enumerate() {
        let (i, j) = (slot(x, &mut parent), slot(y, &mut parent));
        if union(&mut parent, i, j) {
            keep.push(e);
        }
    }
    Ok(keep)
}

/// The global components, built in two passes: `add_ids` for every edge, `freeze`, then `union`
/// for every edge; `components` then names each id's component by its smallest id.
#[derive(Default)]
pub struct Components {
    ids: Vec<u64>,
    distinct: usize,
    parent: Vec<u32>,
    frozen: bool,
}

impl Components {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pass 1: ids that have a neighbour. Duplicates are folded as they come, so the buffer stays
    /// within about twice the distinct ids.
    pub fn add_ids(&mut self, ids: &[u64]) -> Result<(), Error> {
        if self.frozen {
            return Err(Error::Config("Components: add_ids after freeze".into()));
        }
        self.ids.extend_from_slice(ids);
        if self.ids.len() > 2 * self.distinct + (1 << 20) {
            self.fold();
        }
        Ok(())
    }

    fn fold(&mut self) {
        self.ids.sort_unstable();
        self.ids.dedup();
        self.ids.shrink_to_fit();
        self.distinct = self.ids.len();
    }

    pub fn freeze(&mut self) -> Result<(), Error> {
        if self.frozen {
            return Ok(());
        }
        self.fold();
        if self.ids.len() > u32::MAX as usize {
            return Err(Error::Config(format!("{} images with a neighbour: over 2^32", self.ids.len())));
        }
        self.parent = (0..self.ids.len() as u32).collect();
        self.frozen = true;
        Ok(())
    }

    fn index(&self, id: u64) -> Result<u32, Error> {
        self.ids
            .binary_search(&id)
            .map(|i| i as u32)
            .map_err(|_| Error::Config(format!("edge end {id} was not given to add_ids")))
    }

    /// Pass 2: the edges.
    pub fn union(&mut self, a: &[u64], b: &[u64]) -> Result<(), Error> {
        if !self.frozen {
            return Err(Error::Config("Components: union before freeze".into()));
        }
        if a.len() != b.len() {
            return Err(Error::Config(format!("{} edge starts for {} edge ends", a.len(), b.len())));
        }
        for (&x, &y) in a.iter().zip(b) {
            let (i, j) = (self.index(x)?, self.index(y)?);
            union(&mut self.parent, i, j);
        }
        Ok(())
    }

    /// Every id with a neighbour, ascending, and its component: the smallest id in it.
    pub fn components(&mut self) -> Result<(Vec<u64>, Vec<u64>), Error> {
        self.freeze()?;
        let mut comp = Vec::with_capacity(self.ids.len());
        for i in 0..self.ids.len() as u32 {
            let root = find(&mut self.parent, i);
            comp.push(self.ids[root as usize]);
        }
        Ok((self.ids.clone(), comp))
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes held: 12 per distinct id once frozen.
    pub fn memory_bytes(&self) -> usize {
        self.ids.capacity() * 8 + self.parent.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forest_keeps_one_edge_per_merge() {
        let a = [1, 2, 3, 1, 10];
        let b = [2, 3, 1, 3, 11];
        assert_eq!(spanning_forest(&a, &b).unwrap(), vec![0, 1, 4]);
    }

    #[test]
    fn components_are_named_by_their_smallest_id() {
        let mut c = Components::new();
        c.add_ids(&[9, 5, 7, 100]).unwrap();
        c.add_ids(&[5, 3, 101]).unwrap();
        c.freeze().unwrap();
        c.union(&[9, 7, 100], &[5, 3, 101]).unwrap();
        c.union(&[5], &[7]).unwrap();
        let (ids, comp) = c.components().unwrap();
        assert_eq!(ids, vec![3, 5, 7, 9, 100, 101]);
        assert_eq!(comp, vec![3, 3, 3, 3, 100, 100]);
        assert!(c.union(&[4], &[5]).is_err());
    }
}
