//! SmolLM2-135M-Instruct (Q4_1 GGUF) against HF transformers 5.24 loading the
//! same file (goldens in tests/fixtures/smollm2, made by
//! tools/smollm2_goldens.py): tokenizer ids on 1,200 WordNet usage sentences,
//! hidden states of all 31 states (per-token cosine ≥ 0.9999), next-token
//! argmax through the tied unembedding, GGUF metadata → config, and clean
//! errors on truncated or corrupt files.
//!
//! Needs `LATENTLENS_SMOLLM2_GGUF`; skips loudly when unset unless
//! `LATENTLENS_REQUIRE_ASSETS=1` (then fails).

use std::path::{Path, PathBuf};

use latentlens::model::{LoadedTextModel, ModelError};

mod common;

use common::{smollm2 as model, smollm2_path as gguf_path};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2").join(name)
}

#[test]
fn gguf_metadata_gives_smollm2_config() {
    let Some(m) = model() else { return };
    let c = &m.config;
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (576, 1536, 30, 9, 3, 64)
    );
    assert_eq!((c.vocab_size, c.rope_theta, c.tie_word_embeddings), (49152, 100000.0, true));
    assert!((c.rms_norm_eps - 1e-5).abs() < 1e-9);
    assert_eq!(m.tokenizer.vocab_size(), 49152);
    assert_eq!((m.tokenizer.bos_id(), m.tokenizer.eos_id()), (Some(1), Some(2)));
}

