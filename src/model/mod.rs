//! Model configs, weights, tokenizers, families, and [`HiddenStates`].

pub mod hidden;

pub use hidden::{HiddenStates, PatchGeometry};

/// Errors of loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unsupported model: {0}")]
    Unsupported(String),
}
