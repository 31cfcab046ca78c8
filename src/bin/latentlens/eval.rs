//! `latentlens eval`: ground-truth interpretability of the controlled VLM.
//!
//! Generates scenes (seeds disjoint from the training scenes), runs the
//! controlled VLM, samples `--patches` visual tokens whose grid cell is
//! covered by an object, and asks LatentLens, EmbeddingLens and LogitLens
//! for their top-`k` words at each query layer. A patch is interpretable for
//! a lens when one of its words matches the patch's ground truth
//! ([`latentlens::eval::judge`]). Prints a table per query layer and lens,
//! the means, the Mid-Layer Leap (bank layer of the top-1 LatentLens hit per
//! query layer), writes an SVG plot with `--out`, and ends with one JSON
//! object. `--judge export` also writes the paper's LLM-judge inputs per
//! sampled patch (image with a red box around the 3×3 region, the crop, the
//! candidate words, the prompt).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use latentlens::eval::judge::Judge;
use latentlens::eval::scenes::{generate, Catalog, Rng, SceneConfig};
use latentlens::eval::wordnet::WordNet;
use latentlens::lens::{EmbeddingLens, LatentLens, LogitLens, Neighbour};
use latentlens::model::controlled::ControlledVlm;
use serde_json::json;

/// Arguments of `latentlens eval`.
#[derive(clap::Args)]
pub struct Args {
    /// Controlled VLM config (`controlled.json`).
    #[arg(long, default_value = "models/controlled-v1/controlled.json")]
    model: PathBuf,
    /// The SmolLM2 bank (built from the general corpus).
    #[arg(long)]
    bank: PathBuf,
    /// Unpacked `emoji-datasource-google` package directory.
    #[arg(long)]
    emoji: PathBuf,
    /// WordNet database directory.
    #[arg(long, default_value = "/usr/share/wordnet")]
    wordnet: PathBuf,
    /// Query layers (hidden-state indices, 0 = connector output).
    #[arg(long, default_value = "0,1,2,4,8,16,24,28,29")]
    layers: String,
    /// Object-covered patches sampled (the same patches at every layer).
    #[arg(long, default_value_t = 300)]
    patches: usize,
    /// Words per lens.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// First scene seed (training used 0..; held-out captions 900000..).
    #[arg(long, default_value_t = 2_000_000)]
    seed: u64,
    /// `auto` (WordNet judge) or `export` (also write the LLM-judge inputs to --out).
    #[arg(long, default_value = "auto")]
    judge: String,
    /// Output directory for the plot, the per-patch results and the judge export.
    #[arg(long)]
    out: Option<PathBuf>,
}

const METHODS: [&str; 3] = ["latent", "embedding", "logit"];
/// Largest number of scenes generated to find enough covered patches.
const MAX_SCENES: usize = 5000;

struct Sample {
    scene: usize,
    cell: usize,
    /// Query vectors per requested layer.
    vecs: Vec<Vec<f32>>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.k == 0 || args.k > 100 {
        bail!("--k {}: between 1 and 100", args.k);
    }
    if args.patches == 0 || args.patches > 100_000 {
        bail!("--patches {}: between 1 and 100000", args.patches);
    }
    let export = match args.judge.as_str() {
        "auto" => false,
        "export" => true,
        other => bail!("--judge {other}: use auto or export"),
    };
    if export && args.out.is_none() {
        bail!("--judge export needs --out DIR");
    }
    let vlm = ControlledVlm::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let n_states = vlm.text.config.num_hidden_layers + 1;
    let layers = crate::hidden_states::parse_layers(&args.layers, n_states)
        .with_context(|| format!("--layers {}: the model has hidden states 0..={}", args.layers, n_states - 1))?;
    let lens = LatentLens::open_file(&args.bank).with_context(|| format!("opening the bank {}", args.bank.display()))?;
    lens.check_model(&vlm.source, &vlm.fingerprint()?)?;
    let wn = WordNet::open(&args.wordnet)?;
    let judge = Judge::new(&wn);
    let catalog = Catalog::from_dir(&args.emoji)?;
    eprintln!("{} object kinds ({} skipped)", catalog.kinds.len(), catalog.skipped.len());

