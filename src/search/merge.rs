//! Cross-layer merge: each bank layer is searched on its own (hits carry
//! their bank-layer slot); the per-layer top-k lists of a query are merged
//! into one global top-k under the contract order (score, then row, then
//! layer slot).

use super::topk::{hit_order, Hit, TopK};
use super::{check_k, SearchError};

/// Merge per-layer results: `per_layer[l][q]` is layer `l`'s list for query
/// `q` (any order). Returns, per query, the best `k` hits over all layers.
pub fn merge_layers(per_layer: &[Vec<Vec<Hit>>], k: usize) -> Result<Vec<Vec<Hit>>, SearchError> {
    check_k(k)?;
    let nq = check_shapes(per_layer)?;
    Ok((0..nq)
        .map(|q| {
            let mut top = TopK::new(k);
            for layer in per_layer {
                for h in &layer[q] {
                    top.push(*h);
                }
            }
            top.into_sorted()
        })
        .collect())
}

/// Scalar twin of [`merge_layers`]: concatenate, sort, truncate.
pub fn merge_layers_reference(per_layer: &[Vec<Vec<Hit>>], k: usize) -> Result<Vec<Vec<Hit>>, SearchError> {
    check_k(k)?;
    let nq = check_shapes(per_layer)?;
    Ok((0..nq)
        .map(|q| {
            let mut all: Vec<Hit> = per_layer.iter().flat_map(|l| l[q].iter().copied()).filter(|h| !h.score.is_nan()).collect();
            all.sort_by(hit_order);
            all.truncate(k);
            all
        })
        .collect())
}

fn check_shapes(per_layer: &[Vec<Vec<Hit>>]) -> Result<usize, SearchError> {
    let Some(first) = per_layer.first() else {
        return Err(SearchError::EmptyBank("no bank layers to merge".into()));
    };
    let nq = first.len();
    if let Some((i, l)) = per_layer.iter().enumerate().find(|(_, l)| l.len() != nq) {
        return Err(SearchError::Invalid(format!(
            "bank layer {i} has results for {} queries, layer 0 for {nq}",
            l.len()
        )));
    }
    Ok(nq)
}
