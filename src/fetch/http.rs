//! [`HttpSource`]: a [`ByteSource`] over a URL, read with HTTP `Range`
//! requests in fixed-size chunks, cached, resumable, with progress; and
//! [`fetch_all`], the same machinery for a whole file.
//!
//! The file is cut into a fixed grid of [`FetchOptions::chunk_size`] chunks.
//! A read takes the chunks it covers from the [`ChunkCache`] when present and
//! fetches the missing ones, neighbours coalesced into one `Range` request of
//! at most [`FetchOptions::max_request`] bytes. Each chunk is stored in the
//! cache (wrapped with a CRC-32 trailer) as soon as it has arrived whole, so a
//! connection dropped mid-body costs at most one chunk: the retry (with
//! exponential backoff, transient errors only) asks for the rest. Cache
//! entries failing their trailer are deleted and refetched, and readers that
//! find a section checksum wrong call [`ByteSource::evict`] and read again.
//!
//! Opening costs one request (`Range: bytes=0-{chunk_size-1}`, which also
//! yields chunk 0 and the total length from `Content-Range`) unless the cache
//! already knows the file (then none, so a reload works offline); set
//! [`FetchOptions::revalidate`] to always ask the server. The chunk keys
//! carry the chunk size, total length and ETag, so a changed file never
//! mixes with old chunks.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::rc::Rc;

use futures::future::{join_all, LocalBoxFuture};

use super::cache::{unwrap, wrap, ChunkCache};
use super::clock::{now_ms, sleep_ms};
use super::progress::{Progress, ProgressFn};
use super::transport::{get, Response};
use super::url::cache_key;
use super::{check_range, ByteSource, FetchError};

/// Smallest and largest accepted chunk size.
const MIN_CHUNK: u64 = 4 * 1024;
const MAX_CHUNK: u64 = 64 * 1024 * 1024;
/// Largest file accepted (bounds every allocation a server's answer can cause).
pub const MAX_FILE_LEN: u64 = 1 << 40;

/// How [`HttpSource`] and [`fetch_all`] download.
#[derive(Clone)]
pub struct FetchOptions {
    /// Grid chunk size in bytes: the unit of caching, resuming and the
    /// smallest network read (default 256 KiB; 4 KiB ..= 64 MiB).
    pub chunk_size: u64,
    /// Most bytes asked for in one Range request (whole chunks; default 4 MiB).
    pub max_request: u64,
    /// Retries of a request after a transient error (default 4).
    pub retries: u32,
    /// First retry delay in ms, doubled each retry, capped at 8 s (default 200).
    pub backoff_ms: u64,
    /// Socket connect/read timeout in ms (native only; default 30 s).
    pub timeout_ms: u64,
    /// Ask the server for the length and ETag on open even when the cache
    /// knows the file (default false: a cached file opens offline).
    pub revalidate: bool,
    /// Called after every chunk obtained.
    pub progress: Option<ProgressFn>,
    /// Where chunks are kept between reads and sessions (default none).
    pub cache: Option<Rc<dyn ChunkCache>>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            chunk_size: 256 * 1024,
            max_request: 4 * 1024 * 1024,
            retries: 4,
            backoff_ms: 200,
            timeout_ms: 30_000,
            revalidate: false,
            progress: None,
            cache: None,
        }
    }
}

impl fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchOptions")
            .field("chunk_size", &self.chunk_size)
            .field("max_request", &self.max_request)
            .field("retries", &self.retries)
            .field("backoff_ms", &self.backoff_ms)
            .field("timeout_ms", &self.timeout_ms)
            .field("revalidate", &self.revalidate)
            .field("progress", &self.progress.is_some())
            .field("cache", &self.cache.is_some())
            .finish()
    }
}

impl FetchOptions {
    /// These options with a progress callback.
    pub fn with_progress(mut self, f: impl Fn(&Progress) + 'static) -> Self {
        self.progress = Some(Rc::new(f));
        self
    }

    /// These options with a chunk cache.
    pub fn with_cache(mut self, cache: Rc<dyn ChunkCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// These options with another chunk size.
    pub fn with_chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes;
        self
    }

