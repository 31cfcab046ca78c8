// pq_scan.wgsl — PQ (ADC) scan with a per-workgroup top-k. Rust host and CPU twin: src/gpu/pq_scan.rs.
// Needs topk_common.wgsl prepended (requires: topk_common.wgsl).
//
// score(row) = sum_{j < m_pad} lut[q][j][code[row][j]]   (CONTRACT; padded bytes hit zero LUT rows)
//
// codes: [n_rows, words] u32 — the chunk's codes, 4 code bytes per u32, little-endian
// lut:   [nq, m_pad, 256] f32, m_pad = 4 * words
// out:   [nq, lists_per_query, k] Candidate — this dispatch writes lists
//        [list_base, list_base + ceil(n_rows / rows_per_wg)) of every query
//
// Workgroup (x = row block, y = query) scans rows [x * rows_per_wg, (x + 1) * rows_per_wg) of the
// chunk in steps of STEP rows, offering each score to the workgroup top-k (topk_common.wgsl).

struct ScanParams {
    n_rows: u32,
    words: u32,
    k: u32,
    row_base: u32,
    rows_per_wg: u32,
    lists_per_query: u32,
    list_base: u32,
    tag: u32,
}

@group(0) @binding(0) var<uniform> params: ScanParams;
@group(0) @binding(1) var<storage, read> codes: array<u32>;
@group(0) @binding(2) var<storage, read> lut: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<Candidate>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q = wid.y;
    let k = params.k;
    let words = params.words;
    let lut_base = q * words * 1024u;
    let first = wid.x * params.rows_per_wg;
    let end = min(first + params.rows_per_wg, params.n_rows);

    topk_init(lid);
    for (var base = first; base < end; base += STEP) {
        for (var t = 0u; t < STEP_PER_INVOCATION; t++) {
            let r = base + t * WG + lid;
            if (r < end) {
                var acc = 0.0;
                let cbase = r * words;
                for (var w = 0u; w < words; w++) {
                    let word = codes[cbase + w];
                    let jb = lut_base + w * 1024u;
                    acc += lut[jb + (word & 0xffu)];
                    acc += lut[jb + 256u + ((word >> 8u) & 0xffu)];
                    acc += lut[jb + 512u + ((word >> 16u) & 0xffu)];
                    acc += lut[jb + 768u + (word >> 24u)];
                }
                topk_offer(k, acc, params.row_base + r, params.tag);
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
