//! The model-forward WGSL kernels vs their CPU twins on lavapipe (or a real GPU): random and
//! edge shapes (one token, dimensions not multiples of the 64×64×32 matmul tile, sequences
//! longer than the 256-key attention chunk, batched sequences, weights split over several
//! bindings), with explicit tolerances; the strided copies against the model's layouts; the
//! EfficientNet convolutions (depthwise, im2col, ReLU6) on stride 1 and 2, k 3 and 5, odd and
//! 1×1 inputs, against their twins and against the plain definition of a TF "SAME" conv. The GGUF repacking is checked against candle's independent dequantiser.
#![cfg(feature = "gpu")]

mod common;

use std::sync::OnceLock;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::Device;
use common::gpu_kit::{self, block, Rng};
use latentlens::gpu::add::{add_once, add_reference};
use latentlens::gpu::clamp::{clamp_once, clamp_reference, RELU6};
use latentlens::gpu::depthwise::{depthwise_once, depthwise_reference, ConvGeometry, Depthwise};
use latentlens::gpu::im2col::{im2col_once, im2col_reference, Im2col};
use latentlens::gpu::attention::{attention_once, attention_reference, AttnShape};
use latentlens::gpu::embed::{embed_once, embed_reference};
use latentlens::gpu::forward::ForwardKernels;
use latentlens::gpu::gelu::{erf_as, gelu_once, gelu_reference, GeluKind};
use latentlens::gpu::matmul::{matmul_f16_reference, matmul_once, matmul_once_with, matmul_reference};
use latentlens::gpu::norm::{norm_once, norm_reference, NormKind};
use latentlens::gpu::permute::{permute_once, permute_reference, Permute};
use latentlens::gpu::quant::{HostMatrix, WeightFormat};
use latentlens::gpu::rope::{rope_once, rope_reference, rope_tables};
use latentlens::gpu::swiglu::{swiglu_once, swiglu_reference};
use latentlens::gpu::{GpuError, GpuOptions, Precision};

fn fk() -> Option<&'static ForwardKernels> {
    static FK: OnceLock<Option<ForwardKernels>> = OnceLock::new();
    FK.get_or_init(|| gpu_kit::ctx().map(|c| ForwardKernels::new_blocking(c).expect("forward kernels compile")))
        .as_ref()
}

/// A forward-kernel set on a context whose storage bindings are capped at `cap` bytes.
fn fk_capped(cap: u64) -> Option<ForwardKernels> {
    let ctx = gpu_kit::open(GpuOptions { max_binding_bytes: Some(cap), ..Default::default() })?;
    Some(ForwardKernels::new_blocking(&ctx).expect("forward kernels compile"))
}

/// Random GGUF blocks of `dtype` for an `[n, k]` tensor (real f16 scales, random quants).
fn random_ggml(rng: &mut Rng, dtype: GgmlDType, n: usize, k: usize) -> Vec<u8> {
    let blocks = n * k / 32;
    let mut raw = Vec::new();
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    for _ in 0..blocks {
        match dtype {
            GgmlDType::Q8_0 => {
                raw.extend(f16(0.01 + 0.02 * rng.f().abs()));
                raw.extend(rng.bytes(32));
            }
            GgmlDType::Q4_0 => {
                raw.extend(f16(0.05 * rng.f()));
                raw.extend(rng.bytes(16));
            }
            GgmlDType::Q4_1 => {
                raw.extend(f16(0.05 * rng.f()));
                raw.extend(f16(0.2 * rng.f()));
                raw.extend(rng.bytes(16));
            }
            _ => unreachable!(),
        }
    }
    raw
}

