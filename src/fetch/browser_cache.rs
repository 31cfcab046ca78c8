//! [`BrowserCache`]: a [`ChunkCache`] over the browser's Cache API (window
//! or worker; needs a secure context: https or localhost).
//!
//! The Cache API refuses `206 Partial Content` responses, so every chunk is
//! stored as its own `200` response under its own key URL
//! (`…?latentlens-chunk-…`), which never reaches a server.

use futures::future::LocalBoxFuture;
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

impl BrowserCache {
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
            let init = web_sys::ResponseInit::new();
            init.set_status(200);
            let resp = web_sys::Response::new_with_opt_buffer_source_and_init(Some(&body), &init)
                .map_err(|e| js_err("new Response", e))?;
            JsFuture::from(self.cache.put_with_str(key, &resp)).await.map_err(|e| js_err("cache.put", e))?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            JsFuture::from(self.cache.delete_with_str(key)).await.map_err(|e| js_err("cache.delete", e))?;
            Ok(())
        })
    }
}
