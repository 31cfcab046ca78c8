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
//! Implementations here: [`MemorySource`] (bytes already in memory) and, on
//! native targets only, [`FileSource`] (a local file).

use futures::future::LocalBoxFuture;

#[cfg(not(target_arch = "wasm32"))]
mod file;
mod memory;

#[cfg(not(target_arch = "wasm32"))]
pub use file::FileSource;
pub use memory::MemorySource;

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
