//! The band layout: which bit ranges are searched, and how many differing bits each allows.
//!
//! Generalised pigeonhole: cut the `bits` real bits into bands `b` with radii `r_b` such that
//! `sum(r_b + 1) >= k + 1`. Two hashes within `k` bits then differ in at most `r_b` bits on some
//! band `b` (otherwise they would differ in at least `sum(r_b + 1) > k` bits). Searching each band
//! for the pairs whose band values lie within `r_b` therefore finds every pair within `k`: recall
//! is exact, whatever the data.
//!
//! Each band is further cut into `r_b + 1` sub-blocks: a pair within `r_b` on the band agrees
//! exactly on at least one of them. That lets a band be partitioned by a prefix of one sub-block
//! (every partition then holds only the hashes that share it) without losing a pair.
//!
//! The choice (`Layout::choose`) minimises a cost model for `n` hashes with uniform bits: per band,
//! sorting (`n log n`), probing the `V(w, r) = sum_{i<=r} C(w, i)` neighbouring band values of each
//! hash (a table lookup when the band is at most `TABLE_BITS` wide, a binary search otherwise), and
//! verifying the expected `n^2/2 * V(w, r) / 2^w` candidate pairs by popcount. Radius 0 (k + 1
//! exact bands) wins for small k; radius 1 wins once exact bands get narrow (about k >= 20 at 256
//! bits, n = 1M), where candidates would grow as n^2 / 2^(bits / (k + 1)).
use crate::error::Error;
use crate::hash::algorithm::check_bits;

/// Bands at most this wide are probed through a direct table of 2^width run offsets.
pub const TABLE_BITS: u32 = 22;
/// No band is wider than a u64 key.
pub const MAX_BAND_BITS: u32 = 64;
/// The largest radius the chooser considers (the probes grow as width^radius).
pub const MAX_RADIUS: u32 = 3;
/// The number of hashes the cost model assumes when the caller does not know it.
pub const DEFAULT_N: u64 = 1_000_000;

// Relative costs, measured on one core here (benchmarks/bench_near_dup.py --kernel): a table
// probe, a binary-search probe, one popcount verification, and a sort step per hash.
const COST_TABLE_PROBE: f64 = 3.0;
const COST_SEARCH_PROBE: f64 = 12.0;
const COST_VERIFY: f64 = 1.5;
const COST_SORT: f64 = 1.0;
// Per band and hash: extracting its key, copying it through the band's shuffle.
const COST_PER_BAND: f64 = 40.0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Band {
    pub start: u32,
    pub width: u32,
    pub radius: u32,
}

