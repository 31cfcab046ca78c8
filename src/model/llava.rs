//! LLaVA (`LlavaForConditionalGeneration`): CLIP or SigLIP vision tower →
//! multi-modal projector → Llama / Qwen2 text model.
//!
//! Mirrors HF transformers' `modeling_llava.py`: the vision tower's hidden
//! state at `vision_feature_layer` (an index into `output_hidden_states`, or
//! a list whose states are concatenated along features), the class token
//! dropped when `vision_feature_select_strategy == "default"`, projected by
//! `multi_modal_projector`, and written over the embeddings of the
//! `image_token_id` placeholders (the processor repeats `<image>` once per
//! visual token). Weight layouts accepted: transformers 5.x saves
//! (`vision_tower.*`, `multi_modal_projector.*`, `language_model.model.*`,
//! `language_model.lm_head`), llava-hf hub checkpoints
//! (`vision_tower.vision_model.*`, ..., `lm_head`), and the
//! `model.{vision_tower, multi_modal_projector, language_model}` layout.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde_json::Value;

use super::clip::{ClipVision, VisionConfig, VisionKind};
use super::config::TextConfig;
use super::connector::Connector;
use super::llama::{get_checked, TextModel};
use super::siglip::SiglipVision;
use super::ModelError;

/// How LLaVA selects vision features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSelect {
    /// Drop the first (class) token.
    Default,
    /// Keep every token.
    Full,
}

/// Projector type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectorType {
    /// HF `LlavaMultiModalProjector` (LLaVA-1.5 `mlp2x_gelu`).
    Mlp2xGelu,
    /// One linear layer (LLaVA-1.0; non-HF `projector_type: "linear"`).
    Linear,
}

/// LLaVA config (HF `config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct LlavaConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
    /// Indices into the vision tower's `L + 1` hidden states (negative from the end), resolved.
    pub vision_feature_layers: Vec<usize>,
    pub select: FeatureSelect,
    pub image_token_id: u32,
    pub projector: ProjectorType,
    pub projector_hidden_act: String,
    pub projector_bias: bool,
}

fn resolve_layer(i: i64, n_states: usize) -> Result<usize, ModelError> {
    let r = if i < 0 { n_states as i64 + i } else { i };
    if r < 0 || r >= n_states as i64 {
        return Err(ModelError::config(
            "vision_feature_layer",
            format!("{i} is outside the vision tower's {n_states} hidden states"),
        ));
    }
    Ok(r as usize)
}

impl LlavaConfig {
    /// Parses a LLaVA `config.json`.
    pub fn from_hf_json(v: &Value) -> Result<Self, ModelError> {
        let vc = v.get("vision_config").ok_or_else(|| {
            ModelError::config("vision_config", "missing: a LLaVA config needs its vision tower config")
        })?;
        let vision = VisionConfig::from_hf_json(vc, "vision_config")?;
        if vc.get("model_type").and_then(Value::as_str).is_some_and(|t| t.starts_with("idefics3")) {
            return Err(ModelError::Unsupported("LLaVA with an Idefics3 vision tower".into()));
        }
        let tc = v.get("text_config").ok_or_else(|| {
            ModelError::config("text_config", "missing: a LLaVA config needs its text model config")
        })?;
        let text = TextConfig::from_hf_json(tc)?;
        let n_states = vision.num_hidden_layers + 1;
        let vision_feature_layers = match v.get("vision_feature_layer") {
            None | Some(Value::Null) => vec![resolve_layer(-2, n_states)?],
            Some(Value::Number(n)) => vec![resolve_layer(
                n.as_i64().ok_or_else(|| ModelError::config("vision_feature_layer", "must be an integer"))?,
                n_states,
            )?],
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|x| {
                    x.as_i64()
                        .ok_or_else(|| ModelError::config("vision_feature_layer", "must be integers"))
                        .and_then(|i| resolve_layer(i, n_states))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ModelError::config("vision_feature_layer", format!("must be an integer or a list, got {other}")))
            }
        };
        let select = match v.get("vision_feature_select_strategy").and_then(Value::as_str) {
            None | Some("default") => FeatureSelect::Default,
            Some("full") => FeatureSelect::Full,
            Some(other) => {
                return Err(ModelError::config(
                    "vision_feature_select_strategy",
                    format!("`{other}` is not supported (default or full)"),
                ))
            }
        };
        let id_of = |k: &str| v.get(k).filter(|x| !x.is_null());
        let image_token_id = match (id_of("image_token_id"), id_of("image_token_index")) {
            (Some(a), Some(b)) if a != b => {
                return Err(ModelError::config("image_token_id", format!("{a} contradicts image_token_index {b}")))
            }
            (Some(x), _) | (None, Some(x)) => x
                .as_u64()
                .ok_or_else(|| ModelError::config("image_token_id", format!("must be a token id, got {x}")))?,
            (None, None) => 32000,
        };
        if image_token_id as usize >= text.vocab_size {
            return Err(ModelError::config(
                "image_token_id",
                format!("{image_token_id} is outside the text vocabulary ({})", text.vocab_size),
            ));
        }
        let projector = match v.get("projector_type").and_then(Value::as_str) {
            None | Some("mlp2x_gelu") => ProjectorType::Mlp2xGelu,
            Some("linear") => ProjectorType::Linear,
            Some(other) => {
                return Err(ModelError::config("projector_type", format!("`{other}` is not supported (mlp2x_gelu, linear)")))
            }
        };
        let projector_hidden_act =
            v.get("projector_hidden_act").and_then(Value::as_str).unwrap_or("gelu").to_string();
        let projector_bias = v.get("multimodal_projector_bias").and_then(Value::as_bool).unwrap_or(true);
        Ok(Self {
            vision,
            text,
            vision_feature_layers,
            select,
            image_token_id: image_token_id as u32,
            projector,
            projector_hidden_act,
            projector_bias,
        })
    }

    /// Visual tokens per image.
    pub fn tokens_per_image(&self) -> usize {
        let g = self.vision.grid();
        let cls = usize::from(self.vision.kind == VisionKind::Clip);
        g * g + cls - usize::from(self.select == FeatureSelect::Default)
    }

    /// The patch (row-major index in the `g × g` grid) that visual token `k`
    /// comes from; `None` for CLIP's class token (kept by `"full"`).
    pub fn token_patch(&self, k: usize) -> Option<usize> {
        let state = k + usize::from(self.select == FeatureSelect::Default);
        match self.vision.kind {
            VisionKind::Clip => state.checked_sub(1),
            VisionKind::Siglip => Some(state),
        }
    }
}

