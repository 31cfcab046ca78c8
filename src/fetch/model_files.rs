//! [`ModelFiles`]: the files a model directory needs, fetched from a URL with
//! [`fetch_all`] (chunked, cached, resumable, with progress).
//!
//! URL layout: a Hugging Face repository URL (`https://huggingface.co/ORG/NAME`,
//! files under `{base}/resolve/main/{file}`) or any plain base URL (files
//! under `{base}/{file}`), or the URL of a single `.gguf` file. A folder whose
//! `config.json` has `"model_type": "latentlens-controlled"` (the controlled VLM) holds the
//! three files that config names (`vision`, `connector`, `text`), in the same folder.

use std::collections::BTreeMap;

use futures::future::try_join_all;

use super::{fetch_all, fetch_all_with, FetchError, FetchOptions};

async fn fetch_all_owned(url: String, opts: FetchOptions) -> Result<Vec<u8>, FetchError> {
    fetch_all(&url, opts).await
}

/// Where `file` lives under the model URL `base` (see the module docs).
pub fn model_file_url(base: &str, file: &str) -> String {
    let base = base.trim_end_matches('/');
    let hf = ["://huggingface.co/", "://hf.co/"].iter().any(|h| base.contains(h));
    if hf && !base.contains("/resolve/") {
        format!("{base}/resolve/main/{file}")
    } else {
        format!("{base}/{file}")
    }
}

/// Files of one model, by name (`config.json`, `tokenizer.json`, weights…).
#[derive(Debug, Clone, Default)]
pub struct ModelFiles {
    /// The model URL they came from.
    pub base: String,
    /// File name → contents.
    pub files: BTreeMap<String, Vec<u8>>,
}

fn is_not_found(e: &FetchError) -> bool {
    matches!(e, FetchError::Http { status: 404 | 410, .. })
}

impl ModelFiles {
    /// Fetches `names` under `base`, in order (all required).
    pub async fn fetch(base: &str, names: &[&str], opts: &FetchOptions) -> Result<Self, FetchError> {
        let mut files = BTreeMap::new();
        for name in names {
            files.insert(name.to_string(), fetch_all(&model_file_url(base, name), opts.clone()).await?);
        }
        Ok(Self { base: base.to_string(), files })
    }

    /// Fetches what a model needs to load:
    /// - a URL ending in `.gguf`: that one file, stored under its file name;
    /// - otherwise `config.json`, `tokenizer.json`, the first of
    ///   `preprocessor_config.json` / `processor_config.json` that exists
    ///   (optional: text-only models have none), and the weights:
    ///   `model.safetensors`, or the shards named by
    ///   `model.safetensors.index.json`.
    pub async fn fetch_model(base: &str, opts: &FetchOptions) -> Result<Self, FetchError> {
        Self::fetch_model_with(base, opts, &mut |_| {}).await
    }

