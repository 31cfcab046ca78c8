//! `latentlens inspect`: explain every visual token (or, for a text model,
//! every token of `--text`) at the chosen layers with LatentLens,
//! EmbeddingLens and LogitLens. A readable table by default, a versioned
//! JSON document with `--json`, and the Mid-Layer Leap summary (for each
//! query layer, how often the top-1 LatentLens neighbour comes from each
//! bank layer).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use latentlens::lens::{EmbeddingLens, LatentLens, LogitLens, Method, Neighbour};
use latentlens::model::{HiddenStates, LoadedTextModel, TextModel, Tokenizer};
use serde_json::json;

/// Version of the JSON document written by `--json`.
pub const INSPECT_FORMAT: &str = "latentlens-inspect-v1";

/// Arguments of `latentlens inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The model: a .gguf file or an HF directory (text model, or a VLM with an image).
    #[arg(long)]
    model: PathBuf,
    /// The bank built for this model (needed for the latent method): a file, or an
    /// `http://` URL read with Range requests.
    #[arg(long)]
    bank: Option<PathBuf>,
    /// The image to inspect (vision-language models).
    image: Option<PathBuf>,
    /// Text to inspect instead of an image (text models: every token is a query).
    #[arg(long)]
    text: Option<String>,
    /// Prompt that follows the image (vision-language models).
    #[arg(long, default_value = "Describe this image.")]
    prompt: String,
    /// Query layers: `all`, or a list like `0,8,16` or `4-8`.
    #[arg(long, default_value = "all")]
    layers: String,
    /// Neighbours per method.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Methods, comma-separated: latent, embedding, logit.
    #[arg(long, default_value = "latent,embedding,logit")]
    method: String,
    /// Write the versioned JSON document to stdout instead of the table.
    #[arg(long)]
    json: bool,
}

pub(crate) struct Inputs {
    hs: HiddenStates,
    /// Rows explained: visual tokens, or every text token.
    rows: Vec<usize>,
    /// What each row is, for the table: `r3c4` or the token text.
    labels: Vec<String>,
    kind: &'static str,
}

fn text_inputs(m: &LoadedTextModel, text: &str) -> anyhow::Result<Inputs> {
    let hs = m.hidden_states_text(text)?;
    let rows: Vec<usize> = (0..hs.num_tokens()).collect();
    let labels = hs.token_ids.iter().map(|&id| format!("{:?}", m.tokenizer.token_text(id).unwrap_or_default())).collect();
    Ok(Inputs { hs, rows, labels, kind: "text" })
}

pub(crate) struct Model {
    text: TextModel,
    tokenizer: Tokenizer,
    name: String,
    fingerprint: String,
}

fn load(args: &Args) -> anyhow::Result<(Model, Inputs)> {
    if let Some(img) = &args.image {
        if !img.exists() {
            bail!("image {} does not exist", img.display());
        }
        return crate::inspect_vlm::load(&args.model, img, &args.prompt);
    }
    let text = args.text.as_deref().context("give an IMAGE (vision-language model) or --text TEXT (text model)")?;
    let m = LoadedTextModel::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let inputs = text_inputs(&m, text)?;
    let fingerprint = m.fingerprint()?;
    Ok((Model { text: m.model, tokenizer: m.tokenizer, name: m.source, fingerprint }, inputs))
}

pub(crate) fn model_parts(text: TextModel, tokenizer: Tokenizer, name: String, fingerprint: String) -> Model {
    Model { text, tokenizer, name, fingerprint }
}

pub(crate) fn image_inputs(hs: HiddenStates) -> Inputs {
    let rows = hs.visual_rows.clone();
    let labels = hs.patches.iter().map(|p| format!("t{}r{}c{}", p.tile, p.row, p.col)).collect();
    Inputs { hs, rows, labels, kind: "image" }
}

