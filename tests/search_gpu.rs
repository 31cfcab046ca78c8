//! The GPU PQ search of a bank layer (WGSL LUT + scan + top-k on wgpu;
//! lavapipe here) against the CPU search on the same quantizer, codes and
//! queries, with real SmolLM2 hidden states: the same top-k index sets
//! (up to exact float ties), OPQ rotation and refinement rerank included.

mod common;

use latentlens::bank::pq::{PqParams, ProductQuantizer, RotationKind};
use latentlens::search::{pq_search, GpuPqLayer, Hit, PqSearchParams};

/// Same rows in the same order, except where neighbouring scores tie within
/// float summation noise (then the sets may swap members at the boundary).
fn assert_same_hits(gpu: &[Vec<Hit>], cpu: &[Vec<Hit>]) {
    assert_eq!(gpu.len(), cpu.len());
    for (q, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        assert_eq!(g.len(), c.len(), "query {q}");
        for (a, b) in g.iter().zip(c) {
            assert!((a.score - b.score).abs() < 1e-4, "query {q}: score {} vs {}", a.score, b.score);
            if a.row != b.row {
                let kth = c.last().unwrap().score;
                assert!((a.score - kth).abs() < 1e-4 || (a.score - b.score).abs() < 1e-5, "query {q}: row {} vs {}", a.row, b.row);
            }
            assert_eq!(a.layer, b.layer);
        }
    }
}

fn check(params: PqParams) {
    let Some(ctx) = common::gpu() else { return };
    let data = common::smollm2_golden_vectors();
    let d = 576;
    let n = data.len() / d;
    assert!(n > 500, "{n} golden vectors");
    let pq = ProductQuantizer::train(&data, d, &params).unwrap();
    let enc = pq.encode(&data).unwrap();
    let queries: Vec<f32> = data.chunks_exact(d).step_by(37).take(24).flatten().copied().collect();
    let refine = (params.refine_bytes > 0).then_some(enc.refine.as_slice());
    let layer = GpuPqLayer::new(ctx, &pq, &enc.codes, refine, 3).unwrap();
    for k in [1, 10, 50] {
        let p = PqSearchParams { k, shortlist: 64, layer: 3, ..PqSearchParams::default() };
        let cpu = pq_search(&pq, &enc.codes, refine, &queries, &p).unwrap();
        let gpu = pollster::block_on(layer.search(&queries, k, 64)).unwrap();
        assert_same_hits(&gpu, &cpu);
    }
}

#[test]
fn gpu_opq_search_matches_cpu_on_real_hidden_states() {
    check(PqParams { code_bytes: 72, rotation: RotationKind::Opq { iters: 2 }, train_size: 4096, iters: 8, ..PqParams::default() });
}

#[test]
fn gpu_search_with_refinement_rerank_matches_cpu() {
    check(PqParams { code_bytes: 36, refine_bytes: 36, rotation: RotationKind::Pca, train_size: 4096, iters: 8, ..PqParams::default() });
}

#[test]
fn gpu_layer_refuses_codes_of_the_wrong_width() {
    let Some(ctx) = common::gpu() else { return };
    let data = common::smollm2_golden_vectors();
    let pq = ProductQuantizer::train(&data[..576 * 300], 576, &PqParams { code_bytes: 8, iters: 2, ..PqParams::default() }).unwrap();
    assert!(GpuPqLayer::new(ctx, &pq, &[0u8; 13], None, 0).is_err());
}
