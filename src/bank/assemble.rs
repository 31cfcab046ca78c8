//! Bank builder, second half: quantise the collected vectors of every bank
//! layer (one quantizer per layer, trained on all rows) and write the bank
//! file with its manifest, row metadata and sentences.

use super::builder::Collected;
use super::format::{BankManifest, CorpusInfo, ModelInfo, QuantizerInfo, RowMeta, ToolInfo};
use super::pq::{PqParams, ProductQuantizer, RotationKind};
use super::writer::{BankWriter, LayerData};
use super::BankError;

/// What the assembled bank records and how it quantises.
#[derive(Debug, Clone)]
pub struct AssembleOptions {
    /// Scanned code bytes per vector (the search download per row and layer).
    pub code_bytes: usize,
    /// Refinement bytes per vector used to rerank a shortlist (0 = none).
    pub refine_bytes: usize,
    /// Rows per code chunk (streaming granularity).
    pub rows_per_chunk: usize,
    /// Corpus description for the manifest.
    pub corpus: String,
    /// Model name for the manifest.
    pub model_name: String,
    /// Model fingerprint ([`crate::model::fingerprint`]).
    pub fingerprint: String,
    /// Also store every row's exact vector (f16, `2d + 4` bytes per row and
    /// layer, read only for reranked candidates; format v1.1).
    pub exact_rows: bool,
}

/// The quantizer recipe of a bank, chosen by `latentlens bench search --opq`
/// on real SmolLM2 vectors (30k rows, layer 16, 72 bytes): an OPQ rotation
/// (12 rounds from the identity) + PQ scan + a residual PQ refinement of the
/// same size, recall@10 0.80–0.81, beats plain PQ of the full budget (0.752),
/// OPQ of the full budget (0.771–0.782) and PQ scan + refine without the
/// rotation (0.765). Codes are score-aware (η = 2, [`PqParams::eta`]): same 30k vectors,
/// 300 queries, recall@10 0.798 → 0.838 (η 4: 0.817, η 8: 0.805), against faiss
/// OPQ72,PQ72's 0.814. See docs/results.md.
pub fn quantizer_params(code_bytes: usize, refine_bytes: usize) -> PqParams {
    PqParams { code_bytes, refine_bytes, rotation: RotationKind::Opq { iters: 12 }, train_size: 32_768, eta: 2.0, ..PqParams::default() }
}

/// Splits a per-vector byte budget (default `d/8`) into scanned code bytes
/// and refinement bytes, half each when both halves divide `d`.
pub fn split_budget(d: usize, bytes: usize) -> (usize, usize) {
    let h = bytes / 2;
    if bytes % 2 == 0 && h > 0 && d % h == 0 {
        (h, h)
    } else {
        (bytes, 0)
    }
}

/// Quantises `c` and returns the bank file's bytes.
pub fn assemble(c: &Collected, o: &AssembleOptions) -> Result<Vec<u8>, BankError> {
    let n = c.rows.len();
    if n == 0 {
        return Err(BankError::InvalidInput("no rows to write".into()));
    }
    if o.code_bytes == 0 || c.d % o.code_bytes != 0 {
        return Err(BankError::InvalidInput(format!(
            "code bytes {} must divide the hidden size {} (e.g. d/8 = {})",
            o.code_bytes,
            c.d,
            c.d / 8
        )));
    }
    let params = quantizer_params(o.code_bytes, o.refine_bytes);
    let mut blobs = Vec::with_capacity(c.layers.len());
    let mut encoded = Vec::with_capacity(c.layers.len());
    for v in &c.vectors {
        let pq = ProductQuantizer::train(v, c.d, &params)?;
        encoded.push(pq.encode_with(v, params.eta)?);
        blobs.push(pq.to_bytes());
    }
    let layers: Vec<LayerData> = blobs
        .iter()
        .zip(&encoded)
        .map(|(b, e)| LayerData {
            quantizer: b,
            codes: &e.codes,
            refine: if o.refine_bytes > 0 { Some(&e.refine) } else { None },
        })
        .collect();
    let rows: Vec<RowMeta> = c
        .rows
        .iter()
        .map(|r| RowMeta {
            token_id: r.token,
            sentence_id: r.corpus_sentence,
            span_start: r.start,
            span_end: r.end,
            position: u32::from(r.position),
        })
        .collect();
    let manifest = BankManifest {
        model: ModelInfo { name: o.model_name.clone(), fingerprint: o.fingerprint.clone() },
        hidden_size: c.d as u32,
        layers: c.layers.iter().map(|&l| l as u32).collect(),
        rows: n as u64,
        rows_per_chunk: o.rows_per_chunk.clamp(1, u32::MAX as usize) as u32,
        sentences: c.sentences.len() as u64,
        sentences_per_block: 256,
        corpus: CorpusInfo {
            name: o.corpus.clone(),
            description: format!(
                "{} sentences, {} tokens run; at most 20 contexts per token, positions 0-1 skipped, >= 10 preferred",
                c.stats.sentences, c.stats.tokens
            ),
        },
        quantizer: QuantizerInfo {
            kind: "pq+refine".into(),
            params: serde_json::json!({
                "code_bytes": params.code_bytes, "refine_bytes": params.refine_bytes,
                "scan_stages": params.scan_stages, "rotation": "none", "ksub": 256,
                "train_size": params.train_size, "iters": params.iters,
            }),
            code_bytes: o.code_bytes as u32,
            refine_bytes: o.refine_bytes as u32,
        },
        tool: ToolInfo { name: "latentlens".into(), version: env!("CARGO_PKG_VERSION").into() },
        exact: None,
    };
    let writer = BankWriter::new(manifest, layers, &rows, &c.sentences)?;
    if !o.exact_rows {
        return writer.to_vec();
    }
    let exact: Vec<Vec<u8>> = c
        .vectors
        .iter()
        .map(|v| {
            let mut out = Vec::with_capacity(n * super::format::exact_row_len(c.d));
            for row in v.chunks_exact(c.d) {
                super::format::encode_exact_row(row, &mut out);
            }
            out
        })
        .collect();
    writer.with_exact_rows(exact.iter().map(Vec::as_slice).collect())?.to_vec()
}
