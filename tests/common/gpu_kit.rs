//! Shared setup of the GPU test binaries: one wgpu context per binary
//! (lavapipe where there is no GPU; skips loudly unless
//! LATENTLENS_REQUIRE_ASSETS=1), a seeded RNG, and top-k comparisons.
#![allow(dead_code)]

use std::sync::OnceLock;

use latentlens::gpu::{Candidate, GpuContext, GpuOptions};

pub fn require_gpu() -> bool {
    std::env::var("LATENTLENS_REQUIRE_ASSETS").as_deref() == Ok("1")
}

pub fn open(options: GpuOptions) -> Option<GpuContext> {
    match GpuContext::new_blocking(options) {
        Ok(c) => Some(c),
        Err(e) if !require_gpu() => {
            eprintln!("\n!!!!! SKIPPING GPU TEST: {e} (install mesa-vulkan-drivers for lavapipe; set LATENTLENS_REQUIRE_ASSETS=1 to fail instead) !!!!!\n");
            None
        }
        Err(e) => panic!("LATENTLENS_REQUIRE_ASSETS=1 but no GPU context: {e}"),
    }
}

/// One shared context per test binary (kernels compile once).
pub fn ctx() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let c = open(GpuOptions::default());
        if let Some(c) = &c {
            let i = c.adapter_info();
            eprintln!(
                "GPU tests on {} ({:?}, {:?}), f16: {}",
                i.name,
                i.backend,
                i.device_type,
                c.has_shader_f16()
            );
        }
        c
    })
    .as_ref()
}

pub fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    pollster::block_on(f)
}

/// Deterministic generator (splitmix64).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// uniform in [-1, 1)
    pub fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.f()).collect()
    }
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Lists must agree exactly: same rows, same order, same scores (bit-identical sums).
pub fn assert_exact(gpu: &[Vec<Candidate>], cpu: &[Vec<Candidate>], what: &str) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: number of queries");
    for (q, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        let g2: Vec<(u32, u32, u32)> = g
            .iter()
            .map(|x| (x.row, x.score.to_bits(), x.tag))
            .collect();
        let c2: Vec<(u32, u32, u32)> = c
            .iter()
            .map(|x| (x.row, x.score.to_bits(), x.tag))
            .collect();
        assert_eq!(g2, c2, "{what}: query {q} (row, score bits, tag)");
    }
}

/// Lists agree up to `tol` in score: positionwise scores close, and any row in only one of the
/// two lists scores within `tol` of the last kept score (a near-tie at the boundary).
pub fn assert_close(gpu: &[Vec<Candidate>], cpu: &[Vec<Candidate>], tol: f32, what: &str) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: number of queries");
    for (q, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        assert_eq!(g.len(), c.len(), "{what}: query {q} list length");
        assert_sorted(g, what);
        for (i, (a, b)) in g.iter().zip(c).enumerate() {
            assert!(
                (a.score - b.score).abs() <= tol * (1.0 + b.score.abs()),
                "{what}: q{q} #{i}: gpu {a:?} cpu {b:?}"
            );
        }
        let Some(last) = c.last() else { continue };
        for a in g {
            if !c.iter().any(|b| b.row == a.row && b.tag == a.tag) {
                assert!(
                    (a.score - last.score).abs() <= 2.0 * tol * (1.0 + last.score.abs()),
                    "{what}: q{q}: gpu row {a:?} not in cpu list"
                );
            }
        }
    }
}

/// CONTRACT order inside one list.
pub fn assert_sorted(list: &[Candidate], what: &str) {
    for w in list.windows(2) {
        let (a, b) = (w[0], w[1]);
        let ok = a.score > b.score || (a.score == b.score && (a.row, a.tag) < (b.row, b.tag));
        assert!(ok, "{what}: {a:?} before {b:?} breaks the order");
    }
}
