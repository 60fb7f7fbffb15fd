//! Decode-and-hash, one image or a batch. Each input gets exactly one result, and a panic in
//! the decoder or hasher becomes that input's error instead of unwinding further.
use std::panic::{catch_unwind, AssertUnwindSafe};

use rayon::prelude::*;

use crate::algorithm::HashSpec;
use crate::decode::{decode_gray, Limits};
use crate::error::HashError;
use crate::pool;

/// Raw hash bytes plus the number of meaningful bits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HashBits {
    pub bytes: Vec<u8>,
    pub bits: u32,
}

impl HashBits {
    pub fn hamming(&self, other: &HashBits) -> Option<u32> {
        if self.bits != other.bits {
            return None;
        }
        Some(self.bytes.iter().zip(&other.bytes).map(|(a, b)| (a ^ b).count_ones()).sum())
    }

    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn hash_unguarded(data: &[u8], spec: &HashSpec, limits: &Limits) -> Result<HashBits, HashError> {
    let gray = decode_gray(data, limits, spec.working_side())?;
    let hash = spec.hasher().hash_image(&gray);
    Ok(HashBits { bytes: hash.as_bytes().to_vec(), bits: spec.bits() })
}

/// Hash one encoded image. Never panics.
pub fn hash_one(data: &[u8], spec: &HashSpec, limits: &Limits) -> Result<HashBits, HashError> {
    match catch_unwind(AssertUnwindSafe(|| hash_unguarded(data, spec, limits))) {
        Ok(result) => result,
        Err(payload) => Err(HashError::Internal(panic_message(payload.as_ref()))),
    }
}

/// Hash a batch in parallel on `threads` threads (None: all cores). One result per input, in order.
pub fn hash_many(
    blobs: &[&[u8]],
    spec: &HashSpec,
    limits: &Limits,
    threads: Option<usize>,
) -> Vec<Result<HashBits, HashError>> {
    if blobs.len() <= 1 || threads == Some(1) {
        return blobs.iter().map(|b| hash_one(b, spec, limits)).collect();
    }
    pool::install(threads, || blobs.par_iter().map(|b| hash_one(b, spec, limits)).collect())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
