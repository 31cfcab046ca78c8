//! One-call loading of a text model (config + weights + tokenizer) from a
//! GGUF file, GGUF bytes, or an HF directory (`config.json`, safetensors,
//! `tokenizer.json`), and text → [`HiddenStates`].

use std::collections::HashMap;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

use super::config::TextConfig;
use super::fingerprint::model_fingerprint;
use super::hidden::HiddenStates;
use super::llama::{states_to_vecs, TextModel};
use super::tokenizer::Tokenizer;
use super::{gguf, weights, ModelError};

/// A text model ready to run: config, decoder, tokenizer.
#[derive(Debug, Clone)]
pub struct LoadedTextModel {
    /// The typed config.
    pub config: TextConfig,
    /// The decoder.
    pub model: TextModel,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// Where it came from (path or description).
    pub source: String,
}

impl LoadedTextModel {
    /// Loads from `path`: a `.gguf` file, or a directory with `config.json`,
    /// `model.safetensors` (or a sharded index) and `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Self::load_with(path, false)
    }

    /// As [`LoadedTextModel::load`]; `quantized` keeps GGUF projections
    /// quantised (refused for safetensors directories).
    pub fn load_with(path: &Path, quantized: bool) -> Result<Self, ModelError> {
        if path.is_dir() {
            if quantized {
                return Err(ModelError::Unsupported(
                    "quantised mode needs a GGUF file; safetensors directories load as f32".into(),
                ));
            }
            return Self::load_hf_dir(path);
        }
        if !path.is_file() {
            return Err(ModelError::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            });
        }
        let what = path.display().to_string();
        let io = |source| ModelError::Io { path: what.clone(), source };
        // Read through the file (not into memory): tensors are read one at a time.
        let mut f = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
        let mut magic = [0u8; 4];
        if f.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            return Err(ModelError::Weights {
                path: what,
                msg: "not a GGUF file (no GGUF magic); pass a .gguf file or an HF model directory".into(),
            });
        }
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        Self::from_gguf_reader(&mut f, &what, quantized)
    }

    /// Loads a llama GGUF file held in memory (`what` names it in errors),
    /// dequantised to f32 (the reference path).
    pub fn from_gguf_bytes(bytes: &[u8], what: &str) -> Result<Self, ModelError> {
        Self::from_gguf_bytes_with(bytes, what, false)
    }

    /// As [`LoadedTextModel::from_gguf_bytes`]; with `quantized` the layer
    /// projections stay in their GGUF block format
    /// ([`TextModel::new_quantized`]: less memory, same numbers).
    pub fn from_gguf_bytes_with(bytes: &[u8], what: &str, quantized: bool) -> Result<Self, ModelError> {
        Self::from_gguf_reader(&mut Cursor::new(bytes), what, quantized)
    }

    /// Loads a llama GGUF file from any seekable reader.
    pub fn from_gguf_reader<R: Read + Seek>(r: &mut R, what: &str, quantized: bool) -> Result<Self, ModelError> {
        let dev = Device::Cpu;
        let content = gguf::read_content(r, what)?;
        let config = gguf::text_config(&content)?;
        let tokenizer = Tokenizer::from_gguf(&content)?;
        let model = if quantized {
            let (w, q) = gguf::load_weights_quantized(&content, r, what, &dev)?;
            TextModel::new_causal_lm_quantized(&config, w.var_builder(&dev), &q)?
        } else {
            let w = gguf::load_weights(&content, r, &config, what, &dev)?;
            TextModel::new_causal_lm(&config, w.var_builder(&dev))?
        };
        Ok(Self { config, model, tokenizer, source: what.to_string() })
    }

    /// Starts a [`GgufStream`]: the f32 model built while the file's bytes arrive.
    pub fn gguf_stream(what: &str) -> GgufStream {
        GgufStream { what: what.to_string(), ..GgufStream::default() }
    }

    /// Loads an HF model directory.
    pub fn load_hf_dir(dir: &Path) -> Result<Self, ModelError> {
        let dev = Device::Cpu;
        let cfg_path = dir.join("config.json");
        let cfg_bytes =
            std::fs::read(&cfg_path).map_err(|source| ModelError::Io { path: cfg_path.display().to_string(), source })?;
        let v: serde_json::Value = serde_json::from_slice(&cfg_bytes).map_err(|e| ModelError::Weights {
            path: cfg_path.display().to_string(),
            msg: format!("invalid JSON: {e}"),
        })?;
        let config = TextConfig::from_hf_json(&v)?;
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
        let w = weights::load_safetensors_dir(dir, &dev)?;
        let model = TextModel::new_causal_lm(&config, w.var_builder(&dev))?;
        Ok(Self { config, model, tokenizer, source: dir.display().to_string() })
    }

    /// The model fingerprint (see [`crate::model::fingerprint`]).
    pub fn fingerprint(&self) -> Result<String, ModelError> {
        model_fingerprint(&self.tokenizer, self.model.embedding_matrix())
    }

    /// Hidden states of every layer for token ids.
    pub fn hidden_states_ids(&self, ids: &[u32]) -> Result<HiddenStates, ModelError> {
        let states = self.model.forward_ids(ids)?;
        Ok(HiddenStates {
            hidden_size: self.config.hidden_size,
            token_ids: ids.to_vec(),
            layers: states_to_vecs(&states)?,
            visual_rows: Vec::new(),
            patches: Vec::new(),
        })
    }

    /// Tokenizes `text` and returns the hidden states of every layer.
    pub fn hidden_states_text(&self, text: &str) -> Result<HiddenStates, ModelError> {
        let ids = self.tokenizer.encode(text)?;
        if ids.is_empty() {
            return Err(ModelError::Input("the text gives no tokens".into()));
        }
        self.hidden_states_ids(&ids)
    }
}

