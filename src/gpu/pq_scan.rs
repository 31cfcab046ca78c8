//! PQ (ADC) scan with a per-workgroup top-k (`shaders/pq_scan.wgsl`) and its CPU twin.
//!
//! `score(row) = Σ_{j<M} LUT[q][j][code[row][j]]` (CONTRACT). Codes are packed 4 per u32
//! little-endian, M padded to a multiple of 4 with zero bytes that hit zero LUT rows. Codes larger
//! than the storage binding limit are split into row chunks, one dispatch each; every workgroup
//! writes its best k, and [`super::topk_merge`] reduces the lists to the final top-k (faiss'
//! GPU IVFPQ follows the same scan → per-block k-select → merge shape).

use super::topk_merge::encode_merge;
use super::{
    bytes_of_count, candidates_from_bytes, check_k, plan_blocks, split_results, BlockPlan,
    Candidate, FieldOffsets, GpuContext, GpuError, Kernel,
};

/// Uniform params of `pq_scan.wgsl` (`struct ScanParams`, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ScanParams {
    pub n_rows: u32,
    pub words: u32,
    pub k: u32,
    pub row_base: u32,
    pub rows_per_wg: u32,
    pub lists_per_query: u32,
    pub list_base: u32,
    pub tag: u32,
}

impl ScanParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("n_rows", std::mem::offset_of!(ScanParams, n_rows)),
        ("words", std::mem::offset_of!(ScanParams, words)),
        ("k", std::mem::offset_of!(ScanParams, k)),
        ("row_base", std::mem::offset_of!(ScanParams, row_base)),
        ("rows_per_wg", std::mem::offset_of!(ScanParams, rows_per_wg)),
        (
            "lists_per_query",
            std::mem::offset_of!(ScanParams, lists_per_query),
        ),
        ("list_base", std::mem::offset_of!(ScanParams, list_base)),
        ("tag", std::mem::offset_of!(ScanParams, tag)),
    ];
}

fn check_codes(codes: &[u8], n: usize, m: usize) -> Result<(), GpuError> {
    if m == 0 || n.checked_mul(m) != Some(codes.len()) {
        return Err(GpuError::InvalidInput(format!(
            "{} code bytes for n = {n} rows of m = {m} bytes (need n * m, m > 0)",
            codes.len()
        )));
    }
    if n > u32::MAX as usize - 1 {
        return Err(GpuError::InvalidInput(format!(
            "{n} rows: at most 2^32 - 2 rows per layer"
        )));
    }
    Ok(())
}

/// Pack codes `[n, m]` u8 into `[n, ceil(m / 4)]` u32, little-endian, zero-padded (CONTRACT).
pub fn pack_codes(codes: &[u8], n: usize, m: usize) -> Result<Vec<u32>, GpuError> {
    check_codes(codes, n, m)?;
    let words = m.div_ceil(4);
    let mut out = vec![0u32; n * words];
    for (r, row) in codes.chunks_exact(m).enumerate() {
        for (j, &b) in row.iter().enumerate() {
            out[r * words + j / 4] |= (b as u32) << (8 * (j % 4));
        }
    }
    Ok(out)
}

/// CPU twin of the scan + merge: per query the top `k` rows of `codes` (`[n, m]` u8) under
/// `luts` (`[nq, m, 256]`), rows numbered from `row_base`, candidates tagged `tag`.
/// Sums over j in order, as the kernel does.
pub fn pq_scan_reference(
    codes: &[u8],
    n: usize,
    m: usize,
    luts: &[f32],
    nq: usize,
    k: usize,
    tag: u32,
) -> Result<Vec<Vec<Candidate>>, GpuError> {
    check_codes(codes, n, m)?;
    check_luts(luts, nq, m)?;
    Ok((0..nq)
        .map(|q| {
            let lut = &luts[q * m * 256..(q + 1) * m * 256];
            let scored = codes.chunks_exact(m).enumerate().map(|(r, row)| {
                let mut acc = 0f32;
                for (j, &c) in row.iter().enumerate() {
                    acc += lut[j * 256 + c as usize];
                }
                Candidate {
                    score: acc,
                    row: r as u32,
                    tag,
                }
            });
            super::topk_reference(scored, k)
        })
        .collect())
}

fn check_luts(luts: &[f32], nq: usize, m: usize) -> Result<(), GpuError> {
    if nq.checked_mul(m).and_then(|x| x.checked_mul(256)) != Some(luts.len()) {
        return Err(GpuError::InvalidInput(format!(
            "{} LUT floats for nq = {nq}, m = {m} (need nq * m * 256)",
            luts.len()
        )));
    }
    Ok(())
}

/// One chunk of packed codes on the GPU.
pub(crate) struct CodeChunk {
    pub buf: wgpu::Buffer,
    pub rows: u32,
    pub row_base: u32,
}

/// Upload codes `[n, m]` (rows numbered from `row_base`) as chunks that fit the binding limit.
pub(crate) fn upload_codes(
    ctx: &GpuContext,
    codes: &[u8],
    n: usize,
    m: usize,
    row_base: u32,
) -> Result<Vec<CodeChunk>, GpuError> {
    check_codes(codes, n, m)?;
    let row_bytes = m.div_ceil(4) as u64 * 4;
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
        let packed = pack_codes(&codes[start * m..(start + rows) * m], rows, m)?;
        chunks.push(CodeChunk {
            buf: ctx.storage_init("pq codes", bytemuck::cast_slice(&packed)),
            rows: rows as u32,
            row_base: row_base + start as u32,
        });
        start += rows;
    }
    Ok(chunks)
}

