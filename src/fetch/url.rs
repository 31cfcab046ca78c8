//! The little URL handling the fetchers need: splitting `http://` URLs for
//! the native client, resolving redirects, and deriving cache keys.

use super::FetchError;

/// An `http://host[:port]/path?query` URL split for a request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    /// Host as written (IPv6 literal without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl HttpUrl {
    /// `Host:` header value.
    pub fn host_header(&self) -> String {
        let h = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == 80 {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }

    /// Address for `TcpStream::connect`.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses an `http://` URL (the native client speaks plain HTTP/1.1 only).
pub(crate) fn parse_http(url: &str) -> Result<HttpUrl, FetchError> {
    let bad = |reason: &str| FetchError::BadUrl { url: url.to_string(), reason: reason.to_string() };
    let rest = if let Some(r) = strip_prefix_ci(url, "http://") {
        r
    } else if strip_prefix_ci(url, "https://").is_some() {
        return Err(bad(
            "https is not supported by the native client (no TLS); download the file and pass its path, \
             or serve it over http:// locally",
        ));
    } else {
        return Err(bad("only http:// URLs can be fetched natively"));
    };
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let target = if target.starts_with('?') { format!("/{target}") } else { target.to_string() };
    // Drop a fragment; it is never sent.
    let target = target.split('#').next().unwrap_or("/").to_string();
    if authority.contains('@') {
        return Err(bad("user:password@ in URLs is not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or_else(|| bad("unterminated IPv6 address"))?;
        let port = &v6[end + 1..];
        (v6[..end].to_string(), port.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None | Some("") => 80,
        Some(p) => p.parse::<u16>().map_err(|_| bad("the port is not a number in 1..=65535"))?,
    };
    if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("spaces or control characters in the path: percent-encode them"));
    }
    Ok(HttpUrl { host, port, target })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// Resolves a redirect `Location` against the URL that answered it.
pub(crate) fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[scheme_end..].find('/').map(|i| scheme_end + i).unwrap_or(base.len());
    if location.starts_with('/') {
        format!("{}{location}", &base[..authority_end])
    } else {
        let path = base.split(['?', '#']).next().unwrap_or(base);
        let dir_end = path.rfind('/').filter(|&i| i >= authority_end).map(|i| i + 1).unwrap_or(path.len());
        let dir = &path[..dir_end];
        if dir_end == path.len() && !dir.ends_with('/') {
            format!("{dir}/{location}")
        } else {
            format!("{dir}{location}")
        }
    }
}

/// A cache key derived from `url`: a URL too (the browser's Cache API keys
/// are requests), with a `latentlens-*` query parameter that never reaches a
/// server; the fragment is dropped (the Cache API ignores fragments).
pub(crate) fn cache_key(url: &str, suffix: &str) -> String {
    let base = url.split('#').next().unwrap_or(url);
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}latentlens-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls() {
        let u = parse_http("http://127.0.0.1:8080/banks/a.llbank?x=1#f").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.target.as_str()), ("127.0.0.1", 8080, "/banks/a.llbank?x=1"));
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        let u = parse_http("HTTP://example.org").unwrap();
        assert_eq!((u.port, u.target.as_str(), u.host_header().as_str()), (80, "/", "example.org"));
        let u = parse_http("http://[::1]:9/p").unwrap();
        assert_eq!((u.host.as_str(), u.authority().as_str()), ("::1", "[::1]:9"));
        assert!(matches!(parse_http("https://h/x"), Err(FetchError::BadUrl { .. })));
        assert!(matches!(parse_http("ftp://h/x"), Err(FetchError::BadUrl { .. })));
        assert!(matches!(parse_http("http://h:99999/x"), Err(FetchError::BadUrl { .. })));
        assert!(matches!(parse_http("http:///x"), Err(FetchError::BadUrl { .. })));
        assert!(matches!(parse_http("http://h/a b"), Err(FetchError::BadUrl { .. })));
    }

    #[test]
    fn resolves_redirects() {
        assert_eq!(resolve("http://h:1/a/b?q", "/c"), "http://h:1/c");
        assert_eq!(resolve("http://h:1/a/b?q", "c"), "http://h:1/a/c");
        assert_eq!(resolve("http://h:1/a/b", "http://o/x"), "http://o/x");
        assert_eq!(resolve("http://h", "c"), "http://h/c");
    }

    #[test]
    fn cache_keys_stay_urls() {
        assert_eq!(cache_key("http://h/f.bin#x", "meta"), "http://h/f.bin?latentlens-meta");
        assert_eq!(cache_key("http://h/f.bin?v=2", "c"), "http://h/f.bin?v=2&latentlens-c");
    }
}