/// A GGUF text model (dequantised to f32, like [`LoadedTextModel::from_gguf_bytes`]) built
/// while the file downloads: [`feed`](Self::feed) it the bytes received so far (a growing
/// prefix of the file); once the header is in, the config and tokenizer are built, and every
/// tensor is dequantised as soon as its last byte has arrived. [`finish`](Self::finish) with
/// the whole file converts what is left, so after the download only the last tensors remain.
///
/// The result is the same model as [`LoadedTextModel::from_gguf_bytes`] on the whole file
/// (tests/model_smollm2.rs, `streamed_gguf_*`). A prefix that fails to parse is retried as more bytes arrive; any
/// other problem (unknown tensor, unsupported type, bad config) stops the stream, and
/// `finish` then loads the whole file the plain way, which reports the error.
#[derive(Default)]
pub struct GgufStream {
    what: String,
    content: Option<gguf_file::Content>,
    config: Option<TextConfig>,
    tokenizer: Option<Tokenizer>,
    /// Prefix length at the last failed header parse (the next try waits for more bytes).
    tried_at: usize,
    /// (data end, GGUF name, HF name) of every tensor, by data end.
    order: Vec<(u64, String, String)>,
    next: usize,
    tensors: HashMap<String, Tensor>,
    stopped: bool,
}

/// Bytes more than the last failed try before the header is parsed again.
const HEADER_RETRY_STEP: usize = 1 << 20;

impl GgufStream {
    /// Takes the bytes received so far (`prefix` = the file's first `prefix.len()` bytes).
    pub fn feed(&mut self, prefix: &[u8]) {
        if self.stopped {
            return;
        }
        if let Err(()) = self.advance(prefix) {
            self.stopped = true;
            self.tensors.clear();
        }
    }

    fn advance(&mut self, prefix: &[u8]) -> Result<(), ()> {
        if self.content.is_none() {
            if prefix.len() < self.tried_at.saturating_add(HEADER_RETRY_STEP) && self.tried_at > 0 {
                return Ok(());
            }
            let Ok(content) = gguf_file::Content::read(&mut Cursor::new(prefix)) else {
                self.tried_at = prefix.len().max(1);
                return Ok(());
            };
            let config = gguf::text_config(&content).map_err(drop)?;
            let tokenizer = Tokenizer::from_gguf(&content).map_err(drop)?;
            let mut order = Vec::with_capacity(content.tensor_infos.len());
            for name in content.tensor_infos.keys() {
                let hf = gguf::check_tensor(&content, name, &self.what).map_err(drop)?;
                let (_, end) = gguf::tensor_span(&content, name).ok_or(())?;
                order.push((end, name.clone(), hf));
            }
            order.sort();
            (self.content, self.config, self.tokenizer, self.order) = (Some(content), Some(config), Some(tokenizer), order);
        }
        let (Some(content), Some(config)) = (&self.content, &self.config) else { return Ok(()) };
        let dev = Device::Cpu;
        while let Some((end, name, hf)) = self.order.get(self.next) {
            if *end > prefix.len() as u64 {
                break;
            }
            let t = gguf::load_f32(content, &mut Cursor::new(prefix), name, config, &self.what, &dev).map_err(drop)?;
            self.tensors.insert(hf.clone(), t);
            self.next += 1;
        }
        Ok(())
    }

    /// Tensors converted so far and tensors in the file (0 until the header has arrived).
    pub fn tensors_done(&self) -> (usize, usize) {
        (self.tensors.len(), self.order.len())
    }

    /// Whether the stream gave up (bad header content, unknown tensor): `finish` then loads the
    /// whole file the plain way and reports the problem.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The model, from the whole file `bytes` (the same bytes the prefixes came from).
    pub fn finish(mut self, bytes: &[u8]) -> Result<LoadedTextModel, ModelError> {
        self.feed(bytes);
        let done = !self.stopped && self.next == self.order.len();
        match (done, self.config, self.tokenizer) {
            (true, Some(config), Some(tokenizer)) => {
                let dev = Device::Cpu;
                let w = weights::Weights { tensors: self.tensors };
                let model = TextModel::new_causal_lm(&config, w.var_builder(&dev))?;
                Ok(LoadedTextModel { config, model, tokenizer, source: self.what })
            }
            // Not a whole, valid GGUF: the plain loader names the problem.
            _ => LoadedTextModel::from_gguf_bytes(bytes, &self.what),
        }
    }
}
