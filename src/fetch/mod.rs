//! Byte-range sources: where the bank's bytes come from.
//!
//! The bank reader never sees a file or a URL, only a [`ByteSource`]: "give
//! me `len` bytes at `offset`" plus the total length. That is exactly what an
//! HTTP server answers to a `Range` request, so the same reader serves a local
//! file natively and a static file on a CDN in the browser (the HTTP source
//! lives beside this one). The trait is object-safe and its futures are
//! [`LocalBoxFuture`]s (no `Send`): the browser is single-threaded and a
//! `fetch()` promise is not `Send`.
//!
//! Implementations here: [`MemorySource`] (bytes already in memory), on
//! native targets [`FileSource`] (a local file), and [`HttpSource`] (a URL
//! read with HTTP `Range` requests: the browser's `fetch()` on wasm32, a
//! small std::net HTTP/1.1 client for `http://` natively).
//!
//! [`HttpSource`] reads a fixed grid of chunks ([`FetchOptions::chunk_size`]),
//! coalesces missing neighbours into one Range request, retries transient
//! failures with backoff, resumes a dropped body from the last whole chunk,
//! reports [`Progress`], and keeps each chunk in an optional [`ChunkCache`]
//! (the browser's Cache API via [`BrowserCache`], a directory natively via
//! `DirCache`, or [`MemoryCache`]), so a reload or a resumed download reads
//! what it already has. [`fetch_all`] and [`ModelFiles`] use the same
//! machinery for whole files (model weights, tokenizer, config).

use futures::future::LocalBoxFuture;

#[cfg(target_arch = "wasm32")]
mod browser_cache;
mod cache;
pub(crate) mod clock;
mod http;
pub mod model_files;
mod progress;
mod transport;
// The http:// parser serves the native client only.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
mod url;

#[cfg(not(target_arch = "wasm32"))]
mod file;
mod memory;

#[cfg(target_arch = "wasm32")]
pub use browser_cache::BrowserCache;
#[cfg(not(target_arch = "wasm32"))]
pub use cache::DirCache;
pub use cache::{ChunkCache, MemoryCache};
#[cfg(not(target_arch = "wasm32"))]
pub use file::FileSource;
pub use http::{fetch_all, fetch_all_with, FetchOptions, HttpSource};
pub use memory::MemorySource;
pub use model_files::{model_file_url, ModelFiles};
pub use progress::{Progress, ProgressFn};

/// Errors of reading bytes from a source.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The operating system refused or failed a read.
    #[error("i/o error reading {path}: {source}; check that the file exists and is readable")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A read asked for bytes past the end of the source.
    #[error(
        "read of {len} bytes at offset {offset} is past the end of {name} ({total} bytes); \
         the file is truncated or corrupt: re-download it"
    )]
    OutOfRange {
        name: String,
        offset: u64,
        len: u64,
        total: u64,
    },
    /// The source returned fewer (or more) bytes than asked for.
    #[error(
        "{name} returned {got} bytes at offset {offset} where {expected} were asked for; \
         the file changed while being read, or the server does not honour Range requests"
    )]
    ShortRead {
        name: String,
        offset: u64,
        expected: u64,
        got: u64,
    },
    /// A read larger than this platform can address in memory.
    #[error("read of {len} bytes from {name} is too large for this platform's memory")]
    TooLarge { name: String, len: u64 },
    /// A URL this client cannot use.
    #[error("cannot fetch `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    /// The connection failed or broke (refused, reset, timed out, body cut short).
    #[error("network error fetching {url}: {message}; check the connection and the URL, then retry")]
    Network { url: String, message: String },
    /// The server answered with an HTTP error status.
    #[error("{url} answered HTTP {status}{}; {}", if status_text.is_empty() { String::new() } else { format!(" {status_text}") }, http_hint(*status))]
    Http { url: String, status: u16, status_text: String },
    /// The server sent the whole file (200) to a `Range` request.
    #[error(
        "the server of {url} ignores HTTP Range requests (answered {status} with the whole file to a byte-range \
         request): a bank must be served by a server with Range support (e.g. `./build.sh serve`, nginx, any CDN), \
         or be loaded whole"
    )]
    RangeIgnored { url: String, status: u16 },
    /// A malformed or inconsistent HTTP response (bad header, wrong Content-Range, wrong length).
    #[error("unexpected response from {url}: {message}")]
    Protocol { url: String, message: String },
    /// The remote file is not the one cached or being downloaded any more.
    #[error("{url} changed on the server ({message}); reload to download the new version")]
    Changed { url: String, message: String },
    /// The chunk cache (Cache API, directory) failed.
    #[error("chunk cache error: {0}")]
    Cache(String),
}

fn http_hint(status: u16) -> &'static str {
    match status {
        404 | 410 => "check the URL (file name, `resolve/main/` path) and that the file exists",
        401 | 403 => "the server refuses access; the file must be public",
        416 => "the requested byte range is past the end of the file: the file is truncated or changed",
        408 | 429 => "the server is busy; retry later",
        500..=599 => "server error; retry later",
        _ => "check the URL",
    }
}

impl FetchError {
    /// Whether retrying the same request may succeed (connection trouble,
    /// 5xx, 408, 429). Retries in [`HttpSource`] use this.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Network { .. } => true,
            FetchError::Http { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }
}

/// A random-access, read-only source of bytes (a local file, an in-memory
/// buffer, or a URL read with HTTP `Range` requests).
///
/// Contract for implementations: [`read`](ByteSource::read) returns exactly
/// `len` bytes or an error ([`FetchError::OutOfRange`] when
/// `offset + len > total_len`); the content must not change while a reader
/// holds the source.
pub trait ByteSource {
    /// A short human-readable name (path or URL) used in error messages.
    fn name(&self) -> &str;
    /// Total length of the source in bytes.
    fn total_len(&self) -> LocalBoxFuture<'_, Result<u64, FetchError>>;
    /// Exactly `len` bytes starting at byte `offset`.
    fn read(&self, offset: u64, len: usize) -> LocalBoxFuture<'_, Result<Vec<u8>, FetchError>>;
    /// A small read at a random place (an exact bank row for reranking):
    /// the same bytes as [`read`](Self::read), but a source that fetches in
    /// large cached chunks may fetch exactly this range instead.
    fn read_small(&self, offset: u64, len: usize) -> LocalBoxFuture<'_, Result<Vec<u8>, FetchError>> {
        self.read(offset, len)
    }
    /// Drops any cached copy of `[offset, offset + len)` so the next read
    /// goes back to the origin; returns whether anything could have been
    /// cached (readers re-read once after a checksum failure when it is
    /// `true`). Sources without a cache keep the default (`false`).
    fn evict(&self, offset: u64, len: u64) -> LocalBoxFuture<'_, Result<bool, FetchError>> {
        let _ = (offset, len);
        Box::pin(async { Ok(false) })
    }
}

/// Checks that `[offset, offset + len)` lies within `total` bytes of `name`;
/// shared by the implementations so they all answer alike.
pub(crate) fn check_range(
    name: &str,
    offset: u64,
    len: usize,
    total: u64,
) -> Result<(), FetchError> {
    let len64 = u64::try_from(len).map_err(|_| FetchError::TooLarge {
        name: name.to_string(),
        len: u64::MAX,
    })?;
    match offset.checked_add(len64) {
        Some(end) if end <= total => Ok(()),
        _ => Err(FetchError::OutOfRange {
            name: name.to_string(),
            offset,
            len: len64,
            total,
        }),
    }
}
