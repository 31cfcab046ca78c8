//! Bank builder sampling rules on SmolLM2 over real WordNet sentences: the
//! paper's limits, late positions preferred, rows that line up across layers
//! and equal the model's hidden states of the sentence run alone, and exact
//! resume / shard + merge (bottom-k sampling is order-independent).

mod common;

use latentlens::bank::builder::{default_bank_layers, BuildConfig, Collected, Collector, Corpus};
use latentlens::model::LoadedTextModel;

fn small_rules(num_layers: usize) -> BuildConfig {
    BuildConfig { max_contexts: 3, batch_tokens: 200, ..BuildConfig::paper(num_layers) }
}

fn corpus() -> Corpus {
    Corpus::parse(common::wordnet_sentences(80).join("\n").as_bytes()).unwrap()
}

fn build(m: &LoadedTextModel, cfg: &BuildConfig, shard: (u32, u32), c: &Corpus) -> Collector {
    let mut col = Collector::new(cfg.clone(), m.config.hidden_size, shard).unwrap();
    col.run(m, c, |_, _| {}, 0, |_| Ok(())).unwrap();
    col
}

/// Same rows and sentences exactly; vectors equal up to the float noise of
/// different batch packing (matmul summation order), stored as f16.
fn same(a: &Collected, b: &Collected) {
    assert_eq!(a.rows, b.rows);
    assert_eq!(a.sentences, b.sentences);
    for (x, y) in a.vectors.iter().zip(&b.vectors) {
        assert_eq!(x.len(), y.len());
        let worst = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(worst < 2e-3, "vectors differ by up to {worst}");
    }
}

#[test]
fn default_layers_follow_the_paper_clipped_to_the_model() {
    assert_eq!(default_bank_layers(32), vec![1, 2, 4, 8, 16, 24, 30, 31]);
    assert_eq!(default_bank_layers(30), vec![1, 2, 4, 8, 16, 24, 28, 29]);
    assert_eq!(default_bank_layers(4), vec![1, 2, 3]);
    let mut bad = BuildConfig::paper(30);
    bad.layers = vec![1, 40];
    assert!(bad.validate(30).unwrap_err().to_string().contains("outside the model"));
}

#[test]
fn corpus_skips_bad_lines_and_refuses_empty_input() {
    let c = Corpus::parse(b"a red fox\n\xff\xfe broken\n\n  \nthe cat sat\n").unwrap();
    assert_eq!(c.sentences, vec!["a red fox", "the cat sat"]);
    assert_eq!((c.skipped_non_utf8, c.skipped_empty), (1, 2));
    let e = Corpus::parse(b"\n\n").unwrap_err().to_string();
    assert!(e.contains("no sentences"), "{e}");
}

#[test]
fn kept_rows_obey_the_rules_and_are_the_models_hidden_states() {
    let Some(m) = common::smollm2() else { return };
    let cfg = small_rules(m.config.num_hidden_layers);
    let c = corpus();
    let got = build(m, &cfg, (0, 1), &c).finish();
    let d = m.config.hidden_size;
    assert!(!got.rows.is_empty());
    assert_eq!(got.vectors.len(), cfg.layers.len());
    let mut per_token = std::collections::HashMap::<u32, Vec<u16>>::new();
    for r in &got.rows {
        per_token.entry(r.token).or_default().push(r.position);
    }
    for (tok, pos) in &per_token {
        assert!(pos.len() <= cfg.max_contexts, "token {tok}: {} rows", pos.len());
        assert!(pos.iter().all(|&p| p >= 2), "token {tok}: position < 2 kept");
        let late = pos.iter().filter(|&&p| p >= 10).count();
        // Early positions only top up tokens with too few late contexts.
        if late < pos.len() {
            assert_eq!(pos.len() - late, pos.len().min(cfg.max_contexts) - late);
        }
    }
    // Some tokens are frequent enough to hit the cap (so eviction ran).
    assert!(per_token.values().any(|p| p.len() == cfg.max_contexts));
    // A few rows: the token's span in the sentence, and the vector equals the
    // hidden state of the sentence run alone (normalised), at every bank layer.
    for (i, r) in got.rows.iter().enumerate().step_by(got.rows.len() / 7 + 1) {
        let s = &got.sentences[r.corpus_sentence as usize];
        let piece = &s[r.start as usize..r.end as usize];
        assert_eq!(piece.trim(), m.tokenizer.token_text(r.token).unwrap().trim(), "span of row {i} in {s:?}");
        let hs = m.hidden_states_text(s).unwrap();
        assert_eq!(hs.token_ids[r.position as usize], r.token);
        for (j, &l) in cfg.layers.iter().enumerate() {
            let want = hs.row(l, r.position as usize).unwrap();
            let norm = want.iter().map(|x| x * x).sum::<f32>().sqrt();
            let ours = &got.vectors[j][i * d..(i + 1) * d];
            let cos: f32 = ours.iter().zip(want).map(|(a, b)| a * b / norm).sum();
            assert!(cos > 0.999, "row {i} layer {l}: cosine {cos} with the sentence run alone");
        }
    }
}

#[test]
fn resume_from_checkpoint_and_shard_merge_equal_one_uninterrupted_build() {
    let Some(m) = common::smollm2() else { return };
    let cfg = small_rules(m.config.num_hidden_layers);
    let c = corpus();
    let whole = build(m, &cfg, (0, 1), &c).finish();

    // Interrupted: stop after the first checkpoint, save, load, continue.
    let mut first = Collector::new(cfg.clone(), m.config.hidden_size, (0, 1)).unwrap();
    let half = Corpus { sentences: c.sentences[..35].to_vec(), ..Corpus::default() };
    first.run(m, &half, |_, _| {}, 0, |_| Ok(())).unwrap();
    let mut bytes = Vec::new();
    first.save(&mut bytes).unwrap();
    let mut resumed = Collector::load(&mut bytes.as_slice()).unwrap();
    assert_eq!(resumed.next_sentence(), 35);
    resumed.run(m, &c, |_, _| {}, 0, |_| Ok(())).unwrap();
    same(&resumed.finish(), &whole);

    // Two shards, merged.
    let mut a = build(m, &cfg, (0, 2), &c);
    let b = build(m, &cfg, (1, 2), &c);
    a.merge(&b).unwrap();
    same(&a.finish(), &whole);
    // Truncated checkpoints are refused with a message.
    let e = Collector::load(&mut &bytes[..bytes.len() - 3]).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}
