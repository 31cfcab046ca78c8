//! PQ top-k by asymmetric distance computation (ADC): per-query lookup
//! tables `LUT[j][c]` (see `bank::pq`), `score(row) = Σ_j LUT[j][code[row][j]]`,
//! scanned over code chunks so search can run while chunks arrive, then an
//! optional rerank of a shortlist with the refinement data.
//!
//! Scan layout: queries are grouped in blocks of up to [`LANES`] and their
//! tables interleaved as `[m][256][lanes]`, so one code byte selects one
//! contiguous run of `lanes` floats that is added to `lanes` accumulators
//! (vectorised across queries; ~1.2 MB per block of 16 at m = 72, inside L2).
//! Each accumulator adds the bytes in order `j = 0..m` starting from 0.0,
//! exactly as [`scan_reference`] does, so scores are bit-identical to it.
//! Reference: faiss `IndexPQ::search` / `pq_estimators_from_tables` (the
//! one-query-at-a-time scan this is benchmarked against).

use super::topk::{Hit, TopK};
use super::{check_k, check_rows, SearchError};
use crate::bank::pq::{ProductQuantizer, KSUB};

/// Queries per scan block.
pub const LANES: usize = 16;

/// Lookup tables of one block of queries, `[m][256][L]`.
#[derive(Clone, Debug)]
enum BlockLut {
    L16(Vec<[[f32; 16]; KSUB]>),
    L8(Vec<[[f32; 8]; KSUB]>),
    L4(Vec<[[f32; 4]; KSUB]>),
    L1(Vec<[[f32; 1]; KSUB]>),
}

#[derive(Clone, Debug)]
struct Block {
    q0: usize,
    lut: BlockLut,
    tops: Vec<TopK>,
}

fn interleave<const L: usize>(luts: &[f32], m: usize, q0: usize) -> Vec<[[f32; L]; KSUB]> {
    let mut out = vec![[[0f32; L]; KSUB]; m];
    for (j, book) in out.iter_mut().enumerate() {
        for (c, cell) in book.iter_mut().enumerate() {
            for (l, v) in cell.iter_mut().enumerate() {
                *v = luts[((q0 + l) * m + j) * KSUB + c];
            }
        }
    }
    out
}

/// Scan `codes` (`[rows, m]`) for one block: `tops.len() <= L` live lanes.
#[inline(never)]
fn scan_block<const L: usize>(lut: &[[[f32; L]; KSUB]], m: usize, codes: &[u8], row0: u32, tops: &mut [TopK], layer: u16) {
    let live = tops.len().min(L);
    for (r, code) in codes.chunks_exact(m).enumerate() {
        let mut acc = [0f32; L];
        for (book, &c) in lut.iter().zip(code) {
            let t = &book[c as usize];
            for l in 0..L {
                acc[l] += t[l];
            }
        }
        for l in 0..live {
            if acc[l] >= tops[l].threshold() {
                tops[l].push(Hit { row: row0 + r as u32, score: acc[l], layer });
            }
        }
    }
}

impl Block {
    fn scan(&mut self, m: usize, codes: &[u8], row0: u32, layer: u16) {
        match &self.lut {
            BlockLut::L16(t) => scan_block::<16>(t, m, codes, row0, &mut self.tops, layer),
            BlockLut::L8(t) => scan_block::<8>(t, m, codes, row0, &mut self.tops, layer),
            BlockLut::L4(t) => scan_block::<4>(t, m, codes, row0, &mut self.tops, layer),
            BlockLut::L1(t) => scan_block::<1>(t, m, codes, row0, &mut self.tops, layer),
        }
    }

    /// Same scan into fresh top-k's (for splitting rows across threads).
    fn scan_fresh(&self, m: usize, codes: &[u8], row0: u32, layer: u16) -> Vec<TopK> {
        let mut tops: Vec<TopK> = self.tops.iter().map(|t| TopK::new(t.k())).collect();
        match &self.lut {
            BlockLut::L16(t) => scan_block::<16>(t, m, codes, row0, &mut tops, layer),
            BlockLut::L8(t) => scan_block::<8>(t, m, codes, row0, &mut tops, layer),
            BlockLut::L4(t) => scan_block::<4>(t, m, codes, row0, &mut tops, layer),
            BlockLut::L1(t) => scan_block::<1>(t, m, codes, row0, &mut tops, layer),
        }
        tops
    }
}

/// A batch of queries being scanned over code chunks: feed chunks in any
/// order with [`AdcScanner::scan_chunk`], read the current top-k any time.
#[derive(Clone, Debug)]
pub struct AdcScanner {
    m: usize,
    nq: usize,
    layer: u16,
    blocks: Vec<Block>,
}

fn threads() -> usize {
    #[cfg(feature = "cli")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "cli"))]
    {
        1
    }
}

