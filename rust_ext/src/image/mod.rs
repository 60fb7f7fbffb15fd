//! From encoded bytes to the picture on a grid: decoding (JPEG from its luma coefficients or
//! through libjpeg-turbo's DCT scaling, the rest through the `image` crate), the picture's exact extent in the reduced
//! image, and its resampling onto a hash grid with a quality score.
pub mod baseline;
pub mod coefficients;
pub mod decode;
pub mod extent;
pub mod grid;
pub mod jpeg;
pub mod scans;
pub mod signature;
