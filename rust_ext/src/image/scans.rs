//! The scans of a progressive JPEG that a reduced luma plane reads; the others are cut out of
//! the bytes before libjpeg-turbo sees them.
//!
//! A progressive JPEG sends its coefficients in scans. Each scan carries one band of zig-zag
//! positions, Ss..=Se, for one component (an AC band) or for several (the DC term), at one bit
//! depth (successive approximation). The plane `coefficients.rs` rebuilds at 1/d reads only the
//! luma component's low (8/d)² coefficients, yet libjpeg-turbo entropy-decodes every scan: the
//! chroma components' AC scans always, and at 1/8 the luma AC scans too, are decoded for
//! nothing.
//!
//! A scan is kept when it carries luma coefficients the plane reads, when it is a DC scan, or
//! when a kept scan after it shares a component and overlaps its band. (A refinement scan's
//! decoding depends on which coefficients of its band earlier scans made non-zero, and libjpeg
//! checks each scan's bit depth against the scans before it; keeping every such earlier scan
//! leaves both as they were. Every DC scan stays because a component's first scan, always a DC
//! scan, latches its quantisation table; because libjpeg's block smoothing of the luma reads
//! whether every component's tables and DC terms are there; and because markers after the first
//! scan, such as an Adobe segment, must not move before it, where they would decide the colour
//! space. DC scans are small.) The kept scans decode to the same luma coefficients, and
//! libjpeg-turbo's grey from them is the same.
//!
//! Only a progressive frame (SOF2 or SOF10) is walked. Anything unusual (a marker out of place,
//! a segment or scan cut short, no end of image, more scans than `MAX_SCANS`, a scan's
//! parameters or its place in the progression that libjpeg would refuse or warn about) answers
//! the bytes unchanged, so such a file reaches libjpeg-turbo whole and fails or warns as it did.
//! What a scan that is cut would have failed on (damage in its entropy-coded data, a Huffman
//! table it names that was never defined) goes unseen.
use std::borrow::Cow;

/// More scans than this (a real encoder writes about 10) and the bytes are left as they are.
const MAX_SCANS: usize = 256;

/// One scan: its bytes (from its SOS marker to the marker after its entropy-coded data), the
/// frame's components it carries (bit i: the frame's i-th), its band of zig-zag positions, and
/// its successive approximation: the bit position of the previous scan of this band (`high`, 0
/// for a first scan) and its own (`low`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scan {
    start: usize,
    end: usize,
    components: u8,
    band: (u8, u8),
    high: u8,
    low: u8,
}

impl Scan {
    fn depends_on(&self, earlier: &Scan) -> bool {
        self.components & earlier.components != 0 && self.band.0 <= earlier.band.1 && earlier.band.0 <= self.band.1
    }
}

/// `data` without the AC scans that neither carry luma (the frame's first component) at a
/// zig-zag position up to `last`, nor feed a scan that is kept; borrowed when nothing is cut.
pub fn for_luma(data: &[u8], last: u8) -> Cow<'_, [u8]> {
    let Some(scans) = progressive_scans(data).filter(|scans| progression_is_sound(scans)) else {
        return Cow::Borrowed(data);
    };
    let mut keep = vec![false; scans.len()];
    for j in (0..scans.len()).rev() {
        let scan = &scans[j];
        let reads = scan.band.0 == 0 || (scan.components & 1 != 0 && scan.band.0 <= last);
        keep[j] = reads || (j + 1..scans.len()).any(|k| keep[k] && scans[k].depends_on(scan));
    }
    if keep.iter().all(|&k| k) {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len());
    let mut from = 0;
    for (scan, _) in scans.iter().zip(&keep).filter(|(_, &k)| !k) {
        out.extend_from_slice(&data[from..scan.start]);
        from = scan.end;
    }
    out.extend_from_slice(&data[from..]);
    Cow::Owned(out)
}

