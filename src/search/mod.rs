//! Cosine top-k search over the bank: exact and PQ, cross-layer merge.

/// Errors of a search request.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("invalid search request: {0}")]
    Invalid(String),
}
