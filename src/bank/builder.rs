//! Bank builder, first half: run the model's own LLM over a corpus and keep
//! contextual vectors by the LatentLens paper's rules (Krojer et al., 2026,
//! §3): bank layers 1, 2, 4, 8, 16, 24, L-2, L-1 (clipped, deduplicated);
//! at most 20 contexts per token per layer, the same keep decision for every
//! layer so rows line up; positions 0–1 skipped; positions ≥ 10 preferred,
//! with a fallback pool for positions 2–9.
//!
//! Sampling is *bottom-k* (priority) sampling: every candidate context gets a
//! pseudo-random key from a hash of (seed, sentence, position), and a token
//! keeps the `max_contexts` candidates with the smallest keys — a uniform
//! sample without replacement, like a reservoir, but independent of the order
//! in which sentences are seen. That makes three things exact rather than
//! approximate: resuming from a checkpoint, splitting the corpus into shards
//! (`--shard i/n`), and merging shards (union, keep the smallest keys).
//!
//! The second half (train the quantizer on all rows, encode, write the bank
//! file) is [`crate::bank::assemble`].

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

use half::f16;

use super::BankError;
use crate::model::{LoadedTextModel, ModelError};

/// The paper's bank layers for an `num_layers`-layer LLM: hidden-state
/// indices 1, 2, 4, 8, 16, 24, L-2, L-1, clipped to `1..L` and deduplicated.
pub fn default_bank_layers(num_layers: usize) -> Vec<usize> {
    let l = num_layers;
    let mut v: Vec<usize> = [1, 2, 4, 8, 16, 24, l.saturating_sub(2), l.saturating_sub(1)]
        .into_iter()
        .filter(|&i| i >= 1 && i < l)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Sampling and batching rules.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct BuildConfig {
    /// Hidden-state indices to keep (see [`crate::model::HiddenStates`]).
    pub layers: Vec<usize>,
    /// At most this many contexts per token (per layer; rows line up).
    pub max_contexts: usize,
    /// Positions `< skip_positions` are never kept (paper: 2).
    pub skip_positions: usize,
    /// Positions `>= preferred_from` are preferred (paper: 10); earlier ones
    /// only fill tokens that have too few late contexts.
    pub preferred_from: usize,
    /// Sentences longer than this many tokens are truncated (and counted).
    pub max_tokens: usize,
    /// Tokens per packed forward batch.
    pub batch_tokens: usize,
    /// Seed of the sampling keys.
    pub seed: u64,
}

impl BuildConfig {
    /// The paper's rules for a model with `num_layers` layers.
    pub fn paper(num_layers: usize) -> Self {
        Self {
            layers: default_bank_layers(num_layers),
            max_contexts: 20,
            skip_positions: 2,
            preferred_from: 10,
            max_tokens: 128,
            batch_tokens: 512,
            seed: 0x1a7e_171e_5eed,
        }
    }

    /// Checks the rules against a model with `num_layers` layers.
    pub fn validate(&self, num_layers: usize) -> Result<(), BankError> {
        if self.layers.is_empty() {
            return Err(BankError::Invalid("no bank layers given".into()));
        }
        if let Some(&bad) = self.layers.iter().find(|&&l| l > num_layers) {
            return Err(BankError::Invalid(format!(
                "bank layer {bad} is outside the model (hidden states 0..={num_layers}); pick layers within range"
            )));
        }
        if self.layers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(BankError::Invalid(format!("bank layers {:?} must be strictly increasing", self.layers)));
        }
        if self.max_contexts == 0 || self.max_tokens < 2 || self.batch_tokens == 0 {
            return Err(BankError::Invalid("max_contexts, batch_tokens must be > 0 and max_tokens >= 2".into()));
        }
        Ok(())
    }
}

/// A corpus: one sentence per line, UTF-8.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// The sentences, in file order.
    pub sentences: Vec<String>,
    /// Lines that were not valid UTF-8 (skipped).
    pub skipped_non_utf8: usize,
    /// Empty or whitespace-only lines (skipped).
    pub skipped_empty: usize,
}

