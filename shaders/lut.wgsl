// lut.wgsl — PQ lookup tables: LUT[q][j][c] = dot(query_q[off_j .. off_j + dsub], C_j[c]).
// Rust host and CPU twin: src/gpu/lut.rs. One workgroup per (code byte j, query q); invocation c
// computes centroid c. Rows j in [m, m_pad) are the zero padding that pairs with the zero code
// bytes added when codes are packed 4 per u32 (CONTRACT).
//
// queries:   [nq, d] f32
// centroids: [m, 256, dsub] f32
// offsets:   [m] u32 — start of byte j's sub-space in the query (j * dsub for plain PQ)
// lut:       [nq, m_pad, 256] f32

struct LutParams {
    nq: u32,
    d: u32,
    m: u32,
    m_pad: u32,
    dsub: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: LutParams;
@group(0) @binding(1) var<storage, read> queries: array<f32>;
@group(0) @binding(2) var<storage, read> centroids: array<f32>;
@group(0) @binding(3) var<storage, read> offsets: array<u32>;
@group(0) @binding(4) var<storage, read_write> lut: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) c: u32) {
    let j = wid.x;
    let q = wid.y;
    if (j >= params.m_pad || q >= params.nq) {
        return;
    }
    var acc = 0.0;
    if (j < params.m) {
        let qbase = q * params.d + offsets[j];
        let cbase = (j * 256u + c) * params.dsub;
        for (var t = 0u; t < params.dsub; t++) {
            acc += queries[qbase + t] * centroids[cbase + t];
        }
    }
    lut[(q * params.m_pad + j) * 256u + c] = acc;
}
