// norm.wgsl — RMSNorm (Llama/Qwen2) and LayerNorm (CLIP/SigLIP) of each row, one workgroup per row.
// Rust host and CPU twin: src/gpu/norm.rs.
//   mode 0, RMSNorm:   y = x / sqrt(mean(x²) + eps) · w
//   mode 1, LayerNorm: y = (x − mean) / sqrt(mean((x − mean)²) + eps) · w + b
// x: row r at x_offset + r · x_stride, d elements; y: row r at y_offset + r · y_stride.

struct NormParams {
    rows: u32,
    d: u32,
    mode: u32,
    has_bias: u32,
    x_stride: u32,
    x_offset: u32,
    y_stride: u32,
    y_offset: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: NormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;
var<workgroup> red: array<f32, 256>;

fn reduce_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = wid.y * nwg.x + wid.x;
    if (r >= params.rows) {
        return;
    }
    let xb = params.x_offset + r * params.x_stride;
    let yb = params.y_offset + r * params.y_stride;
    let fd = f32(params.d);
    var mean = 0.0;
    if (params.mode == 1u) {
        var s = 0.0;
        for (var i = lid; i < params.d; i += WG) {
            s += x[xb + i];
        }
        mean = reduce_sum(s, lid) / fd;
    }
    var s2 = 0.0;
    for (var i = lid; i < params.d; i += WG) {
        let v = x[xb + i] - mean;
        s2 += v * v;
    }
    let inv = 1.0 / sqrt(reduce_sum(s2, lid) / fd + params.eps);
    for (var i = lid; i < params.d; i += WG) {
        var v = (x[xb + i] - mean) * inv * w[i];
        if (params.has_bias != 0u) {
            v += b[i];
        }
        y[yb + i] = v;
    }
}
