//! The banded search of one band (or one sub-block of a band): every pair of images within
//! `max_distance` bits whose band values lie within the band's radius, each emitted once.
//!
//! Bits: bands are cut from each hash's bits in the fixed order of `order` (each band's value
//! gathered from the hash, its agreement counted through a mask: no hash is copied into that
//! order), so that correlated neighbouring bits of a perceptual hash spread over the bands;
//! distances do not depend on the order.
//!
//! Band bucketing: the entries (one per image, or nine with dihedral variants: the image's hash
//! and its 8 variant hashes) are sorted by band value and copied into that order, so each band
//! value is a contiguous run. Pairs inside a run, and (radius >= 1) between a run and the runs of
//! the values within `radius` bits of it, found through a direct table of run offsets or a binary
//! search, are verified by popcount. Big runs (blank or near-uniform images) are brute-forced in
//! blocks: the work is quadratic in the run, never the recall.
//!
//! Fixed images (`Images::with_fixed`): the last `fixed` images are already kept (an earlier
//! run's, or a reference set). They take part with their hash only (no variants), and pairs of
//! two fixed images are never searched: inside each run the entries of new images come first,
//! and fixed entries are compared only with new ones, so fixed-only runs cost their bucketing
//! and nothing else.
//!
//! Emitted once: a pair of images can qualify on several bands, and (with variants) through
//! several pairs of entries. It is emitted only by the first band (and, when partitioned by
//! sub-block, the first sub-block) on which any of its entry pairs qualifies; every other band
//! checks that and skips it. So the union of all bands' outputs holds each pair exactly once,
//! however the bands are spread over workers.
use rayon::prelude::*;

use crate::error::Error;
use crate::near::bits::{image_distance, word, Packed};
use crate::near::forest::union;
use crate::near::layout::{Layout, TABLE_BITS};
use crate::near::order::{order, Field, Mask};
use crate::pool;

/// Runs at least this long are counted as brute-forced (degenerate, near-uniform hashes).
pub const BIG_RUN: usize = 1024;
/// Bands at most this wide filter fixed entries through a bitmap of the values near new ones
/// (2^30 bits: 128 MiB at the most).
const NEAR_NEW_MAX_BITS: u32 = 30;
const FIXED_CHUNK: usize = 64;

#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, and the pointer is valid anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch(x as *const T as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}
const BLOCK: usize = 256;

/// What to search: `hashes` (n rows), optional `variants` (8 rows per new image, first the
/// identity), the image ids that the edges name, and how many of the images, at the end, are
/// fixed (see the module docs).
#[derive(Clone, Copy)]
pub struct Images<'a> {
    pub hashes: Packed<'a>,
    pub variants: Option<Packed<'a>>,
    pub ids: &'a [u64],
    /// Images at or after this index are fixed.
    pub fixed_from: usize,
}

impl<'a> Images<'a> {
    pub fn new(hashes: Packed<'a>, variants: Option<Packed<'a>>, ids: &'a [u64]) -> Result<Self, Error> {
        Self::with_fixed(hashes, variants, ids, 0)
    }

    /// Images whose last `fixed` are fixed: already kept, hash only (the variants cover the
    /// new images only), never paired with each other.
    pub fn with_fixed(hashes: Packed<'a>, variants: Option<Packed<'a>>, ids: &'a [u64], fixed: usize) -> Result<Self, Error> {
        if ids.len() != hashes.len() {
            return Err(Error::Config(format!("{} ids for {} hashes", ids.len(), hashes.len())));
        }
        if fixed > hashes.len() {
            return Err(Error::Config(format!("{fixed} fixed images of {}", hashes.len())));
        }
        let fixed_from = hashes.len() - fixed;
        if let Some(v) = &variants {
            if v.width() != hashes.width() || v.len() != 8 * fixed_from {
                return Err(Error::Config(format!(
                    "variants must be 8 hashes of {} bytes per new image, got {} of {} bytes for {} new images",
                    hashes.width(),
                    v.len(),
                    v.width(),
                    fixed_from
                )));
            }
        }
        Ok(Images { hashes, variants, ids, fixed_from })
    }

    fn slots(&self) -> usize {
        if self.variants.is_some() {
            9
        } else {
            1
        }
    }

    #[inline]
    pub fn is_fixed(&self, i: usize) -> bool {
        i >= self.fixed_from
    }

    /// Entry slots image `i` takes part with: all of them for a new image, its hash for a fixed one.
    #[inline]
    fn slots_of(&self, i: usize) -> usize {
        if self.is_fixed(i) {
            1
        } else {
            self.slots()
        }
    }

