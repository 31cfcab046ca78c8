// quant_common.wgsl — weight formats of the forward kernels, dequantised in the shader.
// Inserted into kernels whose header names it as required (src/gpu/forward.rs).
// Host twin: src/gpu/quant.rs (repacking from GGUF blocks and the CPU dequantiser).
//
// A weight matrix [n, k] is stored row-major in `wq: array<u32>` plus one scale word per block
// of 32 elements in `ws: array<u32>` (`pack2x16float(d, m)`, the block's f16 scale and min):
//   FMT_F32  — wq holds the f32 bits, one per element (no blocks, ws unused)
//   FMT_Q8_0 — 4 signed bytes per word, value = q · d               (GGUF Q8_0)
//   FMT_Q4_0 — 8 nibbles per word, low first, value = (q − 8) · d   (GGUF Q4_0, re-ordered)
//   FMT_Q4_1 — 8 nibbles per word, low first, value = q · d + m     (GGUF Q4_1, re-ordered)

const FMT_F32: u32 = 0u;
const FMT_Q8_0: u32 = 1u;
const FMT_Q4_0: u32 = 2u;
const FMT_Q4_1: u32 = 3u;

// Byte j (0..4) of `word` as a signed integer, times d.
fn dq_q8(word: u32, j: u32, d: f32) -> f32 {
    let s = bitcast<i32>(word << (24u - 8u * j)) >> 24u;
    return f32(s) * d;
}

// Nibble j (0..8) of `word`, decoded as format `fmt` (Q4_0 or Q4_1) with scale word `sw`.
fn dq_q4(fmt: u32, word: u32, j: u32, sw: u32) -> f32 {
    let q = (word >> (4u * j)) & 0xFu;
    let dm = unpack2x16float(sw);
    if (fmt == FMT_Q4_0) {
        return f32(i32(q) - 8) * dm.x;
    }
    return f32(q) * dm.x + dm.y;
}
