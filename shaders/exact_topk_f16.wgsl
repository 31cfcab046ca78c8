enable f16;

// exact_topk_f16.wgsl — exact cosine top-k over f16-stored vectors (f32 arithmetic) with a per-workgroup top-k.
// Rust host and CPU twin: src/gpu/exact_topk.rs. Needs topk_common.wgsl prepended
// (requires: topk_common.wgsl).
//
// score(row) = dot(q, v_row)                       (normalize_rows == 0: bank rows are unit vectors)
//            = dot(q, v_row) / sqrt(dot(v_row, v_row))   (normalize_rows == 1)
// The host L2-normalises the queries.
//
// vectors: [n_rows, d] f16 (this chunk; needs the shader-f16 feature)
// queries: [nq, d] f32
// out:     [nq, lists_per_query, k] Candidate (see pq_scan.wgsl); steps of STEP rows as there

struct ExactParams {
    n_rows: u32,
    d: u32,
    k: u32,
    row_base: u32,
    rows_per_wg: u32,
    lists_per_query: u32,
    list_base: u32,
    tag: u32,
    normalize_rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: ExactParams;
@group(0) @binding(1) var<storage, read> vectors: array<f16>;
@group(0) @binding(2) var<storage, read> queries: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<Candidate>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q = wid.y;
    let k = params.k;
    let d = params.d;
    let qbase = q * d;
    let first = wid.x * params.rows_per_wg;
    let end = min(first + params.rows_per_wg, params.n_rows);

    topk_init(lid);
    for (var base = first; base < end; base += STEP) {
        for (var t = 0u; t < STEP_PER_INVOCATION; t++) {
            let r = base + t * WG + lid;
            if (r < end) {
                let vbase = r * d;
                var qv = 0.0;
                var vv = 0.0;
                for (var i = 0u; i < d; i++) {
                    let v = f32(vectors[vbase + i]);
                    qv += queries[qbase + i] * v;
                    vv += v * v;
                }
                var score = qv;
                if (params.normalize_rows != 0u) {
                    score = qv / sqrt(vv);
                }
                topk_offer(k, score, params.row_base + r, params.tag);
            }
        }
        topk_flush_if_full(lid, k);
    }
    topk_flush(lid, k);
    let out_base = (q * params.lists_per_query + params.list_base + wid.x) * k;
    for (var i = lid; i < k; i += WG) {
        out[out_base + i] = Candidate(sk_score[i], sk_row[i], sk_tag[i]);
    }
}