    /// The hash of entry slot `s` of image `i`: 0 is the image's hash, 1..=8 its variants.
    #[inline]
    fn entry(&self, i: usize, s: usize) -> &'a [u8] {
        match (&self.variants, s) {
            (_, 0) => self.hashes.row(i),
            (Some(v), s) => v.row(i * 8 + s - 1),
            (None, _) => unreachable!(),
        }
    }

    /// The distance of two images: with variants, the smallest over the variants of each new
    /// one against the other's hash (a fixed image has no variants of its own).
    #[inline]
    pub fn distance(&self, a: usize, b: usize) -> u32 {
        let variants = |i: usize| self.variants.filter(|_| !self.is_fixed(i)).map(|v| v.rows(i * 8, 8));
        image_distance(self.hashes.row(a), variants(a), self.hashes.row(b), variants(b))
    }

    /// The entry pairs through which a pair of images is searched: hash against hash, and with
    /// variants also each variant of one against the other's hash.
    fn combos(&self) -> &'static [(usize, usize)] {
        const PLAIN: [(usize, usize); 1] = [(0, 0)];
        const DIHEDRAL: [(usize, usize); 17] = [
            (0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0), (8, 0),
            (0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (0, 7), (0, 8),
        ];
        if self.variants.is_some() {
            &DIHEDRAL
        } else {
            &PLAIN
        }
    }
}

/// Edges found: image ids `a` < `b` by position in the input, with their distance.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Edges {
    pub a: Vec<u64>,
    pub b: Vec<u64>,
    pub distance: Vec<u32>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Pairs of entries compared by popcount.
    pub candidates: u64,
    /// Runs of at least BIG_RUN equal band values, brute-forced in blocks.
    pub big_runs: u64,
    /// Pairs of new images within k emitted here (each pair of the whole search counts in one
    /// part only), in either output.
    pub pairs: u64,
}

/// What a search returns of the pairs between new images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Every pair that qualifies first on the part, with its distance.
    Pairs,
    /// A spanning forest of the pairs that qualify first on the part (fewer edges than the new
    /// images, and than those pairs): each pair is joined into a union-find as it is found and
    /// never stored, so the memory stays linear in the images however many pairs a tight group
    /// of them makes. The parts' forests together span every pair's components. Pairs with a
    /// fixed image are returned in full, as with `Pairs`.
    Forest,
}

/// Which part of the layout one call searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub band: usize,
    /// None: the whole band. Some: one partition of one sub-block (see `Sub`).
    pub sub: Option<Sub>,
}

/// A partition of sub-block `index` of a band: only the entries whose sub-block starts (in its
/// low `prefix_bits` bits) with `prefix` take part, and only pairs that agree exactly on the
/// sub-block are emitted. The partitions of all sub-blocks of all bands together find every
/// pair, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub {
    pub index: usize,
    pub prefix_bits: u32,
    pub prefix: u64,
}

/// The layout's bands over hashes in their own bit order: per band, a mask of its bits and one
/// of each of its sub-blocks' (see `order`).
struct Ordered<'l> {
    layout: &'l Layout,
    positions: Vec<u32>,
    masks: Vec<(Mask, Vec<Mask>)>,
}

impl<'l> Ordered<'l> {
    fn new(layout: &'l Layout, hash_bytes: usize) -> Result<Self, Error> {
        if layout.bits as usize > hash_bytes * 8 {
            return Err(Error::Config(format!("a {}-bit layout for hashes of {hash_bytes} bytes", layout.bits)));
        }
        let positions = order(layout.bits);
        let masks = layout
            .bands
            .iter()
            .map(|b| {
                let subs = b.subs().iter().map(|&(s, w)| Mask::new(&positions, s, w, hash_bytes)).collect();
                (Mask::new(&positions, b.start, b.width, hash_bytes), subs)
            })
            .collect();
        Ok(Ordered { layout, positions, masks })
    }

    /// Ordered bits `start..start + width`, read from hashes.
    fn field(&self, start: u32, width: u32) -> Field {
        Field::new(&self.positions, start, width)
    }

    /// Whether `x` and `y` lie within the band's radius on it (and agree exactly on sub-block
    /// `sub` of it, if given).
    fn qualifies(&self, band: usize, sub: Option<usize>, x: &[u8], y: &[u8]) -> bool {
        let (mask, subs) = &self.masks[band];
        mask.differing(x, y) <= self.layout.bands[band].radius && sub.map_or(true, |j| subs[j].differing(x, y) == 0)
    }
}

