//! The CPU runtime compiled to wasm32 in headless Chromium
//! (wasm-bindgen-test; `./build.sh test-wasm`): the tiny VLM fixtures, loaded
//! from bytes as a page would, match the HF transformers goldens at every
//! layer and token with the native tests' tolerance (1e-4), from HF's own
//! inputs and end to end from the photo.
#![cfg(target_arch = "wasm32")]

#[path = "common/vlm_golden.rs"]
mod vlm_golden;

use candle_core::Device;
use latentlens::image::decode;
use latentlens::model::tokenizer::Tokenizer;
use latentlens::model::vlm::Vlm;
use latentlens::model::weights::load_safetensors_bytes;
use vlm_golden::{max_abs, Golden};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const TOL: f32 = 1e-4;

struct Fixture {
    name: &'static str,
    config: &'static [u8],
    processor: &'static [u8],
    tokenizer: &'static [u8],
    model: &'static [u8],
    golden: &'static [u8],
    meta: &'static [u8],
    image: &'static [u8],
}

macro_rules! fixture {
    ($name:literal) => {
        Fixture {
            name: $name,
            config: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/", $name, "/config.json")),
            processor: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/", $name, "/processor_config.json")),
            tokenizer: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/", $name, "/tokenizer.json")),
            model: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/", $name, "/model.safetensors")),
            golden: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/", $name, "/golden.safetensors")),
            meta: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/", $name, "/meta.json")),
            image: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/", $name, "/image.png")),
        }
    };
}

fn load(f: &Fixture) -> Vlm {
    let dev = Device::Cpu;
    let cfg: serde_json::Value = serde_json::from_slice(f.config).unwrap();
    let proc_cfg: serde_json::Value = serde_json::from_slice(f.processor).unwrap();
    let tok = Tokenizer::from_json_bytes(f.tokenizer).unwrap();
    let w = load_safetensors_bytes(f.model, f.name, &dev).unwrap();
    Vlm::from_parts(&cfg, w.var_builder(&dev), &proc_cfg, tok, f.name).unwrap_or_else(|e| panic!("{}: {e}", f.name))
}

/// Every layer against the golden; the worst difference.
fn compare(name: &str, layers: &[Vec<f32>], tokens: usize, d: usize, g: &Golden) -> f32 {
    assert_eq!(layers.len(), g.hidden.len(), "{name}: layer count");
    let mut worst = 0f32;
    for (l, (shape, want)) in g.hidden.iter().enumerate() {
        assert_eq!(shape, &vec![tokens, d], "{name}: layer {l} shape");
        let diff = max_abs(&layers[l], want);
        assert!(diff <= TOL, "{name}: layer {l} max abs diff {diff} > {TOL}");
        worst = worst.max(diff);
    }
    worst
}

fn check(f: Fixture) {
    let vlm = load(&f);
    let g = Golden::parse(f.golden, f.meta);
    let img = decode(f.image).unwrap();
    // From HF's pixel values and ids: the model alone.
    let mut pre = vlm.preprocess(&img).unwrap();
    assert_eq!(pre.pixel_values.len(), g.pixel_values.len(), "{}: pixel value count", f.name);
    let ours_pixels = std::mem::replace(&mut pre.pixel_values, g.pixel_values.clone());
    let dp = max_abs(&ours_pixels, &g.pixel_values);
    let (feats, _) = vlm.image_features(&pre).unwrap();
    assert_eq!(feats.dims().to_vec(), g.image_features.0);
    let df = max_abs(&feats.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &g.image_features.1);
    assert!(df <= TOL, "{}: image features max abs diff {df}", f.name);
    let hs = vlm.forward(&g.ids, &pre).unwrap();
    let dh = compare(f.name, &hs.layers, hs.num_tokens(), hs.hidden_size, &g);
    // End to end: photo bytes + prompt through our preprocessing and tokenizer.
    let hs2 = vlm.hidden_states_from_bytes(f.image, &g.prompt).unwrap();
    assert_eq!(hs2.token_ids, g.ids, "{}: input ids differ from the HF processor's", f.name);
    let de = compare(f.name, &hs2.layers, hs2.num_tokens(), hs2.hidden_size, &g);
    console_log!(
        "wasm32 {}: {} layers x {} tokens; max|ours-HF| image features {df:e}, hidden states {dh:e}, end to end {de:e} (pixels {dp:e})",
        f.name,
        hs.num_layers(),
        hs.num_tokens()
    );
}

#[wasm_bindgen_test]
fn llava_clip_llama_matches_transformers_in_the_browser() {
    check(fixture!("llava_clip_llama"));
}

#[wasm_bindgen_test]
fn llava_siglip_qwen2_matches_transformers_in_the_browser() {
    check(fixture!("llava_siglip_qwen2"));
}

#[wasm_bindgen_test]
fn smolvlm_llama_matches_transformers_in_the_browser() {
    check(fixture!("smolvlm_llama"));
}
