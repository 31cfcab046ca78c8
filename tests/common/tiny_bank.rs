//! A small but real bank for the fetch tests: the tiny Llama fixture's hidden
//! states of real WordNet sentences, sampled by the bank builder and
//! product-quantized by the assembler (the same path as `latentlens
//! build-bank`), cut into several row chunks.

use std::path::Path;

use latentlens::bank::assemble::{assemble, split_budget, AssembleOptions};
use latentlens::bank::builder::{BuildConfig, Collector, Corpus};
use latentlens::model::LoadedTextModel;

/// The bank bytes and the model it was built from.
pub fn build(sentences: usize, rows_per_chunk: usize) -> (Vec<u8>, LoadedTextModel) {
    build_with(sentences, rows_per_chunk, false)
}

/// [`build`], optionally with exact rows (format v1.1).
#[allow(dead_code)]
pub fn build_with(sentences: usize, rows_per_chunk: usize, exact_rows: bool) -> (Vec<u8>, LoadedTextModel) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let m = LoadedTextModel::load(&root.join("tiny_llama")).expect("tiny_llama fixture");
    let text = std::fs::read_to_string(root.join("smollm2/wordnet_sentences.txt")).expect("wordnet sentences");
    let lines: Vec<&str> = text.lines().take(sentences).collect();
    let corpus = Corpus::parse(lines.join("\n").as_bytes()).expect("corpus");
    let n_layers = m.config.num_hidden_layers;
    let cfg = BuildConfig { layers: vec![1, n_layers], max_contexts: 4, batch_tokens: 256, ..BuildConfig::paper(n_layers) };
    let mut col = Collector::new(cfg, m.config.hidden_size, (0, 1)).expect("collector");
    col.run(&m, &corpus, |_, _| {}, 0, |_| Ok(())).expect("collecting");
    let c = col.finish();
    let d = m.config.hidden_size;
    let (code_bytes, refine_bytes) = split_budget(d, d / 8);
    let opts = AssembleOptions {
        code_bytes,
        refine_bytes,
        rows_per_chunk,
        corpus: "WordNet usage sentences (fetch test)".into(),
        model_name: "tiny_llama".into(),
        fingerprint: m.fingerprint().expect("fingerprint"),
        exact_rows,
    };
    (assemble(&c, &opts).expect("assembling the bank"), m)
}
