//! A grid's values against one threshold: the median the median hash compares with, the
//! quantile pHash's knee starts at, and the packing of the bits, least significant bit first, as
//! image_hasher packs them (pHash's and dHash's too).

/// The median of `values`: the middle value, or the mean of the two middle values of an even
/// count (as image_hasher's). Reorders `values`.
pub fn median(values: &mut [f32]) -> f32 {
    let m = values.len();
    if m == 0 {
        return 0.0;
    }
    let (below, &mut middle, _) = values.select_nth_unstable_by(m / 2, f32::total_cmp);
    match below.iter().copied().max_by(f32::total_cmp) {
        Some(under) if m.is_multiple_of(2) => (under + middle) / 2.0,
        _ => middle,
    }
}

/// The `q` quantile of `values` (0 <= q <= 1), interpolated linearly between the two nearest
/// ranks (numpy's default). `values` must not be empty.
pub fn quantile(values: &[f32], q: f64) -> f32 {
    let mut v = values.to_vec();
    let rank = q * (v.len() - 1) as f64;
    let (lo, frac) = (rank.floor() as usize, (rank - rank.floor()) as f32);
    let (_, &mut at, above) = v.select_nth_unstable_by(lo, f32::total_cmp);
    match above.iter().copied().min_by(f32::total_cmp) {
        Some(next) if frac > 0.0 => at + (next - at) * frac,
        _ => at,
    }
}

/// One bit per value, set where the value is at least `threshold`; bit i of the result is
/// value i, least significant bit first.
pub fn bits_at_least(values: &[f32], threshold: f32) -> Vec<u8> {
    pack(values.iter().map(|&v| v >= threshold), values.len())
}

/// `count` bits packed least significant bit first, bit i set where the i-th item is true (the
/// layout of every hash here, image_hasher's).
pub fn pack(bits: impl Iterator<Item = bool>, count: usize) -> Vec<u8> {
    let mut out = vec![0u8; count.div_ceil(8)];
    for (i, set) in bits.enumerate() {
        if set {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let values = [4.0, 0.0, 3.0, 1.0, 2.0];
        assert_eq!(quantile(&values, 0.0), 0.0);
        assert_eq!(quantile(&values, 1.0), 4.0);
        assert_eq!(quantile(&values, 0.5), 2.0);
        assert_eq!(quantile(&values, 0.9), 3.6);
        assert_eq!(quantile(&[7.0], 0.9), 7.0);
    }

    #[test]
    fn bits_are_packed_least_significant_first() {
        let values = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(bits_at_least(&values, 1.0), vec![0b0000_1101, 0b1]);
    }
}
