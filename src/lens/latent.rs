//! LatentLens (Krojer et al., 2026): explain a hidden state by its nearest
//! *contextual* text embeddings — the same LLM's hidden states of real words
//! in real sentences, at several layers — searched by cosine similarity in a
//! product-quantized bank, merged across bank layers, read out as whole words
//! inside their sentence.

use futures::future::{join, join_all};
use std::cell::RefCell;

use super::readout::whole_word;
use super::{Method, Neighbour};
use crate::bank::pq::ProductQuantizer;
use crate::bank::{BankError, BankReader, RowMeta};
use crate::search::{merge_layers, pq_search, Hit, PqSearchParams};

/// One bank layer: its LLM layer and quantizer (read at open, never change).
#[derive(Debug)]
struct LayerIndex {
    /// LLM layer (hidden-state index) the vectors were taken at.
    llm_layer: usize,
    pq: ProductQuantizer,
}

/// The rows loaded so far, `[0, meta.len())`; they only grow, chunk by chunk.
#[derive(Debug, Default)]
struct Rows {
    /// Per bank-layer slot: `[rows, code_bytes]`.
    codes: Vec<Vec<u8>>,
    /// Per bank-layer slot: `[rows, refine_bytes]`, empty without refinement.
    refine: Vec<Vec<u8>>,
    /// `[rows]`, the same for every layer.
    meta: Vec<RowMeta>,
    chunks_loaded: u64,
}

/// How much of a bank's rows a [`LatentLens`] holds (progressive loading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProgress {
    /// Row chunks loaded (codes of every layer, refinement data, row metadata).
    pub chunks_loaded: u64,
    /// Row chunks in the bank.
    pub n_chunks: u64,
    /// Rows searchable now: `[0, rows_loaded)`.
    pub rows_loaded: u64,
    /// Rows in the bank.
    pub n_rows: u64,
}

impl LoadProgress {
    /// Whether every chunk is loaded.
    pub fn is_complete(&self) -> bool {
        self.chunks_loaded >= self.n_chunks
    }
}

/// A bank being or fully loaded, ready to explain query vectors.
///
/// Progressive use (results refine as chunks arrive): [`open`](Self::open)
/// reads only the quantizers; each [`load_next_chunk`](Self::load_next_chunk)
/// adds one row chunk of every layer; [`search`](Self::search) /
/// [`explain`](Self::explain) search the rows loaded so far. [`load`](Self::load)
/// does it all at once. Sentences are never loaded up front: they are read
/// (one sentence block per range read, cached) only for the hits that
/// [`explain`](Self::explain) or [`neighbours`](Self::neighbours) return.
///
/// Loading takes `&self`, so one shared bank (the browser's `Rc`) can grow
/// while it answers queries: the rows sit behind a `RefCell` that is borrowed
/// only inside synchronous code, never across an `.await`. A search sees the
/// rows loaded when it runs; rows only grow, so hits stay valid afterwards.
pub struct LatentLens {
    reader: BankReader,
    layers: Vec<LayerIndex>,
    rows: RefCell<Rows>,
    /// Candidates reranked with refinement data per layer.
    pub shortlist: usize,
    /// Merged candidates per query reranked by exact cosine with the bank's
    /// exact rows ([`search_exact`](Self::search_exact)); 0 turns it off.
    /// Ignored for a bank without exact rows.
    pub exact_candidates: usize,
}

/// Default of [`LatentLens::exact_candidates`] (`latentlens bench search`: the
/// recall of the exact rerank against the candidates it reads).
pub const EXACT_CANDIDATES: usize = 32;

impl LatentLens {
    /// Reads every layer's quantizer and codes and the row metadata
    /// (sentences stay in the file and are read for displayed hits only).
    pub async fn load(reader: BankReader) -> Result<Self, BankError> {
        let me = Self::open(reader).await?;
        while me.load_next_chunk().await?.is_some() {}
        Ok(me)
    }