/// Whether this call emits a pair of images found in it: no part searched before `part`
/// qualifies it, and (in a sub-block partition with variants, where one pair of images can be in
/// several partitions through different entries) the first of its entry pairs that qualifies
/// here lies in this partition.
fn emitted_here(ordered: &Ordered, part: Part, images: &Images, a: usize, b: usize, in_partition: &dyn Fn(&[u8]) -> bool) -> bool {
    let mut first_here: Option<bool> = None;
    for &(sa, sb) in images.combos() {
        for &(x, y) in &[(a, b), (b, a)] {
            if sa >= images.slots_of(x) || sb >= images.slots_of(y) {
                continue; // a fixed image takes part with its hash only
            }
            let (hx, hy) = (images.entry(x, sa), images.entry(y, sb));
            for band in 0..part.band {
                if ordered.qualifies(band, None, hx, hy) {
                    return false;
                }
            }
            if let Some(sub) = part.sub {
                for earlier in 0..sub.index {
                    if ordered.qualifies(part.band, Some(earlier), hx, hy) {
                        return false;
                    }
                }
                if first_here.is_none() && ordered.qualifies(part.band, Some(sub.index), hx, hy) {
                    first_here = Some(in_partition(hx));
                }
            }
            if images.variants.is_none() {
                break; // plain hashes: (a, b) and (b, a) are the same test
            }
        }
    }
    first_here.unwrap_or(true)
}

/// With variants, the pair of entries (image, slot) through which a pair of images counts on
/// this part: the first, in `emitted_here`'s order, that qualifies here with both entries in the
/// partition. The search finds each pair of entries once per part, so a pair of images found
/// through several of them counts once.
fn counted_entries(ordered: &Ordered, part: Part, images: &Images, a: usize, b: usize, in_partition: &dyn Fn(&[u8]) -> bool) -> Option<[(usize, usize); 2]> {
    for &(sa, sb) in images.combos() {
        for &(x, y) in &[(a, b), (b, a)] {
            if sa >= images.slots_of(x) || sb >= images.slots_of(y) {
                continue;
            }
            let (hx, hy) = (images.entry(x, sa), images.entry(y, sb));
            if in_partition(hx) && in_partition(hy) && ordered.qualifies(part.band, part.sub.map(|s| s.index), hx, hy) {
                return Some([(x, sa), (y, sb)]);
            }
        }
    }
    None
}

/// Where the verified pairs go: into `pairs` (all of them with `Output::Pairs`; with
/// `Output::Forest` those with a fixed end), or into the union-find of the new images.
struct Found<'f> {
    pairs: Vec<(u32, u32, u32)>,
    forest: Option<Forest<'f>>,
}

struct Forest<'f> {
    /// Images before this index are new.
    fixed_from: u32,
    /// Pairs found and not yet joined: (a, b, distance, slot of a, slot of b), at most
    /// FOREST_CHUNK.
    pending: Vec<(u32, u32, u32, u8, u8)>,
    parent: Vec<u32>,
    /// The edges that joined two trees: (smaller, larger image index, distance).
    edges: Vec<(u32, u32, u32)>,
    counted: u64,
    /// Whether a pair of new images found through entries (a, slot a) and (b, slot b) counts here.
    counts: &'f dyn Fn(u32, u8, u32, u8) -> bool,
}

/// Pairs held before they are joined into a forest (16 bytes each: 16 MiB; a few in unit tests,
/// so that they join in many chunks).
const FOREST_CHUNK: usize = if cfg!(test) { 5 } else { 1 << 20 };

impl Found<'_> {
    /// A pair of images within k, found through entry slots `sa` of `a` and `sb` of `b`. Not
    /// inlined: it runs for the few candidates within k, and kept out of the popcount loop.
    #[inline(never)]
    fn push(&mut self, a: u32, sa: u8, b: u32, sb: u8, d: u32) {
        match &mut self.forest {
            Some(f) if a < f.fixed_from && b < f.fixed_from => {
                f.pending.push((a, b, d, sa, sb));
                if f.pending.len() >= FOREST_CHUNK {
                    f.join();
                }
            }
            _ => self.pairs.push((a.min(b), a.max(b), d)),
        }
    }
}

impl Forest<'_> {
    /// Joins the pending pairs. Only the pairs counted here join: each pair in one part only, so
    /// the parts' forests together hold no more edges than there are pairs.
    fn join(&mut self) {
        for &(a, b, d, sa, sb) in &self.pending {
            if (self.counts)(a, sa, b, sb) {
                self.counted += 1;
                if union(&mut self.parent, a, b) {
                    self.edges.push((a.min(b), a.max(b), d));
                }
            }
        }
        self.pending.clear();
    }
}

/// Masks of 1..=radius bits over the band's bits, leaving out `skip` (a sub-block) if given.
fn masks(width: u32, radius: u32, skip: Option<(u32, u32)>) -> Vec<u64> {
    let free: Vec<u32> = (0..width).filter(|&i| skip.map_or(true, |(s, w)| i < s || i >= s + w)).collect();
    let mut out = Vec::new();
    fn rec(free: &[u32], from: usize, left: u32, acc: u64, out: &mut Vec<u64>) {
        for i in from..free.len() {
            let m = acc | (1u64 << free[i]);
            out.push(m);
            if left > 1 {
                rec(free, i + 1, left - 1, m, out);
            }
        }
    }
    if radius > 0 {
        rec(&free, 0, radius, 0, &mut out);
    }
    out
}