fn random_matrix(rng: &mut Rng, fmt: WeightFormat, n: usize, k: usize) -> HostMatrix {
    match fmt {
        WeightFormat::F32 => HostMatrix::from_f32(&rng.vec(n * k), n, k, "w").unwrap(),
        WeightFormat::Q8_0 => HostMatrix::from_ggml(GgmlDType::Q8_0, &random_ggml(rng, GgmlDType::Q8_0, n, k), n, k, "w").unwrap(),
        WeightFormat::Q4_0 => HostMatrix::from_ggml(GgmlDType::Q4_0, &random_ggml(rng, GgmlDType::Q4_0, n, k), n, k, "w").unwrap(),
        WeightFormat::Q4_1 => HostMatrix::from_ggml(GgmlDType::Q4_1, &random_ggml(rng, GgmlDType::Q4_1, n, k), n, k, "w").unwrap(),
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn repacked_blocks_dequantise_like_candle() {
    let mut rng = Rng(7);
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4_1] {
        let (n, k) = (5, 96);
        let raw = random_ggml(&mut rng, dtype, n, k);
        let ours = HostMatrix::from_ggml(dtype, &raw, n, k, "t").unwrap().dequantize();
        let theirs = qtensor_from_ggml(dtype, &raw, vec![n, k], &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(ours, theirs, "{dtype:?}: repacked dequantisation must equal candle's bit for bit");
    }
    // f16 → f32 exactly
    let vals = [1.5f32, -0.25, 3.0];
    let raw: Vec<u8> = vals.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
    assert_eq!(HostMatrix::from_ggml(GgmlDType::F16, &raw, 1, 3, "h").unwrap().dequantize(), vals);
}

#[test]
fn unsupported_quantisation_and_short_data_are_refused_by_name() {
    let e = HostMatrix::from_ggml(GgmlDType::Q5_0, &[0u8; 22], 1, 32, "blk.0.attn_v.weight").unwrap_err();
    assert!(matches!(e, GpuError::UnsupportedWeights(_)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("blk.0.attn_v.weight") && msg.contains("Q5_0"), "{msg}");
    let e = HostMatrix::from_ggml(GgmlDType::Q4_1, &[0u8; 19], 1, 32, "w").unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    let e = HostMatrix::from_ggml(GgmlDType::Q8_0, &[0u8; 34], 1, 33, "w").unwrap_err().to_string();
    assert!(e.contains("multiple of the block size"), "{e}");
}

#[test]
fn matmul_matches_twin_on_every_format_and_edge_shape() {
    let Some(fk) = fk() else { return };
    let mut rng = Rng(1);
    // (t, n, k, format, bias, accumulate)
    let cases = [
        (1, 1, 32, WeightFormat::Q8_0, false, false),
        (1, 200, 576, WeightFormat::Q4_1, true, false),
        (5, 70, 96, WeightFormat::Q4_1, false, true),
        (67, 130, 64, WeightFormat::Q4_0, true, true),
        (130, 65, 37, WeightFormat::F32, true, false),
        (64, 64, 64, WeightFormat::Q8_0, false, false),
        (3, 129, 1, WeightFormat::F32, false, true),
    ];
    for (t, n, k, fmt, with_bias, acc) in cases {
        let w = random_matrix(&mut rng, fmt, n, k);
        let x = rng.vec(t * k);
        let bias = with_bias.then(|| rng.vec(n));
        let y0 = acc.then(|| rng.vec(t * n));
        let got = block(matmul_once(fk, &x, t, &w, bias.as_deref(), y0.as_deref())).unwrap();
        let want = matmul_reference(&x, t, &w, bias.as_deref(), y0.as_deref()).unwrap();
        // f32 accumulation in a different order: bound by k·eps·Σ|x·w| (+ bias, y0)
        let wd = w.dequantize();
        for r in 0..t {
            for c in 0..n {
                let absdot: f32 = (0..k).map(|i| (x[r * k + i] * wd[c * k + i]).abs()).sum();
                let tol = 1e-5 * (absdot + 1.0);
                let (g, e) = (got[r * n + c], want[r * n + c]);
                assert!((g - e).abs() <= tol, "{fmt:?} t={t} n={n} k={k} at ({r},{c}): gpu {g} cpu {e}");
            }
        }
        eprintln!("matmul {fmt:?} [{t}×{k}]·[{n}×{k}]ᵀ: max abs diff {:.2e}", max_abs_diff(&got, &want));
    }
}

/// Largest `|a − b| / (Σ_k |x·w| + 1)` over the outputs: the error relative to the scale of
/// the dot product (what an f16 rounding of the operands can move).
fn max_rel_dot_err(a: &[f32], b: &[f32], x: &[f32], wd: &[f32], t: usize, n: usize, k: usize) -> f64 {
    let mut worst = 0f64;
    for r in 0..t {
        for c in 0..n {
            let absdot: f64 = (0..k).map(|i| (x[r * k + i] as f64 * wd[c * k + i] as f64).abs()).sum();
            let e = (a[r * n + c] as f64 - b[r * n + c] as f64).abs() / (absdot + 1.0);
            assert!(e.is_finite(), "non-finite output at ({r},{c}): {} vs {}", a[r * n + c], b[r * n + c]);
            worst = worst.max(e);
        }
    }
    worst
}

#[test]
fn matmul_f16_matches_its_twin_on_every_format_and_edge_shape() {
    let Some(fk) = fk() else { return };
    if !fk.has_f16() {
        eprintln!("!!!!! adapter has no shader-f16: f16 matmul not run (its refusal is tested) !!!!!");
        return;
    }
    let mut rng = Rng(11);
    // (t, n, k, format, bias, accumulate): n, k off the 64×64×32 tile, one token, one row
    let cases = [
        (1, 1, 32, WeightFormat::Q8_0, false, false),
        (1, 200, 576, WeightFormat::Q4_1, true, false),
        (5, 70, 96, WeightFormat::Q4_1, false, true),
        (67, 130, 64, WeightFormat::Q4_0, true, true),
        (1, 65, 1536, WeightFormat::Q4_0, false, false),
        (130, 65, 37, WeightFormat::F32, true, false),
        (64, 64, 64, WeightFormat::Q8_0, false, false),
        (9, 100, 320, WeightFormat::Q8_0, true, true),
        (3, 129, 1, WeightFormat::F32, false, true),
        (1, 3, 45, WeightFormat::F32, false, false),
    ];
    let (mut worst_twin, mut worst_f32) = (0f64, 0f64);
    for (t, n, k, fmt, with_bias, acc) in cases {
        let w = random_matrix(&mut rng, fmt, n, k);
        let x = rng.vec(t * k);
        let bias = with_bias.then(|| rng.vec(n));
        let y0 = acc.then(|| rng.vec(t * n));
        let got = block(matmul_once_with(fk, Precision::F16, &x, t, &w, bias.as_deref(), y0.as_deref())).unwrap();
        let twin = matmul_f16_reference(&x, t, &w, bias.as_deref(), y0.as_deref()).unwrap();
        let f32_ref = matmul_reference(&x, t, &w, bias.as_deref(), y0.as_deref()).unwrap();
        let wd = w.dequantize();
        let e_twin = max_rel_dot_err(&got, &twin, &x, &wd, t, n, k);
        let e_f32 = max_rel_dot_err(&got, &f32_ref, &x, &wd, t, n, k);
        eprintln!(
            "matmul f16 {fmt:?} [{t}×{k}]·[{n}×{k}]ᵀ: vs twin max abs {:.2e} (rel {e_twin:.2e}), vs f32 max abs {:.2e} (rel {e_f32:.2e})",
            max_abs_diff(&got, &twin),
            max_abs_diff(&got, &f32_ref)
        );
        // the twin rounds exactly as the shader does: only f32 summation noise is left
        assert!(e_twin <= 1e-6, "{fmt:?} t={t} n={n} k={k}: f16 kernel vs its twin, relative error {e_twin:.3e}");
        // the f16 rounding itself stays within two operand roundings (2 × 2⁻¹¹ of Σ|x·w|)
        assert!(e_f32 <= 2.0 * 2f64.powi(-11), "{fmt:?} t={t} n={n} k={k}: f16 vs f32 matmul, relative error {e_f32:.3e}");
        worst_twin = worst_twin.max(e_twin);
        worst_f32 = worst_f32.max(e_f32);
    }
    // the twin test is meaningful: the twin is far closer than the f32 kernel's numbers are
    assert!(worst_f32 > 10.0 * worst_twin.max(1e-9), "f16 vs f32 {worst_f32:.3e} is not ≫ f16 vs twin {worst_twin:.3e}");
}

#[test]
fn matmul_f16_saturates_outliers_at_the_largest_f16_like_its_twin() {
    let Some(fk) = fk() else { return };
    if !fk.has_f16() {
        return;
    }
    // x beyond ±65504 (f16 would be inf), tiny values that are f16 subnormals, exact zeros
    let (t, n, k) = (2, 5, 40);
    let mut rng = Rng(13);
    let mut x = rng.vec(t * k);
    x[0] = 1.0e5;
    x[3] = -7.0e4;
    x[k + 1] = 3.0e-6;
    x[k + 2] = 0.0;
    let w = random_matrix(&mut rng, WeightFormat::F32, n, k);
    let got = block(matmul_once_with(fk, Precision::F16, &x, t, &w, None, None)).unwrap();
    let twin = matmul_f16_reference(&x, t, &w, None, None).unwrap();
    assert!(got.iter().all(|v| v.is_finite()), "{got:?}");
    let e = max_rel_dot_err(&got, &twin, &x, &w.dequantize(), t, n, k);
    assert!(e <= 1e-6, "saturated f16 matmul vs twin: relative error {e:.3e}\n{got:?}\n{twin:?}");
}

#[test]
fn f16_matmul_without_shader_f16_is_refused_naming_the_feature() {
    let Some(ctx) = gpu_kit::open(GpuOptions { allow_f16: false, ..Default::default() }) else { return };
    let fk = ForwardKernels::new_blocking(&ctx).expect("forward kernels compile without f16");
    assert!(!fk.has_f16());
    let mut rng = Rng(14);
    let w = random_matrix(&mut rng, WeightFormat::Q8_0, 4, 32);
    let x = rng.vec(32);
    let e = block(matmul_once_with(&fk, Precision::F16, &x, 1, &w, None, None)).unwrap_err();
    assert!(matches!(e, GpuError::MissingFeature("shader-f16")), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("shader-f16") && msg.contains("Precision::F32"), "{msg}");
    let e = latentlens::gpu::matmul::GpuMatrix::upload_with(&fk, &w, Precision::F16).unwrap_err();
    assert!(matches!(e, GpuError::MissingFeature("shader-f16")), "{e:?}");
    // the f32 kernel still runs on that context
    let got = block(matmul_once_with(&fk, Precision::F32, &x, 1, &w, None, None)).unwrap();
    let want = matmul_reference(&x, 1, &w, None, None).unwrap();
    assert!(max_abs_diff(&got, &want) < 1e-4);
}

#[test]
fn matmul_and_embedding_split_over_bindings_when_weights_exceed_the_limit() {
    let Some(fk) = fk_capped(4096) else { return };
    let mut rng = Rng(2);
    // activations must fit one binding (3×300 outputs = 3,600 B < 4,096); weights are split
    let (t, n, k) = (3, 300, 64);
    let w = random_matrix(&mut rng, WeightFormat::Q8_0, n, k); // 16 words/row → 64 rows per part
    let gm = latentlens::gpu::matmul::GpuMatrix::upload(&fk, &w).unwrap();
    assert!(gm.num_parts() >= 5, "{} parts", gm.num_parts());
    let x = rng.vec(t * k);
    let bias = rng.vec(n);
    let got = block(matmul_once(&fk, &x, t, &w, Some(&bias), None)).unwrap();
    let want = matmul_reference(&x, t, &w, Some(&bias), None).unwrap();
    assert!(max_abs_diff(&got, &want) < 1e-4, "{}", max_abs_diff(&got, &want));

    let table = random_matrix(&mut rng, WeightFormat::Q4_1, 1000, 64);
    let e = latentlens::gpu::embed::GpuEmbedding::upload(&fk, &table).unwrap();
    assert!(e.num_parts() > 1);
    let ids = [0u32, 999, 500, 128, 127, 3];
    assert_eq!(block(embed_once(&fk, &table, &ids)).unwrap(), embed_reference(&table, &ids).unwrap());

    // a single row wider than the limit cannot be split: refused, naming the limit
    let wide = random_matrix(&mut rng, WeightFormat::F32, 1, 2048);
    let err = latentlens::gpu::matmul::GpuMatrix::upload(&fk, &wide).unwrap_err().to_string();
    assert!(err.contains("max_storage_buffer_binding_size"), "{err}");
}

#[test]
fn norms_match_twin() {
    let Some(fk) = fk() else { return };
    let mut rng = Rng(3);
    for (rows, d) in [(1, 1), (3, 48), (70, 300), (2, 577)] {
        let x: Vec<f32> = rng.vec(rows * d).iter().map(|v| v * 3.0 + 0.5).collect();
        let w = rng.vec(d);
        let b = rng.vec(d);
        for (kind, bias) in [(NormKind::Rms, None), (NormKind::Layer, Some(&b[..])), (NormKind::Layer, None)] {
            let got = block(norm_once(fk, kind, 1e-5, &x, rows, d, &w, bias)).unwrap();
            let want = norm_reference(kind, 1e-5, &x, rows, d, &w, bias).unwrap();
            let e = max_abs_diff(&got, &want);
            assert!(e <= 2e-5, "{kind:?} [{rows}, {d}]: {e}");
        }
    }
}

#[test]
fn rope_matches_twin_in_rotate_half_layout() {
    let Some(fk) = fk() else { return };
    let mut rng = Rng(4);
    for (t, heads, hd, extra) in [(1, 1, 2, 0), (9, 6, 64, 128), (40, 5, 12, 24)] {
        let width = heads * hd + extra; // trailing v heads are left alone
        let x = rng.vec(t * width);
        let positions: Vec<usize> = (0..t).collect();
        let (cos, sin) = rope_tables(&positions, hd, 10000.0);
        let got = block(rope_once(fk, &x, t, width, heads, hd, &cos, &sin)).unwrap();
        let want = rope_reference(&x, t, width, heads, hd, &cos, &sin).unwrap();
        assert!(max_abs_diff(&got, &want) <= 1e-6, "t={t} hd={hd}: {}", max_abs_diff(&got, &want));
        for r in 0..t {
            assert_eq!(&got[r * width + heads * hd..(r + 1) * width], &x[r * width + heads * hd..(r + 1) * width]);
        }
    }
    // position 0 is the identity; rotate_half pairs (i, i + hd/2)
    let (cos, sin) = rope_tables(&[0, 1], 4, 10000.0);
    assert_eq!((cos[0], sin[0]), (1.0, 0.0));
    let y = rope_reference(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], 2, 4, 1, 4, &cos, &sin).unwrap();
    assert!((y[4] - 1f32.cos()).abs() < 1e-7 && (y[6] - 1f32.sin()).abs() < 1e-7, "{y:?}");
}

#[test]
fn attention_matches_twin_causal_bidirectional_gqa_and_long() {
    let Some(fk) = fk() else { return };
    let mut rng = Rng(5);
    // (t, heads, kv, hd, causal, q/k magnitude, rows per sequence (0: one sequence))
    let cases = [
        (1, 1, 1, 8, true, 1.0, 0),
        (7, 4, 2, 12, true, 1.0, 0),
        (7, 4, 2, 12, false, 1.0, 0),
        (300, 3, 1, 64, true, 1.0, 0),
        (260, 2, 2, 32, false, 4.0, 0), // peaked softmax: stability
        (33, 8, 8, 256, false, 1.0, 0),
        // batched vision tiles: 3 sequences of 17 (class token + 4×4), one of 1, 2 of 290
        (51, 4, 4, 8, false, 1.0, 17),
        (5, 2, 2, 16, false, 1.0, 1),
        (580, 2, 2, 16, false, 2.0, 290),
        (12, 2, 1, 8, true, 1.0, 4),
    ];
    for (t, heads, kv, hd, causal, mag, seq) in cases {
        let s = AttnShape { t, heads, kv_heads: kv, hd, causal, scale: 1.0 / (hd as f32).sqrt(), seq };
        let qkv: Vec<f32> = rng.vec(t * s.qkv_width()).iter().map(|v| v * mag).collect();
        let got = block(attention_once(fk, &s, &qkv)).unwrap();
        let want = attention_reference(&s, &qkv).unwrap();
        let e = max_abs_diff(&got, &want);
        eprintln!("attention t={t} h={heads}/{kv} hd={hd} causal={causal} seq={seq}: max abs diff {e:.2e}");
        assert!(e <= 2e-5 && got.iter().all(|v| v.is_finite()), "{s:?}: {e}");
    }
    let bad = AttnShape { t: 2, heads: 3, kv_heads: 2, hd: 4, causal: true, scale: 1.0, seq: 0 };
    assert!(attention_reference(&bad, &[0.0; 2 * 28]).is_err());
    let bad = AttnShape { t: 5, heads: 1, kv_heads: 1, hd: 4, causal: false, scale: 1.0, seq: 2 };
    let e = attention_reference(&bad, &[0.0; 5 * 12]).unwrap_err().to_string();
    assert!(e.contains("whole sequences"), "{e}");
}

#[test]
fn batched_attention_equals_one_call_per_sequence() {
    let Some(fk) = fk() else { return };
    let mut rng = Rng(11);
    let (seq, n, heads, hd) = (10, 3, 2, 8);
    let s = AttnShape { t: seq * n, heads, kv_heads: heads, hd, causal: false, scale: 0.3, seq };
    let qkv = rng.vec(s.t * s.qkv_width());
    let got = block(attention_once(fk, &s, &qkv)).unwrap();
    let one = AttnShape { t: seq, seq: 0, ..s };
    for b in 0..n {
        let part = &qkv[b * seq * s.qkv_width()..(b + 1) * seq * s.qkv_width()];
        let want = attention_reference(&one, part).unwrap();
        let e = max_abs_diff(&got[b * seq * heads * hd..(b + 1) * seq * heads * hd], &want);
        assert!(e <= 2e-6, "sequence {b}: {e}");
    }
}

#[test]
fn permute_matches_twin_and_the_model_layouts() {
    let Some(fk) = fk() else { return };
    let mut rng = Rng(12);
    // im2col of 2 tiles [3, 12, 12] with patch 4, one free leading row per tile (class token)
    let (tiles, c, side, p) = (2, 3, 12, 4);
    let g = side / p;
    let px = rng.vec(tiles * c * side * side);
    let plan = Permute::unfold_patches(tiles, c, side, p, 1).unwrap();
    let rows = tiles * (1 + g * g);
    let dst0 = vec![-7.0f32; rows * c * p * p];
    let got = block(permute_once(fk, &plan, &px, &dst0)).unwrap();
    let mut want = dst0.clone();
    permute_reference(&plan, &px, &mut want).unwrap();
    assert_eq!(got, want, "unfold: GPU vs twin");
    // the twin against the definition: row (t, 1 + gy·g + gx), column (ch, i, j)
    for t in 0..tiles {
        assert!(want[t * (1 + g * g) * c * p * p..][..c * p * p].iter().all(|&v| v == -7.0), "lead row written");
        for gy in 0..g {
            for gx in 0..g {
                for ch in 0..c {
                    for i in 0..p {
                        for j in 0..p {
                            let r = t * (1 + g * g) + 1 + gy * g + gx;
                            let col = (ch * p + i) * p + j;
                            let v = px[((t * c + ch) * side + gy * p + i) * side + gx * p + j];
                            assert_eq!(want[r * c * p * p + col], v);
                        }
                    }
                }
            }
        }
    }

    // pixel shuffle of 3 tiles of an 8×8 grid, scale 2, d = 5: equals the CPU model's
    let (tiles, g, s, d) = (3, 8, 2, 5);
    let x = rng.vec(tiles * g * g * d);
    let plan = Permute::pixel_shuffle(tiles, g, s, d).unwrap();
    let got = block(permute_once(fk, &plan, &x, &vec![0.0; x.len()])).unwrap();
    let mut want = vec![0.0; x.len()];
    permute_reference(&plan, &x, &mut want).unwrap();
    assert_eq!(got, want, "pixel shuffle: GPU vs twin");
    for t in 0..tiles {
        let tile = candle_core::Tensor::from_slice(&x[t * g * g * d..(t + 1) * g * g * d], (g * g, d), &Device::Cpu).unwrap();
        let model = latentlens::model::connector::pixel_shuffle(&tile, s).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(&want[t * g * g * d..(t + 1) * g * g * d], &model[..], "tile {t} vs connector::pixel_shuffle");
    }

    // rows: drop the first row of each of 2 layers and concatenate them along features
    let (n, w) = (5, 3);
    let a = rng.vec(n * w);
    let mut cat = vec![0.0; (n - 1) * 2 * w];
    for l in 0..2 {
        let plan = Permute::rows(n - 1, w, (w, w), (l * w, 2 * w)).unwrap();
        let got = block(permute_once(fk, &plan, &a, &cat)).unwrap();
        permute_reference(&plan, &a, &mut cat).unwrap();
        assert_eq!(got, cat);
    }
    assert_eq!(&cat[..2 * w], &[a[w], a[w + 1], a[w + 2], a[w], a[w + 1], a[w + 2]]);

    // out of bounds and bad shapes are refused
    let plan = Permute::rows(3, 4, (0, 4), (0, 4)).unwrap();
    assert!(permute_reference(&plan, &[0.0; 11], &mut [0.0; 12]).unwrap_err().to_string().contains("reads up to element 12 of 11"));
    assert!(Permute::new(&[(2, 1, 1); 9], 0, 0).is_err());
    assert!(Permute::unfold_patches(1, 3, 10, 4, 0).is_err());
    assert!(Permute::pixel_shuffle(1, 6, 4, 1).is_err());
}

#[test]
fn activations_and_add_match_twins() {
    let Some(fk) = fk() else { return };
    let mut rng = Rng(6);
    let (t, inter) = (5, 129);
    let gu: Vec<f32> = rng.vec(t * 2 * inter).iter().map(|v| v * 8.0).collect();
    let got = block(swiglu_once(fk, &gu, t, inter)).unwrap();
    let want = swiglu_reference(&gu, t, inter).unwrap();
    assert!(max_abs_diff(&got, &want) <= 1e-5, "swiglu {}", max_abs_diff(&got, &want));

    let mut x: Vec<f32> = rng.vec(1000).iter().map(|v| v * 6.0).collect();
    x.extend([100.0, -100.0, 0.0, 20.0, -20.0]);
    for kind in [GeluKind::Tanh, GeluKind::Erf, GeluKind::Quick] {
        let got = block(gelu_once(fk, kind, &x)).unwrap();
        let want = gelu_reference(kind, &x);
        assert!(got.iter().all(|v| v.is_finite()), "{kind:?}: non-finite");
        assert!(max_abs_diff(&got, &want) <= 2e-5 * 100.0, "{kind:?}: {}", max_abs_diff(&got, &want));
        let rel = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / (1.0 + w.abs())).fold(0.0, f32::max);
        assert!(rel <= 2e-6, "{kind:?}: relative {rel}");
    }
    // the erf approximation against tabulated values (Abramowitz & Stegun table 7.1)
    for (v, e) in [(0.5f32, 0.520_499_88f32), (1.0, 0.842_700_8), (2.0, 0.995_322_3), (-1.5, -0.966_105_15), (0.0, 0.0)] {
        assert!((erf_as(v) - e).abs() <= 3e-7, "erf({v}) = {} vs {e}", erf_as(v));
    }

    let y = rng.vec(700);
    let r = rng.vec(700);
    assert_eq!(block(add_once(fk, &r, &y)).unwrap(), add_reference(&r, &y));
    let row = rng.vec(7);
    assert_eq!(block(add_once(fk, &row, &y)).unwrap(), add_reference(&row, &y));
}

#[test]
fn embedding_lookup_matches_twin_and_refuses_bad_ids() {
    let Some(fk) = fk() else { return };
    let mut rng = Rng(8);
    for fmt in [WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::Q4_1, WeightFormat::F32] {
        let table = random_matrix(&mut rng, fmt, 50, 96);
        let ids = [0u32, 49, 7, 7, 13];
        assert_eq!(block(embed_once(fk, &table, &ids)).unwrap(), embed_reference(&table, &ids).unwrap(), "{fmt:?}");
        let e = block(embed_once(fk, &table, &[1, 50])).unwrap_err().to_string();
        assert!(e.contains("50") && e.contains("vocabulary"), "{e}");
    }
}

/// Relative-to-magnitude error: `|got − want| / (1 + |want|)`, the worst element.
fn max_rel_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (g - w).abs() / (1.0 + w.abs())).fold(0.0, f32::max)
}

