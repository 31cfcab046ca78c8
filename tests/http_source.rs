//! HttpSource against a real local HTTP server (tests/common/http_server.rs):
//! Range reads equal the file, progress adds up, the cache serves a second
//! pass without a request, a dropped connection resumes from the last whole
//! chunk, and every broken server gives its named error.

#[path = "common/http_server.rs"]
mod http_server;

use std::cell::RefCell;
use std::rc::Rc;

use futures::executor::block_on;
use http_server::TestServer;
use latentlens::fetch::{fetch_all, fetch_all_with, ByteSource, DirCache, FetchError, FetchOptions, HttpSource, MemoryCache, Progress};

/// Deterministic xorshift bytes.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

const CS: u64 = 16 * 1024;

/// Small chunks (many requests), fast retries.
fn opts() -> FetchOptions {
    FetchOptions { chunk_size: CS, max_request: 4 * CS, retries: 3, backoff_ms: 1, ..FetchOptions::default() }
}

fn recording(o: FetchOptions) -> (FetchOptions, Rc<RefCell<Vec<Progress>>>) {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    (o.with_progress(move |p| l.borrow_mut().push(p.clone())), log)
}

#[test]
fn range_reads_equal_the_file() {
    let file = bytes(1, 300_001); // not a multiple of the chunk size
    let srv = TestServer::start(vec![("f.bin", file.clone())]);
    let src = block_on(HttpSource::open(&srv.url("f.bin"), opts())).unwrap();
    assert_eq!(src.len(), file.len() as u64);
    assert_eq!(block_on(src.total_len()).unwrap(), file.len() as u64);
    let cases: [(u64, usize); 8] =
        [(0, 1), (0, 10), (5, 100_000), (CS - 1, 2), (CS, CS as usize), (299_000, 1_001), (300_000, 1), (123_457, 0)];
    for (off, len) in cases {
        let got = block_on(src.read(off, len)).unwrap();
        assert_eq!(got, &file[off as usize..off as usize + len], "read {len} at {off}");
    }
    // Past the end: the shared OutOfRange error, no request.
    let before = srv.requests();
    assert!(matches!(block_on(src.read(300_000, 2)), Err(FetchError::OutOfRange { .. })));
    assert_eq!(srv.requests(), before);
    // Every request was a bounded Range request.
    for (_, r) in srv.log() {
        let (a, b) = r.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(a % CS, 0, "{r}: chunk aligned");
        assert!(b - a < 4 * CS, "{r}: at most max_request");
    }
    // Whole file, a big read: throughput from the local server.
    let big = bytes(2, 24 << 20);
    let srv = TestServer::start(vec![("big.bin", big.clone())]);
    let t = std::time::Instant::now();
    let got = block_on(fetch_all(&srv.url("big.bin"), FetchOptions::default())).unwrap();
    let s = t.elapsed().as_secs_f64();
    assert!(got == big);
    eprintln!(
        "fetch_all of 24 MiB from a local server: {:.0} MB/s ({} requests of up to 4 MiB, 256 KiB chunks)",
        big.len() as f64 / s / 1e6,
        srv.requests()
    );
}