    fn check(&self, url: &str) -> Result<(), FetchError> {
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk_size) {
            return Err(FetchError::BadUrl {
                url: url.to_string(),
                reason: format!("chunk size {} is not in {MIN_CHUNK}..={MAX_CHUNK} bytes", self.chunk_size),
            });
        }
        Ok(())
    }
}

#[derive(Default)]
struct Counters {
    /// Chunks obtained at least once (so `loaded` counts distinct bytes).
    seen: HashSet<u64>,
    loaded: u64,
    from_cache: u64,
    net_bytes: u64,
    net_ms: f64,
    requests: u64,
}

/// A [`ByteSource`] over a URL (see the module docs). Not `Send`.
pub struct HttpSource {
    url: String,
    total: u64,
    etag: Option<String>,
    opts: FetchOptions,
    counters: RefCell<Counters>,
    /// Chunk 0 as the opening request brought it (the bank header is read
    /// right after open; no second download without a cache).
    chunk0: RefCell<Option<Vec<u8>>>,
    /// The cache knew nothing of this file when it was opened (no meta entry):
    /// then no chunk can be there but the ones this source stored, and the
    /// others are not looked up (a first download costs no cache reads).
    cold: bool,
}

impl fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSource").field("url", &self.url).field("total", &self.total).field("etag", &self.etag).finish()
    }
}

/// What the meta cache entry records about a file.
#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    total: u64,
    etag: Option<String>,
    chunk_size: u64,
}

fn proto(url: &str, message: impl Into<String>) -> FetchError {
    FetchError::Protocol { url: url.to_string(), message: message.into() }
}

fn http_err(url: &str, resp: &Response) -> FetchError {
    FetchError::Http { url: url.to_string(), status: resp.head.status, status_text: resp.head.status_text.clone() }
}

