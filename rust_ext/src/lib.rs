//! beam-phash native core.
//!
//! Pure-Rust modules hold all logic and are tested with `cargo test`:
//! * `image`: decoding, the picture's exact extent, resampling onto a grid, the quality score;
//! * `hash`: the algorithms, pHash's own last step, hashing one image or a batch;
//! * `exact`: the seen-set of exact dedup;
//! * `near`: the near-duplicate kernels (banded search, forest, resolve);
//! * `tar`: the member names of a plain tar, from its headers (the shard reader's key check);
//! * `error`: the one error type; `pool`: the rayon pools.
//!
//! `python` is the one thin PyO3 layer, with the one mapping from `error::Error` to Python
//! exceptions, compiled only with the `python` feature (maturin turns it on).
pub mod error;
pub mod exact;
pub mod hash;
pub mod image;
pub mod near;
pub mod pool;
pub mod tar;

#[cfg(feature = "python")]
mod python;
