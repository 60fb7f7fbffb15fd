//! The luma coefficients of a baseline (sequential, Huffman-coded, 8-bit) JPEG, entropy-decoded
//! here instead of by libjpeg-turbo.
//!
//! Through `tj3Transform` (`coefficients.rs`) libjpeg-turbo zeroes and stores every coefficient
//! of every component's blocks, and the plane then reads the luma's low (8/d)² of them. Here the
//! one scan's Huffman codes are walked once: the luma's low coefficients are kept, one row of
//! MCUs at a time, and every other value is only skipped. An AC code and its value that fit in
//! `FAST` bits are read with one table look-up.
//!
//! The coefficients are the same integers libjpeg-turbo decodes, so the plane is the same. This
//! takes only what libjpeg-turbo takes without an error or a warning: sides up to 65500, grey or
//! three components that libjpeg reads as YCbCr, one scan holding every component in frame
//! order with Ss = 0, Se = 63 and no successive approximation, quantisation and Huffman tables
//! that are defined and sound, restart markers in their order with nothing between the data and
//! them, and the end of image right after the data. On anything else (a second scan, damage, a
//! marker out of place) it answers `None`, and the caller hands the file to libjpeg-turbo as
//! before.
use crate::image::coefficients::ZIGZAG;

/// Code bits read by one table look-up.
const FAST: u32 = 10;

/// One Huffman table (JPEG's canonical codes, up to 16 bits).
struct Table {
    /// For each `FAST`-bit prefix: (code length << 8) | symbol, or 0 when the code is longer.
    fast: [u16; 1 << FAST],
    /// For an AC table, for each `FAST`-bit prefix holding a whole code and its value:
    /// (value << 16) | (run << 8) | bits used; 0 otherwise (and for end of block and runs of 16).
    whole: [i32; 1 << FAST],
    /// For codes longer than `FAST`: the largest code of each length (-1: none), and the offset
    /// from a code of that length to its symbol's index.
    largest: [i32; 17],
    offset: [i32; 17],
    symbols: Vec<u8>,
}

impl Table {
    /// From a DHT entry's 16 counts and its symbols; `None` where libjpeg-turbo would refuse the
    /// table (more than 256 codes, codes that overrun their length, a DC symbol above 15).
    fn new(counts: &[u8], symbols: &[u8], dc: bool) -> Option<Table> {
        if symbols.len() > 256 || (dc && symbols.iter().any(|&s| s > 15)) {
            return None;
        }
        let mut fast = [0u16; 1 << FAST];
        let mut whole = [0i32; 1 << FAST];
        let (mut largest, mut offset) = ([-1i32; 17], [0i32; 17]);
        let (mut code, mut k) = (0i32, 0usize);
        for len in 1..=16u32 {
            let n = usize::from(counts[len as usize - 1]);
            if n > 0 {
                offset[len as usize] = k as i32 - code;
            }
            for &symbol in &symbols[k..k + n] {
                // libjpeg refuses a code of all ones, and (with it) codes that overrun the length.
                if code + 1 >= 1 << len {
                    return None;
                }
                if len <= FAST {
                    let free = FAST - len;
                    let first = (code as usize) << free;
                    for look in first..first + (1 << free) {
                        fast[look] = ((len as u16) << 8) | u16::from(symbol);
                        let (run, size) = (u32::from(symbol >> 4), u32::from(symbol & 15));
                        if !dc && size > 0 && len + size <= FAST {
                            let raw = ((look >> (free - size)) & ((1 << size) - 1)) as i32;
                            let value = extend(raw, size);
                            whole[look] = (value << 16) | ((run as i32) << 8) | (len + size) as i32;
                        }
                    }
                }
                code += 1;
            }
            k += n;
            if n > 0 {
                largest[len as usize] = code - 1;
            }
            code <<= 1;
        }
        Some(Table { fast, whole, largest, offset, symbols: symbols.to_vec() })
    }
}