#[test]
fn tokenizer_from_gguf_matches_transformers_on_1200_wordnet_sentences() {
    let Some(m) = model() else { return };
    let sents = std::fs::read_to_string(fixture("wordnet_sentences.txt")).unwrap();
    let ids = std::fs::read_to_string(fixture("wordnet_ids.txt")).unwrap();
    let (mut same, mut total) = (0, 0);
    let mut first_bad = None;
    for (s, line) in sents.lines().zip(ids.lines()) {
        let want: Vec<u32> = line.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let got = m.tokenizer.encode(s).unwrap();
        total += 1;
        if got == want {
            same += 1;
        } else if first_bad.is_none() {
            first_bad = Some(format!("{s:?}: ours {got:?} vs transformers {want:?}"));
        }
        // Decoding gives the sentence back (byte-level BPE is lossless).
        assert_eq!(m.tokenizer.decode(&got, false).unwrap(), s);
    }
    eprintln!("tokenizer: {same}/{total} sentences with identical ids");
    assert!(total >= 1000, "only {total} golden sentences");
    assert_eq!(same, total, "first mismatch: {}", first_bad.unwrap_or_default());
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

#[test]
fn hidden_states_match_transformers_at_all_31_states() {
    let Some(m) = model() else { return };
    let bytes = std::fs::read(fixture("hidden_states.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap_or_default();
    let sentences: Vec<String> = serde_json::from_str(&meta["sentences"]).unwrap();
    assert_eq!(meta.get("last_state").map(String::as_str), Some("final_norm"));
    let d = 576;
    let mut min_cos = 1f64;
    let mut max_rel = 0f64;
    for (i, s) in sentences.iter().enumerate() {
        let want_ids: Vec<u32> = st.tensor(&format!("s{i}.ids")).unwrap().data().chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect();
        let top1: Vec<u32> = st.tensor(&format!("s{i}.top1")).unwrap().data().chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect();
        let states = st.tensor(&format!("s{i}.states")).unwrap(); // f16 [31, T, d]
        let golden: Vec<f32> = states.data().chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
        let hs = m.hidden_states_text(s).unwrap();
        assert_eq!(hs.token_ids, want_ids, "token ids of {s:?}");
        assert_eq!(hs.num_layers(), 31);
        let t = want_ids.len();
        assert_eq!(states.shape(), &[31, t, d]);
        for l in 0..31 {
            for tok in 0..t {
                let ours = hs.row(l, tok).unwrap();
                let off = (l * t + tok) * d;
                let theirs = &golden[off..off + d];
                let c = cosine(ours, theirs);
                min_cos = min_cos.min(c);
                // Error relative to the row's scale (goldens are f16).
                let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs())).max(1.0) as f64;
                let err = ours.iter().zip(theirs).fold(0f32, |m, (a, b)| m.max((a - b).abs())) as f64;
                max_rel = max_rel.max(err / scale);
                assert!(c >= 0.9999, "sentence {i} layer {l} token {tok}: cosine {c}");
            }
        }
        // LogitLens path: final norm (already in the last state) + tied unembedding.
        let last = candle_core::Tensor::from_slice(&hs.layers[30], (t, d), &candle_core::Device::Cpu).unwrap();
        let logits = m.model.lm_head(&last).unwrap();
        let ours_top1: Vec<u32> = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap();
        assert_eq!(ours_top1, top1, "next-token argmax of {s:?}");
    }
    eprintln!("SmolLM2 hidden states: min per-token cosine {min_cos:.8}, max |err| / row max {max_rel:.3e}");
    assert!(max_rel < 1e-2, "max relative error {max_rel}");
}

#[test]
fn fingerprint_is_stable_and_names_the_scheme() {
    let Some(m) = model() else { return };
    let a = m.fingerprint().unwrap();
    assert!(a.starts_with("llfp1-sha256:"), "{a}");
    assert_eq!(a, m.fingerprint().unwrap());
}

#[test]
fn truncated_or_corrupt_gguf_is_a_clear_error() {
    let Some(p) = gguf_path() else { return };
    let bytes = std::fs::read(&p).unwrap();
    // Cut in the middle of the tensor data.
    let e = LoadedTextModel::from_gguf_bytes(&bytes[..bytes.len() / 2], "cut.gguf").unwrap_err();
    assert!(matches!(e, ModelError::Weights { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
    // Cut inside the header/metadata.
    let e = LoadedTextModel::from_gguf_bytes(&bytes[..4096], "head.gguf").unwrap_err();
    assert!(matches!(e, ModelError::Weights { .. }), "{e}");
    // Not GGUF at all.
    let e = LoadedTextModel::from_gguf_bytes(b"GGXF\x03\0\0\0", "junk.gguf").unwrap_err();
    assert!(matches!(e, ModelError::Weights { .. }), "{e}");
}

/// Quantised mode (projections kept as Q4_1 blocks in llama.cpp's q/k row
/// order, dequantised inside each matmul, interleaved RoPE): same bar as the
/// f32 path. A wrong RoPE layout for the permuted rows drops the min cosine to ~0.6.
#[test]
fn quantized_mode_matches_transformers_like_the_f32_path() {
    let Some(p) = gguf_path() else { return };
    let m = LoadedTextModel::load_with(&p, true).unwrap();
    let bytes = std::fs::read(fixture("hidden_states.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let sentences: Vec<String> = serde_json::from_str(&meta.metadata().clone().unwrap()["sentences"]).unwrap();
    let d = 576;
    let mut min_cos = 1f64;
    let mut mean_cos = (0f64, 0usize);
    for (i, s) in sentences.iter().enumerate() {
        let golden: Vec<f32> = st.tensor(&format!("s{i}.states")).unwrap().data().chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
        let hs = m.hidden_states_text(s).unwrap();
        let t = hs.num_tokens();
        for l in 0..31 {
            for tok in 0..t {
                let off = (l * t + tok) * d;
                let c = cosine(hs.row(l, tok).unwrap(), &golden[off..off + d]);
                min_cos = min_cos.min(c);
                mean_cos = (mean_cos.0 + c, mean_cos.1 + 1);
            }
        }
    }
    let mean = mean_cos.0 / mean_cos.1 as f64;
    eprintln!("quantised mode vs transformers (f32): min per-token cosine {min_cos:.6}, mean {mean:.6}");
    assert!(min_cos >= 0.9999, "min {min_cos}, mean {mean}");
}

#[test]
fn tokenizer_edge_cases_match_transformers() {
    let Some(m) = model() else { return };
    let lines = std::fs::read_to_string(fixture("tokenizer_edge_cases.jsonl")).unwrap();
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = v["text"].as_str().unwrap();
        let want: Vec<u32> = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let got = m.tokenizer.encode(text).unwrap();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(m.tokenizer.decode(&got, false).unwrap(), text);
    }
}

/// The browser's path: the GGUF dequantised while it downloads (`GgufStream` fed growing
/// prefixes, as `fetch_all_with` hands them over) gives the same model as loading the whole
/// file: same fingerprint, bit-equal hidden states, and transformers' states.
#[test]
fn streamed_gguf_is_the_same_model_as_the_whole_file() {
    let (Some(p), Some(whole)) = (gguf_path(), model()) else { return };
    let bytes = std::fs::read(&p).unwrap();
    for step in [4 << 20, 1_234_567] {
        let mut stream = LoadedTextModel::gguf_stream("streamed.gguf");
        let mut fed = 0;
        while fed + step < bytes.len() {
            fed += step;
            stream.feed(&bytes[..fed]);
        }
        stream.feed(&bytes[..bytes.len() - 1]);
        let (done, total) = stream.tensors_done();
        eprintln!("step {step}: {done}/{total} tensors converted before the last byte");
        // SmolLM2 has 272 tensors; only the one(s) ending at the last byte wait for it.
        assert!(total == 272 && done >= total - 2 && !stream.stopped(), "{done}/{total}");
        let m = stream.finish(&bytes).unwrap();
        assert_eq!(m.fingerprint().unwrap(), whole.fingerprint().unwrap());
        assert_eq!(m.config.num_hidden_layers, 30);
        let s = "A small dog sleeps on a red sofa near the window.";
        let (a, b) = (m.hidden_states_text(s).unwrap(), whole.hidden_states_text(s).unwrap());
        assert_eq!(a.token_ids, b.token_ids);
        assert!(a.layers == b.layers, "streamed hidden states differ from the whole-file load");
    }
}

#[test]
fn streamed_gguf_cut_short_or_corrupt_is_the_plain_loaders_error() {
    let Some(p) = gguf_path() else { return };
    let bytes = std::fs::read(&p).unwrap();
    let half = &bytes[..bytes.len() / 2];
    let mut stream = LoadedTextModel::gguf_stream("cut.gguf");
    stream.feed(&bytes[..1 << 20]);
    stream.feed(half);
    assert!(stream.tensors_done().0 > 0, "nothing converted from half the file");
    let e = stream.finish(half).unwrap_err();
    assert!(matches!(e, ModelError::Weights { .. }) && e.to_string().contains("truncated"), "{e}");
    // An unknown tensor name: the stream stops, finish names the tensor.
    let mut bad = bytes.clone();
    let pos = bad.windows(19).position(|w| w == b"blk.0.attn_q.weight").unwrap();
    bad[pos..pos + 19].copy_from_slice(b"blk.0.attn_z.weight");
    let mut stream = LoadedTextModel::gguf_stream("bad.gguf");
    stream.feed(&bad[..8 << 20]);
    assert!(stream.stopped());
    let e = stream.finish(&bad).unwrap_err().to_string();
    assert!(e.contains("blk.0.attn_z.weight"), "{e}");
}
