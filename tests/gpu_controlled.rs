//! The controlled VLM whole on the WGSL kernels (`latentlens::backend::wgsl_effnet`,
//! `latentlens::backend::wgsl_controlled`) vs the candle CPU path on the real weights:
//! EfficientNet-Lite0 features `[49, 1280]` (per-cell cosine ≥ 0.9999, max abs error reported),
//! the visual tokens, and the hidden states of every LLM layer (per-token cosine ≥ 0.9999).
//! Plus bad input: a wrong pixel count or visual-row count is an error, not a panic.
//! Needs `LATENTLENS_EFFNET_SAFETENSORS` (and `LATENTLENS_SMOLLM2_GGUF` for the whole VLM);
//! skips loudly without them unless `LATENTLENS_REQUIRE_ASSETS=1`.
#![cfg(feature = "gpu")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use common::gpu_kit;
use latentlens::backend::wgsl::{HostTextWeights, LoadOptions};
use latentlens::backend::wgsl_controlled::WgslControlledVlm;
use latentlens::backend::wgsl_effnet::WgslEfficientNet;
use latentlens::gpu::forward::ForwardKernels;
use latentlens::model::controlled::ControlledVlm;
use latentlens::model::efficientnet::{preprocess, EfficientNetLite0, FEATURES};
use latentlens::model::weights::load_safetensors_bytes;

const MIN_COS: f64 = 0.9999;

fn fk() -> Option<&'static ForwardKernels> {
    static FK: OnceLock<Option<ForwardKernels>> = OnceLock::new();
    FK.get_or_init(|| gpu_kit::ctx().map(|c| ForwardKernels::new_blocking(c).expect("forward kernels compile")))
        .as_ref()
}

fn asset(var: &str) -> Option<PathBuf> {
    match std::env::var(var) {
        Ok(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        _ => {
            let msg = format!("SKIPPING controlled VLM GPU test: {var} unset or missing (./build.sh assets)");
            assert!(!gpu_kit::require_gpu(), "{msg} — and LATENTLENS_REQUIRE_ASSETS=1");
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "\n!!!!!!!! {msg} !!!!!!!!\n");
            None
        }
    }
}

fn effnet() -> Option<&'static EfficientNetLite0> {
    static M: OnceLock<Option<EfficientNetLite0>> = OnceLock::new();
    M.get_or_init(|| {
        let p = asset("LATENTLENS_EFFNET_SAFETENSORS")?;
        let w = load_safetensors_bytes(&std::fs::read(&p).unwrap(), "effnet", &candle_core::Device::Cpu).unwrap();
        Some(EfficientNetLite0::new(&w).unwrap())
    })
    .as_ref()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/controlled").join(name)
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

/// A 224×224 RGB test pattern (`pattern_image` of tools/efficientnet_lite0.py) and the
/// committed scenes, resized by the controlled VLM's own resize.
fn inputs() -> Vec<(String, Vec<f32>)> {
    let mut v = Vec::new();
    let mut px = Vec::with_capacity(224 * 224 * 3);
    for y in 0..224usize {
        for x in 0..224usize {
            for c in 0..3usize {
                px.push(((x * (3 + c) + y * (5 + 2 * c) + (x / 16) * (y / 16) * 7) % 256) as u8);
            }
        }
    }
    v.push(("pattern".to_string(), preprocess(&px).unwrap()));
    for name in ["0900100.png", "0900101.png"] {
        let img = latentlens::image::decode(&std::fs::read(fixture(name)).unwrap()).unwrap();
        v.push((name.to_string(), ControlledVlm::pixels(&img).unwrap()));
    }
    v
}

#[test]
fn wgsl_efficientnet_matches_the_cpu_path_on_the_real_weights() {
    let (Some(fk), Some(cpu)) = (fk(), effnet()) else { return };
    let gpu = WgslEfficientNet::new(fk, cpu).unwrap();
    let (mut worst_cos, mut worst_abs) = (1f64, 0f32);
    for (name, pixels) in inputs() {
        let t = Instant::now();
        let want = cpu.features(&pixels).unwrap();
        let cpu_ms = t.elapsed().as_secs_f64() * 1e3;
        // twice: the second run reuses the pooled buffers and must give the same features
        let got = gpu.features_blocking(&pixels).unwrap();
        let t = Instant::now();
        let again = gpu.features_blocking(&pixels).unwrap();
        let gpu_ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(got, again, "{name}: a second run differs");
        assert_eq!(got.len(), 49 * FEATURES);
        let (c, m) = compare_rows(&got, &want, FEATURES, &format!("{name} features"));
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        eprintln!("{name}: EfficientNet features WGSL vs CPU: min cosine {c:.7}, max abs err {m:.3e} (max |feature| {scale:.2}); WGSL {gpu_ms:.0} ms, CPU {cpu_ms:.0} ms");
        assert!(m <= 1e-3 * scale.max(1.0), "{name}: max abs error {m} against features up to {scale}");
        worst_cos = worst_cos.min(c);
        worst_abs = worst_abs.max(m);
    }
    eprintln!("EfficientNet-Lite0 WGSL vs CPU over all inputs: min cosine {worst_cos:.7}, max abs err {worst_abs:.3e}");
}

