//! [`ChunkCache`]: where [`super::HttpSource`] keeps the chunks it downloaded,
//! so that a reload reads them locally and an interrupted download resumes.
//!
//! Keys are URLs (derived from the file's URL, see `url::cache_key`); values
//! are opaque bytes. The source wraps every value with a CRC-32 trailer and
//! drops entries that fail it, so a cache never has to be trusted.
//! Implementations: [`MemoryCache`] (this process), `DirCache` (a directory,
//! native) and `BrowserCache` (the browser's Cache API, wasm32).

use std::cell::RefCell;
use std::collections::HashMap;

use futures::future::LocalBoxFuture;

use super::FetchError;

/// A key-value store for downloaded chunks. Failures of `put` and `delete`
/// are not fatal to a download (the source goes on without caching).
pub trait ChunkCache {
    /// The value stored under `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<Option<Vec<u8>>, FetchError>>;
    /// Stores `value` under `key`, replacing what was there.
    fn put<'a>(&'a self, key: &'a str, value: &'a [u8]) -> LocalBoxFuture<'a, Result<(), FetchError>>;
    /// Removes `key` (no error when absent).
    fn delete<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<(), FetchError>>;
}

/// A [`ChunkCache`] in process memory (one page session, tests).
#[derive(Debug, Default)]
pub struct MemoryCache {
    map: RefCell<HashMap<String, Vec<u8>>>,
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.borrow().is_empty()
    }

    /// The keys, sorted (for inspection).
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.map.borrow().keys().cloned().collect();
        k.sort();
        k
    }

    /// Applies `f` to the stored value of `key` (to simulate storage damage in tests).
    pub fn modify(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) -> bool {
        match self.map.borrow_mut().get_mut(key) {
            Some(v) => {
                f(v);
                true
            }
            None => false,
        }
    }
}

impl ChunkCache for MemoryCache {
    fn get<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<Option<Vec<u8>>, FetchError>> {
        let v = self.map.borrow().get(key).cloned();
        Box::pin(async move { Ok(v) })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a [u8]) -> LocalBoxFuture<'a, Result<(), FetchError>> {
        self.map.borrow_mut().insert(key.to_string(), value.to_vec());
        Box::pin(async { Ok(()) })
    }

    fn delete<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<(), FetchError>> {
        self.map.borrow_mut().remove(key);
        Box::pin(async { Ok(()) })
    }
}

/// A [`ChunkCache`] in a local directory (native): one file per key, named
/// by the SHA-256 of the key, written atomically (temporary file + rename).
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone)]
pub struct DirCache {
    dir: std::path::PathBuf,
}

#[cfg(not(target_arch = "wasm32"))]
impl DirCache {
    /// Uses (and creates) `dir`.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Result<Self, FetchError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| FetchError::Io { path: dir.display().to_string(), source: e })?;
        Ok(Self { dir })
    }

    /// The file holding `key`.
    pub fn path_of(&self, key: &str) -> std::path::PathBuf {
        use sha2::Digest;
        let h = sha2::Sha256::digest(key.as_bytes());
        let name: String = h.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.chunk"))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ChunkCache for DirCache {
    fn get<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<Option<Vec<u8>>, FetchError>> {
        Box::pin(async move {
            let path = self.path_of(key);
            match std::fs::read(&path) {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(FetchError::Io { path: path.display().to_string(), source: e }),
            }
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a [u8]) -> LocalBoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            let path = self.path_of(key);
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let io = |e| FetchError::Io { path: path.display().to_string(), source: e };
            std::fs::write(&tmp, value).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            let path = self.path_of(key);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(FetchError::Io { path: path.display().to_string(), source: e })
                }
                _ => Ok(()),
            }
        })
    }
}

/// Trailer appended to every cached value: CRC-32 of the payload, then a tag.
const TRAILER_TAG: &[u8; 4] = b"LLc1";

/// `payload ‖ crc32(payload) LE ‖ "LLc1"`.
pub(crate) fn wrap(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.extend_from_slice(payload);
    v.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    v.extend_from_slice(TRAILER_TAG);
    v
}

/// The payload of a wrapped value, or `None` when the trailer is missing or wrong.
pub(crate) fn unwrap(mut value: Vec<u8>) -> Option<Vec<u8>> {
    let n = value.len().checked_sub(8)?;
    let (payload, trailer) = value.split_at(n);
    if &trailer[4..] != TRAILER_TAG {
        return None;
    }
    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc32fast::hash(payload) != crc {
        return None;
    }
    value.truncate(n);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_round_trips_and_catches_damage() {
        let w = wrap(b"hello");
        assert_eq!(unwrap(w.clone()).as_deref(), Some(&b"hello"[..]));
        let mut bad = w.clone();
        bad[1] ^= 1;
        assert_eq!(unwrap(bad), None);
        assert_eq!(unwrap(w[..w.len() - 1].to_vec()), None);
        assert_eq!(unwrap(Vec::new()), None);
        assert_eq!(unwrap(wrap(b"")).as_deref(), Some(&b""[..]));
    }
}
