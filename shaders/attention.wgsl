// attention.wgsl — scaled dot-product attention with grouped-query heads, causal (text) or
// bidirectional (vision), numerically stable (online) softmax over key chunks of 256.
// Rust host and CPU twin: src/gpu/attention.rs.
//
// One workgroup per (query head h, query token t). Query head h reads key/value head
// h / (heads / kv_heads) (HF repeat_kv). q, k, v are column ranges of rows of `qkv`:
//   q[t, h]  = qkv[t · stride + q_off + h · hd ..][0..hd], likewise k (k_off), v (v_off)
// dst[t · out_stride + h · hd + c] = Σ_j softmax_j(q·k_j · scale) v_j[c]; causal: j ≤ t.
// seq > 0 batches independent sequences of seq rows (vision tiles): keys j run over the block
// of t, [⌊t / seq⌋ · seq, ⌊t / seq⌋ · seq + seq); seq = 0 is one sequence of all rows.

struct AttnParams {
    t: u32,
    heads: u32,
    kv_heads: u32,
    hd: u32,
    stride: u32,
    q_off: u32,
    k_off: u32,
    v_off: u32,
    out_stride: u32,
    causal: u32,
    scale: f32,
    seq: u32,
}

@group(0) @binding(0) var<uniform> params: AttnParams;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

const WG: u32 = 256u;
var<workgroup> qs: array<f32, 256>;
var<workgroup> ps: array<f32, 256>;
var<workgroup> red: array<f32, 256>;
var<workgroup> part: array<f32, 1024>; // [4 key quarters, 256 output dims]

fn reduce(v: f32, lid: u32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            if (is_max) {
                red[lid] = max(red[lid], red[lid + s]);
            } else {
                red[lid] += red[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    let hd = params.hd;
    let kvh = h / (params.heads / params.kv_heads);
    let qb = t * params.stride + params.q_off + h * hd;
    if (lid < hd) {
        qs[lid] = qkv[qb + lid];
    }
    workgroupBarrier();
    // keys k0 .. k0 + nkeys - 1
    var k0 = 0u;
    var kend = params.t;
    if (params.seq != 0u) {
        k0 = (t / params.seq) * params.seq;
        kend = min(k0 + params.seq, params.t);
    }
    if (params.causal != 0u) {
        kend = t + 1u;
    }
    let nkeys = kend - k0;
    // output dims handled by this invocation: c = lid % 64 + 64·m for the quarter lid / 64
    let quarter = lid / 64u;
    let c0 = lid % 64u;
    var m_run = -3.0e38;
    var l_run = 0.0;
    var acc: array<f32, 4>; // dims c0, c0+64, c0+128, c0+192
    for (var i = 0u; i < 4u; i++) {
        acc[i] = 0.0;
    }
    for (var base = 0u; base < nkeys; base += WG) {
        let j = base + lid;
        var s = -3.0e38;
        if (j < nkeys) {
            let kb = (k0 + j) * params.stride + params.k_off + kvh * hd;
            var dot = 0.0;
            for (var c = 0u; c < hd; c++) {
                dot = fma(qs[c], qkv[kb + c], dot);
            }
            s = dot * params.scale;
        }
        let cm = reduce(s, lid, true);
        let m_new = max(m_run, cm);
        var p = 0.0;
        if (j < nkeys) {
            p = exp(s - m_new);
        }
        ps[lid] = p;
        let cs = reduce(p, lid, false); // the barrier inside also publishes ps
        let alpha = exp(m_run - m_new);
        l_run = l_run * alpha + cs;
        m_run = m_new;
        // each quarter sums 64 of the chunk's keys for its output dims
        let chunk = min(WG, nkeys - base);
        for (var i = 0u; i < 4u; i++) {
            let c = c0 + 64u * i;
            var a = 0.0;
            if (c < hd) {
                for (var jj = quarter * 64u; jj < min(chunk, quarter * 64u + 64u); jj++) {
                    let vb = (k0 + base + jj) * params.stride + params.v_off + kvh * hd;
                    a = fma(ps[jj], qkv[vb + c], a);
                }
            }
            acc[i] = acc[i] * alpha + a;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        part[quarter * 256u + c0 + 64u * i] = acc[i];
    }
    workgroupBarrier();
    if (lid < hd) {
        let v = part[lid] + part[256u + lid] + part[512u + lid] + part[768u + lid];
        dst[t * params.out_stride + h * hd + lid] = v / l_run;
    }
}
