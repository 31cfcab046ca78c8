//! End to end through the CLI on the tiny LLaVA fixture (a real architecture
//! with random weights, made by tools/make_tiny_fixtures.py): build a bank from
//! the VLM's own text model over real WordNet sentences, then `inspect` the
//! fixture photo with all three lenses, as JSON and as a table; and the bad
//! inputs a user can give.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentlens")).args(args).output().expect("running latentlens")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "latentlens failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure, got: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("latentlens-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn build_bank(model: &Path, out: &Path) {
    let corpus = tmp("corpus.txt");
    std::fs::write(&corpus, common::wordnet_sentences(300).join("\n")).unwrap();
    let o = cli(&[
        "build-bank", "--model", model.to_str().unwrap(), "--corpus", corpus.to_str().unwrap(),
        "--out", out.to_str().unwrap(), "--checkpoint-every", "100",
    ]);
    let stdout = ok(&o);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(report["vectors_per_layer"].as_u64().unwrap() > 100, "{report}");
    assert_eq!(report["bytes_per_vector"], 8); // d = 64 → d/8
    assert!(!out.with_extension("ckpt").exists(), "checkpoint left behind");
}

#[test]
fn build_bank_then_inspect_an_image_with_three_lenses() {
    let model = common::fixture("tiny/llava_clip_llama");
    let image = model.join("image.png");
    let bank = tmp("llava.llbank");
    build_bank(&model, &bank);

    let m = model.to_str().unwrap();
    let (b, i) = (bank.to_str().unwrap(), image.to_str().unwrap());
    let doc: serde_json::Value = serde_json::from_str(&ok(&cli(&["inspect", "--model", m, "--bank", b, i, "--json", "--k", "3"]))).unwrap();
    assert_eq!(doc["format"], "latentlens-inspect-v1");
    assert_eq!(doc["bank_layers"], serde_json::json!([1, 2]));
    let items = doc["items"].as_array().unwrap();
    assert_eq!(items.len(), 16, "4x4 visual tokens");
    for it in items {
        let g = &it["geometry"];
        assert!(g["rect"][2].as_f64().unwrap() > g["rect"][0].as_f64().unwrap());
        for l in 0..4 {
            let per = &it["layers"][l.to_string()];
            for method in ["latent", "embedding", "logit"] {
                assert_eq!(per[method].as_array().unwrap().len(), 3, "layer {l} {method}");
            }
            for n in per["latent"].as_array().unwrap() {
                let s = n["sentence"].as_str().unwrap();
                let (a, z) = (n["span"][0].as_u64().unwrap() as usize, n["span"][1].as_u64().unwrap() as usize);
                assert_eq!(&s[a..z], n["word"].as_str().unwrap());
                assert!([1, 2].contains(&n["bank_layer"].as_u64().unwrap()));
            }
            assert!(per["logit"][0]["prob"].as_f64().unwrap() > 0.0);
        }
    }
    for l in 0..4 {
        let total: u64 = doc["leap"][l.to_string()].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(total, 16, "leap histogram of layer {l}");
    }
    // The table: one line per patch and layer, and the leap summary.
    let table = ok(&cli(&["inspect", "--model", m, "--bank", b, i, "--layers", "0,3", "--k", "2"]));
    assert!(table.contains("Mid-Layer Leap"), "{table}");
    assert!(table.lines().filter(|l| l.contains("latent: ")).count() >= 32);

    // Bad input: a bank built for another model is refused, naming both.
    let other = common::fixture("tiny/llava_siglip_qwen2");
    let e = err(&cli(&["inspect", "--model", other.to_str().unwrap(), "--bank", b, i, "--json"]));
    assert!(e.contains("built for the model") && e.contains("llava_clip_llama") && e.contains("llava_siglip_qwen2"), "{e}");
    // Layers outside the model, missing image, not an image, no bank.
    let e = err(&cli(&["inspect", "--model", m, "--bank", b, i, "--layers", "9"]));
    assert!(e.contains("--layers"), "{e}");
    let e = err(&cli(&["inspect", "--model", m, "--bank", b, "/nonexistent.png"]));
    assert!(e.contains("does not exist"), "{e}");
    let cfg = model.join("config.json");
    let e = err(&cli(&["inspect", "--model", m, "--bank", b, cfg.to_str().unwrap()]));
    assert!(e.to_lowercase().contains("image"), "{e}");
    let e = err(&cli(&["inspect", "--model", m, i]));
    assert!(e.contains("--bank"), "{e}");
    // A truncated bank is refused with a message.
    let bytes = std::fs::read(&bank).unwrap();
    let cut = tmp("cut.llbank");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&cli(&["inspect", "--model", m, "--bank", cut.to_str().unwrap(), i]));
    assert!(e.contains("re-download") || e.contains("truncated"), "{e}");
}

#[test]
fn build_bank_refuses_empty_corpus_and_bad_layers() {
    let model = common::fixture("tiny/llava_clip_llama");
    let empty = tmp("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let out = tmp("never.llbank");
    let m = model.to_str().unwrap();
    let e = err(&cli(&["build-bank", "--model", m, "--corpus", empty.to_str().unwrap(), "--out", out.to_str().unwrap()]));
    assert!(e.contains("no sentences"), "{e}");
    let corpus = tmp("c2.txt");
    std::fs::write(&corpus, "a red fox runs over the green hill today\n").unwrap();
    let e = err(&cli(&["build-bank", "--model", m, "--corpus", corpus.to_str().unwrap(), "--out", out.to_str().unwrap(), "--layers", "1,7"]));
    assert!(e.contains("--layers"), "{e}");
    assert!(!out.exists());
}
