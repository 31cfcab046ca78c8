//! Timing (not a test of speed: `#[ignore]`, nothing asserted about time): PQ scan of 100k rows
//! × 72-byte codes for 64 queries, `GpuSearch` (LUT build + scan + merge + readback) vs a plain
//! scalar CPU loop (LUT build + scan + heap top-k, one thread). On lavapipe the "GPU" is the CPU,
//! so only the ratio means anything. Run:
//! `cargo test --release --test gpu_bench -- --ignored --nocapture`
#![cfg(feature = "gpu")]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use latentlens::gpu::{build_luts_reference, GpuContext, GpuOptions, GpuSearch, PqCodebooks};

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
}

/// Ordered f32 key for the heap (scores are finite here).
#[derive(PartialEq, Clone, Copy)]
struct Key(f32, Reverse<u32>);
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Key {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

/// The scalar baseline: per query, score every row and keep the best k in a min-heap.
fn cpu_scan(codes: &[u8], m: usize, luts: &[f32], nq: usize, k: usize) -> Vec<Vec<(u32, f32)>> {
    (0..nq)
        .map(|q| {
            let lut = &luts[q * m * 256..(q + 1) * m * 256];
            let mut heap: BinaryHeap<Reverse<Key>> = BinaryHeap::with_capacity(k + 1);
            for (r, row) in codes.chunks_exact(m).enumerate() {
                let mut s = 0f32;
                for (j, &c) in row.iter().enumerate() {
                    s += lut[j * 256 + c as usize];
                }
                let key = Key(s, Reverse(r as u32));
                if heap.len() < k {
                    heap.push(Reverse(key));
                } else if heap.peek().is_some_and(|Reverse(min)| key > *min) {
                    heap.pop();
                    heap.push(Reverse(key));
                }
            }
            let mut v: Vec<(u32, f32)> = heap
                .into_iter()
                .map(|Reverse(Key(s, Reverse(r)))| (r, s))
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            v
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "timing; run with --release -- --ignored --nocapture"]
fn pq_scan_100k_x72_64_queries_gpu_vs_cpu() {
    let ctx = match GpuContext::new_blocking(GpuOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("!!!!! no GPU adapter, timing skipped: {e}");
            return;
        }
    };
    let info = ctx.adapter_info().clone();
    let (n, m, dsub, nq) = (100_000usize, 72usize, 8usize, 64usize);
    let d = m * dsub;
    let mut rng = Rng(42);
    let cent: Vec<f32> = (0..m * 256 * dsub).map(|_| rng.f()).collect();
    let codes: Vec<u8> = (0..n * m).map(|_| rng.next() as u8).collect();
    let queries: Vec<f32> = (0..nq * d).map(|_| rng.f()).collect();
    let books = PqCodebooks {
        d,
        m,
        dsub,
        centroids: &cent,
        offsets: None,
    };

    let t = Instant::now();
    let mut gs = GpuSearch::new(&ctx, &books, 0).expect("upload codebooks");
    gs.push_codes(&codes, n).expect("upload codes");
    let upload_s = t.elapsed().as_secs_f64();

    let mut rows = Vec::new();
    let mut json = Vec::new();
    for k in [10usize, 64] {
        let _warm = pollster::block_on(gs.search(&queries, nq, k)).expect("warm-up");
        let mut gpu_t = Vec::new();
        let mut gpu = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            gpu = pollster::block_on(gs.search(&queries, nq, k)).expect("gpu search");
            gpu_t.push(t.elapsed().as_secs_f64());
        }
        let mut cpu_t = Vec::new();
        let mut lut_t = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let luts = build_luts_reference(&queries, nq, &books).expect("cpu lut");
            lut_t.push(t.elapsed().as_secs_f64());
            cpu = cpu_scan(&codes, m, &luts, nq, k);
            cpu_t.push(t.elapsed().as_secs_f64());
        }
        let agree = gpu
            .iter()
            .zip(&cpu)
            .filter(|(g, c)| g.first().map(|x| x.0) == c.first().map(|x| x.0))
            .count();
        let (g, c, l) = (median(gpu_t), median(cpu_t), median(lut_t));
        rows.push(format!(
            "| {k:>3} | {:>9.1} | {:>9.1} | {:>7.1} | {:>6.2} | {agree}/{nq} |",
            g * 1e3,
            c * 1e3,
            l * 1e3,
            c / g
        ));
        json.push(format!(
            "\"k{k}\":{{\"gpu_ms\":{:.2},\"cpu_scalar_ms\":{:.2},\"cpu_lut_ms\":{:.2},\"cpu_over_gpu\":{:.3},\"top1_agree\":{agree}}}",
            g * 1e3,
            c * 1e3,
            l * 1e3,
            c / g
        ));
    }
    println!(
        "\nPQ scan: n = {n} rows × {m} code bytes, {nq} queries, d = {d}; adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    println!("upload of codebooks + codes: {:.1} ms", upload_s * 1e3);
    println!("|   k | gpu ms    | cpu ms    | cpu LUT | cpu/gpu | top-1 agree |");
    println!("|-----|-----------|-----------|---------|--------|-------------|");
    for r in rows {
        println!("{r}");
    }
    println!(
        "{{\"bench\":\"gpu_pq_scan\",\"adapter\":\"{}\",\"device_type\":\"{:?}\",\"n\":{n},\"m\":{m},\"nq\":{nq},{}}}",
        info.name,
        info.device_type,
        json.join(",")
    );
}