/// A value's `size` bits read as JPEG's signed magnitude (F.2.2.1's EXTEND).
#[inline]
fn extend(raw: i32, size: u32) -> i32 {
    if raw < 1 << (size - 1) {
        raw - (1 << size) + 1
    } else {
        raw
    }
}

/// Zero bytes after the unstuffed data: more than one MCU can read (up to 10 blocks of 64 codes
/// and values of at most 31 bits each, and 8 bytes ahead), so an MCU that runs past the data
/// reads zeros, and is then refused.
const PAD: usize = 10 * 264 + 16;

/// The scan's entropy-coded data with its stuffed zero bytes taken out (then `PAD` zeros), the
/// end of each restart interval in it, and the marker that ends the scan.
struct Stream {
    bytes: Vec<u8>,
    /// (end in `bytes`, the restart marker there); the last interval ends at `end`.
    restarts: Vec<(usize, u8)>,
    end: usize,
    marker: u8,
}

impl Stream {
    /// From `data[from..]`, up to the first marker that is not a restart marker. `None` at fill
    /// bytes (0xFF 0xFF) inside the data, or when the data ends without a marker.
    fn new(data: &[u8], from: usize) -> Option<Stream> {
        let mut bytes = Vec::with_capacity(data.len() - from + PAD);
        let mut restarts = Vec::new();
        let mut at = from;
        loop {
            let ff = at + next_ff(data.get(at..)?)?;
            bytes.extend_from_slice(&data[at..ff]);
            match *data.get(ff + 1)? {
                0 => bytes.push(0xFF),
                marker @ 0xD0..=0xD7 => restarts.push((bytes.len(), marker)),
                0xFF => return None,
                marker => {
                    let end = bytes.len();
                    bytes.resize(end + PAD, 0);
                    return Some(Stream { bytes, restarts, end, marker });
                }
            }
            at = ff + 2;
        }
    }
}

/// A code longer than `FAST` bits at the top of `buf`: its length and symbol. (It takes the
/// buffer by value, so that the reader's state stays in registers.)
#[cold]
#[inline(never)]
fn long_symbol(buf: u64, table: &Table) -> Option<(u32, u8)> {
    for len in FAST + 1..=16 {
        let code = (buf >> (64 - len)) as i32;
        if code <= table.largest[len as usize] {
            return Some((len, *table.symbols.get((code + table.offset[len as usize]) as usize)?));
        }
    }
    None
}

/// The offset of the first 0xFF in `data`, eight bytes at a time.
fn next_ff(data: &[u8]) -> Option<usize> {
    let mut chunks = data.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let inverse = !u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if inverse.wrapping_sub(0x0101_0101_0101_0101) & !inverse & 0x8080_8080_8080_8080 != 0 {
            break;
        }
        offset += 8;
    }
    data[offset..].iter().position(|&b| b == 0xFF).map(|i| offset + i)
}

/// The bits of a `Stream`, most significant first, through a 64-bit buffer that `fill` tops up
/// eight bytes at a time, without a test per byte, once it holds fewer than 32 bits.
#[derive(Clone, Copy)]
struct Bits<'a> {
    bytes: &'a [u8],
    /// The next byte not yet in `buf`.
    pos: usize,
    buf: u64,
    count: u32,
}

impl<'a> Bits<'a> {
    fn new(bytes: &'a [u8], pos: usize) -> Bits<'a> {
        Bits { bytes, pos, buf: 0, count: 0 }
    }

    #[inline(always)]
    fn fill(&mut self) {
        if self.count >= 32 {
            return;
        }
        let word = u64::from_be_bytes(self.bytes[self.pos..self.pos + 8].try_into().expect("8 bytes"));
        self.buf |= word >> self.count;
        self.pos += ((63 - self.count) >> 3) as usize;
        self.count |= 56;
    }

    /// The bits read so far, from the start of `bytes`.
    fn read(&self) -> usize {
        self.pos * 8 - self.count as usize
    }

    #[inline(always)]
    fn peek(&self, n: u32) -> u32 {
        (self.buf >> (64 - n)) as u32
    }

    /// The next `FAST` bits, as a table index.
    #[inline(always)]
    fn look(&self) -> usize {
        (self.buf >> (64 - FAST)) as usize & ((1 << FAST) - 1)
    }

    #[inline(always)]
    fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.count -= n;
    }

