//! A tiny llama GGUF with every quantisation type we read (Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0, Q2_K..Q6_K, F16, BF16, F32; llama.cpp-permuted q/k; untied
//! `output.weight`), made by tools/tiny_gguf_goldens.py. transformers'
//! GGUF loader (its own dequantiser and reverse permutation) is the
//! reference for every hidden state and the logits. Also: clean errors for
//! unknown quantisation types, unexpected tensors and a missing tokenizer.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use latentlens::model::{gguf, LoadedTextModel, ModelError, TextModel};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_gguf")
}

fn gguf_bytes() -> Vec<u8> {
    std::fs::read(dir().join("tiny_llama_quants.gguf")).unwrap()
}

fn golden(name: &str) -> Tensor {
    let bytes = std::fs::read(dir().join("goldens.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(name).unwrap();
    let vals: Vec<f32> = v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    Tensor::from_vec(vals, v.shape().to_vec(), &Device::Cpu).unwrap()
}

fn golden_ids() -> Vec<u32> {
    let bytes = std::fs::read(dir().join("goldens.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("ids").unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn load(bytes: &[u8], quantized: bool) -> Result<TextModel, ModelError> {
    let dev = Device::Cpu;
    let mut r = Cursor::new(bytes);
    let c = gguf::read_content(&mut r, "tiny.gguf")?;
    let cfg = gguf::text_config(&c)?;
    if quantized {
        let (w, q) = gguf::load_weights_quantized(&c, &mut r, "tiny.gguf", &dev)?;
        TextModel::new_causal_lm_quantized(&cfg, w.var_builder(&dev), &q)
    } else {
        let w = gguf::load_weights(&c, &mut r, &cfg, "tiny.gguf", &dev)?;
        TextModel::new_causal_lm(&cfg, w.var_builder(&dev))
    }
}

#[test]
fn every_quant_type_dequantises_and_runs_like_transformers() {
    let bytes = gguf_bytes();
    let c = gguf::read_content(&mut Cursor::new(&bytes), "tiny.gguf").unwrap();
    let cfg = gguf::text_config(&c).unwrap();
    assert_eq!((cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads), (256, 2, 4, 2));
    assert!(!cfg.tie_word_embeddings, "output.weight present → untied");
    let model = load(&bytes, false).unwrap();
    let states = model.forward_ids(&golden_ids()).unwrap();
    let want = golden("states");
    for (l, s) in states.iter().enumerate() {
        let e = max_abs(s, &want.get(l).unwrap());
        eprintln!("tiny GGUF layer {l}: max abs diff {e:.3e}");
        assert!(e <= 1e-4, "layer {l}: {e}");
    }
    let logits = model.lm_head(states.last().unwrap()).unwrap();
    let e = max_abs(&logits, &golden("logits"));
    eprintln!("tiny GGUF logits: max abs diff {e:.3e}");
    assert!(e <= 1e-4, "logits: {e}");
}

#[test]
fn quantized_mode_on_mixed_types_matches_transformers() {
    let model = load(&gguf_bytes(), true).unwrap();
    let states = model.forward_ids(&golden_ids()).unwrap();
    let want = golden("states");
    for (l, s) in states.iter().enumerate() {
        let e = max_abs(s, &want.get(l).unwrap());
        eprintln!("tiny GGUF quantised mode layer {l}: max abs diff {e:.3e}");
        assert!(e <= 1e-4, "layer {l}: {e}");
    }
}

/// Byte offset of the ggml dtype field of tensor `name` in the header.
fn dtype_offset(bytes: &[u8], name: &str) -> usize {
    let pos = bytes.windows(name.len()).position(|w| w == name.as_bytes()).unwrap();
    let n_dims = u32::from_le_bytes(bytes[pos + name.len()..pos + name.len() + 4].try_into().unwrap()) as usize;
    pos + name.len() + 4 + 8 * n_dims
}

#[test]
fn unknown_quant_type_is_refused_with_the_supported_list() {
    let mut bytes = gguf_bytes();
    let off = dtype_offset(&bytes, "blk.0.attn_q.weight");
    bytes[off..off + 4].copy_from_slice(&20u32.to_le_bytes()); // IQ4_NL
    let e = gguf::read_content(&mut Cursor::new(&bytes), "iq.gguf").unwrap_err();
    assert!(matches!(e, ModelError::Weights { .. }), "{e}");
    assert!(e.to_string().contains("quantisation type"), "{e}");
}

#[test]
fn unexpected_tensor_is_refused_by_name() {
    let mut bytes = gguf_bytes();
    let pos = bytes.windows(19).position(|w| w == b"blk.0.attn_q.weight").unwrap();
    bytes[pos..pos + 19].copy_from_slice(b"blk.0.attn_z.weight");
    let e = load(&bytes, false).unwrap_err().to_string();
    assert!(e.contains("blk.0.attn_z.weight"), "{e}");
}

#[test]
fn gguf_without_tokenizer_says_so() {
    let e = LoadedTextModel::from_gguf_bytes(&gguf_bytes(), "tiny.gguf").unwrap_err().to_string();
    assert!(e.contains("tokenizer.ggml.model") && e.contains("tokenizer.json"), "{e}");
}
