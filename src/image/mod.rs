//! Image decoding and preprocessing (HF processor parity).

/// Errors of decoding or preprocessing an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not an image: {0}")]
    Decode(String),
}
