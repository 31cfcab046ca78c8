//! Shared helpers of integration tests: real assets, gated by environment.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use latentlens::model::LoadedTextModel;

#[cfg(feature = "gpu")]
pub mod gpu_kit;

/// The SmolLM2 GGUF from `LATENTLENS_SMOLLM2_GGUF`, or `None` after a loud
/// message; panics instead when `LATENTLENS_REQUIRE_ASSETS=1` (CI).
pub fn smollm2_path() -> Option<PathBuf> {
    let require = std::env::var("LATENTLENS_REQUIRE_ASSETS").as_deref() == Ok("1");
    match std::env::var("LATENTLENS_SMOLLM2_GGUF") {
        Ok(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        other => {
            let msg = format!(
                "SKIPPING SmolLM2 test: LATENTLENS_SMOLLM2_GGUF {} (run ./build.sh assets, or ./build.sh test)",
                match other {
                    Ok(p) => format!("= {p} is not a file"),
                    Err(_) => "is unset".to_string(),
                }
            );
            if require {
                panic!("{msg} — and LATENTLENS_REQUIRE_ASSETS=1");
            }
            // Written to the real stderr, past the test harness's capture.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "\n!!!!!!!! {msg} !!!!!!!!\n");
            None
        }
    }
}

/// SmolLM2-135M-Instruct loaded once per test binary.
pub fn smollm2() -> Option<&'static LoadedTextModel> {
    static M: OnceLock<Option<LoadedTextModel>> = OnceLock::new();
    M.get_or_init(|| smollm2_path().map(|p| LoadedTextModel::load(&p).expect("loading the SmolLM2 GGUF"))).as_ref()
}

/// A committed fixture path.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// Real sentences (WordNet usage examples committed with the SmolLM2 goldens).
pub fn wordnet_sentences(n: usize) -> Vec<String> {
    std::fs::read_to_string(fixture("smollm2/wordnet_sentences.txt"))
        .expect("tests/fixtures/smollm2/wordnet_sentences.txt")
        .lines()
        .take(n)
        .map(String::from)
        .collect()
}

/// A wgpu context (lavapipe where there is no GPU), or `None` after a loud
/// message; panics instead when `LATENTLENS_REQUIRE_ASSETS=1` (CI).
#[cfg(feature = "gpu")]
pub fn gpu() -> Option<&'static latentlens::gpu::GpuContext> {
    gpu_kit::ctx()
}

/// Real contextual vectors: SmolLM2 hidden states of the committed golden
/// sentences (every state, every token), L2-normalised, `[n, 576]`.
pub fn smollm2_golden_vectors() -> Vec<f32> {
    let bytes = std::fs::read(fixture("smollm2/hidden_states.safetensors")).expect("smollm2 goldens");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("goldens parse");
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if !name.ends_with(".states") {
            continue;
        }
        let vals: Vec<f32> = view.data().chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
        for row in vals.chunks_exact(576) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                out.extend(row.iter().map(|x| x / n));
            }
        }
    }
    out
}