#[test]
fn progress_adds_up_and_the_cache_serves_a_reload() {
    let file = bytes(3, 200_000);
    let srv = TestServer::start(vec![("f.bin", file.clone())]);
    let cache = Rc::new(MemoryCache::new());
    let (o, log) = recording(opts().with_cache(cache.clone()));
    let got = block_on(fetch_all(&srv.url("f.bin"), o.clone())).unwrap();
    assert_eq!(got, file);
    let log = log.borrow().clone();
    let last = log.last().unwrap();
    assert_eq!((last.loaded, last.total, last.from_cache), (200_000, 200_000, 0));
    assert!(last.bytes_per_s > 0.0);
    assert!(log.windows(2).all(|w| w[0].loaded < w[1].loaded), "loaded grows with every chunk");
    assert_eq!(log.len() as u64, 200_000u64.div_ceil(CS), "one report per chunk");
    assert_eq!(last.url, srv.url("f.bin"));
    // 13 chunks + the meta entry.
    assert_eq!(cache.len() as u64, 200_000u64.div_ceil(CS) + 1);

    // Reload: everything from the cache, not one request.
    let n = srv.requests();
    let (o2, log2) = recording(opts().with_cache(cache.clone()));
    assert_eq!(block_on(fetch_all(&srv.url("f.bin"), o2)).unwrap(), file);
    assert_eq!(srv.requests(), n, "a cached file is read without the network");
    let last = log2.borrow().last().cloned().unwrap();
    assert_eq!((last.loaded, last.from_cache), (200_000, 200_000));

    // A cache entry damaged in storage fails its CRC trailer: dropped and refetched.
    let key = cache.keys().into_iter().find(|k| k.contains("chunk") && k.ends_with("-3")).unwrap();
    assert!(cache.modify(&key, |v| v[100] ^= 1));
    assert_eq!(block_on(fetch_all(&srv.url("f.bin"), opts().with_cache(cache.clone()))).unwrap(), file);
    let fetched: Vec<String> = srv.log()[n..].iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(fetched, vec![format!("bytes={}-{}", 3 * CS, 4 * CS - 1)], "only the damaged chunk");
}

#[test]
fn an_interrupted_download_resumes_from_what_arrived() {
    let file = bytes(4, 400_000);
    let srv = TestServer::start(vec![("f.bin", file.clone())]);
    // Every one of the first 5 responses is cut 40,000 bytes into its body.
    srv.set(|b| b.drop_after = Some((40_000, 5)));
    let o = FetchOptions { max_request: 8 * CS, ..opts() };
    let got = block_on(fetch_all(&srv.url("f.bin"), o)).unwrap();
    assert_eq!(got, file);
    let log = srv.log();
    // Runs that each restart at the first chunk not received.
    let starts: Vec<u64> = log
        .iter()
        .map(|(_, r)| r.strip_prefix("bytes=").unwrap().split_once('-').unwrap().0.parse().unwrap())
        .collect();
    eprintln!("request starts: {starts:?}");
    assert_eq!(starts[0], 0);
    assert!(starts.windows(2).any(|w| w[1] > w[0] && w[1] % CS == 0 && w[1] < w[0] + 8 * CS), "{starts:?}: a resumed run");
    // 40,000 bytes = 2 whole chunks kept per cut run: no byte fetched twice beyond the partial chunk.
    let mut covered = 0u64;
    for (_, r) in &log {
        let (a, b) = r.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
        covered += b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1;
    }
    eprintln!("asked for {covered} bytes in {} requests for a {}-byte file", log.len(), file.len());

    // Across sessions: a page closed after reading part of the file; the
    // next session's download starts after what the cache holds.
    let srv = TestServer::start(vec![("g.bin", file.clone())]);
    let cache = Rc::new(MemoryCache::new());
    let o = opts().with_cache(cache.clone());
    let src = block_on(HttpSource::open(&srv.url("g.bin"), o.clone())).unwrap();
    assert_eq!(block_on(src.read(0, 100_000)).unwrap(), &file[..100_000]);
    drop(src);
    let n = srv.requests();
    let (o2, log2) = recording(o);
    assert_eq!(block_on(fetch_all(&srv.url("g.bin"), o2)).unwrap(), file);
    let first = srv.log()[n].1.clone();
    let cached_chunks = 100_000u64.div_ceil(CS);
    assert!(first.starts_with(&format!("bytes={}-", cached_chunks * CS)), "resumed at {first}");
    let last = log2.borrow().last().cloned().unwrap();
    assert_eq!((last.from_cache, last.loaded), (cached_chunks * CS, 400_000), "{last:?}");
}

