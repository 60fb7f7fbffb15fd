//! Exact dedup: the compact seen-set each Ray bucket actor holds.
pub mod seen;
