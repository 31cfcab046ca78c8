//! `latentlens build-bank` and `latentlens merge-banks`: run a model's own
//! LLM over a corpus (one sentence per line), keep contextual vectors by the
//! paper's rules, train the quantizer, and write a bank file.
//!
//! Interrupted builds resume from their checkpoint (`OUT.ckpt`, written every
//! `--checkpoint-every` sentences). `--shard i/n` processes every n-th
//! sentence and writes a collection (`.llcoll`) instead of a bank;
//! `merge-banks` merges collections and writes the bank (quantizer trained
//! on the union).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use latentlens::bank::assemble::{assemble, AssembleOptions};
use latentlens::bank::builder::{BuildConfig, Collector, Corpus};
use latentlens::model::LoadedTextModel;

/// Arguments of `latentlens build-bank`.
#[derive(clap::Args)]
pub struct Args {
    /// The model: a .gguf file or an HF directory (text model of the VLM).
    #[arg(long)]
    model: PathBuf,
    /// Corpus: UTF-8 text, one sentence (or Visual Genome phrase) per line.
    #[arg(long)]
    corpus: PathBuf,
    /// Output: the bank file (or, with --shard, a collection file).
    #[arg(long)]
    out: PathBuf,
    /// Bank layers (hidden-state indices), e.g. `1,2,4,8,16,24,28,29`; default: the paper's.
    #[arg(long)]
    layers: Option<String>,
    /// Use only the first N sentences of the corpus.
    #[arg(long)]
    sentences: Option<usize>,
    /// At most this many contexts per token (paper: 20).
    #[arg(long, default_value_t = 20)]
    max_contexts: usize,
    /// Truncate sentences to this many tokens (counted in the report).
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Tokens per packed forward batch.
    #[arg(long, default_value_t = 512)]
    batch_tokens: usize,
    /// Process only shard i of n (`i/n`); writes a collection for merge-banks.
    #[arg(long)]
    shard: Option<String>,
    /// Save a checkpoint every N sentences (0 = never).
    #[arg(long, default_value_t = 5000)]
    checkpoint_every: usize,
    #[command(flatten)]
    quant: QuantArgs,
}

/// Quantizer options shared by build-bank and merge-banks.
#[derive(clap::Args)]
pub struct QuantArgs {
    /// Bytes per vector and layer downloaded for search (default d/8, i.e. 1/8 of fp8):
    /// half scanned PQ code, half residual refinement used to rerank a shortlist.
    #[arg(long)]
    bytes: Option<usize>,
    /// Rows per code chunk in the file (streaming granularity).
    #[arg(long, default_value_t = 16384)]
    rows_per_chunk: usize,
    /// Human-readable description of the corpus, stored in the manifest.
    #[arg(long, default_value = "")]
    corpus_name: String,
    /// Also store every row's exact vector (f16, 2d+4 bytes per row and layer; format v1.1).
    /// Not downloaded for search: `inspect` reads only the vectors of the best candidates
    /// and reranks them by exact cosine (recall@10 0.77 -> 0.95+ in `bench search`).
    #[arg(long)]
    exact_rows: bool,
}

/// Arguments of `latentlens merge-banks`.
#[derive(clap::Args)]
pub struct MergeArgs {
    /// The model the shards were built with (for its fingerprint).
    #[arg(long)]
    model: PathBuf,
    /// Collection files written by `build-bank --shard i/n`.
    #[arg(required = true)]
    parts: Vec<PathBuf>,
    /// Output bank file.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    quant: QuantArgs,
}