    /// `size` (1..=15) bits as a signed value.
    #[inline(always)]
    fn value(&mut self, size: u32) -> i32 {
        let raw = self.peek(size) as i32;
        self.consume(size);
        extend(raw, size)
    }

    /// One Huffman symbol (the buffer holds at least 16 bits); `None` for a code the table
    /// does not have.
    #[inline(always)]
    fn symbol(&mut self, table: &Table) -> Option<u8> {
        let entry = table.fast[self.look()];
        let (len, symbol) = if entry != 0 { (u32::from(entry >> 8), entry as u8) } else { long_symbol(self.buf, table)? };
        self.consume(len);
        Some(symbol)
    }

    /// At the end of an interval that ends at byte `end`: all read was data (nothing past
    /// `end`, where libjpeg would have met the marker and warned), and no whole byte of the data
    /// is left unread (libjpeg warns of extraneous bytes).
    fn ends_at(&self, end: usize) -> bool {
        let read = self.read();
        read <= end * 8 && end * 8 - read < 8
    }
}

/// One component of the frame: its sampling factors and tables.
#[derive(Clone, Copy)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    /// The quantisation table's id.
    q: usize,
    dc: usize,
    ac: usize,
}

/// What the header before the scan says.
struct Header {
    width: usize,
    height: usize,
    components: Vec<Component>,
    dc: [Option<Table>; 4],
    ac: [Option<Table>; 4],
    restart: usize,
    /// Where the entropy-coded data begins.
    data: usize,
}