#[test]
fn depthwise_matches_twin_on_strides_kernels_and_edge_shapes() {
    let Some(fk) = fk() else { return };
    let mut rng = Rng(21);
    // (h, w, c, k, stride): 1×1 inputs, odd sides, channels not a multiple of anything
    let shapes: [(usize, usize, usize, usize, usize); 9] = [
        (1, 1, 5, 3, 1),
        (1, 1, 7, 5, 2),
        (2, 3, 4, 5, 2),
        (7, 7, 3, 3, 2),
        (8, 8, 16, 3, 2),
        (9, 5, 33, 5, 2),
        (6, 11, 17, 5, 1),
        (13, 13, 257, 3, 1),
        (14, 14, 40, 5, 2),
    ];
    for (i, &(h, w, c, k, s)) in shapes.iter().enumerate() {
        let geo = ConvGeometry::same(h, w, k, s).unwrap();
        assert_eq!((geo.oh, geo.ow), (h.div_ceil(s), w.div_ceil(s)), "SAME output size");
        let (act_in, act_out) = (i % 2 == 0, i % 3 != 1);
        let dw = Depthwise { geo, c, act_in, act_out };
        let x: Vec<f32> = rng.vec(h * w * c).iter().map(|v| v * 8.0).collect();
        let taps = rng.vec(k * k * c);
        let bias = rng.vec(c);
        let got = block(depthwise_once(fk, &dw, &x, &taps, &bias)).unwrap();
        let want = depthwise_reference(&dw, &x, &taps, &bias).unwrap();
        let err = max_rel_diff(&got, &want);
        assert!(err <= 2e-6, "{h}x{w}x{c} k {k} s {s} (relu6 in {act_in}, out {act_out}): GPU vs twin {err}");
        if act_out {
            assert!(want.iter().all(|v| (0.0..=6.0).contains(v)), "ReLU6 on the output");
        }
        // the twin against the plain definition, channel-major as crate::model::efficientnet
        for ch in [0, c / 2, c - 1] {
            for oy in 0..geo.oh {
                for ox in 0..geo.ow {
                    let mut acc = bias[ch];
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = ((oy * s + ky) as isize - geo.pad_top as isize, (ox * s + kx) as isize - geo.pad_left as isize);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                let v = x[(iy as usize * w + ix as usize) * c + ch];
                                acc += taps[(ky * k + kx) * c + ch] * if act_in { v.clamp(0.0, 6.0) } else { v };
                            }
                        }
                    }
                    let acc = if act_out { acc.clamp(0.0, 6.0) } else { acc };
                    assert_eq!(want[(oy * geo.ow + ox) * c + ch], acc, "twin at ({oy}, {ox}, {ch})");
                }
            }
        }
    }
}

