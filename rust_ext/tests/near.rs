//! The near-duplicate kernels against brute force, on adversarial inputs: planted pairs at exactly
//! k and k + 1, runs of equal band values, all-zero hashes, padding bits, dihedral variants, every
//! layout radius, and band partitions by sub-block prefix. The union of all parts must equal the
//! brute-force pair set, with no pair emitted twice; in forest output, the parts' forests must
//! give the brute-force components, their pair counts add up to the brute-force count, and their
//! pairs with fixed images equal the brute-force ones.
use std::collections::BTreeMap;

use beam_phash_native::near::brute::all_pairs;
use beam_phash_native::near::forest::{spanning_forest, Components};
use beam_phash_native::near::search::{search, search_with, Edges, Images, Output, Part, Sub};
use beam_phash_native::near::{Layout, Packed};

/// A small deterministic generator (xorshift*), so the tests need no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Flip `count` distinct real bits of `h`.
fn flip(h: &mut [u8], bits: u32, count: u32, rng: &mut Rng) {
    let mut done = Vec::new();
    while done.len() < count as usize {
        let b = rng.below(bits as u64) as u32;
        if !done.contains(&b) {
            done.push(b);
            h[(b / 8) as usize] ^= 1 << (b % 8);
        }
    }
}

fn random_hash(bytes: usize, bits: u32, rng: &mut Rng) -> Vec<u8> {
    let mut h: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
    for b in bits..(bytes as u32 * 8) {
        h[(b / 8) as usize] &= !(1 << (b % 8)); // padding is zero
    }
    h
}

/// Hashes with planted pairs at exactly k and k + 1, long runs of one band value, zeros.
fn adversarial(n: usize, bits: u32, k: u32, seed: u64) -> Vec<u8> {
    let bytes = bits.div_ceil(8) as usize;
    let mut rng = Rng(seed | 1);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let base = random_hash(bytes, bits, &mut rng);
    while out.len() < n {
        let pick = rng.below(10);
        let h = match pick {
            0 | 1 if !out.is_empty() => {
                // exactly k or k + 1 from an earlier one
                let mut h = out[rng.below(out.len() as u64) as usize].clone();
                flip(&mut h, bits, (k + (pick as u32)).min(bits), &mut rng);
                h
            }
            2 if !out.is_empty() => {
                let mut h = out[rng.below(out.len() as u64) as usize].clone();
                flip(&mut h, bits, rng.below(k as u64 + 1) as u32, &mut rng);
                h
            }
            3 => vec![0u8; bytes],
            4 | 5 => {
                // near-uniform: few bits set, so every band value is mostly zero (big runs)
                let mut h = vec![0u8; bytes];
                flip(&mut h, bits, 1 + rng.below(k as u64 + 3) as u32, &mut rng);
                h
            }
            6 => {
                // shares the first half with the base exactly
                let mut h = base.clone();
                flip(&mut h, bits, k + 2 + rng.below(8) as u32, &mut rng);
                h
            }
            _ => random_hash(bytes, bits, &mut rng),
        };
        out.push(h);
    }
    out.concat()
}

fn collect(edges: &Edges, into: &mut BTreeMap<(u64, u64), u32>) {
    for i in 0..edges.a.len() {
        let key = (edges.a[i].min(edges.b[i]), edges.a[i].max(edges.b[i]));
        assert!(into.insert(key, edges.distance[i]).is_none(), "pair {key:?} emitted twice");
    }
}

/// Each id's component (its smallest id) under the edges, over the ids given.
fn components(ids: &[u64], edges: impl Iterator<Item = (u64, u64)>) -> BTreeMap<u64, u64> {
    let mut parent: BTreeMap<u64, u64> = ids.iter().map(|&i| (i, i)).collect();
    fn find(parent: &mut BTreeMap<u64, u64>, mut x: u64) -> u64 {
        while parent[&x] != x {
            x = parent[&x];
        }
        x
    }
    for (a, b) in edges {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        parent.insert(ra.max(rb), ra.min(rb));
    }
    ids.iter().map(|&i| (i, find(&mut parent, i))).collect()
}

