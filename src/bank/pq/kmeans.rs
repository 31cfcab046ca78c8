//! k-means with k-means++ seeding (Arthur & Vassilvitskii 2007) for the
//! sub-quantizer codebooks. Deterministic for a given seed: assignments are
//! per point (order independent) and centroid sums are accumulated in f64 in
//! point order, so threads never change the result.
//! Empty clusters are re-seeded by splitting the largest one, as faiss's
//! `Clustering` does.

use super::rng::SplitMix64;

/// Squared L2 distance. Eight independent partial sums (a fixed order, so
/// still deterministic) let the compiler vectorise the loop: k-means and
/// encoding spend nearly all their time here.
#[inline]
pub(crate) fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let t = x[i] - y[i];
            acc[i] += t * t;
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        let t = x - y;
        s += t * t;
    }
    s
}

/// Index of the nearest centroid of `x` among `centroids` (`[k, dsub]`),
/// lowest index on ties.
#[inline]
pub(crate) fn nearest(x: &[f32], centroids: &[f32], dsub: usize) -> (usize, f32) {
    let mut best = (0usize, f32::INFINITY);
    for (c, cent) in centroids.chunks_exact(dsub).enumerate() {
        let d = l2sq(x, cent);
        if d < best.1 {
            best = (c, d);
        }
    }
    best
}

/// Train `k` centroids on `data` (`[n, dsub]`, n >= 1) with `iters` Lloyd
/// iterations after k-means++ seeding. Returns `[k, dsub]`.
/// With fewer distinct points than `k`, some centroids repeat (harmless:
/// encoding picks the lowest index).
pub(crate) fn kmeans(data: &[f32], dsub: usize, k: usize, iters: usize, seed: u64) -> Vec<f32> {
    let n = data.len() / dsub;
    let mut rng = SplitMix64::new(seed);
    let mut cent = kmeanspp(data, dsub, k, &mut rng);
    if n == 0 {
        return cent;
    }
    lloyd(data, dsub, &mut cent, iters);
    cent
}

/// `iters` Lloyd iterations on `data` (`[n, dsub]`) from the centroids
/// `cent` (`[k, dsub]`, updated in place): the warm start of OPQ's
/// alternating optimisation, where the codebooks of the previous rotation
/// are the best starting point for the next.
pub(crate) fn lloyd(data: &[f32], dsub: usize, cent: &mut [f32], iters: usize) {
    let n = data.len() / dsub;
    let k = cent.len() / dsub.max(1);
    if n == 0 || k == 0 {
        return;
    }
    let mut assign = vec![u32::MAX; n];
    for _ in 0..iters {
        let mut changed = 0usize;
        for (i, x) in data.chunks_exact(dsub).enumerate() {
            let (c, _) = nearest(x, cent, dsub);
            if assign[i] != c as u32 {
                changed += 1;
                assign[i] = c as u32;
            }
        }
        // Update: mean of the assigned points, in f64, in point order.
        let mut sums = vec![0f64; k * dsub];
        let mut counts = vec![0usize; k];
        for (i, x) in data.chunks_exact(dsub).enumerate() {
            let c = assign[i] as usize;
            counts[c] += 1;
            for (s, v) in sums[c * dsub..(c + 1) * dsub].iter_mut().zip(x) {
                *s += *v as f64;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for t in 0..dsub {
                    cent[c * dsub + t] = (sums[c * dsub + t] / counts[c] as f64) as f32;
                }
            }
        }
        // Empty clusters: split the largest cluster (symmetric perturbation).
        for c in 0..k {
            if counts[c] != 0 {
                continue;
            }
            let big = (0..k).max_by_key(|&j| (counts[j], std::cmp::Reverse(j))).unwrap_or(0);
            if counts[big] < 2 {
                break;
            }
            for t in 0..dsub {
                let v = cent[big * dsub + t];
                let eps = 1.0 / 1024.0 * if t % 2 == 0 { 1.0 } else { -1.0 };
                cent[c * dsub + t] = v * (1.0 + eps) + eps * 1e-3;
                cent[big * dsub + t] = v * (1.0 - eps) - eps * 1e-3;
            }
            counts[c] = counts[big] / 2;
            counts[big] -= counts[c];
        }
        if changed == 0 {
            break;
        }
    }
}

/// k-means++ seeding: first centre uniform, then each next one drawn with
/// probability proportional to the squared distance to the nearest centre.
fn kmeanspp(data: &[f32], dsub: usize, k: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let n = data.len() / dsub;
    let mut cent = vec![0f32; k * dsub];
    if n == 0 {
        return cent;
    }
    let first = rng.below(n);
    cent[..dsub].copy_from_slice(&data[first * dsub..(first + 1) * dsub]);
    let mut d2: Vec<f32> = data.chunks_exact(dsub).map(|x| l2sq(x, &cent[..dsub])).collect();
    for c in 1..k {
        let total: f64 = d2.iter().map(|&v| v as f64).sum();
        let pick = if total > 0.0 {
            let mut r = rng.next_f64() * total;
            let mut pick = n - 1;
            for (i, &v) in d2.iter().enumerate() {
                r -= v as f64;
                if r < 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        } else {
            rng.below(n)
        };
        let (head, tail) = cent.split_at_mut(c * dsub);
        let _ = head;
        tail[..dsub].copy_from_slice(&data[pick * dsub..(pick + 1) * dsub]);
        let newc = &cent[c * dsub..(c + 1) * dsub];
        for (x, dv) in data.chunks_exact(dsub).zip(d2.iter_mut()) {
            let d = l2sq(x, newc);
            if d < *dv {
                *dv = d;
            }
        }
    }
    cent
}
