//! The WGSL search kernels on WebGPU in headless Chromium (SwiftShader via
//! `--enable-unsafe-webgpu`; `./build.sh test-wasm`) against their plain-Rust
//! CPU twins: LUT → scan → top-k bit for bit on integer data (ties
//! included), the cross-layer merge, exact search, and the bank-layer search
//! (`GpuPqLayer`) against the CPU PQ search on real SmolLM2 hidden states.
#![cfg(all(target_arch = "wasm32", feature = "gpu"))]

use latentlens::bank::pq::{PqParams, ProductQuantizer, RotationKind};
use latentlens::gpu::topk_merge::merge_layers;
use latentlens::gpu::{
    build_luts_reference, exact_topk_reference, merge_layers_reference, pq_scan_reference, Candidate, GpuContext,
    GpuExactSearch, GpuSearch, PqCodebooks, Precision,
};
use latentlens::search::{pq_search, GpuPqLayer, PqSearchParams};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The browser's WebGPU adapter; the tier runs Chromium with
/// `--enable-unsafe-webgpu`, so no adapter is a failure, not a skip.
async fn ctx() -> GpuContext {
    let c = GpuContext::new().await.unwrap_or_else(|e| panic!("no WebGPU context in the browser: {e}"));
    let i = c.adapter_info();
    console_log!("WebGPU adapter: {} ({:?}, {:?}), shader-f16: {}", i.name, i.backend, i.device_type, c.has_shader_f16());
    c
}

/// splitmix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn small(&mut self) -> f32 {
        (self.next() % 7) as f32 - 3.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn triples(l: &[Vec<Candidate>]) -> Vec<Vec<(u32, u32, u32)>> {
    l.iter().map(|v| v.iter().map(|c| (c.row, c.score.to_bits(), c.tag)).collect()).collect()
}

#[wasm_bindgen_test]
async fn pq_scan_pipeline_matches_cpu_bit_for_bit_with_ties() {
    let ctx = ctx().await;
    let mut rng = Rng(21);
    for &(d, m, n, nq, k) in &[(40usize, 10usize, 4001usize, 5usize, 32usize), (12, 3, 70, 2, 100)] {
        // Small integer codebooks and queries: every score is exact, many tie.
        let cent: Vec<f32> = (0..m * 256 * (d / m)).map(|_| rng.small()).collect();
        let codes = rng.bytes(n * m);
        let queries: Vec<f32> = (0..nq * d).map(|_| rng.small()).collect();
        let books = PqCodebooks { d, m, dsub: d / m, centroids: &cent, offsets: None };
        let mut gs = GpuSearch::new(&ctx, &books, 0).unwrap();
        let split = n * 3 / 5;
        gs.push_codes(&codes[..split * m], split).unwrap();
        gs.push_codes(&codes[split * m..], n - split).unwrap();
        let gpu = gs.search_candidates(&queries, nq, k).await.unwrap();
        let luts = build_luts_reference(&queries, nq, &books).unwrap();
        let cpu = pq_scan_reference(&codes, n, m, &luts, nq, k, 0).unwrap();
        assert_eq!(triples(&gpu), triples(&cpu), "d={d} m={m} n={n} k={k}");
        assert!(gpu.iter().any(|l| l.windows(2).any(|w| w[0].score == w[1].score)), "no ties in the test data");
    }
}

#[wasm_bindgen_test]
async fn cross_layer_merge_matches_cpu() {
    let ctx = ctx().await;
    let mut rng = Rng(24);
    let (d, m, n, nq, k) = (16, 8, 3000, 3, 40);
    let cent: Vec<f32> = (0..m * 256 * (d / m)).map(|_| rng.small()).collect();
    let queries: Vec<f32> = (0..nq * d).map(|_| rng.small()).collect();
    let codes0 = rng.bytes(n * m);
    let mut codes1 = codes0.clone();
    codes1[n / 2 * m..].copy_from_slice(&rng.bytes((n - n / 2) * m));
    let books = PqCodebooks { d, m, dsub: d / m, centroids: &cent, offsets: None };
    let luts = build_luts_reference(&queries, nq, &books).unwrap();
    let (mut g_layers, mut c_layers) = (Vec::new(), Vec::new());
    for (slot, codes) in [(0u32, &codes0), (1, &codes1)] {
        let mut gs = GpuSearch::new(&ctx, &books, slot).unwrap();
        gs.push_codes(codes, n).unwrap();
        g_layers.push(gs.search_candidates(&queries, nq, k).await.unwrap());
        c_layers.push(pq_scan_reference(codes, n, m, &luts, nq, k, slot).unwrap());
    }
    let gpu = merge_layers(&ctx, &g_layers, nq, k).await.unwrap();
    let cpu = merge_layers_reference(&c_layers, nq, k);
    assert_eq!(triples(&gpu), triples(&cpu));
}