/// Every part of the layout, searched for pairs (returned: their union) and for forests: the
/// forests' edges are true pairs, give the same components as all the pairs, count each pair
/// once, and leave the pairs with fixed images whole.
fn all_parts(images: &Images, layout: &Layout, prefix_bits: u32) -> BTreeMap<(u64, u64), u32> {
    let mut parts = Vec::new();
    for band in 0..layout.bands.len() {
        if prefix_bits == 0 {
            parts.push(Part { band, sub: None });
            continue;
        }
        for (index, (_, w)) in layout.bands[band].subs().iter().enumerate() {
            let p = prefix_bits.min(*w);
            for prefix in 0..(1u64 << p) {
                parts.push(Part { band, sub: Some(Sub { index, prefix_bits: p, prefix }) });
            }
        }
    }
    let new: Vec<u64> = (0..images.ids.len()).filter(|&i| !images.is_fixed(i)).map(|i| images.ids[i]).collect();
    let new_set: std::collections::BTreeSet<u64> = new.iter().copied().collect();
    let is_new = |id: u64| new_set.contains(&id);
    let (mut got, mut fixed_pairs, mut forest, mut counted) = (BTreeMap::new(), BTreeMap::new(), Vec::new(), 0);
    for part in parts {
        let (edges, stats) = search(images, layout, part).unwrap();
        collect(&edges, &mut got);
        assert_eq!(stats.pairs as usize, (0..edges.a.len()).filter(|&i| is_new(edges.a[i]) && is_new(edges.b[i])).count());
        let (edges, stats) = search_with(images, layout, part, Output::Forest).unwrap();
        counted += stats.pairs;
        let mut trees = 0;
        for i in 0..edges.a.len() {
            let (a, b, d) = (edges.a[i].min(edges.b[i]), edges.a[i].max(edges.b[i]), edges.distance[i]);
            if is_new(a) && is_new(b) {
                forest.push((a, b, d));
                trees += 1;
            } else {
                assert!(fixed_pairs.insert((a, b), d).is_none(), "pair {a} {b} with a fixed image emitted twice");
            }
        }
        assert!(trees < new.len().max(1), "a forest of {trees} edges over {} images", new.len());
    }
    let new_pairs = got.iter().filter(|(&(a, b), _)| is_new(a) && is_new(b));
    assert_eq!(counted as usize, new_pairs.clone().count(), "pairs counted in forest output");
    assert!(forest.len() <= counted as usize, "{} forest edges for {counted} pairs", forest.len());
    for &(a, b, d) in &forest {
        assert_eq!(got.get(&(a, b)), Some(&d), "forest edge {a} {b} at {d} is not a pair");
    }
    assert_eq!(
        components(&new, forest.iter().map(|&(a, b, _)| (a, b))),
        components(&new, new_pairs.map(|(&(a, b), _)| (a, b))),
        "components of the forests"
    );
    let fixed_want: BTreeMap<(u64, u64), u32> =
        got.iter().filter(|(&(a, b), _)| !(is_new(a) && is_new(b))).map(|(&k, &v)| (k, v)).collect();
    assert_eq!(fixed_pairs, fixed_want, "pairs with a fixed image in forest output");
    got
}

fn oracle(images: &Images, k: u32) -> BTreeMap<(u64, u64), u32> {
    let mut want = BTreeMap::new();
    collect(&all_pairs(images, k, Some(1)).unwrap(), &mut want);
    want
}

#[test]
fn every_layout_finds_exactly_the_brute_force_pairs() {
    for (bits, k) in [(256u32, 0u32), (256, 4), (256, 16), (256, 28), (64, 10), (36, 8), (144, 20)] {
        let bytes = bits.div_ceil(8) as usize;
        let data = adversarial(400, bits, k, bits as u64 * 31 + k as u64);
        let ids: Vec<u64> = (0..400u64).map(|i| i * 7 + 3).collect();
        let images = Images::new(Packed::new(&data, bytes).unwrap(), None, &ids).unwrap();
        let want = oracle(&images, k);
        assert!(want.values().any(|&d| d == k), "no pair at exactly k ({bits}, {k})");
        let max_r = 3.min(k);
        for r in 0..=max_r {
            let m = (k + 1).div_ceil(r + 1).max(bits.div_ceil(64));
            let Ok(layout) = Layout::with_radii(bits, k, &vec![r; m as usize]) else { continue };
            assert_eq!(all_parts(&images, &layout, 0), want, "bits {bits} k {k} radius {r}");
            assert_eq!(all_parts(&images, &layout, 2), want, "bits {bits} k {k} radius {r}, partitioned");
        }
        let chosen = Layout::choose(bits, k, Some(400)).unwrap();
        assert_eq!(all_parts(&images, &chosen, 0), want);
    }
}

