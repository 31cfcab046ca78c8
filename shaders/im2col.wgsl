// im2col.wgsl — the columns of a dense k×k convolution with stride s and zero padding (TF
// "SAME" when the host picks pad_top / pad_left so), for the matmul that follows:
//   cols[(oy·ow + ox) · C·k·k + (c·k + ky)·k + kx] = src(c, oy·stride + ky − pad_top, ox·stride + kx − pad_left)
// with src(c, iy, ix) = x[c·c_stride + iy·y_stride + ix·x_stride] inside the image, 0 outside.
// Columns in (c, ky, kx) order: a conv weight [out, C, k, k] read as [out, C·k·k] is the matmul's
// W, so the conv is cols · Wᵀ + b with outputs token-major [oh·ow, out]. One invocation per
// column element. Rust host and CPU twin: src/gpu/im2col.rs.

struct Im2colParams {
    h: u32,
    w: u32,
    c: u32,
    k: u32,
    stride: u32,
    oh: u32,
    ow: u32,
    pad_top: u32,
    pad_left: u32,
    c_stride: u32,
    y_stride: u32,
    x_stride: u32,
}

@group(0) @binding(0) var<uniform> params: Im2colParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> cols: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid;
    let k = params.k;
    let row = params.c * k * k;
    if (idx >= params.oh * params.ow * row) {
        return;
    }
    let r = idx % row;
    let p = idx / row;
    let kx = r % k;
    let ky = (r / k) % k;
    let ch = r / (k * k);
    let ox = p % params.ow;
    let oy = p / params.ow;
    let iy = i32(oy * params.stride + ky) - i32(params.pad_top);
    let ix = i32(ox * params.stride + kx) - i32(params.pad_left);
    var v = 0.0;
    if (iy >= 0 && iy < i32(params.h) && ix >= 0 && ix < i32(params.w)) {
        v = x[ch * params.c_stride + u32(iy) * params.y_stride + u32(ix) * params.x_stride];
    }
    cols[idx] = v;
}
