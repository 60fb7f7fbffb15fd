//! A compact seen-set: fixed-width hash -> first owner (u64), plus an optional label (the
//! keeper's record id) per hash.
//!
//! Memory: entries live in a dense, chunked store (`hash_bytes + 8` bytes each, no per-entry
//! allocation, no doubling of the store) and an open-addressing index of `u32` entry numbers with
//! linear probing. The index is sized by multiply-shift ("fastrange") to any length, so it grows
//! by GROWTH (not 2x) when its load passes MAX_LOAD: for 256-bit hashes that is
//! 40 B + 4 B / load, between about 45 and 47 bytes per entry. Labels, when kept, add their
//! UTF-8 length plus 8 bytes.
//!
//! Semantics of `check_and_insert`: true where the caller's owner is the hash's first claimant:
//! a new hash (now stored with that owner), or a hash already stored with that same owner (a
//! retry of the same record). That makes repeated calls idempotent.
use crate::exact::mix::{mix, INDEX_SEED};

const CHUNK_SHIFT: u32 = 16;
const CHUNK: usize = 1 << CHUNK_SHIFT;
const EMPTY: u32 = u32::MAX;
const MAX_LOAD: f64 = 0.8;
const GROWTH: f64 = 1.35;
const MIN_SLOTS: usize = 1024;
/// How many hashes ahead check_and_insert prefetches index slots.
const PREFETCH_AHEAD: usize = 8;
/// Entry numbers are u32 and EMPTY is reserved.
pub const MAX_ENTRIES: usize = (u32::MAX - 1) as usize;

/// Where a label lives in the label arena: chunk-free, 40-bit offset and 24-bit length.
const LABEL_LEN_BITS: u32 = 24;
pub const MAX_LABEL_LEN: usize = (1 << LABEL_LEN_BITS) - 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeenError {
    Width { expected: usize, got: usize },
    Count { hashes: usize, owners: usize },
    Full,
    LabelTooLong(usize),
    Labels { owners: usize, labels: usize },
    NoLabels,
}

impl std::fmt::Display for SeenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeenError::Width { expected, got } => {
                write!(f, "hashes must be a multiple of {expected} bytes, got {got} bytes")
            }
            SeenError::Count { hashes, owners } => {
                write!(f, "{hashes} hashes but {owners} owners (one owner per hash)")
            }
            SeenError::Full => write!(f, "seen-set is full ({MAX_ENTRIES} entries)"),
            SeenError::LabelTooLong(n) => write!(f, "label of {n} bytes is longer than {MAX_LABEL_LEN}"),
            SeenError::Labels { owners, labels } => write!(f, "{owners} owners but {labels} labels"),
            SeenError::NoLabels => write!(f, "claim() needs SeenSet(keep_labels=True)"),
        }
    }
}

pub struct SeenSet {
    width: usize,
    /// Chunks of CHUNK hashes, `width` bytes each.
    hashes: Vec<Box<[u8]>>,
    /// Chunks of CHUNK owners.
    owners: Vec<Box<[u64]>>,
    len: usize,
    index: Vec<u32>,
    /// Optional labels: per entry (offset << 24 | len) into `arena`.
    labels: Option<Labels>,
}

struct Labels {
    spans: Vec<Box<[u64]>>,
    arena: Vec<u8>,
}

#[inline]
fn slot_of(h: u64, slots: usize) -> usize {
    ((u128::from(h) * slots as u128) >> 64) as usize
}

impl SeenSet {
    pub fn new(hash_bytes: usize, keep_labels: bool) -> Self {
        assert!(hash_bytes > 0, "hash_bytes must be positive");
        SeenSet {
            width: hash_bytes,
            hashes: Vec::new(),
            owners: Vec::new(),
            len: 0,
            index: vec![EMPTY; MIN_SLOTS],
            labels: keep_labels.then(|| Labels { spans: Vec::new(), arena: Vec::new() }),
        }
    }

