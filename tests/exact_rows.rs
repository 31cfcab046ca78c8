//! Exact rows (bank format v1.1, `build-bank --exact-rows`): a real bank (the
//! tiny Llama fixture over WordNet sentences) with every row's f16 vector
//! beside its PQ codes. Reranking every row by exact cosine must give exactly
//! the brute-force exact top-k over those rows; the default rerank of the
//! best candidates must be at least as good as PQ alone; over HTTP the rows
//! come in small Range requests of one record each; a damaged record is an
//! error naming the row, never a silent wrong score.

#[path = "common/http_server.rs"]
#[allow(dead_code)]
mod http_server;
#[path = "common/tiny_bank.rs"]
#[allow(dead_code)]
mod tiny_bank;

use std::collections::HashSet;
use std::sync::OnceLock;

use futures::executor::block_on;
use http_server::TestServer;
use latentlens::bank::format::exact_row_len;
use latentlens::bank::{BankError, BankReader, SectionKind};
use latentlens::fetch::{FetchOptions, MemorySource};
use latentlens::lens::LatentLens;
use latentlens::search::Hit;

const ROWS_PER_CHUNK: usize = 64;

/// Banks with and without exact rows (same rows) and real queries: the tiny
/// model's hidden states of other sentences.
fn banks() -> &'static (Vec<u8>, Vec<u8>, Vec<f32>) {
    static B: OnceLock<(Vec<u8>, Vec<u8>, Vec<f32>)> = OnceLock::new();
    B.get_or_init(|| {
        let (with, m) = tiny_bank::build_with(120, ROWS_PER_CHUNK, true);
        let (without, _) = tiny_bank::build_with(120, ROWS_PER_CHUNK, false);
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smollm2/wordnet_sentences.txt")).unwrap();
        let mut queries = Vec::new();
        for s in text.lines().skip(500).take(4) {
            let hs = m.hidden_states_text(s).unwrap();
            let d = hs.hidden_size;
            queries.extend_from_slice(&hs.layers[1][d..4 * d]);
            queries.extend_from_slice(&hs.layers[hs.num_layers() - 1][d..4 * d]);
        }
        (with, without, queries)
    })
}

fn open(bytes: &[u8]) -> BankReader {
    block_on(BankReader::open(Box::new(MemorySource::new(bytes.to_vec())))).unwrap()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Brute-force exact top-k over every stored exact row of every layer,
/// scored in f64 (independent of the search code).
fn brute_force(r: &BankReader, queries: &[f32], k: usize) -> Vec<Vec<(u16, u32)>> {
    let d = r.manifest().hidden_size as usize;
    let mut rows = Vec::new();
    for slot in 0..r.n_layers() {
        for row in 0..r.n_rows() {
            rows.push((slot as u16, row as u32, block_on(r.exact_row(slot, row)).unwrap()));
        }
    }
    queries
        .chunks(d)
        .map(|q| {
            let q = unit(q);
            let mut s: Vec<(f64, u16, u32)> = rows
                .iter()
                .map(|(l, i, v)| {
                    let n = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
                    (q.iter().zip(v).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>() / n, *l, *i)
                })
                .collect();
            s.sort_by(|a, b| b.0.total_cmp(&a.0));
            s.into_iter().take(k).map(|(_, l, i)| (l, i)).collect()
        })
        .collect()
}

fn keys(h: &[Hit]) -> Vec<(u16, u32)> {
    h.iter().map(|h| (h.layer, h.row)).collect()
}

#[test]
fn exact_rows_are_unit_f16_vectors_and_the_manifest_says_so() {
    let (with, without, _) = banks();
    let r = open(with);
    assert!(r.has_exact_rows());
    assert_eq!(r.header().minor, 1);
    assert_eq!(r.manifest().exact.as_ref().map(|x| x.dtype.as_str()), Some("f16"));
    let d = r.manifest().hidden_size as usize;
    let n_exact = r.sections().iter().filter(|e| e.kind == SectionKind::ExactRows).count() as u64;
    assert_eq!(n_exact, r.n_layers() as u64 * r.n_chunks());
    for e in r.sections().iter().filter(|e| e.kind == SectionKind::ExactRows) {
        let rows = r.chunk_rows(u64::from(e.chunk)).unwrap();
        assert_eq!(e.len, (rows.end - rows.start) * exact_row_len(d) as u64);
    }
    for row in [0, 1, r.n_rows() / 2, r.n_rows() - 1] {
        let v = block_on(r.exact_row(1, row)).unwrap();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 2e-3, "row {row}: norm {n}");
    }
    // The same bank without exact rows: v1.0, and asking for a row says how to get them.
    let r0 = open(without);
    assert!(!r0.has_exact_rows());
    assert_eq!(r0.header().minor, 0);
    let err = block_on(r0.exact_row(0, 0)).unwrap_err().to_string();
    assert!(err.contains("--exact-rows"), "{err}");
    assert!(matches!(block_on(r.exact_row(0, r.n_rows())), Err(BankError::OutOfRange { .. })));
    assert!(block_on(r.exact_row(r.n_layers(), 0)).is_err());
}

