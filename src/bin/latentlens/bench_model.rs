//! `latentlens bench model`: SmolLM2-135M (GGUF, dequantised to f32) forward
//! returning all hidden states, ours (candle CPU) vs HF transformers (PyTorch
//! CPU, `tools/bench_model_torch.py` via `$LATENTLENS_PYTHON`) on the same
//! token ids and thread count. Prints a table and ends with one JSON line.
//!
//! Input: real text (the WordNet usage sentences of the tokenizer goldens,
//! joined) cut to 64 and 256 tokens. Timed runs alternate ours / torch (the
//! reference stays loaded in a child process, 300 ms pause between runs) so
//! both see the same machine load; medians are reported. Agreement: minimum
//! per-token cosine between our and torch's hidden states over all layers.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use latentlens::model::LoadedTextModel;

const TEXT: &str = include_str!("../../../tests/fixtures/smollm2/wordnet_sentences.txt");

/// Arguments of `latentlens bench model`.
#[derive(clap::Args)]
pub struct Args {
    /// GGUF file (default: $LATENTLENS_SMOLLM2_GGUF).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Sequence lengths, comma-separated.
    #[arg(long, default_value = "64,256")]
    tokens: String,
    /// Timed repetitions per length (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Threads for both sides (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Python with torch + transformers (default: $LATENTLENS_PYTHON, else .venv/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Also time our quantised-storage mode (GGUF blocks kept, dequantised per matmul).
    #[arg(long)]
    quantized: bool,
    /// Skip the PyTorch side.
    #[arg(long)]
    no_torch: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn min_cosine(ours: &[Vec<f32>], theirs: &[f32], t: usize, d: usize) -> f64 {
    let mut worst = 1f64;
    for (l, layer) in ours.iter().enumerate() {
        for tok in 0..t {
            let a = &layer[tok * d..(tok + 1) * d];
            let off = (l * t + tok) * d;
            let Some(b) = theirs.get(off..off + d) else { return f64::NAN };
            let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
            for (&x, &y) in a.iter().zip(b) {
                ab += x as f64 * y as f64;
                aa += x as f64 * x as f64;
                bb += y as f64 * y as f64;
            }
            worst = worst.min(ab / (aa.sqrt() * bb.sqrt()).max(1e-30));
        }
    }
    worst
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    // candle's CPU matmul reads RAYON_NUM_THREADS on first use.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let path = match &args.model {
        Some(p) => p.clone(),
        None => PathBuf::from(std::env::var("LATENTLENS_SMOLLM2_GGUF").context(
            "no --model and LATENTLENS_SMOLLM2_GGUF unset: run ./build.sh bench model, or pass --model FILE.gguf",
        )?),
    };
    let lens: Vec<usize> = args
        .tokens
        .split(',')
        .map(|s| s.trim().parse::<usize>().context("--tokens must be a comma-separated list of integers"))
        .collect::<anyhow::Result<_>>()?;
    if args.reps == 0 {
        bail!("--reps must be ≥ 1");
    }
    let t0 = Instant::now();
    let m = LoadedTextModel::load(&path)?;
    let load_s = t0.elapsed().as_secs_f64();
    let text = TEXT.lines().collect::<Vec<_>>().join(" ");
    let all_ids = m.tokenizer.encode(&text)?;
    let mut inputs = Vec::new();
    for &n in &lens {
        if n == 0 || n > all_ids.len() {
            bail!("--tokens {n}: between 1 and {}", all_ids.len());
        }
        inputs.push((n, all_ids[..n].to_vec()));
    }
    let model_name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    println!("model {model_name}: loaded in {load_s:.2} s, {threads} threads, {} reps (median)", args.reps);

    // --- the reference, started now so it loads while we warm up ---
    let mut torch_proc = if args.no_torch { None } else { Some(TorchRef::start(&args, &path, &inputs, threads)?) };