impl Corpus {
    /// Parses a one-sentence-per-line file (also the Visual Genome phrase
    /// format). Non-UTF-8 and empty lines are skipped and counted; a corpus
    /// with no sentence at all is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, BankError> {
        let mut c = Corpus::default();
        for line in bytes.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match std::str::from_utf8(line) {
                Ok(s) if s.trim().is_empty() => c.skipped_empty += 1,
                Ok(s) => c.sentences.push(s.trim().to_string()),
                Err(_) => c.skipped_non_utf8 += 1,
            }
        }
        if bytes.last() == Some(&b'\n') {
            c.skipped_empty = c.skipped_empty.saturating_sub(1); // the final newline
        }
        if c.sentences.is_empty() {
            return Err(BankError::Invalid(format!(
                "the corpus has no sentences ({} non-UTF-8 and {} empty lines): give a UTF-8 text file with one sentence per line",
                c.skipped_non_utf8, c.skipped_empty
            )));
        }
        Ok(c)
    }
}

/// One candidate context of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ctx {
    key: u64,
    sentence: u32,
    position: u16,
    token: u32,
    /// Byte span of the token in its sentence.
    start: u32,
    end: u32,
    /// Slot in the vector slab.
    slot: u32,
}

/// Bottom-k pools of one token: late positions (preferred) and early ones.
#[derive(Debug, Default, Clone)]
struct Pools {
    late: Vec<Ctx>,
    early: Vec<Ctx>,
}

/// SplitMix64 finaliser: the sampling key of a context.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where a bottom-k pool would put a new key: `Some(None)` = append,
/// `Some(Some(i))` = replace entry `i` (the largest key), `None` = reject.
fn admit(pool: &[Ctx], cap: usize, key: u64) -> Option<Option<usize>> {
    if pool.len() < cap {
        return Some(None);
    }
    let (i, max) = pool.iter().enumerate().max_by_key(|(_, c)| c.key)?;
    (key < max.key).then_some(Some(i))
}

/// The state of a build: kept contexts and their vectors (f16, all bank
/// layers), plus counters. Checkpointable and mergeable.
#[derive(Debug, Clone)]
pub struct Collector {
    cfg: BuildConfig,
    d: usize,
    pools: HashMap<u32, Pools>,
    /// `[slots, layers, d]` f16.
    slab: Vec<f16>,
    free: Vec<u32>,
    /// Text of sentences referenced by kept contexts (global corpus index).
    sentences: BTreeMap<u32, String>,
    /// Corpus indices processed so far (for resume): all `< next_sentence`
    /// that belong to this shard.
    next_sentence: u32,
    /// Shard `(i, n)`: this collector sees sentences with `index % n == i`.
    shard: (u32, u32),
    /// Counters.
    pub stats: BuildStats,
}

/// Counters of a build.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BuildStats {
    /// Sentences run through the model.
    pub sentences: u64,
    /// Tokens run through the model.
    pub tokens: u64,
    /// Sentences truncated to `max_tokens`.
    pub truncated: u64,
    /// Sentences that tokenised to fewer than `skip_positions + 1` tokens.
    pub too_short: u64,
}

impl Collector {
    /// An empty collection for a model of width `d`, shard `(i, n)`.
    pub fn new(cfg: BuildConfig, d: usize, shard: (u32, u32)) -> Result<Self, BankError> {
        if shard.1 == 0 || shard.0 >= shard.1 {
            return Err(BankError::Invalid(format!(
                "shard {}/{} is not valid: use i/n with 0 <= i < n",
                shard.0, shard.1
            )));
        }
        Ok(Self {
            cfg,
            d,
            pools: HashMap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            sentences: BTreeMap::new(),
            next_sentence: 0,
            shard,
            stats: BuildStats::default(),
        })
    }

    /// The rules in force.
    pub fn config(&self) -> &BuildConfig {
        &self.cfg
    }

    /// Index of the next corpus sentence to process.
    pub fn next_sentence(&self) -> usize {
        self.next_sentence as usize
    }

    fn slot_len(&self) -> usize {
        self.cfg.layers.len() * self.d
    }

