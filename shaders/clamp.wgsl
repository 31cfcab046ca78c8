// clamp.wgsl — x[i] = clamp(x[i], lo, hi) in place for i < n: ReLU6 (lo 0, hi 6) after the
// 1×1 convs of EfficientNet whose output no other kernel activates on read.
// Rust host and CPU twin: src/gpu/clamp.rs.

struct ClampParams {
    n: u32,
    lo: f32,
    hi: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: ClampParams;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (idx >= params.n) {
        return;
    }
    x[idx] = clamp(x[idx], params.lo, params.hi);
}