/// The header up to the first scan's data; `None` unless the frame is baseline or extended
/// sequential Huffman (SOF0, SOF1), 8-bit, of 1 or 3 components, and the scan is the one this
/// decodes.
fn header(data: &[u8]) -> Option<Header> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let (mut frame, mut restart) = (None::<(usize, usize, Vec<Component>)>, 0usize);
    let (mut dc, mut ac): ([Option<Table>; 4], [Option<Table>; 4]) = Default::default();
    let mut quantised = [false; 4];
    let (mut adobe, mut saw_jfif) = (None, false);
    let mut at = 2;
    loop {
        if *data.get(at)? != 0xFF {
            return None;
        }
        let marker = *data.get(at + 1)?;
        if marker == 0xFF {
            at += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([*data.get(at + 2)?, *data.get(at + 3)?]));
        let body = data.get(at + 4..at + 2 + len)?;
        if len < 2 {
            return None;
        }
        at += 2 + len;
        match marker {
            0xC0 | 0xC1 => {
                if frame.is_some() || body.len() < 6 || body[0] != 8 {
                    return None;
                }
                let height = usize::from(u16::from_be_bytes([body[1], body[2]]));
                let width = usize::from(u16::from_be_bytes([body[3], body[4]]));
                let n = usize::from(body[5]);
                // libjpeg's JPEG_MAX_DIMENSION is 65500.
                if !(1..=65500).contains(&width) || !(1..=65500).contains(&height) || !(n == 1 || n == 3) || body.len() != 6 + 3 * n {
                    return None;
                }
                let components: Vec<Component> = body[6..]
                    .chunks_exact(3)
                    .map(|c| Component { id: c[0], h: usize::from(c[1] >> 4), v: usize::from(c[1] & 15), q: usize::from(c[2]), dc: 0, ac: 0 })
                    .collect();
                let twice = components.iter().enumerate().any(|(i, c)| components[..i].iter().any(|o| o.id == c.id));
                if twice || components.iter().any(|c| !(1..=4).contains(&c.h) || !(1..=4).contains(&c.v) || c.q > 3) {
                    return None;
                }
                frame = Some((width, height, components));
            }
            0xC2..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None, // not sequential Huffman
            0xC4 => {
                let mut rest = body;
                while !rest.is_empty() {
                    let (class, id) = (rest[0] >> 4, usize::from(rest[0] & 15));
                    let counts = rest.get(1..17)?;
                    let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let symbols = rest.get(17..17 + n)?;
                    if class > 1 || id > 3 {
                        return None;
                    }
                    let table = Table::new(counts, symbols, class == 0)?;
                    if class == 0 { dc[id] = Some(table) } else { ac[id] = Some(table) }
                    rest = &rest[17 + n..];
                }
            }
            0xDD if body.len() == 2 => restart = usize::from(u16::from_be_bytes([body[0], body[1]])),
            0xDB => {
                let mut rest = body;
                while let Some(&first) = rest.first() {
                    let (precision, id) = (first >> 4, usize::from(first & 15));
                    if precision > 1 || id > 3 {
                        return None;
                    }
                    quantised[id] = true;
                    rest = rest.get(1 + 64 * (1 + usize::from(precision))..)?;
                }
            }
            // JFIF of another major version, an Adobe transform libjpeg does not know: it warns.
            0xE0 if body.len() >= 14 && body.starts_with(b"JFIF\0") => {
                if body[5] != 1 {
                    return None;
                }
                saw_jfif = true;
            }
            0xEE if body.len() >= 12 && body.starts_with(b"Adobe") => adobe = Some(body[11]),
            0xE0..=0xEF | 0xFE => {} // APPn, COM
            0xDA => {
                let (width, height, mut components) = frame?;
                let n = usize::from(*body.first()?);
                if n != components.len() || body.len() != 4 + 2 * n {
                    return None;
                }
                for (c, pair) in components.iter_mut().zip(body[1..1 + 2 * n].chunks_exact(2)) {
                    if pair[0] != c.id || !quantised[c.q] {
                        return None; // a scan not in frame order, a quantisation table not defined
                    }
                    (c.dc, c.ac) = (usize::from(pair[1] >> 4), usize::from(pair[1] & 15));
                    if c.dc > 3 || c.ac > 3 || dc[c.dc].is_none() || ac[c.ac].is_none() {
                        return None;
                    }
                }
                if body[1 + 2 * n..] != [0, 63, 0] {
                    return None; // Ss, Se, Ah/Al of a sequential scan
                }
                // Three components are YCbCr to libjpeg with a JFIF segment; else with an Adobe
                // transform of 1 (0 is RGB, which it will not turn grey, and above 1 it warns);
                // else unless their ids are 'R', 'G', 'B' (jdapimin.c, default_decompress_parms).
                let ycc = match adobe {
                    _ if saw_jfif => true,
                    Some(transform) => transform == 1,
                    None => !components.iter().map(|c| c.id).eq(*b"RGB"),
                };
                if components.len() == 3 && !ycc {
                    return None;
                }
                return Some(Header { width, height, components, dc, ac, restart, data: at });
            }
            _ => return None, // anything else libjpeg would refuse, warn about, or that this does not read
        }
    }
}

