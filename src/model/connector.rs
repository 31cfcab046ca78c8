//! Connectors: vision features → LLM input embeddings ("visual tokens").
//!
//! - [`Connector::Mlp2xGelu`]: LLaVA's `LlavaMultiModalProjector`
//!   (`linear_1` → `projector_hidden_act` → `linear_2`), the
//!   `mlp2x_gelu` projector of LLaVA-1.5.
//! - [`Connector::Linear`]: a single `linear_1` (LLaVA-1.0's `linear`
//!   projector; selected by a non-HF `projector_type: "linear"`).
//! - [`Connector::PixelShuffle`]: Idefics3 / SmolVLM `Idefics3Connector`:
//!   pixel shuffle (space-to-depth by `scale_factor`: each `s × s` block of
//!   patch features is concatenated into one token) then
//!   `modality_projection.proj` (linear, no bias).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::clip::{Linear, VisionAct};
use super::ModelError;

/// A connector with its weights.
#[derive(Debug, Clone)]
pub enum Connector {
    /// `linear_1` → act → `linear_2`.
    Mlp2xGelu { linear_1: Linear, act: VisionAct, linear_2: Linear },
    /// `linear_1` only.
    Linear { linear_1: Linear },
    /// Pixel shuffle by `scale`, then a bias-free projection.
    PixelShuffle { scale: usize, proj: Linear },
}

impl Connector {
    /// LLaVA `multi_modal_projector` under `vb` (`linear_1`, `linear_2`).
    pub fn mlp2x(vb: &VarBuilder, d_in: usize, d_out: usize, act: &str, bias: bool) -> Result<Self, ModelError> {
        let act = match act {
            "gelu" => VisionAct::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" => VisionAct::GeluTanh,
            "quick_gelu" => VisionAct::QuickGelu,
            other => {
                return Err(ModelError::config(
                    "projector_hidden_act",
                    format!("`{other}` is not supported (gelu, gelu_pytorch_tanh, quick_gelu)"),
                ))
            }
        };
        Ok(Connector::Mlp2xGelu {
            linear_1: Linear::new(&vb.pp("linear_1"), d_in, d_out, bias)?,
            act,
            linear_2: Linear::new(&vb.pp("linear_2"), d_out, d_out, bias)?,
        })
    }

    /// A single linear projector under `vb` (`linear_1`).
    pub fn linear(vb: &VarBuilder, d_in: usize, d_out: usize, bias: bool) -> Result<Self, ModelError> {
        Ok(Connector::Linear { linear_1: Linear::new(&vb.pp("linear_1"), d_in, d_out, bias)? })
    }

    /// Idefics3 connector under `vb` (`modality_projection.proj`).
    pub fn pixel_shuffle(vb: &VarBuilder, d_vision: usize, scale: usize, d_out: usize) -> Result<Self, ModelError> {
        let proj = Linear::new(&vb.pp("modality_projection").pp("proj"), d_vision * scale * scale, d_out, false)?;
        Ok(Connector::PixelShuffle { scale, proj })
    }

    /// `x: [N, d_vision]` (one tile's features; for pixel shuffle `N` must
    /// be a square grid divisible by the scale) → `[N', d_text]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        match self {
            Connector::Mlp2xGelu { linear_1, act, linear_2 } => {
                linear_2.forward(&act.apply(&linear_1.forward(x)?)?)
            }
            Connector::Linear { linear_1 } => linear_1.forward(x),
            Connector::PixelShuffle { scale, proj } => proj.forward(&pixel_shuffle(x, *scale)?),
        }
    }
}

/// Idefics3 `pixel_shuffle` of one tile: `[g·g, D]` → `[(g/s)², D·s²]`;
/// output token `(r, c)` (row-major) holds the `s × s` block of patches at
/// rows `r·s..(r+1)·s`, columns `c·s..(c+1)·s`, in transformers' order.
pub fn pixel_shuffle(x: &Tensor, s: usize) -> Result<Tensor, ModelError> {
    let (seq, d) = x.dims2()?;
    let g = (seq as f64).sqrt().round() as usize;
    if g * g != seq || s == 0 || g % s != 0 {
        return Err(ModelError::Input(format!(
            "pixel shuffle needs a square patch grid divisible by scale_factor {s}, got {seq} patches"
        )));
    }
    let x = x.reshape((g, g / s, d * s))?; // [h, w/s, D·s]
    let x = x.transpose(0, 1)?.contiguous()?; // [w/s, h, D·s]
    let x = x.reshape((g / s, g / s, d * s * s))?; // [w/s, h/s, D·s²]
    let x = x.transpose(0, 1)?.contiguous()?; // [h/s, w/s, D·s²]
    Ok(x.reshape((seq / (s * s), d * s * s))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Token (r, c) gathers patches (r·s + i, c·s + j) in row-major (i, j) order.
    #[test]
    fn pixel_shuffle_gathers_square_blocks() {
        let (g, s, d) = (4usize, 2usize, 1usize);
        let v: Vec<f32> = (0..g * g).map(|i| i as f32).collect();
        let x = Tensor::from_vec(v, (g * g, d), &Device::Cpu).unwrap();
        let y = pixel_shuffle(&x, s).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y[0], vec![0.0, 1.0, 4.0, 5.0]);
        assert_eq!(y[1], vec![2.0, 3.0, 6.0, 7.0]);
        assert_eq!(y[2], vec![8.0, 9.0, 12.0, 13.0]);
    }
}