    // Scenes and a pool of object-covered cells; then a seeded sample.
    let cfg = SceneConfig::default();
    let mut scenes = Vec::new();
    let mut pool: Vec<Sample> = Vec::new();
    let want_pool = args.patches * 3;
    let pb = indicatif::ProgressBar::new(want_pool as u64);
    pb.set_style(indicatif::ProgressStyle::with_template("scenes {pos}/{len} covered patches [{elapsed}] {wide_bar} {eta}")?);
    while pool.len() < want_pool {
        if scenes.len() >= MAX_SCENES {
            bail!("{MAX_SCENES} scenes gave only {} object-covered patches", pool.len());
        }
        let scene = generate(&catalog, args.seed + scenes.len() as u64, &cfg)?;
        let img = latentlens::image::RgbImage::from_raw(scene.size, scene.size, scene.rgb.clone())?;
        let hs = vlm.hidden_states(&img)?;
        for (cell, p) in scene.patches.iter().enumerate() {
            if p.objects.is_empty() {
                continue;
            }
            let row = *hs.visual_rows.get(cell).context("visual row")?;
            let vecs = layers.iter().map(|&l| hs.row(l, row).map(<[f32]>::to_vec).context("row")).collect::<anyhow::Result<_>>()?;
            pool.push(Sample { scene: scenes.len(), cell, vecs });
        }
        pb.set_position(pool.len().min(want_pool) as u64);
        scenes.push(scene);
    }
    pb.finish_and_clear();
    let mut rng = Rng::new(args.seed ^ 0xE7A1);
    for i in (1..pool.len()).rev() {
        pool.swap(i, rng.below(i + 1));
    }
    pool.truncate(args.patches);
    eprintln!("{} scenes, {} patches sampled", scenes.len(), pool.len());

    let emb = EmbeddingLens::new(vlm.text_model())?;
    let tok = vlm.tokenizer();
    let d = vlm.text.config.hidden_size;
    // hits[layer][method] = per sample: (words, matched)
    let mut results: BTreeMap<usize, BTreeMap<&str, Vec<(Vec<Neighbour>, Option<String>)>>> = BTreeMap::new();
    let mut leap: BTreeMap<usize, BTreeMap<usize, usize>> = BTreeMap::new();
    let accepted: Vec<_> = pool.iter().map(|s| judge.accepted(&scenes[s.scene].patches[s.cell])).collect();
    for (li, &l) in layers.iter().enumerate() {
        let mut q = Vec::with_capacity(pool.len() * d);
        for s in &pool {
            q.extend_from_slice(&s.vecs[li]);
        }
        let lists: [Vec<Vec<Neighbour>>; 3] = [
            futures::executor::block_on(lens.explain(&q, args.k))?,
            emb.explain(tok, &q, args.k)?,
            LogitLens::explain(vlm.text_model(), tok, &q, l + 1 == n_states, args.k)?,
        ];
        for (m, list) in METHODS.iter().zip(lists) {
            let judged = list
                .into_iter()
                .zip(&accepted)
                .map(|(ns, acc)| {
                    let hit = ns.iter().find_map(|n| judge.matches(&n.word, acc));
                    (ns, hit)
                })
                .collect::<Vec<_>>();
            if *m == "latent" {
                for (ns, _) in &judged {
                    if let Some(b) = ns.first().and_then(|n| n.bank_layer) {
                        *leap.entry(l).or_default().entry(b).or_default() += 1;
                    }
                }
            }
            results.entry(l).or_default().insert(m, judged);
        }
        eprintln!("layer {l} done");
    }