impl Band {
    /// The `radius + 1` sub-blocks of the band as (start, width), covering it in order.
    pub fn subs(&self) -> Vec<(u32, u32)> {
        let parts = self.radius + 1;
        (0..parts)
            .map(|j| {
                let lo = self.width * j / parts;
                let hi = self.width * (j + 1) / parts;
                (self.start + lo, hi - lo)
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub bits: u32,
    pub max_distance: u32,
    pub bands: Vec<Band>,
}

/// C(n, 0) + ... + C(n, r): the band values within r bits of one value.
pub fn ball(width: u32, radius: u32) -> f64 {
    let mut total = 0.0;
    let mut term = 1.0;
    for i in 0..=radius.min(width) {
        if i > 0 {
            term = term * (width - i + 1) as f64 / i as f64;
        }
        total += term;
    }
    total
}

impl Layout {
    /// Bands of (nearly) equal width with the given radii, in order.
    pub fn with_radii(bits: u32, max_distance: u32, radii: &[u32]) -> Result<Layout, Error> {
        if max_distance >= bits {
            return Err(Error::Config(format!(
                "max_distance must be between 0 and {} for {bits}-bit hashes, got {max_distance}",
                bits.saturating_sub(1)
            )));
        }
        let m = radii.len() as u32;
        if m == 0 || m > bits {
            return Err(Error::Config(format!("{m} bands cannot cut {bits} bits")));
        }
        let bands: Vec<Band> = (0..m)
            .map(|i| {
                // In u64: bits * m overflows u32 from 2^16-bit hashes cut in 2^16 bands.
                let start = (u64::from(bits) * u64::from(i) / u64::from(m)) as u32;
                let stop = (u64::from(bits) * u64::from(i + 1) / u64::from(m)) as u32;
                Band { start, width: stop - start, radius: radii[i as usize] }
            })
            .collect();
        Layout::new(bits, max_distance, bands)
    }

    /// A layout given band by band; checked for coverage, widths and the pigeonhole condition.
    pub fn new(bits: u32, max_distance: u32, bands: Vec<Band>) -> Result<Layout, Error> {
        check_bits(bits)?;
        let mut next = 0u32;
        for b in &bands {
            if b.start != next || b.width == 0 || b.width > MAX_BAND_BITS || b.radius >= b.width {
                return Err(Error::Config(format!(
                    "bad band layout: bands must cover bits 0..{bits} in order, each 1-{MAX_BAND_BITS} bits wide \
                     with a radius below its width (band at {} of width {} radius {})",
                    b.start, b.width, b.radius
                )));
            }
            next = next.saturating_add(b.width);
        }
        if next != bits {
            return Err(Error::Config(format!("bad band layout: the bands cover {next} of {bits} bits")));
        }
        let units: u64 = bands.iter().map(|b| u64::from(b.radius) + 1).sum();
        if units < u64::from(max_distance) + 1 {
            return Err(Error::Config(format!(
                "bad band layout: sum of (radius + 1) is {units}, below max_distance + 1 = {}",
                u64::from(max_distance) + 1
            )));
        }
        Ok(Layout { bits, max_distance, bands })
    }

    /// The cheapest layout under the cost model for `n` hashes (module docs).
    pub fn choose(bits: u32, max_distance: u32, n: Option<u64>) -> Result<Layout, Error> {
        check_bits(bits)?;
        if max_distance >= bits {
            return Layout::with_radii(bits, max_distance, &[0]); // (its error names the range)
        }
        let n = n.unwrap_or(DEFAULT_N).max(2);
        let need = max_distance + 1;
        let min_bands = bits.div_ceil(MAX_BAND_BITS);
        let mut best: Option<(f64, Layout)> = None;
        for radius in 0..=MAX_RADIUS {
            let m = need.div_ceil(radius + 1).max(min_bands);
            if m > bits {
                continue;
            }
            // Spread the units over m bands; the widest bands take the larger radii.
            let units = need.max(m);
            let (base, extra) = (units / m, units % m);
            let mut order: Vec<u32> = (0..m).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(bits * (i + 1) / m - bits * i / m));
            let mut radii = vec![base - 1; m as usize];
            for &i in order.iter().take(extra as usize) {
                radii[i as usize] = base;
            }
            let Ok(layout) = Layout::with_radii(bits, max_distance, &radii) else { continue };
            let cost = layout.cost(n);
            if best.as_ref().map_or(true, |(c, _)| cost < *c) {
                best = Some((cost, layout));
            }
        }
        best.map(|(_, l)| l).ok_or_else(|| Error::Config(format!("no band layout for {bits} bits at k={max_distance}")))
    }

    /// The cost model's estimate for `n` hashes with uniform bits (arbitrary units).
    pub fn cost(&self, n: u64) -> f64 {
        let n = n as f64;
        self.bands
            .iter()
            .map(|b| {
                let probes = ball(b.width, b.radius);
                let probe_cost = if b.radius == 0 {
                    0.0
                } else if b.width <= TABLE_BITS {
                    COST_TABLE_PROBE
                } else {
                    COST_SEARCH_PROBE
                };
                let candidates = n * n / 2.0 * probes / 2f64.powi(b.width as i32);
                n * (COST_PER_BAND + COST_SORT * n.log2()) + n * probes * probe_cost + candidates * COST_VERIFY
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_layouts_cover_the_bits_and_satisfy_the_pigeonhole() {
        for bits in [36u32, 64, 144, 256, 1024] {
            for k in [0u32, 1, 5, 12, 16, 28, 40, 100] {
                if k >= bits {
                    continue;
                }
                for n in [None, Some(1000), Some(100_000_000)] {
                    let l = Layout::choose(bits, k, n).unwrap();
                    assert_eq!(l.bands.iter().map(|b| b.width).sum::<u32>(), bits);
                    assert!(l.bands.iter().map(|b| b.radius + 1).sum::<u32>() > k);
                    assert!(l.bands.iter().all(|b| b.width <= MAX_BAND_BITS));
                }
            }
        }
    }

    #[test]
    fn small_k_uses_exact_bands_and_large_k_radius_one() {
        let l16 = Layout::choose(256, 16, None).unwrap();
        assert!(l16.bands.iter().all(|b| b.radius == 0) && l16.bands.len() == 17, "{l16:?}");
        let l28 = Layout::choose(256, 28, None).unwrap();
        assert!(l28.bands.iter().any(|b| b.radius == 1), "{l28:?}");
        assert!(l28.bands.len() < 29);
    }

    #[test]
    fn sub_blocks_cover_their_band() {
        let b = Band { start: 10, width: 17, radius: 2 };
        let subs = b.subs();
        assert_eq!(subs.len(), 3);
        assert_eq!(subs[0].0, 10);
        assert_eq!(subs.iter().map(|s| s.1).sum::<u32>(), 17);
        assert_eq!(subs[2].0 + subs[2].1, 27);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert!(Layout::with_radii(256, 16, &[0; 16]).is_err()); // 16 units < 17
        assert!(Layout::with_radii(256, 256, &[0; 257]).is_err());
        assert!(Layout::new(64, 1, vec![Band { start: 0, width: 32, radius: 0 }]).is_err());
    }
}
