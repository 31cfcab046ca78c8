// topk_merge.wgsl — final merge: per query, the best k of `per_query` candidates (the
// per-workgroup lists of the scan kernels, or the per-layer lists of a cross-layer merge, where
// `tag` is the bank-layer slot). Rust host and CPU twin: src/gpu/topk_merge.rs.
// Needs topk_common.wgsl prepended (requires: topk_common.wgsl).
//
// cands: [nq, per_query] Candidate
// out:   [nq, k] Candidate, best first; empty slots are (-inf, 0xffffffff, 0xffffffff)
//
// One workgroup per query (x), steps of STEP candidates (topk_common.wgsl).

struct MergeParams {
    nq: u32,
    per_query: u32,
    k: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: MergeParams;
@group(0) @binding(1) var<storage, read> cands: array<Candidate>;
@group(0) @binding(2) var<storage, read_write> out: array<Candidate>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q = wid.x;
    if (q >= params.nq) {
        return;
    }
    let k = params.k;
    let base = q * params.per_query;

    topk_init(lid);
    for (var start = 0u; start < params.per_query; start += STEP) {
        for (var t = 0u; t < STEP_PER_INVOCATION; t++) {
            let i = start + t * WG + lid;
            if (i < params.per_query) {
                let c = cands[base + i];
                topk_offer(k, c.score, c.row, c.tag);
            }
        }
        topk_flush_if_full(lid, k);
    }
    topk_flush(lid, k);
    workgroupBarrier();
    for (var i = lid; i < k; i += WG) {
        out[q * k + i] = Candidate(sk_score[i], sk_row[i], sk_tag[i]);
    }
}
