enable f16;

// matmul_f16.wgsl — y[t, n] (+)= Σ_k x[t, k] · W[n, k] + bias[n], the f16 variant of matmul.wgsl
// (same params, bindings, tiling and dispatch; needs the shader-f16 feature).
// Rust host and CPU twin: src/gpu/matmul.rs (`Precision::F16`). requires: quant_common.wgsl
//
// Precision: the x tile and the dequantised W tile are held as f16 in workgroup memory (8 KiB
// instead of 16 KiB, half the shared-memory traffic): each operand is rounded once to f16
// (round to nearest, clamped to ±65504 so an outlier saturates instead of becoming inf;
// relative error ≤ 2⁻¹¹ per operand). The products are formed and accumulated in f32: the
// product of two f16 values is exact in f32 (11 + 11 significant bits ≤ 24), so beyond the
// two operand roundings the sum is the f32 kernel's, in the same k order. Dequantisation
// itself is f32 (as in matmul.wgsl), bias and the residual add are f32.
//
// Tiling as matmul.wgsl: a workgroup computes a 64 (tokens) × 64 (features) tile; each
// invocation a 4 × 4 sub-tile (tokens ty + 16i, features tx + 16j); K in steps of 32 (one
// quant block). Tiles are stored as vec4<f16> along k, so one workgroup load gives 4 k.
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
const TK4: u32 = 8u; // TK / 4 vec4s per tile row

const F16_MAX: f32 = 65504.0;

var<workgroup> xs: array<vec4<f16>, 512>; // [TM, TK/4]
var<workgroup> wt: array<vec4<f16>, 512>; // [TN, TK/4]

// Round 4 f32 to f16 (saturating at the largest finite f16).
fn to_h4(a: f32, b: f32, c: f32, d: f32) -> vec4<f16> {
    let v = clamp(vec4<f32>(a, b, c, d), vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX));
    return vec4<f16>(v);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n0 = wid.x * TN;
    let t0 = wid.y * TM;
    let tx = lid % 16u;
    let ty = lid / 16u;
    // loader role: row lr of the tiles, 8 consecutive k from lp (two vec4s from lp / 4)
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
        var v: array<f32, 8>;
        for (var i = 0u; i < 8u; i++) {
            let kk = k0 + lp + i;
            v[i] = 0.0;
            if (tt < params.t && kk < params.k) {
                v[i] = x[params.x_offset + tt * params.x_stride + kk];
            }
        }
        xs[lr * TK4 + lp / 4u] = to_h4(v[0], v[1], v[2], v[3]);
        xs[lr * TK4 + lp / 4u + 1u] = to_h4(v[4], v[5], v[6], v[7]);
        // W tile, dequantised in f32, stored as f16
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
        wt[lr * TK4 + lp / 4u] = to_h4(w[0], w[1], w[2], w[3]);
        wt[lr * TK4 + lp / 4u + 1u] = to_h4(w[4], w[5], w[6], w[7]);
        workgroupBarrier();
        for (var k4 = 0u; k4 < TK4; k4++) {
            var a: array<vec4<f32>, 4>;
            var b: array<vec4<f32>, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = vec4<f32>(xs[(ty + 16u * i) * TK4 + k4]);
                b[i] = vec4<f32>(wt[(tx + 16u * i) * TK4 + k4]);
            }
            // k order within the vec4 (c = 0..3), as the f32 kernel and the CPU twin sum
            for (var c = 0u; c < 4u; c++) {
                for (var i = 0u; i < 4u; i++) {
                    for (var j = 0u; j < 4u; j++) {
                        acc[i * 4u + j] = fma(a[i][c], b[j][c], acc[i * 4u + j]);
                    }
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
                var s = acc[i * 4u + j];
                if (params.has_bias != 0u) {
                    s += bias[params.n_offset + n];
                }
                if (params.accumulate != 0u) {
                    s += y[idx];
                }
                y[idx] = s;
            }
        }
    }
}
