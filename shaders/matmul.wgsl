// matmul.wgsl — y[t, n] (+)= Σ_k x[t, k] · W[n, k] + bias[n]: a linear layer with f32 or
// block-quantised weights (dequantised here, f32 accumulation).
// Rust host and CPU twin: src/gpu/matmul.rs. requires: quant_common.wgsl
//
// Tiling: a workgroup computes a 64 (tokens) × 64 (output features) tile; each invocation a 4 × 4
// sub-tile (tokens ty + 16i, features tx + 16j). K is walked in steps of 32 (one quant block):
// the x tile [64, 32] and the dequantised W tile [64, 32] are staged in workgroup memory.
//
// x: rows t at x_offset + t · x_stride (f32)        [t, k]
// W: rows n of the (part of the) weight matrix       [n, k], format `fmt`
// y: element (t, n) at y_offset + t · y_stride + n_offset + n; bias[n_offset + n]

struct MatmulParams {
    t: u32,
    n: u32,
    k: u32,
    fmt: u32,
    x_stride: u32,
    x_offset: u32,
    y_stride: u32,
    y_offset: u32,
    n_offset: u32,
    has_bias: u32,
    accumulate: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read> ws: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 32u;

var<workgroup> xs: array<f32, 2048>; // [TM, TK]
var<workgroup> wt: array<f32, 2048>; // [TN, TK]

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n0 = wid.x * TN;
    let t0 = wid.y * TM;
    let tx = lid % 16u;
    let ty = lid / 16u;
    // loader role: row lr of the tiles, 8 consecutive k from lp
    let lr = lid / 4u;
    let lp = (lid % 4u) * 8u;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    let ktiles = (params.k + TK - 1u) / TK;
    for (var kt = 0u; kt < ktiles; kt++) {
        let k0 = kt * TK;
        // x tile
        let tt = t0 + lr;
        for (var i = 0u; i < 8u; i++) {
            let kk = k0 + lp + i;
            var v = 0.0;
            if (tt < params.t && kk < params.k) {
                v = x[params.x_offset + tt * params.x_stride + kk];
            }
            xs[lr * TK + lp + i] = v;
        }
        // W tile, dequantised
        let nn = n0 + lr;
        var w: array<f32, 8>;
        for (var i = 0u; i < 8u; i++) {
            w[i] = 0.0;
        }
        if (nn < params.n) {
            let e = nn * params.k + k0 + lp; // element index of the first of the 8
            if (params.fmt == FMT_F32) {
                for (var i = 0u; i < 8u; i++) {
                    if (k0 + lp + i < params.k) {
                        w[i] = bitcast<f32>(wq[e + i]);
                    }
                }
            } else if (params.fmt == FMT_Q8_0) {
                let d = unpack2x16float(ws[e / 32u]).x;
                let w0 = wq[e / 4u];
                let w1 = wq[e / 4u + 1u];
                for (var i = 0u; i < 4u; i++) {
                    w[i] = dq_q8(w0, i, d);
                    w[i + 4u] = dq_q8(w1, i, d);
                }
            } else {
                let sw = ws[e / 32u];
                let word = wq[e / 8u];
                for (var i = 0u; i < 8u; i++) {
                    w[i] = dq_q4(params.fmt, word, i, sw);
                }
            }
        }
        for (var i = 0u; i < 8u; i++) {
            wt[lr * TK + lp + i] = w[i];
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[(ty + 16u * i) * TK + kk];
                b[i] = wt[(tx + 16u * i) * TK + kk];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let t = t0 + ty + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tx + 16u * j;
            if (t < params.t && n < params.n) {
                let idx = params.y_offset + t * params.y_stride + params.n_offset + n;
                var v = acc[i * 4u + j];
                if (params.has_bias != 0u) {
                    v += bias[params.n_offset + n];
                }
                if (params.accumulate != 0u) {
                    v += y[idx];
                }
                y[idx] = v;
            }
        }
    }
}