#[test]
fn depthwise_pads_like_tensorflow_same_not_symmetrically() {
    let Some(fk) = fk() else { return };
    // 4×4 ones, 3×3 ones, stride 2: TF pads one row / column after the input only, so the
    // first output sees 9 pixels and the last 4 (symmetric padding would give 4 and 9)
    let geo = ConvGeometry::same(4, 4, 3, 2).unwrap();
    assert_eq!((geo.oh, geo.pad_top, geo.pad_left), (2, 0, 0));
    let dw = Depthwise { geo, c: 1, act_in: false, act_out: false };
    let got = block(depthwise_once(fk, &dw, &[1.0; 16], &[1.0; 9], &[0.0])).unwrap();
    assert_eq!(got, vec![9.0, 6.0, 6.0, 4.0]);
    // 5×5, k 5, stride 2: two rows of padding before, two after
    let geo = ConvGeometry::same(5, 5, 5, 2).unwrap();
    assert_eq!((geo.oh, geo.pad_top), (3, 2));
    let dw = Depthwise { geo, c: 1, act_in: false, act_out: false };
    let got = block(depthwise_once(fk, &dw, &[1.0; 25], &[1.0; 25], &[0.5])).unwrap();
    assert_eq!(got, vec![9.5, 15.5, 9.5, 15.5, 25.5, 15.5, 9.5, 15.5, 9.5]);
}

