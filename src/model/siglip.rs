//! SigLIP vision transformer (`SiglipVisionModel`), and the Idefics3 /
//! SmolVLM variant (`Idefics3VisionTransformer`), with every layer's hidden
//! states.
//!
//! Mirrors HF transformers' `modeling_siglip.py` / `modeling_idefics3.py`:
//! patch embedding (conv with bias, stride = kernel = patch), learned
//! position embeddings (no class token), pre-norm encoder layers (same
//! layout as CLIP's, see [`super::clip`]), and `post_layernorm`. Hidden
//! states follow `output_hidden_states=True` (`[0]` = embeddings, `[i]` =
//! after layer `i`, no post-layernorm); LLaVA reads one of those, Idefics3
//! reads `post_layernorm(last)` (`last_hidden_state`). The attention-pooling
//! `head` of `SiglipVisionModel` is not used by either VLM and not loaded.
//!
//! Idefics3 position ids are bucketised fractional coordinates (NaViT
//! style); for tiles of the full `image_size` this is the identity, and it
//! is computed exactly as transformers does for smaller tiles.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::clip::{check_pixels, EncoderLayer, LayerNorm, PatchEmbed, VisionConfig};
use super::llama::get_checked;
use super::ModelError;

/// The SigLIP vision tower.
#[derive(Debug, Clone)]
pub struct SiglipVision {
    cfg: VisionConfig,
    patch_embedding: PatchEmbed,
    /// `[g², d]`
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    post_layernorm: Option<LayerNorm>,
}

impl SiglipVision {
    /// Builds from the tensors under `vb` (the `vision_model.` level:
    /// `embeddings.*`, `encoder.layers.*`, `post_layernorm`). With
    /// `need_post_layernorm` its absence is an error; otherwise it is
    /// loaded when present.
    pub fn new(cfg: &VisionConfig, vb: VarBuilder, need_post_layernorm: bool) -> Result<Self, ModelError> {
        let d = cfg.hidden_size;
        let e = vb.pp("embeddings");
        let n_pos = cfg.grid() * cfg.grid();
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(cfg, vb.pp("encoder.layers").pp(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let pl = vb.pp("post_layernorm");
        let post_layernorm = if need_post_layernorm || pl.contains_tensor("weight") {
            Some(LayerNorm::new(&pl, d, cfg.layer_norm_eps)?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            patch_embedding: PatchEmbed::new(cfg, &e.pp("patch_embedding"), true)?,
            position_embedding: get_checked(&e.pp("position_embedding"), &[n_pos, d], "weight")?,
            layers,
            post_layernorm,
        })
    }

    /// The config.
    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Hidden states of one tile `pixels: [3, S, S]`: `L + 1` tensors
    /// `[g², d]`, stopping after layer `upto` when given.
    pub fn hidden_states(&self, pixels: &Tensor, upto: Option<usize>) -> Result<Vec<Tensor>, ModelError> {
        check_pixels(&self.cfg, pixels)?;
        let x = self.patch_embedding.forward(&pixels.to_dtype(DType::F32)?)?; // [g², d]
        let g = self.cfg.grid();
        let ids = bucketized_position_ids(g, g, g);
        let idx = Tensor::from_vec(ids, g * g, x.device())?;
        let pos = self.position_embedding.index_select(&idx, 0)?; // [g², d]
        let mut x = (x + pos)?;
        let n = upto.unwrap_or(self.layers.len()).min(self.layers.len());
        let mut states = Vec::with_capacity(n + 1);
        states.push(x.clone());
        for layer in &self.layers[..n] {
            x = layer.forward(&x)?;
            states.push(x.clone());
        }
        Ok(states)
    }

    /// `post_layernorm(x)`, `x: [N, d]`.
    pub fn post_layernorm(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        match &self.post_layernorm {
            Some(ln) => ln.forward(x),
            None => Err(ModelError::MissingTensor {
                name: "post_layernorm.weight".into(),
                source_desc: "the vision tower weights".into(),
            }),
        }
    }
}

/// Idefics3 `Idefics3VisionEmbeddings` position ids for an `nb_h × nb_w`
/// patch grid with `n` positions per side: `bucketize(i / nb, arange(1/n, 1,
/// 1/n), right=True)` in f32, row-major `bh · n + bw`.
pub fn bucketized_position_ids(nb_h: usize, nb_w: usize, n: usize) -> Vec<u32> {
    // torch.arange(1/n, 1.0, 1/n) in float32: start + i·step computed in f64.
    let step = 1.0 / n as f64;
    let len = ((1.0 - step) / step).ceil().max(0.0) as usize;
    let boundaries: Vec<f32> = (0..len).map(|i| (step + i as f64 * step) as f32).collect();
    let bucket = |i: usize, nb: usize| -> usize {
        let s = 1.0f32 / nb as f32;
        let x = (i as f32 * s).min(1.0 - 1e-6);
        boundaries.iter().take_while(|&&b| b <= x).count()
    };
    let mut out = Vec::with_capacity(nb_h * nb_w);
    for i in 0..nb_h {
        let bh = bucket(i, nb_h);
        for j in 0..nb_w {
            out.push((bh * n + bucket(j, nb_w)) as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_grid_position_ids_are_the_identity() {
        for n in [4, 8, 26, 32] {
            let ids = bucketized_position_ids(n, n, n);
            assert!(ids.iter().enumerate().all(|(i, &v)| v as usize == i), "n={n}");
        }
    }
}
