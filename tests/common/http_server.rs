//! A real HTTP/1.1 file server on 127.0.0.1 for the fetch tests (std::net,
//! one thread per connection), honouring single `Range: bytes=…` requests
//! like a static file server, with switchable misbehaviour: ignoring Range,
//! dropping the connection mid-body, announcing more bytes than it sends,
//! corrupting a byte once, answering 503 a few times.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Switchable misbehaviour (all off by default).
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Answer 200 with the whole file to every request.
    pub ignore_range: bool,
    /// For the next `n` requests, close the connection after `bytes` body bytes.
    pub drop_after: Option<(usize, usize)>,
    /// Always send only this many body bytes, after announcing the full length.
    pub truncate_body: Option<usize>,
    /// Flip the byte at this file offset in the next response that covers it.
    pub corrupt_once_at: Option<u64>,
    /// Answer 503 to the next `n` requests.
    pub unavailable: usize,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    behaviour: Behaviour,
    /// `(path, Range header or "-")` of every request, in order.
    log: Vec<(String, String)>,
}

/// A running server; lives until the process ends.
pub struct TestServer {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl TestServer {
    /// Serves `files` (path without the leading `/` → contents).
    pub fn start(files: Vec<(&str, Vec<u8>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a local port");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            files: files.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..State::default()
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &st);
                });
            }
        });
        Self { base, state }
    }

    /// URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// Changes the behaviour.
    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.state.lock().unwrap().behaviour);
    }

    /// Requests so far: `(path, range)`.
    pub fn log(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().log.clone()
    }

    /// Number of requests so far.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().log.len()
    }
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → inclusive range within `len`.
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let r = v.trim().strip_prefix("bytes=")?;
    if r.contains(',') {
        return None;
    }
    let (a, b) = r.split_once('-')?;
    let (a, b) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.saturating_sub(n), len.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, len.checked_sub(1)?),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(len.checked_sub(1)?)),
    };
    (a <= b && b < len).then_some((a, b))
}

fn handle(conn: TcpStream, st: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
    let path = path.split('?').next().unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let (file, b) = {
        let mut s = st.lock().unwrap();
        s.log.push((path.clone(), range.clone().unwrap_or_else(|| "-".into())));
        (s.files.get(&path).cloned(), s.behaviour.clone())
    };
    let mut out = conn;
    if b.unavailable > 0 {
        st.lock().unwrap().behaviour.unavailable -= 1;
        return out.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
    let Some(file) = file else {
        return out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found");
    };
    let len = file.len() as u64;
    let (status, start, end, extra) = match range.as_deref() {
        Some(r) if !b.ignore_range => match parse_range(r, len) {
            Some((a, z)) => (206, a, z + 1, format!("Content-Range: bytes {a}-{z}/{len}\r\n")),
            None => {
                let msg = format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                return out.write_all(msg.as_bytes());
            }
        },
        _ => (200, 0, len, String::new()),
    };
    let mut body = file[start as usize..end as usize].to_vec();
    if let Some(at) = b.corrupt_once_at {
        if (start..end).contains(&at) {
            body[(at - start) as usize] ^= 0x5a;
            st.lock().unwrap().behaviour.corrupt_once_at = None;
        }
    }
    let reason = if status == 206 { "Partial Content" } else { "OK" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nContent-Type: application/octet-stream\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())?;
    let mut send = body.len();
    if let Some((n, times)) = b.drop_after {
        if times > 0 {
            send = send.min(n);
            st.lock().unwrap().behaviour.drop_after = if times > 1 { Some((n, times - 1)) } else { None };
        }
    }
    if let Some(n) = b.truncate_body {
        send = send.min(n);
    }
    out.write_all(&body[..send])?;
    out.flush()?;
    // Dropping `out` closes the connection (early when `send` < the length).
    Ok(())
}
