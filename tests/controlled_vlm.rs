//! The controlled VLM runtime (src/model/controlled.rs) vs the PyTorch
//! training model (tools/controlled_goldens.py): hidden states at layers 0,
//! 1, 8, 15, 29, 30 for two committed scenes, prompt token ids, greedy next
//! token; and a connector that does not fit the model is refused by name.
//! Needs the EfficientNet weights and the SmolLM2 GGUF.

use std::path::{Path, PathBuf};

use latentlens::model::controlled::{check_connector, ControlledVlm};
use latentlens::model::weights::Weights;

fn asset(var: &str) -> Option<PathBuf> {
    let require = std::env::var("LATENTLENS_REQUIRE_ASSETS").as_deref() == Ok("1");
    match std::env::var(var) {
        Ok(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        _ => {
            let msg = format!("SKIPPING controlled VLM test: {var} unset or missing (./build.sh assets)");
            assert!(!require, "{msg} — and LATENTLENS_REQUIRE_ASSETS=1");
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "\n!!!!!!!! {msg} !!!!!!!!\n");
            None
        }
    }
}

#[test]
fn hidden_states_match_the_training_model() {
    let (Some(eff), Some(gguf)) = (asset("LATENTLENS_EFFNET_SAFETENSORS"), asset("LATENTLENS_SMOLLM2_GGUF")) else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A config pointing at the committed connector and the given assets.
    let dir = std::env::temp_dir().join(format!("ll-controlled-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = serde_json::json!({
        "model_type": "latentlens-controlled",
        "vision": eff, "text": gguf,
        "connector": root.join("models/controlled-v1/connector.safetensors"),
    });
    std::fs::write(dir.join("controlled.json"), cfg.to_string()).unwrap();
    let vlm = ControlledVlm::load(&dir.join("controlled.json")).unwrap();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("tests/fixtures/controlled/golden.json")).unwrap()).unwrap();
    for item in golden["items"].as_array().unwrap() {
        let name = item["image"].as_str().unwrap();
        let bytes = std::fs::read(root.join("tests/fixtures/controlled").join(name)).unwrap();
        let hs = vlm.hidden_states_from_bytes(&bytes).unwrap();
        let (pre, suf) = vlm.prompt_ids().unwrap();
        let ids = |k: &str| item[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect::<Vec<_>>();
        assert_eq!(pre, ids("prefix_ids"), "prefix token ids");
        assert_eq!(suf, ids("suffix_ids"), "suffix token ids");
        assert_eq!(hs.num_tokens() as u64, item["tokens"].as_u64().unwrap());
        assert_eq!(hs.visual_rows.len(), 49);
        assert_eq!(hs.patches.len(), 49);
        assert_eq!(hs.patches[8].row, 1);
        assert_eq!(hs.patches[8].col, 1);
        let rows: Vec<usize> = item["rows"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let dims: Vec<usize> = item["dims"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        for (l, g) in item["layers"].as_object().unwrap() {
            let l: usize = l.parse().unwrap();
            let mut worst = 0f32;
            for (ri, &r) in rows.iter().enumerate() {
                let row = hs.row(l, r).unwrap();
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                let gn = g["norms"][ri].as_f64().unwrap() as f32;
                for (di, &d) in dims.iter().enumerate() {
                    let want = g["values"][ri][di].as_f64().unwrap() as f32;
                    worst = worst.max((row[d] - want).abs() / gn.max(1.0));
                }
                assert!((norm - gn).abs() / gn.max(1.0) < 2e-3, "{name} layer {l} row {r}: norm {norm} vs {gn}");
            }
            eprintln!("{name} layer {l}: max relative diff {worst:.2e}");
            assert!(worst < 2e-3, "{name} layer {l}: hidden states differ (max relative {worst})");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mismatched_connector_is_refused() {
    let dev = candle_core::Device::Cpu;
    let mut w = Weights::default();
    w.tensors.insert("linear_1.weight".into(), candle_core::Tensor::zeros((576, 768), candle_core::DType::F32, &dev).unwrap());
    let e = check_connector(&w, 576, "conn.safetensors").unwrap_err().to_string();
    assert!(e.contains("linear_1.weight") && e.contains("768"), "{e}");
    let e = check_connector(&Weights::default(), 576, "conn.safetensors").unwrap_err().to_string();
    assert!(e.contains("linear_1.weight"), "{e}");
}
