//! Exact cosine top-k (`shaders/exact_topk.wgsl`, `shaders/exact_topk_f16.wgsl`) and its CPU twin.
//!
//! Brute force over `[n, d]` vectors: `score = dot(q̂, v)` for unit-norm bank rows, or
//! `dot(q̂, v) / |v|` with `normalize_rows` (e.g. an embedding matrix), `q̂ = q / |q|` computed on
//! the host by [`normalize_query`]. Vectors are stored as f32, or as f16 when the adapter has
//! `shader-f16` (arithmetic stays f32). Chunked like the PQ scan; merged by `topk_merge`.

use super::pq_scan::batch_size;
use super::topk_merge::encode_merge;
use super::{
    bytes_of_count, candidates_from_bytes, check_k, plan_blocks, split_results, BlockPlan,
    Candidate, FieldOffsets, GpuContext, GpuError, Kernel,
};

/// Storage precision on the GPU: of the vectors here, of the matmul tiles in
/// [`super::matmul`] (and so of the WGSL text forward's projections).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 (always available).
    #[default]
    F32,
    /// f16 storage, f32 arithmetic; needs `shader-f16` ([`GpuContext::has_shader_f16`]).
    F16,
}

impl Precision {
    fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }
}

/// Uniform params of `exact_topk.wgsl` / `exact_topk_f16.wgsl` (`struct ExactParams`, 48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ExactParams {
    pub n_rows: u32,
    pub d: u32,
    pub k: u32,
    pub row_base: u32,
    pub rows_per_wg: u32,
    pub lists_per_query: u32,
    pub list_base: u32,
    pub tag: u32,
    pub normalize_rows: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

impl ExactParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("n_rows", std::mem::offset_of!(ExactParams, n_rows)),
        ("d", std::mem::offset_of!(ExactParams, d)),
        ("k", std::mem::offset_of!(ExactParams, k)),
        ("row_base", std::mem::offset_of!(ExactParams, row_base)),
        (
            "rows_per_wg",
            std::mem::offset_of!(ExactParams, rows_per_wg),
        ),
        (
            "lists_per_query",
            std::mem::offset_of!(ExactParams, lists_per_query),
        ),
        ("list_base", std::mem::offset_of!(ExactParams, list_base)),
        ("tag", std::mem::offset_of!(ExactParams, tag)),
        (
            "normalize_rows",
            std::mem::offset_of!(ExactParams, normalize_rows),
        ),
        ("_pad0", std::mem::offset_of!(ExactParams, _pad0)),
        ("_pad1", std::mem::offset_of!(ExactParams, _pad1)),
        ("_pad2", std::mem::offset_of!(ExactParams, _pad2)),
    ];
}

/// `q / |q|` (f32, sequential sum); a zero or non-finite norm leaves `q` unchanged.
pub fn normalize_query(q: &[f32]) -> Vec<f32> {
    let mut ss = 0f32;
    for &x in q {
        ss += x * x;
    }
    let norm = ss.sqrt();
    if norm > 0.0 && norm.is_finite() {
        q.iter().map(|&x| x / norm).collect()
    } else {
        q.to_vec()
    }
}

fn check_vectors(vectors: &[f32], n: usize, d: usize) -> Result<(), GpuError> {
    if d == 0 || n.checked_mul(d) != Some(vectors.len()) {
        return Err(GpuError::InvalidInput(format!(
            "{} vector floats for n = {n}, d = {d} (need n * d, d > 0)",
            vectors.len()
        )));
    }
    Ok(())
}