    fn alloc_slot(&mut self) -> u32 {
        if let Some(s) = self.free.pop() {
            return s;
        }
        let n = self.slab.len() / self.slot_len().max(1);
        self.slab.resize(self.slab.len() + self.slot_len(), f16::ZERO);
        n as u32
    }

    /// Offers one context; `vectors(layer_slot)` gives its `[d]` hidden state
    /// at each bank layer and is only called when the context is kept.
    /// Returns whether it was kept.
    fn offer(&mut self, mut ctx: Ctx, vectors: impl Fn(usize) -> Vec<f32>) -> bool {
        let late = ctx.position as usize >= self.cfg.preferred_from;
        let cap = self.cfg.max_contexts;
        let pools = self.pools.entry(ctx.token).or_default();
        let pool = if late { &pools.late } else { &pools.early };
        let Some(place) = admit(pool, cap, ctx.key) else { return false };
        let evicted = match place {
            Some(i) => {
                let pools = self.pools.entry(ctx.token).or_default();
                let pool = if late { &mut pools.late } else { &mut pools.early };
                Some(pool.swap_remove(i).slot)
            }
            None => None,
        };
        ctx.slot = match evicted {
            Some(s) => s,
            None => self.alloc_slot(),
        };
        let (sl, d) = (self.slot_len(), self.d);
        let base = ctx.slot as usize * sl;
        for j in 0..self.cfg.layers.len() {
            let v = vectors(j);
            for (dst, &x) in self.slab[base + j * d..base + (j + 1) * d].iter_mut().zip(&v) {
                *dst = f16::from_f32(x);
            }
        }
        let pools = self.pools.entry(ctx.token).or_default();
        if late { pools.late.push(ctx) } else { pools.early.push(ctx) }
        true
    }

    /// Runs `model` over `corpus` from where this collection stopped, in
    /// packed batches; calls `progress(sentences_done, tokens_done)` after each
    /// batch and `checkpoint(self)` every `checkpoint_every` sentences.
    pub fn run(
        &mut self,
        model: &LoadedTextModel,
        corpus: &Corpus,
        mut progress: impl FnMut(&BuildStats, usize),
        checkpoint_every: usize,
        mut checkpoint: impl FnMut(&Collector) -> Result<(), crate::Error>,
    ) -> Result<(), crate::Error> {
        self.cfg.validate(model.config.num_hidden_layers)?;
        if model.config.hidden_size != self.d {
            return Err(BankError::Invalid(format!(
                "the collection holds width-{} vectors but the model has hidden size {}",
                self.d, model.config.hidden_size
            ))
            .into());
        }
        let n = corpus.sentences.len();
        let mut since_ckpt = 0usize;
        while (self.next_sentence as usize) < n {
            // Gather a batch of this shard's sentences.
            let mut batch: Vec<(u32, Vec<u32>, Vec<(usize, usize)>)> = Vec::new();
            let mut tokens = 0usize;
            let mut idx = self.next_sentence as usize;
            while idx < n && (batch.is_empty() || tokens < self.cfg.batch_tokens) {
                if idx as u32 % self.shard.1 == self.shard.0 {
                    let (mut ids, mut offs) = model.tokenizer.encode_with_offsets(&corpus.sentences[idx])?;
                    if ids.len() > self.cfg.max_tokens {
                        ids.truncate(self.cfg.max_tokens);
                        offs.truncate(self.cfg.max_tokens);
                        self.stats.truncated += 1;
                    }
                    if ids.len() <= self.cfg.skip_positions {
                        self.stats.too_short += 1;
                    } else {
                        tokens += ids.len();
                        batch.push((idx as u32, ids, offs));
                    }
                }
                idx += 1;
            }
            if !batch.is_empty() {
                self.process_batch(model, corpus, &batch)?;
            }
            since_ckpt += idx - self.next_sentence as usize;
            self.next_sentence = idx as u32;
            progress(&self.stats, n);
            if checkpoint_every > 0 && since_ckpt >= checkpoint_every {
                checkpoint(self)?;
                since_ckpt = 0;
            }
        }
        Ok(())
    }