    pub fn hash_bytes(&self) -> usize {
        self.width
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn keeps_labels(&self) -> bool {
        self.labels.is_some()
    }

    /// Bytes held by the set (allocated capacity of every buffer).
    pub fn memory_bytes(&self) -> usize {
        let chunks = self.hashes.len() * CHUNK * (self.width + 8);
        let labels = self
            .labels
            .as_ref()
            .map(|l| l.spans.len() * CHUNK * 8 + l.arena.capacity())
            .unwrap_or(0);
        chunks + self.index.capacity() * 4 + labels + std::mem::size_of::<Self>()
    }

    #[inline]
    fn hash_at(&self, i: usize) -> &[u8] {
        let off = (i & (CHUNK - 1)) * self.width;
        &self.hashes[i >> CHUNK_SHIFT][off..off + self.width]
    }

    #[inline]
    fn owner_at(&self, i: usize) -> u64 {
        self.owners[i >> CHUNK_SHIFT][i & (CHUNK - 1)]
    }

    /// Index slot holding `hash`, or the empty slot where it would go.
    #[inline]
    fn find(&self, hash: &[u8]) -> (usize, Option<usize>) {
        let slots = self.index.len();
        let mut s = slot_of(mix(hash, INDEX_SEED), slots);
        loop {
            let e = self.index[s];
            if e == EMPTY {
                return (s, None);
            }
            if self.hash_at(e as usize) == hash {
                return (s, Some(e as usize));
            }
            s += 1;
            if s == slots {
                s = 0;
            }
        }
    }

    fn grow_if_needed(&mut self) {
        if (self.len + 1) as f64 <= self.index.len() as f64 * MAX_LOAD {
            return;
        }
        let slots = ((self.index.len() as f64 * GROWTH) as usize).max(MIN_SLOTS);
        let mut index = vec![EMPTY; slots];
        for e in 0..self.len {
            let mut s = slot_of(mix(self.hash_at(e), INDEX_SEED), slots);
            while index[s] != EMPTY {
                s += 1;
                if s == slots {
                    s = 0;
                }
            }
            index[s] = e as u32;
        }
        self.index = index;
    }

    fn push(&mut self, hash: &[u8], owner: u64, label: Option<&[u8]>) -> Result<usize, SeenError> {
        if self.len >= MAX_ENTRIES {
            return Err(SeenError::Full);
        }
        let i = self.len;
        let (c, o) = (i >> CHUNK_SHIFT, i & (CHUNK - 1));
        if c == self.hashes.len() {
            self.hashes.push(vec![0u8; CHUNK * self.width].into_boxed_slice());
            self.owners.push(vec![0u64; CHUNK].into_boxed_slice());
            if let Some(l) = self.labels.as_mut() {
                l.spans.push(vec![0u64; CHUNK].into_boxed_slice());
            }
        }
        self.hashes[c][o * self.width..(o + 1) * self.width].copy_from_slice(hash);
        self.owners[c][o] = owner;
        if let Some(l) = self.labels.as_mut() {
            let text = label.unwrap_or(&[]);
            let span = ((l.arena.len() as u64) << LABEL_LEN_BITS) | text.len() as u64;
            l.arena.extend_from_slice(text);
            l.spans[c][o] = span;
        }
        self.len += 1;
        Ok(i)
    }

    /// The label stored with entry `i` (empty when labels are off or none was given).
    pub fn label_at(&self, i: usize) -> &[u8] {
        match self.labels.as_ref() {
            None => &[],
            Some(l) => {
                let span = l.spans[i >> CHUNK_SHIFT][i & (CHUNK - 1)];
                let (off, len) = ((span >> LABEL_LEN_BITS) as usize, (span & MAX_LABEL_LEN as u64) as usize);
                &l.arena[off..off + len]
            }
        }
    }

    fn check_lengths(&self, hashes: &[u8], owners: usize) -> Result<usize, SeenError> {
        if hashes.len() % self.width != 0 {
            return Err(SeenError::Width { expected: self.width, got: hashes.len() });
        }
        let n = hashes.len() / self.width;
        if n != owners {
            return Err(SeenError::Count { hashes: n, owners });
        }
        Ok(n)
    }

    /// One claim: returns the entry number now holding `hash` and whether `owner` is its first
    /// claimant. A new hash is stored with `owner` (and `label`).
    pub fn claim_one(&mut self, hash: &[u8], owner: u64, label: Option<&[u8]>) -> Result<(usize, bool), SeenError> {
        if let Some(label) = label {
            if label.len() > MAX_LABEL_LEN {
                return Err(SeenError::LabelTooLong(label.len()));
            }
        }
        self.grow_if_needed();
        match self.find(hash) {
            (_, Some(e)) => Ok((e, self.owner_at(e) == owner)),
            (slot, None) => {
                let e = self.push(hash, owner, label)?;
                self.index[slot] = e as u32;
                Ok((e, true))
            }
        }
    }

    /// Full unless `n` more entries fit (all of a batch might be new), so that a batch that
    /// cannot go in whole is refused before any of it does.
    fn check_room(&self, n: usize) -> Result<(), SeenError> {
        if self.len + n > MAX_ENTRIES {
            return Err(SeenError::Full);
        }
        Ok(())
    }

    /// For n packed hashes and n owners: true where the owner is the hash's first claimant.
    pub fn check_and_insert(&mut self, hashes: &[u8], owners: &[u64]) -> Result<Vec<bool>, SeenError> {
        let n = self.check_lengths(hashes, owners.len())?;
        self.check_room(n)?;
        let mut out = Vec::with_capacity(n);
        let w = self.width;
        for (i, &owner) in owners.iter().enumerate() {
            // The index is far larger than the caches: ask for the slot of a later hash now.
            if i + PREFETCH_AHEAD < n {
                self.prefetch_slot(&hashes[(i + PREFETCH_AHEAD) * w..(i + PREFETCH_AHEAD + 1) * w]);
            }
            out.push(self.claim_one(&hashes[i * w..(i + 1) * w], owner, None)?.1);
        }
        Ok(out)
    }

    #[inline]
    fn prefetch_slot(&self, hash: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        {
            let s = slot_of(mix(hash, INDEX_SEED), self.index.len());
            // SAFETY: a prefetch of an in-bounds address; it never faults and reads nothing.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch(self.index.as_ptr().add(s) as *const i8, _MM_HINT_T0);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// `claim_one` for n packed hashes, n owners and n labels (labels must be kept): per hash,
    /// None where the owner is the first claimant, else the first claimant's entry number.
    pub fn claim_labelled<L: AsRef<[u8]>>(&mut self, hashes: &[u8], owners: &[u64], labels: &[L]) -> Result<Vec<Option<usize>>, SeenError> {
        if !self.keeps_labels() {
            return Err(SeenError::NoLabels);
        }
        if labels.len() != owners.len() {
            return Err(SeenError::Labels { owners: owners.len(), labels: labels.len() });
        }
        self.check_lengths(hashes, owners.len())?;
        // Checked before the first insert: a batch goes in whole or not at all.
        if let Some(long) = labels.iter().map(|l| l.as_ref().len()).find(|&len| len > MAX_LABEL_LEN) {
            return Err(SeenError::LabelTooLong(long));
        }
        self.check_room(owners.len())?;
        let w = self.width;
        let mut out = Vec::with_capacity(owners.len());
        for (i, (&owner, label)) in owners.iter().zip(labels).enumerate() {
            let (entry, first) = self.claim_one(&hashes[i * w..(i + 1) * w], owner, Some(label.as_ref()))?;
            out.push((!first).then_some(entry));
        }
        Ok(out)
    }

    /// The stored owner of each hash, None where the hash is not held.
    pub fn owners_of(&self, hashes: &[u8]) -> Result<Vec<Option<u64>>, SeenError> {
        self.check_lengths(hashes, hashes.len() / self.width)?;
        Ok(hashes.chunks_exact(self.width).map(|h| self.find(h).1.map(|e| self.owner_at(e))).collect())
    }

    /// Every entry in insertion order: (hash, owner, label).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64, &[u8])> + '_ {
        (0..self.len).map(move |i| (self.hash_at(i), self.owner_at(i), self.label_at(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u64, width: usize) -> Vec<u8> {
        let mut v = vec![0u8; width];
        v[..8].copy_from_slice(&i.to_le_bytes());
        v
    }

    #[test]
    fn first_claimant_wins_and_retries_are_idempotent() {
        let mut s = SeenSet::new(32, false);
        let packed: Vec<u8> = [h(1, 32), h(2, 32), h(1, 32)].concat();
        assert_eq!(s.check_and_insert(&packed, &[10, 20, 30]).unwrap(), vec![true, true, false]);
        // The same call again (a retried batch): the first claimants still win, the third loses.
        assert_eq!(s.check_and_insert(&packed, &[10, 20, 30]).unwrap(), vec![true, true, false]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.owners_of(&[h(1, 32), h(3, 32)].concat()).unwrap(), vec![Some(10), None]);
    }

    #[test]
    fn holds_many_entries_across_growth_and_chunks() {
        let n = 300_000u64;
        let mut s = SeenSet::new(32, false);
        let packed: Vec<u8> = (0..n).flat_map(|i| h(i * 7919, 32)).collect();
        let owners: Vec<u64> = (0..n).collect();
        assert!(s.check_and_insert(&packed, &owners).unwrap().iter().all(|&b| b));
        assert_eq!(s.len(), n as usize);
        let others: Vec<u64> = (0..n).map(|i| i + 1).collect();
        assert!(s.check_and_insert(&packed, &others).unwrap().iter().all(|&b| !b));
        assert!((s.memory_bytes() as f64 / n as f64) < 48.0 + 2.0 * (CHUNK * 40) as f64 / n as f64);
    }

    #[test]
    fn labels_are_kept_per_entry() {
        let mut s = SeenSet::new(8, true);
        let (e1, _) = s.claim_one(&h(5, 8), 1, Some(b"first")).unwrap();
        let (e2, first) = s.claim_one(&h(5, 8), 2, Some(b"second")).unwrap();
        assert_eq!((e1, first), (e2, false));
        assert_eq!(s.label_at(e1), b"first");
        let packed = [h(5, 8), h(6, 8)].concat();
        assert_eq!(s.claim_labelled(&packed, &[3, 4], &["third", "fourth"]).unwrap(), vec![Some(e1), None]);
        assert_eq!(s.claim_labelled(&packed, &[3], &["x"]), Err(SeenError::Count { hashes: 2, owners: 1 }));
        assert_eq!(SeenSet::new(8, false).claim_labelled(&packed, &[1, 2], &["a", "b"]), Err(SeenError::NoLabels));
    }

    #[test]
    fn a_batch_with_a_bad_label_inserts_nothing() {
        let mut s = SeenSet::new(8, true);
        let packed = [h(1, 8), h(2, 8), h(3, 8)].concat();
        let long = vec![b'x'; MAX_LABEL_LEN + 1];
        let labels: [&[u8]; 3] = [b"a", b"b", &long];
        assert_eq!(s.claim_labelled(&packed, &[1, 2, 3], &labels), Err(SeenError::LabelTooLong(MAX_LABEL_LEN + 1)));
        assert_eq!(s.len(), 0);
        assert_eq!(s.owners_of(&packed).unwrap(), vec![None, None, None]);
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut s = SeenSet::new(32, false);
        assert!(matches!(s.check_and_insert(&[0u8; 31], &[1]), Err(SeenError::Width { .. })));
        assert!(matches!(s.check_and_insert(&[0u8; 64], &[1]), Err(SeenError::Count { .. })));
    }
}