/// CPU twin: per query the top `k` rows of `vectors` (`[n, d]`) by cosine as the kernel computes
/// it (queries normalised by [`normalize_query`]; vectors rounded through f16 for
/// [`Precision::F16`]; rows numbered from 0, candidates tagged `tag`).
#[allow(clippy::too_many_arguments)]
pub fn exact_topk_reference(
    vectors: &[f32],
    n: usize,
    d: usize,
    queries: &[f32],
    nq: usize,
    k: usize,
    normalize_rows: bool,
    precision: Precision,
    tag: u32,
) -> Result<Vec<Vec<Candidate>>, GpuError> {
    check_vectors(vectors, n, d)?;
    super::lut::check_queries(queries, nq, d)?;
    let stored: Vec<f32> = match precision {
        Precision::F32 => vectors.to_vec(),
        Precision::F16 => vectors
            .iter()
            .map(|&x| half::f16::from_f32(x).to_f32())
            .collect(),
    };
    Ok((0..nq)
        .map(|q| {
            let qn = normalize_query(&queries[q * d..(q + 1) * d]);
            let scored = stored.chunks_exact(d).enumerate().map(|(r, v)| {
                let (mut dot, mut vv) = (0f32, 0f32);
                for i in 0..d {
                    dot += qn[i] * v[i];
                    vv += v[i] * v[i];
                }
                let score = if normalize_rows { dot / vv.sqrt() } else { dot };
                Candidate {
                    score,
                    row: r as u32,
                    tag,
                }
            });
            super::topk_reference(scored, k)
        })
        .collect())
}

/// One chunk of vectors on the GPU.
pub(crate) struct VectorChunk {
    pub buf: wgpu::Buffer,
    pub rows: u32,
    pub row_base: u32,
}

/// Upload `[n, d]` vectors (rows numbered from `row_base`) in chunks that fit the binding limit.
pub(crate) fn upload_vectors(
    ctx: &GpuContext,
    vectors: &[f32],
    n: usize,
    d: usize,
    precision: Precision,
    row_base: u32,
) -> Result<Vec<VectorChunk>, GpuError> {
    check_vectors(vectors, n, d)?;
    let row_bytes = bytes_of_count(d, precision.bytes(), "vector row")?;
    let max_rows = ctx.max_binding_bytes() / row_bytes;
    if max_rows == 0 {
        return Err(GpuError::LimitTooSmall {
            limit: "max_storage_buffer_binding_size",
            need: row_bytes,
            have: ctx.max_binding_bytes(),
        });
    }
    if (row_base as u64) + (n as u64) > u32::MAX as u64 - 1 {
        return Err(GpuError::InvalidInput(
            "more than 2^32 - 2 rows in one layer".into(),
        ));
    }
    let mut chunks = Vec::new();
    let mut start = 0usize;
    while start < n {
        let rows = ((n - start) as u64).min(max_rows) as usize;
        let part = &vectors[start * d..(start + rows) * d];
        let buf = match precision {
            Precision::F32 => ctx.storage_init("vectors f32", bytemuck::cast_slice(part)),
            Precision::F16 => {
                let h: Vec<half::f16> = part.iter().map(|&x| half::f16::from_f32(x)).collect();
                ctx.storage_init("vectors f16", bytemuck::cast_slice(&h))
            }
        };
        chunks.push(VectorChunk {
            buf,
            rows: rows as u32,
            row_base: row_base + start as u32,
        });
        start += rows;
    }
    Ok(chunks)
}

/// Record the exact scan of every chunk for the `nq` (normalised) queries in `queries`, then
/// the merge; returns the `[nq, k]` output buffer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_exact(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    chunks: &[VectorChunk],
    plans: &[BlockPlan],
    lists: u32,
    d: u32,
    precision: Precision,
    normalize_rows: bool,
    queries: &wgpu::Buffer,
    nq: u32,
    k: u32,
    tag: u32,
) -> Result<wgpu::Buffer, GpuError> {
    let kernel = match precision {
        Precision::F32 => Kernel::ExactTopk,
        Precision::F16 => Kernel::ExactTopkF16,
    };
    let per_query = lists as u64 * k as u64;
    let cand_bytes = per_query * nq as u64 * 12;
    ctx.check_binding("candidate lists", cand_bytes)?;
    let cands = ctx.storage_out("exact candidates", cand_bytes);
    let mut list_base = 0u32;
    for (chunk, plan) in chunks.iter().zip(plans) {
        let params = ExactParams {
            n_rows: chunk.rows,
            d,
            k,
            row_base: chunk.row_base,
            rows_per_wg: plan.rows_per_wg,
            lists_per_query: lists,
            list_base,
            tag,
            normalize_rows: normalize_rows as u32,
            ..bytemuck::Zeroable::zeroed()
        };
        let ubuf = ctx.uniform_init("exact params", &params);
        let bind = ctx.bind(kernel, &[&ubuf, &chunk.buf, queries, &cands])?;
        ctx.dispatch(enc, kernel, &bind, (plan.groups, nq))?;
        list_base += plan.groups;
    }
    let per_query = u32::try_from(per_query).map_err(|_| {
        GpuError::InvalidInput(format!("{per_query} candidates per query overflow u32"))
    })?;
    encode_merge(ctx, enc, &cands, nq, per_query, k)
}

