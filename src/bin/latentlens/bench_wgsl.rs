//! `latentlens bench wgsl`: SmolLM2-135M (Q4_1 GGUF) forward returning all 31 hidden states,
//! our WGSL kernels on wgpu (`latentlens::backend::wgsl`) vs our candle CPU path
//! (`LoadedTextModel`, f32), same token ids, same machine, same run. Then a vision line: a VLM
//! directory (`--vlm`, default the tiny SmolVLM fixture) on one image, image features (vision
//! tower + connector, every tile) and the full hidden states, `latentlens::backend::wgsl_vision`
//! vs `latentlens::model::vlm::Vlm`. Then a controlled-VLM line: EfficientNet-Lite0 features
//! of one image (`--effnet`, default $LATENTLENS_EFFNET_SAFETENSORS; skipped without it),
//! `latentlens::backend::wgsl_effnet` vs `latentlens::model::efficientnet`. Where the
//! adapter has `shader-f16`, the text forward is also timed with the f16-tile matmuls
//! (`Precision::F16`) and compared with the same CPU states: `ours_wgsl_f16_ms`,
//! `min_cosine_f16`, `max_abs_err_f16` (null without the feature). Prints a table and ends with
//! one JSON line
//! `{device, ours_wgsl_ms, cpu_ms, wgsl_over_cpu, min_cosine, …, vision: {…}, controlled: {…}}`.
//!
//! On a machine without a GPU the adapter is lavapipe (software Vulkan on the CPU): the ratio
//! is reported, not judged. On a real GPU the achieved weight-read rate (projection bytes per
//! forward / time) is printed against nothing we can measure here (the device's bandwidth is
//! not exposed by wgpu): compare it with the card's datasheet.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use latentlens::backend::wgsl::{HostTextWeights, LoadOptions, WgslTextModel};
use latentlens::backend::wgsl_vision::{HostVlmWeights, WgslVlm};
use latentlens::gpu::forward::ForwardKernels;
use latentlens::gpu::{GpuContext, GpuOptions, Precision};
use latentlens::model::HiddenStates;
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
    /// HF VLM directory for the vision line (default: tests/fixtures/tiny/smolvlm_llama).
    #[arg(long)]
    vlm: Option<PathBuf>,
    /// Image for the vision line (default: `image.png` in the VLM directory).
    #[arg(long)]
    image: Option<PathBuf>,
    /// EfficientNet-Lite0 safetensors for the controlled-VLM line (default:
    /// $LATENTLENS_EFFNET_SAFETENSORS; the line is skipped when neither is set).
    #[arg(long)]
    effnet: Option<PathBuf>,
}

/// (min per-token cosine, max abs error) over every state of two forwards.
fn compare_states(g: &HiddenStates, c: &HiddenStates) -> anyhow::Result<(f64, f32)> {
    anyhow::ensure!(g.num_layers() == c.num_layers() && g.num_tokens() == c.num_tokens(), "state shapes differ");
    let (mut min_cos, mut max_abs) = (1f64, 0f32);
    for l in 0..c.num_layers() {
        for tok in 0..c.num_tokens() {
            let (a, b) = (g.row(l, tok).context("gpu row")?, c.row(l, tok).context("cpu row")?);
            min_cos = min_cos.min(cosine(a, b));
            max_abs = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(max_abs, f32::max);
        }
    }
    Ok((min_cos, max_abs))
}

/// (min per-row cosine, max abs error) of two row-major matrices of width `d`.
fn compare(a: &[f32], b: &[f32], d: usize) -> (f64, f32) {
    let mut min_cos = if a.len() == b.len() { 1f64 } else { f64::NAN };
    let mut max_abs = 0f32;
    for (x, y) in a.chunks_exact(d).zip(b.chunks_exact(d)) {
        min_cos = min_cos.min(cosine(x, y));
        max_abs = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(max_abs, f32::max);
    }
    (min_cos, max_abs)
}

