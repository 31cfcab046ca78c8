//! A real bank (tiny Llama fixture over WordNet sentences, several row
//! chunks) served by a local HTTP server: opened over HTTP it equals the bank
//! opened from the file; a chunk corrupted once on the wire (and cached) is
//! evicted and refetched; and progressive loading searches the rows loaded
//! so far, ending with exactly the results of a full load.

#[path = "common/http_server.rs"]
mod http_server;
#[path = "common/tiny_bank.rs"]
mod tiny_bank;

use std::rc::Rc;
use std::sync::OnceLock;

use futures::executor::block_on;
use http_server::TestServer;
use latentlens::bank::{BankReader, SectionKind};
use latentlens::fetch::{FetchOptions, HttpSource, MemoryCache, MemorySource};
use latentlens::lens::LatentLens;

const ROWS_PER_CHUNK: usize = 64;

/// The bank (built once per test binary) and real query vectors: the tiny
/// model's own hidden states of other sentences at the bank's layers.
fn bank() -> &'static (Vec<u8>, Vec<f32>) {
    static B: OnceLock<(Vec<u8>, Vec<f32>)> = OnceLock::new();
    B.get_or_init(|| {
        let (bytes, m) = tiny_bank::build(120, ROWS_PER_CHUNK);
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smollm2/wordnet_sentences.txt")).unwrap();
        let mut queries = Vec::new();
        for s in text.lines().skip(500).take(3) {
            let hs = m.hidden_states_text(s).unwrap();
            let d = hs.hidden_size;
            // A few tokens of the last layer.
            queries.extend_from_slice(&hs.layers[hs.num_layers() - 1][d..4 * d]);
        }
        (bytes, queries)
    })
}

fn opts() -> FetchOptions {
    FetchOptions { chunk_size: 4096, max_request: 64 * 1024, backoff_ms: 1, ..FetchOptions::default() }
}

#[test]
fn a_bank_over_http_equals_the_bank_from_memory() {
    let (bytes, queries) = bank();
    let srv = TestServer::start(vec![("tiny.llbank", bytes.clone())]);
    let local = block_on(BankReader::open(Box::new(MemorySource::new(bytes.clone())))).unwrap();
    let remote = block_on(BankReader::open_url(&srv.url("tiny.llbank"), opts())).unwrap();
    assert!(local.n_chunks() >= 4, "the test bank has {} chunks: make it span several", local.n_chunks());
    assert_eq!(local.manifest(), remote.manifest());
    assert_eq!(local.sections(), remote.sections());
    for e in local.sections() {
        assert_eq!(block_on(local.read_section(e)).unwrap(), block_on(remote.read_section(e)).unwrap(), "{e:?}");
    }
    let a = block_on(LatentLens::load(local)).unwrap();
    let b = block_on(LatentLens::load(remote)).unwrap();
    let ra = block_on(a.explain(queries, 5)).unwrap();
    let rb = block_on(b.explain(queries, 5)).unwrap();
    assert_eq!(ra, rb);
    assert!(ra.iter().all(|l| l.len() == 5 && l[0].sentence.is_some()));
}

#[test]
fn a_chunk_corrupted_in_the_cache_is_evicted_and_refetched() {
    let (bytes, queries) = bank();
    let srv = TestServer::start(vec![("tiny.llbank", bytes.clone())]);
    let reference = block_on(LatentLens::load(block_on(BankReader::open(Box::new(MemorySource::new(bytes.clone())))).unwrap())).unwrap();
    let want = block_on(reference.explain(queries, 5)).unwrap();
    // Flip one byte inside the codes of layer slot 1, chunk 2, once, on the wire.
    let e = *reference.reader().sections().iter().find(|e| e.kind == SectionKind::Codes && e.slot == 1 && e.chunk == 2).unwrap();
    srv.set(|b| b.corrupt_once_at = Some(e.offset + e.len / 2));
    let cache = Rc::new(MemoryCache::new());
    let reader = block_on(BankReader::open_url(&srv.url("tiny.llbank"), opts().with_cache(cache.clone()))).unwrap();
    let lens = block_on(LatentLens::load(reader)).unwrap();
    assert_eq!(block_on(lens.explain(queries, 5)).unwrap(), want);
    // The damaged range was asked for twice: once damaged (and cached), once after eviction.
    let chunk = (e.offset + e.len / 2) / 4096;
    let hits = srv.log().iter().filter(|(_, r)| {
        let (a, b) = r.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
        (a.parse::<u64>().unwrap()..=b.parse::<u64>().unwrap()).contains(&(chunk * 4096))
    }).count();
    assert_eq!(hits, 2, "{:?}", srv.log());
    // The cache now holds the good copy: a reload needs no request and gives the same answers.
    let n = srv.requests();
    let reader = block_on(BankReader::open_url(&srv.url("tiny.llbank"), opts().with_cache(cache))).unwrap();
    let lens = block_on(LatentLens::load(reader)).unwrap();
    assert_eq!(block_on(lens.explain(queries, 5)).unwrap(), want);
    assert_eq!(srv.requests(), n);
}

#[test]
fn progressive_search_refines_to_the_full_result() {
    let (bytes, queries) = bank();
    let srv = TestServer::start(vec![("tiny.llbank", bytes.clone())]);
    let full = block_on(LatentLens::load(block_on(BankReader::open(Box::new(MemorySource::new(bytes.clone())))).unwrap())).unwrap();
    let k = 5;
    let want_hits = full.search(queries, k).unwrap();
    let want = block_on(full.explain(queries, k)).unwrap();

    let src = block_on(HttpSource::open(&srv.url("tiny.llbank"), opts())).unwrap();
    let reader = block_on(BankReader::open(Box::new(src))).unwrap();
    let mut lens = block_on(LatentLens::open(reader)).unwrap();
    let p = lens.load_progress();
    assert_eq!((p.chunks_loaded, p.rows_loaded), (0, 0));
    assert!(lens.search(queries, k).unwrap().iter().all(Vec::is_empty), "nothing loaded, nothing found");
    let n_chunks = p.n_chunks;

    let first = block_on(lens.load_next_chunk()).unwrap().unwrap();
    assert_eq!((first.chunks_loaded, first.rows_loaded), (1, ROWS_PER_CHUNK as u64));
    let hits = lens.search(queries, k).unwrap();
    assert!(hits.iter().all(|h| h.len() == k && h.iter().all(|x| (x.row as usize) < ROWS_PER_CHUNK)), "first chunk only");
    // A subset of the rows never beats the full bank's best.
    for (h, w) in hits.iter().zip(&want_hits) {
        assert!(h[0].score <= w[0].score + 1e-6);
    }
    let mut steps = 1;
    while let Some(p) = block_on(lens.load_next_chunk()).unwrap() {
        steps += 1;
        assert_eq!(p.chunks_loaded, steps);
        let hits = lens.search(queries, k).unwrap();
        assert!(hits.iter().flatten().all(|x| (x.row as u64) < p.rows_loaded));
    }
    assert_eq!(steps, n_chunks);
    assert!(lens.is_complete() && block_on(lens.load_next_chunk()).unwrap().is_none());
    assert_eq!(lens.search(queries, k).unwrap(), want_hits);
    assert_eq!(block_on(lens.explain(queries, k)).unwrap(), want);
    // Neighbours for chosen hits only read their sentence blocks.
    let shown = block_on(lens.neighbours(&want_hits[0][..2])).unwrap();
    assert_eq!(shown, want[0][..2].to_vec());
}
