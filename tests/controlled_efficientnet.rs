//! EfficientNet-Lite0 (src/model/efficientnet.rs) vs the PyTorch reference
//! (tools/efficientnet_lite0.py golden): features of two deterministic
//! 224×224 images at all 49 grid cells (32 channels each + per-cell means)
//! and the ImageNet top-5. Needs the converted weights
//! (`LATENTLENS_EFFNET_SAFETENSORS`, made by `./build.sh assets`).

use std::path::{Path, PathBuf};

use latentlens::model::efficientnet::{preprocess, EfficientNetLite0, FEATURES};
use latentlens::model::weights::load_safetensors_bytes;

fn effnet_path() -> Option<PathBuf> {
    let require = std::env::var("LATENTLENS_REQUIRE_ASSETS").as_deref() == Ok("1");
    match std::env::var("LATENTLENS_EFFNET_SAFETENSORS") {
        Ok(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        _ => {
            let msg = "SKIPPING EfficientNet test: LATENTLENS_EFFNET_SAFETENSORS unset or missing (./build.sh assets)";
            assert!(!require, "{msg} — and LATENTLENS_REQUIRE_ASSETS=1");
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "\n!!!!!!!! {msg} !!!!!!!!\n");
            None
        }
    }
}

/// The same pattern as `pattern_image` in tools/efficientnet_lite0.py.
fn pattern_image(seed: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(224 * 224 * 3);
    for y in 0..224usize {
        for x in 0..224usize {
            for c in 0..3usize {
                let p = (x * (3 + seed + c) + y * (5 + 2 * c) + (x / 16) * (y / 16) * (7 + seed)) % 256;
                v.push(p as u8);
            }
        }
    }
    v
}

#[test]
fn features_match_pytorch_reference() {
    let Some(path) = effnet_path() else { return };
    let bytes = std::fs::read(&path).unwrap();
    let w = load_safetensors_bytes(&bytes, "effnet", &candle_core::Device::Cpu).unwrap();
    let net = EfficientNetLite0::new(&w).unwrap();
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/efficientnet_lite0_golden.json"))
            .unwrap(),
    )
    .unwrap();
    for img in golden["images"].as_array().unwrap() {
        let seed = img["seed"].as_u64().unwrap() as usize;
        let f = net.features(&preprocess(&pattern_image(seed)).unwrap()).unwrap();
        assert_eq!(f.len(), 49 * FEATURES);
        let chans: Vec<usize> = img["channels"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
        let mut max_diff = 0f32;
        for (pos, row) in img["values"].as_array().unwrap().iter().enumerate() {
            for (j, v) in row.as_array().unwrap().iter().enumerate() {
                let d = (f[pos * FEATURES + chans[j]] - v.as_f64().unwrap() as f32).abs();
                max_diff = max_diff.max(d);
            }
        }
        let mut max_mean = 0f32;
        for (pos, m) in img["pos_mean"].as_array().unwrap().iter().enumerate() {
            let ours: f32 = f[pos * FEATURES..(pos + 1) * FEATURES].iter().sum::<f32>() / FEATURES as f32;
            max_mean = max_mean.max((ours - m.as_f64().unwrap() as f32).abs());
        }
        eprintln!("seed {seed}: max |diff| {max_diff:.2e} (features 0..6), per-cell mean {max_mean:.2e}");
        assert!(max_diff < 2e-3, "seed {seed}: features differ from PyTorch by {max_diff}");
        assert!(max_mean < 1e-4, "seed {seed}: per-cell means differ by {max_mean}");
        let logits = net.logits(&f).unwrap();
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
        let want: Vec<usize> = img["top5"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
        assert_eq!(idx[..5], want[..], "seed {seed}: ImageNet top-5");
    }
}

#[test]
fn missing_tensor_is_named() {
    let w = latentlens::model::weights::Weights::default();
    let e = EfficientNetLite0::new(&w).unwrap_err().to_string();
    assert!(e.contains("_conv_stem.weight"), "{e}");
}

#[test]
fn wrong_input_size_is_refused() {
    assert!(preprocess(&[0u8; 10]).is_err());
}
