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

/// Random tower + connector tensors at real dimensions under `vp` / `cp` (HF names), with
/// magnitudes that keep activations O(1): weights ~ U(±1/√fan_in), norms ≈ 1.
fn random_vision_weights(rng: &mut gpu_kit::Rng, v: &serde_json::Value, clip: bool, vp: &str, connector: &[(String, Vec<usize>)]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let u = |k: &str| v[k].as_u64().unwrap() as usize;
    let (d, inter, layers, img, p) = (u("hidden_size"), u("intermediate_size"), u("num_hidden_layers"), u("image_size"), u("patch_size"));
    let g = img / p;
    let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let n = shape.iter().product();
        let vals = rng.vec(n).into_iter().map(|x| offset + scale * x).collect();
        out.push((name, shape, vals));
    };
    let lin = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    add(format!("{vp}embeddings.patch_embedding.weight"), vec![d, 3, p, p], lin(3 * p * p), 0.0);
    if clip {
        add(format!("{vp}embeddings.class_embedding"), vec![d], 0.5, 0.0);
        add(format!("{vp}embeddings.position_embedding.weight"), vec![g * g + 1, d], 0.1, 0.0);
        add(format!("{vp}pre_layrnorm.weight"), vec![d], 0.1, 1.0);
        add(format!("{vp}pre_layrnorm.bias"), vec![d], 0.05, 0.0);
    } else {
        add(format!("{vp}embeddings.patch_embedding.bias"), vec![d], 0.05, 0.0);
        add(format!("{vp}embeddings.position_embedding.weight"), vec![g * g, d], 0.1, 0.0);
    }
    add(format!("{vp}post_layernorm.weight"), vec![d], 0.1, 1.0);
    add(format!("{vp}post_layernorm.bias"), vec![d], 0.05, 0.0);
    for i in 0..layers {
        let l = format!("{vp}encoder.layers.{i}.");
        for n in ["layer_norm1", "layer_norm2"] {
            add(format!("{l}{n}.weight"), vec![d], 0.1, 1.0);
            add(format!("{l}{n}.bias"), vec![d], 0.05, 0.0);
        }
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            // q and k larger than 1/√d so that attention is not uniform
            let s = if n == "q_proj" || n == "k_proj" { 3.0 * lin(d) } else { lin(d) };
            add(format!("{l}self_attn.{n}.weight"), vec![d, d], s, 0.0);
            add(format!("{l}self_attn.{n}.bias"), vec![d], 0.05, 0.0);
        }
        add(format!("{l}mlp.fc1.weight"), vec![inter, d], lin(d), 0.0);
        add(format!("{l}mlp.fc1.bias"), vec![inter], 0.05, 0.0);
        add(format!("{l}mlp.fc2.weight"), vec![d, inter], lin(inter), 0.0);
        add(format!("{l}mlp.fc2.bias"), vec![d], 0.05, 0.0);
    }
    for (name, shape) in connector {
        let fan_in = if shape.len() == 2 { shape[1] } else { 1 };
        add(name.clone(), shape.clone(), if shape.len() == 2 { lin(fan_in) } else { 0.05 }, 0.0);
    }
    out
}

/// The fixture's weights with its vision tower and connector replaced (names starting with
/// one of `replace`) by `fresh`.
fn swap_weights(name: &str, replace: &[&str], fresh: Vec<(String, Vec<usize>, Vec<f32>)>) -> latentlens::model::weights::Weights {
    let dev = candle_core::Device::Cpu;
    let mut w = latentlens::model::weights::load_safetensors_dir(&dir(name), &dev).unwrap();
    w.tensors.retain(|k, _| !replace.iter().any(|p| k.starts_with(p)));
    for (n, shape, vals) in fresh {
        w.tensors.insert(n, candle_core::Tensor::from_vec(vals, shape, &dev).unwrap());
    }
    w
}