/// Run lookup by band value: a direct table of offsets for narrow bands, else a binary search
/// within the slice of values that share their top bits (found through a small table).
enum Runs {
    Table { offsets: Vec<u32> },
    Sorted { values: Vec<u64>, starts: Vec<u32>, top: Vec<u32>, shift: u32 },
}

/// Sort (key, entry) pairs by key, stably (equal keys keep their order): an LSD radix sort of
/// 16-bit digits over the key's `width` bits, O(n) per digit; the comparison sort beyond 48 bits.
fn sort_by_key(entries: &mut Vec<(u64, u32)>, width: u32) {
    if width > 48 {
        entries.sort_by_key(|e| e.0);
        return;
    }
    let mut other = vec![(0u64, 0u32); entries.len()];
    let mut shift = 0;
    while shift < width {
        let mut counts = vec![0usize; 1 << 16];
        for e in entries.iter() {
            counts[((e.0 >> shift) & 0xFFFF) as usize] += 1;
        }
        let mut sum = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = sum;
            sum += n;
        }
        for &e in entries.iter() {
            let slot = &mut counts[((e.0 >> shift) & 0xFFFF) as usize];
            other[*slot] = e;
            *slot += 1;
        }
        std::mem::swap(entries, &mut other);
        shift += 16;
    }
}

impl Runs {
    /// From (key, entry) pairs in entry order: a table when the band is narrow enough for the
    /// count of entries, else the entries are sorted in place (stably) and their runs listed.
    fn build(entries: &mut Vec<(u64, u32)>, width: u32) -> Runs {
        let n = entries.len();
        if width <= TABLE_BITS && (1usize << width) <= 64 * n.max(1024) {
            let mut offsets = vec![0u32; (1usize << width) + 1];
            for &(k, _) in entries.iter() {
                offsets[k as usize + 1] += 1;
            }
            for i in 1..offsets.len() {
                offsets[i] += offsets[i - 1];
            }
            Runs::Table { offsets }
        } else {
            sort_by_key(entries, width);
            let mut values = Vec::new();
            let mut starts = Vec::new();
            for (i, &(k, _)) in entries.iter().enumerate() {
                if values.last() != Some(&k) {
                    values.push(k);
                    starts.push(i as u32);
                }
            }
            starts.push(n as u32);
            // The top `p` bits of a value index the slice of values that share them.
            let p = (usize::BITS - values.len().leading_zeros()).min(width).min(TABLE_BITS);
            let shift = width - p;
            let mut top = vec![0u32; (1usize << p) + 1];
            for &v in &values {
                top[(v >> shift) as usize + 1] += 1;
            }
            for i in 1..top.len() {
                top[i] += top[i - 1];
            }
            Runs::Sorted { values, starts, top, shift }
        }
    }

    #[inline]
    fn get(&self, key: u64) -> (usize, usize) {
        match self {
            Runs::Table { offsets } => {
                let k = key as usize;
                if k + 1 >= offsets.len() {
                    return (0, 0);
                }
                (offsets[k] as usize, offsets[k + 1] as usize)
            }
            Runs::Sorted { values, starts, top, shift } => {
                let t = (key >> shift) as usize;
                if t + 1 >= top.len() {
                    return (0, 0);
                }
                let (lo, hi) = (top[t] as usize, top[t + 1] as usize);
                match values[lo..hi].binary_search(&key) {
                    Ok(i) => (starts[lo + i] as usize, starts[lo + i + 1] as usize),
                    Err(_) => (0, 0),
                }
            }
        }
    }
}

/// [`search_with`] over several whole bands, in parallel on `threads` threads (None: all cores):
/// their edges one band after the other, and the summed stats.
pub fn search_bands(images: &Images, layout: &Layout, bands: &[usize], output: Output, threads: Option<usize>) -> Result<(Edges, Stats), Error> {
    let ordered = &Ordered::new(layout, images.hashes.width())?;
    let found: Vec<Result<(Edges, Stats), Error>> = pool::install(threads, || {
        bands.par_iter().map(|&band| search_part(images, ordered, Part { band, sub: None }, output)).collect()
    })?;
    let mut edges = Edges::default();
    let mut stats = Stats::default();
    for result in found {
        let (e, s) = result?;
        edges.a.extend(e.a);
        edges.b.extend(e.b);
        edges.distance.extend(e.distance);
        stats.candidates += s.candidates;
        stats.big_runs += s.big_runs;
        stats.pairs += s.pairs;
    }
    Ok((edges, stats))
}

