//! Packed hashes and the bit-level helpers shared by the kernels.
//!
//! Bit `i` of a hash is bit `i % 8` of byte `i / 8`; bits past the hash's true bit count (the
//! padding of the last byte) are zero and never form part of a band.
use crate::error::Error;

/// `n` hashes of `width` bytes each, back to back.
#[derive(Clone, Copy, Debug)]
pub struct Packed<'a> {
    data: &'a [u8],
    width: usize,
}

impl<'a> Packed<'a> {
    pub fn new(data: &'a [u8], width: usize) -> Result<Self, Error> {
        if width == 0 {
            return Err(Error::Config("hash width must be at least one byte".into()));
        }
        if data.len() % width != 0 {
            return Err(Error::Config(format!(
                "packed hashes: {} bytes is not a multiple of the hash width {width}",
                data.len()
            )));
        }
        Ok(Packed { data, width })
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.width
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn width(&self) -> usize {
        self.width
    }

    #[inline]
    pub fn row(&self, i: usize) -> &'a [u8] {
        &self.data[i * self.width..(i + 1) * self.width]
    }

    /// Rows `i..i + count`, back to back.
    #[inline]
    pub fn rows(&self, i: usize, count: usize) -> &'a [u8] {
        &self.data[i * self.width..(i + count) * self.width]
    }
}

/// Record ids as UTF-8, packed: `offsets` has n + 1 entries into `blob`. Byte order of UTF-8 is
/// code-point order, so comparing these slices orders ids exactly as Python compares `str`.
#[derive(Clone, Copy, Debug)]
pub struct Owners<'a> {
    offsets: &'a [u64],
    blob: &'a [u8],
}

impl<'a> Owners<'a> {
    pub fn new(offsets: &'a [u64], blob: &'a [u8]) -> Result<Self, Error> {
        let bad = offsets.is_empty()
            || offsets[0] != 0
            || offsets.windows(2).any(|w| w[0] > w[1])
            || offsets[offsets.len() - 1] as usize != blob.len();
        if bad {
            return Err(Error::Config("owner offsets must rise from 0 to the blob's length".into()));
        }
        Ok(Owners { offsets, blob })
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn get(&self, i: usize) -> &'a [u8] {
        &self.blob[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// Hamming distance of two hashes held as equally many little-endian u64 words (4 for 256 bits,
/// unrolled).
#[inline]
pub fn hamming_words(a: &[u64], b: &[u64]) -> u32 {
    if a.len() == 4 && b.len() == 4 {
        return (a[0] ^ b[0]).count_ones() + (a[1] ^ b[1]).count_ones() + (a[2] ^ b[2]).count_ones()
            + (a[3] ^ b[3]).count_ones();
    }
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Hamming distance of two equally long byte strings.
#[inline]
pub fn hamming(a: &[u8], b: &[u8]) -> u32 {
    debug_assert_eq!(a.len(), b.len());
    let mut d = 0;
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        let x = u64::from_le_bytes(x.try_into().unwrap());
        let y = u64::from_le_bytes(y.try_into().unwrap());
        d += (x ^ y).count_ones();
    }
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        d += (x ^ y).count_ones();
    }
    d
}

/// Little-endian 64-bit word `w` of a hash, the bytes past its end read as zero.
#[inline(always)]
pub fn word(hash: &[u8], w: usize) -> u64 {
    match hash.get(w * 8..w * 8 + 8) {
        Some(bytes) => u64::from_le_bytes(bytes.try_into().unwrap()),
        None => hash[w * 8..].iter().rev().fold(0, |acc, &b| acc << 8 | b as u64),
    }
}

/// Bits `[start, start + width)` of a hash as an integer (`width <= 64`), counted in the hash's
/// own bit order (the search reads its bands in another: `order::Field`; the tests compare).
#[cfg(test)]
pub fn field(hash: &[u8], start: u32, width: u32) -> u64 {
    debug_assert!(width >= 1 && width <= 64);
    let first = (start / 8) as usize;
    let last = ((start + width + 7) / 8) as usize;
    let mut acc: u128 = 0;
    for (i, byte) in hash[first..last.min(hash.len())].iter().enumerate() {
        acc |= (*byte as u128) << (8 * i);
    }
    let value = (acc >> (start % 8)) as u64;
    if width == 64 {
        value
    } else {
        value & ((1u64 << width) - 1)
    }
}

/// The distance of two images from their hashes and, where they have them, their 8 dihedral
/// variant hashes (back to back, the first the identity): the smallest distance between one's
/// hash and any variant of the other, both ways. An image without variants (a plain search, or
/// an image already kept) takes part with its hash alone.
#[inline]
pub fn image_distance(ha: &[u8], va: Option<&[u8]>, hb: &[u8], vb: Option<&[u8]>) -> u32 {
    let width = ha.len();
    let mut best = hamming(ha, hb);
    for (variants, other) in [(va, hb), (vb, ha)] {
        if let Some(v) = variants {
            debug_assert_eq!(v.len(), 8 * width);
            best = v.chunks_exact(width).fold(best, |best, row| best.min(hamming(row, other)));
        }
    }
    best
}

/// Little-endian u64s from a byte buffer (numpy arrays arrive as bytes).
pub fn u64s(bytes: &[u8], what: &str) -> Result<Vec<u64>, Error> {
    if bytes.len() % 8 != 0 {
        return Err(Error::Config(format!("{what}: {} bytes is not a whole number of uint64", bytes.len())));
    }
    Ok(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect())
}

/// Little-endian u32s from a byte buffer.
pub fn u32s(bytes: &[u8], what: &str) -> Result<Vec<u32>, Error> {
    if bytes.len() % 4 != 0 {
        return Err(Error::Config(format!("{what}: {} bytes is not a whole number of uint32", bytes.len())));
    }
    Ok(bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_reads_little_endian_bits_across_bytes() {
        let h = [0b1010_0000u8, 0b0000_0111, 0xff];
        assert_eq!(field(&h, 5, 3), 0b101);
        assert_eq!(field(&h, 5, 6), 0b111_101);
        assert_eq!(field(&h, 0, 24), 0xff07a0);
        let wide: Vec<u8> = (0..16).collect();
        assert_eq!(field(&wide, 8, 64), u64::from_le_bytes(wide[1..9].try_into().unwrap()));
        assert_eq!(field(&wide, 68, 60), (u128::from_le_bytes(wide.clone().try_into().unwrap()) >> 68) as u64 & ((1 << 60) - 1));
    }

    #[test]
    fn hamming_counts_every_byte() {
        let a = [0u8; 11];
        let mut b = [0u8; 11];
        b[0] = 1;
        b[10] = 0xf0;
        assert_eq!(hamming(&a, &b), 5);
    }
}
