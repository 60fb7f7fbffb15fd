//! The brute-force oracle: every pair within k, by popcount over all pairs. For tests and for
//! checking the benchmarks' results; O(n^2).
use rayon::prelude::*;

use crate::error::HashError;
use crate::near::bits::image_distance;
use crate::near::search::{Edges, Images};
use crate::pool;

/// All pairs (by image id, in input order a before b) within `max_distance`.
pub fn all_pairs(images: &Images, max_distance: u32, threads: Option<usize>) -> Result<Edges, HashError> {
    let n = images.hashes.len();
    let per_row: Vec<Vec<(u32, u32)>> = pool::install(threads, || {
        (0..n)
            .into_par_iter()
            .map(|i| {
                let mut found = Vec::new();
                let hi = images.hashes.row(i);
                for j in i + 1..n {
                    let v = images.variants.as_ref().map(|v| (v, i, j));
                    let d = image_distance(hi, images.hashes.row(j), v);
                    if d <= max_distance {
                        found.push((j as u32, d));
                    }
                }
                found
            })
            .collect()
    });
    let mut edges = Edges::default();
    for (i, row) in per_row.into_iter().enumerate() {
        for (j, d) in row {
            edges.a.push(images.ids[i]);
            edges.b.push(images.ids[j as usize]);
            edges.distance.push(d);
        }
    }
    Ok(edges)
}