/// Per-chunk plans and the number of candidate lists per query.
pub(crate) fn plan_chunks(
    rows: impl Iterator<Item = u32>,
    nq: u32,
    max_groups: u32,
) -> (Vec<BlockPlan>, u32) {
    let plans: Vec<BlockPlan> = rows.map(|r| plan_blocks(r, nq, max_groups)).collect();
    let lists = plans.iter().map(|p| p.groups).sum();
    (plans, lists)
}

/// Queries per batch so every per-batch buffer fits the binding limit and the dispatch limit.
pub(crate) fn batch_size(
    ctx: &GpuContext,
    nq: usize,
    per_query_bytes: &[(&'static str, u64)],
) -> Result<usize, GpuError> {
    let mut b = nq.min(ctx.max_workgroups() as usize).max(1);
    for &(what, bytes) in per_query_bytes {
        ctx.check_binding(what, bytes)?;
        b = b.min((ctx.max_binding_bytes() / bytes.max(1)) as usize);
    }
    Ok(b.max(1))
}

/// Record the scan of every chunk for `nq` queries whose LUTs are in `lut`; then the merge.
/// Returns the `[nq, k]` output buffer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_scan(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    chunks: &[CodeChunk],
    plans: &[BlockPlan],
    lists: u32,
    words: u32,
    lut: &wgpu::Buffer,
    nq: u32,
    k: u32,
    tag: u32,
) -> Result<wgpu::Buffer, GpuError> {
    let per_query = lists as u64 * k as u64;
    let cand_bytes = per_query * nq as u64 * 12;
    ctx.check_binding("candidate lists", cand_bytes)?;
    let cands = ctx.storage_out("scan candidates", cand_bytes);
    let mut list_base = 0u32;
    for (chunk, plan) in chunks.iter().zip(plans) {
        let params = ScanParams {
            n_rows: chunk.rows,
            words,
            k,
            row_base: chunk.row_base,
            rows_per_wg: plan.rows_per_wg,
            lists_per_query: lists,
            list_base,
            tag,
        };
        let ubuf = ctx.uniform_init("scan params", &params);
        let bind = ctx.bind(Kernel::PqScan, &[&ubuf, &chunk.buf, lut, &cands])?;
        ctx.dispatch(enc, Kernel::PqScan, &bind, (plan.groups, nq))?;
        list_base += plan.groups;
    }
    let per_query = u32::try_from(per_query).map_err(|_| {
        GpuError::InvalidInput(format!("{per_query} candidates per query overflow u32"))
    })?;
    encode_merge(ctx, enc, &cands, nq, per_query, k)
}

/// Scan `codes` (`[n, m]` u8) with precomputed `luts` (`[nq, m, 256]`) on the GPU: per query the
/// top `k` candidates (tagged `tag`), best first, same order as [`pq_scan_reference`].
#[allow(clippy::too_many_arguments)]
pub async fn pq_scan(
    ctx: &GpuContext,
    codes: &[u8],
    n: usize,
    m: usize,
    luts: &[f32],
    nq: usize,
    k: usize,
    tag: u32,
) -> Result<Vec<Vec<Candidate>>, GpuError> {
    ctx.check_alive("pq_scan")?;
    check_luts(luts, nq, m)?;
    let k32 = check_k(k)?;
    if nq == 0 {
        return Ok(Vec::new());
    }
    if n == 0 {
        check_codes(codes, n, m)?;
        return Ok(vec![Vec::new(); nq]);
    }
    let chunks = upload_codes(ctx, codes, n, m, 0)?;
    let m_pad = m.div_ceil(4) * 4;
    let words = (m_pad / 4) as u32;
    let (plans, lists) = plan_chunks(
        chunks.iter().map(|c| c.rows),
        nq as u32,
        ctx.max_workgroups(),
    );
    let lut_bytes = m_pad as u64 * 256 * 4;
    let batch = batch_size(
        ctx,
        nq,
        &[
            ("lookup tables", lut_bytes),
            ("candidate lists", lists as u64 * k as u64 * 12),
        ],
    )?;
    let mut out = Vec::with_capacity(nq);
    for q0 in (0..nq).step_by(batch) {
        let nqb = batch.min(nq - q0);
        // [nqb, m_pad, 256], zero rows for j >= m
        let mut padded = vec![0f32; nqb * m_pad * 256];
        for q in 0..nqb {
            let src = &luts[(q0 + q) * m * 256..(q0 + q + 1) * m * 256];
            padded[q * m_pad * 256..q * m_pad * 256 + m * 256].copy_from_slice(src);
        }
        let scopes = ctx.scopes();
        let lut = ctx.storage_init("pq lut", bytemuck::cast_slice(&padded));
        let mut enc = ctx.encoder("pq_scan");
        let res = encode_scan(
            ctx, &mut enc, &chunks, &plans, lists, words, &lut, nqb as u32, k32, tag,
        )?;
        let bytes = bytes_of_count(nqb * k, 12, "results")?;
        let raw = ctx
            .submit_and_read("pq_scan", scopes, enc, &res, bytes)
            .await?;
        out.extend(split_results(&candidates_from_bytes(&raw), nqb, k));
    }
    Ok(out)
}
