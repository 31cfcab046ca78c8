//! The two baselines of the paper:
//! - **EmbeddingLens**: cosine nearest rows of the input embedding matrix;
//! - **LogitLens** (nostalgebraist, 2020): final norm + unembedding, top
//!   tokens by logit, with their softmax probability.
//!
//! Both read query vectors `[Q, d]` taken from [`crate::model::HiddenStates`].

use candle_core::{DType, Device, Tensor};

use super::readout::display_token;
use super::{Method, Neighbour};
use crate::model::{ModelError, TextModel, Tokenizer};

/// Indices of the `k` largest values, best first; ties → lower index first;
/// NaN never selected.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..scores.len() as u32).filter(|&i| !scores[i as usize].is_nan()).collect();
    let cmp = |a: &u32, b: &u32| scores[*b as usize].total_cmp(&scores[*a as usize]).then(a.cmp(b));
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx.into_iter().map(|i| (i, scores[i as usize])).collect()
}

fn queries_tensor(queries: &[f32], d: usize) -> Result<Tensor, ModelError> {
    if d == 0 || queries.len() % d != 0 {
        return Err(ModelError::Input(format!("query buffer of {} floats is not a multiple of d = {d}", queries.len())));
    }
    Ok(Tensor::from_slice(queries, (queries.len() / d, d), &Device::Cpu)?)
}

fn l2_normalise_rows(t: &Tensor) -> Result<Tensor, ModelError> {
    let n = t.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(t.broadcast_div(&n)?)
}

fn token_neighbour(tok: &Tokenizer, rank: usize, id: u32, score: f32, prob: Option<f32>, method: Method) -> Neighbour {
    let raw = tok.id_to_token(id).unwrap_or_default();
    let word = display_token(&raw);
    Neighbour { rank: rank as u32 + 1, score, prob, word, token: raw, token_id: id, sentence: None, span: None, bank_layer: None, method }
}

/// EmbeddingLens: cosine against the rows of the input embedding matrix.
#[derive(Debug, Clone)]
pub struct EmbeddingLens {
    /// `[vocab, d]` f32, as the model holds it (shared storage, not a copy).
    emb: Tensor,
    /// `1 / max(|row|, 1e-12)` of every row.
    inv_norm: Vec<f32>,
}

/// `1 / max(|row|, 1e-12)` for each row of a contiguous `[n, d]` f32 CPU tensor.
fn inverse_row_norms(t: &Tensor) -> Result<Vec<f32>, ModelError> {
    let (n, d) = t.dims2()?;
    let (storage, layout) = t.storage_and_layout();
    let rows = match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(cpu), Some((a, b))) => {
            let data = cpu.as_slice::<f32>()?;
            data.get(a..b).map(|s| s.chunks_exact(d.max(1)).map(|r| r.iter().map(|x| x * x).sum::<f32>()).collect::<Vec<f32>>())
        }
        _ => None,
    };
    let sq = match rows {
        Some(v) => v,
        None => {
            drop(storage);
            t.sqr()?.sum_keepdim(1)?.flatten_all()?.to_vec1::<f32>()?
        }
    };
    debug_assert_eq!(sq.len(), n);
    Ok(sq.into_iter().map(|s| 1.0 / s.sqrt().max(1e-12)).collect())
}

impl EmbeddingLens {
    /// Prepares the row norms once (one pass over the matrix; no normalised copy).
    pub fn new(model: &TextModel) -> Result<Self, ModelError> {
        let emb = model.embedding_matrix().to_dtype(DType::F32)?.contiguous()?;
        let inv_norm = inverse_row_norms(&emb)?;
        Ok(Self { emb, inv_norm })
    }

    /// Top-`k` vocabulary entries by cosine for each query row of `queries` (`[Q, d]` row-major).
    pub fn explain(&self, tok: &Tokenizer, queries: &[f32], k: usize) -> Result<Vec<Vec<Neighbour>>, ModelError> {
        let d = self.emb.dim(1)?;
        let q = l2_normalise_rows(&queries_tensor(queries, d)?)?; // [Q, d]
        let sims = q.matmul(&self.emb.t()?)?; // [Q, vocab]: q̂ · e
        let mut rows: Vec<Vec<f32>> = sims.to_vec2()?;
        for r in &mut rows {
            r.iter_mut().zip(&self.inv_norm).for_each(|(s, n)| *s *= n); // / |e|
        }
        Ok(rows
            .iter()
            .map(|r| {
                top_k(r, k).into_iter().enumerate().map(|(i, (id, s))| token_neighbour(tok, i, id, s, None, Method::Embedding)).collect()
            })
            .collect())
    }
}

/// LogitLens: final norm + unembedding.
pub struct LogitLens;

impl LogitLens {
    /// Top-`k` tokens by logit (with softmax probability) for each query row.
    /// `already_normed`: the rows are the model's last hidden state, which
    /// (HF convention) already went through the final norm.
    pub fn explain(
        model: &TextModel,
        tok: &Tokenizer,
        queries: &[f32],
        already_normed: bool,
        k: usize,
    ) -> Result<Vec<Vec<Neighbour>>, ModelError> {
        let q = queries_tensor(queries, model.config().hidden_size)?; // [Q, d]
        let normed = if already_normed { q } else { model.final_norm(&q)? };
        let logits = model.lm_head(&normed)?; // [Q, vocab]
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let (logits, probs): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (logits.to_vec2()?, probs.to_vec2()?);
        Ok(logits
            .iter()
            .zip(&probs)
            .map(|(l, p)| {
                top_k(l, k)
                    .into_iter()
                    .enumerate()
                    .map(|(i, (id, s))| token_neighbour(tok, i, id, s, p.get(id as usize).copied(), Method::Logit))
                    .collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::top_k;

    #[test]
    fn top_k_orders_by_score_then_index_and_skips_nan() {
        let s = [0.5, f32::NAN, 0.9, 0.5, -1.0, 0.9];
        assert_eq!(top_k(&s, 3), vec![(2, 0.9), (5, 0.9), (0, 0.5)]);
        assert_eq!(top_k(&s, 10).len(), 5);
        assert!(top_k(&s, 0).is_empty());
    }
}
