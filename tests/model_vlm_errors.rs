//! Bad VLM input gives clear errors, never panics: unknown architectures,
//! missing or contradictory config fields, missing tensors, wrong shapes,
//! mismatched processor / tokenizer, bad prompts, non-images.

use std::path::PathBuf;

use latentlens::model::tokenizer::Tokenizer;
use latentlens::model::vlm::{load_vlm, Vlm};
use latentlens::model::weights::load_safetensors_dir;
use latentlens::model::ModelError;
use serde_json::{json, Value};

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(name)
}

fn read_json(p: PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn config(name: &str) -> Value {
    read_json(dir(name).join("config.json"))
}

fn check_err(cfg: &Value, what: &str) -> String {
    match Vlm::check_config(cfg) {
        Ok(()) => panic!("{what}: expected an error"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            eprintln!("{what}: {msg}");
            msg
        }
    }
}

/// Builds from parts with edited weights / processor config.
fn build(
    name: &str,
    edit_weights: impl FnOnce(&mut latentlens::model::weights::Weights),
    proc_cfg: Option<Value>,
) -> Result<Vlm, ModelError> {
    let dev = candle_core::Device::Cpu;
    let mut w = load_safetensors_dir(&dir(name), &dev).unwrap();
    edit_weights(&mut w);
    let p = proc_cfg.unwrap_or_else(|| read_json(dir(name).join("processor_config.json")));
    let tok = Tokenizer::from_file(&dir(name).join("tokenizer.json")).unwrap();
    Vlm::from_parts(&config(name), w.var_builder(&dev), &p, tok, name)
}

#[test]
fn unknown_architecture_is_refused() {
    let mut c = config("llava_clip_llama");
    c["architectures"] = json!(["Qwen2VLForConditionalGeneration"]);
    c["model_type"] = json!("qwen2_vl");
    let msg = check_err(&c, "unknown architecture");
    assert!(msg.contains("Llava"), "{msg}");
}

#[test]
fn unsupported_vision_tower_is_refused() {
    let mut c = config("llava_clip_llama");
    c["vision_config"]["model_type"] = json!("dinov2");
    check_err(&c, "dinov2 tower");
}

#[test]
fn missing_and_contradictory_config_fields_are_refused() {
    let mut c = config("llava_clip_llama");
    c.as_object_mut().unwrap().remove("vision_config");
    assert!(check_err(&c, "no vision_config").contains("vision_config"));

    let mut c = config("llava_clip_llama");
    c.as_object_mut().unwrap().remove("text_config");
    assert!(check_err(&c, "no text_config").contains("text_config"));

    let mut c = config("llava_clip_llama");
    c["image_token_id"] = json!(7);
    assert!(check_err(&c, "two image token ids").contains("image_token"));

    let mut c = config("llava_clip_llama");
    c["image_token_index"] = json!(100000);
    assert!(check_err(&c, "image token outside vocab").contains("image_token"));

    let mut c = config("llava_clip_llama");
    c["vision_feature_layer"] = json!(-9);
    assert!(check_err(&c, "feature layer out of range").contains("vision_feature_layer"));

    let mut c = config("llava_clip_llama");
    c["vision_feature_select_strategy"] = json!("cls_only");
    check_err(&c, "unknown strategy");

    let mut c = config("llava_clip_llama");
    c["vision_config"]["num_attention_heads"] = json!(5);
    check_err(&c, "heads do not divide hidden size");

    let mut c = config("llava_clip_llama");
    c["vision_config"]["hidden_size"] = json!("big");
    check_err(&c, "non-integer hidden size");

    let mut c = config("idefics3_llama");
    c["scale_factor"] = json!(3);
    assert!(check_err(&c, "scale factor does not divide grid").contains("scale_factor"));

    let mut c = config("idefics3_llama");
    c["text_config"]["model_type"] = json!("mistral");
    check_err(&c, "unsupported text model");
}

#[test]
fn missing_tensor_is_named() {
    let e = build(
        "llava_clip_llama",
        |w| {
            w.tensors.remove("vision_tower.encoder.layers.1.mlp.fc1.weight");
        },
        None,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ModelError::MissingTensor { .. }), "{msg}");
    assert!(msg.contains("layers.1.mlp.fc1.weight"), "{msg}");

    let e = build(
        "idefics3_llama",
        |w| {
            w.tensors.remove("model.connector.modality_projection.proj.weight");
        },
        None,
    )
    .unwrap_err();
    assert!(matches!(e, ModelError::MissingTensor { .. }), "{e}");
}