#[test]
fn real_size_clip_l_14_tower_and_projector_match_the_cpu_path() {
    // CLIP ViT-L/14 dimensions at 224 px (LLaVA-1.0's tower; 257 tokens: two 256-key attention
    // chunks, head dim 64), 2 layers, feature layer -2, class token dropped; mlp2x_gelu
    // projector. (336 px works the same and takes 2.5× as long on lavapipe.)
    let Some(fk) = fk() else { return };
    let mut cfg = config("llava_clip_llama");
    let v = serde_json::json!({"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
        "num_hidden_layers": 2, "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5});
    cfg["vision_config"] = v.clone();
    let dt = cfg["text_config"]["hidden_size"].as_u64().unwrap() as usize;
    let conn = vec![
        ("multi_modal_projector.linear_1.weight".to_string(), vec![dt, 1024]),
        ("multi_modal_projector.linear_1.bias".to_string(), vec![dt]),
        ("multi_modal_projector.linear_2.weight".to_string(), vec![dt, dt]),
        ("multi_modal_projector.linear_2.bias".to_string(), vec![dt]),
    ];
    let mut rng = gpu_kit::Rng(21);
    let fresh = random_vision_weights(&mut rng, &v, true, "vision_tower.", &conn);
    let w = swap_weights("llava_clip_llama", &["vision_tower.", "multi_modal_projector."], fresh);
    let lc = latentlens::model::llava::LlavaConfig::from_hf_json(&cfg).unwrap();
    let cpu = latentlens::model::llava::Llava::new(&lc, w.var_builder(&candle_core::Device::Cpu)).unwrap();
    let host = latentlens::backend::wgsl_vision::HostVisionWeights::from_llava(&lc, &w, "random CLIP-L").unwrap();
    assert_eq!(host.layers.len(), 1, "only the layers up to the feature layer are loaded");
    let gpu = latentlens::backend::wgsl_vision::WgslVisionModel::new(fk, &host).unwrap();
    let px = rng.vec(3 * 224 * 224);
    let t = std::time::Instant::now();
    let got = pollster::block_on(gpu.features(&px, 1)).unwrap();
    let gpu_s = t.elapsed().as_secs_f64();
    let want = cpu.image_features(&candle_core::Tensor::from_slice(&px, (3, 224, 224), &candle_core::Device::Cpu).unwrap()).unwrap();
    assert_eq!(want.dims(), &[256, dt]);
    let (c, a) = compare_rows(&got, &want.flatten_all().unwrap().to_vec1::<f32>().unwrap(), dt, "CLIP-L/14");
    eprintln!("real-size CLIP-L/14 at 224 px (1 layer + projector, 256 tokens) WGSL vs CPU: min cos {c:.9}, max abs {a:.2e} ({gpu_s:.2} s on the GPU)");
}

#[test]
fn real_size_smolvlm_siglip_tiles_match_the_cpu_path() {
    // SmolVLM-256M's SigLIP dimensions (d 768, head dim 64, MLP 3072, patch 16) on 256 px tiles
    // (256 tokens each; the model's 512 px take 4× as long on lavapipe), 2 tiles batched,
    // pixel shuffle by 4
    let Some(fk) = fk() else { return };
    let mut cfg = config("smolvlm_llama");
    let v = serde_json::json!({"model_type": "smolvlm_vision", "hidden_size": 768, "intermediate_size": 3072,
        "num_hidden_layers": 1, "num_attention_heads": 12, "image_size": 256, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6});
    cfg["vision_config"] = v.clone();
    cfg["scale_factor"] = 4.into();
    let dt = cfg["text_config"]["hidden_size"].as_u64().unwrap() as usize;
    let conn = vec![("model.connector.modality_projection.proj.weight".to_string(), vec![dt, 768 * 16])];
    let mut rng = gpu_kit::Rng(22);
    let fresh = random_vision_weights(&mut rng, &v, false, "model.vision_model.", &conn);
    let w = swap_weights("smolvlm_llama", &["model.vision_model.", "model.connector."], fresh);
    let ic = latentlens::model::idefics3::Idefics3Config::from_hf_json(&cfg).unwrap();
    let cpu = latentlens::model::idefics3::Idefics3::new(&ic, w.var_builder(&candle_core::Device::Cpu)).unwrap();
    let host = latentlens::backend::wgsl_vision::HostVisionWeights::from_idefics3(&ic, &w, "random SigLIP").unwrap();
    let gpu = latentlens::backend::wgsl_vision::WgslVisionModel::new(fk, &host).unwrap();
    let tiles = 2;
    let px = rng.vec(tiles * 3 * 256 * 256);
    let t = std::time::Instant::now();
    let got = pollster::block_on(gpu.features(&px, tiles)).unwrap();
    let gpu_s = t.elapsed().as_secs_f64();
    let mut want = Vec::new();
    for i in 0..tiles {
        let tile = candle_core::Tensor::from_slice(&px[i * 3 * 256 * 256..(i + 1) * 3 * 256 * 256], (3, 256, 256), &candle_core::Device::Cpu).unwrap();
        want.extend(cpu.tile_features(&tile).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    assert_eq!(want.len(), tiles * 16 * dt);
    let (c, a) = compare_rows(&got, &want, dt, "SigLIP/256");
    eprintln!("real-size SmolVLM SigLIP at 256 px (2 tiles × 256 tokens, 1 layer, shuffle 4) WGSL vs CPU: min cos {c:.9}, max abs {a:.2e} ({gpu_s:.2} s on the GPU)");
}
