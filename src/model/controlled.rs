//! The controlled VLM: frozen EfficientNet-Lite0 (ImageNet) → trained
//! LLaVA-style connector (Linear 1280→576, exact GELU, Linear 576→576) →
//! frozen SmolLM2-135M-Instruct. The paper's controlled setting (a frozen
//! vision encoder and a frozen LLM joined by a trained connector), small
//! enough to train here and to ship as the page's embedded default.
//!
//! The connector was trained by `tools/train_connector.py` on generated
//! scenes ([`crate::eval::scenes`]) with the captioning loss; this module is
//! the runtime forward, checked against that script's model in
//! `tests/controlled_vlm.rs`.
//!
//! Sequence layout (identical in the trainer): the ids of [`PREFIX`], the 49
//! visual tokens (one per cell of EfficientNet's 7×7 output grid, row-major;
//! their rows hold [`PLACEHOLDER`] ids), then the ids of the prompt suffix
//! [`SUFFIX`]; each piece is tokenized separately with no special tokens
//! added.
//!
//! Files: a `controlled.json` config naming the three weight files (paths
//! relative to the config): `{"model_type": "latentlens-controlled",
//! "vision": "...safetensors", "connector": "...safetensors", "text":
//! "...gguf"}`.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Value;

use super::connector::Connector;
use super::efficientnet::{preprocess, EfficientNetLite0, FEATURES, GRID, INPUT_SIZE};
use super::hidden::{HiddenStates, PatchGeometry};
use super::llama::{states_to_vecs, TextModel};
use super::text::LoadedTextModel;
use super::tokenizer::Tokenizer;
use super::vlm::VlmInput;
use super::weights::{load_safetensors_bytes, Weights};
use super::ModelError;
use crate::image::resample::{resize, Filter};
use crate::image::RgbImage;

/// `model_type` of a controlled VLM config.
pub const MODEL_TYPE: &str = "latentlens-controlled";
/// Text before the visual tokens.
pub const PREFIX: &str = "<|im_start|>user\n";
/// Text after the visual tokens (the instruction and the assistant turn).
pub const SUFFIX: &str = "\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n";
/// End of the assistant's answer.
pub const END: &str = "<|im_end|>";
/// Token written in the visual rows of `token_ids` (SmolLM2's padding /
/// `<|endoftext|>` id 0; its embedding is never used).
pub const PLACEHOLDER: u32 = 0;
/// Number of visual tokens.
pub const N_VISUAL: usize = GRID * GRID;

/// The controlled VLM with its weights.
#[derive(Debug, Clone)]
pub struct ControlledVlm {
    /// Frozen vision encoder.
    pub vision: EfficientNetLite0,
    /// Trained connector (`linear_1`, `linear_2`).
    pub connector: Connector,
    /// Frozen LLM with its tokenizer.
    pub text: LoadedTextModel,
    /// Where it came from.
    pub source: String,
}

/// The input of the controlled VLM before any network ran ([`ControlledVlm::prepare`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ControlledPrepared {
    /// `[3, 224, 224]` CHW, preprocessed for EfficientNet-Lite0.
    pub pixels: Vec<f32>,
    /// Prefix ids, [`PLACEHOLDER`] × 49, suffix ids.
    pub token_ids: Vec<u32>,
    /// Rows of `token_ids` that take the visual tokens.
    pub visual_rows: Vec<usize>,
    /// Geometry of each visual token.
    pub patches: Vec<PatchGeometry>,
}

