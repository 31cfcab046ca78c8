//! `latentlens hidden-states`: run a text model and write the hidden states of
//! every (or selected) layer to a safetensors file, so anyone can compare with
//! their own reference.
//!
//! Output tensors: `layer.{i}` f32 `[tokens, d]` for each selected layer
//! (`0` = input embeddings, `L` = after the final norm, HF convention),
//! `token_ids` i64 `[tokens]`. Metadata: `format`
//! (`latentlens-hidden-states-v1`), `model`, `fingerprint`, `hidden_size`,
//! `num_states` (L+1), `layers`, `tokens` (JSON list of token texts), `text`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use latentlens::model::LoadedTextModel;

/// Arguments of `latentlens hidden-states`.
#[derive(clap::Args)]
pub struct Args {
    /// A .gguf file, or a directory with config.json + safetensors + tokenizer.json,
    /// or the URL of either (an HF repository URL or any folder URL; fetched once, cached).
    #[arg(long)]
    model: String,
    /// Input text.
    #[arg(long, conflicts_with = "text_file")]
    text: Option<String>,
    /// Read the input text from this file (whole file, one sequence).
    #[arg(long)]
    text_file: Option<PathBuf>,
    /// An image (vision-language models: `--model` is an HF VLM directory);
    /// `--text` is then the prompt (an `<image>` placeholder is prepended if missing).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Layers to write: `all`, or a list like `0,5,10-12`.
    #[arg(long, default_value = "all")]
    layers: String,
    /// Keep GGUF projections quantised in memory (dequantised per matmul: less memory, same numbers).
    #[arg(long)]
    quantized: bool,
    /// Output file (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

/// Parses `all` or `0,5,10-12` against `n` states (`0..n`).
pub fn parse_layers(spec: &str, n: usize) -> anyhow::Result<Vec<usize>> {
    if spec.trim() == "all" {
        return Ok((0..n).collect());
    }
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>()?, b.trim().parse::<usize>()?),
            None => {
                let a = part.parse::<usize>().with_context(|| format!("bad layer `{part}` in --layers"))?;
                (a, a)
            }
        };
        if a > b || b >= n {
            bail!("--layers `{part}`: this model has hidden states 0..={} (0 = embeddings, {} = after the final norm)", n - 1, n - 1);
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        bail!("--layers selects no layer");
    }
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = crate::model_url::resolve(&args.model)?;
    let t0 = std::time::Instant::now();
    let (hs, tokenizer, source, fingerprint, text, load_s, fwd_s) = if let Some(img) = &args.image {
        let vlm = latentlens::model::vlm::load_vlm(&model)
            .with_context(|| format!("--image needs a vision-language model directory; loading {}", model.display()))?;
        let load_s = t0.elapsed().as_secs_f64();
        let bytes = std::fs::read(img).with_context(|| format!("reading the image {}", img.display()))?;
        let prompt = match (&args.text, &args.text_file) {
            (Some(t), None) => t.clone(),
            (None, Some(p)) => std::fs::read_to_string(p).with_context(|| format!("reading --text-file {}", p.display()))?,
            _ => vlm.default_prompt().to_string(),
        };
        let prompt = if prompt.contains("<image>") { prompt } else { format!("<image>{prompt}") };
        let t1 = std::time::Instant::now();
        let hs = vlm.hidden_states_from_bytes(&bytes, &prompt)?;
        let fp = vlm.fingerprint()?;
        (hs, vlm.tokenizer.clone(), vlm.source.clone(), fp, prompt, load_s, t1.elapsed().as_secs_f64())
    } else {
        let text = match (&args.text, &args.text_file) {
            (Some(t), None) => t.clone(),
            (None, Some(p)) => std::fs::read_to_string(p).with_context(|| format!("reading --text-file {}", p.display()))?,
            _ => bail!("give the input as --text TEXT or --text-file FILE"),
        };
        let m = LoadedTextModel::load_with(&model, args.quantized)?;
        let load_s = t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();
        let hs = m.hidden_states_text(&text)?;
        let fwd_s = t1.elapsed().as_secs_f64();
        let fp = m.fingerprint()?;
        (hs, m.tokenizer, m.source, fp, text, load_s, fwd_s)
    };
    let n_states = hs.num_layers();
    let layers = parse_layers(&args.layers, n_states)?;
    let t = hs.num_tokens();
    let d = hs.hidden_size;

    let ids: Vec<u8> = hs.token_ids.iter().flat_map(|&i| (i as i64).to_le_bytes()).collect();
    let mut bufs: Vec<(String, Vec<u8>)> = Vec::with_capacity(layers.len());
    for &l in &layers {
        let data = hs.layers.get(l).context("layer index out of range")?;
        bufs.push((format!("layer.{l}"), bytemuck::cast_slice::<f32, u8>(data).to_vec()));
    }
    let mut views = HashMap::new();
    views.insert("token_ids".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![t], &ids)?);
    for (name, b) in &bufs {
        views.insert(name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![t, d], b)?);
    }
    let tokens: Vec<String> = hs.token_ids.iter().map(|&i| tokenizer.token_text(i).unwrap_or_default()).collect();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "latentlens-hidden-states-v1".to_string());
    meta.insert("model".to_string(), source);
    meta.insert("fingerprint".to_string(), fingerprint);
    if args.image.is_some() {
        meta.insert("visual_rows".to_string(), serde_json::to_string(&hs.visual_rows)?);
        meta.insert("patches".to_string(), serde_json::to_string(&hs.patches)?);
    }
    meta.insert("hidden_size".to_string(), d.to_string());
    meta.insert("weights".to_string(), if args.quantized { "quantized" } else { "f32" }.to_string());
    meta.insert("num_states".to_string(), n_states.to_string());
    meta.insert("layers".to_string(), serde_json::to_string(&layers)?);
    meta.insert("tokens".to_string(), serde_json::to_string(&tokens)?);
    meta.insert("text".to_string(), text);
    safetensors::serialize_to_file(&views, Some(meta), &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{} tokens, {} of {} hidden states (d = {d}) → {}  (load {load_s:.2} s, forward {fwd_s:.3} s)",
        t,
        layers.len(),
        n_states,
        args.out.display()
    );
    Ok(())
}
