//! High-level GPU search: a layer's codebooks and codes (or exact vectors) uploaded once,
//! batches of queries answered with LUT build → chunked scan → merge in one submission.
//!
//! Codes may arrive in pieces ([`GpuSearch::push_codes`]), so search can start on the first
//! chunks of a streamed bank. Results use the CONTRACT order; rows are global row indices.

use super::exact_topk::{exact_search_chunks, upload_vectors, VectorChunk};
use super::lut::{check_queries, LutTables};
use super::pq_scan::{batch_size, encode_scan, plan_chunks, upload_codes, CodeChunk};
use super::{
    bytes_of_count, candidates_from_bytes, check_k, split_results, Candidate, GpuContext, GpuError,
    PqCodebooks, Precision,
};

/// A PQ-coded layer on the GPU.
pub struct GpuSearch {
    ctx: GpuContext,
    tables: LutTables,
    m: usize,
    chunks: Vec<CodeChunk>,
    rows: usize,
    tag: u32,
}

impl std::fmt::Debug for GpuSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuSearch")
            .field("m", &self.m)
            .field("rows", &self.rows)
            .field("chunks", &self.chunks.len())
            .field("tag", &self.tag)
            .finish()
    }
}

/// Convert kernel candidates to `(row, score)` pairs.
pub fn to_pairs(lists: Vec<Vec<Candidate>>) -> Vec<Vec<(u32, f32)>> {
    lists
        .into_iter()
        .map(|l| l.into_iter().map(|c| (c.row, c.score)).collect())
        .collect()
}

impl GpuSearch {
    /// Upload the codebooks of one layer; `tag` is its bank-layer slot (for cross-layer merges).
    pub fn new(ctx: &GpuContext, books: &PqCodebooks<'_>, tag: u32) -> Result<Self, GpuError> {
        ctx.check_alive("GpuSearch::new")?;
        let tables = LutTables::upload(ctx, books)?;
        Ok(GpuSearch {
            ctx: ctx.clone(),
            tables,
            m: books.m,
            chunks: Vec::new(),
            rows: 0,
            tag,
        })
    }

    /// Append `n` rows of codes (`[n, m]` u8); they get the next global row indices.
    pub fn push_codes(&mut self, codes: &[u8], n: usize) -> Result<(), GpuError> {
        self.ctx.check_alive("GpuSearch::push_codes")?;
        let base =
            u32::try_from(self.rows).map_err(|_| GpuError::InvalidInput("too many rows".into()))?;
        let new = upload_codes(&self.ctx, codes, n, self.m, base)?;
        self.chunks.extend(new);
        self.rows += n;
        Ok(())
    }

