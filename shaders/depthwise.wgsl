// depthwise.wgsl — depthwise k×k convolution, stride s, zero padding (TF "SAME" when the host
// picks pad_top / pad_left so: asymmetric for stride 2), token-major activations:
//   y[(oy·ow + ox)·C + c] = act_out(bias[c] + Σ_{ky,kx} w[(ky·k + kx)·C + c] · act_in(x[(iy·w + ix)·C + c]))
// with iy = oy·stride + ky − pad_top, ix = ox·stride + kx − pad_left, taps outside the input
// skipped (zero padding). act_in / act_out: ReLU6 (clamp to [0, 6]) when the flag is set, the
// identity otherwise (act_in fuses the ReLU6 of the 1×1 expand conv that feeds this one).
// Summed in (ky, kx) order from the bias, as the CPU twin. One invocation per output element.
// Rust host and CPU twin: src/gpu/depthwise.rs.
//
// x: [h·w, C]    w: [k·k, C] (tap-major)    bias: [C]    y: [oh·ow, C]

struct DepthwiseParams {
    h: u32,
    w: u32,
    c: u32,
    k: u32,
    stride: u32,
    oh: u32,
    ow: u32,
    pad_top: u32,
    pad_left: u32,
    act_in: u32,
    act_out: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: DepthwiseParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid;
    let c = params.c;
    if (idx >= params.oh * params.ow * c) {
        return;
    }
    let ch = idx % c;
    let p = idx / c;
    let ox = p % params.ow;
    let oy = p / params.ow;
    let k = params.k;
    var acc = bias[ch];
    for (var ky = 0u; ky < k; ky++) {
        let iy = i32(oy * params.stride + ky) - i32(params.pad_top);
        if (iy < 0 || iy >= i32(params.h)) {
            continue;
        }
        for (var kx = 0u; kx < k; kx++) {
            let ix = i32(ox * params.stride + kx) - i32(params.pad_left);
            if (ix < 0 || ix >= i32(params.w)) {
                continue;
            }
            var v = x[(u32(iy) * params.w + u32(ix)) * c + ch];
            if (params.act_in != 0u) {
                v = clamp(v, 0.0, 6.0);
            }
            acc += wt[(ky * k + kx) * c + ch] * v;
        }
    }
    if (params.act_out != 0u) {
        acc = clamp(acc, 0.0, 6.0);
    }
    y[idx] = acc;
}
