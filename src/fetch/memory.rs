//! [`MemorySource`]: a [`ByteSource`] over bytes already in memory (tests,
//! a bank fetched whole, or a bank handed to the wasm module as one buffer).

use futures::future::LocalBoxFuture;

use super::{check_range, ByteSource, FetchError};

/// A [`ByteSource`] over an owned byte buffer.
#[derive(Debug, Clone)]
pub struct MemorySource {
    name: String,
    bytes: Vec<u8>,
}

impl MemorySource {
    /// Wraps `bytes`; the name used in messages is `"<memory>"`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self::with_name("<memory>", bytes)
    }

    /// Wraps `bytes` under a name used in error messages (e.g. the URL it came from).
    pub fn with_name(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            bytes: bytes.into(),
        }
    }

    /// The wrapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl ByteSource for MemorySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn total_len(&self) -> LocalBoxFuture<'_, Result<u64, FetchError>> {
        let len = self.bytes.len() as u64;
        Box::pin(async move { Ok(len) })
    }

    fn read(&self, offset: u64, len: usize) -> LocalBoxFuture<'_, Result<Vec<u8>, FetchError>> {
        Box::pin(async move {
            check_range(&self.name, offset, len, self.bytes.len() as u64)?;
            // In range per check_range, so both conversions and the slice succeed.
            let start = usize::try_from(offset).map_err(|_| FetchError::TooLarge {
                name: self.name.clone(),
                len: offset,
            })?;
            let slice =
                self.bytes
                    .get(start..start + len)
                    .ok_or_else(|| FetchError::OutOfRange {
                        name: self.name.clone(),
                        offset,
                        len: len as u64,
                        total: self.bytes.len() as u64,
                    })?;
            Ok(slice.to_vec())
        })
    }
}
