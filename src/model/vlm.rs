//! VLM assembly: image + prompt → [`HiddenStates`] of every LLM layer, with
//! the visual token rows and each visual token's rectangle in the original
//! image.
//!
//! Steps (as HF transformers' processors and `*ForConditionalGeneration`):
//! preprocess the image ([`crate::image::Processor`]), expand the prompt's
//! `<image>` into the family's placeholder layout, tokenize, embed, run the
//! vision tower + connector per tile, write the visual tokens over the
//! placeholder embeddings (in order, like `masked_scatter`), then the text
//! model's `forward_embeds`. Families: [`Llava`] (CLIP / SigLIP + Llama /
//! Qwen2) and [`Idefics3`] (SmolVLM layout).

use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Value;

use super::hidden::{HiddenStates, PatchGeometry};
use super::idefics3::{image_prompt, Idefics3, Idefics3Config};
use super::llama::{states_to_vecs, TextModel};
use super::llava::{Llava, LlavaConfig};
use super::tokenizer::Tokenizer;
use super::weights::load_safetensors_dir;
use super::ModelError;

/// Prompt used when none is given (after the `<image>` placeholder).
pub const DEFAULT_PROMPT: &str = "Describe this image.";
use crate::image::{decode, ImageError, Preprocessed, Processor, RgbImage};

/// The image placeholder string of both families' processors.
pub const IMAGE_TOKEN: &str = "<image>";

/// A VLM family with its weights.
#[derive(Debug, Clone)]
pub enum VlmModel {
    Llava(Box<Llava>),
    Idefics3(Box<Idefics3>),
}

/// A VLM ready to run: model, image processor, tokenizer.
#[derive(Debug, Clone)]
pub struct Vlm {
    pub model: VlmModel,
    pub processor: Processor,
    pub tokenizer: Tokenizer,
    /// Where it came from (path or description).
    pub source: String,
}

/// Which VLM family a `config.json` names, if any.
pub fn vlm_family(config: &Value) -> Option<&'static str> {
    let arches: Vec<&str> = config
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mt = config.get("model_type").and_then(Value::as_str).unwrap_or("");
    if arches.contains(&"LlavaForConditionalGeneration") || mt == "llava" {
        Some("llava")
    } else if arches.iter().any(|a| {
        matches!(*a, "Idefics3ForConditionalGeneration" | "SmolVLMForConditionalGeneration")
    }) || matches!(mt, "idefics3" | "smolvlm")
    {
        Some("idefics3")
    } else {
        None
    }
}