    fn process_batch(
        &mut self,
        model: &LoadedTextModel,
        corpus: &Corpus,
        batch: &[(u32, Vec<u32>, Vec<(usize, usize)>)],
    ) -> Result<(), crate::Error> {
        let all: Vec<u32> = batch.iter().flat_map(|b| b.1.iter().copied()).collect();
        let lens: Vec<usize> = batch.iter().map(|b| b.1.len()).collect();
        let embeds = model.model.embed_tokens(&all)?;
        // Only up to the deepest bank layer (L-1 by default: the last block is never run).
        let deepest = self.cfg.layers.iter().copied().max().unwrap_or(0);
        let states = model.model.forward_embeds_packed_upto(&embeds, &lens, deepest)?;
        // Only the bank layers, as row-major [ΣT, d] f32.
        let mut layers = Vec::with_capacity(self.cfg.layers.len());
        for &l in &self.cfg.layers {
            let s = states.get(l).ok_or_else(|| ModelError::Input(format!("no hidden state {l}")))?;
            layers.push(s.flatten_all().map_err(ModelError::from)?.to_vec1::<f32>().map_err(ModelError::from)?);
        }
        let d = self.d;
        let mut row0 = 0usize;
        for (sid, ids, offs) in batch {
            self.stats.sentences += 1;
            self.stats.tokens += ids.len() as u64;
            let mut kept_any = false;
            for p in self.cfg.skip_positions..ids.len() {
                let (start, end) = offs.get(p).copied().unwrap_or((0, 0));
                let key = mix(self.cfg.seed ^ mix(((*sid as u64) << 16) | p as u64));
                let ctx = Ctx {
                    key,
                    sentence: *sid,
                    position: p.min(u16::MAX as usize) as u16,
                    token: ids[p],
                    start: start as u32,
                    end: end as u32,
                    slot: 0,
                };
                let row = row0 + p;
                kept_any |= self.offer(ctx, |j| layers[j][row * d..(row + 1) * d].to_vec());
            }
            if kept_any {
                self.sentences.insert(*sid, corpus.sentences[*sid as usize].clone());
            }
            row0 += ids.len();
        }
        self.gc_sentences();
        Ok(())
    }

    /// Drops sentence texts no kept context refers to any more.
    fn gc_sentences(&mut self) {
        if self.sentences.len() < 4 * self.kept() + 1024 {
            return;
        }
        let used: std::collections::HashSet<u32> =
            self.pools.values().flat_map(|p| p.late.iter().chain(&p.early)).map(|c| c.sentence).collect();
        self.sentences.retain(|k, _| used.contains(k));
    }

    /// Number of contexts currently kept (before the late/early selection).
    pub fn kept(&self) -> usize {
        self.pools.values().map(|p| p.late.len() + p.early.len()).sum()
    }

    /// Merges another shard's collection (same rules, same model width):
    /// union of candidates, each token keeps the smallest keys.
    pub fn merge(&mut self, other: &Collector) -> Result<(), BankError> {
        if other.cfg != self.cfg || other.d != self.d {
            return Err(BankError::Invalid(
                "cannot merge collections built with different rules or models (layers, limits, seed or width differ)".into(),
            ));
        }
        let sl = self.slot_len();
        for p in other.pools.values() {
            for c in p.late.iter().chain(&p.early) {
                let base = c.slot as usize * sl;
                let src = other.slab.get(base..base + sl).ok_or_else(|| BankError::Invalid("corrupt collection slab".into()))?;
                let src: Vec<f32> = src.iter().map(|x| x.to_f32()).collect();
                let d = self.d;
                if self.offer(*c, |j| src[j * d..(j + 1) * d].to_vec()) {
                    if let Some(s) = other.sentences.get(&c.sentence) {
                        self.sentences.insert(c.sentence, s.clone());
                    }
                }
            }
        }
        self.stats.sentences += other.stats.sentences;
        self.stats.tokens += other.stats.tokens;
        self.stats.truncated += other.stats.truncated;
        self.stats.too_short += other.stats.too_short;
        self.next_sentence = self.next_sentence.max(other.next_sentence);
        self.gc_sentences();
        Ok(())
    }

