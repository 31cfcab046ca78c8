//! Final top-k merge (`shaders/topk_merge.wgsl`) and its CPU twins.
//!
//! Reduces `[nq, per_query]` candidates to the best `k` per query in CONTRACT order. It serves
//! the scan kernels (their per-workgroup lists, over every chunk) and the cross-layer merge
//! (one list per bank layer, `tag` = bank-layer slot: equal score and row → lower slot first).

use super::{
    bytes_of_count, candidates_from_bytes, check_k, split_results, topk_reference, Candidate,
    FieldOffsets, GpuContext, GpuError, Kernel,
};

/// Uniform params of `topk_merge.wgsl` (`struct MergeParams`, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MergeParams {
    pub nq: u32,
    pub per_query: u32,
    pub k: u32,
    pub _pad0: u32,
}

impl MergeParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("nq", std::mem::offset_of!(MergeParams, nq)),
        ("per_query", std::mem::offset_of!(MergeParams, per_query)),
        ("k", std::mem::offset_of!(MergeParams, k)),
        ("_pad0", std::mem::offset_of!(MergeParams, _pad0)),
    ];
}

/// CPU twin: best `k` of each query's `per_query` candidates (`cands` is `[nq, per_query]`).
pub fn merge_topk_reference(
    cands: &[Candidate],
    nq: usize,
    per_query: usize,
    k: usize,
) -> Result<Vec<Vec<Candidate>>, GpuError> {
    check_cands(cands, nq, per_query)?;
    Ok((0..nq)
        .map(|q| topk_reference(cands[q * per_query..(q + 1) * per_query].iter().copied(), k))
        .collect())
}

/// CPU twin of the cross-layer merge: `layers[l][q]` is layer l's list for query q; each
/// candidate's `tag` is set to `l` (its bank-layer slot) before merging.
pub fn merge_layers_reference(
    layers: &[Vec<Vec<Candidate>>],
    nq: usize,
    k: usize,
) -> Vec<Vec<Candidate>> {
    (0..nq)
        .map(|q| {
            let all = layers.iter().enumerate().flat_map(|(l, lists)| {
                lists.get(q).into_iter().flatten().map(move |c| Candidate {
                    tag: l as u32,
                    ..*c
                })
            });
            topk_reference(all, k)
        })
        .collect()
}

fn check_cands(cands: &[Candidate], nq: usize, per_query: usize) -> Result<(), GpuError> {
    if nq.checked_mul(per_query) != Some(cands.len()) {
        return Err(GpuError::InvalidInput(format!(
            "{} candidates for nq = {nq} × per_query = {per_query}",
            cands.len()
        )));
    }
    Ok(())
}

/// Record the merge of `cands` (`[nq, per_query]`) into a new `[nq, k]` buffer.
pub(crate) fn encode_merge(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    cands: &wgpu::Buffer,
    nq: u32,
    per_query: u32,
    k: u32,
) -> Result<wgpu::Buffer, GpuError> {
    let bytes = nq as u64 * k as u64 * 12;
    ctx.check_binding("merged top-k", bytes)?;
    let out = ctx.storage_out("merged top-k", bytes);
    let params = MergeParams {
        nq,
        per_query,
        k,
        _pad0: 0,
    };
    let ubuf = ctx.uniform_init("merge params", &params);
    let bind = ctx.bind(Kernel::TopkMerge, &[&ubuf, cands, &out])?;
    ctx.dispatch(enc, Kernel::TopkMerge, &bind, (nq, 1))?;
    Ok(out)
}

/// GPU merge: best `k` of each query's `per_query` candidates (`cands` is `[nq, per_query]`),
/// hits only, best first.
pub async fn merge_topk(
    ctx: &GpuContext,
    cands: &[Candidate],
    nq: usize,
    per_query: usize,
    k: usize,
) -> Result<Vec<Vec<Candidate>>, GpuError> {
    ctx.check_alive("topk_merge")?;
    check_cands(cands, nq, per_query)?;
    let k32 = check_k(k)?;
    if nq == 0 {
        return Ok(Vec::new());
    }
    if per_query == 0 {
        return Ok(vec![Vec::new(); nq]);
    }
    let row_bytes = bytes_of_count(per_query, 12, "candidates")?;
    let per_query32 = u32::try_from(per_query).map_err(|_| {
        GpuError::InvalidInput(format!(
            "{per_query} candidates per query: at most 2^32 - 1"
        ))
    })?;
    let batch = super::pq_scan::batch_size(
        ctx,
        nq,
        &[
            ("candidate lists", row_bytes),
            ("merged top-k", k as u64 * 12),
        ],
    )?;
    let mut out = Vec::with_capacity(nq);
    for q0 in (0..nq).step_by(batch) {
        let nqb = batch.min(nq - q0);
        let scopes = ctx.scopes();
        let cbuf = ctx.storage_init(
            "merge input",
            bytemuck::cast_slice(&cands[q0 * per_query..(q0 + nqb) * per_query]),
        );
        let mut enc = ctx.encoder("topk_merge");
        let res = encode_merge(ctx, &mut enc, &cbuf, nqb as u32, per_query32, k32)?;
        let raw = ctx
            .submit_and_read(
                "topk_merge",
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

/// GPU cross-layer merge: `layers[l][q]` is layer l's list for query q (any length); candidates
/// are tagged with their layer slot `l`, lists padded with empty slots, then merged.
pub async fn merge_layers(
    ctx: &GpuContext,
    layers: &[Vec<Vec<Candidate>>],
    nq: usize,
    k: usize,
) -> Result<Vec<Vec<Candidate>>, GpuError> {
    let per_query: usize = (0..nq)
        .map(|q| {
            layers
                .iter()
                .map(|l| l.get(q).map_or(0, Vec::len))
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    let mut flat = Vec::with_capacity(nq * per_query);
    for q in 0..nq {
        let start = flat.len();
        for (l, lists) in layers.iter().enumerate() {
            if let Some(list) = lists.get(q) {
                flat.extend(list.iter().map(|c| Candidate {
                    tag: l as u32,
                    ..*c
                }));
            }
        }
        flat.resize(start + per_query, Candidate::EMPTY);
    }
    merge_topk(ctx, &flat, nq, per_query, k).await
}
