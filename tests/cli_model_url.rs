//! `latentlens hidden-states --model URL`: the model's files are fetched over
//! HTTP from a real local server (the HF-style folder layout) and give the
//! same hidden states as the local directory; a bad URL is a clear error.

#[allow(dead_code)]
#[path = "common/http_server.rs"]
mod http_server;

use std::path::Path;
use std::process::Command;

use http_server::TestServer;

fn latentlens(args: &[&str], cache: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_latentlens"))
        .args(args)
        .env("LATENTLENS_CACHE", cache)
        .output()
        .expect("running latentlens")
}

fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).expect("reading the output");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut v: Vec<(String, Vec<u8>)> = st.tensors().into_iter().map(|(n, t)| (n, t.data().to_vec())).collect();
    v.sort();
    v
}

#[test]
fn a_vlm_from_a_url_equals_the_local_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llava_clip_llama");
    let names = ["config.json", "tokenizer.json", "processor_config.json", "model.safetensors"];
    let files: Vec<(String, Vec<u8>)> =
        names.iter().map(|n| (format!("tiny/{n}"), std::fs::read(dir.join(n)).expect("fixture file"))).collect();
    let server = TestServer::start(files.iter().map(|(k, v)| (k.as_str(), v.clone())).collect());
    let tmp = std::env::temp_dir().join(format!("latentlens-model-url-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let image = dir.join("image.png");
    let (local, remote) = (tmp.join("local.safetensors"), tmp.join("remote.safetensors"));
    let cache = tmp.join("cache");

    let a = latentlens(
        &["hidden-states", "--model", dir.to_str().unwrap(), "--image", image.to_str().unwrap(), "--out", local.to_str().unwrap()],
        &cache,
    );
    assert!(a.status.success(), "local run failed: {}", String::from_utf8_lossy(&a.stderr));
    let url = server.url("tiny");
    let b = latentlens(&["hidden-states", "--model", &url, "--image", image.to_str().unwrap(), "--out", remote.to_str().unwrap()], &cache);
    assert!(b.status.success(), "URL run failed: {}", String::from_utf8_lossy(&b.stderr));
    assert_eq!(tensors(&local), tensors(&remote), "hidden states from the URL differ from the local directory");

    // A second run reads the chunk cache: no weights are downloaded again.
    let before = server.requests();
    let c = latentlens(&["hidden-states", "--model", &url, "--image", image.to_str().unwrap(), "--out", remote.to_str().unwrap()], &cache);
    assert!(c.status.success(), "cached run failed: {}", String::from_utf8_lossy(&c.stderr));
    let weights_again = server.log()[before..].iter().filter(|(p, r)| p.ends_with("model.safetensors") && r != "-").count();
    assert!(weights_again <= 1, "the cached run fetched weight ranges again: {:?}", &server.log()[before..]);

    // A URL with nothing behind it: a clear error naming the URL, no panic.
    let d = latentlens(&["hidden-states", "--model", &server.url("nothing"), "--text", "hi", "--out", remote.to_str().unwrap()], &cache);
    assert!(!d.status.success());
    let err = String::from_utf8_lossy(&d.stderr);
    assert!(err.contains("nothing") && !err.contains("panicked"), "unclear error: {err}");
    let _ = std::fs::remove_dir_all(&tmp);
}
