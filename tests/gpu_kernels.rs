//! Each WGSL kernel against its plain-Rust twin on wgpu (Vulkan; lavapipe without a GPU).
//! Top-k results are compared as ordered lists; inputs with exact ties check the CONTRACT
//! tie-break (higher score, then lower row, then lower layer tag). Skips loudly without an
//! adapter unless LATENTLENS_REQUIRE_ASSETS=1.
#![cfg(feature = "gpu")]

mod common;

use common::gpu_kit::*;

use latentlens::gpu::exact_topk::exact_topk;
use latentlens::gpu::lut::build_luts;
use latentlens::gpu::pq_scan::pq_scan;
use latentlens::gpu::topk_merge::{merge_layers, merge_topk};
use latentlens::gpu::{
    build_luts_reference, exact_topk_reference, merge_layers_reference, merge_topk_reference,
    pq_scan_reference, Candidate, GpuError, GpuOptions, PqCodebooks, Precision,
};

fn books<'a>(
    d: usize,
    m: usize,
    dsub: usize,
    centroids: &'a [f32],
    offsets: Option<&'a [u32]>,
) -> PqCodebooks<'a> {
    PqCodebooks {
        d,
        m,
        dsub,
        centroids,
        offsets,
    }
}

// ---------------------------------------------------------------------------------------- lut

#[test]
fn lut_matches_reference_with_m_not_multiple_of_4() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(1);
    for &(nq, m, dsub) in &[(1usize, 5usize, 4usize), (3, 7, 3), (2, 8, 1)] {
        let d = m * dsub;
        let cent = rng.vec(m * 256 * dsub);
        let queries = rng.vec(nq * d);
        let b = books(d, m, dsub, &cent, None);
        let gpu = block(build_luts(ctx, &queries, nq, &b)).expect("gpu lut");
        let cpu = build_luts_reference(&queries, nq, &b).expect("cpu lut");
        assert_eq!(gpu.len(), nq * m * 256);
        for (i, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
            assert!(
                (g - c).abs() <= 1e-6 * (1.0 + c.abs()) * dsub as f32,
                "nq={nq} m={m}: lut[{i}] gpu {g} cpu {c}"
            );
        }
    }
}

#[test]
fn lut_with_residual_offsets_reuses_subspaces() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(2);
    // two stages of 3 bytes over d = 12 (dsub 4): byte j covers sub-space (j % 3) * 4
    let (d, m, dsub, nq) = (12, 6, 4, 2);
    let offsets = [0u32, 4, 8, 0, 4, 8];
    let cent = rng.vec(m * 256 * dsub);
    let queries = rng.vec(nq * d);
    let b = books(d, m, dsub, &cent, Some(&offsets));
    let gpu = block(build_luts(ctx, &queries, nq, &b)).expect("gpu lut");
    let cpu = build_luts_reference(&queries, nq, &b).expect("cpu lut");
    for (g, c) in gpu.iter().zip(&cpu) {
        assert!((g - c).abs() <= 1e-5 * (1.0 + c.abs()));
    }
    // and the reference is what the formula says: byte 3 uses the query's first sub-space
    let want: f32 = (0..4)
        .map(|t| queries[t] * cent[(3 * 256 + 17) * 4 + t])
        .sum();
    assert!((cpu[3 * 256 + 17] - want).abs() < 1e-6);
}

#[test]
fn lut_rejects_offsets_outside_the_query() {
    let Some(ctx) = ctx() else { return };
    let cent = vec![0f32; 2 * 256 * 4];
    let b = books(8, 2, 4, &cent, Some(&[0, 6]));
    let err = block(build_luts(ctx, &[0.0; 8], 1, &b)).expect_err("offset 6 + 4 > 8");
    assert!(matches!(err, GpuError::InvalidInput(_)), "{err}");
}

// ---------------------------------------------------------------------------------- pq scan

#[test]
fn pq_scan_matches_reference_on_random_codes() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(3);
    // n not a multiple of the workgroup (256) nor of a round (1024 - k); M not a multiple of 4
    for &(n, m, nq, k) in &[
        (3001usize, 7usize, 3usize, 10usize),
        (2500, 8, 1, 64),
        (1500, 5, 2, 256),
        (777, 1, 2, 5),
    ] {
        let codes = rng.bytes(n * m);
        let luts = rng.vec(nq * m * 256);
        let gpu = block(pq_scan(ctx, &codes, n, m, &luts, nq, k, 3)).expect("gpu scan");
        let cpu = pq_scan_reference(&codes, n, m, &luts, nq, k, 3).expect("cpu scan");
        assert_exact(&gpu, &cpu, &format!("pq_scan n={n} m={m} nq={nq} k={k}"));
        assert!(gpu.iter().all(|l| l.len() == k.min(n)));
    }
}

