//! The WGSL VLM path (`latentlens::backend::wgsl_vision`) on the tiny VLM fixtures
//! (tools/make_tiny_fixtures.py: CLIP + Llama, SigLIP + Qwen2, Idefics3 and SmolVLM with tiled
//! images) against HF transformers' goldens and the candle CPU path: image features (same rows,
//! same order, every tile) and the hidden states of every LLM layer, per-token cosine ≥ 0.9999,
//! max abs error reported. Plus bad input: configs the shaders do not run, refused by field;
//! placeholder / tile mismatches.
#![cfg(feature = "gpu")]

mod common;
#[path = "common/vlm_golden.rs"]
mod vlm_golden;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::gpu_kit;
use vlm_golden::Golden;
use latentlens::backend::wgsl_vision::{HostVlmWeights, WgslVlm};
use latentlens::gpu::forward::ForwardKernels;
use latentlens::image::{decode, Preprocessed};
use latentlens::model::vlm::{load_vlm, Vlm};

const MIN_COS: f64 = 0.9999;

fn fk() -> Option<&'static ForwardKernels> {
    static FK: OnceLock<Option<ForwardKernels>> = OnceLock::new();
    FK.get_or_init(|| gpu_kit::ctx().map(|c| ForwardKernels::new_blocking(c).expect("forward kernels compile")))
        .as_ref()
}

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(name)
}

