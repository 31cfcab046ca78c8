//! VLM parity with HF transformers 5.x on tiny random models
//! (tools/make_tiny_fixtures.py): every LLM layer, every token, within
//! 1e-4 (f32 weights); visual rows and patch geometry; and the full path
//! from the PNG photo + prompt (our preprocessing, prompt expansion and
//! tokenization) to the same hidden states.

use std::path::PathBuf;

use latentlens::image::decode;
use latentlens::model::vlm::{load_vlm, Vlm};
use latentlens::model::HiddenStates;
use safetensors::SafeTensors;

const TOL: f32 = 1e-4;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(name)
}

struct Golden {
    ids: Vec<u32>,
    pixel_values: Vec<f32>,
    image_features: (Vec<usize>, Vec<f32>),
    hidden: Vec<(Vec<usize>, Vec<f32>)>,
    prompt: String,
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("golden {name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    (t.shape().to_vec(), t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn golden(name: &str) -> Golden {
    let bytes = std::fs::read(dir(name).join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("input_ids").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::I64);
    let ids = t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect();
    let mut hidden = Vec::new();
    while st.tensor(&format!("hidden_states.{}", hidden.len())).is_ok() {
        hidden.push(f32s(&st, &format!("hidden_states.{}", hidden.len())));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir(name).join("meta.json")).unwrap()).unwrap();
    Golden {
        ids,
        pixel_values: f32s(&st, "pixel_values").1,
        image_features: f32s(&st, "image_features"),
        hidden,
        prompt: meta["prompt"].as_str().unwrap().to_string(),
    }
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Compares every layer; returns the max abs difference over all of them.
fn compare_layers(name: &str, hs: &HiddenStates, g: &Golden) -> f32 {
    assert_eq!(hs.num_layers(), g.hidden.len(), "{name}: layer count");
    let mut worst = 0f32;
    for (l, (shape, want)) in g.hidden.iter().enumerate() {
        assert_eq!(shape, &vec![hs.num_tokens(), hs.hidden_size], "{name}: layer {l} shape");
        let d = max_abs(&hs.layers[l], want);
        assert!(d <= TOL, "{name}: layer {l} max abs diff {d} > {TOL}");
        worst = worst.max(d);
    }
    worst
}

/// Forward from HF's own pixel values and input ids (isolates the model).
fn parity_from_hf_inputs(name: &str) -> (Vlm, HiddenStates) {
    let vlm = load_vlm(&dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let g = golden(name);
    let img = decode(&std::fs::read(dir(name).join("image.png")).unwrap()).unwrap();
    let mut pre = vlm.preprocess(&img).unwrap();
    assert_eq!(pre.pixel_values.len(), g.pixel_values.len(), "{name}: pixel value count");
    pre.pixel_values = g.pixel_values.clone();
    let (feats, _) = vlm.image_features(&pre).unwrap();
    assert_eq!(feats.dims().to_vec(), g.image_features.0, "{name}: image feature shape");
    let df = max_abs(&feats.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &g.image_features.1);
    assert!(df <= TOL, "{name}: image features max abs diff {df}");
    let hs = vlm.forward(&g.ids, &pre).unwrap();
    let dh = compare_layers(name, &hs, &g);
    eprintln!("{name}: image features max|ours-HF|={df:e}, hidden states (all {} layers x {} tokens) max|ours-HF|={dh:e}", hs.num_layers(), hs.num_tokens());
    (vlm, hs)
}

/// Image file + prompt → same ids and hidden states as HF's processor + model.
fn parity_end_to_end(name: &str) -> HiddenStates {
    let vlm = load_vlm(&dir(name)).unwrap();
    let g = golden(name);
    let bytes = std::fs::read(dir(name).join("image.png")).unwrap();
    let img = decode(&bytes).unwrap();
    let pre = vlm.preprocess(&img).unwrap();
    let text = vlm.expand_prompt(&g.prompt, &pre).unwrap();
    let ids = vlm.tokenizer.encode(&text).unwrap();
    assert_eq!(ids, g.ids, "{name}: input ids differ from the HF processor's");
    let hs = vlm.hidden_states_from_bytes(&bytes, &g.prompt).unwrap();
    let d = compare_layers(name, &hs, &g);
    eprintln!("{name}: end to end from image.png max|ours-HF|={d:e}");
    hs
}

fn check_visual_rows(hs: &HiddenStates, image_id: u32, n_visual: usize) {
    assert_eq!(hs.visual_rows.len(), n_visual);
    assert_eq!(hs.patches.len(), n_visual);
    for &r in &hs.visual_rows {
        assert_eq!(hs.token_ids[r], image_id);
    }
    assert_eq!(hs.token_ids.iter().filter(|&&t| t == image_id).count(), n_visual);
    assert!(hs.visual_rows.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn llava_clip_llama_matches_transformers() {
    let (vlm, hs) = parity_from_hf_inputs("llava_clip_llama");
    // CLIP 32 px / patch 8: 4 x 4 patches, class token dropped ("default").
    check_visual_rows(&hs, vlm.image_token_id(), 16);
    // 90x60 photo: shortest edge → 48x32, center crop 32x32 at x = 8;
    // one patch (8 px) = 15 original pixels, crop offset 15 px.
    let p0 = hs.patches[0];
    assert_eq!((p0.tile, p0.row, p0.col), (0, 0, 0));
    assert_eq!(p0.rect, [15.0, 0.0, 30.0, 15.0]);
    let p = hs.patches[15];
    assert_eq!((p.row, p.col), (3, 3));
    assert_eq!(p.rect, [60.0, 45.0, 75.0, 60.0]);
}

#[test]
fn llava_siglip_qwen2_matches_transformers() {
    let (vlm, hs) = parity_from_hf_inputs("llava_siglip_qwen2");
    // SigLIP 32 px / patch 8: 16 tokens, all kept ("full").
    check_visual_rows(&hs, vlm.image_token_id(), 16);
    // 64x64 photo resized to 32x32: one patch = 16 original pixels.
    let p = hs.patches[6];
    assert_eq!((p.tile, p.row, p.col), (0, 1, 2));
    assert_eq!(p.rect, [32.0, 16.0, 48.0, 32.0]);
}

#[test]
fn idefics3_llama_matches_transformers() {
    let (vlm, hs) = parity_from_hf_inputs("idefics3_llama");
    // 2 x 3 tiles + global, (8 patches / scale 2)² = 16 tokens each.
    check_visual_rows(&hs, vlm.image_token_id(), 7 * 16);
    // Tile 5 = row 1, col 2: original [80, 40, 120, 80); a token spans
    // 8 tile pixels = 10 original pixels.
    let p = hs.patches[5 * 16 + 15];
    assert_eq!((p.tile, p.row, p.col), (5, 3, 3));
    assert_eq!(p.rect, [110.0, 70.0, 120.0, 80.0]);
    // Global image (tile 6): a token spans 30 x 20 original pixels.
    let p = hs.patches[6 * 16];
    assert_eq!((p.tile, p.row, p.col), (6, 0, 0));
    assert_eq!(p.rect, [0.0, 0.0, 30.0, 20.0]);
    // Tiles tile the image: the split tiles' tokens cover it exactly once.
    let area: f32 = hs.patches[..6 * 16].iter().map(|p| (p.rect[2] - p.rect[0]) * (p.rect[3] - p.rect[1])).sum();
    assert_eq!(area, 120.0 * 80.0);
}

#[test]
fn llava_clip_llama_end_to_end_from_photo() {
    parity_end_to_end("llava_clip_llama");
}

#[test]
fn llava_siglip_qwen2_end_to_end_from_photo() {
    parity_end_to_end("llava_siglip_qwen2");
}

#[test]
fn idefics3_llama_end_to_end_from_photo() {
    let hs = parity_end_to_end("idefics3_llama");
    assert_eq!(hs.visual_rows.len(), 112);
}

#[test]
fn smolvlm_llama_matches_transformers() {
    let (vlm, hs) = parity_from_hf_inputs("smolvlm_llama");
    // Tall 64x96 photo: 3 rows x 2 cols + global, 16 tokens each.
    check_visual_rows(&hs, vlm.image_token_id(), 7 * 16);
    // Tile 4 = row 2, col 0: original [0, 64, 32, 96); token (0, 1) spans
    // 8 tile pixels = 8 original pixels.
    let p = hs.patches[4 * 16 + 1];
    assert_eq!((p.tile, p.row, p.col), (4, 0, 1));
    assert_eq!(p.rect, [8.0, 64.0, 16.0, 72.0]);
}

#[test]
fn smolvlm_llama_end_to_end_from_photo() {
    parity_end_to_end("smolvlm_llama");
}

/// Older / other checkpoint layouts load to the same model: LLaVA as
/// llava-hf hub (`vision_tower.vision_model.*`, `lm_head`) and as
/// `model.{vision_tower, multi_modal_projector, language_model}`;
/// Idefics3 without the `model.` prefix.
#[test]
fn alternative_weight_layouts_give_the_same_states() {
    use latentlens::model::tokenizer::Tokenizer;
    use latentlens::model::weights::load_safetensors_dir;
    let dev = candle_core::Device::Cpu;
    type Rename = fn(&str) -> String;
    let cases: [(&str, Rename); 3] = [
        ("llava_clip_llama", |k| {
            k.replacen("vision_tower.", "vision_tower.vision_model.", 1)
                .replacen("language_model.lm_head", "lm_head", 1)
        }),
        ("llava_siglip_qwen2", |k| {
            k.replacen("vision_tower.", "model.vision_tower.vision_model.", 1)
                .replacen("multi_modal_projector.", "model.multi_modal_projector.", 1)
                .replacen("language_model.model.", "model.language_model.", 1)
        }),
        ("idefics3_llama", |k| k.strip_prefix("model.").unwrap_or(k).to_string()),
    ];
    for (name, rename) in cases {
        let w = load_safetensors_dir(&dir(name), &dev).unwrap();
        let mut renamed = latentlens::model::weights::Weights::default();
        for (k, v) in &w.tensors {
            renamed.tensors.insert(rename(k), v.clone());
        }
        assert_eq!(renamed.tensors.len(), w.tensors.len(), "{name}: renaming collided");
        assert!(renamed.tensors.keys().any(|k| !w.tensors.contains_key(k)), "{name}: nothing renamed");
        let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir(name).join("config.json")).unwrap()).unwrap();
        let p: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir(name).join("processor_config.json")).unwrap()).unwrap();
        let tok = Tokenizer::from_file(&dir(name).join("tokenizer.json")).unwrap();
        let vlm = Vlm::from_parts(&cfg, renamed.var_builder(&dev), &p, tok, name).unwrap();
        let g = golden(name);
        let bytes = std::fs::read(dir(name).join("image.png")).unwrap();
        let hs = vlm.hidden_states_from_bytes(&bytes, &g.prompt).unwrap();
        let d = compare_layers(name, &hs, &g);
        eprintln!("{name}: renamed layout max|ours-HF|={d:e}");
    }
}
