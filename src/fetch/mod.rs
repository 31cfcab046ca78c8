//! Byte-range sources: local file now, HTTP Range in the browser.

/// Errors of reading bytes from a source.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("i/o error reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
}
