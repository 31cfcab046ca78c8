//! `latentlens bench bank`: the bank builder's extraction (SmolLM2 hidden
//! states of every corpus token at the bank layers, the paper's sampling
//! rules) on a fixed slice of the offline corpus, ours (candle CPU, packed
//! batches) vs HF transformers (PyTorch CPU, padded batches sorted by length,
//! `tools/bench_bank_torch.py`) with the same GGUF, sentences, truncation,
//! layers and thread count; then our quantisation into a bank. Prints a table
//! and one JSON line.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use latentlens::bank::assemble::{assemble, split_budget, AssembleOptions};
use latentlens::bank::builder::{BuildConfig, Collector, Corpus};

/// Arguments of `latentlens bench bank`.
#[derive(clap::Args)]
pub struct Args {
    /// GGUF file (default: $LATENTLENS_SMOLLM2_GGUF).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Corpus (default: $LATENTLENS_CORPUS, made by `./build.sh corpus`).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Sentences from the start of the corpus.
    #[arg(long, default_value_t = 5000)]
    sentences: usize,
    /// Threads for both sides (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Python with torch + transformers (default: $LATENTLENS_PYTHON, else .venv/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let model = a.model.or_else(|| std::env::var_os("LATENTLENS_SMOLLM2_GGUF").map(PathBuf::from)).context("give --model or set LATENTLENS_SMOLLM2_GGUF")?;
    let corpus_path = a.corpus.or_else(|| std::env::var_os("LATENTLENS_CORPUS").map(PathBuf::from)).context("give --corpus or set LATENTLENS_CORPUS (./build.sh corpus)")?;
    let python = a.python.or_else(|| std::env::var_os("LATENTLENS_PYTHON").map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(".venv/bin/python"));

    let m = crate::build_bank::load_model(&model)?;
    let mut corpus = Corpus::parse(&std::fs::read(&corpus_path).with_context(|| format!("reading {}", corpus_path.display()))?)?;
    corpus.sentences.truncate(a.sentences);
    let cfg = BuildConfig::paper(m.config.num_hidden_layers);
    let layers: Vec<String> = cfg.layers.iter().map(|l| l.to_string()).collect();

    // Ours: extraction with the paper's sampling rules.
    let mut col = Collector::new(cfg.clone(), m.config.hidden_size, (0, 1))?;
    let t0 = Instant::now();
    col.run(&m, &corpus, |_, _| {}, 0, |_| Ok(()))?;
    let ours_s = t0.elapsed().as_secs_f64();
    let tokens = col.stats.tokens;
    let ours_tps = tokens as f64 / ours_s;
    // Then quantise and write (reported, not compared).
    let t1 = Instant::now();
    let collected = col.finish();
    let d = m.config.hidden_size;
    let (code_bytes, refine_bytes) = split_budget(d, d / 8);
    let bank = assemble(
        &collected,
        &AssembleOptions {
            code_bytes,
            refine_bytes,
            rows_per_chunk: 16384,
            corpus: format!("bench slice: {} sentences", corpus.sentences.len()),
            model_name: m.source.clone(),
            fingerprint: m.fingerprint()?,
            exact_rows: false,
        },
    )?;
    let quant_s = t1.elapsed().as_secs_f64();

    // PyTorch reference, same inputs.
    let out = Command::new(&python)
        .arg("tools/bench_bank_torch.py")
        .args(["--gguf", &model.display().to_string(), "--corpus", &corpus_path.display().to_string()])
        .args(["--sentences", &a.sentences.to_string(), "--layers", &layers.join(",")])
        .args(["--threads", &threads.to_string(), "--max-tokens", &cfg.max_tokens.to_string()])
        .args(["--batch-tokens", &cfg.batch_tokens.to_string(), "--skip", &cfg.skip_positions.to_string()])
        .output()
        .with_context(|| format!("running {} tools/bench_bank_torch.py (./build.sh pyenv)", python.display()))?;
    if !out.status.success() {
        bail!("torch reference failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let torch: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).context("torch reference output")?;
    let torch_tps = torch["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
    if torch["tokens"].as_u64() != Some(tokens) {
        eprintln!("warning: token counts differ (ours {tokens}, torch {})", torch["tokens"]);
    }

    println!("bank extraction: SmolLM2 over {} corpus sentences ({tokens} tokens), layers {:?}, {threads} threads", corpus.sentences.len(), cfg.layers);
    println!("{:<28} {:>10} {:>12}", "", "seconds", "tokens/s");
    println!("{:<28} {:>10.1} {:>12.0}", "ours (candle, packed)", ours_s, ours_tps);
    println!("{:<28} {:>10.1} {:>12.0}", "torch (transformers, padded)", torch["seconds"].as_f64().unwrap_or(f64::NAN), torch_tps);
    println!(
        "bank: {} vectors per layer × {} layers, {} bytes per vector ({code_bytes} scanned + {refine_bytes} refine), {:.2} MB; quantised in {quant_s:.1}s",
        collected.rows.len(),
        collected.layers.len(),
        code_bytes + refine_bytes,
        bank.len() as f64 / 1e6
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "bank", "sentences": corpus.sentences.len(), "tokens": tokens, "threads": threads,
            "ours_tokens_per_s": ours_tps, "torch_tokens_per_s": torch_tps, "ours_over_torch": ours_tps / torch_tps,
            "vectors_per_layer": collected.rows.len(), "layers": cfg.layers, "bytes_per_vector": code_bytes + refine_bytes,
            "bank_bytes": bank.len(), "quantise_s": quant_s, "torch": torch["torch"], "transformers": torch["transformers"],
        })
    );
    Ok(())
}
