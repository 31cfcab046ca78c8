//! A real bank (tiny Llama fixture over WordNet sentences, several row
//! chunks) served by a local HTTP server: opened over HTTP it equals the bank
//! opened from the file; a chunk corrupted once on the wire (and cached) is
//! evicted and refetched; and progressive loading searches the rows loaded
//! so far, ending with exactly the results of a full load, also when the
//! bank is shared and grows while it answers (the browser's `Rc`).

#[path = "common/http_server.rs"]
mod http_server;
#[path = "common/tiny_bank.rs"]
mod tiny_bank;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use futures::executor::block_on;
use futures::future::LocalBoxFuture;
use http_server::TestServer;
use latentlens::bank::{BankReader, SectionKind};
use latentlens::fetch::{ByteSource, FetchError, FetchOptions, HttpSource, MemoryCache, MemorySource};
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
    let lens = block_on(LatentLens::open(reader)).unwrap();
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
    // The partial answer reads out like the full one: whole words in their sentences, from loaded rows only.
    let partial = block_on(lens.explain(queries, k)).unwrap();
    for (list, h) in partial.iter().zip(&hits) {
        assert_eq!(list.len(), k);
        assert_eq!(list.iter().map(|n| n.score).collect::<Vec<_>>(), h.iter().map(|x| x.score).collect::<Vec<_>>());
        assert!(list.iter().all(|n| n.sentence.is_some() && !n.word.is_empty()));
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

/// A source whose every read is pending once before it completes, so two
/// loads of one bank interleave as they do in the browser.
struct Interleaved(MemorySource);

/// Pending on the first poll (waking itself), ready on the second.
struct YieldOnce(bool);
impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl ByteSource for Interleaved {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn total_len(&self) -> LocalBoxFuture<'_, Result<u64, FetchError>> {
        self.0.total_len()
    }
    fn read(&self, offset: u64, len: usize) -> LocalBoxFuture<'_, Result<Vec<u8>, FetchError>> {
        Box::pin(async move {
            YieldOnce(false).await;
            self.0.read(offset, len).await
        })
    }
}

#[test]
fn a_shared_bank_grows_while_it_answers_and_keeps_each_chunk_once() {
    let (bytes, queries) = bank();
    let k = 5;
    let full = block_on(LatentLens::load(block_on(BankReader::open(Box::new(MemorySource::new(bytes.clone())))).unwrap())).unwrap();
    let want = block_on(full.explain(queries, k)).unwrap();

    let reader = block_on(BankReader::open(Box::new(Interleaved(MemorySource::new(bytes.clone()))))).unwrap();
    let lens = Rc::new(block_on(LatentLens::open(reader)).unwrap());
    let n_chunks = lens.load_progress().n_chunks;
    // Two loads at once fetch the same chunk; it is kept once.
    let (a, b) = block_on(futures::future::join(lens.load_next_chunk(), lens.load_next_chunk()));
    assert_eq!(a.unwrap(), b.unwrap());
    let p = lens.load_progress();
    assert_eq!((p.chunks_loaded, p.rows_loaded), (1, ROWS_PER_CHUNK as u64));
    // A query and a load interleaved on one shared bank: the query answers
    // from the rows it saw, the load lands, nothing is borrowed across awaits.
    let shared = lens.clone();
    let (partial, loaded) = block_on(futures::future::join(shared.explain(queries, k), lens.load_next_chunk()));
    let partial = partial.unwrap();
    assert_eq!(loaded.unwrap().map(|p| p.chunks_loaded), Some(2));
    assert!(partial.iter().all(|l| l.len() == k));
    while block_on(lens.load_next_chunk()).unwrap().is_some() {}
    assert_eq!(lens.load_progress().chunks_loaded, n_chunks);
    assert_eq!(block_on(lens.explain(queries, k)).unwrap(), want, "the grown bank answers like the fully loaded one");
    // What goes to the GPU is exactly the rows loaded.
    let rows = lens.load_progress().rows_loaded as usize;
    let code_bytes = lens.reader().code_bytes();
    for slot in 0..lens.bank_layers().len() {
        let (c, r) = lens.with_layer_rows(slot, |_, c, r| (c.len(), r.map(<[u8]>::len))).unwrap();
        assert_eq!(c, rows * code_bytes);
        assert_eq!(r, (lens.reader().refine_bytes() > 0).then_some(rows * lens.reader().refine_bytes()));
    }
    assert!(lens.with_layer_rows(lens.bank_layers().len(), |_, _, _| ()).is_none());
}
