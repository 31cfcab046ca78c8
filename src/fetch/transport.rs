//! One HTTP GET with an optional byte range, streamed: natively a minimal
//! HTTP/1.1 client over `std::net` (plain `http://`, `Connection: close`,
//! Content-Length or chunked bodies, redirects); in the browser `fetch()`
//! (window or worker) with the body read through its `ReadableStream`.
//! Both hand the body over in pieces so a dropped connection keeps what
//! arrived (the caller resumes from the last whole chunk).

use super::FetchError;

/// A parsed `Content-Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContentRange {
    /// First and last byte (inclusive) sent, `None` for `bytes */total`.
    pub range: Option<(u64, u64)>,
    /// Complete length, `None` for `/*`.
    pub total: Option<u64>,
}

/// Status line and the headers the fetchers use.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub status: u16,
    pub status_text: String,
    pub content_length: Option<u64>,
    pub content_range: Option<ContentRange>,
    pub etag: Option<String>,
}

/// Parses `bytes a-b/total`, `bytes */total`, `bytes a-b/*`.
pub(crate) fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    let range = match range.trim() {
        "*" => None,
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b) = (a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?);
            if b < a {
                return None;
            }
            Some((a, b))
        }
    };
    Some(ContentRange { range, total })
}

pub(crate) use imp::{get, Response};

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    use super::super::url::{parse_http, resolve};
    use super::super::FetchError;
    use super::{parse_content_range, Head};

    /// Longest header block accepted.
    const MAX_HEAD: usize = 64 * 1024;
    /// Largest body piece handed over at once.
    const PIECE: usize = 64 * 1024;
    const MAX_REDIRECTS: usize = 5;

    enum Body {
        Length { remaining: u64, expected: u64 },
        Chunked { in_chunk: u64, done: bool },
        UntilClose,
        Done,
    }

    /// A response whose body is read piece by piece.
    pub(crate) struct Response {
        pub head: Head,
        url: String,
        reader: BufReader<TcpStream>,
        body: Body,
    }

    fn net(url: &str, message: impl Into<String>) -> FetchError {
        FetchError::Network { url: url.to_string(), message: message.into() }
    }

    fn proto(url: &str, message: impl Into<String>) -> FetchError {
        FetchError::Protocol { url: url.to_string(), message: message.into() }
    }

    /// GET `url` (with `Range: bytes=a-b` when `range` is given), following redirects.
    pub(crate) async fn get(url: &str, range: Option<(u64, u64)>, timeout_ms: u64) -> Result<Response, FetchError> {
        let mut current = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let resp = get_once(&current, range, timeout_ms)?;
            if matches!(resp.head.status, 301 | 302 | 303 | 307 | 308) {
                let loc = resp.location.clone().ok_or_else(|| {
                    proto(&current, format!("redirect {} without a Location header", resp.head.status))
                })?;
                current = resolve(&current, &loc);
                continue;
            }
            return Ok(resp.response);
        }
        Err(proto(url, format!("more than {MAX_REDIRECTS} redirects")))
    }

    struct Raw {
        response: Response,
        location: Option<String>,
    }

    impl std::ops::Deref for Raw {
        type Target = Response;
        fn deref(&self) -> &Response {
            &self.response
        }
    }

    fn get_once(url: &str, range: Option<(u64, u64)>, timeout_ms: u64) -> Result<Raw, FetchError> {
        let u = parse_http(url)?;
        let timeout = Duration::from_millis(timeout_ms.max(1));
        let addrs: Vec<_> = u
            .authority()
            .to_socket_addrs()
            .map_err(|e| net(url, format!("cannot resolve {}: {e}", u.host)))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| {
            net(url, format!("cannot connect to {}: {}", u.authority(), last.map(|e| e.to_string()).unwrap_or_else(|| "no address".into())))
        })?;
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let _ = stream.set_nodelay(true);
        let mut req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: latentlens/{}\r\nAccept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n",
            u.target,
            u.host_header(),
            env!("CARGO_PKG_VERSION")
        );
        if let Some((a, b)) = range {
            req.push_str(&format!("Range: bytes={a}-{b}\r\n"));
        }
        req.push_str("\r\n");
        (&stream).write_all(req.as_bytes()).map_err(|e| net(url, format!("sending the request: {e}")))?;

        let mut reader = BufReader::with_capacity(PIECE, stream);
        let mut head_len = 0usize;
        let mut read_line = |reader: &mut BufReader<TcpStream>| -> Result<String, FetchError> {
            let mut line = Vec::new();
            let n = reader
                .by_ref()
                .take((MAX_HEAD - head_len.min(MAX_HEAD)) as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| net(url, format!("reading the response head: {e}")))?;
            head_len += n;
            if head_len > MAX_HEAD {
                return Err(proto(url, format!("response head longer than {MAX_HEAD} bytes")));
            }
            if n == 0 || !line.ends_with(b"\n") {
                return Err(net(url, "the connection closed inside the response head"));
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            String::from_utf8(line).map_err(|_| proto(url, "response head is not UTF-8"))
        };
        let status_line = read_line(&mut reader)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(proto(url, format!("not an HTTP/1.x response: `{}`", status_line.chars().take(80).collect::<String>())));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| proto(url, format!("bad status line `{status_line}`")))?;
        let status_text = parts.next().unwrap_or_default().to_string();
        let mut head = Head { status, status_text, content_length: None, content_range: None, etag: None };
        let mut chunked = false;
        let mut location = None;
        loop {
            let line = read_line(&mut reader)?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(proto(url, format!("bad header line `{line}`")));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    head.content_length =
                        Some(value.parse().map_err(|_| proto(url, format!("bad Content-Length `{value}`")))?)
                }
                "content-range" => {
                    head.content_range = Some(
                        parse_content_range(value).ok_or_else(|| proto(url, format!("bad Content-Range `{value}`")))?,
                    )
                }
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "etag" => head.etag = Some(value.to_string()),
                "location" => location = Some(value.to_string()),
                _ => {}
            }
        }
        let body = if status == 204 || status == 304 {
            Body::Done
        } else if chunked {
            Body::Chunked { in_chunk: 0, done: false }
        } else if let Some(n) = head.content_length {
            Body::Length { remaining: n, expected: n }
        } else {
            Body::UntilClose
        };
        Ok(Raw { response: Response { head, url: url.to_string(), reader, body }, location })
    }

    impl Response {
        /// The next piece of the body, `None` at its end; a connection closed
        /// before the announced length is a [`FetchError::Network`].
        pub(crate) async fn next_piece(&mut self) -> Result<Option<Vec<u8>>, FetchError> {
            let url = self.url.clone();
            match &mut self.body {
                Body::Done => Ok(None),
                Body::Length { remaining, expected } => {
                    if *remaining == 0 {
                        self.body = Body::Done;
                        return Ok(None);
                    }
                    let want = (*remaining).min(PIECE as u64) as usize;
                    let mut buf = vec![0u8; want];
                    let n = self.reader.read(&mut buf).map_err(|e| net(&url, format!("reading the body: {e}")))?;
                    if n == 0 {
                        return Err(net(
                            &url,
                            format!(
                                "the connection closed after {} of {expected} body bytes",
                                *expected - *remaining
                            ),
                        ));
                    }
                    buf.truncate(n);
                    *remaining -= n as u64;
                    Ok(Some(buf))
                }
                Body::UntilClose => {
                    let mut buf = vec![0u8; PIECE];
                    let n = self.reader.read(&mut buf).map_err(|e| net(&url, format!("reading the body: {e}")))?;
                    if n == 0 {
                        self.body = Body::Done;
                        return Ok(None);
                    }
                    buf.truncate(n);
                    Ok(Some(buf))
                }
                Body::Chunked { in_chunk, done } => {
                    if *done {
                        return Ok(None);
                    }
                    if *in_chunk == 0 {
                        let mut line = String::new();
                        let n = (&mut self.reader)
                            .take(1024)
                            .read_line(&mut line)
                            .map_err(|e| net(&url, format!("reading a chunk size: {e}")))?;
                        if n == 0 {
                            return Err(net(&url, "the connection closed inside a chunked body"));
                        }
                        let line = line.trim();
                        if line.is_empty() {
                            // The CRLF that ends the previous chunk's data.
                            return Box::pin(self.next_piece()).await;
                        }
                        let size_hex = line.split(';').next().unwrap_or("").trim();
                        let size = u64::from_str_radix(size_hex, 16)
                            .map_err(|_| proto(&url, format!("bad chunk size `{size_hex}`")))?;
                        if size == 0 {
                            // Trailers until an empty line (bounded).
                            for _ in 0..64 {
                                let mut t = String::new();
                                let n = (&mut self.reader).take(8192).read_line(&mut t).unwrap_or(0);
                                if n == 0 || t.trim().is_empty() {
                                    break;
                                }
                            }
                            self.body = Body::Done;
                            return Ok(None);
                        }
                        if let Body::Chunked { in_chunk, .. } = &mut self.body {
                            *in_chunk = size;
                        }
                        return Box::pin(self.next_piece()).await;
                    }
                    let want = (*in_chunk).min(PIECE as u64) as usize;
                    let mut buf = vec![0u8; want];
                    let n = self.reader.read(&mut buf).map_err(|e| net(&url, format!("reading the body: {e}")))?;
                    if n == 0 {
                        return Err(net(&url, "the connection closed inside a chunked body"));
                    }
                    buf.truncate(n);
                    *in_chunk -= n as u64;
                    Ok(Some(buf))
                }
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;

    use super::super::FetchError;
    use super::{parse_content_range, Head};

    /// A `fetch()` response whose body is read through its stream reader.
    pub(crate) struct Response {
        pub head: Head,
        url: String,
        reader: Option<web_sys::ReadableStreamDefaultReader>,
    }

    fn js_msg(e: &JsValue) -> String {
        e.dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .or_else(|| e.as_string())
            .unwrap_or_else(|| format!("{e:?}"))
    }

    fn net(url: &str, what: &str, e: JsValue) -> FetchError {
        FetchError::Network { url: url.to_string(), message: format!("{what}: {}", js_msg(&e)) }
    }

    /// `fetch(url)` with `Range: bytes=a-b` when `range` is given (the
    /// browser follows redirects). `cache: no-store`: chunks are cached by
    /// our own cache, not twice by the HTTP cache.
    pub(crate) async fn get(url: &str, range: Option<(u64, u64)>, _timeout_ms: u64) -> Result<Response, FetchError> {
        let init = web_sys::RequestInit::new();
        init.set_method("GET");
        init.set_cache(web_sys::RequestCache::NoStore);
        let headers = web_sys::Headers::new().map_err(|e| net(url, "new Headers", e))?;
        if let Some((a, b)) = range {
            headers.set("Range", &format!("bytes={a}-{b}")).map_err(|e| net(url, "Range header", e))?;
        }
        init.set_headers(&headers);
        let req = web_sys::Request::new_with_str_and_init(url, &init)
            .map_err(|e| FetchError::BadUrl { url: url.to_string(), reason: js_msg(&e) })?;
        let global = js_sys::global();
        let fetch: js_sys::Function = js_sys::Reflect::get(&global, &JsValue::from_str("fetch"))
            .ok()
            .and_then(|f| f.dyn_into().ok())
            .ok_or_else(|| FetchError::Network { url: url.to_string(), message: "no fetch() in this context".into() })?;
        let promise: js_sys::Promise = fetch
            .call1(&global, &req)
            .map_err(|e| net(url, "fetch", e))?
            .dyn_into()
            .map_err(|e| net(url, "fetch did not return a promise", e))?;
        let resp: web_sys::Response = JsFuture::from(promise)
            .await
            .map_err(|e| net(url, "fetch failed (offline, CORS, or the server is down)", e))?
            .dyn_into()
            .map_err(|e| net(url, "fetch result", e))?;
        let h = resp.headers();
        let get = |name: &str| h.get(name).ok().flatten();
        let content_range = match get("content-range") {
            Some(v) => Some(parse_content_range(&v).ok_or_else(|| FetchError::Protocol {
                url: url.to_string(),
                message: format!("bad Content-Range `{v}`"),
            })?),
            None => None,
        };
        let head = Head {
            status: resp.status(),
            status_text: resp.status_text(),
            content_length: get("content-length").and_then(|v| v.trim().parse().ok()),
            content_range,
            etag: get("etag"),
        };
        let reader = match resp.body() {
            Some(stream) => Some(
                stream
                    .get_reader()
                    .dyn_into::<web_sys::ReadableStreamDefaultReader>()
                    .map_err(|e| net(url, "body reader", e.into()))?,
            ),
            None => None,
        };
        Ok(Response { head, url: url.to_string(), reader })
    }

    impl Response {
        /// The next piece of the body, `None` at its end.
        pub(crate) async fn next_piece(&mut self) -> Result<Option<Vec<u8>>, FetchError> {
            let Some(reader) = &self.reader else { return Ok(None) };
            let r = JsFuture::from(reader.read()).await.map_err(|e| net(&self.url, "reading the body", e))?;
            let done = js_sys::Reflect::get(&r, &JsValue::from_str("done")).ok().and_then(|d| d.as_bool()).unwrap_or(true);
            if done {
                self.reader = None;
                return Ok(None);
            }
            let value = js_sys::Reflect::get(&r, &JsValue::from_str("value")).map_err(|e| net(&self.url, "body piece", e))?;
            let arr: js_sys::Uint8Array = value.dyn_into().map_err(|e| net(&self.url, "body piece is not bytes", e))?;
            Ok(Some(arr.to_vec()))
        }
    }

    impl Drop for Response {
        fn drop(&mut self) {
            // Abandoning a body (a Range-ignoring server) cancels the download.
            if let Some(r) = self.reader.take() {
                let _ = r.cancel();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some(ContentRange { range: Some((0, 99)), total: Some(1000) })
        );
        assert_eq!(parse_content_range("bytes */1000"), Some(ContentRange { range: None, total: Some(1000) }));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some(ContentRange { range: Some((5, 9)), total: None }));
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes 0-x/2"), None);
    }
}
