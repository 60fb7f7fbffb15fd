//! Exact dedup: the compact seen-set each Ray bucket actor holds, and the one mixer that routes
//! hashes to buckets and places them in the seen-set.
pub mod mix;
pub mod seen;
