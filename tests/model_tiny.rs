//! Tiny random Llama and Qwen2 models (tests/fixtures/tiny_{llama,qwen2}, made
//! by tools/smollm2_goldens.py with HF transformers): every hidden state of
//! every token and the logits must match transformers within 1e-4; sharded
//! safetensors load the same; missing tensors and wrong shapes are refused by name.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use latentlens::model::config::TextConfig;
use latentlens::model::llama::TextModel;
use latentlens::model::weights::{load_safetensors_dir, Weights};
use latentlens::model::ModelError;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn config(dir: &Path) -> TextConfig {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    TextConfig::from_hf_json(&v).unwrap()
}

struct Goldens {
    ids: Vec<u32>,
    /// [L+1, T, d]
    states: Tensor,
    /// [T, vocab]
    logits: Tensor,
}

fn goldens(dir: &Path) -> Goldens {
    // ids are int64 (which the weight loader refuses by design): read raw.
    let bytes = std::fs::read(dir.join("goldens.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = st
        .tensor("ids")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let f32_of = |name: &str| {
        let v = st.tensor(name).unwrap();
        let vals: Vec<f32> = v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        Tensor::from_vec(vals, v.shape().to_vec(), &Device::Cpu).unwrap()
    };
    Goldens { ids, states: f32_of("states"), logits: f32_of("logits") }
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn check_model(name: &str) {
    let dir = fixture(name);
    let cfg = config(&dir);
    let w = load_safetensors_dir(&dir, &Device::Cpu).unwrap();
    let model = TextModel::new_causal_lm(&cfg, w.var_builder(&Device::Cpu)).unwrap();
    let g = goldens(&dir);
    let states = model.forward_ids(&g.ids).unwrap();
    assert_eq!(states.len(), cfg.num_hidden_layers + 1);
    for (l, s) in states.iter().enumerate() {
        let want = g.states.get(l).unwrap();
        let e = max_abs(s, &want);
        eprintln!("{name} layer {l}: max |ours - transformers| = {e:.3e}");
        assert!(e <= 1e-4, "{name} layer {l}: max abs diff {e} > 1e-4");
    }
    let logits = model.lm_head(states.last().unwrap()).unwrap();
    let e = max_abs(&logits, &g.logits);
    eprintln!("{name} logits: max abs diff {e:.3e}");
    assert!(e <= 1e-4, "{name} logits: max abs diff {e}");
}

#[test]
fn tiny_llama_untied_matches_transformers_at_every_layer_and_token() {
    check_model("tiny_llama");
}

#[test]
fn tiny_qwen2_with_qkv_bias_matches_transformers_at_every_layer_and_token() {
    let cfg = config(&fixture("tiny_qwen2"));
    assert!(cfg.qkv_bias && !cfg.o_bias && cfg.tie_word_embeddings);
    check_model("tiny_qwen2");
}

#[test]
fn sharded_safetensors_load_like_a_single_file() {
    let dir = fixture("tiny_llama");
    let whole = load_safetensors_dir(&dir, &Device::Cpu).unwrap();
    let tmp = std::env::temp_dir().join(format!("latentlens-shards-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(dir.join("config.json"), tmp.join("config.json")).unwrap();
    let mut names: Vec<&String> = whole.tensors.keys().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (shard, chunk) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        let data: Vec<(String, Vec<u8>, Vec<usize>)> = chunk
            .iter()
            .map(|n| {
                let t = &whole.tensors[*n];
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                ((*n).clone(), bytemuck::cast_slice::<f32, u8>(&v).to_vec(), t.dims().to_vec())
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(n, b, s)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &tmp.join(&file)).unwrap();
        for n in chunk {
            weight_map.insert((*n).clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(tmp.join("model.safetensors.index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let sharded = load_safetensors_dir(&tmp, &Device::Cpu).unwrap();
    assert_eq!(sharded.tensors.len(), whole.tensors.len());
    for (n, t) in &whole.tensors {
        assert_eq!(max_abs(t, &sharded.tensors[n]), 0.0, "{n}");
    }
    // A shard listed in the index but absent is an I/O error naming it.
    std::fs::remove_file(tmp.join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_safetensors_dir(&tmp, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn missing_tensor_is_refused_by_name() {
    let dir = fixture("tiny_llama");
    let cfg = config(&dir);
    let mut w: Weights = load_safetensors_dir(&dir, &Device::Cpu).unwrap();
    w.tensors.remove("model.layers.2.mlp.up_proj.weight");
    let e = TextModel::new_causal_lm(&cfg, w.var_builder(&Device::Cpu)).unwrap_err();
    assert!(matches!(e, ModelError::MissingTensor { .. }), "{e}");
    assert!(e.to_string().contains("model.layers.2.mlp.up_proj.weight"), "{e}");
    // Untied model without lm_head.
    let mut w = load_safetensors_dir(&dir, &Device::Cpu).unwrap();
    w.tensors.remove("lm_head.weight");
    let e = TextModel::new_causal_lm(&cfg, w.var_builder(&Device::Cpu)).unwrap_err().to_string();
    assert!(e.contains("lm_head.weight"), "{e}");
}

#[test]
fn wrong_shape_is_refused_with_both_shapes() {
    let dir = fixture("tiny_llama");
    let mut cfg = config(&dir);
    cfg.intermediate_size = 80;
    let w = load_safetensors_dir(&dir, &Device::Cpu).unwrap();
    let e = TextModel::new_causal_lm(&cfg, w.var_builder(&Device::Cpu)).unwrap_err();
    match &e {
        ModelError::Shape { name, expected, got } => {
            assert!(name.contains("gate_proj"), "{e}");
            assert_eq!((expected.clone(), got.clone()), (vec![80, 48], vec![96, 48]));
        }
        other => panic!("expected a shape error, got {other}"),
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let dir = fixture("tiny_qwen2");
    let cfg = config(&dir);
    let w = load_safetensors_dir(&dir, &Device::Cpu).unwrap();
    let model = TextModel::new_causal_lm(&cfg, w.var_builder(&Device::Cpu)).unwrap();
    assert!(model.embed_tokens(&[1, 200]).unwrap_err().to_string().contains("200"));
    assert!(model.forward_ids(&[]).is_err());
    let wrong_width = Tensor::zeros((3, 7), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(model.forward_embeds(&wrong_width).is_err());
}

#[test]
fn hf_model_dir_with_tokenizer_json_gives_transformers_ids_and_states() {
    for name in ["tiny_llama", "tiny_qwen2"] {
        let dir = fixture(name);
        let m = latentlens::model::LoadedTextModel::load(&dir).unwrap();
        let bytes = std::fs::read(dir.join("goldens.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let text = meta.metadata().as_ref().unwrap()["text"].clone();
        let g = goldens(&dir);
        let hs = m.hidden_states_text(&text).unwrap();
        assert_eq!(hs.token_ids, g.ids, "{name}: token ids vs transformers' PreTrainedTokenizerFast");
        for l in 0..hs.num_layers() {
            let ours = Tensor::from_slice(&hs.layers[l], (hs.num_tokens(), hs.hidden_size), &Device::Cpu).unwrap();
            let e = max_abs(&ours, &g.states.get(l).unwrap());
            assert!(e <= 1e-4, "{name} layer {l}: {e}");
        }
        assert!(m.fingerprint().unwrap().starts_with("llfp1-sha256:"));
    }
}
