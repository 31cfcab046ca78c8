//! `latentlens scenes`: write generated scenes (PNG + one JSON line each with
//! caption and per-patch ground truth), the training and evaluation data of
//! the controlled VLM (`./build.sh train` feeds them to
//! `tools/train_connector.py`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use latentlens::eval::scenes::{generate, Catalog, SceneConfig};
use serde_json::json;

/// Arguments of `latentlens scenes`.
#[derive(clap::Args)]
pub struct Args {
    /// Unpacked `emoji-datasource-google` package directory (emoji.json, img/google/64).
    #[arg(long)]
    emoji: PathBuf,
    /// Output directory (created): `NNNNNN.png` and `scenes.jsonl`.
    #[arg(long, required_unless_present = "bundle")]
    out: Option<PathBuf>,
    /// Instead of scenes, write the artwork of every object kind into one file for the
    /// browser (the page's "generate a scene"; read by `SceneMaker.fromBundle`).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Number of scenes.
    #[arg(long, default_value_t = 100)]
    n: u64,
    /// Seed of the first scene; scene i uses seed `seed + i`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Largest number of scenes one call writes.
const MAX_SCENES: u64 = 1_000_000;

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.n <= MAX_SCENES, "--n {} is more than {MAX_SCENES}", args.n);
    let catalog = Catalog::from_dir(&args.emoji)?;
    eprintln!("{} object kinds loaded, {} skipped {:?}", catalog.kinds.len(), catalog.skipped.len(), catalog.skipped);
    if let Some(path) = &args.bundle {
        let bytes = catalog.to_bundle()?;
        std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote the artwork of {} kinds to {} ({:.0} kB)", catalog.kinds.len(), path.display(), bytes.len() as f64 / 1e3);
        return Ok(());
    }
    let out = args.out.context("--out is required (or --bundle)")?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut jsonl = std::io::BufWriter::new(std::fs::File::create(out.join("scenes.jsonl"))?);
    let cfg = SceneConfig::default();
    for i in 0..args.n {
        let seed = args.seed + i;
        let scene = generate(&catalog, seed, &cfg)?;
        let file = format!("{seed:07}.png");
        image::save_buffer(out.join(&file), &scene.rgb, scene.size, scene.size, image::ExtendedColorType::Rgb8)
            .with_context(|| format!("writing {file}"))?;
        let nouns: Vec<&str> = scene.objects.iter().map(|o| o.noun.as_str()).collect();
        let words: Vec<String> = latentlens::eval::scenes::object_words(&catalog, &scene).into_iter().collect();
        let line = json!({
            "seed": seed,
            "image": file,
            "caption": scene.caption,
            "objects": nouns,
            "object_words": words,
            "patches": scene.patches.iter().map(|p| json!({"objects": p.objects, "background": p.background})).collect::<Vec<_>>(),
        });
        writeln!(jsonl, "{line}")?;
    }
    jsonl.flush()?;
    eprintln!("wrote {} scenes to {}", args.n, out.display());
    Ok(())
}
