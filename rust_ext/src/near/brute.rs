//! The brute-force oracle: every pair within k, by popcount over all pairs. For tests and for
//! checking the benchmarks' results; O(n^2), on all cores.
use rayon::prelude::*;

use crate::error::Error;
use crate::near::bits::hamming_words;
use crate::near::search::{Edges, Images};
use crate::pool;

/// The hashes as rows of little-endian u64 words (the last word zero-padded).
fn words(images: &Images) -> (Vec<u64>, usize) {
    let wpr = images.hashes.width().div_ceil(8);
    let mut out = vec![0u64; images.hashes.len() * wpr];
    for i in 0..images.hashes.len() {
        for (j, byte) in images.hashes.row(i).iter().enumerate() {
            out[i * wpr + j / 8] |= (*byte as u64) << (8 * (j % 8));
        }
    }
    (out, wpr)
}

/// All pairs (by image id, in input order a before b) within `max_distance`.
pub fn all_pairs(images: &Images, max_distance: u32, threads: Option<usize>) -> Result<Edges, Error> {
    let n = images.hashes.len();
    let (rows, wpr) = words(images);
    let per_row: Vec<Vec<(u32, u32)>> = pool::install(threads, || {
        (0..n)
            .into_par_iter()
            .map(|i| {
                let mut found = Vec::new();
                if images.is_fixed(i) {
                    return found; // fixed images pair only with new ones, which come first
                }
                let ri = &rows[i * wpr..(i + 1) * wpr];
                if images.variants.is_some() {
                    for j in i + 1..n {
                        let d = images.distance(i, j);
                        if d <= max_distance {
                            found.push((j as u32, d));
                        }
                    }
                    return found;
                }
                for (j, rj) in rows.chunks_exact(wpr).enumerate().skip(i + 1) {
                    let d = hamming_words(ri, rj);
                    if d <= max_distance {
                        found.push((j as u32, d));
                    }
                }
                found
            })
            .collect()
    })?;
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
