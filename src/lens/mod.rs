//! The three lenses — LatentLens (contextual bank), EmbeddingLens (input
//! embedding matrix), LogitLens (final norm + unembedding) — and the readout
//! that turns their hits into words.

pub mod baselines;
pub mod latent;
pub mod readout;

use serde::{Deserialize, Serialize};

pub use baselines::{EmbeddingLens, LogitLens};
pub use latent::{LatentLens, LoadProgress, EXACT_CANDIDATES};

/// Which lens produced a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Contextual bank (LatentLens).
    Latent,
    /// Input embedding matrix (EmbeddingLens).
    Embedding,
    /// Final norm + unembedding (LogitLens).
    Logit,
}

impl Method {
    /// Parses `latent`, `embedding` or `logit`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "latent" | "latentlens" => Some(Method::Latent),
            "embedding" | "embeddinglens" => Some(Method::Embedding),
            "logit" | "logitlens" => Some(Method::Logit),
            _ => None,
        }
    }
}

/// One explanation of a visual token: a stable interface (CLI JSON, page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    /// 1-based rank.
    pub rank: u32,
    /// Cosine similarity (latent, embedding) or logit (logit).
    pub score: f32,
    /// Softmax probability (LogitLens only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prob: Option<f32>,
    /// What a person reads: the whole word (latent) or the decoded token.
    pub word: String,
    /// The raw vocabulary string of the matched token.
    pub token: String,
    /// The matched token id.
    pub token_id: u32,
    /// The sentence the contextual embedding came from (latent only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentence: Option<String>,
    /// Byte span `[start, end)` of `word` in `sentence` (latent only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<(usize, usize)>,
    /// LLM layer of the bank the hit came from (latent only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bank_layer: Option<usize>,
    /// The lens.
    pub method: Method,
}