    // Table.
    let rate = |v: &Vec<(Vec<Neighbour>, Option<String>)>| v.iter().filter(|x| x.1.is_some()).count() as f64 / v.len().max(1) as f64;
    println!("Interpretable patches (top-{} word matches the ground truth), {} object-covered patches from {} scenes", args.k, pool.len(), scenes.len());
    println!("{:>6} {:>10} {:>10} {:>10}", "layer", "latent", "embedding", "logit");
    let mut per_layer = BTreeMap::new();
    let mut sums = [0f64; 3];
    for (l, per) in &results {
        let r: Vec<f64> = METHODS.iter().map(|m| per.get(m).map_or(0.0, rate)).collect();
        println!("{:>6} {:>9.1}% {:>9.1}% {:>9.1}%", l, 100.0 * r[0], 100.0 * r[1], 100.0 * r[2]);
        for i in 0..3 {
            sums[i] += r[i];
        }
        per_layer.insert(l.to_string(), json!({"latent": r[0], "embedding": r[1], "logit": r[2]}));
    }
    let n = results.len().max(1) as f64;
    let means = [sums[0] / n, sums[1] / n, sums[2] / n];
    println!("{:>6} {:>9.1}% {:>9.1}% {:>9.1}%", "mean", 100.0 * means[0], 100.0 * means[1], 100.0 * means[2]);
    let bank_layers = lens.bank_layers();
    println!("\nMid-Layer Leap: share of top-1 LatentLens neighbours per bank layer");
    println!("query \\ bank  {}", bank_layers.iter().map(|b| format!("{b:>6}")).collect::<String>());
    for (l, h) in &leap {
        let total: usize = h.values().sum();
        let cells: String =
            bank_layers.iter().map(|b| format!("{:>5.0}%", 100.0 * *h.get(b).unwrap_or(&0) as f64 / total.max(1) as f64)).collect();
        println!("L{l:<11} {cells}");
    }
    // Examples.
    println!("\nExamples (layer {}):", layers.get(layers.len() / 2).copied().unwrap_or(0));
    let mid = layers.get(layers.len() / 2).copied().unwrap_or(0);
    for (i, s) in pool.iter().enumerate().take(6) {
        let p = &scenes[s.scene].patches[s.cell];
        let words = |m: &str| {
            results[&mid][m][i].0.iter().map(|n| n.word.clone()).collect::<Vec<_>>().join(", ")
        };
        println!("  scene {} r{}c{} shows {:?} on {:?}", scenes[s.scene].seed, p.row, p.col, p.objects, p.background);
        for m in METHODS {
            println!("    {m:>9}: {}{}", words(m), results[&mid][m][i].1.as_ref().map(|w| format!("  ✓ {w}")).unwrap_or_default());
        }
    }

    let leap_json: BTreeMap<String, BTreeMap<String, usize>> =
        leap.iter().map(|(l, h)| (l.to_string(), h.iter().map(|(b, c)| (b.to_string(), *c)).collect())).collect();
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("eval.svg"), svg_plot(&results, &leap, &bank_layers, rate))?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(out.join("patches.jsonl"))?);
        for (i, s) in pool.iter().enumerate() {
            let sc = &scenes[s.scene];
            let p = &sc.patches[s.cell];
            let per: BTreeMap<String, _> = results
                .iter()
                .map(|(l, per)| {
                    let m: BTreeMap<&str, _> = per
                        .iter()
                        .map(|(m, v)| (*m, json!({"words": v[i].0.iter().map(|n| &n.word).collect::<Vec<_>>(), "match": v[i].1})))
                        .collect();
                    (l.to_string(), m)
                })
                .collect();
            writeln!(f, "{}", json!({"scene_seed": sc.seed, "row": p.row, "col": p.col, "objects": p.objects, "background": p.background, "layers": per}))?;
        }
        if export {
            crate::eval_export::write(out, &scenes, &pool.iter().map(|s| (s.scene, s.cell)).collect::<Vec<_>>(), &results, args.k)?;
        }
        eprintln!("wrote {}", out.display());
    }
    println!(
        "{}",
        json!({
            "latent_mean": means[0], "embedding_mean": means[1], "logit_mean": means[2],
            "per_layer": per_layer, "leap": leap_json, "patches": pool.len(), "scenes": scenes.len(),
            "k": args.k, "bank_layers": bank_layers, "model": vlm.source,
        })
    );
    Ok(())
}

