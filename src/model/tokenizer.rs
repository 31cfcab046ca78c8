//! Tokenizers: HF `tokenizer.json` through the `tokenizers` crate, or a
//! byte-level BPE rebuilt from GGUF metadata (`tokenizer.ggml.*`) so a GGUF
//! file alone is enough.
//!
//! The GGUF rebuild mirrors transformers' `integrations/gguf`
//! (`byte_level_tokenizer`, `add_gguf_special_tokens`, `set_split_regex`):
//! vocabulary in id order (tokens outside the GPT-2 byte alphabet respelled
//! as bytes), the file's merges, CONTROL tokens (type 3) as special added
//! tokens and USER_DEFINED (type 4) as plain added tokens, a ByteLevel
//! pre-tokenizer (GPT-2 regex; the Llama-3 split for `llama-bpe`-style
//! `tokenizer.ggml.pre`), ByteLevel decoder, and no post-processor (no BOS
//! added), so ids equal `AutoTokenizer.from_pretrained(dir, gguf_file=…)`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::json;

use super::ModelError;

/// Llama-3 style split regex (transformers `_LLAMA3_SPLIT`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Upper bound on vocabulary size read from a file.
const MAX_VOCAB: usize = 1 << 23;

/// Token ids and their byte spans `[start, end)` in the input text.
pub type IdsAndOffsets = (Vec<u32>, Vec<(usize, usize)>);

/// A text tokenizer with the special ids the model declares.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

/// GPT-2's byte → printable-char table (`bytes_to_unicode`).
pub fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('?');
    }
    table
}

