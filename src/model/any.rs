//! Any vision-language model the runtime loads: an HF checkpoint ([`Vlm`]: LLaVA,
//! Idefics3 / SmolVLM) or this project's controlled VLM ([`ControlledVlm`]). The lenses and
//! the browser need only what is here: the text model, the tokenizer, the fingerprint, and
//! the LLM's input for an image ([`VlmInput`]), which any compute path (the CPU, the WGSL
//! kernels) turns into hidden states.

use candle_core::{Device, Tensor};

use super::controlled::{self, ControlledVlm};
use super::llama::{states_to_vecs, TextModel};
use super::tokenizer::Tokenizer;
use super::vlm::{Vlm, VlmInput, VlmModel};
use super::{HiddenStates, ModelError};
use crate::image::RgbImage;

pub use super::vlm::DEFAULT_PROMPT;

/// An HF VLM or the controlled VLM.
#[derive(Debug, Clone)]
pub enum AnyVlm {
    /// LLaVA or Idefics3 / SmolVLM.
    Hf(Box<Vlm>),
    /// The controlled VLM (EfficientNet-Lite0 → trained connector → SmolLM2).
    Controlled(Box<ControlledVlm>),
}

impl AnyVlm {
    /// `"llava"`, `"idefics3"` or `"controlled"`.
    pub fn family(&self) -> &'static str {
        match self {
            AnyVlm::Hf(v) => match v.model {
                VlmModel::Llava(_) => "llava",
                VlmModel::Idefics3(_) => "idefics3",
            },
            AnyVlm::Controlled(_) => "controlled",
        }
    }

    /// The LLM (embedding matrix, final norm and unembedding for the lenses).
    pub fn text_model(&self) -> &TextModel {
        match self {
            AnyVlm::Hf(v) => v.text_model(),
            AnyVlm::Controlled(c) => c.text_model(),
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        match self {
            AnyVlm::Hf(v) => &v.tokenizer,
            AnyVlm::Controlled(c) => c.tokenizer(),
        }
    }

    /// Fingerprint of the text side (equal to a bank's built from the same LLM).
    pub fn fingerprint(&self) -> Result<String, ModelError> {
        match self {
            AnyVlm::Hf(v) => v.fingerprint(),
            AnyVlm::Controlled(c) => c.fingerprint(),
        }
    }

    /// The prompt the model is run with when the caller gives none.
    pub fn default_prompt(&self) -> String {
        match self {
            AnyVlm::Hf(_) => DEFAULT_PROMPT.to_string(),
            AnyVlm::Controlled(_) => controlled::SUFFIX.trim_start_matches('\n').split("<|im_end|>").next().unwrap_or("").to_string(),
        }
    }

    /// Whether [`AnyVlm::input`] uses the caller's prompt (the controlled VLM always uses
    /// the instruction it was trained with).
    pub fn takes_prompt(&self) -> bool {
        matches!(self, AnyVlm::Hf(_))
    }

    /// The LLM's input for `image` and `prompt` (an `<image>` placeholder is prepended when
    /// missing; ignored by the controlled VLM) and the number of image tiles.
    pub fn input(&self, image: &RgbImage, prompt: Option<&str>) -> Result<(VlmInput, usize), ModelError> {
        match self {
            AnyVlm::Hf(v) => {
                let (ids, pre) = v.prepare(image, prompt)?;
                Ok((v.input_embeds(&ids, &pre)?, pre.num_tiles()))
            }
            AnyVlm::Controlled(c) => Ok((c.input(image)?, 1)),
        }
    }

    /// The decoder on the CPU (candle) for an input from [`AnyVlm::input`]: `L + 1`
    /// row-major `[T, d]` states.
    pub fn decode_cpu(&self, input: &VlmInput) -> Result<Vec<Vec<f32>>, ModelError> {
        let text = self.text_model();
        let embeds = Tensor::from_slice(&input.embeds, (input.num_tokens(), input.hidden_size), &Device::Cpu)?;
        states_to_vecs(&text.forward_embeds(&embeds)?)
    }

    /// Image (+ prompt) → hidden states on the CPU.
    pub fn hidden_states(&self, image: &RgbImage, prompt: Option<&str>) -> Result<HiddenStates, ModelError> {
        let (input, _) = self.input(image, prompt)?;
        let layers = self.decode_cpu(&input)?;
        Ok(input.into_hidden_states(layers))
    }
}
