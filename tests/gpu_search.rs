//! The high-level GPU search (`GpuSearch`: LUT → chunked scan → merge; `GpuExactSearch`; the
//! cross-layer merge) against the CPU twins of its kernels. Integer-valued codebooks and
//! queries make every score exact, so whole pipelines are compared bit for bit, ties included.
//! Skips loudly without an adapter unless LATENTLENS_REQUIRE_ASSETS=1.
#![cfg(feature = "gpu")]

mod common;

use common::gpu_kit::*;

use latentlens::gpu::topk_merge::merge_layers;
use latentlens::gpu::{
    build_luts_reference, exact_topk_reference, merge_layers_reference, pq_scan_reference,
    Candidate, GpuExactSearch, GpuOptions, GpuSearch, PqCodebooks, Precision,
};

/// Codebooks and queries with small integer values: LUT entries are exact integers (any FMA),
/// so GPU and CPU scores agree bit for bit and many rows tie.
fn integer_layer(
    rng: &mut Rng,
    d: usize,
    m: usize,
    n: usize,
    nq: usize,
) -> (Vec<f32>, Vec<u8>, Vec<f32>) {
    let dsub = d / m;
    let small = |rng: &mut Rng| rng.below(7) as f32 - 3.0;
    let cent: Vec<f32> = (0..m * 256 * dsub).map(|_| small(rng)).collect();
    let codes = rng.bytes(n * m);
    let queries: Vec<f32> = (0..nq * d).map(|_| small(rng)).collect();
    (cent, codes, queries)
}

fn cpu_pipeline(
    books: &PqCodebooks,
    codes: &[u8],
    n: usize,
    queries: &[f32],
    nq: usize,
    k: usize,
    tag: u32,
) -> Vec<Vec<Candidate>> {
    let luts = build_luts_reference(queries, nq, books).expect("cpu lut");
    pq_scan_reference(codes, n, books.m, &luts, nq, k, tag).expect("cpu scan")
}

#[test]
fn gpu_search_matches_cpu_pipeline_exactly_with_ties() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(21);
    // M = 10 (not a multiple of 4), codes pushed in two pieces, n not a multiple of anything
    for &(d, m, n, nq, k) in &[
        (40usize, 10usize, 4001usize, 5usize, 32usize),
        (24, 24, 1000, 1, 64),
        (12, 3, 70, 2, 100),
    ] {
        let (cent, codes, queries) = integer_layer(&mut rng, d, m, n, nq);
        let books = PqCodebooks {
            d,
            m,
            dsub: d / m,
            centroids: &cent,
            offsets: None,
        };
        let mut gs = GpuSearch::new(ctx, &books, 0).expect("upload codebooks");
        let split = n * 3 / 5;
        gs.push_codes(&codes[..split * m], split).expect("push 1");
        gs.push_codes(&codes[split * m..], n - split)
            .expect("push 2");
        assert_eq!(gs.rows(), n);
        let gpu = block(gs.search_candidates(&queries, nq, k)).expect("gpu search");
        let cpu = cpu_pipeline(&books, &codes, n, &queries, nq, k, 0);
        assert_exact(&gpu, &cpu, &format!("GpuSearch d={d} m={m} n={n} k={k}"));
        assert!(
            gpu.iter()
                .any(|l| l.windows(2).any(|w| w[0].score == w[1].score)),
            "no ties in test data"
        );
        let pairs = block(gs.search(&queries, nq, k)).expect("gpu search pairs");
        assert_eq!(pairs[0].first().map(|p| p.0), cpu[0].first().map(|c| c.row));
    }
}

#[test]
fn gpu_search_matches_cpu_on_float_codebooks() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(22);
    let (d, m, n, nq, k) = (64, 16, 6000, 7, 50);
    let cent = rng.vec(m * 256 * (d / m));
    let codes = rng.bytes(n * m);
    let queries = rng.vec(nq * d);
    let books = PqCodebooks {
        d,
        m,
        dsub: d / m,
        centroids: &cent,
        offsets: None,
    };
    let mut gs = GpuSearch::new(ctx, &books, 0).expect("upload");
    gs.push_codes(&codes, n).expect("push");
    let gpu = block(gs.search_candidates(&queries, nq, k)).expect("gpu search");
    let cpu = cpu_pipeline(&books, &codes, n, &queries, nq, k, 0);
    // LUT entries may differ by an FMA rounding; sums of 16 of them by a few ulps
    assert_close(&gpu, &cpu, 1e-5, "GpuSearch float");
}