    /// The final selection: per token (in id order), its late contexts by
    /// key, topped up with early ones up to `max_contexts`.
    pub fn finish(&self) -> Collected {
        let mut tokens: Vec<&u32> = self.pools.keys().collect();
        tokens.sort_unstable();
        let nl = self.cfg.layers.len();
        let (d, sl) = (self.d, self.slot_len());
        let mut rows = Vec::new();
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); nl];
        let mut sentence_ids: BTreeMap<u32, u32> = BTreeMap::new();
        for t in tokens {
            let p = &self.pools[t];
            let mut late = p.late.clone();
            late.sort_by_key(|c| c.key);
            let mut early = p.early.clone();
            early.sort_by_key(|c| c.key);
            let need = self.cfg.max_contexts.saturating_sub(late.len());
            for c in late.iter().chain(early.iter().take(need)) {
                let base = c.slot as usize * sl;
                for (j, out) in vectors.iter_mut().enumerate() {
                    let v = &self.slab[base + j * d..base + (j + 1) * d];
                    let norm = v.iter().map(|x| x.to_f32() * x.to_f32()).sum::<f32>().sqrt().max(1e-12);
                    out.extend(v.iter().map(|x| x.to_f32() / norm));
                }
                let next = sentence_ids.len() as u32;
                sentence_ids.entry(c.sentence).or_insert(next);
                rows.push(CollectedRow {
                    token: c.token,
                    corpus_sentence: c.sentence,
                    position: c.position,
                    start: c.start,
                    end: c.end,
                });
            }
        }
        // Compact sentence ids in corpus order.
        let order: Vec<u32> = sentence_ids.keys().copied().collect();
        let compact: HashMap<u32, u32> = order.iter().enumerate().map(|(i, &s)| (s, i as u32)).collect();
        let sentences = order.iter().map(|s| self.sentences.get(s).cloned().unwrap_or_default()).collect();
        for r in &mut rows {
            r.corpus_sentence = compact[&r.corpus_sentence];
        }
        Collected { layers: self.cfg.layers.clone(), d, rows, vectors, sentences, stats: self.stats.clone() }
    }

    /// Writes the collection (checkpoint or shard output). Little-endian:
    /// magic `LLCOLL01`, u64 JSON length, JSON header, then per context
    /// 28 bytes, then the slab as f16 for the contexts in that order.
    pub fn save(&self, w: &mut impl Write) -> Result<(), BankError> {
        let io = |e: std::io::Error| BankError::Invalid(format!("cannot write the build checkpoint: {e}"));
        let ctxs: Vec<&Ctx> = self.pools.values().flat_map(|p| p.late.iter().chain(&p.early)).collect();
        let header = serde_json::json!({
            "config": self.cfg, "d": self.d, "shard": [self.shard.0, self.shard.1],
            "next_sentence": self.next_sentence, "stats": self.stats, "contexts": ctxs.len(),
            "sentences": self.sentences.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
        });
        let h = serde_json::to_vec(&header).map_err(|e| BankError::Invalid(e.to_string()))?;
        w.write_all(b"LLCOLL01").map_err(io)?;
        w.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
        w.write_all(&h).map_err(io)?;
        let mut buf = Vec::with_capacity(ctxs.len() * 28);
        for c in &ctxs {
            buf.extend_from_slice(&c.key.to_le_bytes());
            buf.extend_from_slice(&c.sentence.to_le_bytes());
            buf.extend_from_slice(&(c.position as u32).to_le_bytes());
            buf.extend_from_slice(&c.token.to_le_bytes());
            buf.extend_from_slice(&c.start.to_le_bytes());
            buf.extend_from_slice(&c.end.to_le_bytes());
        }
        w.write_all(&buf).map_err(io)?;
        let sl = self.slot_len();
        for c in &ctxs {
            let base = c.slot as usize * sl;
            w.write_all(bytemuck::cast_slice(&self.slab[base..base + sl])).map_err(io)?;
        }
        Ok(())
    }

    /// Reads what [`Collector::save`] wrote, validating sizes.
    pub fn load(r: &mut impl Read) -> Result<Self, BankError> {
        let bad = |m: String| BankError::Invalid(format!("build checkpoint: {m}; delete it to start the build afresh"));
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes).map_err(|e| bad(format!("cannot read: {e}")))?;
        if bytes.get(..8) != Some(b"LLCOLL01") {
            return Err(bad("not a latentlens build checkpoint (bad magic)".into()));
        }
        let hl = bytes.get(8..16).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).unwrap_or(u64::MAX);
        let hend = 16usize.checked_add(usize::try_from(hl).unwrap_or(usize::MAX)).filter(|&e| e <= bytes.len());
        let hend = hend.ok_or_else(|| bad("truncated header".into()))?;
        let h: serde_json::Value = serde_json::from_slice(&bytes[16..hend]).map_err(|e| bad(format!("header: {e}")))?;
        let cfg: BuildConfig =
            serde_json::from_value(h["config"].clone()).map_err(|e| bad(format!("config: {e}")))?;
        let d = h["d"].as_u64().ok_or_else(|| bad("missing d".into()))? as usize;
        let shard = (
            h["shard"][0].as_u64().ok_or_else(|| bad("missing shard".into()))? as u32,
            h["shard"][1].as_u64().ok_or_else(|| bad("missing shard".into()))? as u32,
        );
        let mut c = Collector::new(cfg, d, shard)?;
        c.next_sentence = h["next_sentence"].as_u64().ok_or_else(|| bad("missing next_sentence".into()))? as u32;
        c.stats = serde_json::from_value(h["stats"].clone()).map_err(|e| bad(format!("stats: {e}")))?;
        if let Some(m) = h["sentences"].as_object() {
            for (k, v) in m {
                let k: u32 = k.parse().map_err(|_| bad("bad sentence id".into()))?;
                c.sentences.insert(k, v.as_str().unwrap_or_default().to_string());
            }
        }
        let n = h["contexts"].as_u64().ok_or_else(|| bad("missing contexts".into()))? as usize;
        let sl = c.slot_len();
        let need = n.checked_mul(28 + sl * 2).and_then(|x| x.checked_add(hend));
        if need != Some(bytes.len()) {
            return Err(bad(format!("{} bytes, expected {:?} for {n} contexts: truncated or corrupt", bytes.len(), need)));
        }
        let recs = &bytes[hend..hend + n * 28];
        let slab = &bytes[hend + n * 28..];
        c.slab = bytemuck::pod_collect_to_vec::<u8, f16>(slab);
        for (i, r) in recs.chunks_exact(28).enumerate() {
            let u = |o: usize| u32::from_le_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
            let ctx = Ctx {
                key: u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]),
                sentence: u(8),
                position: u(12).min(u16::MAX as u32) as u16,
                token: u(16),
                start: u(20),
                end: u(24),
                slot: i as u32,
            };
            let late = ctx.position as usize >= c.cfg.preferred_from;
            let pools = c.pools.entry(ctx.token).or_default();
            if late { pools.late.push(ctx) } else { pools.early.push(ctx) }
        }
        Ok(c)
    }
}

/// One row of the finished selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectedRow {
    /// Token id.
    pub token: u32,
    /// Index into [`Collected::sentences`].
    pub corpus_sentence: u32,
    /// Position of the token in its sentence.
    pub position: u16,
    /// Byte span of the token in its sentence.
    pub start: u32,
    pub end: u32,
}

/// The finished selection, ready to quantise and write.
#[derive(Debug, Clone)]
pub struct Collected {
    /// Bank layers (hidden-state indices).
    pub layers: Vec<usize>,
    /// Width.
    pub d: usize,
    /// Rows, shared by all layers.
    pub rows: Vec<CollectedRow>,
    /// Per layer: `[rows, d]` f32, L2-normalised.
    pub vectors: Vec<Vec<f32>>,
    /// Sentences referenced by rows, compact ids.
    pub sentences: Vec<String>,
    /// Counters of the build.
    pub stats: BuildStats,
}