/// All pairs within `layout.max_distance` that qualify first on `part` (see the module docs).
pub fn search(images: &Images, layout: &Layout, part: Part) -> Result<(Edges, Stats), Error> {
    search_with(images, layout, part, Output::Pairs)
}

/// The pairs within `layout.max_distance` found on `part`, as `output` says.
pub fn search_with(images: &Images, layout: &Layout, part: Part, output: Output) -> Result<(Edges, Stats), Error> {
    search_part(images, &Ordered::new(layout, images.hashes.width())?, part, output)
}

/// `search_with` with the layout's bands prepared.
fn search_part(images: &Images, ordered: &Ordered, part: Part, output: Output) -> Result<(Edges, Stats), Error> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU has the popcnt instruction (checked just above).
        return unsafe { search_popcnt(images, ordered, part, output) };
    }
    search_body(images, ordered, part, output)
}

/// The search compiled with the popcnt instruction (the x86-64 baseline lacks it, and a
/// software popcount is several times slower); the wheel stays runnable on any x86-64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn search_popcnt(images: &Images, ordered: &Ordered, part: Part, output: Output) -> Result<(Edges, Stats), Error> {
    search_body(images, ordered, part, output)
}

#[inline(always)]
fn search_body(images: &Images, ordered: &Ordered, part: Part, output: Output) -> Result<(Edges, Stats), Error> {
    let layout = ordered.layout;
    let Some(band) = layout.bands.get(part.band) else {
        return Err(Error::Config(format!("band {} of a {}-band layout", part.band, layout.bands.len())));
    };
    // In a sub-block partition: the sub-block (start, width), the probes leave it alone.
    let sub_block = match part.sub {
        None => None,
        Some(sub) => {
            let subs = band.subs();
            let Some(&(s, w)) = subs.get(sub.index) else {
                return Err(Error::Config(format!("sub-block {} of a band with {} sub-blocks", sub.index, subs.len())));
            };
            if sub.prefix_bits > w || (sub.prefix_bits < 64 && sub.prefix >> sub.prefix_bits != 0) {
                return Err(Error::Config(format!(
                    "prefix {} of {} bits for a sub-block of {w} bits",
                    sub.prefix, sub.prefix_bits
                )));
            }
            Some((s, w, sub.prefix_bits, sub.prefix))
        }
    };
    let skip = sub_block.map(|(s, w, _, _)| (s - band.start, w));
    let prefix_field = sub_block.filter(|&(_, _, pbits, _)| pbits > 0).map(|(s, _, pbits, prefix)| (ordered.field(s, pbits), prefix));
    let in_partition = |h: &[u8]| prefix_field.as_ref().map_or(true, |(f, prefix)| f.get(h) == *prefix);
    let band_field = ordered.field(band.start, band.width);
    let k = layout.max_distance;
    let slots = images.slots();
    let n = images.hashes.len();

    let probe_masks = masks(band.width, band.radius, skip);
    // Bucketing: entries sorted by band value (a counting sort for narrow bands), then their
    // hashes copied in that order as u64 words, so each run is contiguous in memory.
    let mut entries: Vec<(u64, u32)> = Vec::with_capacity(images.fixed_from * slots + (n - images.fixed_from));
    for i in 0..images.fixed_from {
        for s in 0..slots {
            let h = images.entry(i, s);
            if in_partition(h) {
                entries.push((band_field.get(h), (i * slots + s) as u32));
            }
        }
    }
    // A fixed entry is compared only with new entries whose band value lies within the radius of
    // its own: on a wide band, the values near a new one mark the few fixed entries worth sorting.
    let near_new = (images.fixed_from < n && band.width <= NEAR_NEW_MAX_BITS).then(|| {
        let mut bitmap = vec![0u64; (1usize << band.width).div_ceil(64)];
        let mut set = |v: u64| bitmap[(v >> 6) as usize] |= 1 << (v & 63);
        for &(v, _) in &entries {
            set(v);
            for &m in &probe_masks {
                set(v ^ m);
            }
        }
        bitmap
    });
    // In chunks, each bitmap word prefetched before it is tested: the tests are random reads of
    // a bitmap far larger than the caches, and this lets their misses overlap.
    let mut chunk: Vec<(u64, u32)> = Vec::with_capacity(FIXED_CHUNK);
    for lo in (images.fixed_from..n).step_by(FIXED_CHUNK) {
        chunk.clear();
        for i in lo..(lo + FIXED_CHUNK).min(n) {
            let h = images.hashes.row(i);
            if in_partition(h) {
                let v = band_field.get(h);
                if let Some(b) = &near_new {
                    prefetch(&b[(v >> 6) as usize]);
                }
                chunk.push((v, (i * slots) as u32));
            }
        }
        match &near_new {
            None => entries.extend_from_slice(&chunk),
            Some(b) => entries.extend(chunk.iter().filter(|(v, _)| b[(v >> 6) as usize] & (1 << (v & 63)) != 0)),
        }
    }
    drop(near_new);
    let runs = Runs::build(&mut entries, band.width);
    let order: Vec<(u64, u32)> = match &runs {
        Runs::Table { offsets } => {
            let mut next = offsets.clone();
            let mut out = vec![(0u64, 0u32); entries.len()];
            for &e in &entries {
                let slot = &mut next[e.0 as usize];
                out[*slot as usize] = e;
                *slot += 1;
            }
            out
        }
        Runs::Sorted { .. } => entries, // already sorted by Runs::build
    };
    let keys: Vec<u64> = order.iter().map(|e| e.0).collect();
    let image_of: Vec<u32> = order.iter().map(|e| e.1 / slots as u32).collect();
    let slot_of: Vec<u8> = order.iter().map(|e| (e.1 % slots as u32) as u8).collect();
    drop(order);
    let wpr = images.hashes.width().div_ceil(8);
    let mut rows = vec![0u64; keys.len() * wpr];
    for (i, &img) in image_of.iter().enumerate() {
        let h = images.entry(img as usize, slot_of[i] as usize);
        for (w, out) in rows[i * wpr..(i + 1) * wpr].iter_mut().enumerate() {
            *out = word(h, w);
        }
    }

    let mut stats = Stats::default();
    let plain = slots == 1;
    let counts = |a: u32, sa: u8, b: u32, sb: u8| -> bool {
        let (lo, hi) = (a.min(b) as usize, a.max(b) as usize);
        // Plain hashes: a pair of images is one pair of entries, found once. With variants, only
        // the pair's counted entries go on (the cheaper test first: a tight group's pairs are
        // found through many entries).
        let found = [(a as usize, sa as usize), (b as usize, sb as usize)];
        (plain
            || counted_entries(ordered, part, images, lo, hi, &in_partition)
                .is_some_and(|[p, q]| found == [p, q] || found == [q, p]))
            && emitted_here(ordered, part, images, lo, hi, &in_partition)
    };
    let mut pairs = Found {
        pairs: Vec::new(),
        forest: (output == Output::Forest).then(|| Forest {
            fixed_from: images.fixed_from as u32,
            pending: Vec::new(),
            parent: (0..images.fixed_from as u32).collect(),
            edges: Vec::new(),
            counted: 0,
            counts: &counts,
        }),
    };
    // With variants: entry pairs with one image's own hash, verified by the dihedral distance.
    let check = |x: usize, y: usize, pairs: &mut Found, stats: &mut Stats| {
        let (a, b) = (image_of[x], image_of[y]);
        if a == b || (slot_of[x] != 0 && slot_of[y] != 0) || (images.is_fixed(a as usize) && images.is_fixed(b as usize)) {
            return;
        }
        stats.candidates += 1;
        let d = images.distance(a as usize, b as usize);
        if d <= k {
            pairs.push(a, slot_of[x], b, slot_of[y], d);
        }
    };

    // Within a run, entries of new images come first (entries were listed in image order and
    // both bucketings keep that order within a value): [start, mid) new, [mid, end) fixed.
    let first_fixed = |s: usize, e: usize| s + image_of[s..e].partition_point(|&img| !images.is_fixed(img as usize));
    let scan = |xs: std::ops::Range<usize>, ys: &dyn Fn(usize) -> std::ops::Range<usize>, pairs: &mut Found, stats: &mut Stats| {
        if plain {
            scan_plain(&rows, wpr, xs, ys, k, &image_of, pairs, stats);
        } else {
            for x in xs {
                for y in ys(x) {
                    check(x, y, pairs, stats);
                }
            }
        }
    };

    let mut start = 0;
    while start < keys.len() {
        let key = keys[start];
        let end = runs_end(&keys, start);
        let mid = first_fixed(start, end);
        if mid == start {
            start = end; // fixed entries only: their pairs with new ones are found from the new side
            continue;
        }
        if end - start >= BIG_RUN {
            stats.big_runs += 1;
        }
        // Inside the run, in blocks: each new entry against every later entry.
        for ib in (start..mid).step_by(BLOCK) {
            for jb in (ib..end).step_by(BLOCK) {
                let ye = (jb + BLOCK).min(end);
                scan(ib..(ib + BLOCK).min(mid), &|x| jb.max(x + 1)..ye, &mut pairs, &mut stats);
            }
        }
        // Against the runs of the values within the radius, each pair of runs once: from the
        // smaller value, or from this run when the other one holds fixed entries only.
        for &m in &probe_masks {
            let other = key ^ m;
            let (os, oe) = runs.get(other);
            if os == oe {
                continue;
            }
            let omid = first_fixed(os, oe);
            if other < key {
                if omid == os {
                    scan(start..mid, &|_| os..oe, &mut pairs, &mut stats);
                }
                continue;
            }
            scan(start..mid, &|_| os..oe, &mut pairs, &mut stats);
            if mid < end && omid > os {
                scan(mid..end, &|_| os..omid, &mut pairs, &mut stats);
            }
        }
        start = end;
    }
    let Found { mut pairs, forest } = pairs;
    pairs.sort_unstable();
    pairs.dedup_by_key(|p| (p.0, p.1));

    let mut edges = Edges::default();
    let mut push = |a: u32, b: u32, d: u32| {
        edges.a.push(images.ids[a as usize]);
        edges.b.push(images.ids[b as usize]);
        edges.distance.push(d);
    };
    for (a, b, d) in pairs {
        if !emitted_here(ordered, part, images, a as usize, b as usize, &in_partition) {
            continue;
        }
        if !images.is_fixed(b as usize) {
            stats.pairs += 1;
        }
        push(a, b, d);
    }
    if let Some(mut forest) = forest {
        forest.join();
        stats.pairs += forest.counted;
        for (a, b, d) in forest.edges {
            push(a, b, d);
        }
    }
    Ok((edges, stats))
}

