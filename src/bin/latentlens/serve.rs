//! `latentlens serve`: a small static file server for the page (std::net,
//! one thread per connection). What the page needs and a plain
//! `python -m http.server` lacks: HTTP `Range` requests (the bank is read by
//! byte ranges), `application/wasm` (streaming compilation), COOP/COEP
//! headers (cross-origin isolation for threaded wasm / ONNX Runtime), and
//! ETag revalidation so a reload does not download the model again.
//! Not a production server: bind it to localhost.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::Context;

/// Arguments of `latentlens serve`.
#[derive(clap::Args)]
pub struct Args {
    /// The folder to serve (the built page: www/dist).
    #[arg(default_value = "www/dist")]
    root: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Log every request to stderr.
    #[arg(long)]
    verbose: bool,
}

/// Runs the server until killed.
pub fn run(args: Args) -> anyhow::Result<()> {
    let root = args.root.canonicalize().with_context(|| format!("serve: {} is not a folder (build the page first: ./build.sh serve)", args.root.display()))?;
    let listener = TcpListener::bind(&args.addr).with_context(|| format!("serve: cannot listen on {} (in use?)", args.addr))?;
    eprintln!("serving {} on http://{}/", root.display(), args.addr);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let root = root.clone();
        let verbose = args.verbose;
        std::thread::spawn(move || {
            if let Err(e) = handle(stream, &root, verbose) {
                if verbose {
                    eprintln!("serve: {e:#}");
                }
            }
        });
    }
    Ok(())
}

/// MIME type by extension.
fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        "txt" | "md" => "text/plain; charset=utf-8",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// The file a URL path names under `root`, refusing `..` and absolute parts.
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let path = url_path.split(['?', '#']).next().unwrap_or("/");
    let decoded = percent_decode(path)?;
    let mut out = root.to_path_buf();
    for c in Path::new(decoded.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.is_dir() {
        out.push("index.html");
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `bytes=a-b`, `bytes=a-`, `bytes=-n` against `len`: the inclusive
/// range, or `Err(())` when unsatisfiable. Multiple ranges are not supported
/// (the first is served).
fn parse_range(h: &str, len: u64) -> Result<(u64, u64), ()> {
    let spec = h.trim().strip_prefix("bytes=").ok_or(())?;
    let first = spec.split(',').next().ok_or(())?.trim();
    let (a, b) = first.split_once('-').ok_or(())?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len.checked_sub(1).ok_or(())?)
    } else {
        let s: u64 = a.parse().map_err(|_| ())?;
        let e: u64 = if b.is_empty() { len.saturating_sub(1) } else { b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1)) };
        (s, e)
    };
    if start > end || start >= len {
        return Err(());
    }
    Ok((start, end))
}

fn handle(stream: TcpStream, root: &Path, verbose: bool) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("/").to_string());
        let mut range = None;
        let mut if_none_match = None;
        let mut keep_alive = true;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "range" => range = Some(v.trim().to_string()),
                    "if-none-match" => if_none_match = Some(v.trim().to_string()),
                    "connection" => keep_alive = !v.trim().eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let status = respond(&mut stream, root, &method, &target, range.as_deref(), if_none_match.as_deref())?;
        if verbose {
            eprintln!("{method} {target} {} -> {status}", range.as_deref().unwrap_or(""));
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

const COMMON: &str = "Cross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Embedder-Policy: require-corp\r\n\
Cross-Origin-Resource-Policy: same-origin\r\nX-Content-Type-Options: nosniff\r\nAccept-Ranges: bytes\r\n";

fn respond(
    out: &mut TcpStream,
    root: &Path,
    method: &str,
    target: &str,
    range: Option<&str>,
    if_none_match: Option<&str>,
) -> anyhow::Result<u16> {
    if method != "GET" && method != "HEAD" {
        write!(out, "HTTP/1.1 405 Method Not Allowed\r\n{COMMON}Allow: GET, HEAD\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(405);
    }
    let file = resolve(root, target).filter(|p| p.is_file());
    let Some(path) = file else {
        let body = b"not found\n";
        write!(out, "HTTP/1.1 404 Not Found\r\n{COMMON}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n", body.len())?;
        if method == "GET" {
            out.write_all(body)?;
        }
        return Ok(404);
    };
    let mut f = std::fs::File::open(&path)?;
    let meta = f.metadata()?;
    let len = meta.len();
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
    let etag = format!("\"{len:x}-{mtime:x}\"");
    let head = format!("{COMMON}Content-Type: {}\r\nETag: {etag}\r\nCache-Control: no-cache\r\n", mime(&path));
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        write!(out, "HTTP/1.1 304 Not Modified\r\n{head}\r\n")?;
        return Ok(304);
    }
    let (status, start, end) = match range {
        Some(r) => match parse_range(r, len) {
            Ok((s, e)) => (206, s, e),
            Err(()) => {
                write!(out, "HTTP/1.1 416 Range Not Satisfiable\r\n{COMMON}Content-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n")?;
                return Ok(416);
            }
        },
        None => (200, 0, len.saturating_sub(1)),
    };
    let n = if len == 0 { 0 } else { end - start + 1 };
    if status == 206 {
        write!(out, "HTTP/1.1 206 Partial Content\r\n{head}Content-Range: bytes {start}-{end}/{len}\r\nContent-Length: {n}\r\n\r\n")?;
    } else {
        write!(out, "HTTP/1.1 200 OK\r\n{head}Content-Length: {n}\r\n\r\n")?;
    }
    if method == "GET" && n > 0 {
        f.seek(SeekFrom::Start(start))?;
        std::io::copy(&mut (&mut f).take(n), out)?;
    }
    out.flush()?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Ok((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Ok((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Ok((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-2", 100), Err(()));
        assert_eq!(parse_range("items=0-1", 100), Err(()));
    }

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/srv/x");
        assert_eq!(resolve(root, "/a/b.js?v=1"), Some(PathBuf::from("/srv/x/a/b.js")));
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/%2e%2e/etc/passwd"), None);
        assert_eq!(resolve(root, "/a%20b.txt"), Some(PathBuf::from("/srv/x/a b.txt")));
    }
}
