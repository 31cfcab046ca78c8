//! EmbeddingLens and LogitLens on SmolLM2 against independent facts:
//! - at layer 0 a token's hidden state *is* its embedding row, so
//!   EmbeddingLens must return the token itself first, with cosine 1;
//! - LogitLens on the last state must give transformers' next-token argmax
//!   (goldens from tools/smollm2_goldens.py), and probabilities that sum ≤ 1.

mod common;

use latentlens::lens::{EmbeddingLens, LogitLens, Method};

#[test]
fn embedding_lens_at_layer_0_finds_the_token_itself() {
    let Some(m) = common::smollm2() else { return };
    let lens = EmbeddingLens::new(&m.model).unwrap();
    let hs = m.hidden_states_text("a brown dog sleeps under the old wooden table").unwrap();
    let out = lens.explain(&m.tokenizer, &hs.layers[0], 3).unwrap();
    assert_eq!(out.len(), hs.num_tokens());
    for (t, n) in out.iter().enumerate() {
        assert_eq!(n[0].token_id, hs.token_ids[t], "token {t}");
        assert!((n[0].score - 1.0).abs() < 1e-4, "cosine {}", n[0].score);
        assert_eq!(n[0].method, Method::Embedding);
        assert!(n[0].score >= n[1].score && n[1].score >= n[2].score);
        assert!(!n[0].word.contains('Ġ'), "byte-level artefact in {:?}", n[0].word);
    }
    assert_eq!(out[1][0].word, "brown");
}

#[test]
fn logit_lens_on_the_last_state_gives_transformers_next_token() {
    let Some(m) = common::smollm2() else { return };
    let bytes = std::fs::read(common::fixture("smollm2/hidden_states.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let sentences: Vec<String> = serde_json::from_str(&meta.metadata().clone().unwrap()["sentences"]).unwrap();
    for (i, s) in sentences.iter().enumerate().take(5) {
        let top1: Vec<u32> = st.tensor(&format!("s{i}.top1")).unwrap().data().chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect();
        let hs = m.hidden_states_text(s).unwrap();
        let last = hs.num_layers() - 1;
        let out = LogitLens::explain(&m.model, &m.tokenizer, &hs.layers[last], true, 5).unwrap();
        let ours: Vec<u32> = out.iter().map(|n| n[0].token_id).collect();
        assert_eq!(ours, top1, "{s:?}");
        for n in &out {
            let p: f32 = n.iter().map(|x| x.prob.unwrap()).sum();
            assert!(p > 0.0 && p <= 1.0 + 1e-5);
            assert!(n.windows(2).all(|w| w[0].prob >= w[1].prob));
        }
        // Mid layers go through the final norm first and still give a distribution.
        let mid = LogitLens::explain(&m.model, &m.tokenizer, &hs.layers[15], false, 2).unwrap();
        assert!(mid.iter().all(|n| n[0].prob.unwrap() > 0.0));
    }
    // A query of the wrong width is an error, not a panic.
    assert!(LogitLens::explain(&m.model, &m.tokenizer, &[0.0; 100], false, 2).is_err());
}
