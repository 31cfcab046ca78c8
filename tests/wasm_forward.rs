//! The WGSL forward in the browser (wasm-bindgen-test, headless Chromium with WebGPU on
//! SwiftShader; `./build.sh test-wasm`): for the tiny VLM fixtures, (1) the LLM decoder on our
//! WGSL kernels from the embeddings our CPU path builds out of HF's own pixel values and ids,
//! and (2) the whole VLM (vision tower, connector, decoder) on the WGSL kernels; every layer
//! matches the HF transformers goldens.
#![cfg(target_arch = "wasm32")]

#[path = "common/vlm_golden.rs"]
mod vlm_golden;

use candle_core::Device;
use latentlens::backend::wgsl::{HostTextWeights, WgslTextModel};
use latentlens::backend::wgsl_vision::{HostVlmWeights, WgslVlm};
use latentlens::gpu::forward::ForwardKernels;
use latentlens::gpu::GpuContext;
use latentlens::image::decode;
use latentlens::model::tokenizer::Tokenizer;
use latentlens::model::vlm::{text_weights_prefix, Vlm};
use latentlens::model::weights::load_safetensors_bytes;
use vlm_golden::Golden;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! fixture_file {
    ($name:literal, $f:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/", $name, "/", $f))
    };
}

/// config, processor config, tokenizer, weights, golden, golden meta, image.
macro_rules! files {
    ($name:literal) => {
        [
            fixture_file!($name, "config.json"),
            fixture_file!($name, "processor_config.json"),
            fixture_file!($name, "tokenizer.json"),
            fixture_file!($name, "model.safetensors"),
            fixture_file!($name, "golden.safetensors"),
            fixture_file!($name, "meta.json"),
            fixture_file!($name, "image.png"),
        ]
    };
}

async fn check(name: &str, files: [&[u8]; 7]) {
    let [config, processor, tokenizer, model, golden, meta, image] = files;
    let dev = Device::Cpu;
    let cfg: serde_json::Value = serde_json::from_slice(config).unwrap();
    let proc_cfg: serde_json::Value = serde_json::from_slice(processor).unwrap();
    let tok = Tokenizer::from_json_bytes(tokenizer).unwrap();
    let w = load_safetensors_bytes(model, name, &dev).unwrap();
    let vlm = Vlm::from_parts(&cfg, w.var_builder(&dev), &proc_cfg, tok, name).unwrap();
    let g = Golden::parse(golden, meta);
    let mut pre = vlm.preprocess(&decode(image).unwrap()).unwrap();
    pre.pixel_values = g.pixel_values.clone();
    let input = vlm.input_embeds(&g.ids, &pre).unwrap();

    let ctx = GpuContext::new().await.unwrap_or_else(|e| panic!("no WebGPU context in the browser: {e}"));
    let fk = ForwardKernels::new(&ctx).await.unwrap();
    let prefix = text_weights_prefix(w.tensors.keys()).unwrap_or_else(|| panic!("{name}: no language model prefix"));
    let host = HostTextWeights::from_weights(vlm.text_model().config(), &w, &prefix, name).unwrap();
    let gpu = WgslTextModel::new(&fk, &host).unwrap();
    let layers = gpu.forward_embeds(&input.embeds, input.num_tokens()).await.unwrap();
    let (t, d) = (input.num_tokens(), input.hidden_size);
    let (cos, abs) = compare(name, "decoder", &layers, t, d, &g);
    console_log!("wasm32 WGSL decoder on {}: {name}: {} layers x {t} tokens vs HF: min cosine {cos:.7}, max abs {abs:e}", ctx.adapter_info().name, layers.len());

    // the whole VLM on the GPU: vision tower, connector, decoder
    let host = HostVlmWeights::from_weights(&cfg, &w, name).unwrap();
    let vlm_gpu = WgslVlm::new(&fk, &host).unwrap();
    let hs = vlm_gpu.forward(&g.ids, &pre).await.unwrap();
    assert_eq!(hs.visual_rows, input.visual_rows, "{name}: visual rows");
    let (cos, abs) = compare(name, "whole VLM", &hs.layers, t, d, &g);
    console_log!("wasm32 WGSL whole VLM on {}: {name}: vs HF: min cosine {cos:.7}, max abs {abs:e}", ctx.adapter_info().name);
}

/// Every layer and token against the HF golden: (min cosine, max abs).
fn compare(name: &str, what: &str, layers: &[Vec<f32>], t: usize, d: usize, g: &Golden) -> (f64, f32) {
    assert_eq!(layers.len(), g.hidden.len(), "{name} {what}: layer count");
    let (mut worst, mut min_cos) = (0f32, 1f64);
    for (l, (shape, want)) in g.hidden.iter().enumerate() {
        assert_eq!(shape, &vec![t, d], "{name}: layer {l} shape");
        for i in 0..t {
            let (a, b) = (&layers[l][i * d..(i + 1) * d], &want[i * d..(i + 1) * d]);
            let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let cos = dot / (na * nb).max(1e-30);
            assert!(cos >= 0.9999, "{name} {what}: layer {l} token {i}: cosine {cos}");
            min_cos = min_cos.min(cos);
            worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(worst, f32::max);
        }
    }
    assert!(worst <= 5e-4, "{name} {what}: max abs diff {worst}");
    (min_cos, worst)
}

#[wasm_bindgen_test]
async fn llava_clip_llama_on_webgpu_decoder_and_whole_vlm_match_transformers() {
    check("llava_clip_llama", files!("llava_clip_llama")).await;
}

#[wasm_bindgen_test]
async fn llava_siglip_qwen2_on_webgpu_decoder_and_whole_vlm_match_transformers() {
    check("llava_siglip_qwen2", files!("llava_siglip_qwen2")).await;
}

#[wasm_bindgen_test]
async fn smolvlm_llama_on_webgpu_decoder_and_whole_vlm_match_transformers() {
    check("smolvlm_llama", files!("smolvlm_llama")).await;
}