#[test]
fn pq_scan_breaks_exact_ties_by_lower_row() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(4);
    // integer LUT values: sums are exact in any order, and most scores are tied
    let (n, m, nq, k) = (5000, 6, 2, 64);
    let codes = rng.bytes(n * m);
    let luts: Vec<f32> = (0..nq * m * 256).map(|i| ((i * 7) % 3) as f32).collect();
    let gpu = block(pq_scan(ctx, &codes, n, m, &luts, nq, k, 0)).expect("gpu scan");
    let cpu = pq_scan_reference(&codes, n, m, &luts, nq, k, 0).expect("cpu scan");
    assert_exact(&gpu, &cpu, "tied pq_scan");
    // the ties are real: some score appears more than once in the top-k
    assert!(
        gpu[0].windows(2).any(|w| w[0].score == w[1].score),
        "test data has no ties"
    );
    for l in &gpu {
        assert_sorted(l, "tied pq_scan");
    }
}

#[test]
fn pq_scan_with_k_larger_than_n_returns_every_row() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(5);
    for &(n, k) in &[(50usize, 64usize), (1, 1), (1, 256), (0, 10)] {
        let m = 3;
        let codes = rng.bytes(n * m);
        let luts = rng.vec(m * 256);
        let gpu = block(pq_scan(ctx, &codes, n, m, &luts, 1, k, 0)).expect("gpu scan");
        let cpu = pq_scan_reference(&codes, n, m, &luts, 1, k, 0).expect("cpu scan");
        assert_exact(&gpu, &cpu, &format!("n={n} k={k}"));
        assert_eq!(gpu[0].len(), n.min(k));
    }
}

#[test]
fn pq_scan_never_returns_nan_scores() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(6);
    let (n, m, k) = (400, 4, 256);
    let codes = rng.bytes(n * m);
    let mut luts = rng.vec(m * 256);
    for c in 0..128 {
        luts[2 * 256 + c] = f32::NAN; // byte 2 codes < 128 → NaN score
    }
    let gpu = block(pq_scan(ctx, &codes, n, m, &luts, 1, k, 0)).expect("gpu scan");
    let cpu = pq_scan_reference(&codes, n, m, &luts, 1, k, 0).expect("cpu scan");
    assert_exact(&gpu, &cpu, "nan pq_scan");
    let finite = (0..n).filter(|r| codes[r * m + 2] >= 128).count();
    assert_eq!(gpu[0].len(), finite.min(k));
    assert!(gpu[0]
        .iter()
        .all(|c| !c.score.is_nan() && codes[c.row as usize * m + 2] >= 128));
}

#[test]
fn pq_scan_splits_codes_over_binding_limit_into_chunks() {
    // 16 KiB per binding: 8-byte rows → 2048 rows per chunk, 5000 rows → 3 chunks, and the
    // candidate lists force several query batches
    let Some(small) = open(GpuOptions {
        max_binding_bytes: Some(16 * 1024),
        ..Default::default()
    }) else {
        return;
    };
    let mut rng = Rng(7);
    let (n, m, nq, k) = (5000, 8, 9, 100);
    let codes = rng.bytes(n * m);
    let luts = rng.vec(nq * m * 256);
    let gpu = block(pq_scan(&small, &codes, n, m, &luts, nq, k, 1)).expect("gpu scan");
    let cpu = pq_scan_reference(&codes, n, m, &luts, nq, k, 1).expect("cpu scan");
    assert_exact(&gpu, &cpu, "chunked pq_scan");
    // the best rows come from every chunk, so the merge across chunks was exercised
    let chunks: std::collections::BTreeSet<u32> =
        gpu.iter().flatten().map(|c| c.row / 2048).collect();
    assert_eq!(chunks.len(), 3, "hits from all 3 chunks");
}

#[test]
fn scan_rejects_bad_k_and_shapes() {
    let Some(ctx) = ctx() else { return };
    let luts = vec![0f32; 256];
    for k in [0usize, 257] {
        let e = block(pq_scan(ctx, &[1, 2], 2, 1, &luts, 1, k, 0)).expect_err("bad k");
        assert!(matches!(e, GpuError::InvalidInput(_)), "{e}");
    }
    let e = block(pq_scan(ctx, &[1, 2, 3], 2, 1, &luts, 1, 5, 0)).expect_err("3 bytes for 2 rows");
    assert!(matches!(e, GpuError::InvalidInput(_)), "{e}");
    let e = block(pq_scan(ctx, &[1, 2], 2, 1, &luts[..255], 1, 5, 0)).expect_err("short lut");
    assert!(matches!(e, GpuError::InvalidInput(_)), "{e}");
}