    /// Rows uploaded so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of GPU buffers the codes are split into.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Top `k` rows per query (`queries` is `[nq, d]`, already rotated if the quantizer has a
    /// rotation): `(row, score)` best first.
    pub async fn search(
        &self,
        queries: &[f32],
        nq: usize,
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>, GpuError> {
        Ok(to_pairs(self.search_candidates(queries, nq, k).await?))
    }

    /// As [`GpuSearch::search`], keeping the layer tag (for [`super::topk_merge::merge_layers`]).
    pub async fn search_candidates(
        &self,
        queries: &[f32],
        nq: usize,
        k: usize,
    ) -> Result<Vec<Vec<Candidate>>, GpuError> {
        let ctx = &self.ctx;
        ctx.check_alive("GpuSearch::search")?;
        let d = self.tables.d as usize;
        check_queries(queries, nq, d)?;
        let k32 = check_k(k)?;
        if nq == 0 {
            return Ok(Vec::new());
        }
        if self.chunks.is_empty() {
            return Ok(vec![Vec::new(); nq]);
        }
        let words = self.tables.m_pad / 4;
        let (plans, lists) = plan_chunks(
            self.chunks.iter().map(|c| c.rows),
            nq as u32,
            ctx.max_workgroups(),
        );
        let batch = batch_size(
            ctx,
            nq,
            &[
                ("queries", bytes_of_count(d, 4, "query")?),
                ("lookup tables", self.tables.lut_bytes_per_query()),
                ("candidate lists", lists as u64 * k as u64 * 12),
            ],
        )?;
        let mut out = Vec::with_capacity(nq);
        for q0 in (0..nq).step_by(batch) {
            let nqb = batch.min(nq - q0);
            let scopes = ctx.scopes();
            let qbuf = ctx.storage_init(
                "queries",
                bytemuck::cast_slice(&queries[q0 * d..(q0 + nqb) * d]),
            );
            let mut enc = ctx.encoder("GpuSearch");
            let lut = self.tables.encode(ctx, &mut enc, &qbuf, nqb as u32)?;
            let res = encode_scan(
                ctx,
                &mut enc,
                &self.chunks,
                &plans,
                lists,
                words,
                &lut,
                nqb as u32,
                k32,
                self.tag,
            )?;
            let raw = ctx
                .submit_and_read(
                    "GpuSearch",
                    scopes,
                    enc,
                    &res,
                    bytes_of_count(nqb * k, 12, "results")?,
                )
                .await?;
            out.extend(split_results(&candidates_from_bytes(&raw), nqb, k));
        }
        Ok(out)
    }
}

/// Exact (uncompressed) vectors on the GPU.
pub struct GpuExactSearch {
    ctx: GpuContext,
    d: usize,
    precision: Precision,
    normalize_rows: bool,
    chunks: Vec<VectorChunk>,
    rows: usize,
    tag: u32,
}

impl std::fmt::Debug for GpuExactSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuExactSearch")
            .field("d", &self.d)
            .field("precision", &self.precision)
            .field("rows", &self.rows)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl GpuExactSearch {
    /// Empty index of dimension `d`. `normalize_rows`: divide by each row's norm (rows not unit
    /// vectors). [`Precision::F16`] needs `shader-f16`.
    pub fn new(
        ctx: &GpuContext,
        d: usize,
        precision: Precision,
        normalize_rows: bool,
        tag: u32,
    ) -> Result<Self, GpuError> {
        if d == 0 || d > u32::MAX as usize / 4 {
            return Err(GpuError::InvalidInput(format!("vector dimension {d}")));
        }
        if precision == Precision::F16 && !ctx.has_shader_f16() {
            return Err(GpuError::MissingFeature("shader-f16"));
        }
        Ok(GpuExactSearch {
            ctx: ctx.clone(),
            d,
            precision,
            normalize_rows,
            chunks: Vec::new(),
            rows: 0,
            tag,
        })
    }

    /// Append `n` rows (`[n, d]` f32).
    pub fn push_vectors(&mut self, vectors: &[f32], n: usize) -> Result<(), GpuError> {
        self.ctx.check_alive("GpuExactSearch::push_vectors")?;
        let base =
            u32::try_from(self.rows).map_err(|_| GpuError::InvalidInput("too many rows".into()))?;
        let new = upload_vectors(&self.ctx, vectors, n, self.d, self.precision, base)?;
        self.chunks.extend(new);
        self.rows += n;
        Ok(())
    }

    /// Rows uploaded so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of GPU buffers the vectors are split into.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Top `k` rows by cosine per query (`[nq, d]`): `(row, score)` best first.
    pub async fn search(
        &self,
        queries: &[f32],
        nq: usize,
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>, GpuError> {
        Ok(to_pairs(self.search_candidates(queries, nq, k).await?))
    }

    /// As [`GpuExactSearch::search`], keeping the layer tag.
    pub async fn search_candidates(
        &self,
        queries: &[f32],
        nq: usize,
        k: usize,
    ) -> Result<Vec<Vec<Candidate>>, GpuError> {
        exact_search_chunks(
            &self.ctx,
            &self.chunks,
            self.d,
            self.precision,
            self.normalize_rows,
            queries,
            nq,
            k,
            self.tag,
        )
        .await
    }
}
