//! `latentlens bench wgsl`: SmolLM2-135M (Q4_1 GGUF) forward returning all 31 hidden states,
//! our WGSL kernels on wgpu (`latentlens::backend::wgsl`) vs our candle CPU path
//! (`LoadedTextModel`, f32), same token ids, same machine, same run. Prints a table and ends
//! with one JSON line `{device, ours_wgsl_ms, cpu_ms, wgsl_over_cpu, min_cosine, …}`.
//!
//! On a machine without a GPU the adapter is lavapipe (software Vulkan on the CPU): the ratio
//! is reported, not judged. On a real GPU the achieved weight-read rate (projection bytes per
//! forward / time) is printed against nothing we can measure here (the device's bandwidth is
//! not exposed by wgpu): compare it with the card's datasheet.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use latentlens::backend::wgsl::{HostTextWeights, LoadOptions, WgslTextModel};
use latentlens::gpu::forward::ForwardKernels;
use latentlens::gpu::{GpuContext, GpuOptions};
use latentlens::model::LoadedTextModel;

const TEXT: &str = include_str!("../../../tests/fixtures/smollm2/wordnet_sentences.txt");

/// Arguments of `latentlens bench wgsl`.
#[derive(clap::Args)]
pub struct Args {
    /// GGUF file (default: $LATENTLENS_SMOLLM2_GGUF).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Sequence length in tokens.
    #[arg(long, default_value_t = 256)]
    tokens: usize,
    /// Timed repetitions per path (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = match args.model {
        Some(p) => p,
        None => PathBuf::from(std::env::var("LATENTLENS_SMOLLM2_GGUF").context("pass --model or set LATENTLENS_SMOLLM2_GGUF")?),
    };
    let t0 = Instant::now();
    let cpu = LoadedTextModel::load(&path)?;
    let cpu_load = t0.elapsed().as_secs_f64();
    let text = TEXT.lines().collect::<Vec<_>>().join(" ");
    let mut ids = cpu.tokenizer.encode(&text)?;
    anyhow::ensure!(ids.len() >= args.tokens, "the bench text has only {} tokens", ids.len());
    ids.truncate(args.tokens);

    let t0 = Instant::now();
    let ctx = GpuContext::new_blocking(GpuOptions::default())?;
    let fk = ForwardKernels::new_blocking(&ctx)?;
    let host = HostTextWeights::load(&path, &LoadOptions::default())?;
    let gpu = WgslTextModel::new(&fk, &host)?;
    drop(host);
    let gpu_load = t0.elapsed().as_secs_f64();
    let info = ctx.adapter_info();
    let device = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
    println!("model {}: {} tokens, {} reps (median) after one warm-up", path.display(), ids.len(), args.reps);
    println!("device: {device}; CPU load {cpu_load:.2} s, GPU load + upload {gpu_load:.2} s, {:.1} MB of projection weights on the GPU", gpu.weight_bytes() as f64 / 1e6);

    let mut gpu_ms = Vec::new();
    let mut cpu_ms = Vec::new();
    let mut gpu_states = None;
    let mut cpu_states = None;
    for rep in 0..=args.reps {
        let t = Instant::now();
        let g = gpu.hidden_states_ids_blocking(&ids)?;
        let gms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let c = cpu.hidden_states_ids(&ids)?;
        let cms = t.elapsed().as_secs_f64() * 1e3;
        if rep > 0 {
            gpu_ms.push(gms);
            cpu_ms.push(cms);
        }
        gpu_states = Some(g);
        cpu_states = Some(c);
    }
    let (g, c) = (gpu_states.context("no run")?, cpu_states.context("no run")?);
    let (mut min_cos, mut max_abs) = (1f64, 0f32);
    for l in 0..c.num_layers() {
        for tok in 0..c.num_tokens() {
            let (a, b) = (g.row(l, tok).context("gpu row")?, c.row(l, tok).context("cpu row")?);
            min_cos = min_cos.min(cosine(a, b));
            max_abs = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(max_abs, f32::max);
        }
    }
    let (gm, cm) = (median(gpu_ms), median(cpu_ms));
    let gbps = gpu.weight_bytes() as f64 / (gm / 1e3) / 1e9;
    println!();
    println!("{:<28} {:>12}", "path", "ms/forward");
    println!("{:<28} {:>12.1}", "ours WGSL (wgpu)", gm);
    println!("{:<28} {:>12.1}", "ours CPU (candle, f32)", cm);
    println!("WGSL / CPU time: {:.2}×; weight reads {gbps:.2} GB/s; all {} states × {} tokens: min cosine {min_cos:.7}, max abs err {max_abs:.3e}", gm / cm, c.num_layers(), c.num_tokens());
    let json = serde_json::json!({
        "device": device,
        "tokens": ids.len(),
        "ours_wgsl_ms": (gm * 10.0).round() / 10.0,
        "cpu_ms": (cm * 10.0).round() / 10.0,
        "wgsl_over_cpu": (gm / cm * 1000.0).round() / 1000.0,
        "min_cosine": min_cos,
        "max_abs_err": max_abs,
        "weight_gb_per_s": (gbps * 100.0).round() / 100.0,
    });
    println!("{json}");
    Ok(())
}
