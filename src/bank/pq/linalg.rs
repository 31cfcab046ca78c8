//! The little dense linear algebra the rotation training needs: a symmetric
//! eigendecomposition (cyclic Jacobi, f64), PCA with balanced allocation of
//! principal directions to sub-spaces (Ge et al., "Optimized product
//! quantization", parametric solution), and the orthogonal Procrustes step
//! of non-parametric OPQ. Sizes are small (d ≤ a few thousand) and this runs
//! once at training time, so clarity wins over speed.

/// Eigen-decomposition of the symmetric matrix `a` (`[d, d]`, row-major).
/// Returns eigenvalues (descending) and eigenvectors as rows `[d, d]`.
pub fn sym_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    // v holds eigenvectors as rows (v = product of rotations, transposed).
    let mut v = vec![0f64; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let frob: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    for _sweep in 0..50 {
        let mut off = 0.0;
        for p in 0..d {
            for q in p + 1..d {
                off += a[p * d + q] * a[p * d + q];
            }
        }
        if off.sqrt() <= 1e-12 * frob {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let app = a[p * d + p];
                let aqq = a[q * d + q];
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A' = J^T A J on rows/cols p, q.
                for k in 0..d {
                    let akp = a[k * d + p];
                    let akq = a[k * d + q];
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let apk = a[p * d + k];
                    let aqk = a[q * d + k];
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let vp = v[p * d + k];
                    let vq = v[q * d + k];
                    v[p * d + k] = c * vp - s * vq;
                    v[q * d + k] = s * vp + c * vq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| a[j * d + j].total_cmp(&a[i * d + i]).then(i.cmp(&j)));
    let vals = order.iter().map(|&i| a[i * d + i]).collect();
    let mut vecs = Vec::with_capacity(d * d);
    for &i in &order {
        vecs.extend_from_slice(&v[i * d..(i + 1) * d]);
    }
    (vals, vecs)
}

/// `X^T Y` for row-major `[n, d]` matrices, in f64: `[d, d]`.
fn xty(x: &[f32], y: &[f32], d: usize) -> Vec<f64> {
    let n = x.len() / d;
    let rows: Vec<Vec<f64>> = super::map_indices(d, |i| {
        let mut row = vec![0f64; d];
        for r in 0..n {
            let xi = x[r * d + i] as f64;
            if xi == 0.0 {
                continue;
            }
            for (o, &yv) in row.iter_mut().zip(&y[r * d..(r + 1) * d]) {
                *o += xi * yv as f64;
            }
        }
        row
    });
    rows.concat()
}

/// PCA rotation `[d, d]` (rows = principal directions) whose rows are
/// grouped into `m` sub-spaces of `d / m` rows with balanced variance:
/// directions in decreasing eigenvalue order go to the non-full sub-space
/// with the smallest product of eigenvalues so far (Ge et al. 2014, eq. 13).
/// Data is centred only for the covariance; the rotation itself is linear.
pub fn pca_balanced_rotation(data: &[f32], d: usize, m: usize) -> Vec<f32> {
    let n = (data.len() / d).min(16_384).max(1);
    let data = &data[..n.min(data.len() / d) * d];
    let n = data.len() / d;
    let mut mean = vec![0f64; d];
    for row in data.chunks_exact(d) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64;
        }
    }
    for m in &mut mean {
        *m /= n.max(1) as f64;
    }
    let centred: Vec<f32> = data.chunks_exact(d).flat_map(|r| r.iter().zip(&mean).map(|(x, m)| (*x as f64 - m) as f32)).collect();
    let mut cov = xty(&centred, &centred, d);
    for c in &mut cov {
        *c /= n.max(1) as f64;
    }
    let (vals, vecs) = sym_eigen(&cov, d);
    let dsub = d / m.max(1);
    let mut fill = vec![0usize; m];
    let mut logprod = vec![0f64; m];
    let mut rows = vec![0f32; d * d];
    for (i, &ev) in vals.iter().enumerate() {
        let mut best = usize::MAX;
        for j in 0..m {
            if fill[j] < dsub && (best == usize::MAX || logprod[j] < logprod[best]) {
                best = j;
            }
        }
        if best == usize::MAX {
            break;
        }
        let dst = best * dsub + fill[best];
        fill[best] += 1;
        logprod[best] += ev.max(1e-12).ln();
        for k in 0..d {
            rows[dst * d + k] = vecs[i * d + k] as f32;
        }
    }
    rows
}

/// Orthogonal Procrustes: the rotation `R` (`[d, d]`, `y = R x`) that
/// minimises `‖X R^T − Y‖_F` for rows `x` of `X` and `y` of `Y`, i.e. the
/// polar factor of `M = Y^T X` (R = M (MᵀM)^{-1/2}), computed from the
/// eigendecomposition of `MᵀM`.
pub fn procrustes(x: &[f32], y: &[f32], d: usize) -> Vec<f32> {
    let m = xty(y, x, d); // [d, d] = Y^T X
    // MtM = M^T M
    let mut mtm = vec![0f64; d * d];
    for i in 0..d {
        for k in 0..d {
            let mki = m[k * d + i];
            if mki == 0.0 {
                continue;
            }
            for j in 0..d {
                mtm[i * d + j] += mki * m[k * d + j];
            }
        }
    }
    let (vals, vecs) = sym_eigen(&mtm, d);
    let top = vals.first().copied().unwrap_or(0.0).max(f64::MIN_POSITIVE);
    // (MtM)^{-1/2} = V diag(1/sqrt(λ)) V^T, with V's columns = vecs' rows.
    let mut inv_sqrt = vec![0f64; d * d];
    for (e, &lam) in vals.iter().enumerate() {
        let w = 1.0 / lam.max(top * 1e-12).sqrt();
        let v = &vecs[e * d..(e + 1) * d];
        for i in 0..d {
            let vi = v[i] * w;
            for j in 0..d {
                inv_sqrt[i * d + j] += vi * v[j];
            }
        }
    }
    let mut r = vec![0f32; d * d];
    for i in 0..d {
        for j in 0..d {
            let mut s = 0.0;
            for k in 0..d {
                s += m[i * d + k] * inv_sqrt[k * d + j];
            }
            r[i * d + j] = s as f32;
        }
    }
    r
}