    // --- timed runs, ours and torch alternating (same machine load for both) ---
    let mut ours = Vec::new();
    let mut torch: Vec<Option<(f64, Vec<f32>)>> = vec![None; inputs.len()];
    let mut torch_ms_all: Vec<Vec<f64>> = vec![Vec::new(); inputs.len()];
    if let Some(tp) = torch_proc.as_mut() {
        tp.wait_ready()?;
    }
    for (i, (n, ids)) in inputs.iter().enumerate() {
        m.model.forward_ids(ids)?; // warm-up
        let mut times = Vec::new();
        let mut states = Vec::new();
        for _ in 0..args.reps {
            if torch_proc.is_some() {
                // Let the reference's OpenMP workers stop spinning first.
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            let t = Instant::now();
            states = m.model.forward_ids(ids)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if let Some(tp) = torch_proc.as_mut() {
                std::thread::sleep(std::time::Duration::from_millis(300));
                torch_ms_all[i].push(tp.run(*n)?);
            }
        }
        let vecs = latentlens::model::llama::states_to_vecs(&states)?;
        ours.push((*n, median(times), vecs));
    }
    let ours_peak = peak_rss_mb();
    let mut torch_info = serde_json::Value::Null;
    if let Some(tp) = torch_proc.take() {
        let (info, dir) = tp.dump()?;
        torch_info = info;
        for (i, (n, _)) in inputs.iter().enumerate() {
            let raw = std::fs::read(dir.join(format!("states_{n}.f32")))
                .with_context(|| format!("torch reference wrote no states for {n} tokens"))?;
            let vals: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            torch[i] = Some((median(torch_ms_all[i].clone()), vals));
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    // --- ours, quantised-storage mode (optional) ---
    let mut quant: Vec<Option<(f64, Vec<Vec<f32>>)>> = vec![None; inputs.len()];
    if args.quantized {
        let mq = LoadedTextModel::load_with(&path, true)?;
        for (i, (_, ids)) in inputs.iter().enumerate() {
            mq.model.forward_ids(ids)?;
            let mut times = Vec::new();
            let mut states = Vec::new();
            for _ in 0..args.reps {
                let t = Instant::now();
                states = mq.model.forward_ids(ids)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            quant[i] = Some((median(times), latentlens::model::llama::states_to_vecs(&states)?));
        }
    }

    println!(
        "{:>7} {:>11} {:>11} {:>11} {:>11} {:>13} {:>11}",
        "tokens", "ours ms", "torch ms", "torch/ours", "min cosine", "ours-q ms", "q min cos"
    );
    let d = m.config.hidden_size;
    let mut rows = Vec::new();
    for (((n, ours_ms, vecs), th), q) in ours.iter().zip(&torch).zip(&quant) {
        let (torch_ms, ratio, cosv, qcos) = match th {
            Some((ms, vals)) => (
                Some(*ms),
                Some(ms / ours_ms),
                Some(min_cosine(vecs, vals, *n, d)),
                q.as_ref().map(|(_, qv)| min_cosine(qv, vals, *n, d)),
            ),
            None => (None, None, None, None),
        };
        let q_ms = q.as_ref().map(|(ms, _)| *ms);
        let f = |x: Option<f64>, p: usize| x.map(|v| format!("{v:.p$}")).unwrap_or_else(|| "-".into());
        println!(
            "{:>7} {:>11.1} {:>11} {:>11} {:>11} {:>13} {:>11}",
            n,
            ours_ms,
            f(torch_ms, 1),
            f(ratio, 3),
            f(cosv, 7),
            f(q_ms, 1),
            f(qcos, 5)
        );
        rows.push(serde_json::json!({"tokens": n, "ours_ms": ours_ms, "torch_ms": torch_ms,
                                     "torch_over_ours": ratio, "min_cosine": cosv,
                                     "ours_quantized_ms": q_ms, "quantized_min_cosine": qcos}));
    }
    if let Some(p) = ours_peak {
        println!("ours peak memory (VmHWM): {p:.0} MB; torch peak RSS: {} MB", torch_info["peak_rss_mb"].as_f64().map(|v| format!("{v:.0}")).unwrap_or("-".into()));
    }
    let mut summary = serde_json::json!({
        "bench": "model",
        "model": model_name,
        "threads": threads,
        "reps": args.reps,
        "ours_peak_rss_mb": ours_peak,
        "torch_peak_rss_mb": torch_info["peak_rss_mb"],
        "torch_version": torch_info["torch"],
        "transformers_version": torch_info["transformers"],
        "runs": rows,
    });
    // Headline figures: the longest input.
    if let Some(last) = rows.last() {
        for k in ["tokens", "ours_ms", "torch_ms", "torch_over_ours", "min_cosine"] {
            summary[k] = last[k].clone();
        }
    }
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// The PyTorch reference process (tools/bench_model_torch.py, line protocol).
struct TorchRef {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    dir: PathBuf,
    log: PathBuf,
}

impl TorchRef {
    fn start(args: &Args, gguf: &Path, inputs: &[(usize, Vec<u32>)], threads: usize) -> anyhow::Result<Self> {
        let py = args
            .python
            .clone()
            .or_else(|| std::env::var_os("LATENTLENS_PYTHON").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".venv/bin/python"));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/bench_model_torch.py");
        let dir = std::env::temp_dir().join(format!("latentlens-bench-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ids_json: serde_json::Map<String, serde_json::Value> =
            inputs.iter().map(|(n, ids)| (n.to_string(), serde_json::json!(ids))).collect();
        let ids_path = dir.join("ids.json");
        std::fs::write(&ids_path, serde_json::to_vec(&ids_json)?)?;
        let log = dir.join("torch.log");
        let mut child = Command::new(&py)
            .arg(&script)
            .args(["--gguf".as_ref(), gguf.as_os_str()])
            .args(["--ids".as_ref(), ids_path.as_os_str()])
            .args(["--threads", &threads.to_string()])
            .args(["--out-dir".as_ref(), dir.as_os_str()])
            .env("OMP_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .spawn()
            .with_context(|| format!("starting {} (set LATENTLENS_PYTHON or --python, or pass --no-torch)", py.display()))?;
        let stdin = child.stdin.take().context("torch reference stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("torch reference stdout")?);
        Ok(Self { child, stdin, stdout, dir, log })
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut s = String::new();
        if self.stdout.read_line(&mut s)? == 0 {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!("torch reference exited early:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        Ok(s.trim().to_string())
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        loop {
            if self.line()? == "ready" {
                return Ok(());
            }
        }
    }

    fn run(&mut self, n: usize) -> anyhow::Result<f64> {
        writeln!(self.stdin, "run {n}")?;
        self.stdin.flush()?;
        let l = self.line()?;
        l.parse::<f64>().with_context(|| format!("torch reference answered `{l}`"))
    }

    fn dump(mut self) -> anyhow::Result<(serde_json::Value, PathBuf)> {
        writeln!(self.stdin, "dump")?;
        self.stdin.flush()?;
        let l = self.line()?;
        let v = serde_json::from_str(&l).with_context(|| format!("torch reference output: {l}"))?;
        self.child.wait()?;
        Ok((v, self.dir.clone()))
    }
}
