//! Loading side of `inspect` for vision-language models (HF directories of
//! the LLaVA and Idefics3/SmolVLM families).

use std::path::Path;

use anyhow::Context;
use latentlens::model::vlm::load_vlm;

use crate::inspect::{image_inputs, model_parts, Inputs, Model};

/// Loads the VLM in `dir`, runs `image` with `prompt` (an `<image>`
/// placeholder is prepended when the prompt has none).
pub(crate) fn load(dir: &Path, image: &Path, prompt: &str) -> anyhow::Result<(Model, Inputs)> {
    if !dir.is_dir() {
        anyhow::bail!(
            "--model {}: an image needs a vision-language model directory (config.json, safetensors, tokenizer.json, preprocessor_config.json)",
            dir.display()
        );
    }
    let vlm = load_vlm(dir).with_context(|| format!("loading the VLM {}", dir.display()))?;
    let bytes = std::fs::read(image).with_context(|| format!("reading the image {}", image.display()))?;
    let prompt = if prompt.contains("<image>") { prompt.to_string() } else { format!("<image>{prompt}") };
    let hs = vlm.hidden_states_from_bytes(&bytes, &prompt).with_context(|| format!("running {}", image.display()))?;
    let text = vlm.text_model().clone();
    let fingerprint = vlm.fingerprint()?;
    Ok((model_parts(text, vlm.tokenizer.clone(), vlm.source.clone(), fingerprint), image_inputs(hs)))
}