/// Per-chunk plans and lists per query.
pub(crate) fn plan_vector_chunks(
    chunks: &[VectorChunk],
    nq: u32,
    max_groups: u32,
) -> (Vec<BlockPlan>, u32) {
    let plans: Vec<BlockPlan> = chunks
        .iter()
        .map(|c| plan_blocks(c.rows, nq, max_groups))
        .collect();
    let lists = plans.iter().map(|p| p.groups).sum();
    (plans, lists)
}

/// Run the exact search over uploaded chunks for `queries` (`[nq, d]`, raw), in query batches.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn exact_search_chunks(
    ctx: &GpuContext,
    chunks: &[VectorChunk],
    d: usize,
    precision: Precision,
    normalize_rows: bool,
    queries: &[f32],
    nq: usize,
    k: usize,
    tag: u32,
) -> Result<Vec<Vec<Candidate>>, GpuError> {
    ctx.check_alive("exact_topk")?;
    super::lut::check_queries(queries, nq, d)?;
    let k32 = check_k(k)?;
    if precision == Precision::F16 && !ctx.has_shader_f16() {
        return Err(GpuError::MissingFeature("shader-f16"));
    }
    if nq == 0 {
        return Ok(Vec::new());
    }
    if chunks.is_empty() {
        return Ok(vec![Vec::new(); nq]);
    }
    let (plans, lists) = plan_vector_chunks(chunks, nq as u32, ctx.max_workgroups());
    let batch = batch_size(
        ctx,
        nq,
        &[
            ("queries", bytes_of_count(d, 4, "query")?),
            ("candidate lists", lists as u64 * k as u64 * 12),
        ],
    )?;
    let mut out = Vec::with_capacity(nq);
    for q0 in (0..nq).step_by(batch) {
        let nqb = batch.min(nq - q0);
        let mut qn = Vec::with_capacity(nqb * d);
        for q in q0..q0 + nqb {
            qn.extend(normalize_query(&queries[q * d..(q + 1) * d]));
        }
        let scopes = ctx.scopes();
        let qbuf = ctx.storage_init("queries", bytemuck::cast_slice(&qn));
        let mut enc = ctx.encoder("exact_topk");
        let res = encode_exact(
            ctx,
            &mut enc,
            chunks,
            &plans,
            lists,
            d as u32,
            precision,
            normalize_rows,
            &qbuf,
            nqb as u32,
            k32,
            tag,
        )?;
        let raw = ctx
            .submit_and_read(
                "exact_topk",
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

/// One-shot exact top-k on the GPU: upload `vectors` (`[n, d]`), search `queries` (`[nq, d]`).
/// Same order as [`exact_topk_reference`]. For repeated searches use [`super::GpuExactSearch`].
#[allow(clippy::too_many_arguments)]
pub async fn exact_topk(
    ctx: &GpuContext,
    vectors: &[f32],
    n: usize,
    d: usize,
    queries: &[f32],
    nq: usize,
    k: usize,
    normalize_rows: bool,
    precision: Precision,
) -> Result<Vec<Vec<Candidate>>, GpuError> {
    if precision == Precision::F16 && !ctx.has_shader_f16() {
        return Err(GpuError::MissingFeature("shader-f16"));
    }
    let chunks = upload_vectors(ctx, vectors, n, d, precision, 0)?;
    exact_search_chunks(
        ctx,
        &chunks,
        d,
        precision,
        normalize_rows,
        queries,
        nq,
        k,
        0,
    )
    .await
}
