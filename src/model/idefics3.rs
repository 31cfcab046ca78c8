//! Idefics3 / SmolVLM (`Idefics3ForConditionalGeneration`): SigLIP-style
//! vision transformer per image tile → pixel-shuffle connector → Llama text
//! model.
//!
//! Mirrors HF transformers' `modeling_idefics3.py` and
//! `processing_idefics3.py`: each tile (split tiles row-major, then the
//! global image) goes through the vision model (`last_hidden_state` =
//! `post_layernorm` of the last layer), `connector` shuffles `s × s` patch
//! blocks into one token and projects it, and the `image_seq_len = (g/s)²`
//! tokens per tile overwrite the `<image>` placeholders of the prompt laid
//! out as
//! `<fake_token_around_image><row_1_col_1><image>×n … \n … \n\n<fake_token_around_image><global-img><image>×n<fake_token_around_image>`
//! (just `<fake_token_around_image><global-img><image>×n<fake_token_around_image>`
//! when the image is not split). Weight layouts: `model.{vision_model,
//! connector, text_model}.*` + `lm_head` (transformers 4.4x+/5.x) and the
//! same without `model.`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde_json::Value;

use super::clip::{VisionConfig, VisionKind};
use super::config::TextConfig;
use super::connector::Connector;
use super::llama::{get_checked, TextModel};
use super::llava::find_prefix;
use super::siglip::SiglipVision;
use super::ModelError;

/// Idefics3 config (HF `config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Idefics3Config {
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub scale_factor: usize,
    pub image_token_id: u32,
}

impl Idefics3Config {
    /// Parses an Idefics3 / SmolVLM `config.json`.
    pub fn from_hf_json(v: &Value) -> Result<Self, ModelError> {
        let vc = v.get("vision_config").ok_or_else(|| {
            ModelError::config("vision_config", "missing: an Idefics3 config needs its vision config")
        })?;
        let mut vc = vc.clone();
        // HF's Idefics3VisionConfig may omit model_type in nested dicts.
        if let Some(o) = vc.as_object_mut() {
            match o.get("model_type").and_then(Value::as_str) {
                None => {
                    o.insert("model_type".into(), Value::from("idefics3_vision"));
                }
                Some("smolvlm_vision") => {
                    o.insert("model_type".into(), Value::from("idefics3_vision"));
                }
                Some(_) => {}
            }
        }
        let vision = VisionConfig::from_hf_json(&vc, "vision_config")?;
        if vision.kind != VisionKind::Siglip {
            return Err(ModelError::Unsupported("Idefics3 with a non-SigLIP vision tower".into()));
        }
        let tc = v.get("text_config").ok_or_else(|| {
            ModelError::config("text_config", "missing: an Idefics3 config needs its text model config")
        })?;
        let text = TextConfig::from_hf_json(tc)?;
        let scale_factor = match v.get("scale_factor") {
            None | Some(Value::Null) => 2,
            Some(x) => x
                .as_u64()
                .filter(|s| (1..=16).contains(s))
                .ok_or_else(|| ModelError::config("scale_factor", format!("must be an integer in 1..=16, got {x}")))?
                as usize,
        };
        if vision.grid() % scale_factor != 0 {
            return Err(ModelError::config(
                "scale_factor",
                format!(
                    "{scale_factor} does not divide the patch grid {} (vision_config.image_size / patch_size)",
                    vision.grid()
                ),
            ));
        }
        let image_token_id = match v.get("image_token_id").filter(|x| !x.is_null()) {
            None => 128257,
            Some(x) => x
                .as_u64()
                .ok_or_else(|| ModelError::config("image_token_id", format!("must be a token id, got {x}")))?,
        };
        if image_token_id as usize >= text.vocab_size {
            return Err(ModelError::config(
                "image_token_id",
                format!("{image_token_id} is outside the text vocabulary ({})", text.vocab_size),
            ));
        }
        Ok(Self { vision, text, scale_factor, image_token_id: image_token_id as u32 })
    }

    /// Visual tokens per tile: `(g / s)²`.
    pub fn image_seq_len(&self) -> usize {
        let t = self.vision.grid() / self.scale_factor;
        t * t
    }
}

/// A loaded Idefics3 model.
#[derive(Debug, Clone)]
pub struct Idefics3 {
    pub cfg: Idefics3Config,
    pub vision: SiglipVision,
    pub connector: Connector,
    pub text: TextModel,
}

impl Idefics3 {
    /// Builds from the checkpoint root `vb` (either layout).
    pub fn new(cfg: &Idefics3Config, vb: VarBuilder) -> Result<Self, ModelError> {
        let vp = find_prefix(&vb, &["model.vision_model", "vision_model"], "embeddings.patch_embedding.weight")?;
        let vision = SiglipVision::new(&cfg.vision, vb.pp(vp), true)?;
        let cp = find_prefix(&vb, &["model.connector", "connector"], "modality_projection.proj.weight")?;
        let connector =
            Connector::pixel_shuffle(&vb.pp(cp), cfg.vision.hidden_size, cfg.scale_factor, cfg.text.hidden_size)?;
        let tp = find_prefix(&vb, &["model.text_model", "text_model"], "embed_tokens.weight")?;
        let mut text = TextModel::new(&cfg.text, vb.pp(tp))?;
        if !cfg.text.tie_word_embeddings {
            let h = vb.pp("lm_head");
            if h.contains_tensor("weight") {
                let w = get_checked(&h, &[cfg.text.vocab_size, cfg.text.hidden_size], "weight")?;
                text = text.with_lm_head(w)?;
            }
        }
        Ok(Self { cfg: cfg.clone(), vision, connector, text })
    }

    /// Visual tokens of one tile `pixels: [3, S, S]` → `[image_seq_len, d_text]`.
    pub fn tile_features(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        let states = self.vision.hidden_states(pixels, None)?;
        let last = states
            .last()
            .ok_or_else(|| ModelError::Input("the vision model produced no state".into()))?;
        let x = self.vision.post_layernorm(last)?; // [g², d_vision]
        self.connector.forward(&x) // [(g/s)², d_text]
    }
}

/// The Idefics3 processor's prompt text for one image with a `rows × cols`
/// split (`0 × 0`: not split), as `Idefics3Processor` writes it.
pub fn image_prompt(rows: u32, cols: u32, image_seq_len: usize) -> String {
    let img = "<image>".repeat(image_seq_len);
    let fake = "<fake_token_around_image>";
    let global = format!("{fake}<global-img>{img}{fake}");
    if rows == 0 && cols == 0 {
        return global;
    }
    let mut s = String::new();
    for r in 0..rows {
        for c in 0..cols {
            s.push_str(&format!("{fake}<row_{}_col_{}>{img}", r + 1, c + 1));
        }
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&global);
    s
}
