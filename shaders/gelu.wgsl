// gelu.wgsl — GELU in place on n elements: mode 0 the tanh approximation (HF `gelu_pytorch_tanh`
// / `gelu_new`, SigLIP), mode 1 the exact erf form (HF `gelu`), mode 2 CLIP's `quick_gelu`
// x · σ(1.702 x). erf is computed with
// Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7). Rust host and CPU twin: src/gpu/gelu.rs.

struct GeluParams {
    n: u32,
    mode: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: GeluParams;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

fn erf_as(v: f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let r = 1.0 - poly * exp(-a * a);
    return select(r, -r, v < 0.0);
}

fn tanh_safe(v: f32) -> f32 {
    let c = clamp(v, -15.0, 15.0);
    let e = exp(2.0 * c);
    return (e - 1.0) / (e + 1.0);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (idx >= params.n) {
        return;
    }
    let v = x[idx];
    if (params.mode == 0u) {
        x[idx] = 0.5 * v * (1.0 + tanh_safe(0.7978845608 * v * (1.0 + 0.044715 * v * v)));
    } else if (params.mode == 1u) {
        x[idx] = 0.5 * v * (1.0 + erf_as(v * 0.70710678118));
    } else {
        x[idx] = v / (1.0 + exp(-1.702 * v));
    }
}
