//! The bank reader and the progressive LatentLens in the browser
//! (`./build.sh test-wasm`): a bank held in memory (as a page gets it from
//! `fetch()` or a file drop) opens, validates, serves sections and sentences,
//! refuses damage, and searches progressively to the full result; plus the
//! Cache API chunk cache.
#![cfg(target_arch = "wasm32")]

use latentlens::bank::pq::ProductQuantizer;
use latentlens::bank::{BankError, BankReader};
use latentlens::fetch::{BrowserCache, ChunkCache, MemorySource};
use latentlens::lens::LatentLens;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A real bank built here, in the browser, through the same path as
/// `latentlens build-bank`: the tiny Llama fixture's (d = 48) hidden states
/// of 150 real WordNet sentences, sampled by the bank builder and
/// product-quantized, 64 rows per chunk.
fn build_bank() -> Vec<u8> {
    use latentlens::bank::assemble::{assemble, split_budget, AssembleOptions};
    use latentlens::bank::builder::{BuildConfig, Collector, Corpus};
    use latentlens::model::{weights::load_safetensors_bytes, LoadedTextModel, TextConfig, TextModel, Tokenizer};
    macro_rules! fx {
        ($f:literal) => {
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/", $f))
        };
    }
    let dev = candle_core::Device::Cpu;
    let v: serde_json::Value = serde_json::from_slice(fx!("tiny_llama/config.json")).unwrap();
    let config = TextConfig::from_hf_json(&v).unwrap();
    let tokenizer = Tokenizer::from_json_bytes(fx!("tiny_llama/tokenizer.json")).unwrap();
    let w = load_safetensors_bytes(fx!("tiny_llama/model.safetensors"), "tiny_llama", &dev).unwrap();
    let model = TextModel::new_causal_lm(&config, w.var_builder(&dev)).unwrap();
    let m = LoadedTextModel { config, model, tokenizer, source: "tiny_llama".into() };
    let text = std::str::from_utf8(fx!("smollm2/wordnet_sentences.txt")).unwrap();
    let corpus = Corpus::parse(text.lines().take(150).collect::<Vec<_>>().join("\n").as_bytes()).unwrap();
    let n_layers = m.config.num_hidden_layers;
    let cfg = BuildConfig { layers: vec![1, n_layers], max_contexts: 4, batch_tokens: 256, ..BuildConfig::paper(n_layers) };
    let mut col = Collector::new(cfg, m.config.hidden_size, (0, 1)).unwrap();
    col.run(&m, &corpus, |_, _| {}, 0, |_| Ok(())).unwrap();
    let d = m.config.hidden_size;
    let (code_bytes, refine_bytes) = split_budget(d, d / 8);
    let opts = AssembleOptions {
        code_bytes,
        refine_bytes,
        rows_per_chunk: 64,
        corpus: "WordNet usage sentences (browser test)".into(),
        model_name: "tiny_llama".into(),
        fingerprint: m.fingerprint().unwrap(),
        exact_rows: false,
    };
    assemble(&col.finish(), &opts).unwrap()
}

thread_local! {
    static BANK_CELL: std::cell::OnceCell<Vec<u8>> = const { std::cell::OnceCell::new() };
}

/// The bank, built once per test binary.
fn bank() -> Vec<u8> {
    BANK_CELL.with(|c| c.get_or_init(build_bank).clone())
}

async fn open(bytes: Vec<u8>) -> Result<BankReader, BankError> {
    BankReader::open(Box::new(MemorySource::new(bytes))).await
}

#[wasm_bindgen_test]
async fn the_bank_reader_validates_and_serves_a_real_bank() {
    let bank = bank();
    let r = open(bank.clone()).await.unwrap();
    let m = r.manifest().clone();
    assert_eq!(m.hidden_size, 48);
    assert!(r.n_chunks() >= 3, "{} chunks", r.n_chunks());
    // Every section's checksum holds.
    let mut bytes = 0;
    for e in r.sections() {
        bytes += r.read_section(e).await.unwrap().len();
    }
    // Every row's span is a piece of its sentence.
    for c in 0..r.n_chunks() {
        for (i, meta) in r.row_meta_chunk(c).await.unwrap().iter().enumerate() {
            let s = r.sentence(meta.sentence_id).await.unwrap();
            let span = s.get(meta.span_start as usize..meta.span_end as usize);
            assert!(span.is_some_and(|t| !t.trim().is_empty()), "chunk {c} row {i}: span {meta:?} of {s:?}");
        }
    }
    console_log!("bank in wasm: {} rows, {} chunks, {} sections ({bytes} bytes) verified", r.n_rows(), r.n_chunks(), r.sections().len());

    // A flipped byte in the last section: that section's checksum fails, nothing panics.
    let last = *r.sections().iter().max_by_key(|e| e.offset).unwrap();
    let mut bad = bank.clone();
    bad[(last.offset + last.len / 2) as usize] ^= 0x40;
    let rb = open(bad).await.unwrap();
    assert!(matches!(rb.read_section(&last).await, Err(BankError::Checksum { .. })));
    // Truncated: refused at open.
    assert!(matches!(open(bank[..bank.len() - 10].to_vec()).await, Err(BankError::Truncated { .. })));
}