/// Runs `inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let methods: Vec<Method> = args
        .method
        .split(',')
        .map(|s| Method::parse(s).with_context(|| format!("unknown method `{s}`: use latent, embedding, logit")))
        .collect::<anyhow::Result<_>>()?;
    if args.k == 0 || args.k > 1000 {
        bail!("--k {}: ask for between 1 and 1000 neighbours", args.k);
    }
    let (model, inputs) = load(&args)?;
    let n_states = inputs.hs.num_layers();
    let layers = crate::hidden_states::parse_layers(&args.layers, n_states)?;
    if inputs.rows.is_empty() {
        bail!("the input has no visual tokens to explain");
    }

    let latent = if methods.contains(&Method::Latent) {
        let path = args.bank.as_ref().context("the latent method needs --bank FILE (or use --method embedding,logit)")?;
        let spec = path.to_string_lossy();
        let lens = if spec.starts_with("http://") || spec.starts_with("https://") {
            // A bank URL: HTTP Range requests (plain http:// natively).
            futures::executor::block_on(async {
                let reader = latentlens::bank::BankReader::open_url(&spec, latentlens::fetch::FetchOptions::default()).await?;
                LatentLens::load(reader).await
            })
            .with_context(|| format!("opening the bank {spec}"))?
        } else {
            LatentLens::open_file(path).with_context(|| format!("opening the bank {}", path.display()))?
        };
        lens.check_model(&model.name, &model.fingerprint)?;
        Some(lens)
    } else {
        None
    };
    let emb = if methods.contains(&Method::Embedding) { Some(EmbeddingLens::new(&model.text)?) } else { None };
    let d = inputs.hs.hidden_size;

    // results[layer][method] = per row neighbours
    let mut results: BTreeMap<usize, BTreeMap<&'static str, Vec<Vec<Neighbour>>>> = BTreeMap::new();
    for &l in &layers {
        let mut q = Vec::with_capacity(inputs.rows.len() * d);
        for &r in &inputs.rows {
            q.extend_from_slice(inputs.hs.row(l, r).context("hidden state row out of range")?);
        }
        let per = results.entry(l).or_default();
        if let Some(lens) = &latent {
            per.insert("latent", futures::executor::block_on(lens.explain(&q, args.k))?);
        }
        if let Some(e) = &emb {
            per.insert("embedding", e.explain(&model.tokenizer, &q, args.k)?);
        }
        if methods.contains(&Method::Logit) {
            let normed = l + 1 == n_states;
            per.insert("logit", LogitLens::explain(&model.text, &model.tokenizer, &q, normed, args.k)?);
        }
    }

    // Mid-Layer Leap: query layer -> bank layer of top-1 latent hit -> count.
    let mut leap: BTreeMap<usize, BTreeMap<usize, usize>> = BTreeMap::new();
    for (l, per) in &results {
        if let Some(lists) = per.get("latent") {
            for n in lists.iter().filter_map(|v| v.first()) {
                if let Some(b) = n.bank_layer {
                    *leap.entry(*l).or_default().entry(b).or_default() += 1;
                }
            }
        }
    }

    if args.json {
        let items: Vec<_> = inputs
            .rows
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let per_layer: BTreeMap<String, serde_json::Value> = results
                    .iter()
                    .map(|(l, per)| {
                        let m: BTreeMap<&str, &Vec<Neighbour>> = per.iter().map(|(k, v)| (*k, &v[i])).collect();
                        (l.to_string(), json!(m))
                    })
                    .collect();
                json!({
                    "index": i, "token_row": r, "token_id": inputs.hs.token_ids.get(r),
                    "label": inputs.labels[i], "geometry": inputs.hs.patches.get(i), "layers": per_layer,
                })
            })
            .collect();
        let doc = json!({
            "format": INSPECT_FORMAT, "model": model.name, "fingerprint": model.fingerprint,
            "bank": args.bank.as_ref().map(|p| p.display().to_string()),
            "bank_layers": latent.as_ref().map(|l| l.bank_layers()),
            "input": inputs.kind, "image": args.image.as_ref().map(|p| p.display().to_string()),
            "text": args.text, "num_states": n_states, "query_layers": layers, "k": args.k,
            "items": items,
            "leap": leap.iter().map(|(l, h)| (l.to_string(), h.iter().map(|(b, c)| (b.to_string(), *c)).collect::<BTreeMap<_, _>>())).collect::<BTreeMap<_, _>>(),
        });
        println!("{}", serde_json::to_string(&doc)?);
        return Ok(());
    }

    let words = |v: &Vec<Neighbour>| v.iter().map(|n| n.word.clone()).collect::<Vec<_>>().join(", ");
    println!("{} ({} {}s, {} states)", model.name, inputs.rows.len(), if inputs.kind == "image" { "visual token" } else { "token" }, n_states);
    for (i, label) in inputs.labels.iter().enumerate() {
        for (l, per) in &results {
            let cols: Vec<String> = ["latent", "embedding", "logit"]
                .iter()
                .filter_map(|m| per.get(m).map(|v| format!("{m}: {}", words(&v[i]))))
                .collect();
            println!("{label:>12}  L{l:<3} {}", cols.join("  |  "));
        }
    }
    if !leap.is_empty() {
        let bank_layers = latent.as_ref().map(|l| l.bank_layers()).unwrap_or_default();
        println!("\nMid-Layer Leap: share of top-1 LatentLens neighbours per bank layer");
        println!("query \\ bank  {}", bank_layers.iter().map(|b| format!("{b:>6}")).collect::<String>());
        for (l, h) in &leap {
            let total: usize = h.values().sum();
            let cells: String = bank_layers
                .iter()
                .map(|b| format!("{:>5.0}%", 100.0 * *h.get(b).unwrap_or(&0) as f64 / total.max(1) as f64))
                .collect();
            println!("L{l:<11} {cells}");
        }
    }
    Ok(())
}
