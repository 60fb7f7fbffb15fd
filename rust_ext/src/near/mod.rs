//! Near-duplicate kernels over packed hashes: the band layout (`layout`), the order of the bits
//! bands are cut from (`order`), the banded search with popcount verification (`search`), the exact-hash collapse (`collapse`), union-find (`forest`),
//! the greedy keep-by-rank resolution (`resolve`), and a brute-force oracle (`brute`).
//!
//! Every kernel takes flat buffers (n rows of `width` bytes, u64 ids, packed UTF-8 owners) and
//! returns flat vectors; the PyO3 layer only converts and releases the GIL.
pub mod bits;
pub mod brute;
pub mod collapse;
pub mod forest;
pub mod layout;
pub mod order;
pub mod resolve;
pub mod search;

pub use bits::{Owners, Packed};
pub use layout::{Band, Layout};