#[wasm_bindgen_test]
async fn progressive_search_in_the_browser_refines_to_the_full_result() {
    // Queries: vectors the bank's own quantizer reconstructs for some rows (real hidden states, compressed).
    let bank = bank();
    let r = open(bank.clone()).await.unwrap();
    let pq = ProductQuantizer::from_bytes(&r.quantizer_blob(1).await.unwrap()).unwrap();
    let codes = r.codes_chunk(1, r.n_chunks() - 1).await.unwrap();
    let m = r.code_bytes();
    let queries = pq.decode(&codes[..6 * m], None).unwrap();
    let rpc = r.manifest().rows_per_chunk as u32;

    let full = LatentLens::load(open(bank.clone()).await.unwrap()).await.unwrap();
    let k = 5;
    let want = full.explain(&queries, k).await.unwrap();
    let want_hits = full.search(&queries, k).unwrap();

    let lens = LatentLens::open(r).await.unwrap();
    assert!(lens.search(&queries, k).unwrap().iter().all(Vec::is_empty));
    let p = lens.load_next_chunk().await.unwrap().unwrap();
    assert_eq!(p.rows_loaded, u64::from(rpc));
    let first = lens.search(&queries, k).unwrap();
    assert!(first.iter().flatten().all(|h| h.row < rpc), "first chunk only");
    while lens.load_next_chunk().await.unwrap().is_some() {}
    assert_eq!(lens.search(&queries, k).unwrap(), want_hits);
    assert_eq!(lens.explain(&queries, k).await.unwrap(), want);
    // The queries come from rows of the last chunk: those rows are found only once it is loaded.
    assert!(want_hits.iter().any(|h| h[0].row >= rpc));
}

#[wasm_bindgen_test]
async fn the_cache_api_keeps_chunks() {
    let cache = BrowserCache::open("latentlens-wasm-test").await.unwrap();
    let origin = js_sys::eval("self.location.origin").unwrap().as_string().unwrap();
    let key = format!("{origin}/latentlens-test/file.bin?latentlens-chunk-1");
    cache.put(&key, b"chunk bytes").await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&b"chunk bytes"[..]));
    cache.delete(&key).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap(), None);
    assert!(BrowserCache::delete_all("latentlens-wasm-test").await.unwrap());
}

/// Held writes (the page's cold load): a put waits in a queue that `get` and `delete` see,
/// nothing reaches the Cache API until `release_writes`, which makes every queued put.
#[wasm_bindgen_test]
async fn held_cache_writes_wait_for_release() {
    let name = "latentlens-wasm-test-held";
    let cache = BrowserCache::open(name).await.unwrap();
    let other = BrowserCache::open(name).await.unwrap(); // a second handle: reads the Cache API
    let origin = js_sys::eval("self.location.origin").unwrap().as_string().unwrap();
    let key = |i: u32| format!("{origin}/latentlens-test/held.bin?latentlens-chunk-{i}");
    BrowserCache::hold_writes();
    cache.put(&key(1), b"one").await.unwrap();
    cache.put(&key(2), b"two").await.unwrap();
    cache.put(&key(2), b"two again").await.unwrap(); // replaces the queued put
    cache.put(&key(3), b"three").await.unwrap();
    cache.delete(&key(3)).await.unwrap(); // drops the queued put
    assert_eq!(cache.get(&key(2)).await.unwrap().as_deref(), Some(&b"two again"[..]), "get sees the queue");
    let in_api = |k: String| async move {
        let caches: web_sys::CacheStorage = js_sys::Reflect::get(&js_sys::global(), &"caches".into()).unwrap().into();
        let c: web_sys::Cache = wasm_bindgen_futures::JsFuture::from(caches.open(name)).await.unwrap().into();
        let r = wasm_bindgen_futures::JsFuture::from(c.match_with_str(&k)).await.unwrap();
        !r.is_undefined()
    };
    assert!(!in_api(key(1)).await, "a held put reached the Cache API");
    assert_eq!(BrowserCache::release_writes().await, 2);
    assert!(in_api(key(1)).await && in_api(key(2)).await && !in_api(key(3)).await);
    assert_eq!(other.get(&key(2)).await.unwrap().as_deref(), Some(&b"two again"[..]));
    // Released: puts go straight through again.
    cache.put(&key(4), b"four").await.unwrap();
    assert!(in_api(key(4)).await);
    assert!(BrowserCache::delete_all(name).await.unwrap());
}

#[wasm_bindgen_test]
async fn http_source_reads_ranges_through_fetch() {
    use latentlens::fetch::{ByteSource, FetchOptions, HttpSource};
    use std::cell::Cell;
    use std::rc::Rc;
    use wasm_bindgen::JsValue;
    // The bank as a blob: URL: fetch() with a Range header, answered 206 by the browser itself.
    let mk = js_sys::Function::new_with_args("b", "return URL.createObjectURL(new Blob([b]))");
    let bank = bank();
    let url = mk.call1(&JsValue::NULL, &js_sys::Uint8Array::from(&bank[..])).unwrap().as_string().unwrap();
    let seen = Rc::new(Cell::new(0u64));
    let s2 = seen.clone();
    let opts = FetchOptions { chunk_size: 4096, max_request: 16 * 1024, ..FetchOptions::default() }
        .with_progress(move |p| s2.set(p.loaded));
    let src = HttpSource::open(&url, opts).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(src.len(), bank.len() as u64);
    let n = bank.len();
    for (off, len) in [(0usize, 10usize), (4000, 200), (5000, (n - 5000).min(30_000)), (n - 7, 7)] {
        assert_eq!(src.read(off as u64, len).await.unwrap(), &bank[off..off + len], "{len} at {off}");
    }
    assert!(seen.get() > 0);
    let r = BankReader::open(Box::new(src)).await.unwrap();
    let lens = LatentLens::load(r).await.unwrap();
    assert!(lens.is_complete());
    console_log!("HttpSource over fetch(): bank of {} bytes read in Range requests, {} bytes loaded", bank.len(), seen.get());
}