fn read_json(path: &Path) -> Result<Value, ModelError> {
    let bytes =
        std::fs::read(path).map_err(|source| ModelError::Io { path: path.display().to_string(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| ModelError::Weights {
        path: path.display().to_string(),
        msg: format!("invalid JSON: {e}"),
    })
}

/// Loads a VLM from an HF directory: `config.json`, `model.safetensors`
/// (or shards), `tokenizer.json`, and `preprocessor_config.json` or
/// `processor_config.json`.
pub fn load_vlm(dir: &Path) -> Result<Vlm, ModelError> {
    let dev = Device::Cpu;
    let config = read_json(&dir.join("config.json"))?;
    let pre = dir.join("preprocessor_config.json");
    let proc_path = if pre.is_file() { pre } else { dir.join("processor_config.json") };
    if !proc_path.is_file() {
        return Err(ModelError::config(
            "preprocessor_config.json",
            format!("neither preprocessor_config.json nor processor_config.json in {}", dir.display()),
        ));
    }
    let proc_cfg = read_json(&proc_path)?;
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    // Parse the config before reading weights: unsupported models fail fast.
    Vlm::check_config(&config)?;
    let w = load_safetensors_dir(dir, &dev)?;
    Vlm::from_parts(&config, w.var_builder(&dev), &proc_cfg, tokenizer, &dir.display().to_string())
}

impl Vlm {
    /// Validates a VLM `config.json` without weights.
    pub fn check_config(config: &Value) -> Result<(), ModelError> {
        match vlm_family(config) {
            Some("llava") => LlavaConfig::from_hf_json(config).map(|_| ()),
            Some(_) => Idefics3Config::from_hf_json(config).map(|_| ()),
            None => Err(ModelError::Unsupported(format!(
                "architectures {:?} / model_type {:?}: supported VLMs are LlavaForConditionalGeneration and Idefics3ForConditionalGeneration",
                config.get("architectures").cloned().unwrap_or(Value::Null),
                config.get("model_type").cloned().unwrap_or(Value::Null)
            ))),
        }
    }

    /// Builds from parsed parts (no file system: also for wasm).
    pub fn from_parts(
        config: &Value,
        vb: candle_nn::VarBuilder,
        processor_config: &Value,
        tokenizer: Tokenizer,
        source: &str,
    ) -> Result<Self, ModelError> {
        Self::check_config(config)?;
        let model = match vlm_family(config) {
            Some("llava") => VlmModel::Llava(Box::new(Llava::new(&LlavaConfig::from_hf_json(config)?, vb)?)),
            _ => VlmModel::Idefics3(Box::new(Idefics3::new(&Idefics3Config::from_hf_json(config)?, vb)?)),
        };
        let processor = Processor::from_hf_json(processor_config)
            .map_err(|e| ModelError::config("preprocessor_config.json", e.to_string()))?;
        // The processor must produce tiles of the vision tower's size.
        let vis = match &model {
            VlmModel::Llava(m) => &m.cfg.vision,
            VlmModel::Idefics3(m) => &m.cfg.vision,
        };
        if let Some((h, w)) = processor.output_size() {
            if (h as usize, w as usize) != (vis.image_size, vis.image_size) {
                return Err(ModelError::config(
                    "preprocessor_config.json",
                    format!(
                        "the image processor makes {w}x{h} tiles but vision_config.image_size is {}: processor and model do not match",
                        vis.image_size
                    ),
                ));
            }
        }
        let id = tokenizer.token_to_id(IMAGE_TOKEN);
        let want = match &model {
            VlmModel::Llava(m) => m.cfg.image_token_id,
            VlmModel::Idefics3(m) => m.cfg.image_token_id,
        };
        if id != Some(want) {
            return Err(ModelError::config(
                "image_token_id",
                format!("the tokenizer maps `{IMAGE_TOKEN}` to {id:?} but config.json says {want}: tokenizer and model do not match"),
            ));
        }
        Ok(Self { model, processor, tokenizer, source: source.to_string() })
    }

    /// The text model (embedding matrix, final norm, unembedding for the lenses).
    pub fn text_model(&self) -> &TextModel {
        match &self.model {
            VlmModel::Llava(m) => &m.text,
            VlmModel::Idefics3(m) => &m.text,
        }
    }

    /// The model fingerprint of the text side (tokenizer + embedding
    /// matrix, see [`crate::model::fingerprint`]): a bank built from this
    /// VLM's LLM carries the same one.
    pub fn fingerprint(&self) -> Result<String, ModelError> {
        super::fingerprint::model_fingerprint(&self.tokenizer, self.text_model().embedding_matrix())
    }

    /// The image placeholder token id.
    pub fn image_token_id(&self) -> u32 {
        match &self.model {
            VlmModel::Llava(m) => m.cfg.image_token_id,
            VlmModel::Idefics3(m) => m.cfg.image_token_id,
        }
    }

    /// A plain prompt in the family's chat layout, asking for a description.
    pub fn default_prompt(&self) -> &'static str {
        match &self.model {
            VlmModel::Llava(_) => "USER: <image>\nDescribe the image. ASSISTANT:",
            VlmModel::Idefics3(_) => "User:<image>Describe the image.<end_of_utterance>\nAssistant:",
        }
    }

    /// Runs the image processor.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Preprocessed, ModelError> {
        self.processor.preprocess(image).map_err(image_to_model)
    }

    /// The prompt with its one `<image>` expanded to the processor's
    /// placeholder layout for this preprocessed image.
    pub fn expand_prompt(&self, prompt: &str, pre: &Preprocessed) -> Result<String, ModelError> {
        let n = prompt.matches(IMAGE_TOKEN).count();
        if n != 1 {
            return Err(ModelError::Input(format!(
                "the prompt must contain `{IMAGE_TOKEN}` exactly once (where the image goes), found {n}; e.g. {:?}",
                self.default_prompt()
            )));
        }
        let expansion = match &self.model {
            VlmModel::Llava(m) => IMAGE_TOKEN.repeat(m.cfg.tokens_per_image()),
            VlmModel::Idefics3(m) => image_prompt(pre.rows, pre.cols, m.cfg.image_seq_len()),
        };
        Ok(prompt.replacen(IMAGE_TOKEN, &expansion, 1))
    }

    /// Visual tokens of a preprocessed image `[n_visual, d]` (tiles in
    /// order) and each one's geometry.
    pub fn image_features(&self, pre: &Preprocessed) -> Result<(Tensor, Vec<PatchGeometry>), ModelError> {
        let dev = Device::Cpu;
        let (s_h, s_w) = (pre.height as usize, pre.width as usize);
        let tile_tensor = |i: usize| -> Result<Tensor, ModelError> {
            let px = pre
                .tile(i)
                .ok_or_else(|| ModelError::Input(format!("preprocessed image has no tile {i}")))?;
            Ok(Tensor::from_slice(px, (3, s_h, s_w), &dev)?)
        };
        let mut feats = Vec::new();
        let geo = match &self.model {
            VlmModel::Llava(m) => {
                let geo = llava_patch_geometry(&m.cfg, pre)?;
                feats.push(m.image_features(&tile_tensor(0)?)?);
                geo
            }
            VlmModel::Idefics3(m) => {
                for ti in 0..pre.num_tiles() {
                    feats.push(m.tile_features(&tile_tensor(ti)?)?);
                }
                idefics3_patch_geometry(&m.cfg, pre)
            }
        };
        Ok((Tensor::cat(&feats, 0)?, geo))
    }

    /// Token ids (placeholders expanded) and the preprocessed image for `image` and `prompt`
    /// (an `<image>` placeholder is prepended when missing; [`DEFAULT_PROMPT`] when `None`).
    pub fn prepare(&self, image: &RgbImage, prompt: Option<&str>) -> Result<(Vec<u32>, Preprocessed), ModelError> {
        let prompt = prompt.unwrap_or(DEFAULT_PROMPT);
        let prompt = if prompt.contains("<image>") { prompt.to_string() } else { format!("<image>{prompt}") };
        let pre = self.preprocess(image)?;
        let text = self.expand_prompt(&prompt, &pre)?;
        let ids = self.tokenizer.encode(&text)?;
        Ok((ids, pre))
    }

    /// The LLM's input for token ids `ids` (placeholders expanded) and a preprocessed image:
    /// the token embeddings with the visual tokens spliced into the placeholder rows. Any
    /// compute path (the CPU, the WGSL kernels) runs the decoder on this.
    pub fn input_embeds(&self, ids: &[u32], pre: &Preprocessed) -> Result<VlmInput, ModelError> {
        let text = self.text_model();
        let image_id = self.image_token_id();
        let (feats, patches) = self.image_features(pre)?; // [n, d]
        let visual_rows: Vec<usize> =
            ids.iter().enumerate().filter(|(_, &t)| t == image_id).map(|(i, _)| i).collect();
        let (n, d) = feats.dims2()?;
        if visual_rows.len() != n {
            return Err(ModelError::Input(format!(
                "the token ids hold {} image placeholders but the image gives {n} visual tokens: expand the prompt with Vlm::expand_prompt",
                visual_rows.len()
            )));
        }
        let embeds = text.embed_tokens(ids)?; // [T, d]
        let mut e = embeds.flatten_all()?.to_vec1::<f32>()?;
        let f = feats.flatten_all()?.to_vec1::<f32>()?;
        for (k, &row) in visual_rows.iter().enumerate() {
            e[row * d..(row + 1) * d].copy_from_slice(&f[k * d..(k + 1) * d]);
        }
        Ok(VlmInput { token_ids: ids.to_vec(), embeds: e, hidden_size: d, visual_rows, patches })
    }

    /// Hidden states of every LLM layer for token ids `ids` (with the
    /// placeholders already expanded) and a preprocessed image.
    pub fn forward(&self, ids: &[u32], pre: &Preprocessed) -> Result<HiddenStates, ModelError> {
        let text = self.text_model();
        let input = self.input_embeds(ids, pre)?;
        let device = text.embedding_matrix().device().clone();
        let embeds = Tensor::from_vec(input.embeds.clone(), (ids.len(), input.hidden_size), &device)?;
        let states = text.forward_embeds(&embeds)?;
        Ok(input.into_hidden_states(states_to_vecs(&states)?))
    }

    /// Image + prompt (containing `<image>` once) → hidden states.
    pub fn hidden_states(&self, image: &RgbImage, prompt: &str) -> Result<HiddenStates, ModelError> {
        let pre = self.preprocess(image)?;
        let text = self.expand_prompt(prompt, &pre)?;
        let ids = self.tokenizer.encode(&text)?;
        self.forward(&ids, &pre)
    }

    /// PNG / JPEG bytes + prompt → hidden states (decoding is bounded, see
    /// [`crate::image::decode`]).
    pub fn hidden_states_from_bytes(&self, bytes: &[u8], prompt: &str) -> crate::Result<HiddenStates> {
        let img = decode(bytes)?;
        Ok(self.hidden_states(&img, prompt)?)
    }
}

