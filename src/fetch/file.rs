//! [`FileSource`]: a [`ByteSource`] over a local file (native targets only).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use futures::future::LocalBoxFuture;

use super::{check_range, ByteSource, FetchError};

/// A [`ByteSource`] over a local file, read with seek + read (synchronously
/// inside the returned future). The length is taken once, at open.
#[derive(Debug)]
pub struct FileSource {
    name: String,
    len: u64,
    file: Mutex<File>,
}

impl FileSource {
    /// Opens `path` for reading.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, FetchError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let io = |source| FetchError::Io {
            path: name.clone(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(Self {
            name,
            len,
            file: Mutex::new(file),
        })
    }

    fn read_sync(&self, offset: u64, len: usize) -> Result<Vec<u8>, FetchError> {
        check_range(&self.name, offset, len, self.len)?;
        let io = |source| FetchError::Io {
            path: self.name.clone(),
            source,
        };
        // A poisoned lock only means another reader panicked mid-read; the
        // file handle itself is still usable because every read seeks first.
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut buf = Vec::new();
        // `len` is within the file's length (checked above), so this is bounded by real data.
        buf.try_reserve_exact(len)
            .map_err(|_| FetchError::TooLarge {
                name: self.name.clone(),
                len: len as u64,
            })?;
        let got = (&mut *file)
            .take(len as u64)
            .read_to_end(&mut buf)
            .map_err(io)?;
        if got != len {
            return Err(FetchError::ShortRead {
                name: self.name.clone(),
                offset,
                expected: len as u64,
                got: got as u64,
            });
        }
        Ok(buf)
    }
}

impl ByteSource for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn total_len(&self) -> LocalBoxFuture<'_, Result<u64, FetchError>> {
        let len = self.len;
        Box::pin(async move { Ok(len) })
    }

    fn read(&self, offset: u64, len: usize) -> LocalBoxFuture<'_, Result<Vec<u8>, FetchError>> {
        Box::pin(async move { self.read_sync(offset, len) })
    }
}