#[test]
fn dihedral_variants_find_exactly_the_brute_force_pairs() {
    let (bits, k) = (64u32, 10u32);
    let n = 150;
    let data = adversarial(n, bits, k, 99);
    let mut rng = Rng(1234);
    // Variants: the first is the hash itself; the others are far, except that some images get a
    // variant that is near another image's hash (a "rotated copy").
    let mut variants = Vec::new();
    for i in 0..n {
        let h = &data[i * 8..(i + 1) * 8];
        variants.extend_from_slice(h);
        for v in 1..8 {
            let mut x = if rng.below(12) == 0 {
                data[rng.below(n as u64) as usize * 8..][..8].to_vec()
            } else {
                h.to_vec()
            };
            flip(&mut x, bits, if v % 2 == 0 { 20 } else { rng.below(k as u64 + 2) as u32 }, &mut rng);
            variants.extend_from_slice(&x);
        }
    }
    let ids: Vec<u64> = (0..n as u64).collect();
    let images =
        Images::new(Packed::new(&data, 8).unwrap(), Some(Packed::new(&variants, 8).unwrap()), &ids).unwrap();
    let want = oracle(&images, k);
    for r in 0..=2u32 {
        let layout = Layout::with_radii(bits, k, &vec![r; (k + 1).div_ceil(r + 1) as usize]).unwrap();
        assert_eq!(all_parts(&images, &layout, 0), want, "radius {r}");
        assert_eq!(all_parts(&images, &layout, 3), want, "radius {r}, partitioned");
    }
}

/// Brute force written out here, independently of the crate's oracle: every pair with at least
/// one new image, by the one-sided dihedral distance against a fixed image.
fn pairs_with_new(data: &[u8], variants: Option<&[u8]>, bytes: usize, fixed_from: usize, k: u32) -> BTreeMap<(u64, u64), u32> {
    let ham = |x: &[u8], y: &[u8]| x.iter().zip(y).map(|(p, q)| (p ^ q).count_ones()).sum::<u32>();
    let row = |i: usize| &data[i * bytes..(i + 1) * bytes];
    let var = |i: usize, v: usize| &variants.unwrap()[(i * 8 + v) * bytes..][..bytes];
    let n = data.len() / bytes;
    let mut want = BTreeMap::new();
    for i in 0..fixed_from {
        for j in i + 1..n {
            let d = match variants {
                None => ham(row(i), row(j)),
                Some(_) if j >= fixed_from => (0..8).map(|v| ham(var(i, v), row(j))).min().unwrap(),
                Some(_) => (0..8).map(|v| ham(var(i, v), row(j)).min(ham(row(i), var(j, v)))).min().unwrap(),
            };
            if d <= k {
                want.insert((i as u64, j as u64), d);
            }
        }
    }
    want
}

#[test]
fn fixed_images_pair_only_with_new_ones() {
    for (bits, k, fixed) in [(256u32, 16u32, 300usize), (256, 4, 50), (64, 10, 399), (64, 10, 0), (36, 8, 200)] {
        let bytes = bits.div_ceil(8) as usize;
        let n = 400;
        let data = adversarial(n, bits, k, 17 + bits as u64 + fixed as u64);
        let ids: Vec<u64> = (0..n as u64).collect();
        let images = Images::with_fixed(Packed::new(&data, bytes).unwrap(), None, &ids, fixed).unwrap();
        let want = pairs_with_new(&data, None, bytes, n - fixed, k);
        assert!(fixed == 0 || want.keys().any(|&(_, b)| b as usize >= n - fixed), "no new-fixed pair ({bits}, {k})");
        assert_eq!(oracle(&images, k), want, "the crate's oracle, bits {bits} k {k} fixed {fixed}");
        for r in 0..=2u32.min(k) {
            let m = (k + 1).div_ceil(r + 1).max(bits.div_ceil(64));
            let Ok(layout) = Layout::with_radii(bits, k, &vec![r; m as usize]) else { continue };
            assert_eq!(all_parts(&images, &layout, 0), want, "bits {bits} k {k} radius {r} fixed {fixed}");
            assert_eq!(all_parts(&images, &layout, 2), want, "bits {bits} k {k} radius {r} fixed {fixed}, partitioned");
        }
    }
}