    /// Reads only the quantizers (a few hundred KB); no rows are searchable
    /// until [`load_next_chunk`](Self::load_next_chunk) is called.
    pub async fn open(reader: BankReader) -> Result<Self, BankError> {
        let mut layers = Vec::with_capacity(reader.n_layers());
        // Every layer's quantizer at once (over HTTP: requests side by side, not one by one).
        let blobs = join_all((0..reader.manifest().layers.len()).map(|slot| reader.quantizer_blob(slot))).await;
        for (&l, blob) in reader.manifest().layers.iter().zip(blobs) {
            let pq = ProductQuantizer::from_bytes(&blob?)?;
            if pq.d() != reader.manifest().hidden_size as usize || pq.code_bytes() != reader.code_bytes() {
                return Err(BankError::Corrupt(format!(
                    "the quantizer of bank layer {l} has d={} and {} code bytes, the manifest says d={} and {}",
                    pq.d(),
                    pq.code_bytes(),
                    reader.manifest().hidden_size,
                    reader.code_bytes()
                )));
            }
            layers.push(LayerIndex { llm_layer: l as usize, pq });
        }
        let rows = Rows { codes: vec![Vec::new(); layers.len()], refine: vec![Vec::new(); layers.len()], ..Rows::default() };
        Ok(Self { reader, layers, rows: RefCell::new(rows), shortlist: 100, exact_candidates: EXACT_CANDIDATES })
    }

    /// Loads the next row chunk (codes and refinement data of every layer,
    /// row metadata); `None` when every chunk is already loaded. Chunks load
    /// in order, so the searchable rows are always `[0, rows_loaded)`. On
    /// error nothing of the chunk is kept (calling again retries it). Two
    /// calls running at once fetch the same chunk and keep it once.
    pub async fn load_next_chunk(&self) -> Result<Option<LoadProgress>, BankError> {
        let c = self.rows.borrow().chunks_loaded;
        if c >= self.reader.n_chunks() {
            return Ok(None);
        }
        let rows = self.reader.chunk_rows(c)?;
        let n = (rows.end - rows.start) as usize;
        // Every layer's codes and refinement data and the row metadata, read side by side.
        let slots = 0..self.layers.len();
        let codes = join_all(slots.clone().map(|slot| self.reader.codes_chunk(slot, c)));
        let refine = join_all(slots.map(|slot| async move {
            if self.reader.refine_bytes() > 0 {
                self.reader.refine_chunk(slot, c).await
            } else {
                Ok(Vec::new())
            }
        }));
        let ((codes, refine), meta) = join(join(codes, refine), self.reader.row_meta_chunk(c)).await;
        let codes: Vec<Vec<u8>> = codes.into_iter().collect::<Result<_, _>>()?;
        let refine: Vec<Vec<u8>> = refine.into_iter().collect::<Result<_, _>>()?;
        let meta = meta?;
        if meta.len() != n {
            return Err(BankError::Corrupt(format!("row chunk {c} has {} metadata rows, expected {n}", meta.len())));
        }
        // No await from here on: the rows are borrowed only while appending.
        let mut guard = self.rows.borrow_mut();
        let r = &mut *guard;
        // A concurrent call may have appended this chunk meanwhile: keep one copy.
        if r.chunks_loaded == c {
            for (all, cd) in r.codes.iter_mut().zip(codes) {
                all.extend(cd);
            }
            for (all, rf) in r.refine.iter_mut().zip(refine) {
                all.extend(rf);
            }
            r.meta.extend(meta);
            r.chunks_loaded += 1;
        }
        drop(guard);
        Ok(Some(self.load_progress()))
    }

    /// How much is loaded.
    pub fn load_progress(&self) -> LoadProgress {
        let r = self.rows.borrow();
        LoadProgress {
            chunks_loaded: r.chunks_loaded,
            n_chunks: self.reader.n_chunks(),
            rows_loaded: r.meta.len() as u64,
            n_rows: self.reader.n_rows(),
        }
    }

    /// Whether every row chunk is loaded.
    pub fn is_complete(&self) -> bool {
        self.rows.borrow().chunks_loaded >= self.reader.n_chunks()
    }

    /// Rows searchable now (`[0, rows_loaded)`).
    pub fn rows_loaded(&self) -> u64 {
        self.rows.borrow().meta.len() as u64
    }

