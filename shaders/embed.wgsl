// embed.wgsl — embedding lookup from an f32 or block-quantised table, dequantised here:
// dst[t, c] = E[ids[t], c] for ids in this part of the table, [row0, row0 + rows).
// Rust host and CPU twin: src/gpu/embed.rs. requires: quant_common.wgsl

struct EmbedParams {
    t: u32,
    d: u32,
    fmt: u32,
    row0: u32,
    rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: EmbedParams;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read> ws: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>; // [t, d]

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (idx >= params.t * params.d) {
        return;
    }
    let t = idx / params.d;
    let c = idx % params.d;
    let id = ids[t];
    if (id < params.row0 || id - params.row0 >= params.rows) {
        return;
    }
    let e = (id - params.row0) * params.d + c;
    var v = 0.0;
    if (params.fmt == FMT_F32) {
        v = bitcast<f32>(wq[e]);
    } else if (params.fmt == FMT_Q8_0) {
        v = dq_q8(wq[e / 4u], e % 4u, unpack2x16float(ws[e / 32u]).x);
    } else {
        v = dq_q4(params.fmt, wq[e / 8u], e % 8u, ws[e / 32u]);
    }
    dst[idx] = v;
}