#[test]
fn reranking_every_row_equals_brute_force_exact_search() {
    let (with, _, queries) = banks();
    let k = 5;
    let mut lens = block_on(LatentLens::load(open(with))).unwrap();
    let n_all = lens.reader().n_rows() as usize * lens.reader().n_layers();
    let truth = brute_force(lens.reader(), queries, k);
    lens.exact_candidates = n_all;
    let got = block_on(lens.search_exact(queries, k)).unwrap();
    for (g, t) in got.iter().zip(&truth) {
        assert_eq!(&keys(g), t);
    }
    // Scores are exact cosines (descending), not PQ estimates.
    let d = lens.reader().manifest().hidden_size as usize;
    for (qi, g) in got.iter().enumerate() {
        let q = unit(&queries[qi * d..(qi + 1) * d]);
        for h in g {
            let v = block_on(lens.reader().exact_row(usize::from(h.layer), u64::from(h.row))).unwrap();
            let want = q.iter().zip(&v).map(|(a, b)| a * b).sum::<f32>() / v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((h.score - want).abs() < 1e-5, "{} vs {want}", h.score);
        }
        assert!(g.windows(2).all(|w| w[0].score >= w[1].score));
    }
}

#[test]
fn the_default_rerank_recalls_at_least_what_pq_alone_does() {
    let (with, _, queries) = banks();
    let k = 5;
    let lens = block_on(LatentLens::load(open(with))).unwrap();
    assert!(lens.reranks_exactly());
    let truth = brute_force(lens.reader(), queries, k);
    let recall = |lists: &[Vec<Hit>]| -> f64 {
        let mut hit = 0usize;
        for (l, t) in lists.iter().zip(&truth) {
            let t: HashSet<_> = t.iter().copied().collect();
            hit += keys(l).iter().filter(|x| t.contains(x)).count();
        }
        hit as f64 / (k * truth.len()) as f64
    };
    let pq = recall(&lens.search(queries, k).unwrap());
    let exact = recall(&block_on(lens.search_exact(queries, k)).unwrap());
    eprintln!("recall@{k}: PQ {pq:.3}, PQ + exact rerank of {} {exact:.3}", lens.exact_candidates);
    assert!(exact >= pq, "rerank {exact} < PQ {pq}");
    assert!(exact >= 0.9, "rerank recall {exact}");
    // explain() reranks too; a bank without exact rows gives PQ's answer.
    let ex = block_on(lens.explain(queries, k)).unwrap();
    let se = block_on(lens.search_exact(queries, k)).unwrap();
    for (e, s) in ex.iter().zip(&se) {
        assert_eq!(e.iter().map(|n| n.score).collect::<Vec<_>>(), s.iter().map(|h| h.score).collect::<Vec<_>>());
    }
}