#[test]
fn limit_too_small_names_the_limit() {
    let Some(tiny) = open(GpuOptions {
        max_binding_bytes: Some(256),
        ..Default::default()
    }) else {
        return;
    };
    let v = vec![0.5f32; 2 * 100];
    let e = block(exact_topk(
        &tiny,
        &v,
        2,
        100,
        &v[..100],
        1,
        1,
        false,
        Precision::F32,
    ))
    .expect_err("400-byte rows");
    let msg = e.to_string();
    assert!(
        matches!(e, GpuError::LimitTooSmall { .. })
            && msg.contains("max_storage_buffer_binding_size"),
        "{msg}"
    );
}

// ------------------------------------------------------------------------------------ merge

#[test]
fn merge_matches_reference_with_duplicates_and_padding() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(8);
    for &(nq, per_query, k) in &[
        (1usize, 5000usize, 64usize),
        (4, 300, 10),
        (3, 7, 20),
        (2, 1024, 256),
    ] {
        let cands: Vec<Candidate> = (0..nq * per_query)
            .map(|_| match rng.below(10) {
                0 => Candidate::EMPTY,
                1 => Candidate {
                    score: f32::NAN,
                    row: rng.below(50) as u32,
                    tag: 0,
                },
                // few distinct scores and rows: exact ties on score, and on (score, row)
                _ => Candidate {
                    score: rng.below(8) as f32 * 0.25,
                    row: rng.below(200) as u32,
                    tag: rng.below(4) as u32,
                },
            })
            .collect();
        let gpu = block(merge_topk(ctx, &cands, nq, per_query, k)).expect("gpu merge");
        let cpu = merge_topk_reference(&cands, nq, per_query, k).expect("cpu merge");
        assert_exact(
            &gpu,
            &cpu,
            &format!("merge nq={nq} per_query={per_query} k={k}"),
        );
    }
}

#[test]
fn cross_layer_merge_breaks_ties_by_layer_slot() {
    let Some(ctx) = ctx() else { return };
    // the same (row, score) in three layers: the lower slot wins; distinct rows by row
    let list = |rows: &[(u32, f32)]| {
        rows.iter()
            .map(|&(row, score)| Candidate {
                score,
                row,
                tag: 99,
            })
            .collect::<Vec<_>>()
    };
    let layers = vec![
        vec![list(&[(5, 0.9), (7, 0.5)]), list(&[(1, 0.1)])],
        vec![list(&[(5, 0.9), (2, 0.5)]), list(&[(1, 0.1), (0, 0.1)])],
        vec![list(&[(5, 0.9), (3, 0.95)]), list(&[])],
    ];
    let gpu = block(merge_layers(ctx, &layers, 2, 4)).expect("gpu merge");
    let cpu = merge_layers_reference(&layers, 2, 4);
    assert_exact(&gpu, &cpu, "cross-layer merge");
    let got: Vec<(u32, u32)> = gpu[0].iter().map(|c| (c.row, c.tag)).collect();
    assert_eq!(got, vec![(3, 2), (5, 0), (5, 1), (5, 2)]);
    let got: Vec<(u32, u32)> = gpu[1].iter().map(|c| (c.row, c.tag)).collect();
    assert_eq!(got, vec![(0, 1), (1, 0), (1, 1)]);
}

// ------------------------------------------------------------------------------------ exact

#[test]
fn exact_topk_matches_reference_on_random_vectors() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(9);
    for &(n, d, nq, k, norm) in &[
        (2000usize, 33usize, 4usize, 20usize, false),
        (1100, 64, 1, 64, true),
        (300, 7, 2, 256, false),
    ] {
        let v = rng.vec(n * d);
        let q = rng.vec(nq * d);
        let gpu =
            block(exact_topk(ctx, &v, n, d, &q, nq, k, norm, Precision::F32)).expect("gpu exact");
        let cpu =
            exact_topk_reference(&v, n, d, &q, nq, k, norm, Precision::F32, 0).expect("cpu exact");
        assert_close(
            &gpu,
            &cpu,
            1e-5,
            &format!("exact n={n} d={d} k={k} norm={norm}"),
        );
    }
}

/// Rows are scaled one-hot vectors (powers of two), so every score is a query coordinate,
/// exact on any hardware (FMA or not), with many exact ties between duplicate rows.
fn one_hot_rows(rng: &mut Rng, n: usize, d: usize, nan_row: Option<usize>) -> Vec<f32> {
    let mut v = vec![0f32; n * d];
    for r in 0..n {
        let i = rng.below(d as u64) as usize;
        v[r * d + i] = [1.0, 2.0, 4.0, 0.5][rng.below(4) as usize];
    }
    if let Some(r) = nan_row {
        v[r * d] = f32::NAN;
    }
    v
}