fn parse_shard(s: &str) -> anyhow::Result<(u32, u32)> {
    let (i, n) = s.split_once('/').context("--shard must look like i/n, e.g. 0/4")?;
    let (i, n): (u32, u32) = (i.trim().parse()?, n.trim().parse()?);
    if n == 0 || i >= n {
        bail!("--shard {s}: need 0 <= i < n");
    }
    Ok((i, n))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Loads a text model, or the text model (LLM + tokenizer) of a VLM directory:
/// a bank is built from the VLM's own LLM.
pub(crate) fn load_model(path: &Path) -> anyhow::Result<LoadedTextModel> {
    let t = Instant::now();
    let cfg: Option<serde_json::Value> = path
        .is_dir()
        .then(|| std::fs::read(path.join("config.json")).ok())
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let m = match cfg.as_ref().and_then(latentlens::model::vlm::vlm_family) {
        Some(_) => {
            let vlm = latentlens::model::vlm::load_vlm(path).with_context(|| format!("loading the VLM {}", path.display()))?;
            let model = vlm.text_model().clone();
            LoadedTextModel { config: model.config().clone(), model, tokenizer: vlm.tokenizer.clone(), source: vlm.source.clone() }
        }
        None => LoadedTextModel::load(path).with_context(|| format!("loading the model {}", path.display()))?,
    };
    eprintln!("model {} ({} layers, d={}) loaded in {:.1}s", path.display(), m.config.num_hidden_layers, m.config.hidden_size, t.elapsed().as_secs_f64());
    Ok(m)
}

fn write_bank(m: &LoadedTextModel, col: &Collector, q: &QuantArgs, out: &Path, corpus_desc: String) -> anyhow::Result<()> {
    let t = Instant::now();
    let collected = col.finish();
    let n = collected.rows.len();
    if n == 0 {
        bail!("no contexts were kept (corpus too small or sentences too short): nothing to write");
    }
    let d = m.config.hidden_size;
    let (code_bytes, refine_bytes) = latentlens::bank::assemble::split_budget(d, q.bytes.unwrap_or(d / 8));
    let opts = AssembleOptions {
        code_bytes,
        refine_bytes,
        rows_per_chunk: q.rows_per_chunk,
        corpus: corpus_desc,
        model_name: m.source.clone(),
        fingerprint: m.fingerprint()?,
        exact_rows: q.exact_rows,
    };
    let bytes = assemble(&collected, &opts)?;
    write_atomically(out, &bytes)?;
    let per_vec = opts.code_bytes + opts.refine_bytes;
    eprintln!(
        "bank {}: {} layers {:?}, {n} vectors per layer, {per_vec} bytes per vector ({} scanned + {} refinement), {:.1} MB file; quantised and written in {:.1}s",
        out.display(),
        collected.layers.len(),
        collected.layers,
        opts.code_bytes,
        opts.refine_bytes,
        bytes.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({
            "bank": out.display().to_string(), "layers": collected.layers, "vectors_per_layer": n,
            "bytes_per_vector": per_vec, "file_bytes": bytes.len(), "sentences": col.stats.sentences,
            "tokens": col.stats.tokens, "truncated": col.stats.truncated,
        })
    );
    Ok(())
}

/// Runs `build-bank`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let m = load_model(&a.model)?;
    let n_layers = m.config.num_hidden_layers;
    let mut cfg = BuildConfig::paper(n_layers);
    if let Some(spec) = &a.layers {
        cfg.layers = crate::hidden_states::parse_layers(spec, n_layers + 1)?;
    }
    cfg.max_contexts = a.max_contexts;
    cfg.max_tokens = a.max_tokens.min(m.config.max_position_embeddings);
    cfg.batch_tokens = a.batch_tokens;
    cfg.validate(n_layers)?;
    let shard = a.shard.as_deref().map(parse_shard).transpose()?.unwrap_or((0, 1));

    let bytes = std::fs::read(&a.corpus).with_context(|| format!("reading the corpus {}", a.corpus.display()))?;
    let mut corpus = Corpus::parse(&bytes)?;
    if let Some(n) = a.sentences {
        corpus.sentences.truncate(n);
    }
    eprintln!(
        "corpus {}: {} sentences ({} non-UTF-8 and {} empty lines skipped); bank layers {:?}",
        a.corpus.display(),
        corpus.sentences.len(),
        corpus.skipped_non_utf8,
        corpus.skipped_empty,
        cfg.layers
    );

    let ckpt = a.out.with_extension("ckpt");
    let mut col = match std::fs::File::open(&ckpt) {
        Ok(mut f) => {
            let c = Collector::load(&mut f)?;
            if c.config() != &cfg {
                bail!("checkpoint {} was made with other settings (layers, limits): delete it or use the same options", ckpt.display());
            }
            eprintln!("resuming from {} at sentence {}", ckpt.display(), c.next_sentence());
            c
        }
        Err(_) => Collector::new(cfg, m.config.hidden_size, shard)?,
    };

    let total = corpus.sentences.len() as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} sentences  {msg}  [{elapsed_precise} < {eta_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(col.next_sentence() as u64);
    let t0 = Instant::now();
    let tokens0 = col.stats.tokens;
    col.run(
        &m,
        &corpus,
        |stats, _| {
            let rate = (stats.tokens - tokens0) as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{rate:.0} tokens/s"));
        },
        a.checkpoint_every,
        |c| {
            bar.set_position(c.next_sentence() as u64);
            let mut buf = Vec::new();
            c.save(&mut buf)?;
            write_atomically(&ckpt, &buf).map_err(|e| latentlens::bank::BankError::Invalid(format!("checkpoint: {e:#}")))?;
            Ok(())
        },
    )?;
    bar.finish();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{} sentences, {} tokens in {secs:.1}s ({:.0} tokens/s); {} truncated to {} tokens, {} too short",
        col.stats.sentences,
        col.stats.tokens,
        (col.stats.tokens - tokens0) as f64 / secs.max(1e-9),
        col.stats.truncated,
        col.config().max_tokens,
        col.stats.too_short
    );

    if shard.1 > 1 {
        let mut buf = Vec::new();
        col.save(&mut buf)?;
        write_atomically(&a.out, &buf)?;
        eprintln!("shard {}/{} collection written to {} (merge with `latentlens merge-banks`)", shard.0, shard.1, a.out.display());
    } else {
        let desc = if a.quant.corpus_name.is_empty() { a.corpus.display().to_string() } else { a.quant.corpus_name.clone() };
        write_bank(&m, &col, &a.quant, &a.out, desc)?;
    }
    let _ = std::fs::remove_file(&ckpt);
    eprintln!("build time {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs `merge-banks`.
pub fn run_merge(a: MergeArgs) -> anyhow::Result<()> {
    let m = load_model(&a.model)?;
    let mut merged: Option<Collector> = None;
    for p in &a.parts {
        let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
        let c = Collector::load(&mut f).with_context(|| format!("reading {}", p.display()))?;
        match merged.as_mut() {
            None => merged = Some(c),
            Some(acc) => acc.merge(&c).with_context(|| format!("merging {}", p.display()))?,
        }
    }
    let col = merged.context("no parts given")?;
    let desc = if a.quant.corpus_name.is_empty() { format!("{} merged shards", a.parts.len()) } else { a.quant.corpus_name.clone() };
    write_bank(&m, &col, &a.quant, &a.out, desc)
}
