//! Ground-truth interpretability evaluation of the controlled VLM.
//!
//! - [`scenes`]: synthetic scenes (emoji objects on painted backgrounds) with
//!   captions and per-patch ground truth; pure Rust, also for wasm32.
//! - [`wordnet`]: WordNet lemmatisation (morphy), synonyms, direct hypernyms.
//! - [`judge`]: does a lens's word match a patch's ground truth.
//!
//! The paper (Krojer et al. 2026) judges each patch's top-5 words with an
//! LLM; with generated images the ground truth is known, so a patch is
//! judged automatically (object name words, WordNet synonyms and direct
//! hypernyms, or the background colour).

pub mod judge;
pub mod scenes;
pub mod wordnet;

/// Errors of scene generation and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Missing or unreadable assets (emoji artwork, WordNet, …).
    #[error("assets: {0}")]
    Assets(String),
    /// Invalid request (sizes, layers, counts).
    #[error("invalid input: {0}")]
    Input(String),
}