#[test]
fn depthwise_and_im2col_refuse_wrong_sizes() {
    let Some(fk) = fk() else { return };
    let dw = Depthwise { geo: ConvGeometry::same(4, 4, 3, 1).unwrap(), c: 2, act_in: false, act_out: true };
    let e = block(depthwise_once(fk, &dw, &[0.0; 31], &[0.0; 18], &[0.0; 2])).unwrap_err().to_string();
    assert!(e.contains("[32, 18, 2, 32]") && e.contains("[31, 18, 2, 32]"), "{e}");
    assert!(depthwise_reference(&dw, &[0.0; 32], &[0.0; 17], &[0.0; 2]).is_err());
    assert!(ConvGeometry::same(4, 4, 3, 0).is_err());
    let plan = Im2col::chw(ConvGeometry::same(4, 4, 3, 2).unwrap(), 3);
    let e = block(im2col_once(fk, &plan, &[0.0; 47])).unwrap_err().to_string();
    assert!(e.contains("reads 48 floats of 47"), "{e}");
    assert!(clamp_reference((1.0, 0.0), &[0.0]).is_err());
}

#[test]
fn im2col_plus_matmul_is_a_same_padded_dense_conv() {
    let Some(fk) = fk() else { return };
    let mut rng = Rng(22);
    // (h, w, c, k, stride, chw): the stem's shape scaled down, odd sides, 1×1, token-major input
    for &(h, w, c, k, s, chw) in &[
        (16, 16, 3, 3, 2, true),
        (9, 7, 3, 3, 2, true),
        (1, 1, 2, 3, 1, true),
        (5, 6, 4, 5, 2, false),
        (7, 7, 5, 5, 1, false),
        (1, 1, 3, 5, 2, false),
    ] {
        let geo = ConvGeometry::same(h, w, k, s).unwrap();
        let plan = if chw { Im2col::chw(geo, c) } else { Im2col { geo, c, strides: (1, w * c, c) } };
        let x = rng.vec(h * w * c);
        let got = block(im2col_once(fk, &plan, &x)).unwrap();
        let cols = im2col_reference(&plan, &x).unwrap();
        assert_eq!(got, cols, "{h}x{w}x{c} k {k} s {s}: GPU vs twin (a copy: exact)");
        // cols · Wᵀ + b against the definition of the conv
        let out = 6;
        let row = c * k * k;
        let wt = rng.vec(out * row);
        let bias = rng.vec(out);
        let m = HostMatrix::from_f32(&wt, out, row, "conv").unwrap();
        let t = geo.oh * geo.ow;
        let y = block(matmul_once(fk, &cols, t, &m, Some(&bias), None)).unwrap();
        let px = |ch: usize, iy: usize, ix: usize| if chw { x[(ch * h + iy) * w + ix] } else { x[(iy * w + ix) * c + ch] };
        for oy in 0..geo.oh {
            for ox in 0..geo.ow {
                for o in 0..out {
                    let mut acc = bias[o];
                    for ch in 0..c {
                        for ky in 0..k {
                            for kx in 0..k {
                                if let Some((iy, ix)) = geo.source(oy, ox, ky, kx) {
                                    acc += wt[o * row + (ch * k + ky) * k + kx] * px(ch, iy, ix);
                                }
                            }
                        }
                    }
                    let g = y[(oy * geo.ow + ox) * out + o];
                    assert!((g - acc).abs() <= 1e-5 * (1.0 + acc.abs()), "conv at ({oy}, {ox}, {o}): {g} vs {acc}");
                }
            }
        }
    }
}

#[test]
fn relu6_clamp_matches_twin() {
    let Some(fk) = fk() else { return };
    let mut rng = Rng(23);
    let mut x: Vec<f32> = rng.vec(1001).iter().map(|v| v * 10.0).collect();
    x.extend([0.0, -0.0, 6.0, 6.000001, -1e30, 1e30]);
    let got = block(clamp_once(fk, RELU6, &x)).unwrap();
    assert_eq!(got, clamp_reference(RELU6, &x).unwrap());
    assert!(got.iter().all(|v| (0.0..=6.0).contains(v)));
    assert_eq!(block(clamp_once(fk, (-1.0, 1.0), &[-3.0, 0.5, 3.0])).unwrap(), vec![-1.0, 0.5, 1.0]);
}
