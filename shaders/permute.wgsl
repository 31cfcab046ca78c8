// permute.wgsl — strided copy over an index space of up to 8 dimensions:
//   for every (i0, …, i7) < shape:  dst[dst_off + Σ i_k · dst_stride_k] = src[src_off + Σ i_k · src_stride_k]
// (unused dimensions have size 1). Patch unfolding (im2col of the vision patch embedding),
// Idefics3's pixel shuffle, and picking / concatenating rows and feature columns are all such
// copies. One invocation per element, dimension 7 fastest. Rust host and CPU twin:
// src/gpu/permute.rs.

struct PermuteParams {
    shape: array<vec4<u32>, 2>,
    src_stride: array<vec4<u32>, 2>,
    dst_stride: array<vec4<u32>, 2>,
    n: u32,
    src_off: u32,
    dst_off: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: PermuteParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (idx >= params.n) {
        return;
    }
    var rem = idx;
    var s = params.src_off;
    var d = params.dst_off;
    for (var k = 7; k >= 0; k--) {
        let size = params.shape[k / 4][k % 4];
        let i = rem % size;
        rem = rem / size;
        s += i * params.src_stride[k / 4][k % 4];
        d += i * params.dst_stride[k / 4][k % 4];
    }
    dst[d] = src[s];
}