impl Tokenizer {
    /// Wraps an HF `tokenizer.json` given as bytes. `bos_id`/`eos_id` are
    /// looked up from the usual token strings when present.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| ModelError::Tokenizer(format!("invalid tokenizer.json: {e}")))?;
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos_id = find(&["<|im_start|>", "<s>", "<|begin_of_text|>", "<|endoftext|>"]);
        let eos_id = find(&["<|im_end|>", "</s>", "<|end_of_text|>", "<|endoftext|>"]);
        Ok(Self { inner, bos_id, eos_id })
    }

    /// Reads an HF `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.display().to_string(), source })?;
        Self::from_json_bytes(&bytes).map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// Rebuilds the tokenizer stored in GGUF metadata (`tokenizer.ggml.model`
    /// = `gpt2`, byte-level BPE).
    pub fn from_gguf(c: &Content) -> Result<Self, ModelError> {
        let md = &c.metadata;
        let model = match md.get("tokenizer.ggml.model") {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err(ModelError::config("tokenizer.ggml.model", "missing: this GGUF file has no tokenizer; pass a tokenizer.json")),
        };
        if model != "gpt2" {
            return Err(ModelError::Unsupported(format!(
                "tokenizer.ggml.model `{model}`: only byte-level BPE (`gpt2`) tokenizers are rebuilt from GGUF; pass a tokenizer.json"
            )));
        }
        let tokens = string_array(md, "tokenizer.ggml.tokens")?;
        if tokens.is_empty() || tokens.len() > MAX_VOCAB {
            return Err(ModelError::config("tokenizer.ggml.tokens", format!("{} tokens is out of range", tokens.len())));
        }
        let merges = string_array(md, "tokenizer.ggml.merges")?;
        let token_type: Vec<i64> = match md.get("tokenizer.ggml.token_type") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::I32(x) => Ok(*x as i64),
                    Value::U32(x) => Ok(*x as i64),
                    Value::I8(x) => Ok(*x as i64),
                    Value::U8(x) => Ok(*x as i64),
                    other => Err(ModelError::config("tokenizer.ggml.token_type", format!("unexpected element {other:?}"))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ModelError::config("tokenizer.ggml.token_type", "must be an array")),
        };
        if !token_type.is_empty() && token_type.len() != tokens.len() {
            return Err(ModelError::config(
                "tokenizer.ggml.token_type",
                format!("{} entries for {} tokens", token_type.len(), tokens.len()),
            ));
        }
        let pre = match md.get("tokenizer.ggml.pre") {
            Some(Value::String(s)) => s.as_str(),
            _ => "default",
        };
        let pre_tokenizer = match pre {
            "default" | "gpt2" | "smollm" | "gpt-2" => {
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
            }
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx" => json!({
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
                ]
            }),
            other => {
                return Err(ModelError::Unsupported(format!(
                    "tokenizer.ggml.pre `{other}`: this pre-tokenizer is not implemented (known: gpt2, smollm, llama-bpe); pass a tokenizer.json"
                )))
            }
        };

        let spelling = bytes_to_unicode();
        let alphabet: HashSet<char> = spelling.iter().copied().collect();
        let respell = |t: &str| -> String {
            if t.chars().all(|c| alphabet.contains(&c)) {
                t.to_string()
            } else {
                t.bytes().map(|b| spelling[b as usize]).collect()
            }
        };
        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(respell(t), json!(i));
        }
        let mut merge_pairs = Vec::with_capacity(merges.len());
        for (i, m) in merges.iter().enumerate() {
            let (a, b) = m.split_once(' ').ok_or_else(|| {
                ModelError::config("tokenizer.ggml.merges", format!("merge {i} `{m}` is not two tokens separated by a space"))
            })?;
            merge_pairs.push(json!([a, b]));
        }
        let mut added = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            let ty = token_type.get(i).copied().unwrap_or(1);
            let special = match ty {
                3 if t.chars().all(|c| alphabet.contains(&c)) => true,
                4 => false,
                _ => continue,
            };
            added.push(json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": special}));
        }
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merge_pairs}
        });
        let bytes = serde_json::to_vec(&spec).map_err(tok_err)?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| ModelError::Tokenizer(format!("cannot build the tokenizer from GGUF metadata: {e}")))?;
        let id = |k: &str| -> Option<u32> {
            match md.get(k) {
                Some(Value::U32(x)) => Some(*x),
                Some(Value::I32(x)) if *x >= 0 => Some(*x as u32),
                Some(Value::U64(x)) => u32::try_from(*x).ok(),
                _ => None,
            }
            .filter(|&x| (x as usize) < tokens.len())
        };
        Ok(Self { inner, bos_id: id("tokenizer.ggml.bos_token_id"), eos_id: id("tokenizer.ggml.eos_token_id") })
    }

    /// Token ids of `text` (as `tokenizer(text)["input_ids"]` in transformers:
    /// the post-processor's special tokens, if any, included).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        Ok(self.inner.encode(text, true).map_err(tok_err)?.get_ids().to_vec())
    }

    /// Token ids and byte offsets `[start, end)` into `text`, per token.
    pub fn encode_with_offsets(&self, text: &str) -> Result<IdsAndOffsets, ModelError> {
        let enc = self.inner.encode(text, true).map_err(tok_err)?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Decodes ids to text (special tokens skipped if asked).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, ModelError> {
        self.inner.decode(ids, skip_special_tokens).map_err(tok_err)
    }

    /// The text one token stands for (byte-level BPE decoded), e.g. `" cat"`.
    pub fn token_text(&self, id: u32) -> Result<String, ModelError> {
        self.decode(&[id], false)
    }

    /// The raw vocabulary string of `id` (e.g. `"Ġcat"`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a raw vocabulary string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// All vocabulary strings in id order (missing ids give empty strings).
    pub fn vocab_in_id_order(&self) -> Vec<String> {
        let v: HashMap<String, u32> = self.inner.get_vocab(true);
        let n = v.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        let mut out = vec![String::new(); n];
        for (t, i) in v {
            if let Some(slot) = out.get_mut(i as usize) {
                *slot = t;
            }
        }
        out
    }

    /// Beginning-of-sequence id declared by the model, if any.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// End-of-sequence id declared by the model, if any.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The wrapped `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn string_array<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<Vec<&'a str>, ModelError> {
    match md.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(ModelError::config(key, format!("expected strings, found {other:?}"))),
            })
            .collect(),
        Some(_) => Err(ModelError::config(key, "must be an array of strings")),
        None => Err(ModelError::config(key, "missing from the GGUF metadata; pass a tokenizer.json")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let t = bytes_to_unicode();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        let uniq: HashSet<char> = t.iter().copied().collect();
        assert_eq!(uniq.len(), 256);
    }
}