/// Decode the luma of a baseline JPEG: `m` is the side of the low square of coefficients kept
/// (rows and columns < m), `blocks` the luma plane's size in blocks. `take(rows, width_blocks, first_row)` receives each row of MCUs'
/// luma blocks (64 coefficients each, natural order, only the low m x m set). `None` for any
/// file this does not take (see the module), and then `take` may have seen part of it.
pub fn luma_rows(
    data: &[u8],
    m: usize,
    blocks: (usize, usize),
    mut take: impl FnMut(&[i16], usize, usize) -> bool,
) -> Option<()> {
    let header = header(data)?;
    let (hmax, vmax) = header.components.iter().fold((1, 1), |(h, v), c| (h.max(c.h), v.max(c.v)));
    let luma = header.components[0];
    if (luma.h, luma.v) != (hmax, vmax) || header.components.iter().map(|c| c.h * c.v).sum::<usize>() > 10 {
        return None;
    }
    // One block per MCU in a scan of one component; otherwise each MCU holds h x v of each.
    let single = header.components.len() == 1;
    let sampling = |c: &Component| if single { (1, 1) } else { (c.h, c.v) };
    let (luma_w, luma_h) = sampling(&luma);
    let (mcus_x, mcus_y) = (header.width.div_ceil(8 * luma_w), header.height.div_ceil(8 * luma_h));
    let width_blocks = mcus_x * luma_w;
    if (header.width.div_ceil(8), header.height.div_ceil(8)) != blocks {
        return None; // not the plane the caller expects
    }
    // Where each kept zig-zag position goes in a block (natural order), or 64: skipped. A run
    // past position 63 lands on 63, as in libjpeg (its jpeg_natural_order has 16 entries of 63
    // after the 64).
    let mut place = [64u8; 80];
    for (k, &natural) in ZIGZAG.iter().enumerate() {
        if natural / 8 < m && natural % 8 < m {
            place[k] = natural as u8;
        }
    }
    let last = place[63];
    place[64..].fill(last);
    let kept = Kept { place, m };
    // The blocks of one MCU in their order, a luma block with its place in the row of MCUs.
    let mut units = Vec::new();
    for (c, component) in header.components.iter().enumerate() {
        let (h, v) = sampling(component);
        let (dc, ac) = (header.dc[component.dc].as_ref()?, header.ac[component.ac].as_ref()?);
        for by in 0..v {
            for bx in 0..h {
                let at = (c == 0).then_some((by * width_blocks + bx) * 64);
                units.push(Unit { dc, ac, component: c, at });
            }
        }
    }
    let mut rows = vec![0i16; luma_h * width_blocks * 64];
    let mut predictions = vec![0i32; header.components.len()];
    let stream = Stream::new(data, header.data)?;
    // libjpeg expects a restart marker before every `restart` MCUs after the first ones, in
    // order, and the end of image after the last MCU.
    let expected = (mcus_x * mcus_y - 1).checked_div(header.restart).unwrap_or(0);
    let in_order = stream.restarts.iter().enumerate().all(|(i, &(_, marker))| marker == 0xD0 + (i % 8) as u8);
    if stream.marker != 0xD9 || stream.restarts.len() != expected || !in_order {
        return None;
    }
    let mut bits = Bits::new(&stream.bytes, 0);
    let mut interval = 0;
    let mut end = stream.restarts.first().map_or(stream.end, |&(end, _)| end);
    let mut left = header.restart;
    for my in 0..mcus_y {
        for mx in 0..mcus_x {
            if header.restart > 0 && left == 0 {
                if !bits.ends_at(end) {
                    return None;
                }
                bits = Bits::new(&stream.bytes, end);
                interval += 1;
                end = stream.restarts.get(interval).map_or(stream.end, |&(end, _)| end);
                predictions.iter_mut().for_each(|p| *p = 0);
                left = header.restart;
            }
            left = left.wrapping_sub(1);
            decode_mcu(&mut bits, &units, mx * luma_w * 64, &mut rows, &mut predictions, &kept)?;
            // Past the interval's data libjpeg would have met its marker, and warned.
            if bits.read() > end * 8 {
                return None;
            }
        }
        if !take(&rows, width_blocks, my * luma_h) {
            return None;
        }
    }
    bits.ends_at(stream.end).then_some(())
}

