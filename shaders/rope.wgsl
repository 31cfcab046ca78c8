// rope.wgsl — rotary position embedding in HF's `rotate_half` layout, in place.
// Rust host and CPU twin: src/gpu/rope.rs.
// For token t, head h < heads, i < hd/2, with (c, s) = (cos, sin)[t, i] (host-computed table):
//   a = row[h·hd + i], b = row[h·hd + i + hd/2] → (a·c − b·s, b·c + a·s)
// Rows of `x` at offset + t · stride; heads are contiguous from there (q then k of a fused qkv).

struct RopeParams {
    t: u32,
    heads: u32,
    hd: u32,
    stride: u32,
    offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: RopeParams;
@group(0) @binding(1) var<storage, read> cos_t: array<f32>; // [t, hd/2]
@group(0) @binding(2) var<storage, read> sin_t: array<f32>; // [t, hd/2]
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid;
    let hh = params.hd / 2u;
    let per_tok = params.heads * hh;
    if (idx >= params.t * per_tok) {
        return;
    }
    let t = idx / per_tok;
    let h = (idx % per_tok) / hh;
    let i = idx % hh;
    let c = cos_t[t * hh + i];
    let s = sin_t[t * hh + i];
    let base = params.offset + t * params.stride + h * params.hd;
    let a = x[base + i];
    let b = x[base + i + hh];
    x[base + i] = a * c - b * s;
    x[base + i + hh] = b * c + a * s;
}
