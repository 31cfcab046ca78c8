//! Model configs, weights, tokenizers, families, and [`HiddenStates`].
//!
//! Text side (this module's runtime half): [`config`] (HF `config.json` and
//! GGUF metadata → [`TextConfig`]), [`weights`] (safetensors, sharded
//! safetensors, GGUF → f32 tensors under HF names), [`gguf`] (GGUF reading,
//! renaming, llama.cpp Q/K permutation undone), [`tokenizer`],
//! [`llama`] (Llama / Qwen2 decoder with every layer's hidden states),
//! [`fingerprint`] and [`text`] (one-call loading of a text model from a path
//! or bytes).

pub mod any;
#[cfg(not(target_arch = "wasm32"))]
pub mod blas;
pub mod clip;
pub mod config;
pub mod connector;
pub mod controlled;
pub mod efficientnet;
pub mod fingerprint;
pub mod gguf;
pub mod hidden;
pub mod idefics3;
pub mod llama;
pub mod llava;
pub mod siglip;
pub mod text;
pub mod tokenizer;
pub mod vlm;
pub mod weights;

pub use any::AnyVlm;
pub use config::TextConfig;
pub use hidden::{HiddenStates, PatchGeometry};
pub use llama::TextModel;
pub use text::{GgufStream, LoadedTextModel};
pub use tokenizer::Tokenizer;

/// Errors of loading or running a model. Messages name the field, tensor or
/// file at fault and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An architecture, dtype, quantisation or option we do not implement.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A config field is missing, has the wrong type, or contradicts another.
    #[error("config field `{field}`: {msg}")]
    Config {
        /// The config key (HF `config.json` or GGUF metadata key).
        field: String,
        /// What is wrong and what to do.
        msg: String,
    },
    /// A tensor the model needs is not in the weights.
    #[error("missing tensor `{name}` in {source_desc}: the weights do not match the config (wrong file, or a model family we do not support)")]
    MissingTensor {
        /// The HF tensor name (or GGUF name, when reading GGUF).
        name: String,
        /// The weight source (file path or description).
        source_desc: String,
    },
    /// A tensor has a shape other than the config implies.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}: the weights do not match config.json")]
    Shape {
        /// Tensor name.
        name: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape in the file.
        got: Vec<usize>,
    },
    /// A weight file is unreadable, corrupt or truncated.
    #[error("weights {path}: {msg}")]
    Weights {
        /// File path or description.
        path: String,
        /// What is wrong and what to do.
        msg: String,
    },
    /// The tokenizer could not be built or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Invalid input to a model call (empty sequence, token id out of range, …).
    #[error("invalid input: {0}")]
    Input(String),
    /// A tensor operation failed (a bug or an inconsistent model: please report).
    #[error("tensor computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    /// File system error.
    #[error("cannot read {path}")]
    Io {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ModelError {
    /// Shorthand for [`ModelError::Config`].
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        ModelError::Config { field: field.into(), msg: msg.into() }
    }
}