/// The vision line: image features and full hidden states, WGSL vs CPU, on one image.
fn vision(fk: &ForwardKernels, dir: &std::path::Path, image: &std::path::Path, reps: usize) -> anyhow::Result<serde_json::Value> {
    let cpu = latentlens::model::vlm::load_vlm(dir).with_context(|| format!("loading {}", dir.display()))?;
    let gpu = WgslVlm::new(fk, &HostVlmWeights::load(dir)?)?;
    let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let pre = cpu.preprocess(&latentlens::image::decode(&bytes)?)?;
    let ids = cpu.tokenizer.encode(&cpu.expand_prompt(cpu.default_prompt(), &pre)?)?;
    let (mut gf, mut cf, mut gh, mut ch) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for rep in 0..=reps {
        let t = Instant::now();
        let (g_feats, _) = gpu.image_features_blocking(&pre)?;
        let a = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let (c_feats, _) = cpu.image_features(&pre)?;
        let b = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let g_hs = gpu.forward_blocking(&ids, &pre)?;
        let c2 = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let c_hs = cpu.forward(&ids, &pre)?;
        let d2 = t.elapsed().as_secs_f64() * 1e3;
        if rep > 0 {
            gf.push(a);
            cf.push(b);
            gh.push(c2);
            ch.push(d2);
        }
        last = Some((g_feats, c_feats, g_hs, c_hs));
    }
    let (g_feats, c_feats, g_hs, c_hs) = last.context("no run")?;
    let c_feats = c_feats.flatten_all()?.to_vec1::<f32>()?;
    let d = g_hs.hidden_size;
    let (f_cos, f_abs) = compare(&g_feats, &c_feats, d);
    let (mut h_cos, mut h_abs) = (1f64, 0f32);
    for (a, b) in g_hs.layers.iter().zip(&c_hs.layers) {
        let (c, m) = compare(a, b, d);
        h_cos = h_cos.min(c);
        h_abs = h_abs.max(m);
    }
    let (gf, cf, gh, ch) = (median(gf), median(cf), median(gh), median(ch));
    println!();
    println!("vision: {} ({} tile(s) of {}x{}, {} visual tokens, {} tokens in all)", dir.display(), pre.num_tiles(), pre.width, pre.height, g_hs.visual_rows.len(), ids.len());
    println!("{:<40} {:>12} {:>12}", "path", "features ms", "forward ms");
    println!("{:<40} {:>12.1} {:>12.1}", "ours WGSL (WgslVlm)", gf, gh);
    println!("{:<40} {:>12.1} {:>12.1}", "ours CPU (Vlm, candle f32)", cf, ch);
    println!("features: WGSL / CPU {:.2}×, min cosine {f_cos:.7}, max abs err {f_abs:.3e}; hidden states: WGSL / CPU {:.2}×, min cosine {h_cos:.7}, max abs err {h_abs:.3e}", gf / cf, gh / ch);
    Ok(serde_json::json!({
        "vlm": dir.display().to_string(),
        "tiles": pre.num_tiles(),
        "visual_tokens": g_hs.visual_rows.len(),
        "tokens": ids.len(),
        "ours_wgsl_features_ms": (gf * 10.0).round() / 10.0,
        "cpu_features_ms": (cf * 10.0).round() / 10.0,
        "features_wgsl_over_cpu": (gf / cf * 1000.0).round() / 1000.0,
        "ours_wgsl_forward_ms": (gh * 10.0).round() / 10.0,
        "cpu_forward_ms": (ch * 10.0).round() / 10.0,
        "forward_wgsl_over_cpu": (gh / ch * 1000.0).round() / 1000.0,
        "features_min_cosine": f_cos,
        "features_max_abs_err": f_abs,
        "hidden_min_cosine": h_cos,
        "hidden_max_abs_err": h_abs,
    }))
}