/// The scans of a progressive JPEG with at most 4 components, walked from its start of image to
/// its end of image; `None` for any other frame and for anything out of place.
fn progressive_scans(data: &[u8]) -> Option<Vec<Scan>> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut frame: Option<Vec<u8>> = None; // the component ids, in the frame's order
    let mut scans = Vec::new();
    let mut i = 2;
    loop {
        if *data.get(i)? != 0xFF {
            return None;
        }
        while *data.get(i + 1)? == 0xFF {
            i += 1; // fill bytes before a marker
        }
        let marker = data[i + 1];
        match marker {
            0xD9 => return frame.map(|_| scans), // end of image
            0x00 | 0x01 | 0xD0..=0xD8 => return None, // no segment here, or a restart out of a scan
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*data.get(i + 2)?, *data.get(i + 3)?]));
        let body = data.get(i + 4..(i + 2 + len).max(i + 4))?;
        match marker {
            // Progressive DCT, Huffman or arithmetic: precision, height, width, count, then
            // (id, sampling, table) per component.
            0xC2 | 0xCA if frame.is_none() => {
                // libjpeg matches a scan's components among the frame's first 4 only.
                let count = usize::from(*body.get(5)?);
                if !(1..=4).contains(&count) {
                    return None;
                }
                frame = Some((0..count).map(|k| body.get(6 + 3 * k).copied()).collect::<Option<_>>()?);
            }
            // Any other frame (or a second one); DHT (C4), JPG (C8) and DAC (CC) are not frames.
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => return None,
            // Start of scan: count, (id, tables) per component, Ss, Se, Ah/Al; then the data.
            // libjpeg refuses any other length, and more than 4 components.
            0xDA => {
                let ids = frame.as_ref()?;
                let count = usize::from(*body.first()?);
                if !(1..=4).contains(&count) || len != 6 + 2 * count {
                    return None;
                }
                let mut components = 0u8;
                for k in 0..count {
                    let id = *body.get(1 + 2 * k)?;
                    components |= 1 << ids.iter().position(|&c| c == id)?;
                }
                if components.count_ones() as usize != count {
                    return None; // a component named twice, which libjpeg refuses
                }
                let band = (*body.get(1 + 2 * count)?, *body.get(2 + 2 * count)?);
                let approximation = *body.get(3 + 2 * count)?;
                let end = entropy_end(data, i + 2 + len)?;
                scans.push(Scan { start: i, end, components, band, high: approximation >> 4, low: approximation & 0x0F });
                if scans.len() > MAX_SCANS {
                    return None;
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 2 + len;
    }
}

/// Whether libjpeg would take every scan without an error or a warning about its parameters or
/// its place in the progression (jdphuff.c and jdarith.c, `start_pass`): a DC band is 0..=0, an
/// AC band lies in 1..=63 and has one component, a refinement goes one bit lower than the scan
/// before it, and each scan of a coefficient starts where the one before it stopped (an AC band
/// only after its component's DC term). Then cutting scans cannot make libjpeg see the
/// progression otherwise than it would have.
fn progression_is_sound(scans: &[Scan]) -> bool {
    // The bit position each coefficient of each component stopped at; -1 before its first scan.
    let mut reached = [[-1i8; 64]; 4];
    for scan in scans {
        let (first, last) = scan.band;
        let dc = first == 0;
        let shape = if dc { last == 0 } else { first <= last && last < 64 && scan.components.count_ones() == 1 };
        if !shape || (scan.high != 0 && scan.low + 1 != scan.high) || scan.low > 13 {
            return false;
        }
        for (c, bits) in reached.iter_mut().enumerate() {
            if scan.components & (1 << c) == 0 {
                continue;
            }
            if !dc && bits[0] < 0 {
                return false;
            }
            for bit in &mut bits[usize::from(first)..=usize::from(last)] {
                if i16::from(scan.high) != i16::from((*bit).max(0)) {
                    return false;
                }
                *bit = scan.low as i8;
            }
        }
    }
    true
}

/// Where entropy-coded data starting at `from` ends: the first 0xFF that is neither a stuffed
/// byte (FF 00) nor a restart marker (FF D0-D7).
pub(crate) fn entropy_end(data: &[u8], mut from: usize) -> Option<usize> {
    loop {
        from += next_ff(data.get(from..)?)?;
        match *data.get(from + 1)? {
            0x00 | 0xD0..=0xD7 => from += 2,
            _ => return Some(from),
        }
    }
}

/// The index of the first 0xFF in `bytes`, tested 32 bytes at a time (the compiler vectorises
/// the fold; in entropy-coded data about one byte in 256 is 0xFF).
pub(crate) fn next_ff(bytes: &[u8]) -> Option<usize> {
    const LANES: usize = 32;
    let mut at = 0;
    for chunk in bytes.chunks_exact(LANES) {
        if chunk.iter().fold(false, |seen, &b| seen | (b == 0xFF)) {
            break;
        }
        at += LANES;
    }
    bytes[at..].iter().position(|&b| b == 0xFF).map(|k| at + k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A marker segment: FF, marker, length, body.
    fn segment(marker: u8, body: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
        s.extend_from_slice(body);
        s
    }

    /// A first scan of the components `ids` over the band `ss..=se`, with `data` as its
    /// entropy-coded data.
    fn scan(ids: &[u8], ss: u8, se: u8, data: &[u8]) -> Vec<u8> {
        refine(ids, ss, se, (0, 0), data)
    }

    /// The same with successive approximation: the bit positions (Ah, Al).
    fn refine(ids: &[u8], ss: u8, se: u8, (high, low): (u8, u8), data: &[u8]) -> Vec<u8> {
        let mut body = vec![ids.len() as u8];
        for &id in ids {
            body.extend_from_slice(&[id, 0]);
        }
        body.extend_from_slice(&[ss, se, high << 4 | low]);
        let mut s = segment(0xDA, &body);
        s.extend_from_slice(data);
        s
    }

    /// SOI, a progressive frame of components 1, 2, 3, the scans, EOI.
    fn progressive(scans: &[Vec<u8>]) -> Vec<u8> {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend(segment(0xC2, &[8, 0, 16, 0, 16, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]));
        for s in scans {
            jpeg.extend(segment(0xC4, &[0])); // a table before each scan stays
            jpeg.extend_from_slice(s);
        }
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        jpeg
    }

    #[test]
    fn entropy_data_ends_at_the_first_marker_that_is_not_stuffing_or_a_restart() {
        let mut data = vec![7u8; 100];
        data.extend_from_slice(&[0xFF, 0x00, 1, 0xFF, 0xD3, 2]);
        data.extend(vec![9u8; 70]);
        data.extend_from_slice(&[0xFF, 0xFF, 0xD9]);
        assert_eq!(entropy_end(&data, 0), Some(176));
        assert_eq!(entropy_end(&data[..170], 0), None, "cut short");
        for n in 0..80 {
            let mut bytes = vec![1u8; n];
            bytes.push(0xFF);
            assert_eq!(next_ff(&bytes), Some(n));
            assert_eq!(next_ff(&bytes[..n]), None);
        }
    }

    #[test]
    fn chroma_scans_and_luma_bands_not_read_are_cut() {
        let dc = scan(&[1, 2, 3], 0, 0, &[0x11; 40]);
        let y_low = scan(&[1], 1, 5, &[0x22; 40]);
        let cb = scan(&[2], 1, 63, &[0x33; 40]);
        let y_high = scan(&[1], 6, 63, &[0x44; 40]);
        let cr = scan(&[3], 1, 63, &[0x55; 40]);
        let jpeg = progressive(&[dc.clone(), y_low.clone(), cb.clone(), y_high.clone(), cr.clone()]);
        let want = |kept: &[&Vec<u8>]| progressive(&kept.iter().map(|s| (*s).clone()).collect::<Vec<_>>());
        let cut = |jpeg: &[u8]| -> Vec<u8> { for_luma(jpeg, 4).into_owned() };
        // 1/4: zig-zag positions 0-4 are read; Cb, Cr and Y 6-63 are not. The tables stay.
        let mut expected = want(&[&dc, &y_low]);
        let tables = segment(0xC4, &[0]);
        for _ in 0..3 {
            let at = expected.len() - 2;
            expected.splice(at..at, tables.iter().copied());
        }
        assert_eq!(cut(&jpeg), expected);
        // 1/8: only the DC term.
        let eighth = for_luma(&jpeg, 0);
        assert!(eighth.windows(40).all(|w| w != [0x22; 40] && w != [0x44; 40]));
        assert!(eighth.windows(40).any(|w| w == [0x11; 40]));
        // Every luma band read: only the chroma scans go.
        let full = for_luma(&jpeg, 63);
        assert!(full.windows(40).any(|w| w == [0x44; 40]) && full.windows(40).all(|w| w != [0x33; 40]));
    }

    #[test]
    fn a_scan_that_a_kept_refinement_depends_on_stays() {
        // Y 6-63 first, then a refinement of Y 1-63: the refinement reads positions 1-4, and its
        // decoding depends on what 6-63 made non-zero, so both stay. Cb's refinement depends
        // only on Cb's first pass, and both go.
        let scans = [
            scan(&[1, 2, 3], 0, 0, &[1; 8]),
            refine(&[1], 6, 63, (0, 1), &[2; 8]),
            refine(&[2], 1, 63, (0, 1), &[3; 8]),
            refine(&[1], 1, 5, (0, 1), &[6; 8]),
            refine(&[1], 1, 63, (1, 0), &[4; 8]),
            refine(&[2], 1, 63, (1, 0), &[5; 8]),
        ];
        let jpeg = progressive(&scans);
        let out = for_luma(&jpeg, 4);
        for (fill, kept) in [(1u8, true), (2, true), (3, false), (6, true), (4, true), (5, false)] {
            assert_eq!(out.windows(8).any(|w| w == [fill; 8]), kept, "scan of {fill}s");
        }
    }

    /// A DC scan stays even when it carries no luma: it latches its components' tables.
    #[test]
    fn dc_scans_stay() {
        let scans = [
            scan(&[1], 0, 0, &[1; 8]),
            scan(&[2], 0, 0, &[2; 8]),
            scan(&[3], 0, 0, &[3; 8]),
            scan(&[2], 1, 63, &[4; 8]),
        ];
        let jpeg = progressive(&scans);
        let out = for_luma(&jpeg, 63);
        for (fill, kept) in [(1u8, true), (2, true), (3, true), (4, false)] {
            assert_eq!(out.windows(8).any(|w| w == [fill; 8]), kept, "scan of {fill}s");
        }
    }

    #[test]
    fn anything_unusual_is_left_as_it_is() {
        let jpeg = progressive(&[scan(&[1, 2, 3], 0, 0, &[1; 8]), scan(&[2], 1, 63, &[2; 8])]);
        assert!(matches!(for_luma(&jpeg, 4), Cow::Owned(_)));
        // Cut short, in a scan and before the end of image.
        for n in [jpeg.len() - 6, jpeg.len() - 2, jpeg.len() - 1] {
            assert!(matches!(for_luma(&jpeg[..n], 4), Cow::Borrowed(_)), "cut at {n}");
        }
        // Not progressive.
        let mut baseline = jpeg.clone();
        baseline[3] = 0xC0;
        assert!(matches!(for_luma(&baseline, 4), Cow::Borrowed(_)));
        // A scan of a component the frame does not have.
        let stray = progressive(&[scan(&[1, 2, 3], 0, 0, &[1; 8]), scan(&[9], 1, 63, &[2; 8])]);
        assert!(matches!(for_luma(&stray, 4), Cow::Borrowed(_)));
        // A component named twice in one scan.
        let twice = progressive(&[scan(&[1, 2, 3], 0, 0, &[1; 8]), scan(&[2, 2], 1, 63, &[2; 8])]);
        assert!(matches!(for_luma(&twice, 4), Cow::Borrowed(_)));
        // A scan of no component, and one whose header is longer than its components need.
        let empty = progressive(&[scan(&[1, 2, 3], 0, 0, &[1; 8]), scan(&[], 1, 63, &[2; 8])]);
        assert!(matches!(for_luma(&empty, 4), Cow::Borrowed(_)));
        let mut long = scan(&[2], 1, 63, &[2; 8]);
        long[3] += 1; // the length, one byte more: the last data byte counts as header
        let long = progressive(&[scan(&[1, 2, 3], 0, 0, &[1; 8]), long]);
        assert!(matches!(for_luma(&long, 4), Cow::Borrowed(_)));
        // A progression libjpeg would warn about, in scans that would be cut: Cb refined before
        // its first scan, a Cr band before Cr's DC term, two components in an AC band.
        for bogus in [
            refine(&[2], 1, 63, (1, 0), &[2; 8]),
            scan(&[3], 1, 63, &[2; 8]),
            scan(&[2, 3], 1, 63, &[2; 8]),
        ] {
            let dc = scan(&[1, 2], 0, 0, &[1; 8]);
            assert!(matches!(for_luma(&progressive(&[dc, bogus]), 4), Cow::Borrowed(_)));
        }
        // Nothing to cut.
        let luma = progressive(&[scan(&[1, 2, 3], 0, 0, &[1; 8]), scan(&[1], 1, 5, &[2; 8])]);
        assert!(matches!(for_luma(&luma, 4), Cow::Borrowed(_)));
        assert!(matches!(for_luma(b"not a jpeg", 4), Cow::Borrowed(_)));
    }
}