/// Checks the connector's tensors against the model (1280 → d → d) and
/// names what does not match.
pub fn check_connector(w: &Weights, d: usize, what: &str) -> Result<(), ModelError> {
    for (name, shape) in [
        ("linear_1.weight", vec![d, FEATURES]),
        ("linear_1.bias", vec![d]),
        ("linear_2.weight", vec![d, d]),
        ("linear_2.bias", vec![d]),
    ] {
        let t = w.get(name).ok_or_else(|| ModelError::MissingTensor {
            name: name.into(),
            source_desc: format!("{what} (a controlled-VLM connector has linear_1 and linear_2)"),
        })?;
        if t.dims() != shape.as_slice() {
            return Err(ModelError::Weights {
                path: what.into(),
                msg: format!(
                    "connector tensor `{name}` is {:?} but this model needs {shape:?} (EfficientNet-Lite0 {FEATURES} → LLM width {d}): the connector was trained for another model",
                    t.dims()
                ),
            });
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io { path: path.display().to_string(), source })
}

impl ControlledVlm {
    /// Loads from a `controlled.json` config (see the module docs).
    pub fn load(config_path: &Path) -> Result<Self, ModelError> {
        let cfg: Value = serde_json::from_slice(&read(config_path)?).map_err(|e| ModelError::Weights {
            path: config_path.display().to_string(),
            msg: format!("invalid JSON: {e}"),
        })?;
        if cfg.get("model_type").and_then(Value::as_str) != Some(MODEL_TYPE) {
            return Err(ModelError::config("model_type", format!("a controlled VLM config has model_type \"{MODEL_TYPE}\"")));
        }
        let dir = config_path.parent().unwrap_or(Path::new("."));
        let file = |key: &str| -> Result<std::path::PathBuf, ModelError> {
            let rel = cfg
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| ModelError::config(key, "missing: the path of this part's weights, relative to the config"))?;
            Ok(dir.join(rel))
        };
        let (vision_p, conn_p, text_p) = (file("vision")?, file("connector")?, file("text")?);
        let dev = Device::Cpu;
        let vision = load_safetensors_bytes(&read(&vision_p)?, &vision_p.display().to_string(), &dev)?;
        let conn = load_safetensors_bytes(&read(&conn_p)?, &conn_p.display().to_string(), &dev)?;
        let text = LoadedTextModel::load(&text_p)?;
        Self::from_parts(&vision, &conn, text, &conn_p.display().to_string(), &config_path.display().to_string())
    }

    /// Builds from loaded parts (no file system: also for wasm).
    pub fn from_parts(
        vision: &Weights,
        connector: &Weights,
        text: LoadedTextModel,
        connector_desc: &str,
        source: &str,
    ) -> Result<Self, ModelError> {
        let d = text.config.hidden_size;
        check_connector(connector, d, connector_desc)?;
        let vb = connector.var_builder(&Device::Cpu);
        let connector = Connector::mlp2x(&vb, FEATURES, d, "gelu", true)?;
        Ok(Self { vision: EfficientNetLite0::new(vision)?, connector, text, source: source.to_string() })
    }

    /// The text model (for the lenses).
    pub fn text_model(&self) -> &TextModel {
        &self.text.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.text.tokenizer
    }

    /// The model fingerprint of the text side (equal to a SmolLM2 bank's).
    pub fn fingerprint(&self) -> Result<String, ModelError> {
        self.text.fingerprint()
    }

    /// Resizes to 224×224 (bicubic, Pillow-exact) unless already that size.
    pub fn resize_input(image: &RgbImage) -> Result<RgbImage, ModelError> {
        let s = INPUT_SIZE as u32;
        if (image.width, image.height) == (s, s) {
            return Ok(image.clone());
        }
        resize(image, s, s, Filter::Bicubic).map_err(|e| ModelError::Input(format!("image: {e}")))
    }

    /// Each grid cell's rectangle in `image` (row-major, one per visual token).
    pub fn patch_geometry(image: &RgbImage) -> Vec<PatchGeometry> {
        let (sx, sy) = (image.width as f32 / GRID as f32, image.height as f32 / GRID as f32);
        (0..N_VISUAL)
            .map(|k| {
                let (r, c) = ((k / GRID) as u32, (k % GRID) as u32);
                PatchGeometry {
                    tile: 0,
                    row: r,
                    col: c,
                    rect: [c as f32 * sx, r as f32 * sy, (c + 1) as f32 * sx, (r + 1) as f32 * sy],
                }
            })
            .collect()
    }

    /// The vision encoder's input for `image`: resized to 224×224 and preprocessed,
    /// `[3, 224, 224]` CHW.
    pub fn pixels(image: &RgbImage) -> Result<Vec<f32>, ModelError> {
        preprocess(&Self::resize_input(image)?.data)
    }

    /// EfficientNet features `[49, 1280]` and each cell's rectangle in the
    /// original image.
    pub fn vision_features(&self, image: &RgbImage) -> Result<(Vec<f32>, Vec<PatchGeometry>), ModelError> {
        let f = self.vision.features(&Self::pixels(image)?)?;
        Ok((f, Self::patch_geometry(image)))
    }

    /// Everything but the networks for `image` with the fixed description prompt: the
    /// pixels, the token ids (placeholders in the visual rows), the visual rows and their
    /// geometry. Another compute path (`crate::backend::wgsl_controlled`) runs the vision
    /// encoder, the connector and the decoder on this.
    pub fn prepare(&self, image: &RgbImage) -> Result<ControlledPrepared, ModelError> {
        let (pre, suf) = self.prompt_ids()?;
        let mut token_ids = pre.clone();
        token_ids.extend(std::iter::repeat_n(PLACEHOLDER, N_VISUAL));
        token_ids.extend_from_slice(&suf);
        Ok(ControlledPrepared {
            pixels: Self::pixels(image)?,
            token_ids,
            visual_rows: (pre.len()..pre.len() + N_VISUAL).collect(),
            patches: Self::patch_geometry(image),
        })
    }

    /// Visual tokens `[49, d]` from EfficientNet features `[49, 1280]`.
    pub fn visual_tokens(&self, features: &[f32]) -> Result<Tensor, ModelError> {
        if features.len() != N_VISUAL * FEATURES {
            return Err(ModelError::Input(format!(
                "expected {N_VISUAL}x{FEATURES} features, got {} values",
                features.len()
            )));
        }
        let x = Tensor::from_slice(features, (N_VISUAL, FEATURES), &Device::Cpu)?;
        self.connector.forward(&x)
    }

    /// Token ids of the prompt pieces: (prefix, suffix).
    pub fn prompt_ids(&self) -> Result<(Vec<u32>, Vec<u32>), ModelError> {
        Ok((self.tokenizer().encode(PREFIX)?, self.tokenizer().encode(SUFFIX)?))
    }

    /// Input embeddings `[T, d]` of prefix + visual tokens + suffix + `extra` ids,
    /// the token ids (placeholders in the visual rows) and the visual rows.
    fn embeds(&self, visual: &Tensor, extra: &[u32]) -> Result<(Tensor, Vec<u32>, Vec<usize>), ModelError> {
        let (pre, suf) = self.prompt_ids()?;
        let text = self.text_model();
        let mut tail = suf;
        tail.extend_from_slice(extra);
        let e_pre = text.embed_tokens(&pre)?; // [P, d]
        let e_tail = text.embed_tokens(&tail)?; // [S, d]
        let embeds = Tensor::cat(&[&e_pre, visual, &e_tail], 0)?; // [P + 49 + S, d]
        let mut ids = pre.clone();
        ids.extend(std::iter::repeat_n(PLACEHOLDER, N_VISUAL));
        ids.extend_from_slice(&tail);
        let rows = (pre.len()..pre.len() + N_VISUAL).collect();
        Ok((embeds, ids, rows))
    }

    /// The LLM's input for `image` with the fixed description prompt: embeddings with the
    /// visual tokens in place, token ids (placeholders in the visual rows), visual rows and
    /// patch geometry. Any compute path runs the decoder on this.
    pub fn input(&self, image: &RgbImage) -> Result<VlmInput, ModelError> {
        let (f, patches) = self.vision_features(image)?;
        let visual = self.visual_tokens(&f)?;
        let (embeds, token_ids, visual_rows) = self.embeds(&visual, &[])?;
        Ok(VlmInput {
            token_ids,
            embeds: embeds.flatten_all()?.to_vec1::<f32>()?,
            hidden_size: self.text.config.hidden_size,
            visual_rows,
            patches,
        })
    }

    /// Hidden states of every LLM layer for `image` with the fixed
    /// description prompt, visual rows and patch geometry included.
    pub fn hidden_states(&self, image: &RgbImage) -> Result<HiddenStates, ModelError> {
        let input = self.input(image)?;
        let embeds = Tensor::from_slice(&input.embeds, (input.num_tokens(), input.hidden_size), &Device::Cpu)?;
        let states = self.text_model().forward_embeds(&embeds)?;
        Ok(input.into_hidden_states(states_to_vecs(&states)?))
    }

    /// PNG / JPEG bytes → hidden states (decoding bounded by
    /// [`crate::image::decode`]).
    pub fn hidden_states_from_bytes(&self, bytes: &[u8]) -> crate::Result<HiddenStates> {
        let img = crate::image::decode(bytes)?;
        Ok(self.hidden_states(&img)?)
    }

    /// Greedy caption of `image` (at most `max_new` tokens; stops at `<|im_end|>`).
    /// Recomputes the whole sequence per token (no KV cache): fine for
    /// short captions on the CLI.
    pub fn caption(&self, image: &RgbImage, max_new: usize) -> Result<String, ModelError> {
        let (f, _) = self.vision_features(image)?;
        let visual = self.visual_tokens(&f)?;
        let end = self.tokenizer().encode(END)?;
        let mut out: Vec<u32> = Vec::new();
        for _ in 0..max_new.min(256) {
            let (embeds, _, _) = self.embeds(&visual, &out)?;
            let states = self.text_model().forward_embeds(&embeds)?;
            let last = states.last().ok_or_else(|| ModelError::Input("the model returned no states".into()))?;
            let t = last.dim(0)?;
            let logits = self.text_model().lm_head(&last.narrow(0, t - 1, 1)?)?; // [1, V]
            let next = logits.flatten_all()?.argmax(0)?.to_scalar::<u32>()?;
            if end.first() == Some(&next) {
                break;
            }
            out.push(next);
        }
        self.tokenizer().decode(&out, true)
    }
}
