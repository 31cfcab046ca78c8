// add.wgsl — residual / broadcast add in place: y[i] += x[i % x_len] for i < n
// (x_len = n: residual add; x_len = one row: a bias or position table added to every row).
// Rust host and CPU twin: src/gpu/add.rs.

struct AddParams {
    n: u32,
    x_len: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: AddParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (idx >= params.n) {
        return;
    }
    y[idx] += x[idx % params.x_len];
}
