//! Cosine top-k search over the bank: exact (f32 reference), PQ (ADC scan
//! over code chunks, optional rerank with refinement data), and the
//! cross-layer merge. All routines take a *batch* of queries (every patch of
//! an image at once) and share one ordering (CONTRACT.md): higher score
//! first; equal score → lower row first; equal score and row → lower bank
//! layer slot first. NaN scores never enter a top-k.
//!
//! Each optimised routine has a plain scalar twin (`*_reference`) that the
//! tests compare it with.

pub mod adc;
pub mod exact;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod merge;
pub mod topk;

pub use adc::{pq_search, rerank, scan_reference, AdcScanner, PqSearchParams};
pub use exact::{exact_topk, exact_topk_reference, rerank_exact};
#[cfg(feature = "gpu")]
pub use gpu::GpuPqLayer;
pub use merge::{merge_layers, merge_layers_reference};
pub use topk::{hit_order, Hit, TopK};

/// Errors of a search request.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// Shapes or parameters that do not fit (dimension mismatch, k = 0, …).
    #[error("invalid search request: {0}")]
    Invalid(String),
    /// The bank (or one bank layer) holds no rows.
    #[error("empty bank: {0}")]
    EmptyBank(String),
    /// The quantizer refused the request.
    #[error(transparent)]
    Pq(#[from] crate::bank::pq::PqError),
}

/// Largest `k` accepted (bounds the per-query allocations).
pub const MAX_K: usize = 1 << 16;

pub(crate) fn check_k(k: usize) -> Result<(), SearchError> {
    if k == 0 || k > MAX_K {
        return Err(SearchError::Invalid(format!("k = {k}: ask for between 1 and {MAX_K} neighbours")));
    }
    Ok(())
}

pub(crate) fn check_rows(what: &str, data: &[f32], d: usize) -> Result<usize, SearchError> {
    if d == 0 || data.len() % d != 0 {
        return Err(SearchError::Invalid(format!(
            "{what}: {} floats is not [n, {d}] (dimension mismatch: queries and bank must share d)",
            data.len()
        )));
    }
    Ok(data.len() / d)
}
