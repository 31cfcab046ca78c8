//! Image decoding and preprocessing with HF processor parity.
//!
//! The data path's first stage: bytes ─▶ [`decode`] (header-checked, bounded)
//! ─▶ [`RgbImage`] ─▶ [`Processor`] (resize with Pillow's exact fixed-point
//! resampler, center crop, tiling, rescale, normalise) ─▶ [`Preprocessed`]
//! pixel tiles plus the geometry that maps every tile pixel back to the
//! ORIGINAL image (so each visual token can be drawn on the photo).
//!
//! Reference: HF transformers' PIL-backend image processors
//! (`CLIPImageProcessorPil`, `SiglipImageProcessorPil`,
//! `Idefics3ImageProcessorPil`), which resize with Pillow (`Image.resize`,
//! `libImaging/Resample.c`). Parity is tested against their pixel values in
//! `tests/image_preprocess.rs` (fixtures from `tools/make_tiny_fixtures.py`).

pub mod decode;
pub mod processor;
pub mod resample;

pub use decode::{decode, DecodeLimits};
pub use processor::{Preprocessed, Processor, ProcessorKind, TileGeometry};
pub use resample::{resize, Filter};

/// Errors of decoding or preprocessing an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The bytes are not an image in a supported format (PNG, JPEG).
    #[error("not an image: {0}")]
    Decode(String),
    /// Width or height is zero.
    #[error("empty image: {width}x{height} pixels; pass a picture with at least one pixel")]
    Empty { width: u32, height: u32 },
    /// The header announces an image larger than the decoding bound.
    #[error("image too large: {width}x{height} pixels exceeds the limit of {limit}; downscale it first (e.g. to at most 4096 pixels on the long side)")]
    TooLarge { width: u32, height: u32, limit: String },
    /// The processor configuration is missing, contradictory or unsupported.
    #[error("image processor config: {0}")]
    Config(String),
}

/// An 8-bit RGB image, row-major `[height, width, 3]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` bytes, RGB interleaved.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Wraps raw RGB bytes, checking the length.
    pub fn from_raw(width: u32, height: u32, data: Vec<u8>) -> Result<Self, ImageError> {
        if width == 0 || height == 0 {
            return Err(ImageError::Empty { width, height });
        }
        let want = (width as u64) * (height as u64) * 3;
        if data.len() as u64 != want {
            return Err(ImageError::Decode(format!(
                "raw RGB buffer has {} bytes, expected {want} for {width}x{height}",
                data.len()
            )));
        }
        Ok(Self { width, height, data })
    }
}