type Results<'a> = BTreeMap<usize, BTreeMap<&'a str, Vec<(Vec<Neighbour>, Option<String>)>>>;

/// Two panels: interpretability per layer per lens; the leap heat map.
fn svg_plot(
    results: &Results,
    leap: &BTreeMap<usize, BTreeMap<usize, usize>>,
    bank_layers: &[usize],
    rate: impl Fn(&Vec<(Vec<Neighbour>, Option<String>)>) -> f64,
) -> String {
    let (w, h, p) = (900.0, 380.0, 50.0);
    let pw = 400.0;
    let layers: Vec<usize> = results.keys().copied().collect();
    let nx = layers.len().max(2) as f64 - 1.0;
    let x = |i: usize| p + pw * i as f64 / nx;
    let y = |v: f64| h - p - (h - 2.0 * p) * v;
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11"><rect width="{w}" height="{h}" fill="white"/>"#);
    s += &format!(r#"<text x="{}" y="20" font-size="13" text-anchor="middle">interpretable patches per query layer</text>"#, p + pw / 2.0);
    s += &format!(r#"<line x1="{p}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{p}" y1="{p}" x2="{p}" y2="{}" stroke="black"/>"#, h - p, p + pw, h - p, h - p);
    for t in 0..=4 {
        let v = t as f64 / 4.0;
        s += &format!(r#"<text x="{}" y="{:.1}" text-anchor="end">{:.0}%</text>"#, p - 5.0, y(v) + 4.0, v * 100.0);
    }
    for (i, l) in layers.iter().enumerate() {
        s += &format!(r#"<text x="{:.1}" y="{}" text-anchor="middle">{l}</text>"#, x(i), h - p + 15.0);
    }
    for (m, col) in METHODS.iter().zip(["#d62728", "#1f77b4", "#2ca02c"]) {
        let pts: Vec<String> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{:.1},{:.1}", x(i), y(results[l].get(m).map_or(0.0, &rate))))
            .collect();
        s += &format!(r#"<polyline fill="none" stroke="{col}" stroke-width="2" points="{}"/>"#, pts.join(" "));
    }
    for (i, (m, col)) in METHODS.iter().zip(["#d62728", "#1f77b4", "#2ca02c"]).enumerate() {
        s += &format!(r#"<text x="{}" y="{}" fill="{col}">{m}</text>"#, p + 10.0, p + 14.0 * i as f64);
    }
    // Leap heat map.
    let x0 = 540.0;
    let cw = 300.0 / bank_layers.len().max(1) as f64;
    let ch = (h - 2.0 * p) / layers.len().max(1) as f64;
    s += &format!(r#"<text x="{}" y="20" font-size="13" text-anchor="middle">Mid-Layer Leap: bank layer of top-1 hit</text>"#, x0 + 150.0);
    for (r, l) in layers.iter().enumerate() {
        let hrow = leap.get(l);
        let total: usize = hrow.map_or(0, |m| m.values().sum());
        s += &format!(r#"<text x="{}" y="{:.1}" text-anchor="end">q{l}</text>"#, x0 - 4.0, p + ch * (r as f64 + 0.6));
        for (c, b) in bank_layers.iter().enumerate() {
            let v = hrow.and_then(|m| m.get(b)).copied().unwrap_or(0) as f64 / total.max(1) as f64;
            let shade = (255.0 * (1.0 - v)).round();
            s += &format!(
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="rgb(255,{shade},{shade})" stroke="#ccc"/>"##,
                x0 + cw * c as f64,
                p + ch * r as f64,
                cw,
                ch
            );
        }
    }
    for (c, b) in bank_layers.iter().enumerate() {
        s += &format!(r#"<text x="{:.1}" y="{}" text-anchor="middle">b{b}</text>"#, x0 + cw * (c as f64 + 0.5), h - p + 15.0);
    }
    s += "</svg>";
    s
}