impl AdcScanner {
    /// Scanner for `luts` (`[nq, m, 256]`, as [`ProductQuantizer::lut`]
    /// returns), keeping the top `k` per query; hits carry `layer`.
    pub fn new(luts: &[f32], m: usize, k: usize, layer: u16) -> Result<Self, SearchError> {
        check_k(k)?;
        if m == 0 || luts.len() % (m * KSUB) != 0 {
            return Err(SearchError::Invalid(format!(
                "lookup tables of {} floats are not [nq, {m}, 256]",
                luts.len()
            )));
        }
        let nq = luts.len() / (m * KSUB);
        let mut blocks = Vec::new();
        let mut q0 = 0;
        while q0 < nq {
            let rest = nq - q0;
            let (lanes, lut) = if rest >= 12 {
                (16, BlockLut::L16(interleave_pad::<16>(luts, m, q0, rest)))
            } else if rest >= 6 {
                (8, BlockLut::L8(interleave_pad::<8>(luts, m, q0, rest)))
            } else if rest >= 3 {
                (4, BlockLut::L4(interleave_pad::<4>(luts, m, q0, rest)))
            } else {
                (1, BlockLut::L1(interleave::<1>(luts, m, q0)))
            };
            let live = lanes.min(rest);
            blocks.push(Block { q0, lut, tops: (0..live).map(|_| TopK::new(k)).collect() });
            q0 += live;
        }
        Ok(Self { m, nq, layer, blocks })
    }

    /// Bytes per code row.
    pub fn code_bytes(&self) -> usize {
        self.m
    }

    /// Number of queries.
    pub fn num_queries(&self) -> usize {
        self.nq
    }