#[test]
fn fixed_images_against_dihedral_variants() {
    let (bits, k, n, fixed) = (64u32, 10u32, 200usize, 120usize);
    let data = adversarial(n, bits, k, 4242);
    let mut rng = Rng(99);
    // New images only have variants; some are near a fixed image's hash (a rotated copy of it).
    let mut variants = Vec::new();
    for i in 0..n - fixed {
        let h = &data[i * 8..(i + 1) * 8];
        variants.extend_from_slice(h);
        for _ in 1..8 {
            let mut x = if rng.below(6) == 0 { data[(n - fixed + rng.below(fixed as u64) as usize) * 8..][..8].to_vec() } else { h.to_vec() };
            flip(&mut x, bits, rng.below(k as u64 + 4) as u32, &mut rng);
            variants.extend_from_slice(&x);
        }
    }
    let ids: Vec<u64> = (0..n as u64).collect();
    let images = Images::with_fixed(Packed::new(&data, 8).unwrap(), Some(Packed::new(&variants, 8).unwrap()), &ids, fixed).unwrap();
    let want = pairs_with_new(&data, Some(&variants), 8, n - fixed, k);
    assert!(want.iter().any(|(&(a, b), &d)| b as usize >= n - fixed && d < { let ham = data[a as usize * 8..][..8].iter().zip(&data[b as usize * 8..][..8]).map(|(p, q)| (p ^ q).count_ones()).sum::<u32>(); ham }), "no pair found only through a variant");
    assert_eq!(oracle(&images, k), want);
    for r in 0..=2u32 {
        let layout = Layout::with_radii(bits, k, &vec![r; (k + 1).div_ceil(r + 1) as usize]).unwrap();
        assert_eq!(all_parts(&images, &layout, 0), want, "radius {r}");
        assert_eq!(all_parts(&images, &layout, 3), want, "radius {r}, partitioned");
    }
    assert!(Images::with_fixed(Packed::new(&data, 8).unwrap(), Some(Packed::new(&variants[..8], 8).unwrap()), &ids, fixed).is_err());
}

#[test]
fn a_run_of_identical_band_values_is_searched_whole() {
    // 5000 hashes that all agree on every band but the last bits: one big run per band.
    let (bits, k) = (256u32, 3u32);
    let mut rng = Rng(7);
    let n = 5000;
    let mut data = vec![0u8; n * 32];
    for i in 0..n {
        let b = (rng.below(8) as usize) + 248;
        data[i * 32 + b / 8] |= 1 << (b % 8);
    }
    let ids: Vec<u64> = (0..n as u64).collect();
    let images = Images::new(Packed::new(&data, 32).unwrap(), None, &ids).unwrap();
    let layout = Layout::choose(bits, k, None).unwrap();
    let (_, stats) = search(&images, &layout, Part { band: 0, sub: None }).unwrap();
    assert!(stats.big_runs >= 1);
    assert_eq!(all_parts(&images, &layout, 0), oracle(&images, k));
}

#[test]
fn forests_and_components_agree_with_the_graph() {
    let mut rng = Rng(55);
    let (a, b): (Vec<u64>, Vec<u64>) = (0..3000).map(|_| (rng.below(2000) * 3, rng.below(2000) * 3)).unzip();
    // Components through the forests of two halves must equal those of the whole graph.
    let mut whole = Components::new();
    whole.add_ids(&a).unwrap();
    whole.add_ids(&b).unwrap();
    whole.freeze().unwrap();
    whole.union(&a, &b).unwrap();
    let mut parts = Components::new();
    let mut forest_edges = Vec::new();
    for half in [0..1500usize, 1500..3000] {
        let keep = spanning_forest(&a[half.clone()], &b[half.clone()]).unwrap();
        assert!(keep.len() < 1500);
        forest_edges.extend(keep.into_iter().map(|e| (a[half.start + e], b[half.start + e])));
    }
    let (fa, fb): (Vec<u64>, Vec<u64>) = forest_edges.into_iter().unzip();
    parts.add_ids(&fa).unwrap();
    parts.add_ids(&fb).unwrap();
    parts.freeze().unwrap();
    parts.union(&fa, &fb).unwrap();
    assert_eq!(parts.components().unwrap(), whole.components().unwrap());
    assert!(parts.memory_bytes() <= 12 * parts.len() + 64);
}
