// swiglu.wgsl — the SwiGLU gate of Llama/Qwen2 MLPs: dst[t, i] = silu(g) · u with g = gu[t, i],
// u = gu[t, inter + i] (gate and up projections fused row-wise), silu(g) = g / (1 + e^(−g)).
// Rust host and CPU twin: src/gpu/swiglu.rs.

struct SwigluParams {
    t: u32,
    inter: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: SwigluParams;
@group(0) @binding(1) var<storage, read> gu: array<f32>;   // [t, 2 · inter]
@group(0) @binding(2) var<storage, read_write> dst: array<f32>; // [t, inter]

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (idx >= params.t * params.inter) {
        return;
    }
    let t = idx / params.inter;
    let i = idx % params.inter;
    let g = gu[t * 2u * params.inter + i];
    let u = gu[t * 2u * params.inter + params.inter + i];
    dst[idx] = g / (1.0 + exp(-g)) * u;
}