/// The distance of rows x and y, or a value above k when the first half of the words already
/// exceeds it: most candidates are far apart, and half a hash settles that with a branch that
/// is almost always taken (a test per word would mispredict at larger k).
#[inline(always)]
fn dist_width<const W: usize>(rows: &[u64], x: usize, y: usize, k: u32) -> u32 {
    let rx: &[u64; W] = rows[x * W..x * W + W].try_into().unwrap();
    let ry: &[u64; W] = rows[y * W..y * W + W].try_into().unwrap();
    let half = W.div_ceil(2);
    let mut d = 0;
    for i in 0..half {
        d += (rx[i] ^ ry[i]).count_ones();
    }
    if d > k {
        return d;
    }
    for i in half..W {
        d += (rx[i] ^ ry[i]).count_ones();
    }
    d
}

#[inline(always)]
fn scan_width<const W: usize>(
    rows: &[u64],
    xs: std::ops::Range<usize>,
    ys: impl Fn(usize) -> std::ops::Range<usize>,
    k: u32,
    image_of: &[u32],
    pairs: &mut Found,
) -> u64 {
    let mut compared = 0;
    for x in xs {
        let range = ys(x);
        compared += range.len() as u64;
        for y in range {
            let d = dist_width::<W>(rows, x, y, k);
            if d <= k {
                pairs.push(image_of[x], 0, image_of[y], 0, d);
            }
        }
    }
    compared
}