/// Geometry of each visual token of a LLaVA image (one tile), in feature order: the patch's
/// rectangle, or the whole tile for CLIP's class token (kept by `"full"`; row and column
/// `u32::MAX`).
pub fn llava_patch_geometry(cfg: &LlavaConfig, pre: &Preprocessed) -> Result<Vec<PatchGeometry>, ModelError> {
    if pre.num_tiles() != 1 {
        return Err(ModelError::Input(format!("LLaVA takes one tile, got {}", pre.num_tiles())));
    }
    let (s_h, s_w) = (pre.height as f64, pre.width as f64);
    let g = cfg.vision.grid();
    let p = cfg.vision.patch_size as f64;
    let t = pre.tiles[0];
    Ok((0..cfg.tokens_per_image())
        .map(|k| match cfg.token_patch(k) {
            Some(patch) => {
                let (r, c) = ((patch / g) as f64, (patch % g) as f64);
                PatchGeometry {
                    tile: 0,
                    row: (patch / g) as u32,
                    col: (patch % g) as u32,
                    rect: t.rect(c * p, r * p, (c + 1.0) * p, (r + 1.0) * p, pre.original),
                }
            }
            None => PatchGeometry { tile: 0, row: u32::MAX, col: u32::MAX, rect: t.rect(0.0, 0.0, s_w, s_h, pre.original) },
        })
        .collect())
}