/// Which coefficients a luma block keeps, the low m x m: `place[k]`, where zig-zag position k
/// goes in the block (64: nowhere; k up to 79, where a run past 63 can end).
struct Kept {
    place: [u8; 80],
    m: usize,
}

/// One block of an MCU: its tables, its component, and for a luma block where it goes in the
/// row of MCUs (from the MCU's first block).
struct Unit<'t> {
    dc: &'t Table,
    ac: &'t Table,
    component: usize,
    at: Option<usize>,
}

/// The blocks of one MCU, its luma blocks set at `base` + their place in `rows`.
#[inline(never)] // one call per MCU, with the reader's state in registers throughout
fn decode_mcu(state: &mut Bits, units: &[Unit], base: usize, rows: &mut [i16], predictions: &mut [i32], kept: &Kept) -> Option<()> {
    let mut bits = *state;
    for unit in units {
        let block = unit.at.map(|at| &mut rows[base + at..base + at + 64]);
        decode_block(&mut bits, unit.dc, unit.ac, &mut predictions[unit.component], block, kept)?;
    }
    *state = bits;
    Some(())
}

/// One block: its DC difference (added to `prediction`) and its AC values. With `block`, the
/// low m x m coefficients are set there (the others left as they are); without, values are
/// only skipped.
#[inline(always)]
fn decode_block(bits: &mut Bits, dc: &Table, ac: &Table, prediction: &mut i32, block: Option<&mut [i16]>, kept: &Kept) -> Option<()> {
    let (place, m) = (&kept.place, kept.m);
    bits.fill();
    let size = u32::from(bits.symbol(dc)?);
    let difference = if size > 0 { bits.value(size) } else { 0 };
    *prediction = prediction.checked_add(difference)?;
    let Some(block) = block else {
        return skip_ac(bits, ac);
    };
    // The low m x m coefficients lie in the first m rows: zero them, in one of two fixed sizes.
    if m <= 4 {
        block[..32].fill(0);
    } else {
        block.fill(0);
    }
    block[0] = *prediction as i16;
    // Values are set where `place` says. (Switching to skipping after the last position kept
    // ran slower.)
    walk_ac(bits, ac, |k, value| {
        if let Some(&at) = place.get(k).filter(|&&at| at < 64) {
            block[usize::from(at)] = value as i16;
        }
    })
}

/// A block's AC values, each handed to `set` with its zig-zag position (up to 78: a run can end
/// past 63); `skip_ac` hands them nowhere, and the values are then never worked out.
#[inline(always)]
fn walk_ac(bits: &mut Bits, ac: &Table, mut set: impl FnMut(usize, i32)) -> Option<()> {
    let mut k = 1usize;
    while k < 64 {
        bits.fill();
        let whole = ac.whole[bits.look()];
        if whole != 0 {
            bits.consume((whole & 0xFF) as u32);
            k += ((whole >> 8) & 0xFF) as usize;
            set(k, whole >> 16);
            k += 1;
            continue;
        }
        let symbol = bits.symbol(ac)?;
        let (run, size) = (usize::from(symbol >> 4), u32::from(symbol & 15));
        if size > 0 {
            k += run;
            let value = bits.value(size);
            set(k, value);
            k += 1;
        } else if run == 15 {
            k += 16;
        } else {
            break; // end of block
        }
    }
    Some(())
}

