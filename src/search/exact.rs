//! Exact cosine top-k over f32 bank rows (the ground truth for PQ recall and
//! the reference every other path is compared with). Bank rows and queries
//! are L2-normalised, so cosine = inner product.

use super::topk::{Hit, TopK};
use super::{check_k, check_rows, SearchError};

/// Inner product with 8 independent partial sums (vectorisable, and
/// deterministic: the summation order is fixed).
#[inline]
pub fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

fn validate(bank: &[f32], d: usize, queries: &[f32], k: usize) -> Result<(usize, usize), SearchError> {
    check_k(k)?;
    let n = check_rows("bank", bank, d)?;
    let nq = check_rows("queries", queries, d)?;
    if n == 0 {
        return Err(SearchError::EmptyBank("the bank layer has no rows to search".into()));
    }
    if n > u32::MAX as usize {
        return Err(SearchError::Invalid(format!("{n} rows exceed the u32 row index")));
    }
    Ok((n, nq))
}

/// Exact top-`k` for each query: `bank` `[n, d]`, `queries` `[nq, d]`;
/// hits carry `layer`. Rows are processed in blocks so each block stays in
/// cache for a group of queries; parallel over query groups with rayon.
pub fn exact_topk(bank: &[f32], d: usize, queries: &[f32], k: usize, layer: u16) -> Result<Vec<Vec<Hit>>, SearchError> {
    let (n, nq) = validate(bank, d, queries, k)?;
    const QG: usize = 8; // queries per group
    const RB: usize = 256; // rows per block
    let groups = nq.div_ceil(QG);
    let per_group: Vec<Vec<Vec<Hit>>> = crate::bank::pq::map_indices(groups, |g| {
        let q0 = g * QG;
        let q1 = (q0 + QG).min(nq);
        let mut tops: Vec<TopK> = (q0..q1).map(|_| TopK::new(k)).collect();
        for r0 in (0..n).step_by(RB) {
            let r1 = (r0 + RB).min(n);
            for (qi, top) in (q0..q1).zip(tops.iter_mut()) {
                let q = &queries[qi * d..(qi + 1) * d];
                for r in r0..r1 {
                    let s = dot8(q, &bank[r * d..(r + 1) * d]);
                    if s >= top.threshold() {
                        top.push(Hit { row: r as u32, score: s, layer });
                    }
                }
            }
        }
        tops.into_iter().map(TopK::into_sorted).collect()
    });
    Ok(per_group.into_iter().flatten().collect())
}

/// Scalar twin of [`exact_topk`]: every score computed with [`dot8`], all
/// rows sorted by the contract order, first `k` kept.
pub fn exact_topk_reference(bank: &[f32], d: usize, queries: &[f32], k: usize, layer: u16) -> Result<Vec<Vec<Hit>>, SearchError> {
    let (n, nq) = validate(bank, d, queries, k)?;
    let mut out = Vec::with_capacity(nq);
    for qi in 0..nq {
        let q = &queries[qi * d..(qi + 1) * d];
        let mut all: Vec<Hit> = (0..n)
            .map(|r| Hit { row: r as u32, score: dot8(q, &bank[r * d..(r + 1) * d]), layer })
            .filter(|h| !h.score.is_nan())
            .collect();
        all.sort_by(super::topk::hit_order);
        all.truncate(k);
        out.push(all);
    }
    Ok(out)
}

/// Reranks `candidates` of one (L2-normalised) query by exact cosine with
/// their stored vectors (`vectors[i]` belongs to `candidates[i]`, any norm)
/// and keeps the best `k` in the contract order. Candidates whose vector
/// has the wrong length or zero norm are dropped (never scored as 0).
pub fn rerank_exact<V: AsRef<[f32]>>(query: &[f32], candidates: &[Hit], vectors: &[V], k: usize) -> Result<Vec<Hit>, SearchError> {
    check_k(k)?;
    if candidates.len() != vectors.len() {
        return Err(SearchError::Invalid(format!("{} candidates but {} vectors", candidates.len(), vectors.len())));
    }
    let mut out: Vec<Hit> = candidates
        .iter()
        .zip(vectors)
        .map(|(h, v)| (h, v.as_ref()))
        .filter(|(_, v)| v.len() == query.len())
        .filter_map(|(h, v)| {
            let norm = dot8(v, v).sqrt();
            let s = dot8(query, v) / norm;
            (norm > 0.0 && s.is_finite()).then_some(Hit { score: s, ..*h })
        })
        .collect();
    out.sort_by(super::topk::hit_order);
    out.truncate(k);
    Ok(out)
}
