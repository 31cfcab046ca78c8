//! Packed forward (several sentences in one batch, block-diagonal causal
//! mask, positions restarting per sentence) must equal running each sentence
//! alone — checked against transformers' goldens of the tiny Llama fixture.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use latentlens::model::config::TextConfig;
use latentlens::model::llama::TextModel;
use latentlens::model::weights::load_safetensors_dir;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn packed_sentences_match_transformers_goldens_of_each_sentence_alone() {
    let dir = fixture("tiny_llama");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let cfg = TextConfig::from_hf_json(&v).unwrap();
    let w = load_safetensors_dir(&dir, &Device::Cpu).unwrap();
    let model = TextModel::new_causal_lm(&cfg, w.var_builder(&Device::Cpu)).unwrap();

    let bytes = std::fs::read(dir.join("goldens.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids: Vec<u32> =
        st.tensor("ids").unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect();
    let sv = st.tensor("states").unwrap();
    let vals: Vec<f32> = sv.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let golden = Tensor::from_vec(vals, sv.shape().to_vec(), &Device::Cpu).unwrap(); // [L+1, T, d]

    // Pack: a short other sentence, the golden sentence, then another.
    let other_a: Vec<u32> = ids.iter().rev().take(3).copied().collect();
    let other_b: Vec<u32> = ids.iter().take(2).copied().collect();
    let all: Vec<u32> = other_a.iter().chain(&ids).chain(&other_b).copied().collect();
    let lens = [other_a.len(), ids.len(), other_b.len()];
    let states = model.forward_embeds_packed(&model.embed_tokens(&all).unwrap(), &lens).unwrap();
    assert_eq!(states.len(), cfg.num_hidden_layers + 1);
    let alone_b = model.forward_ids(&other_b).unwrap();
    for (l, s) in states.iter().enumerate() {
        let mine = s.narrow(0, other_a.len(), ids.len()).unwrap();
        let e = max_abs(&mine, &golden.get(l).unwrap());
        assert!(e <= 1e-4, "layer {l}: packed vs transformers max abs diff {e}");
        let tail = s.narrow(0, other_a.len() + ids.len(), other_b.len()).unwrap();
        let e = max_abs(&tail, &alone_b[l]);
        assert!(e <= 1e-4, "layer {l}: packed vs alone max abs diff {e}");
    }
    // Stopping early (the bank builder runs only up to its deepest bank layer) gives the
    // same states; the last (final-normed) state only when every layer runs.
    let emb = model.embed_tokens(&all).unwrap();
    for last in [0, 1, cfg.num_hidden_layers - 1] {
        let upto = model.forward_embeds_packed_upto(&emb, &lens, last).unwrap();
        assert_eq!(upto.len(), last + 1);
        for (l, s) in upto.iter().enumerate() {
            assert_eq!(max_abs(s, &states[l]), 0.0, "state {l} of a forward stopped at {last}");
        }
    }
    assert!(model.forward_embeds_packed_upto(&emb, &lens, cfg.num_hidden_layers + 1).is_err());
    assert!(model.forward_embeds_packed(&model.embed_tokens(&all).unwrap(), &[1, 2]).is_err());
    assert!(model.forward_embeds_packed(&model.embed_tokens(&all).unwrap(), &[0, all.len()]).is_err());
}
