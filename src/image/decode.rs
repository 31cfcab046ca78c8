//! Decoding PNG / JPEG bytes into an [`RgbImage`], bounded before any pixel
//! is allocated: the header is read first and images above
//! [`DecodeLimits`] are refused with a message.
//!
//! Colour handling follows HF transformers' `convert_to_rgb` (PIL path):
//! images with an alpha channel are composited onto white with Pillow's
//! exact integer `alpha_composite` arithmetic, others converted to RGB.

use std::io::Cursor;

use image::{DynamicImage, ImageReader};

use super::{ImageError, RgbImage};

/// Bounds checked against the image header before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width or height, in pixels.
    pub max_side: u32,
    /// Largest accepted `width * height`.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// 16384 pixels per side, 50 megapixels.
    fn default() -> Self {
        Self { max_side: 16384, max_pixels: 50_000_000 }
    }
}

/// Decodes PNG or JPEG bytes with the default [`DecodeLimits`].
pub fn decode(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    decode_with(bytes, &DecodeLimits::default())
}

/// Decodes PNG or JPEG bytes, refusing non-images, zero-sized images and
/// images whose header exceeds `limits` (checked before decoding).
pub fn decode_with(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Decode("the input is empty (0 bytes)".into()));
    }
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
        let r = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageError::Decode(format!("cannot read the input: {e}")))?;
        if r.format().is_none() {
            return Err(ImageError::Decode(
                "unrecognised format: expected PNG or JPEG bytes".into(),
            ));
        }
        Ok(r)
    };
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| ImageError::Decode(format!("cannot read the image header: {e}")))?;
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    let pixels = width as u64 * height as u64;
    if width > limits.max_side || height > limits.max_side || pixels > limits.max_pixels {
        return Err(ImageError::TooLarge {
            width,
            height,
            limit: format!(
                "{} pixels per side and {} pixels in total",
                limits.max_side, limits.max_pixels
            ),
        });
    }
    let mut r = reader()?;
    let mut lim = image::Limits::default();
    lim.max_image_width = Some(limits.max_side);
    lim.max_image_height = Some(limits.max_side);
    // Largest decoded buffer: 4 channels of 16 bits, plus slack for the decoder.
    lim.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    r.limits(lim);
    let img = r
        .decode()
        .map_err(|e| ImageError::Decode(format!("cannot decode the image: {e}")))?;
    to_rgb(img)
}

/// HF `convert_to_rgb`: alpha → composite on white (Pillow arithmetic), else RGB.
fn to_rgb(img: DynamicImage) -> Result<RgbImage, ImageError> {
    let (w, h) = (img.width(), img.height());
    if img.color().has_alpha() {
        let rgba = img.to_rgba8();
        let mut out = Vec::with_capacity(w as usize * h as usize * 3);
        for px in rgba.as_raw().chunks_exact(4) {
            let a = px[3] as u32;
            for &c in &px[..3] {
                out.push(composite_on_white(c as u32, a));
            }
        }
        RgbImage::from_raw(w, h, out)
    } else {
        RgbImage::from_raw(w, h, img.to_rgb8().into_raw())
    }
}

/// Pillow `AlphaComposite.c` with an opaque white destination (8-bit
/// fixed point, `PRECISION_BITS = 7`): `out = src·a + 255·(1 − a)`.
fn composite_on_white(src: u32, a: u32) -> u8 {
    const PREC: u32 = 7;
    // outa255 = a*255 + 255*(255-a) = 255*255, so coef1 = a << PREC exactly.
    let coef1 = a << PREC;
    let coef2 = (255 << PREC) - coef1;
    let tmp = src * coef1 + 255 * coef2 + (0x80 << PREC);
    let v = (((tmp >> 8) + tmp) >> 8) >> PREC;
    v.min(255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_on_white_matches_endpoints() {
        assert_eq!(composite_on_white(10, 255), 10);
        assert_eq!(composite_on_white(10, 0), 255);
        assert_eq!(composite_on_white(0, 128), 127);
    }
}
