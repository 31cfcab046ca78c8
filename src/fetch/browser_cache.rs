//! [`BrowserCache`]: a [`ChunkCache`] over the browser's Cache API (window
//! or worker; needs a secure context: https or localhost).
//!
//! The Cache API refuses `206 Partial Content` responses, so every chunk is
//! stored as its own `200` response under its own key URL
//! (`…?latentlens-chunk-…`), which never reaches a server.
//!
//! **Held writes.** A cold page load downloads ~120 MB on a machine that may have two cores;
//! every `cache.put` costs copies and a disk write that compete with the download and the
//! model forward (first neighbours 3.5 s uncached vs 4.1–4.7 s with the puts, localhost,
//! 2 cores). Between [`BrowserCache::hold_writes`] and [`BrowserCache::release_writes`] the
//! puts of every `BrowserCache` on this thread wait in a queue (their bytes in JS memory,
//! outside the wasm heap; `get` and `delete` see the queue), and are made on release. The
//! page holds them from the start of a load until its first neighbours are shown (or an
//! error, after which a reload must find what arrived).

use std::cell::{Cell, RefCell};

use futures::future::{join_all, LocalBoxFuture};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::{ChunkCache, FetchError};

/// A named cache of the Cache API (`caches.open(name)`).
#[derive(Debug, Clone)]
pub struct BrowserCache {
    cache: web_sys::Cache,
}

fn js_err(what: &str, e: JsValue) -> FetchError {
    let msg = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    FetchError::Cache(format!("{what}: {msg}"))
}

thread_local! {
    static HOLD: Cell<bool> = const { Cell::new(false) };
    /// Puts waiting for [`BrowserCache::release_writes`]: (cache, key, body).
    static PENDING: RefCell<Vec<(web_sys::Cache, String, js_sys::Uint8Array)>> = const { RefCell::new(Vec::new()) };
}

/// The bytes of the queued put of `key` (keys name the file's URL and the chunk, so they are
/// unique across caches; the values are checked by their CRC-32 trailer anyway).
fn pending_bytes(key: &str) -> Option<Vec<u8>> {
    PENDING.with(|p| p.borrow().iter().find(|(_, k, _)| k == key).map(|(_, _, b)| b.to_vec()))
}

/// Drops the queued put of `key`, if any.
fn forget_pending(key: &str) {
    PENDING.with(|p| p.borrow_mut().retain(|(_, k, _)| k != key));
}

async fn put_now(cache: &web_sys::Cache, key: &str, body: &js_sys::Uint8Array) -> Result<(), FetchError> {
    let init = web_sys::ResponseInit::new();
    init.set_status(200);
    let resp = web_sys::Response::new_with_opt_buffer_source_and_init(Some(body), &init).map_err(|e| js_err("new Response", e))?;
    JsFuture::from(cache.put_with_str(key, &resp)).await.map_err(|e| js_err("cache.put", e))?;
    Ok(())
}

impl BrowserCache {
    /// From now on, queue the puts of every `BrowserCache` on this thread instead of making
    /// them (see the module docs) until [`release_writes`](Self::release_writes).
    pub fn hold_writes() {
        HOLD.with(|h| h.set(true));
    }

    /// Stops holding and makes every queued put; resolves when they are all done (failed puts
    /// only cost a later re-download and are not reported). Returns how many were queued.
    pub async fn release_writes() -> usize {
        HOLD.with(|h| h.set(false));
        let queued = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
        let n = queued.len();
        join_all(queued.iter().map(|(c, k, b)| put_now(c, k, b))).await;
        n
    }

    /// Opens (creating if needed) the cache `name`; fails where the Cache
    /// API is unavailable (insecure context, some private modes).
    pub async fn open(name: &str) -> Result<Self, FetchError> {
        let global = js_sys::global();
        let caches = js_sys::Reflect::get(&global, &JsValue::from_str("caches"))
            .map_err(|e| js_err("no Cache API", e))?;
        if caches.is_undefined() || caches.is_null() {
            return Err(FetchError::Cache(
                "the Cache API is not available here (it needs https or localhost); downloads will not be cached"
                    .into(),
            ));
        }
        let caches: web_sys::CacheStorage =
            caches.dyn_into().map_err(|e| js_err("`caches` is not a CacheStorage", e))?;
        let cache = JsFuture::from(caches.open(name)).await.map_err(|e| js_err("caches.open", e))?;
        Ok(Self { cache: cache.unchecked_into() })
    }

    /// Deletes the whole cache `name` (all files cached under it).
    pub async fn delete_all(name: &str) -> Result<bool, FetchError> {
        let global = js_sys::global();
        let caches: web_sys::CacheStorage = js_sys::Reflect::get(&global, &JsValue::from_str("caches"))
            .map_err(|e| js_err("no Cache API", e))?
            .dyn_into()
            .map_err(|e| js_err("`caches` is not a CacheStorage", e))?;
        let r = JsFuture::from(caches.delete(name)).await.map_err(|e| js_err("caches.delete", e))?;
        Ok(r.as_bool().unwrap_or(false))
    }
}

impl ChunkCache for BrowserCache {
    fn get<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<Option<Vec<u8>>, FetchError>> {
        Box::pin(async move {
            if let Some(bytes) = pending_bytes(key) {
                return Ok(Some(bytes));
            }
            let r = JsFuture::from(self.cache.match_with_str(key)).await.map_err(|e| js_err("cache.match", e))?;
            if r.is_undefined() || r.is_null() {
                return Ok(None);
            }
            let resp: web_sys::Response = r.dyn_into().map_err(|e| js_err("cache.match result", e))?;
            let buf = JsFuture::from(resp.array_buffer().map_err(|e| js_err("arrayBuffer", e))?)
                .await
                .map_err(|e| js_err("reading a cached chunk", e))?;
            Ok(Some(js_sys::Uint8Array::new(&buf).to_vec()))
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a [u8]) -> LocalBoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            let body = js_sys::Uint8Array::from(value);
            if HOLD.with(Cell::get) {
                forget_pending(key);
                PENDING.with(|p| p.borrow_mut().push((self.cache.clone(), key.to_string(), body)));
                return Ok(());
            }
            put_now(&self.cache, key, &body).await
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            forget_pending(key);
            JsFuture::from(self.cache.delete_with_str(key)).await.map_err(|e| js_err("cache.delete", e))?;
            Ok(())
        })
    }
}