#[test]
fn a_server_that_ignores_range_is_named() {
    let file = bytes(5, 100_000);
    let srv = TestServer::start(vec![("f.bin", file.clone())]);
    srv.set(|b| b.ignore_range = true);
    let e = block_on(HttpSource::open(&srv.url("f.bin"), opts())).unwrap_err();
    assert!(matches!(e, FetchError::RangeIgnored { status: 200, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("ignores HTTP Range") && msg.contains("f.bin"), "{msg}");
    // fetch_all still reads it whole (a plain 200 GET), and caches it.
    let cache = Rc::new(MemoryCache::new());
    assert_eq!(block_on(fetch_all(&srv.url("f.bin"), opts().with_cache(cache.clone()))).unwrap(), file);
    let n = srv.requests();
    assert_eq!(block_on(fetch_all(&srv.url("f.bin"), opts().with_cache(cache))).unwrap(), file);
    assert_eq!(srv.requests(), n);
    // A file smaller than one chunk is fine even without Range support.
    let srv = TestServer::start(vec![("s.json", b"{\"a\":1}".to_vec())]);
    srv.set(|b| b.ignore_range = true);
    let src = block_on(HttpSource::open(&srv.url("s.json"), opts())).unwrap();
    assert_eq!(block_on(src.read(0, 7)).unwrap(), b"{\"a\":1}");
}

#[test]
fn http_errors_are_named() {
    let srv = TestServer::start(vec![("f.bin", bytes(6, 50_000)), ("empty", Vec::new())]);
    let e = block_on(HttpSource::open(&srv.url("missing.bin"), opts())).unwrap_err();
    assert!(matches!(e, FetchError::Http { status: 404, .. }), "{e:?}");
    assert!(e.to_string().contains("404") && e.to_string().contains("check the URL"), "{e}");
    assert!(!e.is_transient());

    // 503 twice, then fine: retried.
    srv.set(|b| b.unavailable = 2);
    let src = block_on(HttpSource::open(&srv.url("f.bin"), opts())).unwrap();
    assert_eq!(src.len(), 50_000);
    // 503 more often than the retries allow.
    srv.set(|b| b.unavailable = 10);
    let e = block_on(HttpSource::open(&srv.url("f.bin"), opts())).unwrap_err();
    assert!(matches!(e, FetchError::Http { status: 503, .. }), "{e:?}");
    srv.set(|b| b.unavailable = 0);

    // Content-Length announced, body cut short, every time: a network error after the retries.
    srv.set(|b| b.truncate_body = Some(1000));
    let n = srv.requests();
    let e = block_on(fetch_all(&srv.url("f.bin"), opts())).unwrap_err();
    assert!(matches!(e, FetchError::Network { .. }), "{e:?}");
    assert!(e.to_string().contains("1000"), "{e}");
    assert_eq!(srv.requests() - n, 4, "1 try + 3 retries");
    srv.set(|b| b.truncate_body = None);

    // An empty file.
    assert_eq!(block_on(fetch_all(&srv.url("empty"), opts())).unwrap(), Vec::<u8>::new());
    // Nothing listening.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = block_on(HttpSource::open(&format!("http://{dead}/x"), FetchOptions { retries: 1, ..opts() })).unwrap_err();
    assert!(matches!(e, FetchError::Network { .. }) && e.to_string().contains("cannot connect"), "{e}");
    // https natively, bad chunk size.
    let e = block_on(HttpSource::open("https://example.org/x", opts())).unwrap_err();
    assert!(e.to_string().contains("https is not supported"), "{e}");
    let e = block_on(HttpSource::open(&srv.url("f.bin"), opts().with_chunk_size(10))).unwrap_err();
    assert!(e.to_string().contains("chunk size"), "{e}");
}

#[test]
fn a_directory_cache_survives_the_process_state() {
    let file = bytes(7, 100_000);
    let srv = TestServer::start(vec![("f.bin", file.clone())]);
    let dir = std::env::temp_dir().join(format!("latentlens-http-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = Rc::new(DirCache::new(&dir).unwrap());
    assert_eq!(block_on(fetch_all(&srv.url("f.bin"), opts().with_cache(cache))).unwrap(), file);
    let n = srv.requests();
    // A new cache object over the same directory (a later run of the CLI).
    let cache = Rc::new(DirCache::new(&dir).unwrap());
    assert_eq!(block_on(fetch_all(&srv.url("f.bin"), opts().with_cache(cache))).unwrap(), file);
    assert_eq!(srv.requests(), n);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A [`MemoryCache`] that counts its lookups.
struct CountingCache {
    inner: MemoryCache,
    gets: RefCell<Vec<String>>,
}

impl latentlens::fetch::ChunkCache for CountingCache {
    fn get<'a>(&'a self, key: &'a str) -> futures::future::LocalBoxFuture<'a, Result<Option<Vec<u8>>, FetchError>> {
        self.gets.borrow_mut().push(key.to_string());
        self.inner.get(key)
    }
    fn put<'a>(&'a self, key: &'a str, value: &'a [u8]) -> futures::future::LocalBoxFuture<'a, Result<(), FetchError>> {
        self.inner.put(key, value)
    }
    fn delete<'a>(&'a self, key: &'a str) -> futures::future::LocalBoxFuture<'a, Result<(), FetchError>> {
        self.inner.delete(key)
    }
}

#[test]
fn a_first_download_looks_up_no_chunk_and_a_reload_every_chunk() {
    let file = bytes(9, 300_000);
    let srv = TestServer::start(vec![("f.bin", file.clone())]);
    let cache = Rc::new(CountingCache { inner: MemoryCache::new(), gets: RefCell::new(Vec::new()) });
    let o = opts().with_cache(cache.clone());
    assert_eq!(block_on(fetch_all(&srv.url("f.bin"), o.clone())).unwrap(), file);
    let gets = cache.gets.borrow().clone();
    // Only the meta entry was looked up: the cache never saw this file, so no chunk can be there.
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert!(gets[0].contains("meta"), "{gets:?}");
    // A second read through the same source serves the stored chunks (no request).
    let n = srv.requests();
    let src = block_on(HttpSource::open(&srv.url("f.bin"), o.clone())).unwrap();
    assert_eq!(srv.requests(), n, "the meta entry answers the open");
    cache.gets.borrow_mut().clear();
    assert_eq!(block_on(src.read(0, file.len())).unwrap(), file);
    assert_eq!(srv.requests(), n, "a reload reads the cache only");
    let chunk_gets = cache.gets.borrow().iter().filter(|k| k.contains("chunk")).count() as u64;
    assert_eq!(chunk_gets, 300_000u64.div_ceil(CS), "one lookup per chunk");
}

/// `fetch_all_with` hands over growing prefixes of the file, one per whole chunk, whether the
/// chunk came from the cache, a fresh request or a resumed one (what `GgufStream` relies on);
/// a server without Range support gives the whole file once.
#[test]
fn fetch_all_with_hands_over_growing_prefixes() {
    let file = bytes(9, 200_003);
    let srv = TestServer::start(vec![("f.bin", file.clone())]);
    srv.set(|b| b.drop_after = Some((40_000, 2)));
    let cache = Rc::new(MemoryCache::new());
    // Half the file cached by an earlier read, the rest downloaded with two cut responses.
    let src = block_on(HttpSource::open(&srv.url("f.bin"), opts().with_cache(cache.clone()))).unwrap();
    block_on(src.read(0, 100_000)).unwrap();
    drop(src);
    let mut lens = Vec::new();
    let got = block_on(fetch_all_with(&srv.url("f.bin"), opts().with_cache(cache), &mut |p: &[u8]| {
        assert_eq!(p, &file[..p.len()], "a prefix of the file");
        lens.push(p.len());
    }))
    .unwrap();
    assert_eq!(got, file);
    let want: Vec<usize> = (1..=file.len().div_ceil(CS as usize)).map(|i| (i * CS as usize).min(file.len())).collect();
    assert_eq!(lens, want, "one growing prefix per chunk");

    let srv = TestServer::start(vec![("g.bin", file.clone())]);
    srv.set(|b| b.ignore_range = true);
    let mut calls = Vec::new();
    let got = block_on(fetch_all_with(&srv.url("g.bin"), opts(), &mut |p: &[u8]| calls.push(p.len()))).unwrap();
    assert_eq!((got.len(), calls), (file.len(), vec![file.len()]));
}
