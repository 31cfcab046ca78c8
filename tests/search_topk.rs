//! Search: exact and PQ top-k against brute force and against their scalar
//! twins (index sets, with deliberate ties), rerank, cross-layer merge, and
//! bad input.

use latentlens::bank::pq::rng::SplitMix64;
use latentlens::bank::pq::{PqParams, ProductQuantizer, RotationKind, KSUB};
use latentlens::search::{
    exact_topk, exact_topk_reference, hit_order, merge_layers, merge_layers_reference, pq_search, rerank, scan_reference, AdcScanner, Hit,
    PqSearchParams, SearchError,
};

fn unit_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let centres: Vec<f32> = (0..20 * d).map(|_| rng.normal() as f32).collect();
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let c = rng.below(20);
        let v: Vec<f32> = (0..d).map(|t| centres[c * d + t] + 0.6 * rng.normal() as f32).collect();
        let nrm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        out.extend(v.iter().map(|x| x / nrm));
    }
    out
}

/// Brute force in f64, sorted by the contract order.
fn brute(bank: &[f32], d: usize, q: &[f32], k: usize) -> Vec<(u32, f64)> {
    let mut all: Vec<(u32, f64)> = bank
        .chunks_exact(d)
        .enumerate()
        .map(|(r, row)| (r as u32, row.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum()))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

#[test]
fn exact_topk_matches_brute_force_and_its_reference_with_ties() {
    let d = 40;
    let mut bank = unit_rows(700, d, 1);
    // Deliberate exact ties: rows 500.. duplicate rows 10.. (same bits → same score).
    for r in 0..30 {
        let src: Vec<f32> = bank[(10 + r) * d..(11 + r) * d].to_vec();
        bank[(500 + r) * d..(501 + r) * d].copy_from_slice(&src);
    }
    let mut queries = unit_rows(23, d, 2);
    queries[..d].copy_from_slice(&bank[10 * d..11 * d].to_vec()); // query 0 hits the tie head-on
    let k = 15;
    let fast = exact_topk(&bank, d, &queries, k, 3).unwrap();
    let slow = exact_topk_reference(&bank, d, &queries, k, 3).unwrap();
    assert_eq!(fast, slow, "optimised exact top-k must equal its scalar twin exactly (ties: lower row first)");
    for (q, hits) in fast.iter().enumerate() {
        assert_eq!(hits.len(), k);
        assert!(hits.iter().all(|h| h.layer == 3));
        for w in hits.windows(2) {
            assert_ne!(hit_order(&w[0], &w[1]), std::cmp::Ordering::Greater, "sorted best first");
        }
        let b = brute(&bank, d, &queries[q * d..(q + 1) * d], k);
        for (h, (row, s)) in hits.iter().zip(&b) {
            assert!((h.score as f64 - s).abs() < 1e-5, "query {q}: score {} vs brute {s}", h.score);
            // Rows equal unless two scores tie within f32 rounding.
            if h.row != *row {
                assert!((h.score as f64 - s).abs() < 1e-5);
            }
        }
    }
    // The duplicated pair (10, 500) ties for query 0: row 10 must come first.
    let pos10 = fast[0].iter().position(|h| h.row == 10).unwrap();
    assert_eq!(fast[0][pos10 + 1].row, 500, "tie: lower row first");
    assert_eq!(fast[0][pos10].score, fast[0][pos10 + 1].score);
}

fn random_luts(nq: usize, m: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    // Coarse values (multiples of 1/8) make many exact score ties on purpose.
    (0..nq * m * KSUB).map(|_| (rng.below(17) as f32 - 8.0) / 8.0).collect()
}

#[test]
fn adc_scan_equals_scalar_reference_for_every_block_width_and_chunking() {
    let m = 12;
    let n = 5000;
    let mut rng = SplitMix64::new(3);
    let mut codes: Vec<u8> = (0..n * m).map(|_| rng.below(KSUB) as u8).collect();
    for r in 0..200 {
        // duplicated rows → identical scores
        let src: Vec<u8> = codes[r * m..(r + 1) * m].to_vec();
        codes[(4000 + r) * m..(4001 + r) * m].copy_from_slice(&src);
    }
    for nq in [1usize, 2, 3, 5, 7, 13, 16, 17, 35] {
        let luts = random_luts(nq, m, 10 + nq as u64);
        let k = 25;
        let want = scan_reference(&luts, m, &codes, 0, k, 1).unwrap();
        // One shot.
        let mut sc = AdcScanner::new(&luts, m, k, 1).unwrap();
        sc.scan_chunk(&codes, 0).unwrap();
        assert_eq!(sc.into_results(), want, "nq = {nq}, one chunk");
        // Chunks of odd sizes, fed out of order.
        let mut sc = AdcScanner::new(&luts, m, k, 1).unwrap();
        let bounds = [0usize, 333, 1000, 2777, 4096, 5000];
        for w in bounds.windows(2).rev() {
            sc.scan_chunk(&codes[w[0] * m..w[1] * m], w[0] as u32).unwrap();
        }
        assert_eq!(sc.results(), want, "nq = {nq}, chunks out of order");
    }
}

#[test]
fn nan_scores_never_enter_a_top_k() {
    let m = 4;
    let mut luts = random_luts(3, m, 5);
    luts[7] = f32::NAN; // query 0, byte 0, code 7
    let codes: Vec<u8> = (0..300u32).flat_map(|r| [(r % 256) as u8, 1, 2, 3]).collect();
    let mut sc = AdcScanner::new(&luts, m, 300, 0).unwrap();
    sc.scan_chunk(&codes, 0).unwrap();
    let res = sc.into_results();
    assert!(res[0].iter().all(|h| !h.score.is_nan()));
    assert_eq!(res[0].len(), 300 - 2, "rows 7 and 263 score NaN for query 0");
    assert_eq!(res, scan_reference(&luts, m, &codes, 0, 300, 0).unwrap());
}

#[test]
fn pq_search_with_rerank_finds_the_exact_neighbours_and_beats_plain_scan() {
    let d = 32;
    let bank = unit_rows(2000, d, 7);
    let queries = unit_rows(40, d, 8);
    let k = 10;
    let truth = exact_topk(&bank, d, &queries, k, 0).unwrap();
    let recall = |res: &[Vec<Hit>]| -> f64 {
        res.iter()
            .zip(&truth)
            .map(|(r, t)| r.iter().filter(|h| t.iter().any(|x| x.row == h.row)).count() as f64 / k as f64)
            .sum::<f64>()
            / truth.len() as f64
    };
    let p = PqParams { code_bytes: 8, refine_bytes: 16, rotation: RotationKind::Pca, train_size: 2000, iters: 6, ..PqParams::default() };
    let pq = ProductQuantizer::train(&bank, d, &p).unwrap();
    let enc = pq.encode(&bank).unwrap();
    let sp = PqSearchParams { k, shortlist: 100, layer: 2, chunk_rows: 300 };
    let plain = pq_search(&pq, &enc.codes, None, &queries, &sp).unwrap();
    let refined = pq_search(&pq, &enc.codes, Some(&enc.refine), &queries, &sp).unwrap();
    let (rp, rr) = (recall(&plain), recall(&refined));
    assert!(rr > rp, "rerank with refinement data must improve recall ({rp} → {rr})");
    assert!(rr >= 0.8, "8 + 16 bytes at d = 32 must find most exact neighbours (recall {rr})");
    assert!(refined.iter().flatten().all(|h| h.layer == 2));
    // Rerank scores are the additive scores of the full reconstruction.
    let full = pq.decode(&enc.codes, Some(&enc.refine)).unwrap();
    for (q, hits) in refined.iter().enumerate() {
        for h in hits {
            let r = h.row as usize;
            let ip: f32 = queries[q * d..(q + 1) * d].iter().zip(&full[r * d..(r + 1) * d]).map(|(a, b)| a * b).sum();
            assert!((h.score - ip).abs() < 1e-4);
        }
    }
}

#[test]
fn rerank_equals_scoring_every_candidate_with_the_full_tables() {
    let (m, rm) = (6, 4);
    let mut rng = SplitMix64::new(11);
    let n = 400;
    let codes: Vec<u8> = (0..n * m).map(|_| rng.below(KSUB) as u8).collect();
    let refine: Vec<u8> = (0..n * rm).map(|_| rng.below(KSUB) as u8).collect();
    let luts = random_luts(3, m, 12);
    let rluts = random_luts(3, rm, 13);
    let short = scan_reference(&luts, m, &codes, 0, 80, 0).unwrap();
    let got = rerank(&rluts, rm, &refine, &short, 10).unwrap();
    for q in 0..3 {
        let mut want: Vec<Hit> = short[q]
            .iter()
            .map(|h| {
                let r = h.row as usize;
                let mut s = h.score;
                for j in 0..rm {
                    s += rluts[(q * rm + j) * KSUB + refine[r * rm + j] as usize];
                }
                Hit { score: s, ..*h }
            })
            .collect();
        want.sort_by(hit_order);
        want.truncate(10);
        assert_eq!(got[q], want);
    }
}

#[test]
fn cross_layer_merge_keeps_the_global_best_and_breaks_ties_by_layer() {
    let mut rng = SplitMix64::new(21);
    let nq = 6;
    let per_layer: Vec<Vec<Vec<Hit>>> = (0..3u16)
        .map(|layer| {
            (0..nq)
                .map(|_| {
                    (0..12)
                        .map(|_| Hit { row: rng.below(30) as u32, score: rng.below(9) as f32 / 4.0, layer })
                        .collect()
                })
                .collect()
        })
        .collect();
    let got = merge_layers(&per_layer, 10).unwrap();
    assert_eq!(got, merge_layers_reference(&per_layer, 10).unwrap());
    // Same row and score in two layers: the lower layer slot first.
    let tie = vec![
        vec![vec![Hit { row: 4, score: 0.5, layer: 1 }]],
        vec![vec![Hit { row: 4, score: 0.5, layer: 0 }, Hit { row: 2, score: 0.5, layer: 0 }]],
    ];
    let m = merge_layers(&tie, 3).unwrap();
    assert_eq!(m[0].iter().map(|h| (h.row, h.layer)).collect::<Vec<_>>(), vec![(2, 0), (4, 0), (4, 1)]);
    // Exact search per layer + merge = exact search over the union with layer tags.
    let d = 16;
    let (a, b) = (unit_rows(300, d, 30), unit_rows(300, d, 31));
    let q = unit_rows(4, d, 32);
    let merged = merge_layers(&[exact_topk(&a, d, &q, 7, 0).unwrap(), exact_topk(&b, d, &q, 7, 1).unwrap()], 7).unwrap();
    for (qi, hits) in merged.iter().enumerate() {
        let mut all: Vec<Hit> = exact_topk_reference(&a, d, &q[qi * d..(qi + 1) * d], 300, 0).unwrap().remove(0);
        all.extend(exact_topk_reference(&b, d, &q[qi * d..(qi + 1) * d], 300, 1).unwrap().remove(0));
        all.sort_by(hit_order);
        all.truncate(7);
        assert_eq!(hits, &all);
    }
}

#[test]
fn bad_requests_are_errors() {
    let d = 8;
    let bank = unit_rows(50, d, 40);
    let q = unit_rows(2, d, 41);
    assert!(matches!(exact_topk(&bank, d, &q, 0, 0), Err(SearchError::Invalid(_))), "k = 0");
    assert!(matches!(exact_topk(&bank, d, &q[..d + 1], 5, 0), Err(SearchError::Invalid(_))), "dimension mismatch");
    assert!(matches!(exact_topk(&[], d, &q, 5, 0), Err(SearchError::EmptyBank(_))));
    assert!(AdcScanner::new(&[0.0; 100], 4, 5, 0).is_err(), "tables not [nq, m, 256]");
    let mut sc = AdcScanner::new(&vec![0.0; 4 * KSUB], 4, 5, 0).unwrap();
    assert!(sc.scan_chunk(&[1, 2, 3], 0).is_err(), "ragged chunk");
    assert!(merge_layers(&[], 5).is_err());
    assert!(merge_layers(&[vec![vec![]], vec![]], 5).is_err(), "layers disagree on nq");
    let pq = ProductQuantizer::train(&bank, d, &PqParams { code_bytes: 2, refine_bytes: 2, train_size: 50, iters: 2, ..PqParams::default() }).unwrap();
    let enc = pq.encode(&bank).unwrap();
    let sp = PqSearchParams::default();
    assert!(matches!(pq_search(&pq, &[], None, &q, &sp), Err(SearchError::EmptyBank(_))));
    assert!(pq_search(&pq, &enc.codes, None, &q[..5], &sp).is_err(), "query dimension");
    assert!(pq_search(&pq, &enc.codes, Some(&enc.refine[..3]), &q, &sp).is_err(), "short refinement data");
    assert!(pq_search(&pq, &enc.codes, None, &q, &PqSearchParams { k: 0, ..sp.clone() }).is_err());
    assert!(rerank(&vec![0.0; 2 * 2 * KSUB], 2, &enc.refine, &[vec![Hit { row: 999, score: 0.0, layer: 0 }], vec![]], 1).is_err(), "row out of range");
}