    /// Calls `f` with bank-layer `slot`'s quantizer, its codes
    /// `[rows_loaded, code_bytes]` and refinement data `[rows_loaded,
    /// refine_bytes]` (`None` without refinement), e.g. to upload them to the
    /// GPU search kernels without reading the bank again; `None` for a slot out
    /// of range. `f` runs synchronously, so the rows cannot grow meanwhile.
    pub fn with_layer_rows<R>(&self, slot: usize, f: impl FnOnce(&ProductQuantizer, &[u8], Option<&[u8]>) -> R) -> Option<R> {
        let l = self.layers.get(slot)?;
        let r = self.rows.borrow();
        let codes = r.codes.get(slot)?;
        let refine = r.refine.get(slot).filter(|x| !x.is_empty()).map(Vec::as_slice);
        Some(f(&l.pq, codes, refine))
    }

    /// Loads a bank file (native convenience).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_file(path: impl AsRef<std::path::Path>) -> Result<Self, BankError> {
        let reader = BankReader::open_file(path)?;
        futures::executor::block_on(Self::load(reader))
    }

    /// The bank's reader (manifest, sentences).
    pub fn reader(&self) -> &BankReader {
        &self.reader
    }

    /// LLM layers of the bank, in slot order.
    pub fn bank_layers(&self) -> Vec<usize> {
        self.layers.iter().map(|l| l.llm_layer).collect()
    }

    /// Refuses a model other than the one the bank was built for, naming both.
    pub fn check_model(&self, model_name: &str, fingerprint: &str) -> Result<(), BankError> {
        let m = &self.reader.manifest().model;
        if m.fingerprint == fingerprint {
            return Ok(());
        }
        Err(BankError::Invalid(format!(
            "this bank was built for the model `{}` (fingerprint {}), but the loaded model is `{model_name}` (fingerprint {fingerprint}): \
             use the bank's model, or build a bank for this model with `latentlens build-bank`",
            m.name, m.fingerprint
        )))
    }

    /// Top-`k` contextual neighbours of each query row (`[Q, d]` row-major,
    /// any norm), searched in every bank layer over the rows loaded so far
    /// and merged across layers; sentences are read for the returned hits only.
    pub async fn explain(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<Neighbour>>, crate::Error> {
        let merged = self.search_exact(queries, k).await?;
        let mut out = Vec::with_capacity(merged.len());
        for hits in merged {
            out.push(self.neighbours(&hits).await?);
        }
        Ok(out)
    }

    /// The raw top-`k` hits (row, score, bank-layer slot) of each query row
    /// over the rows loaded so far, merged across bank layers; no sentence
    /// is read. Empty lists while no chunk is loaded.
    pub fn search(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>, crate::Error> {
        let d = self.reader.manifest().hidden_size as usize;
        if d == 0 || queries.len() % d != 0 {
            return Err(crate::search::SearchError::Invalid(format!(
                "queries have {} floats, not a multiple of the bank's hidden size {d}: wrong model for this bank?",
                queries.len()
            ))
            .into());
        }
        let rows = self.rows.borrow();
        if rows.meta.is_empty() {
            crate::search::check_k(k)?;
            return Ok(vec![Vec::new(); queries.len() / d]);
        }
        // Cosine = inner product of unit vectors.
        let q = unit_rows(queries, d);
        let mut per_layer = Vec::with_capacity(self.layers.len());
        for (slot, (l, codes)) in self.layers.iter().zip(&rows.codes).enumerate() {
            let p = PqSearchParams { k, shortlist: self.shortlist, layer: slot as u16, ..PqSearchParams::default() };
            let refine = rows.refine.get(slot).filter(|x| !x.is_empty()).map(Vec::as_slice);
            per_layer.push(pq_search(&l.pq, codes, refine, &q, &p)?);
        }
        Ok(merge_layers(&per_layer, k)?)
    }

    /// Whether [`search_exact`](Self::search_exact) reranks (the bank has
    /// exact rows and [`exact_candidates`](Self::exact_candidates) > 0).
    pub fn reranks_exactly(&self) -> bool {
        self.reader.has_exact_rows() && self.exact_candidates > 0
    }

    /// [`search`](Self::search), then, when the bank stores exact rows, the
    /// best [`exact_candidates`](Self::exact_candidates) merged hits of each
    /// query are reread as exact vectors (one small read per distinct
    /// row × layer, side by side) and reranked by exact cosine; scores are
    /// then exact cosines. Without exact rows it equals `search`.
    pub async fn search_exact(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>, crate::Error> {
        if !self.reranks_exactly() {
            return self.search(queries, k);
        }
        crate::search::check_k(k)?;
        let merged = self.search(queries, k.max(self.exact_candidates))?;
        self.rerank_exact(queries, &merged, k).await
    }

    /// Reranks merged hits of each query (`merged[i]` for query row `i`,
    /// e.g. from the GPU search with `k.max(exact_candidates)` per query) by
    /// exact cosine with the bank's exact rows; keeps `k`. Errors without
    /// exact rows.
    pub async fn rerank_exact(&self, queries: &[f32], merged: &[Vec<Hit>], k: usize) -> Result<Vec<Vec<Hit>>, crate::Error> {
        let d = self.reader.manifest().hidden_size as usize;
        if d == 0 || queries.len() != merged.len() * d {
            return Err(crate::search::SearchError::Invalid(format!(
                "{} query floats for {} hit lists of hidden size {d}",
                queries.len(),
                merged.len()
            ))
            .into());
        }
        let mut wanted: Vec<(u16, u32)> = merged.iter().flatten().map(|h| (h.layer, h.row)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let read = join_all(wanted.iter().map(|&(slot, row)| self.reader.exact_row(usize::from(slot), u64::from(row)))).await;
        let mut vectors = std::collections::HashMap::with_capacity(wanted.len());
        for (key, v) in wanted.into_iter().zip(read) {
            vectors.insert(key, v?);
        }
        let unit = unit_rows(queries, d);
        let mut out = Vec::with_capacity(merged.len());
        for (q, hits) in unit.chunks(d).zip(merged) {
            let vs: Vec<&[f32]> = hits.iter().map(|h| vectors.get(&(h.layer, h.row)).map_or(&[][..], Vec::as_slice)).collect();
            out.push(crate::search::rerank_exact(q, hits, &vs, k)?);
        }
        Ok(out)
    }

    /// Hits (from [`search`](Self::search)) as readable neighbours, ranked in
    /// the given order: reads each hit's sentence (cached by sentence block).
    pub async fn neighbours(&self, hits: &[Hit]) -> Result<Vec<Neighbour>, BankError> {
        // The distinct sentence blocks of these hits, read side by side first (over HTTP:
        // one round trip instead of one per hit); errors surface below, per hit.
        let spb = u64::from(self.reader.manifest().sentences_per_block.max(1));
        let mut blocks: Vec<u64> = {
            let rows = self.rows.borrow();
            hits.iter().filter_map(|h| rows.meta.get(h.row as usize)).map(|m| u64::from(m.sentence_id) / spb).collect()
        };
        blocks.sort_unstable();
        blocks.dedup();
        if blocks.len() > 1 && blocks.len() <= crate::bank::reader::BLOCK_CACHE_LEN {
            let _ = join_all(blocks.iter().map(|&b| self.reader.sentence_block(b))).await;
        }
        let mut list = Vec::with_capacity(hits.len());
        for (rank, h) in hits.iter().enumerate() {
            list.push(self.neighbour(rank, h).await?);
        }
        Ok(list)
    }

    async fn neighbour(&self, rank: usize, h: &Hit) -> Result<Neighbour, BankError> {
        // Copied out: no borrow of the rows is held across the sentence read.
        let m = {
            let rows = self.rows.borrow();
            *rows.meta.get(h.row as usize).ok_or(BankError::OutOfRange {
                what: "row",
                index: u64::from(h.row),
                count: rows.meta.len() as u64,
            })?
        };
        let sentence = self.reader.sentence(m.sentence_id).await?;
        let (s, e) = (m.span_start as usize, m.span_end as usize);
        let token = sentence.get(s..e).unwrap_or_default().to_string();
        let (word, span) = match whole_word(&sentence, s, e) {
            Some(w) => (w.word, w.span),
            None => (token.trim().to_string(), (s, e)),
        };
        let bank_layer = self.layers.get(h.layer as usize).map(|l| l.llm_layer);
        Ok(Neighbour {
            rank: rank as u32 + 1,
            score: h.score,
            prob: None,
            word,
            token,
            token_id: m.token_id,
            sentence: Some(sentence),
            span: Some(span),
            bank_layer,
            method: Method::Latent,
        })
    }
}

/// `rows` (`[Q, d]`) scaled to unit length each (cosine = inner product);
/// a zero row stays zero.
pub(crate) fn unit_rows(rows: &[f32], d: usize) -> Vec<f32> {
    let mut q = rows.to_vec();
    for row in q.chunks_mut(d.max(1)) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= n);
    }
    q
}
