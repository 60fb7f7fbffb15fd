//! Exact collapse: records with an identical key (hash, and variants with dihedral) are one image
//! in the near-duplicate graph, represented by its best-ranked record.
use rayon::prelude::*;

use crate::error::Error;
use crate::near::bits::{Owners, Packed};
use crate::pool;

/// For each distinct key, in ascending key order, the index of its best-ranked record (smaller
/// `primary`, then the smaller owner, then the earlier index).
pub fn heads(keys: &Packed, primary: &[u64], owners: &Owners) -> Result<Vec<u32>, Error> {
    let n = keys.len();
    if primary.len() != n || owners.len() != n {
        return Err(Error::Config(format!("{n} keys with {} ranks and {} owners", primary.len(), owners.len())));
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    // On all cores: a partition of a large fixed set holds millions of rows.
    pool::install(None, || order.par_sort_unstable_by(|&x, &y| {
        let (x, y) = (x as usize, y as usize);
        keys.row(x)
            .cmp(keys.row(y))
            .then_with(|| primary[x].cmp(&primary[y]))
            .then_with(|| owners.get(x).cmp(owners.get(y)))
            .then_with(|| x.cmp(&y))
    }))?;
    let mut out = Vec::new();
    for (i, &r) in order.iter().enumerate() {
        if i == 0 || keys.row(order[i - 1] as usize) != keys.row(r as usize) {
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_head_per_key_best_ranked() {
        let data = [2u8, 1, 2, 1, 2];
        let keys = Packed::new(&data, 1).unwrap();
        let owners = Owners::new(&[0, 1, 2, 3, 4, 5], b"edcba").unwrap();
        // key 1: records 1 (d), 3 (b), same primary: b wins. key 2: records 0, 2, 4: primary decides.
        assert_eq!(heads(&keys, &[0, 0, 5, 0, 1], &owners).unwrap(), vec![3, 0]);
    }
}