#[test]
fn gpu_search_chunked_and_batched_matches_cpu() {
    let Some(small) = open(GpuOptions {
        max_binding_bytes: Some(32 * 1024),
        ..Default::default()
    }) else {
        return;
    };
    let mut rng = Rng(23);
    // m = 13 → 16-byte packed rows → 2048 rows per chunk; 13 KiB LUT per query → 2 per batch
    let (d, m, n, nq, k) = (26, 13, 7000, 5, 20);
    let (cent, codes, queries) = integer_layer(&mut rng, d, m, n, nq);
    let books = PqCodebooks {
        d,
        m,
        dsub: 2,
        centroids: &cent,
        offsets: None,
    };
    let mut gs = GpuSearch::new(&small, &books, 4).expect("upload");
    gs.push_codes(&codes, n).expect("push");
    assert_eq!(gs.chunks(), 4);
    let gpu = block(gs.search_candidates(&queries, nq, k)).expect("gpu search");
    let cpu = cpu_pipeline(&books, &codes, n, &queries, nq, k, 4);
    assert_exact(&gpu, &cpu, "chunked GpuSearch");
}

#[test]
fn gpu_search_handles_empty_layers_and_no_queries() {
    let Some(ctx) = ctx() else { return };
    let cent = vec![1f32; 4 * 256 * 2];
    let books = PqCodebooks {
        d: 8,
        m: 4,
        dsub: 2,
        centroids: &cent,
        offsets: None,
    };
    let gs = GpuSearch::new(ctx, &books, 0).expect("upload");
    assert_eq!(
        block(gs.search(&[0.0; 8], 1, 5)).expect("empty layer"),
        vec![Vec::<(u32, f32)>::new()]
    );
    assert!(block(gs.search(&[], 0, 5)).expect("no queries").is_empty());
    assert!(
        block(gs.search(&[0.0; 7], 1, 5)).is_err(),
        "7 floats for d = 8"
    );
}

#[test]
fn cross_layer_merge_of_two_gpu_layers_matches_cpu() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(24);
    let (d, m, n, nq, k) = (16, 8, 3000, 3, 40);
    let (cent, codes0, queries) = integer_layer(&mut rng, d, m, n, nq);
    // layer 1: same codebooks, first half of the rows identical → equal (score, row) in both
    // layers, which the merge must order by layer slot
    let mut codes1 = codes0.clone();
    codes1[n / 2 * m..].copy_from_slice(&rng.bytes((n - n / 2) * m));
    let books = PqCodebooks {
        d,
        m,
        dsub: d / m,
        centroids: &cent,
        offsets: None,
    };
    let mut gpu_layers = Vec::new();
    let mut cpu_layers = Vec::new();
    for (slot, codes) in [(0u32, &codes0), (1, &codes1)] {
        let mut gs = GpuSearch::new(ctx, &books, slot).expect("upload");
        gs.push_codes(codes, n).expect("push");
        let g = block(gs.search_candidates(&queries, nq, k)).expect("gpu search");
        let c = cpu_pipeline(&books, codes, n, &queries, nq, k, slot);
        assert_exact(&g, &c, "per-layer");
        gpu_layers.push(g);
        cpu_layers.push(c);
    }
    let gpu = block(merge_layers(ctx, &gpu_layers, nq, k)).expect("gpu merge");
    let cpu = merge_layers_reference(&cpu_layers, nq, k);
    assert_exact(&gpu, &cpu, "cross-layer");
    let same_row_both_layers = gpu.iter().any(|l| {
        l.windows(2)
            .any(|w| w[0].row == w[1].row && (w[0].tag, w[1].tag) == (0, 1))
    });
    assert!(
        same_row_both_layers,
        "test data should put one row from both layers next to each other"
    );
}

#[test]
fn gpu_exact_search_matches_reference() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng(25);
    let (n, d, nq, k) = (2500, 48, 4, 64);
    let v = rng.vec(n * d);
    let q = rng.vec(nq * d);
    let mut precisions = vec![Precision::F32];
    if ctx.has_shader_f16() {
        precisions.push(Precision::F16);
    } else {
        eprintln!("!!!!! adapter has no shader-f16: GpuExactSearch f16 not run !!!!!");
    }
    for p in precisions {
        let mut ex = GpuExactSearch::new(ctx, d, p, true, 2).expect("exact index");
        ex.push_vectors(&v[..1000 * d], 1000).expect("push 1");
        ex.push_vectors(&v[1000 * d..], n - 1000).expect("push 2");
        let gpu = block(ex.search_candidates(&q, nq, k)).expect("gpu exact");
        let cpu = exact_topk_reference(&v, n, d, &q, nq, k, true, p, 2).expect("cpu exact");
        assert_close(&gpu, &cpu, 1e-5, &format!("GpuExactSearch {p:?}"));
    }
}