#[wasm_bindgen_test]
async fn exact_search_matches_reference() {
    let ctx = ctx().await;
    let mut rng = Rng(25);
    let (n, d, nq, k) = (2500, 48, 4, 64);
    let v: Vec<f32> = (0..n * d).map(|_| rng.f()).collect();
    let q: Vec<f32> = (0..nq * d).map(|_| rng.f()).collect();
    let mut ex = GpuExactSearch::new(&ctx, d, Precision::F32, true, 2).unwrap();
    ex.push_vectors(&v[..1000 * d], 1000).unwrap();
    ex.push_vectors(&v[1000 * d..], n - 1000).unwrap();
    let gpu = ex.search_candidates(&q, nq, k).await.unwrap();
    let cpu = exact_topk_reference(&v, n, d, &q, nq, k, true, Precision::F32, 2).unwrap();
    let mut worst = 0f32;
    for (g, c) in gpu.iter().zip(&cpu) {
        assert_eq!(g.len(), c.len());
        for (a, b) in g.iter().zip(c) {
            let diff = (a.score - b.score).abs();
            assert!(diff <= 1e-5 * (1.0 + b.score.abs()), "gpu {a:?} cpu {b:?}");
            worst = worst.max(diff);
        }
    }
    console_log!("exact search on WebGPU: max |score diff| vs CPU {worst:e}");
}

/// Real SmolLM2-135M hidden states (committed goldens, f16), L2-normalised, `[n, 576]`.
fn smollm2_vectors() -> Vec<f32> {
    let bytes = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smollm2/hidden_states.safetensors"));
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if !name.ends_with(".states") {
            continue;
        }
        let vals: Vec<f32> = view.data().chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
        for row in vals.chunks_exact(576) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                out.extend(row.iter().map(|x| x / n));
            }
        }
    }
    out
}

#[wasm_bindgen_test]
async fn bank_layer_search_matches_cpu_on_real_hidden_states() {
    let ctx = ctx().await;
    let d = 576;
    let data = smollm2_vectors();
    let n = data.len() / d;
    assert!(n > 500, "{n} vectors");
    let params = PqParams { code_bytes: 36, refine_bytes: 36, rotation: RotationKind::None, train_size: 2048, iters: 4, ..PqParams::default() };
    let pq = ProductQuantizer::train(&data, d, &params).unwrap();
    let enc = pq.encode(&data).unwrap();
    let queries: Vec<f32> = data.chunks_exact(d).step_by(37).take(16).flatten().copied().collect();
    let layer = GpuPqLayer::new(&ctx, &pq, &enc.codes, Some(&enc.refine), 3).unwrap();
    let mut worst = 0f32;
    for k in [1, 10] {
        let p = PqSearchParams { k, shortlist: 64, layer: 3, ..PqSearchParams::default() };
        let cpu = pq_search(&pq, &enc.codes, Some(&enc.refine), &queries, &p).unwrap();
        let gpu = layer.search(&queries, k, 64).await.unwrap();
        assert_eq!(gpu.len(), cpu.len());
        for (q, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
            assert_eq!(g.len(), c.len(), "query {q}");
            for (a, b) in g.iter().zip(c) {
                let diff = (a.score - b.score).abs();
                worst = worst.max(diff);
                assert!(diff < 1e-4, "query {q}: score {} vs {}", a.score, b.score);
                if a.row != b.row {
                    let kth = c.last().unwrap().score;
                    assert!((a.score - kth).abs() < 1e-4 || (a.score - b.score).abs() < 1e-5, "query {q}: row {} vs {}", a.row, b.row);
                }
                assert_eq!(a.layer, b.layer);
            }
        }
    }
    console_log!("bank-layer PQ search on WebGPU ({n} real SmolLM2 vectors): max |score diff| vs CPU {worst:e}");
}