impl HttpSource {
    /// Opens `url`: learns its length (one small request, or none when the
    /// cache knows it) and checks that the server honours Range requests
    /// ([`FetchError::RangeIgnored`] otherwise, unless the whole file fits
    /// in one chunk).
    pub async fn open(url: &str, opts: FetchOptions) -> Result<Self, FetchError> {
        opts.check(url)?;
        let meta_key = cache_key(url, &format!("meta-{}", opts.chunk_size));
        let cached_meta = match &opts.cache {
            Some(c) => cache_get(&**c, &meta_key).await.and_then(|v| serde_json::from_slice::<Meta>(&v).ok()),
            None => None,
        };
        if let Some(m) = &cached_meta {
            if !opts.revalidate && m.chunk_size == opts.chunk_size && m.total <= MAX_FILE_LEN {
                return Ok(Self::new(url, m.total, m.etag.clone(), opts));
            }
        }
        let mut attempt = 0;
        loop {
            match Self::probe(url, &opts).await {
                Ok((mut src, chunk0)) => {
                    src.cold = cached_meta.is_none();
                    if let Some(c) = &src.opts.cache {
                        let m = Meta { total: src.total, etag: src.etag.clone(), chunk_size: src.opts.chunk_size };
                        if let Ok(json) = serde_json::to_vec(&m) {
                            let _ = c.put(&meta_key, &wrap(&json)).await;
                        }
                    }
                    if let Some(bytes) = chunk0 {
                        src.store(0, &bytes).await;
                        src.count(0, bytes.len() as u64, false);
                        *src.chunk0.borrow_mut() = Some(bytes);
                    }
                    return Ok(src);
                }
                Err(e) if e.is_transient() && attempt < opts.retries => {
                    attempt += 1;
                    sleep_ms(backoff(opts.backoff_ms, attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn new(url: &str, total: u64, etag: Option<String>, opts: FetchOptions) -> Self {
        Self {
            url: url.to_string(),
            total,
            etag,
            opts,
            counters: RefCell::new(Counters::default()),
            chunk0: RefCell::new(None),
            cold: false,
        }
    }

    /// First request: `Range: bytes=0-{cs-1}`; returns the source and chunk 0.
    async fn probe(url: &str, opts: &FetchOptions) -> Result<(Self, Option<Vec<u8>>), FetchError> {
        let cs = opts.chunk_size;
        let t0 = now_ms();
        let mut resp = get(url, Some((0, cs - 1)), opts.timeout_ms).await?;
        let head = resp.head.clone();
        let (total, expect) = match head.status {
            206 => {
                let cr = head.content_range.ok_or_else(|| {
                    proto(
                        url,
                        "206 without a readable Content-Range header (a cross-origin server must also send \
                         `Access-Control-Expose-Headers: Content-Range`)",
                    )
                })?;
                let total = cr.total.ok_or_else(|| proto(url, "Content-Range without the total length (`/*`)"))?;
                let want = (0, cs.min(total).saturating_sub(1));
                if cr.range != Some(want) || total == 0 {
                    return Err(proto(url, format!("asked for bytes 0-{}, got Content-Range {:?}", cs - 1, cr)));
                }
                (total, want.1 + 1)
            }
            200 => match head.content_length {
                // The whole file fits in one chunk: a full answer is the answer.
                Some(n) if n <= cs => (n, n),
                _ => return Err(FetchError::RangeIgnored { url: url.to_string(), status: 200 }),
            },
            416 => match head.content_range {
                Some(cr) if cr.total == Some(0) => (0, 0),
                _ => return Err(http_err(url, &resp)),
            },
            _ => return Err(http_err(url, &resp)),
        };
        if total > MAX_FILE_LEN {
            return Err(FetchError::TooLarge { name: url.to_string(), len: total });
        }
        let src = Self::new(url, total, head.etag.clone(), opts.clone());
        if expect == 0 {
            return Ok((src, None));
        }
        let mut body = Vec::with_capacity(expect as usize);
        while let Some(p) = resp.next_piece().await? {
            if body.len() as u64 + p.len() as u64 > expect {
                return Err(proto(url, format!("more than the {expect} bytes asked for")));
            }
            body.extend_from_slice(&p);
        }
        if (body.len() as u64) < expect {
            return Err(FetchError::Network {
                url: url.to_string(),
                message: format!("the body ended after {} of {expect} bytes", body.len()),
            });
        }
        {
            let mut c = src.counters.borrow_mut();
            c.net_bytes += expect;
            c.net_ms += now_ms() - t0;
            c.requests += 1;
        }
        Ok((src, Some(body)))
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The server's ETag, if it sent one.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// Progress so far (what the callback last saw).
    pub fn progress(&self) -> Progress {
        let c = self.counters.borrow();
        Progress {
            url: self.url.clone(),
            loaded: c.loaded,
            total: self.total,
            bytes_per_s: if c.net_ms > 0.0 { c.net_bytes as f64 / (c.net_ms / 1e3) } else { 0.0 },
            from_cache: c.from_cache,
        }
    }

    /// Number of HTTP requests made so far (the probe included).
    pub fn requests(&self) -> u64 {
        self.counters.borrow().requests
    }

    /// Bytes received from the network so far.
    pub fn network_bytes(&self) -> u64 {
        self.counters.borrow().net_bytes
    }

    /// The whole file (chunked, cached, resumable like any read).
    pub async fn read_all(&self) -> Result<Vec<u8>, FetchError> {
        self.read_all_with(&mut |_| {}).await
    }

    /// [`read_all`](Self::read_all), calling `on_prefix` with the bytes received so far (always
    /// a prefix of the file, growing chunk by chunk, cached or downloaded) so a consumer can
    /// parse and convert what has arrived while the rest is still on the wire.
    pub async fn read_all_with(&self, on_prefix: &mut dyn FnMut(&[u8])) -> Result<Vec<u8>, FetchError> {
        let len = usize::try_from(self.total).map_err(|_| FetchError::TooLarge { name: self.url.clone(), len: self.total })?;
        self.read_range_with(0, len, on_prefix).await
    }

    fn n_chunks(&self) -> u64 {
        self.total.div_ceil(self.opts.chunk_size)
    }

    /// Byte range `[start, end)` of chunk `i`.
    fn chunk_span(&self, i: u64) -> (u64, u64) {
        let cs = self.opts.chunk_size;
        (i * cs, ((i + 1) * cs).min(self.total))
    }

    fn chunk_key(&self, i: u64) -> String {
        let tag = match &self.etag {
            Some(e) => format!("{:08x}", crc32fast::hash(e.as_bytes())),
            None => "none".into(),
        };
        cache_key(&self.url, &format!("chunk-{}-{}-{tag}-{i}", self.opts.chunk_size, self.total))
    }

    async fn cached(&self, i: u64) -> Option<Vec<u8>> {
        if i == 0 {
            if let Some(c0) = self.chunk0.borrow().as_ref() {
                return Some(c0.clone());
            }
        }
        let cache = self.opts.cache.as_ref()?;
        if self.cold && !self.counters.borrow().seen.contains(&i) {
            return None;
        }
        let key = self.chunk_key(i);
        let v = cache_get(&**cache, &key).await?;
        let (a, b) = self.chunk_span(i);
        if v.len() as u64 != b - a {
            let _ = cache.delete(&key).await;
            return None;
        }
        Some(v)
    }

    /// Puts chunk `i` in the cache. A full or failing cache only costs a later
    /// re-download, so errors are dropped. In the browser the put runs in the
    /// background (the Cache API writes off the thread; awaiting each 256 KiB
    /// put before reading on halved the download rate); natively it is awaited.
    async fn store(&self, i: u64, bytes: &[u8]) {
        let Some(cache) = &self.opts.cache else { return };
        let (key, value) = (self.chunk_key(i), wrap(bytes));
        #[cfg(target_arch = "wasm32")]
        {
            let cache = cache.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let _ = cache.put(&key, &value).await;
            });
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = cache.put(&key, &value).await;
        }
    }

    /// Counts chunk `i` once and reports progress (nothing for a chunk seen before).
    fn count(&self, i: u64, len: u64, from_cache: bool) {
        let p = {
            let mut c = self.counters.borrow_mut();
            if !c.seen.insert(i) {
                return;
            }
            c.loaded += len;
            if from_cache {
                c.from_cache += len;
            }
            drop(c);
            self.progress()
        };
        if let Some(f) = &self.opts.progress {
            f(&p);
        }
    }

    /// Reads `[offset, offset + len)`: cached chunks from the cache, missing
    /// runs from the network.
    async fn read_range(&self, offset: u64, len: usize) -> Result<Vec<u8>, FetchError> {
        self.read_range_with(offset, len, &mut |_| {}).await
    }

    /// `len` bytes at `offset`; `on_prefix` sees the bytes read so far after every chunk.
    async fn read_range_with(&self, offset: u64, len: usize, on_prefix: &mut dyn FnMut(&[u8])) -> Result<Vec<u8>, FetchError> {
        check_range(&self.url, offset, len, self.total)?;
        let mut out = Vec::new();
        out.try_reserve_exact(len).map_err(|_| FetchError::TooLarge { name: self.url.clone(), len: len as u64 })?;
        if len == 0 {
            return Ok(out);
        }
        let cs = self.opts.chunk_size;
        let end = offset + len as u64;
        let (c0, c1) = (offset / cs, (end - 1) / cs);
        let per_request = (self.opts.max_request / cs).max(1);
        let mut append = |out: &mut Vec<u8>, i: u64, data: &[u8]| {
            let (a, _) = self.chunk_span(i);
            let from = offset.max(a) - a;
            let to = (end.min(a + data.len() as u64) - a) as usize;
            out.extend_from_slice(&data[from as usize..to]);
            on_prefix(out);
        };
        // Batches of up to `per_request` chunks: their cache lookups run
        // concurrently, then each run of missing chunks is one Range request.
        let mut c = c0;
        while c <= c1 {
            let batch_end = (c + per_request - 1).min(c1);
            let mut found: Vec<Option<Vec<u8>>> = join_all((c..=batch_end).map(|i| self.cached(i))).await;
            let mut i = c;
            while i <= batch_end {
                if let Some(data) = found[(i - c) as usize].take() {
                    self.count(i, data.len() as u64, true);
                    append(&mut out, i, &data);
                    i += 1;
                    continue;
                }
                let mut last = i;
                while last < batch_end && found[(last + 1 - c) as usize].is_none() {
                    last += 1;
                }
                self.fetch_run(i, last, &mut |j, data| append(&mut out, j, data)).await?;
                i = last + 1;
            }
            c = batch_end + 1;
        }
        if out.len() != len {
            return Err(FetchError::ShortRead { name: self.url.clone(), offset, expected: len as u64, got: out.len() as u64 });
        }
        Ok(out)
    }

    /// Fetches chunks `first..=last` (all missing), resuming after a dropped
    /// connection from the first chunk not yet received.
    async fn fetch_run(&self, first: u64, last: u64, sink: &mut dyn FnMut(u64, &[u8])) -> Result<(), FetchError> {
        let mut next = first;
        let mut attempt = 0u32;
        while next <= last {
            let before = next;
            match self.stream_chunks(next, last, &mut next, sink).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && (attempt < self.opts.retries || next > before) => {
                    // Progress resets the retry budget: each retry resumes further on.
                    attempt = if next > before { 1 } else { attempt + 1 };
                    sleep_ms(backoff(self.opts.backoff_ms, attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One Range request for chunks `first..=last`; advances `*next` past
    /// every chunk received whole (stored, counted and passed to `sink`).
    async fn stream_chunks(
        &self,
        first: u64,
        last: u64,
        next: &mut u64,
        sink: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<(), FetchError> {
        let (a, _) = self.chunk_span(first);
        let (_, b) = self.chunk_span(last);
        let t0 = now_ms();
        self.counters.borrow_mut().requests += 1;
        let mut resp = get(&self.url, Some((a, b - 1)), self.opts.timeout_ms).await?;
        self.check_range_answer(&resp, a, b)?;
        let mut buf: Vec<u8> = Vec::new();
        let mut received = 0u64;
        let result = loop {
            let piece = match resp.next_piece().await {
                Ok(Some(p)) => p,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            received += piece.len() as u64;
            if received > b - a {
                break Err(proto(&self.url, format!("more than the {} bytes asked for", b - a)));
            }
            buf.extend_from_slice(&piece);
            // Hand over every chunk that is now whole.
            while *next <= last {
                let (ca, cb) = self.chunk_span(*next);
                let clen = (cb - ca) as usize;
                if buf.len() < clen {
                    break;
                }
                let rest = buf.split_off(clen);
                let chunk = std::mem::replace(&mut buf, rest);
                self.store(*next, &chunk).await;
                self.counters.borrow_mut().net_bytes += chunk.len() as u64;
                self.count(*next, chunk.len() as u64, false);
                sink(*next, &chunk);
                *next += 1;
            }
        };
        self.counters.borrow_mut().net_ms += now_ms() - t0;
        result?;
        if *next <= last {
            return Err(FetchError::Network {
                url: self.url.clone(),
                message: format!("the body ended after {received} of {} bytes", b - a),
            });
        }
        Ok(())
    }
}

impl HttpSource {
    /// `[offset, offset + len)` in one Range request of exactly those bytes,
    /// bypassing the chunk grid and the cache (small random reads: one exact
    /// bank row is 1 KiB, its chunk 256 KiB). Retried on transient errors.
    async fn read_exact_range(&self, offset: u64, len: usize) -> Result<Vec<u8>, FetchError> {
        check_range(&self.url, offset, len, self.total)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut attempt = 0u32;
        loop {
            match self.read_exact_once(offset, len).await {
                Err(e) if e.is_transient() && attempt < self.opts.retries => {
                    attempt += 1;
                    sleep_ms(backoff(self.opts.backoff_ms, attempt)).await;
                }
                r => return r,
            }
        }
    }

    /// Checks the head of the answer to a request for bytes `[a, b)`: 206
    /// with exactly that Content-Range (or 200 when the whole file was asked
    /// for), the same length and ETag as at open, a matching Content-Length.
    fn check_range_answer(&self, resp: &Response, a: u64, b: u64) -> Result<(), FetchError> {
        let h = &resp.head;
        match h.status {
            206 => {
                let cr = h.content_range.ok_or_else(|| proto(&self.url, "206 without a readable Content-Range header"))?;
                if let Some(t) = cr.total {
                    if t != self.total {
                        return Err(FetchError::Changed {
                            url: self.url.clone(),
                            message: format!("its length is {t} bytes now, {} before", self.total),
                        });
                    }
                }
                if cr.range != Some((a, b - 1)) {
                    return Err(proto(&self.url, format!("asked for bytes {a}-{}, got Content-Range {cr:?}", b - 1)));
                }
            }
            // A full-file answer is fine when the whole file was asked for.
            200 if a == 0 && b == self.total => {}
            200 => return Err(FetchError::RangeIgnored { url: self.url.clone(), status: 200 }),
            _ => return Err(http_err(&self.url, resp)),
        }
        if let (Some(old), Some(new)) = (&self.etag, &h.etag) {
            if old != new {
                return Err(FetchError::Changed { url: self.url.clone(), message: format!("ETag {new}, was {old}") });
            }
        }
        if let Some(n) = h.content_length {
            if n != b - a {
                return Err(proto(&self.url, format!("Content-Length {n} for a range of {} bytes", b - a)));
            }
        }
        Ok(())
    }

    async fn read_exact_once(&self, offset: u64, len: usize) -> Result<Vec<u8>, FetchError> {
        let (a, b) = (offset, offset + len as u64);
        let t0 = now_ms();
        self.counters.borrow_mut().requests += 1;
        let mut resp = get(&self.url, Some((a, b - 1)), self.opts.timeout_ms).await?;
        self.check_range_answer(&resp, a, b)?;
        let mut out = Vec::with_capacity(len);
        while let Some(piece) = resp.next_piece().await? {
            if out.len() + piece.len() > len {
                return Err(proto(&self.url, format!("more than the {len} bytes asked for")));
            }
            out.extend_from_slice(&piece);
        }
        {
            let mut c = self.counters.borrow_mut();
            c.net_bytes += out.len() as u64;
            c.net_ms += now_ms() - t0;
        }
        if out.len() != len {
            return Err(FetchError::Network { url: self.url.clone(), message: format!("the body ended after {} of {len} bytes", out.len()) });
        }
        Ok(out)
    }
}

fn backoff(base_ms: u64, attempt: u32) -> u64 {
    base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(16)).min(8_000)
}

/// A cached value whose trailer checks out; a damaged entry is deleted.
async fn cache_get(cache: &dyn ChunkCache, key: &str) -> Option<Vec<u8>> {
    let v = cache.get(key).await.ok()??;
    match unwrap(v) {
        Some(p) => Some(p),
        None => {
            let _ = cache.delete(key).await;
            None
        }
    }
}

impl ByteSource for HttpSource {
    fn name(&self) -> &str {
        &self.url
    }

    fn total_len(&self) -> LocalBoxFuture<'_, Result<u64, FetchError>> {
        let t = self.total;
        Box::pin(async move { Ok(t) })
    }

    fn read(&self, offset: u64, len: usize) -> LocalBoxFuture<'_, Result<Vec<u8>, FetchError>> {
        Box::pin(self.read_range(offset, len))
    }

    fn read_small(&self, offset: u64, len: usize) -> LocalBoxFuture<'_, Result<Vec<u8>, FetchError>> {
        Box::pin(self.read_exact_range(offset, len))
    }

    fn evict(&self, offset: u64, len: u64) -> LocalBoxFuture<'_, Result<bool, FetchError>> {
        Box::pin(async move {
            let dropped = offset < self.opts.chunk_size && self.chunk0.borrow_mut().take().is_some();
            let Some(cache) = &self.opts.cache else { return Ok(dropped) };
            if len == 0 || offset >= self.total {
                return Ok(true);
            }
            let cs = self.opts.chunk_size;
            let end = offset.saturating_add(len).min(self.total);
            for i in offset / cs..=(end - 1) / cs {
                cache.delete(&self.chunk_key(i)).await?;
                self.counters.borrow_mut().seen.remove(&i);
            }
            Ok(true)
        })
    }
}

/// Downloads the whole file at `url` through [`HttpSource`] (chunked,
/// cached, resumable, with progress). A server that ignores Range requests
/// is still read, in one plain GET (then nothing resumes, but the result is
/// cached for the next time).
pub async fn fetch_all(url: &str, opts: FetchOptions) -> Result<Vec<u8>, FetchError> {
    fetch_all_with(url, opts, &mut |_| {}).await
}

/// [`fetch_all`], calling `on_prefix` with the bytes received so far as they arrive (see
/// [`HttpSource::read_all_with`]; from a server without Range support, once, at the end).
pub async fn fetch_all_with(url: &str, opts: FetchOptions, on_prefix: &mut dyn FnMut(&[u8])) -> Result<Vec<u8>, FetchError> {
    match HttpSource::open(url, opts.clone()).await {
        Ok(src) => src.read_all_with(on_prefix).await,
        Err(FetchError::RangeIgnored { .. }) => {
            let all = fetch_whole(url, &opts).await?;
            on_prefix(&all);
            Ok(all)
        }
        Err(e) => Err(e),
    }
}

/// One plain GET of the whole file (servers without Range support), retried
/// from the start on transient errors; the chunks go to the cache.
async fn fetch_whole(url: &str, opts: &FetchOptions) -> Result<Vec<u8>, FetchError> {
    let mut attempt = 0;
    loop {
        match fetch_whole_once(url, opts).await {
            Err(e) if e.is_transient() && attempt < opts.retries => {
                attempt += 1;
                sleep_ms(backoff(opts.backoff_ms, attempt)).await;
            }
            r => return r,
        }
    }
}

async fn fetch_whole_once(url: &str, opts: &FetchOptions) -> Result<Vec<u8>, FetchError> {
    let t0 = now_ms();
    let mut resp = get(url, None, opts.timeout_ms).await?;
    if resp.head.status != 200 {
        return Err(http_err(url, &resp));
    }
    let expect = resp.head.content_length;
    if let Some(n) = expect {
        if n > MAX_FILE_LEN {
            return Err(FetchError::TooLarge { name: url.to_string(), len: n });
        }
    }
    let mut body = Vec::new();
    if let Some(n) = expect {
        body.try_reserve_exact(n as usize).map_err(|_| FetchError::TooLarge { name: url.to_string(), len: n })?;
    }
    let src = HttpSource::new(url, expect.unwrap_or(0), resp.head.etag.clone(), opts.clone());
    while let Some(p) = resp.next_piece().await? {
        body.extend_from_slice(&p);
        if body.len() as u64 > expect.unwrap_or(MAX_FILE_LEN) {
            return Err(proto(url, "the body is longer than announced"));
        }
        let mut c = src.counters.borrow_mut();
        c.net_bytes += p.len() as u64;
        c.loaded = body.len() as u64;
        c.net_ms = now_ms() - t0;
        drop(c);
        if let Some(f) = &opts.progress {
            let mut pr = src.progress();
            pr.total = expect.unwrap_or(0);
            f(&pr);
        }
    }
    if let Some(n) = expect {
        if (body.len() as u64) < n {
            return Err(FetchError::Network { url: url.to_string(), message: format!("the body ended after {} of {n} bytes", body.len()) });
        }
    }
    // Cache it in the chunk layout so the next open needs no request.
    if let Some(cache) = &opts.cache {
        let src = HttpSource::new(url, body.len() as u64, resp.head.etag.clone(), opts.clone());
        for i in 0..src.n_chunks() {
            let (a, b) = src.chunk_span(i);
            src.store(i, &body[a as usize..b as usize]).await;
        }
        let m = Meta { total: src.total, etag: src.etag.clone(), chunk_size: opts.chunk_size };
        if let Ok(json) = serde_json::to_vec(&m) {
            let _ = cache.put(&cache_key(url, &format!("meta-{}", opts.chunk_size)), &wrap(&json)).await;
        }
    }
    Ok(body)
}