fn golden(name: &str) -> Golden {
    Golden::parse(
        &std::fs::read(dir(name).join("golden.safetensors")).unwrap(),
        &std::fs::read(dir(name).join("meta.json")).unwrap(),
    )
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

/// Rows of width `d`: asserts the per-row cosine, returns (min cosine, max abs error).
fn compare_rows(got: &[f32], want: &[f32], d: usize, what: &str) -> (f64, f32) {
    assert_eq!(got.len(), want.len(), "{what}: sizes");
    let (mut min_cos, mut max_abs) = (1f64, 0f32);
    for (r, (g, w)) in got.chunks_exact(d).zip(want.chunks_exact(d)).enumerate() {
        let c = cosine(g, w);
        assert!(c >= MIN_COS, "{what}: row {r}: cosine {c}");
        min_cos = min_cos.min(c);
        max_abs = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(max_abs, f32::max);
    }
    (min_cos, max_abs)
}

/// The CPU model, HF's pixel values in our preprocessing's layout, and the goldens.
fn setup(name: &str) -> (Vlm, Preprocessed, Golden) {
    let vlm = load_vlm(&dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let g = golden(name);
    let img = decode(&std::fs::read(dir(name).join("image.png")).unwrap()).unwrap();
    let mut pre = vlm.preprocess(&img).unwrap();
    assert_eq!(pre.pixel_values.len(), g.pixel_values.len(), "{name}: pixel value count");
    pre.pixel_values = g.pixel_values.clone();
    (vlm, pre, g)
}

fn check_fixture(name: &str, tiles: usize) {
    let Some(fk) = fk() else { return };
    let (vlm, pre, g) = setup(name);
    assert_eq!(pre.num_tiles(), tiles, "{name}: tiles");
    let host = HostVlmWeights::load(&dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let gpu = WgslVlm::new(fk, &host).unwrap();

    // image features: HF golden and the CPU path, same rows and geometry
    let (feats, geo) = gpu.image_features_blocking(&pre).unwrap();
    let (shape, want) = &g.image_features;
    let d = *shape.last().unwrap();
    assert_eq!(feats.len(), want.len(), "{name}: image feature count (golden shape {shape:?})");
    let (fc, fa) = compare_rows(&feats, want, d, &format!("{name} image features vs HF"));
    let (cpu_feats, cpu_geo) = vlm.image_features(&pre).unwrap();
    let cpu_feats = cpu_feats.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (cc, ca) = compare_rows(&feats, &cpu_feats, d, &format!("{name} image features vs CPU"));
    assert_eq!(geo, cpu_geo, "{name}: patch geometry");

    // every LLM layer: HF golden and the CPU path
    let hs = gpu.forward_blocking(&g.ids, &pre).unwrap();
    assert_eq!(hs.num_layers(), g.hidden.len(), "{name}: layer count");
    let (mut hc, mut ha) = (1f64, 0f32);
    for (l, (shape, want)) in g.hidden.iter().enumerate() {
        assert_eq!(shape, &vec![hs.num_tokens(), hs.hidden_size], "{name}: layer {l} shape");
        let (c, a) = compare_rows(&hs.layers[l], want, hs.hidden_size, &format!("{name} layer {l} vs HF"));
        hc = hc.min(c);
        ha = ha.max(a);
    }
    let cpu = vlm.forward(&g.ids, &pre).unwrap();
    assert_eq!((&hs.visual_rows, &hs.patches, &hs.token_ids), (&cpu.visual_rows, &cpu.patches, &cpu.token_ids), "{name}: rows");
    let (mut kc, mut ka) = (1f64, 0f32);
    for l in 0..cpu.num_layers() {
        let (c, a) = compare_rows(&hs.layers[l], &cpu.layers[l], hs.hidden_size, &format!("{name} layer {l} vs CPU"));
        kc = kc.min(c);
        ka = ka.max(a);
    }
    eprintln!(
        "WGSL VLM {name} ({tiles} tile(s), {} visual tokens): image features vs HF min cos {fc:.9} max abs {fa:.2e}, vs CPU min cos {cc:.9} max abs {ca:.2e}; \
         hidden states ({} layers × {} tokens) vs HF min cos {hc:.9} max abs {ha:.2e}, vs CPU min cos {kc:.9} max abs {ka:.2e}",
        hs.visual_rows.len(),
        hs.num_layers(),
        hs.num_tokens()
    );
}

#[test]
fn llava_clip_llama_matches_transformers_on_the_gpu() {
    // CLIP: class token, pre_layrnorm, quick_gelu, feature layer -2, class token dropped
    check_fixture("llava_clip_llama", 1);
}

#[test]
fn llava_siglip_qwen2_matches_transformers_on_the_gpu() {
    // SigLIP: patch bias, tanh GELU, last layer, "full"; Qwen2 qkv bias
    check_fixture("llava_siglip_qwen2", 1);
}

#[test]
fn smolvlm_llama_matches_transformers_on_the_gpu() {
    // 3 × 2 tiles + global, post_layernorm, pixel shuffle
    check_fixture("smolvlm_llama", 7);
}

#[test]
fn idefics3_llama_matches_transformers_on_the_gpu() {
    check_fixture("idefics3_llama", 7);
}

#[test]
fn repeated_and_smaller_inputs_reuse_the_pooled_buffers() {
    let Some(fk) = fk() else { return };
    let (_, pre, _) = setup("smolvlm_llama");
    let gpu = WgslVlm::new(fk, &HostVlmWeights::load(&dir("smolvlm_llama")).unwrap()).unwrap();
    let (all, _) = gpu.image_features_blocking(&pre).unwrap();
    // the global tile alone, after the pool was sized for 7: the same rows as the 7th tile
    let per_tile = 3 * pre.width as usize * pre.height as usize;
    let last = pre.pixel_values[6 * per_tile..].to_vec();
    let one = pollster::block_on(gpu.vision().features(&last, 1)).unwrap();
    let n = gpu.vision().tokens_per_tile() * gpu.vision().output_size();
    assert_eq!(one.len(), n);
    let (c, a) = compare_rows(&one, &all[6 * n..], gpu.vision().output_size(), "global tile alone");
    assert!(a <= 1e-5, "tiles must not see each other: {a} (cos {c})");
}

fn config(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir(name).join("config.json")).unwrap()).unwrap()
}

#[test]
fn configs_the_shaders_do_not_run_are_refused_naming_the_field() {
    let w = latentlens::model::weights::load_safetensors_dir(&dir("llava_clip_llama"), &candle_core::Device::Cpu).unwrap();
    // a vision head dim beyond attention.wgsl's 256
    let mut c = config("llava_clip_llama");
    c["vision_config"]["hidden_size"] = 600.into();
    c["vision_config"]["num_attention_heads"] = 2.into();
    let e = HostVlmWeights::from_weights(&c, &w, "test").unwrap_err().to_string();
    assert!(e.contains("vision_config.num_attention_heads") && e.contains("300"), "{e}");
    // the same for the text model
    let mut c = config("llava_clip_llama");
    c["text_config"]["head_dim"] = 512.into();
    let e = HostVlmWeights::from_weights(&c, &w, "test").unwrap_err().to_string();
    assert!(e.contains("text_config.head_dim"), "{e}");
    // a projector activation without a kernel
    let mut c = config("llava_clip_llama");
    c["projector_hidden_act"] = "relu".into();
    let e = HostVlmWeights::from_weights(&c, &w, "test").unwrap_err().to_string();
    assert!(e.contains("projector_hidden_act") && e.contains("relu"), "{e}");
    // not a VLM at all
    let e = HostVlmWeights::from_weights(&serde_json::json!({"model_type": "bert"}), &w, "test").unwrap_err().to_string();
    assert!(e.contains("supported VLMs"), "{e}");
    // weights of another family: the missing tensor is named
    let mut c = config("smolvlm_llama");
    c["text_config"] = config("llava_clip_llama")["text_config"].clone();
    let e = HostVlmWeights::from_weights(&c, &w, "test").unwrap_err().to_string();
    assert!(e.contains("model.vision_model.") && e.contains("embeddings.patch_embedding.weight"), "{e}");
}

#[test]
fn mismatched_placeholders_and_tiles_are_errors() {
    let Some(fk) = fk() else { return };
    let (_, pre, g) = setup("llava_clip_llama");
    let gpu = WgslVlm::new(fk, &HostVlmWeights::load(&dir("llava_clip_llama")).unwrap()).unwrap();
    let e = gpu.forward_blocking(&g.ids[..10], &pre).unwrap_err().to_string();
    assert!(e.contains("image placeholders") && e.contains("16 visual tokens"), "{e}");
    let mut two = pre.clone();
    two.pixel_values.extend(pre.pixel_values.clone());
    two.tiles.push(two.tiles[0]);
    let e = gpu.image_features_blocking(&two).unwrap_err().to_string();
    assert!(e.contains("LLaVA takes one tile"), "{e}");
    let e = pollster::block_on(gpu.vision().features(&pre.pixel_values[1..], 1)).unwrap_err().to_string();
    assert!(e.contains("pixel values") && e.contains("image_size"), "{e}");
    let mut small = pre.clone();
    small.width = 16;
    let e = gpu.image_features_blocking(&small).unwrap_err().to_string();
    assert!(e.contains("vision_config.image_size"), "{e}");
}
