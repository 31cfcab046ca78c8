//! `latentlens bench search`: PQ search on real contextual vectors, ours vs
//! faiss-cpu, side by side in one run with the same vectors, queries and
//! thread count.
//!
//! Vectors: SmolLM2-135M-Instruct hidden states of WordNet usage sentences
//! (tools/contextual_vectors.py, run through `$LATENTLENS_PYTHON` when the
//! files are missing); queries come from *different* sentences. Ground truth
//! is our exact f32 cosine top-k, cross-checked against faiss `IndexFlatIP`.
//! Recall@k = |returned top-k ∩ exact top-k| / k, averaged over queries.
//! faiss runs in tools/faiss_bench.py with `omp_set_num_threads(t)`; ours in
//! a rayon pool of `t` threads. Prints a table and, last, one JSON object.

use anyhow::{bail, Context};
use latentlens::bank::pq::{PqParams, ProductQuantizer, RotationKind};
use latentlens::search::{exact_topk, pq_search, Hit, PqSearchParams};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Directory of the vector files (default: .assets/vectors).
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// LLM layer of the contextual vectors.
    #[arg(long, default_value_t = 16)]
    layer: usize,
    /// Use at most this many bank rows (0 = all).
    #[arg(long, default_value_t = 0)]
    n: usize,
    /// Use at most this many queries (0 = all).
    #[arg(long, default_value_t = 0)]
    queries: usize,
    /// Threads for both ours (rayon) and faiss (OpenMP).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Neighbours per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Byte budgets of the recall-vs-bytes table (comma separated).
    #[arg(long, default_value = "16,32,72")]
    bytes: String,
    /// Training subsample (ours and faiss).
    #[arg(long, default_value_t = 32_768)]
    train: usize,
    /// Lloyd iterations (ours; faiss's default is 25).
    #[arg(long, default_value_t = 25)]
    iters: usize,
    /// Shortlist reranked with refinement data (ours, refine variants).
    #[arg(long, default_value_t = 256)]
    shortlist: usize,
    /// Skip faiss (ours only).
    #[arg(long)]
    no_faiss: bool,
    /// Skip our OPQ variants (the bank recipe is OPQ + PQ scan + refinement; training them takes minutes).
    #[arg(long)]
    no_opq: bool,
    /// Run only our configurations whose name contains this (e.g. "OPQ36+refine36"; faiss unaffected).
    #[arg(long)]
    only: Option<String>,
    /// OPQ rounds (rotation updates) for the OPQ variants (the bank recipe: 12).
    #[arg(long, default_value_t = 12)]
    opq_iters: usize,
    /// Score-aware encoding weights η to compare (comma separated; 1 = nearest
    /// centroids): every configuration is trained once and encoded with each.
    #[arg(long, default_value = "1,2")]
    eta: String,
}

struct Row {
    method: String,
    bytes: usize,
    recall: f64,
    ms_per_query: f64,
    train_s: f64,
}