    /// [`fetch_model`](Self::fetch_model), handing the bytes of the model's GGUF file (a
    /// `.gguf` URL, or a controlled VLM's `text` part) to `on_gguf` as they arrive (a growing
    /// prefix of the file: see [`crate::model::GgufStream`]).
    pub async fn fetch_model_with(base: &str, opts: &FetchOptions, on_gguf: &mut dyn FnMut(&[u8])) -> Result<Self, FetchError> {
        let trimmed = base.trim_end_matches('/');
        let path = trimmed.split(['?', '#']).next().unwrap_or(trimmed);
        if path.to_ascii_lowercase().ends_with(".gguf") {
            let name = path.rsplit('/').next().unwrap_or("model.gguf").to_string();
            let bytes = fetch_all_with(trimmed, opts.clone(), on_gguf).await?;
            return Ok(Self { base: base.to_string(), files: BTreeMap::from([(name, bytes)]) });
        }
        let mut me = Self::fetch(base, &["config.json"], opts).await?;
        if let Some(parts) = controlled_parts(me.get("config.json").unwrap_or_default())
            .map_err(|message| FetchError::Protocol { url: model_file_url(base, "config.json"), message })?
        {
            // The parts download side by side (a small vision encoder and connector
            // beside the LLM's GGUF, whose bytes go to `on_gguf` as they arrive).
            let (small, text) = parts.split_at(2);
            let (got, gguf) = futures::future::try_join(
                try_join_all(small.iter().map(|name| fetch_all_owned(model_file_url(base, name), opts.clone()))),
                fetch_all_with(&model_file_url(base, &text[0]), opts.clone(), on_gguf),
            )
            .await?;
            me.files.extend(small.iter().cloned().zip(got));
            me.files.insert(text[0].clone(), gguf);
            return Ok(me);
        }
        let tok = fetch_all(&model_file_url(base, "tokenizer.json"), opts.clone()).await?;
        me.files.insert("tokenizer.json".into(), tok);
        for name in ["preprocessor_config.json", "processor_config.json"] {
            match fetch_all(&model_file_url(base, name), opts.clone()).await {
                Ok(b) => {
                    me.files.insert(name.to_string(), b);
                    break;
                }
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        match fetch_all(&model_file_url(base, "model.safetensors"), opts.clone()).await {
            Ok(b) => {
                me.files.insert("model.safetensors".into(), b);
            }
            Err(e) if is_not_found(&e) => {
                let index_name = "model.safetensors.index.json";
                let index_url = model_file_url(base, index_name);
                let index = fetch_all(&index_url, opts.clone()).await?;
                let shards = shard_names(&index).map_err(|message| FetchError::Protocol { url: index_url, message })?;
                me.files.insert(index_name.into(), index);
                let got = try_join_all(shards.iter().map(|s| fetch_all_owned(model_file_url(base, s), opts.clone()))).await?;
                me.files.extend(shards.into_iter().zip(got));
            }
            Err(e) => return Err(e),
        }
        Ok(me)
    }

    /// The contents of `name`, if fetched.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// Total bytes fetched.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|v| v.len() as u64).sum()
    }
}

/// Distinct shard file names of a safetensors index (`weight_map` values),
/// sorted; plain file names only (no paths: they are joined to the base URL).
fn shard_names(index: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(index).map_err(|e| format!("index is not JSON: {e}"))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or("index has no `weight_map` object")?;
    let mut names: Vec<String> = map.values().filter_map(|s| s.as_str().map(str::to_string)).collect();
    names.sort();
    names.dedup();
    if names.is_empty() || names.len() > 4096 {
        return Err(format!("index names {} shard files", names.len()));
    }
    if let Some(bad) = names.iter().find(|n| n.contains(['/', '\\']) || n.starts_with('.') || n.is_empty()) {
        return Err(format!("shard name `{bad}` is not a plain file name"));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_and_plain_layouts() {
        assert_eq!(
            model_file_url("https://huggingface.co/HuggingFaceTB/SmolVLM-256M-Instruct/", "config.json"),
            "https://huggingface.co/HuggingFaceTB/SmolVLM-256M-Instruct/resolve/main/config.json"
        );
        assert_eq!(
            model_file_url("https://huggingface.co/o/n/resolve/v1.0", "a.json"),
            "https://huggingface.co/o/n/resolve/v1.0/a.json"
        );
        assert_eq!(model_file_url("http://127.0.0.1:8080/models/tiny", "config.json"), "http://127.0.0.1:8080/models/tiny/config.json");
    }

    #[test]
    fn shard_index() {
        let idx = br#"{"metadata":{},"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#;
        assert_eq!(shard_names(idx).unwrap(), vec!["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
        assert!(shard_names(br#"{"weight_map":{"a":"../etc/passwd"}}"#).is_err());
        assert!(shard_names(br#"{"weight_map":{}}"#).is_err());
        assert!(shard_names(b"nope").is_err());
    }
}

/// For a controlled-VLM `config.json`: the file names of its `vision`, `connector` and `text`
/// parts (which must be plain names in the same folder); `None` for any other config.
pub fn controlled_parts(config: &[u8]) -> Result<Option<Vec<String>>, String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(config) else { return Ok(None) };
    if v.get("model_type").and_then(|t| t.as_str()) != Some(crate::model::controlled::MODEL_TYPE) {
        return Ok(None);
    }
    let mut out = Vec::new();
    for key in ["vision", "connector", "text"] {
        let name = v.get(key).and_then(|n| n.as_str()).ok_or_else(|| {
            format!("controlled VLM config: `{key}` is missing (the file name of this part's weights)")
        })?;
        if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(format!(
                "controlled VLM config: `{key}` is {name:?}; over HTTP every part must be a plain file name in the config's folder"
            ));
        }
        out.push(name.to_string());
    }
    Ok(Some(out))
}