#[test]
fn wrong_pixel_count_is_an_error_not_a_panic() {
    let (Some(fk), Some(cpu)) = (fk(), effnet()) else { return };
    let gpu = WgslEfficientNet::new(fk, cpu).unwrap();
    for n in [0, 3 * 224 * 224 - 1, 3 * 225 * 225] {
        let e = gpu.features_blocking(&vec![0.0; n]).unwrap_err().to_string();
        assert!(e.contains("3x224x224") && e.contains(&format!("got {n}")), "{e}");
    }
}

fn controlled_vlm() -> Option<(ControlledVlm, PathBuf)> {
    let (eff, gguf) = (asset("LATENTLENS_EFFNET_SAFETENSORS")?, asset("LATENTLENS_SMOLLM2_GGUF")?);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("ll-gpu-controlled-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = serde_json::json!({
        "model_type": "latentlens-controlled",
        "vision": eff, "text": gguf,
        "connector": root.join("models/controlled-v1/connector.safetensors"),
    });
    std::fs::write(dir.join("controlled.json"), cfg.to_string()).unwrap();
    let vlm = ControlledVlm::load(&dir.join("controlled.json")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Some((vlm, gguf))
}

#[test]
fn whole_controlled_vlm_on_the_gpu_matches_the_cpu_path_at_every_layer() {
    let Some(fk) = fk() else { return };
    let Some((cpu, gguf)) = controlled_vlm() else { return };
    let text = HostTextWeights::load(&gguf, &LoadOptions::default()).unwrap();
    let gpu = WgslControlledVlm::new(fk, &cpu, &text).unwrap();
    drop(text);
    let d = cpu.text.config.hidden_size;
    let img = latentlens::image::decode(&std::fs::read(fixture("0900100.png")).unwrap()).unwrap();
    let input = cpu.prepare(&img).unwrap();

    // the visual tokens (EfficientNet + connector) against the CPU's
    let (feats, _) = cpu.vision_features(&img).unwrap();
    let want_tokens = cpu.visual_tokens(&feats).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let tokens = gpu.visual_tokens_blocking(&input.pixels).unwrap();
    let (c, m) = compare_rows(&tokens, &want_tokens, d, "visual tokens");
    eprintln!("visual tokens WGSL vs CPU: min cosine {c:.7}, max abs err {m:.3e}");

    let t = Instant::now();
    let want = cpu.hidden_states(&img).unwrap();
    let cpu_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let got = gpu.forward_blocking(&input).unwrap();
    let gpu_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(got.token_ids, want.token_ids);
    assert_eq!(got.visual_rows, want.visual_rows);
    assert_eq!(got.patches, want.patches);
    assert_eq!(got.hidden_size, want.hidden_size);
    assert_eq!(got.num_layers(), want.num_layers());
    let (mut min_cos, mut max_abs) = (1f64, 0f32);
    for (l, (g, w)) in got.layers.iter().zip(&want.layers).enumerate() {
        let (c, m) = compare_rows(g, w, d, &format!("layer {l}"));
        min_cos = min_cos.min(c);
        max_abs = max_abs.max(m);
    }
    eprintln!(
        "controlled VLM hidden states ({} states × {} tokens) WGSL vs CPU: min cosine {min_cos:.7}, max abs err {max_abs:.3e}; WGSL {gpu_ms:.0} ms, CPU {cpu_ms:.0} ms",
        got.num_layers(),
        got.num_tokens()
    );

    // bad input: wrong pixel count, wrong visual rows
    let mut bad = input.clone();
    bad.pixels.pop();
    let e = gpu.forward_blocking(&bad).unwrap_err().to_string();
    assert!(e.contains("3x224x224"), "{e}");
    let mut bad = input.clone();
    bad.visual_rows.pop();
    let e = gpu.forward_blocking(&bad).unwrap_err().to_string();
    assert!(e.contains("48 visual rows"), "{e}");
}