/// Either vision tower.
#[derive(Debug, Clone)]
pub enum VisionTower {
    Clip(ClipVision),
    Siglip(SiglipVision),
}

impl VisionTower {
    fn hidden_states(&self, pixels: &Tensor, upto: usize) -> Result<Vec<Tensor>, ModelError> {
        match self {
            VisionTower::Clip(m) => m.hidden_states(pixels, Some(upto)),
            VisionTower::Siglip(m) => m.hidden_states(pixels, Some(upto)),
        }
    }
}

/// Finds which of `prefixes` holds `probe` (e.g. `embed_tokens.weight`).
pub(crate) fn find_prefix<'a>(vb: &VarBuilder, prefixes: &[&'a str], probe: &str) -> Result<&'a str, ModelError> {
    prefixes
        .iter()
        .copied()
        .find(|p| vb.contains_tensor(&format!("{p}.{probe}")))
        .ok_or_else(|| ModelError::MissingTensor {
            name: format!("{{{}}}.{probe}", prefixes.join(",")),
            source_desc: "the weights (none of the known checkpoint layouts matches)".into(),
        })
}

/// A loaded LLaVA model.
#[derive(Debug, Clone)]
pub struct Llava {
    pub cfg: LlavaConfig,
    pub vision: VisionTower,
    pub projector: Connector,
    pub text: TextModel,
}

impl Llava {
    /// Builds from the checkpoint root `vb` (any accepted layout).
    pub fn new(cfg: &LlavaConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        let vp = find_prefix(
            &vb,
            &["vision_tower", "vision_tower.vision_model", "model.vision_tower", "model.vision_tower.vision_model"],
            "embeddings.patch_embedding.weight",
        )?;
        let vision = match cfg.vision.kind {
            VisionKind::Clip => VisionTower::Clip(ClipVision::new(&cfg.vision, vb.pp(vp))?),
            VisionKind::Siglip => VisionTower::Siglip(SiglipVision::new(&cfg.vision, vb.pp(vp), false)?),
        };
        let pp = find_prefix(&vb, &["multi_modal_projector", "model.multi_modal_projector"], "linear_1.weight")?;
        let d_in = cfg.vision.hidden_size * cfg.vision_feature_layers.len();
        let d_out = cfg.text.hidden_size;
        let projector = match cfg.projector {
            ProjectorType::Mlp2xGelu => {
                Connector::mlp2x(&vb.pp(pp), d_in, d_out, &cfg.projector_hidden_act, cfg.projector_bias)?
            }
            ProjectorType::Linear => Connector::linear(&vb.pp(pp), d_in, d_out, cfg.projector_bias)?,
        };
        let tp = find_prefix(
            &vb,
            &["language_model.model", "model.language_model", "language_model"],
            "embed_tokens.weight",
        )?;
        let mut text = TextModel::new(&cfg.text, vb.pp(tp))?;
        if !cfg.text.tie_word_embeddings {
            for name in ["language_model.lm_head", "lm_head"] {
                let h = vb.pp(name);
                if h.contains_tensor("weight") {
                    let w = get_checked(&h, &[cfg.text.vocab_size, cfg.text.hidden_size], "weight")?;
                    text = text.with_lm_head(w)?;
                    break;
                }
            }
        }
        Ok(Self { cfg: cfg.clone(), vision, projector, text })
    }

    /// Visual tokens of one image `pixels: [3, S, S]` → `[n, d_text]`.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        let upto = self.cfg.vision_feature_layers.iter().copied().max().unwrap_or(0);
        let states = self.vision.hidden_states(pixels, upto)?;
        let mut picked = Vec::with_capacity(self.cfg.vision_feature_layers.len());
        for &l in &self.cfg.vision_feature_layers {
            let s = states
                .get(l)
                .ok_or_else(|| ModelError::Input(format!("vision hidden state {l} not computed")))?;
            let s = match self.cfg.select {
                FeatureSelect::Default => {
                    let n = s.dim(0)?;
                    s.narrow(0, 1, n - 1)?
                }
                FeatureSelect::Full => s.clone(),
            };
            picked.push(s);
        }
        let feats = Tensor::cat(&picked, 1)?; // [n, d_vision · layers]
        self.projector.forward(&feats)
    }
}