    /// Scan one chunk of codes (`[rows, m]`) whose first row is bank row `row0`.
    pub fn scan_chunk(&mut self, codes: &[u8], row0: u32) -> Result<(), SearchError> {
        let m = self.m;
        if codes.len() % m != 0 {
            return Err(SearchError::Invalid(format!("code chunk of {} bytes is not [rows, {m}]", codes.len())));
        }
        let rows = codes.len() / m;
        if row0 as u64 + rows as u64 > u32::MAX as u64 + 1 {
            return Err(SearchError::Invalid("row index overflows u32".into()));
        }
        let layer = self.layer;
        let t = threads();
        if self.blocks.len() >= 2 * t || t == 1 || rows < 4096 {
            #[cfg(feature = "cli")]
            {
                use rayon::prelude::*;
                self.blocks.par_iter_mut().for_each(|b| b.scan(m, codes, row0, layer));
            }
            #[cfg(not(feature = "cli"))]
            for b in &mut self.blocks {
                b.scan(m, codes, row0, layer);
            }
        } else {
            // Few queries: split rows across threads, merge the partial top-k's.
            let piece = rows.div_ceil(t).max(1);
            for b in &mut self.blocks {
                let bref = &*b;
                let parts = crate::bank::pq::map_indices(rows.div_ceil(piece), |p| {
                    let r0 = p * piece;
                    let r1 = (r0 + piece).min(rows);
                    bref.scan_fresh(m, &codes[r0 * m..r1 * m], row0 + r0 as u32, layer)
                });
                for part in parts {
                    for (dst, src) in b.tops.iter_mut().zip(part) {
                        for h in src.into_sorted() {
                            dst.push(h);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Current top-k of every query, best first.
    pub fn results(&self) -> Vec<Vec<Hit>> {
        self.blocks.iter().flat_map(|b| b.tops.iter().map(TopK::sorted)).collect()
    }

    /// Final top-k of every query, best first.
    pub fn into_results(self) -> Vec<Vec<Hit>> {
        let mut out = Vec::with_capacity(self.nq);
        for b in self.blocks {
            debug_assert!(b.q0 == out.len());
            out.extend(b.tops.into_iter().map(TopK::into_sorted));
        }
        out
    }
}

/// Interleave with zero padding for lanes past the last query.
fn interleave_pad<const L: usize>(luts: &[f32], m: usize, q0: usize, rest: usize) -> Vec<[[f32; L]; KSUB]> {
    if rest >= L {
        return interleave::<L>(luts, m, q0);
    }
    let mut out = vec![[[0f32; L]; KSUB]; m];
    for (j, book) in out.iter_mut().enumerate() {
        for (c, cell) in book.iter_mut().enumerate() {
            for (l, v) in cell.iter_mut().enumerate().take(rest) {
                *v = luts[((q0 + l) * m + j) * KSUB + c];
            }
        }
    }
    out
}

/// Scalar twin of the scan: for each query and row, `s = 0; s += LUT[j][code[j]]`
/// for `j = 0..m`; all rows sorted by the contract order; first `k` kept.
pub fn scan_reference(luts: &[f32], m: usize, codes: &[u8], row0: u32, k: usize, layer: u16) -> Result<Vec<Vec<Hit>>, SearchError> {
    check_k(k)?;
    if m == 0 || luts.len() % (m * KSUB) != 0 || codes.len() % m != 0 {
        return Err(SearchError::Invalid("lookup tables or codes do not match m".into()));
    }
    let nq = luts.len() / (m * KSUB);
    let mut out = Vec::with_capacity(nq);
    for q in 0..nq {
        let lut = &luts[q * m * KSUB..(q + 1) * m * KSUB];
        let mut all: Vec<Hit> = codes
            .chunks_exact(m)
            .enumerate()
            .map(|(r, code)| {
                let mut s = 0f32;
                for (j, &c) in code.iter().enumerate() {
                    s += lut[j * KSUB + c as usize];
                }
                Hit { row: row0 + r as u32, score: s, layer }
            })
            .filter(|h| !h.score.is_nan())
            .collect();
        all.sort_by(super::topk::hit_order);
        all.truncate(k);
        out.push(all);
    }
    Ok(out)
}

/// Rerank shortlists with refinement data: `score += Σ_j RLUT[j][refine[row][j]]`
/// (`refine_luts` `[nq, rm, 256]`, `refine` `[n, rm]`), keep the top `k`.
/// The scan score already holds the scanned bytes' sum, so the result is the
/// additive score of the full (scan + refine) code.
pub fn rerank(refine_luts: &[f32], rm: usize, refine: &[u8], shortlists: &[Vec<Hit>], k: usize) -> Result<Vec<Vec<Hit>>, SearchError> {
    check_k(k)?;
    if rm == 0 || refine_luts.len() != shortlists.len() * rm * KSUB || refine.len() % rm != 0 {
        return Err(SearchError::Invalid(format!(
            "refinement tables ({} floats) / data ({} bytes) do not match {} queries × {rm} bytes",
            refine_luts.len(),
            refine.len(),
            shortlists.len()
        )));
    }
    let n = refine.len() / rm;
    let mut out = Vec::with_capacity(shortlists.len());
    for (q, list) in shortlists.iter().enumerate() {
        let lut = &refine_luts[q * rm * KSUB..(q + 1) * rm * KSUB];
        let mut top = TopK::new(k);
        for h in list {
            let r = h.row as usize;
            if r >= n {
                return Err(SearchError::Invalid(format!("shortlist row {r} is outside the {n} refinement rows")));
            }
            let mut s = h.score;
            for (j, &c) in refine[r * rm..(r + 1) * rm].iter().enumerate() {
                s += lut[j * KSUB + c as usize];
            }
            top.push(Hit { score: s, ..*h });
        }
        out.push(top.into_sorted());
    }
    Ok(out)
}

/// Parameters of [`pq_search`].
#[derive(Clone, Debug)]
pub struct PqSearchParams {
    /// Neighbours per query.
    pub k: usize,
    /// Candidates kept by the scan and reranked with the refinement data
    /// (ignored without refinement data; values below `k` mean `k`).
    pub shortlist: usize,
    /// Bank-layer slot written into every hit.
    pub layer: u16,
    /// Rows per scanned chunk.
    pub chunk_rows: usize,
}

impl Default for PqSearchParams {
    fn default() -> Self {
        Self { k: 10, shortlist: 100, layer: 0, chunk_rows: 16_384 }
    }
}

/// PQ top-k of a query batch (`[nq, d]`) over a whole bank layer:
/// codes `[n, code_bytes]`, optional refinement data `[n, refine_bytes]`.
pub fn pq_search(
    pq: &ProductQuantizer,
    codes: &[u8],
    refine: Option<&[u8]>,
    queries: &[f32],
    p: &PqSearchParams,
) -> Result<Vec<Vec<Hit>>, SearchError> {
    check_k(p.k)?;
    check_rows("queries", queries, pq.d())?;
    let m = pq.code_bytes();
    if codes.len() % m != 0 {
        return Err(SearchError::Invalid(format!("{} code bytes is not [n, {m}]", codes.len())));
    }
    let n = codes.len() / m;
    if n == 0 {
        return Err(SearchError::EmptyBank("the bank layer has no code rows".into()));
    }
    let rm = pq.refine_bytes();
    let refine = match refine {
        Some(r) if rm > 0 => {
            if r.len() != n * rm {
                return Err(SearchError::Invalid(format!(
                    "refinement data has {} bytes, expected {n} rows × {rm}",
                    r.len()
                )));
            }
            Some(r)
        }
        _ => None,
    };
    let keep = if refine.is_some() { p.shortlist.max(p.k) } else { p.k };
    check_k(keep)?;
    let luts = pq.lut(queries)?;
    let mut sc = AdcScanner::new(&luts, m, keep, p.layer)?;
    let chunk = p.chunk_rows.max(1);
    for (i, c) in codes.chunks(chunk * m).enumerate() {
        sc.scan_chunk(c, (i * chunk) as u32)?;
    }
    let lists = sc.into_results();
    match refine {
        Some(r) => rerank(&pq.refine_lut(queries)?, rm, r, &lists, p.k),
        None => Ok(lists),
    }
}
