//! beam-phash native core.
//!
//! Pure-Rust modules (`decode`, `jpeg`, `algorithm`, `hash`, `near`, `pool`, `seen`, `error`) hold all logic and are
//! tested with `cargo test`. `python` is the one thin PyO3 layer, compiled only with the
//! `python` feature (maturin turns it on).
pub mod algorithm;
pub mod decode;
pub mod error;
pub mod extent;
pub mod grid;
pub mod hash;
pub mod jpeg;
pub mod near;
pub mod phash;
pub mod pool;
pub mod seen;

#[cfg(feature = "python")]
mod python;
