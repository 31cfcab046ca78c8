//! `--model` given as a URL: the model's files are fetched over HTTP (Range
//! requests, chunk cache, resumable; see `latentlens::fetch`) into a local
//! directory, which then loads like any model directory or GGUF file.
//!
//! Where: `$LATENTLENS_CACHE` or `$XDG_CACHE_HOME/latentlens` or
//! `~/.cache/latentlens`: `http/` holds the resumable chunk cache, `models/`
//! one folder per URL (named by a hash of the URL). A reload downloads nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use latentlens::fetch::{DirCache, FetchOptions, ModelFiles};
use sha2::{Digest, Sha256};

/// True when `spec` names a URL rather than a local path.
pub fn is_url(spec: &str) -> bool {
    spec.starts_with("http://") || spec.starts_with("https://")
}

fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("LATENTLENS_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("latentlens");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("latentlens"),
        None => PathBuf::from(".latentlens-cache"),
    }
}

/// A local path for `spec`: the path itself, or for a URL the directory (or
/// `.gguf` file) its files were fetched into.
pub fn resolve(spec: &str) -> anyhow::Result<PathBuf> {
    if !is_url(spec) {
        return Ok(PathBuf::from(spec));
    }
    let root = cache_root();
    let digest = Sha256::digest(spec.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let dir = root.join("models").join(hex);
    let cache = DirCache::new(root.join("http")).with_context(|| format!("opening the download cache in {}", root.display()))?;
    let opts = FetchOptions::default()
        .with_cache(std::rc::Rc::new(cache))
        .with_progress(|p| eprint!("\r[latentlens] {}: {:.1} / {:.1} MB   ", p.url, p.loaded as f64 / 1e6, p.total as f64 / 1e6));
    let files = futures::executor::block_on(ModelFiles::fetch_model(spec, &opts))
        .with_context(|| format!("fetching the model from {spec} (plain http:// natively; an HF repository URL or a folder with config.json, tokenizer.json and weights)"))?;
    eprintln!();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, bytes) in &files.files {
        // File names come from the server's index: keep only plain names.
        let plain = Path::new(name).file_name().map(|f| f == std::ffi::OsStr::new(name)).unwrap_or(false);
        if !plain || name.starts_with('.') {
            anyhow::bail!("the model at {spec} names a file `{name}` that is not a plain file name; refusing to write it");
        }
        std::fs::write(dir.join(name), bytes).with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    let gguf = files.files.keys().find(|n| n.to_ascii_lowercase().ends_with(".gguf")).cloned();
    Ok(match (files.files.len(), gguf) {
        (1, Some(g)) => dir.join(g),
        _ => dir,
    })
}