/// The controlled-VLM line: EfficientNet-Lite0 features of one scene, WGSL vs CPU.
fn controlled(fk: &ForwardKernels, effnet: &std::path::Path, reps: usize) -> anyhow::Result<serde_json::Value> {
    use latentlens::model::controlled::ControlledVlm;
    use latentlens::model::efficientnet::{EfficientNetLite0, FEATURES};
    let bytes = std::fs::read(effnet).with_context(|| format!("reading {}", effnet.display()))?;
    let w = latentlens::model::weights::load_safetensors_bytes(&bytes, &effnet.display().to_string(), &candle_core::Device::Cpu)?;
    let cpu = EfficientNetLite0::new(&w)?;
    let gpu = latentlens::backend::wgsl_effnet::WgslEfficientNet::new(fk, &cpu)?;
    let scene = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/controlled/0900100.png");
    let img = latentlens::image::decode(&std::fs::read(&scene).with_context(|| format!("reading {}", scene.display()))?)?;
    let pixels = ControlledVlm::pixels(&img)?;
    let (mut gm, mut cm) = (Vec::new(), Vec::new());
    let mut last = None;
    for rep in 0..=reps {
        let t = Instant::now();
        let g = gpu.features_blocking(&pixels)?;
        let a = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let c = cpu.features(&pixels)?;
        let b = t.elapsed().as_secs_f64() * 1e3;
        if rep > 0 {
            gm.push(a);
            cm.push(b);
        }
        last = Some((g, c));
    }
    let (g, c) = last.context("no run")?;
    let (cos, abs) = compare(&g, &c, FEATURES);
    let (gm, cm) = (median(gm), median(cm));
    println!();
    println!("controlled VLM: EfficientNet-Lite0 features [49, {FEATURES}] of {}", scene.display());
    println!("{:<40} {:>12}", "path", "features ms");
    println!("{:<40} {:>12.1}", "ours WGSL (WgslEfficientNet)", gm);
    println!("{:<40} {:>12.1}", "ours CPU (EfficientNetLite0)", cm);
    println!("WGSL / CPU {:.2}×, min cosine {cos:.7}, max abs err {abs:.3e}", gm / cm);
    Ok(serde_json::json!({
        "effnet": effnet.display().to_string(),
        "ours_wgsl_effnet_ms": (gm * 10.0).round() / 10.0,
        "cpu_effnet_ms": (cm * 10.0).round() / 10.0,
        "effnet_wgsl_over_cpu": (gm / cm * 1000.0).round() / 1000.0,
        "effnet_min_cosine": cos,
        "effnet_max_abs_err": abs,
    }))
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
    let gpu_f16 = if fk.has_f16() { Some(WgslTextModel::with_precision(&fk, &host, Precision::F16)?) } else { None };
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
    let (min_cos, max_abs) = compare_states(&g, &c)?;
    // the f16-matmul forward, same ids, against the same CPU states
    let f16 = match &gpu_f16 {
        Some(m) => {
            let mut ms = Vec::new();
            let mut last = None;
            for rep in 0..=args.reps {
                let t = Instant::now();
                let h = m.hidden_states_ids_blocking(&ids)?;
                if rep > 0 {
                    ms.push(t.elapsed().as_secs_f64() * 1e3);
                }
                last = Some(h);
            }
            let (cs, ma) = compare_states(&last.context("no f16 run")?, &c)?;
            Some((median(ms), cs, ma))
        }
        None => None,
    };
    let (gm, cm) = (median(gpu_ms), median(cpu_ms));
    let gbps = gpu.weight_bytes() as f64 / (gm / 1e3) / 1e9;
    println!();
    println!("{:<28} {:>12}", "path", "ms/forward");
    println!("{:<28} {:>12.1}", "ours WGSL (wgpu)", gm);
    if let Some((ms, _, _)) = f16 {
        println!("{:<28} {:>12.1}", "ours WGSL, f16 matmuls", ms);
    }
    println!("{:<28} {:>12.1}", "ours CPU (candle, f32)", cm);
    println!("WGSL / CPU time: {:.2}×; weight reads {gbps:.2} GB/s; all {} states × {} tokens: min cosine {min_cos:.7}, max abs err {max_abs:.3e}", gm / cm, c.num_layers(), c.num_tokens());
    match f16 {
        Some((ms, cs, ma)) => println!("f16 matmuls: WGSL f16 / CPU time {:.2}×, f16 / f32 WGSL {:.2}×; vs CPU f32: min cosine {cs:.7}, max abs err {ma:.3e}", ms / cm, ms / gm),
        None => println!("f16 matmuls: not run (the adapter lacks shader-f16)"),
    }
    let vlm_dir = args.vlm.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/smolvlm_llama"));
    let image = args.image.unwrap_or_else(|| vlm_dir.join("image.png"));
    let vision = vision(&fk, &vlm_dir, &image, args.reps)?;
    let effnet = args.effnet.or_else(|| std::env::var_os("LATENTLENS_EFFNET_SAFETENSORS").map(PathBuf::from));
    let controlled = match effnet {
        Some(p) => controlled(&fk, &p, args.reps)?,
        None => {
            println!("\ncontrolled VLM line skipped: pass --effnet or set LATENTLENS_EFFNET_SAFETENSORS");
            serde_json::Value::Null
        }
    };
    let json = serde_json::json!({
        "device": device,
        "tokens": ids.len(),
        "ours_wgsl_ms": (gm * 10.0).round() / 10.0,
        "cpu_ms": (cm * 10.0).round() / 10.0,
        "wgsl_over_cpu": (gm / cm * 1000.0).round() / 1000.0,
        "min_cosine": min_cos,
        "max_abs_err": max_abs,
        "weight_gb_per_s": (gbps * 100.0).round() / 100.0,
        "ours_wgsl_f16_ms": f16.map(|(ms, _, _)| (ms * 10.0).round() / 10.0),
        "min_cosine_f16": f16.map(|(_, cs, _)| cs),
        "max_abs_err_f16": f16.map(|(_, _, ma)| ma),
        "vision": vision,
        "controlled": controlled,
    });
    println!("{json}");
    Ok(())
}