/// Plain hashes: every (x, y in ys(x)) pair verified by popcount over the contiguous rows, with
/// the common row widths unrolled.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn scan_plain(
    rows: &[u64],
    wpr: usize,
    xs: std::ops::Range<usize>,
    ys: impl Fn(usize) -> std::ops::Range<usize>,
    k: u32,
    image_of: &[u32],
    pairs: &mut Found,
    stats: &mut Stats,
) {
    stats.candidates += match wpr {
        1 => scan_width::<1>(rows, xs, ys, k, image_of, pairs),
        2 => scan_width::<2>(rows, xs, ys, k, image_of, pairs),
        3 => scan_width::<3>(rows, xs, ys, k, image_of, pairs),
        4 => scan_width::<4>(rows, xs, ys, k, image_of, pairs),
        8 => scan_width::<8>(rows, xs, ys, k, image_of, pairs),
        16 => scan_width::<16>(rows, xs, ys, k, image_of, pairs),
        _ => {
            let mut compared = 0;
            for x in xs {
                for y in ys(x) {
                    compared += 1;
                    let d: u32 = rows[x * wpr..(x + 1) * wpr].iter().zip(&rows[y * wpr..(y + 1) * wpr]).map(|(p, q)| (p ^ q).count_ones()).sum();
                    if d <= k {
                        pairs.push(image_of[x], 0, image_of[y], 0, d);
                    }
                }
            }
            compared
        }
    };
}