#[test]
fn exact_topk_breaks_exact_ties_by_lower_row() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(10);
    let (n, d, nq, k) = (3000, 5, 3, 100);
    let v = one_hot_rows(&mut rng, n, d, Some(17));
    let q = rng.vec(nq * d);
    for norm in [true, false] {
        let gpu =
            block(exact_topk(ctx, &v, n, d, &q, nq, k, norm, Precision::F32)).expect("gpu exact");
        let cpu =
            exact_topk_reference(&v, n, d, &q, nq, k, norm, Precision::F32, 0).expect("cpu exact");
        if norm {
            // dot / sqrt(vv) goes through the GPU's sqrt and division (ULP bounds on Vulkan)
            assert_close(&gpu, &cpu, 1e-6, "tied exact (normalised)");
        } else {
            assert_exact(&gpu, &cpu, "tied exact");
        }
        assert!(
            gpu[0].windows(2).any(|w| w[0].score == w[1].score),
            "test data has no ties"
        );
        for l in &gpu {
            assert_sorted(l, "tied exact");
        }
        assert!(
            gpu.iter().flatten().all(|c| c.row != 17),
            "NaN row entered a top-k"
        );
    }
}

#[test]
fn exact_topk_splits_vectors_over_binding_limit() {
    let Some(small) = open(GpuOptions {
        max_binding_bytes: Some(16 * 1024),
        ..Default::default()
    }) else {
        return;
    };
    let mut rng = Rng(11);
    // d = 16 f32 → 64-byte rows → 256 rows per chunk; 1000 rows → 4 chunks
    let (n, d, nq, k) = (1000, 16, 5, 30);
    let v = one_hot_rows(&mut rng, n, d, None);
    let q = rng.vec(nq * d);
    let gpu = block(exact_topk(
        &small,
        &v,
        n,
        d,
        &q,
        nq,
        k,
        false,
        Precision::F32,
    ))
    .expect("gpu exact");
    let cpu =
        exact_topk_reference(&v, n, d, &q, nq, k, false, Precision::F32, 0).expect("cpu exact");
    assert_exact(&gpu, &cpu, "chunked exact");
}

#[test]
fn exact_topk_f16_storage_matches_reference_when_available() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(12);
    let (n, d, nq, k) = (1500, 31, 3, 40); // odd d: f16 rows straddle u32 words
    let v = rng.vec(n * d);
    let q = rng.vec(nq * d);
    let res = block(exact_topk(ctx, &v, n, d, &q, nq, k, true, Precision::F16));
    if !ctx.has_shader_f16() {
        assert!(
            matches!(res, Err(GpuError::MissingFeature("shader-f16"))),
            "{res:?}"
        );
        eprintln!(
            "!!!!! adapter has no shader-f16: f16 storage variant not run (f32 path tested) !!!!!"
        );
        return;
    }
    let gpu = res.expect("gpu exact f16");
    let cpu =
        exact_topk_reference(&v, n, d, &q, nq, k, true, Precision::F16, 0).expect("cpu exact f16");
    assert_close(&gpu, &cpu, 1e-5, "exact f16");
    // f16 ties: one-hot rows stay exact in f16
    let v = one_hot_rows(&mut rng, n, d, Some(3));
    let gpu =
        block(exact_topk(ctx, &v, n, d, &q, nq, k, false, Precision::F16)).expect("gpu exact f16");
    let cpu =
        exact_topk_reference(&v, n, d, &q, nq, k, false, Precision::F16, 0).expect("cpu exact f16");
    assert_exact(&gpu, &cpu, "tied exact f16");
}

#[test]
fn f16_precision_without_the_feature_is_a_clear_error() {
    let Some(no_f16) = open(GpuOptions {
        allow_f16: false,
        ..Default::default()
    }) else {
        return;
    };
    assert!(!no_f16.has_shader_f16());
    let v = vec![0.25f32; 4 * 8];
    let e = block(exact_topk(
        &no_f16,
        &v,
        4,
        8,
        &v[..8],
        1,
        2,
        false,
        Precision::F16,
    ))
    .expect_err("no f16");
    assert!(matches!(e, GpuError::MissingFeature("shader-f16")), "{e}");
    // and the f32 variant still works on that context
    let ok = block(exact_topk(
        &no_f16,
        &v,
        4,
        8,
        &v[..8],
        1,
        2,
        false,
        Precision::F32,
    ))
    .expect("f32");
    assert_eq!(ok[0].iter().map(|c| c.row).collect::<Vec<_>>(), vec![0, 1]);
}
