//! Pillow-exact image resizing (`Image.resize` for 8-bit RGB images).
//!
//! A port of Pillow's `libImaging/Resample.c` convolution resampler: per
//! output pixel a window of source pixels is weighted by the filter
//! (stretched by the scale when downsampling, i.e. antialiased), weights are
//! normalised, converted to fixed point with `PRECISION_BITS = 22`, and the
//! image is resampled horizontally then vertically with rounding and
//! clipping to `u8` after each pass. HF's PIL-backend image processors resize
//! with exactly this, so matching it bit for bit makes preprocessing parity
//! exact (tested in `tests/image_preprocess.rs`).

use super::{ImageError, RgbImage};

/// Resampling filter, numbered as `PIL.Image.Resampling` (HF `resample`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// 1 — truncated sinc, support 3.
    Lanczos,
    /// 2 — triangle, support 1.
    Bilinear,
    /// 3 — cubic convolution with `a = -0.5`, support 2.
    Bicubic,
    /// 4 — box, support 0.5.
    Box,
    /// 5 — Hamming-windowed sinc, support 1.
    Hamming,
}

impl Filter {
    /// From the integer `resample` of an HF processor config.
    /// `0` (nearest) is refused: it takes a different code path in Pillow.
    pub fn from_pil(code: i64) -> Result<Self, ImageError> {
        Ok(match code {
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            other => {
                return Err(ImageError::Config(format!(
                    "resample = {other} is not supported (use 1 lanczos, 2 bilinear, 3 bicubic, 4 box or 5 hamming)"
                )))
            }
        })
    }

    fn support(self) -> f64 {
        match self {
            Filter::Lanczos => 3.0,
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Box => 0.5,
            Filter::Hamming => 1.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    x.sin() / x * (0.54 + 0.46 * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output index: first source index, and fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>, // (xmin, count)
    ksize: usize,
    kk: Vec<i32>, // [out, ksize]
}

/// Pillow `precompute_coeffs` + `normalize_coeffs_8bpc` for the full box.
fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C `(int)` truncates toward zero; negative values clamp to 0 anyway.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(0) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut kk[xx * ksize..(xx + 1) * ksize];
        for (x, out) in row.iter_mut().enumerate().take(n) {
            let v = if ww != 0.0 { k[x] / ww } else { k[x] };
            let s = v * (1u32 << PRECISION_BITS) as f64;
            *out = if v < 0.0 { (-0.5 + s) as i32 } else { (0.5 + s) as i32 };
        }
        bounds.push((xmin, n));
    }
    Coeffs { bounds, ksize, kk }
}

#[inline]
fn clip8(ss: i64) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an RGB image to `width x height` exactly as Pillow's
/// `Image.resize((width, height), filter)` does for mode "RGB".
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Filter) -> Result<RgbImage, ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    let (iw, ih) = (img.width as usize, img.height as usize);
    let (ow, oh) = (width as usize, height as usize);
    if (ow, oh) == (iw, ih) {
        return Ok(img.clone());
    }
    // Horizontal pass: [ih, ow, 3].
    let horiz = if ow != iw {
        let c = precompute(iw, ow, filter);
        let mut out = vec![0u8; ih * ow * 3];
        for y in 0..ih {
            let src = &img.data[y * iw * 3..(y + 1) * iw * 3];
            let dst = &mut out[y * ow * 3..(y + 1) * ow * 3];
            for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
                let k = &c.kk[xx * c.ksize..xx * c.ksize + n];
                let mut ss = [1i64 << (PRECISION_BITS - 1); 3];
                for (x, &w) in k.iter().enumerate() {
                    let p = &src[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    for b in 0..3 {
                        ss[b] += p[b] as i64 * w as i64;
                    }
                }
                for b in 0..3 {
                    dst[xx * 3 + b] = clip8(ss[b]);
                }
            }
        }
        out
    } else {
        img.data.clone()
    };
    // Vertical pass: [oh, ow, 3].
    let out = if oh != ih {
        let c = precompute(ih, oh, filter);
        let mut out = vec![0u8; oh * ow * 3];
        for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
            let k = &c.kk[yy * c.ksize..yy * c.ksize + n];
            let dst = &mut out[yy * ow * 3..(yy + 1) * ow * 3];
            for xx in 0..ow * 3 {
                let mut ss = 1i64 << (PRECISION_BITS - 1);
                for (y, &w) in k.iter().enumerate() {
                    ss += horiz[(ymin + y) * ow * 3 + xx] as i64 * w as i64;
                }
                dst[xx] = clip8(ss);
            }
        }
        out
    } else {
        horiz
    };
    RgbImage::from_raw(width, height, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        for f in [Filter::Lanczos, Filter::Bilinear, Filter::Bicubic, Filter::Box, Filter::Hamming] {
            let c = precompute(97, 31, f);
            for (i, &(_, n)) in c.bounds.iter().enumerate() {
                let s: i64 = c.kk[i * c.ksize..i * c.ksize + n].iter().map(|&v| v as i64).sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= n as i64, "{f:?} {i} {s}");
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_raw(13, 7, vec![77; 13 * 7 * 3]).unwrap();
        for f in [Filter::Lanczos, Filter::Bicubic, Filter::Bilinear] {
            let r = resize(&img, 29, 4, f).unwrap();
            assert!(r.data.iter().all(|&v| v == 77), "{f:?}");
        }
    }
}