#[test]
fn wrong_tensor_shape_is_named() {
    let e = build(
        "llava_siglip_qwen2",
        |w| {
            let t = candle_core::Tensor::zeros((64, 31), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
            w.tensors.insert("multi_modal_projector.linear_1.weight".into(), t);
        },
        None,
    )
    .unwrap_err();
    match &e {
        ModelError::Shape { name, expected, got } => {
            assert!(name.contains("linear_1.weight"));
            assert_eq!((expected.clone(), got.clone()), (vec![64, 32], vec![64, 31]));
        }
        other => panic!("expected a shape error, got {other}"),
    }
}

#[test]
fn processor_that_does_not_match_the_tower_is_refused() {
    let mut p = read_json(dir("llava_siglip_qwen2").join("processor_config.json"));
    p["image_processor"]["size"] = json!({"height": 48, "width": 48});
    let e = build("llava_siglip_qwen2", |_| {}, Some(p)).unwrap_err();
    assert!(e.to_string().contains("image_size"), "{e}");

    let mut p = read_json(dir("llava_siglip_qwen2").join("processor_config.json"));
    p["image_processor"]["image_processor_type"] = json!("BlipImageProcessor");
    let e = build("llava_siglip_qwen2", |_| {}, Some(p)).unwrap_err();
    assert!(e.to_string().contains("BlipImageProcessor"), "{e}");
}

#[test]
fn bad_prompts_and_non_images_are_refused() {
    let vlm = load_vlm(&dir("llava_clip_llama")).unwrap();
    let img = latentlens::image::decode(&std::fs::read(dir("llava_clip_llama").join("image.png")).unwrap()).unwrap();
    for prompt in ["no placeholder here", "<image><image> twice"] {
        let e = vlm.hidden_states(&img, prompt).unwrap_err();
        assert!(matches!(e, ModelError::Input(_)), "{e}");
        assert!(e.to_string().contains("<image>"), "{e}");
    }
    let e = vlm.hidden_states_from_bytes(b"GIF89a not really", vlm.default_prompt()).unwrap_err();
    assert!(matches!(e, latentlens::Error::Image(_)), "{e}");
    // Token ids whose placeholder count does not match the image.
    let pre = vlm.preprocess(&img).unwrap();
    let e = vlm.forward(&[5, 6, 7], &pre).unwrap_err();
    assert!(e.to_string().contains("placeholders"), "{e}");
}

#[test]
fn missing_files_are_named() {
    let e = load_vlm(&dir("does_not_exist")).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");
}

/// Degenerate but valid images (1x1, extreme aspect ratios) run through
/// every family without panicking and keep every rectangle inside the image.
#[test]
fn tiny_and_extreme_images_run_without_panics() {
    for name in ["llava_clip_llama", "llava_siglip_qwen2", "idefics3_llama"] {
        let vlm = load_vlm(&dir(name)).unwrap();
        for (w, h) in [(1u32, 1u32), (1, 300), (300, 1), (3, 2)] {
            let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
            let img = latentlens::image::RgbImage::from_raw(w, h, data).unwrap();
            let hs = vlm
                .hidden_states(&img, vlm.default_prompt())
                .unwrap_or_else(|e| panic!("{name} {w}x{h}: {e}"));
            assert!(!hs.visual_rows.is_empty());
            for p in &hs.patches {
                let [x0, y0, x1, y1] = p.rect;
                assert!(0.0 <= x0 && x0 <= x1 && x1 <= w as f32, "{name} {w}x{h}: {p:?}");
                assert!(0.0 <= y0 && y0 <= y1 && y1 <= h as f32, "{name} {w}x{h}: {p:?}");
            }
            assert!(hs.layers.iter().all(|l| l.iter().all(|v| v.is_finite())), "{name} {w}x{h}");
        }
    }
}
