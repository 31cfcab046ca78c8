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

/// The identity `[d, d]`.
pub fn identity(d: usize) -> Vec<f32> {
    let mut r = vec![0f32; d * d];
    for i in 0..d {
        r[i * d + i] = 1.0;
    }
    r
}

/// Orthogonal Procrustes: the rotation `R` (`[d, d]`, `y = R x`) that
/// minimises `‖X R^T − Y‖_F` for rows `x` of `X` and `y` of `Y`, i.e. the
/// orthogonal polar factor of `M = Y^T X`.
///
/// `M` comes from one matrix product (candle's gemm, f32); the polar factor
/// from Higham's scaled Newton iteration `X ← (γX + γ⁻¹X⁻ᵀ)/2` in f64, which
/// converges quadratically whatever the conditioning of `M` (≈ 8 inverses
/// of a `d × d` matrix, well under a second at d = 576, against ~10 s for the
/// Jacobi eigendecomposition this replaced). Falls back to the identity if
/// `M` is numerically singular (no rotation is better than a wrong one).
pub fn procrustes(x: &[f32], y: &[f32], d: usize) -> Vec<f32> {
    let m = match gemm_tn(y, x, d) {
        Some(m) => m,
        None => xty(y, x, d), // [d, d] = Y^T X
    };
    polar(&m, d).unwrap_or_else(|| identity(d))
}

/// `A^T B` for row-major `A` `[n, d]` and `B` `[n, d]` with candle's gemm.
fn gemm_tn(a: &[f32], b: &[f32], d: usize) -> Option<Vec<f64>> {
    use candle_core::{Device, Tensor};
    let n = a.len() / d;
    let ta = Tensor::from_slice(a, (n, d), &Device::Cpu).ok()?;
    let tb = Tensor::from_slice(b, (n, d), &Device::Cpu).ok()?;
    let p = ta.t().ok()?.matmul(&tb).ok()?; // [d, d]
    let v: Vec<f32> = p.flatten_all().ok()?.to_vec1().ok()?;
    Some(v.into_iter().map(f64::from).collect())
}

/// `Y = X R^T` for rows `[n, d]` with candle's gemm (`None` on failure).
pub fn rotate_rows_gemm(r: &[f32], x: &[f32], d: usize) -> Option<Vec<f32>> {
    use candle_core::{Device, Tensor};
    let n = x.len() / d;
    let tx = Tensor::from_slice(x, (n, d), &Device::Cpu).ok()?;
    let tr = Tensor::from_slice(r, (d, d), &Device::Cpu).ok()?;
    tx.matmul(&tr.t().ok()?).ok()?.flatten_all().ok()?.to_vec1().ok()
}

/// Orthogonal polar factor of the square matrix `m` (`[d, d]`, row-major),
/// by the scaled Newton iteration (Higham, "Computing the polar
/// decomposition", 1986). `None` when `m` is singular.
fn polar(m: &[f64], d: usize) -> Option<Vec<f32>> {
    let fro = |a: &[f64]| a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let mut x = m.to_vec();
    for _ in 0..40 {
        let inv = inverse(&x, d)?;
        let g = (fro(&inv) / fro(&x).max(f64::MIN_POSITIVE)).sqrt();
        let mut next = vec![0f64; d * d];
        let mut delta = 0.0;
        for i in 0..d {
            for j in 0..d {
                // X^{-T}[i][j] = inv[j][i]
                let v = 0.5 * (g * x[i * d + j] + inv[j * d + i] / g);
                delta += (v - x[i * d + j]).powi(2);
                next[i * d + j] = v;
            }
        }
        x = next;
        if delta.sqrt() <= 1e-12 * fro(&x) {
            break;
        }
    }
    Some(x.into_iter().map(|v| v as f32).collect())
}

/// Inverse of the square matrix `a` (`[d, d]`) by Gauss–Jordan elimination
/// with partial pivoting; `None` when a pivot vanishes.
fn inverse(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let w = 2 * d;
    let mut t = vec![0f64; d * w];
    for i in 0..d {
        t[i * w..i * w + d].copy_from_slice(&a[i * d..(i + 1) * d]);
        t[i * w + d + i] = 1.0;
    }
    let scale = a.iter().fold(0f64, |s, v| s.max(v.abs())).max(f64::MIN_POSITIVE);
    for col in 0..d {
        let piv = (col..d).max_by(|&i, &j| t[i * w + col].abs().total_cmp(&t[j * w + col].abs()))?;
        let pv = t[piv * w + col];
        if pv.abs() <= 1e-13 * scale {
            return None;
        }
        if piv != col {
            for k in 0..w {
                t.swap(piv * w + k, col * w + k);
            }
        }
        let inv_p = 1.0 / pv;
        for k in 0..w {
            t[col * w + k] *= inv_p;
        }
        let pivot_row: Vec<f64> = t[col * w..(col + 1) * w].to_vec();
        for i in 0..d {
            if i == col {
                continue;
            }
            let f = t[i * w + col];
            if f == 0.0 {
                continue;
            }
            for (v, p) in t[i * w..(i + 1) * w].iter_mut().zip(&pivot_row) {
                *v -= f * p;
            }
        }
    }
    let mut out = vec![0f64; d * d];
    for i in 0..d {
        out[i * d..(i + 1) * d].copy_from_slice(&t[i * w + d..(i + 1) * w]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The polar factor of `Q S` (Q orthogonal, S symmetric positive
    /// definite) is Q, and Procrustes recovers a known rotation.
    #[test]
    fn procrustes_recovers_a_rotation() {
        let d = 24;
        let n = 400;
        let mut rng = super::super::rng::SplitMix64::new(7);
        let x: Vec<f32> = (0..n * d).map(|_| rng.next_f64() as f32 - 0.5).collect();
        // A rotation from PCA of random data (orthogonal rows).
        let r = pca_balanced_rotation(&x, d, 4);
        let y = rotate_rows_gemm(&r, &x, d).expect("gemm");
        let got = procrustes(&x, &y, d);
        let err = got.iter().zip(&r).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-4, "max |R - R*| = {err}");
        // orthogonality
        for i in 0..d {
            for j in 0..d {
                let dot: f32 = (0..d).map(|k| got[i * d + k] * got[j * d + k]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-4, "R R^T [{i}][{j}] = {dot}");
            }
        }
    }

    #[test]
    fn singular_input_gives_identity() {
        let d = 5;
        let x = vec![0f32; 10 * d];
        assert_eq!(procrustes(&x, &x, d), identity(d));
    }
}