#[test]
fn over_http_exact_rows_come_in_one_small_range_request_each() {
    let (with, _, queries) = banks();
    let srv = TestServer::start(vec![("x.llbank", with.clone())]);
    let opts = FetchOptions { chunk_size: 4096, max_request: 64 * 1024, backoff_ms: 1, ..FetchOptions::default() };
    let remote = block_on(LatentLens::load(block_on(BankReader::open_url(&srv.url("x.llbank"), opts)).unwrap())).unwrap();
    let local = block_on(LatentLens::load(open(with))).unwrap();
    let before = srv.log().len();
    let a = block_on(remote.search_exact(queries, 5)).unwrap();
    assert_eq!(a, block_on(local.search_exact(queries, 5)).unwrap());
    let d = local.reader().manifest().hidden_size as usize;
    let log = srv.log();
    let reads: Vec<u64> = log[before..]
        .iter()
        .map(|(_, r)| {
            let (s, e) = r.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
            e.parse::<u64>().unwrap() + 1 - s.parse::<u64>().unwrap()
        })
        .collect();
    assert!(!reads.is_empty());
    assert!(reads.iter().all(|&n| n == exact_row_len(d) as u64), "{reads:?}");
    // Distinct (layer, row) pairs only: no more requests than candidates.
    assert!(reads.len() <= queries.len() / d * local.exact_candidates);
}

#[test]
fn a_damaged_exact_row_is_an_error_naming_it() {
    let (with, _, queries) = banks();
    let r = open(with);
    let d = r.manifest().hidden_size as usize;
    let e = *r.sections().iter().find(|e| e.kind == SectionKind::ExactRows && e.slot == 1 && e.chunk == 1).unwrap();
    let mut bad = with.clone();
    // Row 3 of chunk 1 = row ROWS_PER_CHUNK + 3: flip a bit in its 10th value.
    bad[(e.offset + 3 * exact_row_len(d) as u64 + 20) as usize] ^= 0x10;
    let r = open(&bad);
    let row = ROWS_PER_CHUNK as u64 + 3;
    let err = block_on(r.exact_row(1, row)).unwrap_err();
    assert!(matches!(err, BankError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains(&format!("exact row {row} of layer slot 1")), "{err}");
    assert!(block_on(r.exact_row(1, row + 1)).is_ok());
    // A search that needs every row meets it and fails instead of scoring it.
    let mut lens = block_on(LatentLens::load(r)).unwrap();
    lens.exact_candidates = lens.reader().n_rows() as usize * lens.reader().n_layers();
    assert!(block_on(lens.search_exact(queries, 5)).is_err());
}

#[test]
fn a_wrong_exact_rows_length_is_refused_when_writing() {
    use latentlens::bank::format::{BankManifest, CorpusInfo, ModelInfo, QuantizerInfo, RowMeta, ToolInfo};
    use latentlens::bank::writer::{BankWriter, LayerData};
    let d = 8;
    let manifest = BankManifest {
        model: ModelInfo { name: "m".into(), fingerprint: "f".into() },
        hidden_size: d as u32,
        layers: vec![1],
        rows: 2,
        rows_per_chunk: 2,
        sentences: 1,
        sentences_per_block: 1,
        corpus: CorpusInfo { name: "c".into(), description: String::new() },
        quantizer: QuantizerInfo { kind: "pq".into(), params: serde_json::json!({}), code_bytes: 1, refine_bytes: 0 },
        tool: ToolInfo { name: "t".into(), version: "0".into() },
        exact: None,
    };
    let codes = [0u8, 1];
    let q = [1u8; 4];
    let rows = [RowMeta { token_id: 1, sentence_id: 0, span_start: 0, span_end: 1, position: 2 }; 2];
    let w = || BankWriter::new(manifest.clone(), vec![LayerData { quantizer: &q, codes: &codes, refine: None }], &rows, &["a b"]).unwrap();
    let short = vec![0u8; exact_row_len(d)];
    let err = w().with_exact_rows(vec![&short]).unwrap_err().to_string();
    assert!(err.contains("exact rows of slot 0"), "{err}");
    assert!(w().with_exact_rows(vec![]).is_err());
    let mut ok = Vec::new();
    latentlens::bank::format::encode_exact_row(&[0.5; 8], &mut ok);
    latentlens::bank::format::encode_exact_row(&[-0.25; 8], &mut ok);
    let bytes = w().with_exact_rows(vec![&ok]).unwrap().to_vec().unwrap();
    let r = open(&bytes);
    assert_eq!(block_on(r.exact_row(0, 1)).unwrap(), vec![-0.25; 8]);
}