/// A block's AC values, read and dropped.
#[inline]
fn skip_ac(bits: &mut Bits, ac: &Table) -> Option<()> {
    walk_ac(bits, ac, |_, _| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts for codes of lengths 1..=16 from (length, how many) pairs.
    fn counts(pairs: &[(usize, u8)]) -> [u8; 16] {
        let mut counts = [0u8; 16];
        for &(len, n) in pairs {
            counts[len - 1] = n;
        }
        counts
    }

    /// Codes 0, 10, 110 and 1110 (a prefix code leaving 1111 free), then one of 12 bits.
    #[test]
    fn codes_are_read_short_and_long() {
        let symbols = [0x01, 0x02, 0x03, 0x11, 0x05];
        let table = Table::new(&counts(&[(1, 1), (2, 1), (3, 1), (4, 1), (12, 1)]), &symbols, false).unwrap();
        // 0 | 10 | 110 | 1110 | 111100000000 (the 12-bit code: 1111 then 0s), then padding.
        let codes = ["0", "10", "110", "1110", "111100000000"].concat();
        let stream = u64::from_str_radix(&codes, 2).unwrap() << (64 - codes.len());
        let bytes: Vec<u8> = stream.to_be_bytes().iter().copied().chain([0; 8]).collect();
        let mut bits = Bits::new(&bytes, 0);
        let mut read = vec![];
        for _ in 0..5 {
            bits.fill();
            read.push(bits.symbol(&table).unwrap());
        }
        assert_eq!(read, symbols);
        assert_eq!(bits.read(), 22);
    }

    /// A value's bits at the end of a short code come back whole, with their sign.
    #[test]
    fn a_code_and_its_value_are_read_at_once() {
        // Symbol 0x12: run 1, size 2, code "0"; the value bits 01 mean -2, 10 mean 2.
        let table = Table::new(&counts(&[(1, 1), (2, 1)]), &[0x12, 0x00], false).unwrap();
        let look = |prefix: usize, len: u32| table.whole[prefix << (FAST - len)];
        assert_eq!(look(0b001, 3), (-2 << 16) | (1 << 8) | 3);
        assert_eq!(look(0b010, 3), (2 << 16) | (1 << 8) | 3);
        // End of block has no value to read with it.
        assert_eq!(look(0b10, 2), 0);
    }

    /// Tables libjpeg refuses are refused here, without a panic.
    #[test]
    fn unsound_tables_are_refused() {
        // A code of all ones (1 and 11 would both be prefixes of 111...).
        assert!(Table::new(&counts(&[(1, 2)]), &[1, 2], false).is_none());
        // More codes than the length holds.
        assert!(Table::new(&counts(&[(2, 5)]), &[1, 2, 3, 4, 5], false).is_none());
        assert!(Table::new(&counts(&[(9, 255), (10, 255)]), &[7; 510], false).is_none());
        // A DC size above 15.
        assert!(Table::new(&counts(&[(2, 1)]), &[16], true).is_none());
        assert!(Table::new(&counts(&[(2, 1)]), &[15], true).is_some());
    }

    #[test]
    fn the_first_ff_is_found_in_every_position() {
        for len in 0..40 {
            for at in 0..=len {
                let mut data = vec![0x12u8; len];
                if at < len {
                    data[at] = 0xFF;
                }
                assert_eq!(next_ff(&data), (at < len).then_some(at), "{len} {at}");
            }
        }
    }

    /// Stuffed bytes are taken out, restart markers cut the intervals, and the scan ends at the
    /// first other marker; fill bytes inside the data are refused.
    #[test]
    fn the_stream_is_unstuffed_and_cut() {
        let data = [0xAA, 0xFF, 0x00, 0xBB, 0xFF, 0xD0, 0xCC, 0xFF, 0xD1, 0xFF, 0xD9, 0x11];
        let stream = Stream::new(&data, 0).unwrap();
        assert_eq!(&stream.bytes[..stream.end], &[0xAA, 0xFF, 0xBB, 0xCC]);
        assert_eq!(stream.restarts, vec![(3, 0xD0), (4, 0xD1)]);
        assert_eq!(stream.marker, 0xD9);
        assert!(stream.bytes[stream.end..].iter().all(|&b| b == 0) && stream.bytes.len() == stream.end + PAD);
        assert!(Stream::new(&[0xAA, 0xFF, 0xFF, 0xD9], 0).is_none());
        assert!(Stream::new(&[0xAA, 0xBB], 0).is_none());
    }
}