fn read_f32(path: &Path) -> anyhow::Result<Vec<f32>> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if b.len() % 4 != 0 {
        bail!("{}: length {} is not a multiple of 4", path.display(), b.len());
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn python() -> String {
    std::env::var("LATENTLENS_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into())
}

fn recall(found: &[Vec<Hit>], truth: &[Vec<Hit>], k: usize) -> f64 {
    let mut tot = 0.0;
    for (f, t) in found.iter().zip(truth) {
        let ts: std::collections::HashSet<u32> = t.iter().take(k).map(|h| h.row).collect();
        tot += f.iter().take(k).filter(|h| ts.contains(&h.row)).count() as f64 / k as f64;
    }
    tot / truth.len().max(1) as f64
}

fn recall_ids(ids: &[i64], truth: &[Vec<Hit>], k: usize) -> f64 {
    let found: Vec<Vec<Hit>> = ids
        .chunks(k)
        .map(|c| c.iter().filter(|&&i| i >= 0).map(|&i| Hit { row: i as u32, score: 0.0, layer: 0 }).collect())
        .collect();
    recall(&found, truth, k)
}

/// Our configurations at a byte budget `b` (bytes downloaded per row).
fn our_configs(b: usize, d: usize, opq: Option<usize>) -> Vec<(String, PqParams, bool)> {
    let mut v = Vec::new();
    let base = PqParams { code_bytes: b, ..PqParams::default() };
    if d % b == 0 {
        v.push((format!("ours PQ{b}"), base.clone(), false));
        if let Some(iters) = opq {
            v.push((format!("ours OPQ{b}"), PqParams { rotation: RotationKind::Opq { iters }, ..base.clone() }, false));
        }
    }
    let h = b / 2;
    if b % 2 == 0 && h > 0 && d % h == 0 {
        // Scan h bytes, rerank the shortlist with an h-byte residual stage.
        v.push((format!("ours PQ{h}+refine{h}"), PqParams { code_bytes: h, refine_bytes: h, ..base.clone() }, true));
        if let Some(iters) = opq {
            let p = PqParams { code_bytes: h, refine_bytes: h, rotation: RotationKind::Opq { iters }, ..base.clone() };
            v.push((format!("ours OPQ{h}+refine{h}"), p, true));
        }
    }
    v
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.vectors.clone().unwrap_or_else(|| PathBuf::from(".assets/vectors"));
    let stem = format!("smollm2_L{}", args.layer);
    let meta_path = dir.join(format!("{stem}.json"));
    if !meta_path.exists() {
        eprintln!("[bench search] {} missing: generating contextual vectors (SmolLM2, WordNet; takes a while)", meta_path.display());
        let st = Command::new(python())
            .args(["tools/contextual_vectors.py", "--layers", &args.layer.to_string(), "--out"])
            .arg(&dir)
            .status()
            .context("running tools/contextual_vectors.py (set LATENTLENS_PYTHON to the venv python)")?;
        if !st.success() {
            bail!("tools/contextual_vectors.py failed");
        }
    }
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta_path)?)?;
    let d = meta["d"].as_u64().context("meta: d")? as usize;
    let bank_path = dir.join(meta["bank_file"].as_str().context("meta: bank_file")?);
    let q_path = dir.join(meta["queries_file"].as_str().context("meta: queries_file")?);
    let mut bank = read_f32(&bank_path)?;
    let mut queries = read_f32(&q_path)?;
    if args.n > 0 && bank.len() > args.n * d {
        bank.truncate(args.n * d);
    }
    if args.queries > 0 && queries.len() > args.queries * d {
        queries.truncate(args.queries * d);
    }
    let (n, nq, k, t) = (bank.len() / d, queries.len() / d, args.k, args.threads.max(1));
    eprintln!("[bench search] n = {n}, d = {d}, queries = {nq}, k = {k}, threads = {t}");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;

    // Write the (possibly truncated) inputs for faiss.
    let tmp = std::env::temp_dir().join(format!("latentlens-bench-search-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let fb = tmp.join("bank.f32");
    let fq = tmp.join("queries.f32");
    std::fs::write(&fb, bytemuck::cast_slice::<f32, u8>(&bank))?;
    std::fs::write(&fq, bytemuck::cast_slice::<f32, u8>(&queries))?;

    // Exact ground truth (ours, f32).
    let t0 = Instant::now();
    let truth = pool.install(|| exact_topk(&bank, d, &queries, k, 0))?;
    let exact_ms = t0.elapsed().as_secs_f64() * 1e3 / nq as f64;
    let etas: Vec<f32> = args.eta.split(',').map(|s| s.trim().parse::<f32>().with_context(|| format!("--eta {s:?}: not a number"))).collect::<Result<_, _>>()?;
    if etas.iter().any(|&e| !(e.is_finite() && e >= 1.0)) {
        bail!("--eta {}: every weight must be a number >= 1 (1 = nearest centroids)", args.eta);
    }
    let budgets: Vec<usize> = args.bytes.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let main_b = budgets.iter().copied().filter(|&b| b <= d / 8).max().unwrap_or(d / 8);

    let mut gpu_matches: Option<bool> = None;
    let mut rerank_rows: Vec<(String, usize, usize, f64, f64)> = Vec::new();
    let mut rows: Vec<Row> = vec![Row { method: "ours exact f32".into(), bytes: d * 4, recall: 1.0, ms_per_query: exact_ms, train_s: 0.0 }];
    for &b in &budgets {
        for (name, params, refine) in our_configs(b, d, (!args.no_opq).then_some(args.opq_iters)) {
            if args.only.as_deref().is_some_and(|o| !name.contains(o)) {
                continue;
            }
            let params = PqParams { train_size: args.train, iters: args.iters, ..params };
            let t0 = Instant::now();
            let pq = pool.install(|| ProductQuantizer::train(&bank, d, &params))?;
            let train_only_s = t0.elapsed().as_secs_f64();
            let base_name = name;
            for &eta in &etas {
                let t0 = Instant::now();
                let enc = pool.install(|| pq.encode_with(&bank, eta))?;
                let train_s = train_only_s + t0.elapsed().as_secs_f64();
                let name = if eta == 1.0 { base_name.clone() } else { format!("{base_name} eta{eta}") };
                let sp = PqSearchParams { k, shortlist: args.shortlist, layer: 0, ..PqSearchParams::default() };
                let rf = if refine { Some(enc.refine.as_slice()) } else { None };
                // Warm-up, then best of 3.
                let mut res = pool.install(|| pq_search(&pq, &enc.codes, rf, &queries, &sp))?;
                let mut best = f64::INFINITY;
                for _ in 0..3 {
                    let t0 = Instant::now();
                    res = pool.install(|| pq_search(&pq, &enc.codes, rf, &queries, &sp))?;
                    best = best.min(t0.elapsed().as_secs_f64());
                }
                if refine && b == main_b {
                    // The bank recipe + exact rerank: the best R candidates re-scored with
                    // their exact f16 rows (`build-bank --exact-rows`; read per query, not
                    // downloaded with the codes).
                    for r_cand in [16usize, 32, 64] {
                        let sp = PqSearchParams { k: r_cand.max(k), shortlist: args.shortlist.max(r_cand), layer: 0, ..PqSearchParams::default() };
                        let mut best = f64::INFINITY;
                        let mut reranked = Vec::new();
                        for _ in 0..3 {
                            let t0 = Instant::now();
                            let cands = pool.install(|| pq_search(&pq, &enc.codes, rf, &queries, &sp))?;
                            reranked = pool.install(|| rerank_f16(&bank, d, &queries, &cands, k))?;
                            best = best.min(t0.elapsed().as_secs_f64());
                        }
                        let r = recall(&reranked, &truth, k);
                        let read = r_cand * latentlens::bank::format::exact_row_len(d);
                        let name = format!("{name} + exact rerank {r_cand}");
                        eprintln!("[bench search] {name}: recall@{k} {r:.4}, {:.4} ms/query, {read} B read per query", best * 1e3 / nq as f64);
                        rerank_rows.push((name.clone(), r_cand, read, r, best * 1e3 / nq as f64));
                        rows.push(Row { method: name, bytes: b, recall: r, ms_per_query: best * 1e3 / nq as f64, train_s });
                    }
                }
                if refine && b == main_b && gpu_matches.is_none() {
                    gpu_matches = gpu_check(&pq, &enc.codes, rf, &queries[..d * nq.min(64)], &res[..nq.min(64)], k, args.shortlist);
                }
                let r = recall(&res, &truth, k);
                eprintln!("[bench search] {name}: recall@{k} {r:.4}, {:.4} ms/query, train+encode {train_s:.1}s", best * 1e3 / nq as f64);
                rows.push(Row { method: name, bytes: b, recall: r, ms_per_query: best * 1e3 / nq as f64, train_s });
            }
        }
    }

    // faiss, same vectors / queries / threads.
    let mut faiss_version = serde_json::Value::Null;
    let mut exact_agreement = serde_json::Value::Null;
    if !args.no_faiss {
        let mut cfgs = vec!["Flat".to_string()];
        for &b in &budgets {
            if d % b == 0 {
                cfgs.push(format!("PQ{b}"));
            }
            // faiss's stronger options at the main budget only (OPQ training is slow).
            let h = b / 2;
            if b == main_b && d % b == 0 {
                cfgs.push(format!("OPQ{b},PQ{b}"));
                // faiss's counterpart of our exact rerank: the same number of candidates
                // reranked by exact (f32) inner product.
                cfgs.push(format!("OPQ{b},PQ{b},RFlat@{}", latentlens::lens::EXACT_CANDIDATES as f64 / k as f64));
            }
            if b == main_b && b % 2 == 0 && h > 0 && d % h == 0 {
                cfgs.push(format!("PQ{h},Refine(PQ{h})"));
            }
        }
        let out = Command::new(python())
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .args(["tools/faiss_bench.py", "--d", &d.to_string(), "--threads", &t.to_string(), "--k", &k.to_string()])
            .args(["--train", &args.train.to_string(), "--k-factor", &(args.shortlist / k).max(1).to_string()])
            .args(["--repeat", "3", "--configs", &cfgs.join(";"), "--out"])
            .arg(&tmp)
            .arg("--bank")
            .arg(&fb)
            .arg("--queries")
            .arg(&fq)
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running tools/faiss_bench.py (set LATENTLENS_PYTHON to the venv python)")?;
        if !out.status.success() {
            bail!("tools/faiss_bench.py failed");
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().context("faiss_bench printed nothing")?;
        let v: serde_json::Value = serde_json::from_str(last)?;
        faiss_version = v["faiss_version"].clone();
        for r in v["results"].as_array().context("faiss results")? {
            let name = r["name"].as_str().unwrap_or("?").to_string();
            let ids_b = std::fs::read(tmp.join(r["ids_file"].as_str().unwrap_or("")))?;
            let ids: Vec<i64> = ids_b.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect();
            let rc = recall_ids(&ids, &truth, k);
            let ms = r["search_ms_per_query"].as_f64().unwrap_or(f64::NAN);
            let train_s = r["train_s"].as_f64().unwrap_or(0.0) + r["add_s"].as_f64().unwrap_or(0.0);
            if name == "Flat" {
                exact_agreement = serde_json::json!(rc);
                rows.push(Row { method: "faiss Flat (exact)".into(), bytes: d * 4, recall: rc, ms_per_query: ms, train_s });
            } else {
                let bytes = r["bytes_per_vector"].as_u64().unwrap_or(0) as usize;
                rows.push(Row { method: format!("faiss {name}"), bytes, recall: rc, ms_per_query: ms, train_s });
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);

    println!();
    println!("search on {n} real contextual vectors (SmolLM2-135M layer {}, d = {d}), {nq} held-out queries, k = {k}, {t} threads", args.layer);
    println!("{:<34} {:>6} {:>10} {:>12} {:>10}", "method", "bytes", "recall@10", "ms/query", "train s");
    for r in &rows {
        println!("{:<34} {:>6} {:>10.4} {:>12.4} {:>10.1}", r.method, r.bytes, r.recall, r.ms_per_query, r.train_s);
    }
    let best_at = |prefix: &str, b: usize| -> Option<&Row> {
        rows.iter()
            // Exact-rerank rows read more per query than the codes: reported apart.
            .filter(|r| r.method.starts_with(prefix) && r.bytes == b && !r.method.contains("exact") && !r.method.contains("Flat"))
            .max_by(|a, b| a.recall.total_cmp(&b.recall).then(b.ms_per_query.total_cmp(&a.ms_per_query)))
    };
    let ours = best_at("ours", main_b);
    let faiss_best = best_at("faiss", main_b);
    let ours_pq = rows.iter().find(|r| r.method == format!("ours PQ{main_b}"));
    let faiss_pq = rows.iter().find(|r| r.method == format!("faiss PQ{main_b}"));
    let json = serde_json::json!({
        "bench": "search",
        "n": n, "d": d, "nq": nq, "k": k, "threads": t,
        "bytes_per_vector": main_b,
        "method": ours.map(|r| r.method.clone()),
        "recall_at_10": ours.map(|r| r.recall),
        "ours_ms_per_query": ours.map(|r| r.ms_per_query),
        "faiss_method": faiss_best.map(|r| r.method.clone()),
        "faiss_recall_at_10": faiss_best.map(|r| r.recall),
        "faiss_ms_per_query": faiss_best.map(|r| r.ms_per_query),
        "faiss_over_ours": match (ours, faiss_best) { (Some(o), Some(f)) => Some(f.ms_per_query / o.ms_per_query), _ => None },
        "pq_scan_ours_ms_per_query": ours_pq.map(|r| r.ms_per_query),
        "pq_scan_faiss_ms_per_query": faiss_pq.map(|r| r.ms_per_query),
        "pq_scan_faiss_over_ours": match (ours_pq, faiss_pq) { (Some(o), Some(f)) => Some(f.ms_per_query / o.ms_per_query), _ => None },
        "pq_recall_ours": ours_pq.map(|r| r.recall),
        "pq_recall_faiss": faiss_pq.map(|r| r.recall),
        "exact_ms_per_query": exact_ms,
        "faiss_flat_agreement": exact_agreement,
        "faiss_version": faiss_version,
        "gpu_matches_cpu": gpu_matches,
        // The bank recipe + exact rerank of the best R candidates (exact f16 rows read per
        // query, R × (2d+4) bytes; the codes are still the only per-row download).
        "exact_rerank": rerank_rows.iter().map(|(m, c, read, r, ms)| serde_json::json!({
            "method": m, "candidates": c, "bytes_read_per_query": read, "recall_at_10": r, "ms_per_query": ms,
        })).collect::<Vec<_>>(),
        // The headline method + the rerank LatentLens uses (EXACT_CANDIDATES).
        "faiss_exact_rerank": rows.iter().find(|r| r.method.contains("RFlat")).map(|r| serde_json::json!({
            "method": r.method, "recall_at_10": r.recall, "ms_per_query": r.ms_per_query,
        })),
        "recall_at_10_exact_rerank": rerank_rows.iter()
            .find(|x| x.1 == latentlens::lens::EXACT_CANDIDATES && ours.is_some_and(|o| x.0.starts_with(&o.method)))
            .map(|x| x.3),
    });
    println!("{json}");
    Ok(())
}

/// Reranks each query's candidates by exact cosine with their rows rounded
/// to f16 (what an exact-rows bank stores), keeping `k`.
fn rerank_f16(bank: &[f32], d: usize, queries: &[f32], cands: &[Vec<Hit>], k: usize) -> anyhow::Result<Vec<Vec<Hit>>> {
    use rayon::prelude::*;
    cands
        .par_iter()
        .enumerate()
        .map(|(qi, hits)| {
            let q = &queries[qi * d..(qi + 1) * d];
            let vs: Vec<Vec<f32>> = hits
                .iter()
                .map(|h| bank[h.row as usize * d..(h.row as usize + 1) * d].iter().map(|&x| half::f16::from_f32(x).to_f32()).collect())
                .collect();
            Ok(latentlens::search::rerank_exact(q, hits, &vs, k)?)
        })
        .collect()
}

/// The bank recipe searched on the GPU (WGSL kernels; lavapipe without a
/// GPU) vs the CPU result `cpu` for the same queries: same rows and scores,
/// up to exact float ties at the k-th place. `None` when no adapter exists.
fn gpu_check(
    pq: &ProductQuantizer,
    codes: &[u8],
    refine: Option<&[u8]>,
    queries: &[f32],
    cpu: &[Vec<Hit>],
    k: usize,
    shortlist: usize,
) -> Option<bool> {
    let ctx = match latentlens::gpu::GpuContext::new_blocking(latentlens::gpu::GpuOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("[bench search] no GPU adapter ({e}): gpu_matches_cpu = null");
            return None;
        }
    };
    let t0 = Instant::now();
    let gpu = latentlens::search::GpuPqLayer::new(&ctx, pq, codes, refine, 0)
        .and_then(|l| pollster::block_on(l.search(queries, k, shortlist)));
    let gpu = match gpu {
        Ok(g) => g,
        Err(e) => {
            eprintln!("[bench search] GPU search failed: {e}");
            return Some(false);
        }
    };
    let ok = gpu.len() == cpu.len()
        && gpu.iter().zip(cpu).all(|(g, c)| {
            g.len() == c.len()
                && g.iter().zip(c).all(|(a, b)| {
                    let kth = c.last().map(|h| h.score).unwrap_or(0.0);
                    (a.score - b.score).abs() < 1e-4 && (a.row == b.row || (a.score - kth).abs() < 1e-4)
                })
        });
    eprintln!(
        "[bench search] GPU ({}) vs CPU on {} queries: {} ({:.1}s)",
        ctx.adapter_info().name,
        cpu.len(),
        if ok { "same top-k" } else { "DIFFERENT" },
        t0.elapsed().as_secs_f64()
    );
    Some(ok)
}