#[inline]
fn runs_end(keys: &[u64], start: usize) -> usize {
    let key = keys[start];
    let mut end = start + 1;
    while end < keys.len() && keys[end] == key {
        end += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::near::brute;
    use crate::near::forest::find;
    use crate::near::bits::field;

    /// Hashes whose neighbouring bits are equal in runs of four (as a perceptual hash's correlated
    /// neighbours, taken to the extreme): contiguous 16-bit bands would take 16 values each, the
    /// bands of the ordered bits thousands. The search meets far fewer candidates than contiguous
    /// bands would give, and still finds every pair.
    #[test]
    fn bands_of_ordered_bits_spread_correlated_neighbours() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let n = 3000usize;
        let mut data = Vec::new();
        for _ in 0..n {
            let nibbles = next();
            let h = (0..16).fold(0u64, |h, i| h | if nibbles >> i & 1 == 1 { 0xf << (4 * i) } else { 0 });
            data.extend_from_slice(&h.to_le_bytes());
        }
        let ids: Vec<u64> = (0..n as u64).collect();
        let images = Images::new(Packed::new(&data, 8).unwrap(), None, &ids).unwrap();
        let layout = Layout::with_radii(64, 3, &[0, 0, 0, 0]).unwrap();
        let (edges, stats) = search_bands(&images, &layout, &[0, 1, 2, 3], Output::Pairs, Some(1)).unwrap();
        let mut contiguous = 0u64;
        for band in &layout.bands {
            let mut values: Vec<u64> = (0..n).map(|i| field(images.hashes.row(i), band.start, band.width)).collect();
            values.sort_unstable();
            for run in values.chunk_by(|a, b| a == b) {
                contiguous += (run.len() * (run.len() - 1) / 2) as u64;
            }
        }
        assert!(stats.candidates * 10 < contiguous, "{} candidates, contiguous bands {contiguous}", stats.candidates);
        let mut got: Vec<_> = (0..edges.a.len()).map(|i| (edges.a[i], edges.b[i], edges.distance[i])).collect();
        let all = brute::all_pairs(&images, 3, Some(1)).unwrap();
        let mut want: Vec<_> = (0..all.a.len()).map(|i| (all.a[i], all.b[i], all.distance[i])).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert!(!want.is_empty());
        assert_eq!(got, want);
    }

    /// Forest output joined in chunks of FOREST_CHUNK (5 here): the same count and components as
    /// the pairs, plain and with variants, whole bands and sub-block partitions.
    #[test]
    fn forests_joined_in_chunks_match_the_pairs() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (n, k) = (120usize, 6u32);
        let mut data = Vec::new();
        for i in 0..n {
            // clusters of ten: a centre with up to 3 bits flipped per copy
            let centre = (i / 10) as u64 * 0x0123_4567_89ab_cdef;
            let mut h = centre;
            for _ in 0..next() % 4 {
                h ^= 1 << (next() % 64);
            }
            data.extend_from_slice(&h.to_le_bytes());
        }
        let mut variants = Vec::new();
        for i in 0..n {
            variants.extend_from_slice(&data[i * 8..(i + 1) * 8]);
            for _ in 1..8 {
                variants.extend_from_slice(&(next() & next()).to_le_bytes());
            }
        }
        let ids: Vec<u64> = (0..n as u64).collect();
        let layout = Layout::with_radii(64, k, &[1, 1, 1, 0]).unwrap();
        for v in [None, Some(Packed::new(&variants, 8).unwrap())] {
            let images = Images::new(Packed::new(&data, 8).unwrap(), v, &ids).unwrap();
            for sub in [None, Some(0usize)] {
                let mut parts = Vec::new();
                for band in 0..layout.bands.len() {
                    match sub {
                        None => parts.push(Part { band, sub: None }),
                        Some(_) => {
                            for index in 0..layout.bands[band].subs().len() {
                                for prefix in 0..4 {
                                    parts.push(Part { band, sub: Some(Sub { index, prefix_bits: 2, prefix }) });
                                }
                            }
                        }
                    }
                }
                let (mut pairs, mut counted) = (0u64, 0u64);
                let (mut whole, mut forest) = ((0..n as u32).collect::<Vec<_>>(), (0..n as u32).collect::<Vec<_>>());
                let mut edges_out = 0;
                for &part in &parts {
                    let (e, s) = search_with(&images, &layout, part, Output::Pairs).unwrap();
                    assert_eq!(s.pairs as usize, e.a.len());
                    pairs += s.pairs;
                    for i in 0..e.a.len() {
                        union(&mut whole, e.a[i] as u32, e.b[i] as u32);
                    }
                    let (f, s) = search_with(&images, &layout, part, Output::Forest).unwrap();
                    counted += s.pairs;
                    edges_out += f.a.len();
                    for i in 0..f.a.len() {
                        union(&mut forest, f.a[i] as u32, f.b[i] as u32);
                    }
                }
                assert!(pairs > 3 * FOREST_CHUNK as u64, "too few pairs to join in chunks: {pairs}");
                assert_eq!(counted, pairs);
                assert!(edges_out as u64 <= pairs);
                for i in 0..n as u32 {
                    assert_eq!(find(&mut whole, i), find(&mut forest, i));
                }
            }
        }
    }
}