/// Geometry of each visual token of an Idefics3 image: tiles in processor order, each tile's
/// `(g/s) × (g/s)` tokens row-major.
pub fn idefics3_patch_geometry(cfg: &Idefics3Config, pre: &Preprocessed) -> Vec<PatchGeometry> {
    let side = cfg.vision.grid() / cfg.scale_factor;
    let span = (cfg.vision.patch_size * cfg.scale_factor) as f64;
    let mut geo = Vec::with_capacity(pre.num_tiles() * side * side);
    for (ti, t) in pre.tiles.iter().enumerate() {
        for r in 0..side {
            for c in 0..side {
                let (rf, cf) = (r as f64, c as f64);
                geo.push(PatchGeometry {
                    tile: ti as u32,
                    row: r as u32,
                    col: c as u32,
                    rect: t.rect(cf * span, rf * span, (cf + 1.0) * span, (rf + 1.0) * span, pre.original),
                });
            }
        }
    }
    geo
}

fn image_to_model(e: ImageError) -> ModelError {
    ModelError::Input(format!("image: {e}"))
}

/// The LLM's input for one image + prompt (see [`Vlm::input_embeds`]).
#[derive(Debug, Clone)]
pub struct VlmInput {
    /// Token ids with the image placeholders expanded.
    pub token_ids: Vec<u32>,
    /// `[T, d]` row-major input embeddings, visual tokens spliced in.
    pub embeds: Vec<f32>,
    /// `d`.
    pub hidden_size: usize,
    /// Rows of `embeds` that are visual tokens.
    pub visual_rows: Vec<usize>,
    /// Geometry of each visual token.
    pub patches: Vec<PatchGeometry>,
}

impl VlmInput {
    /// Number of tokens.
    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// Wraps the decoder's per-layer states (`L + 1` row-major `[T, d]`) of this input.
    pub fn into_hidden_states(self, layers: Vec<Vec<f32>>) -> HiddenStates {
        HiddenStates {
            hidden_size: self.hidden_size,
            token_ids: self.token_ids,
            layers,
            visual_rows: self.visual_rows,
            patches: self.patches,
        }
    }
}

/// The prefix of a VLM checkpoint's language model in `names` (e.g. `language_model.model.`
/// for LLaVA, `model.text_model.` for Idefics3), found by its embedding matrix.
pub fn text_weights_prefix<'a>(mut names: impl Iterator<Item = &'a String>) -> Option<String> {
    const CANDIDATES: [&str; 5] =
        ["language_model.model.", "model.language_model.", "model.text_model.", "text_model.", "language_model."];
    let found: Vec<&String> = names.by_ref().filter(|n| n.ends_with("embed_tokens.weight")).collect();
    CANDIDATES
        .iter()
        .find(|p| found.iter().any(|n| **n == format!("{p}embed_tokens.weight")))
        .map(|p| p.to_string())
}
