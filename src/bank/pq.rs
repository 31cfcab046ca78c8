//! Product quantizer for the contextual bank: k-means codebooks (k-means++
//! seeding, fixed seed), 8-bit sub-quantizers, encode / decode, and
//! asymmetric-distance lookup tables (ADC) for inner product on
//! L2-normalised vectors.
//!
//! Reference: Jégou, Douze, Schmid, "Product quantization for nearest
//! neighbor search" (TPAMI 2011); rotation as in Ge et al., "Optimized
//! product quantization" (TPAMI 2014); residual stages as in Chen et al.,
//! "Approximate nearest neighbor search by residual vector quantization"
//! (2010). faiss's `ProductQuantizer` is the independent implementation the
//! benchmark compares with.
//!
//! ## Structure (see CONTRACT.md "Search data layout")
//! A quantizer is an optional orthogonal rotation `R` (`[d, d]`) followed by
//! additive *stages*; stage `s` is a product quantizer with `m_s` bytes over
//! sub-spaces of `dsub_s = d / m_s` dimensions that encodes the residual left
//! by the stages before it. The first `scan_stages` stages form the scanned
//! code (`code_bytes` = Σ m_s over them); the remaining stages are the
//! optional refinement data (`refine_bytes`) used only to rerank a
//! shortlist. Every byte `j` of either string scores additively:
//! `score(row) = Σ_j LUT[j][code[row][j]]`, `LUT[j][c] = dot((R q)_j, C_j[c])`,
//! with `(R q)_j` the rotated query restricted to the sub-space of byte `j`.

pub mod kmeans;
pub mod linalg;
pub mod rng;

use crate::bank::BankError;
use rng::SplitMix64;

/// Centroids per sub-quantizer (8-bit codes).
pub const KSUB: usize = 256;
/// Largest vector dimension accepted (bounds every allocation from a blob).
pub const MAX_DIM: usize = 1 << 16;
/// Largest number of code bytes per row accepted, scan and refine together.
pub const MAX_BYTES: usize = 4096;

const MAGIC: &[u8; 8] = b"LLPQ\0\0\0\x01";
const VERSION: u32 = 1;

/// Errors of training, coding or (de)serialising a quantizer.
#[derive(Debug, thiserror::Error)]
pub enum PqError {
    /// A shape or parameter does not fit (dimension mismatch, bad M, …).
    #[error("product quantizer: {0}")]
    Invalid(String),
    /// A serialised quantizer blob is corrupt, truncated or of another version.
    #[error("corrupt product-quantizer blob: {0} (rebuild the bank with this version of latentlens)")]
    Corrupt(String),
}

impl From<PqError> for BankError {
    fn from(e: PqError) -> Self {
        BankError::Invalid(e.to_string())
    }
}

impl From<PqError> for crate::Error {
    fn from(e: PqError) -> Self {
        crate::Error::Bank(e.into())
    }
}

/// How the rotation applied before quantization is learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationKind {
    /// No rotation (plain PQ).
    None,
    /// PCA, with principal directions dealt to sub-spaces so each gets a
    /// balanced share of the variance (Ge et al.'s parametric OPQ init).
    Pca,
    /// `iters` rounds of non-parametric OPQ (alternate warm-started
    /// codebooks / orthogonal Procrustes), starting from the identity.
    Opq { iters: usize },
}

/// Training parameters.
#[derive(Clone, Debug)]
pub struct PqParams {
    /// Bytes of the scanned code per row, split over `stage_bytes`-sized
    /// residual stages (the first stage has `code_bytes` bytes when
    /// `scan_stages == 1`). Must divide into sub-spaces: `d % m == 0` per stage.
    pub code_bytes: usize,
    /// Number of additive stages the scanned code is split into (1 = plain PQ;
    /// 2 = PQ + a residual PQ of the same width, …). `code_bytes % scan_stages == 0`.
    pub scan_stages: usize,
    /// Bytes of residual refinement data per row (0 = none), one stage.
    pub refine_bytes: usize,
    /// Rotation learned before quantization.
    pub rotation: RotationKind,
    /// Training subsample size (rows drawn with the seed).
    pub train_size: usize,
    /// Lloyd iterations per k-means.
    pub iters: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Score-aware (anisotropic) encoding weight η ≥ 1 (Guo et al. 2020, ScaNN): codes
    /// minimise `‖e‖² + (η − 1)·⟨x, e⟩²/‖x‖²` for the error `e = x − x̂`, i.e. the error
    /// along `x` (which shifts the scores of `x`'s nearest neighbours) costs η times the
    /// error across it. 1 = nearest centroids. Used by [`ProductQuantizer::encode_with`]
    /// callers that take their parameters from here (the bank builder, `bench search`).
    pub eta: f32,
}

impl Default for PqParams {
    fn default() -> Self {
        Self {
            code_bytes: 72,
            scan_stages: 1,
            refine_bytes: 0,
            rotation: RotationKind::None,
            train_size: 65_536,
            iters: 20,
            seed: 0x1a7e_271e,
            eta: 1.0,
        }
    }
}

/// Coordinate-descent rounds of score-aware encoding ([`PqParams::eta`]).
pub const ANISO_PASSES: usize = 4;

/// One additive product-quantizer stage: `m` sub-quantizers of [`KSUB`]
/// centroids over `dsub = d / m` dimensions.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// Bytes (sub-quantizers) of this stage.
    pub m: usize,
    /// Dimensions per sub-space.
    pub dsub: usize,
    /// Centroids `[m, 256, dsub]`.
    pub centroids: Vec<f32>,
}

impl Stage {
    /// Centroids of sub-quantizer `j`: `[256, dsub]`.
    fn codebook(&self, j: usize) -> &[f32] {
        &self.centroids[j * KSUB * self.dsub..(j + 1) * KSUB * self.dsub]
    }
}

/// A trained quantizer (see the module docs for the structure).
#[derive(Clone, Debug, PartialEq)]
pub struct ProductQuantizer {
    d: usize,
    /// Orthogonal rotation `[d, d]`, row-major: `y = R x`.
    rotation: Option<Vec<f32>>,
    stages: Vec<Stage>,
    scan_stages: usize,
}

/// Codes of a batch of rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Encoded {
    /// Scanned codes `[n, code_bytes]`.
    pub codes: Vec<u8>,
    /// Refinement codes `[n, refine_bytes]` (empty when `refine_bytes == 0`).
    pub refine: Vec<u8>,
}

fn check_rows(what: &str, data: &[f32], d: usize) -> Result<usize, PqError> {
    if d == 0 || data.len() % d != 0 {
        return Err(PqError::Invalid(format!(
            "{what}: {} floats is not a whole number of rows of dimension {d}; pass row-major [n, {d}] data",
            data.len()
        )));
    }
    Ok(data.len() / d)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

/// Run `f(i, out_row)` for every row of `out` (`[n, w]`), in parallel when
/// the native "cli" feature brings rayon; results never depend on threads.
pub(crate) fn for_rows<T: Send, F>(out: &mut [T], w: usize, f: F)
where
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    if w == 0 {
        return;
    }
    #[cfg(feature = "cli")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(w).enumerate().for_each(|(i, r)| f(i, r));
    }
    #[cfg(not(feature = "cli"))]
    {
        out.chunks_mut(w).enumerate().for_each(|(i, r)| f(i, r));
    }
}

/// Map `f` over `0..n` (parallel with rayon when available), in order.
pub(crate) fn map_indices<T: Send, F>(n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> T + Sync + Send,
{
    #[cfg(feature = "cli")]
    {
        use rayon::prelude::*;
        (0..n).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "cli"))]
    {
        (0..n).map(f).collect()
    }
}

impl ProductQuantizer {
    /// Train on `data` (`[n, d]` row-major, L2-normalised rows recommended).
    /// Rows beyond `params.train_size` are subsampled with the seed.
    pub fn train(data: &[f32], d: usize, params: &PqParams) -> Result<Self, PqError> {
        if d == 0 || d > MAX_DIM {
            return Err(PqError::Invalid(format!("dimension {d} must be in 1..={MAX_DIM}")));
        }
        let n = check_rows("training data", data, d)?;
        if n == 0 {
            return Err(PqError::Invalid("no training rows: a quantizer needs at least one vector".into()));
        }
        let p = params;
        if p.code_bytes == 0 || p.scan_stages == 0 || p.code_bytes % p.scan_stages != 0 {
            return Err(PqError::Invalid(format!(
                "code_bytes {} must be a positive multiple of scan_stages {}",
                p.code_bytes, p.scan_stages
            )));
        }
        if p.code_bytes + p.refine_bytes > MAX_BYTES {
            return Err(PqError::Invalid(format!("code_bytes + refine_bytes must be at most {MAX_BYTES}")));
        }
        let mut stage_ms = vec![p.code_bytes / p.scan_stages; p.scan_stages];
        if p.refine_bytes > 0 {
            stage_ms.push(p.refine_bytes);
        }
        for &m in &stage_ms {
            if d % m != 0 {
                return Err(PqError::Invalid(format!(
                    "{m} sub-quantizers do not divide dimension {d}; choose a byte count that divides {d}"
                )));
            }
        }
        if p.iters > 1000 {
            return Err(PqError::Invalid("iters must be at most 1000".into()));
        }

        // Training subsample. [nt, d]
        let mut rng = SplitMix64::new(p.seed);
        let rows = rng.sample_indices(n, p.train_size.max(1));
        let mut train: Vec<f32> = Vec::with_capacity(rows.len() * d);
        for &r in &rows {
            train.extend_from_slice(&data[r * d..(r + 1) * d]);
        }

        let first_m = stage_ms[0];
        // Warm-started first-stage codebooks (set by OPQ) for the final training.
        let mut warm: Option<Stage> = None;
        let rotation = match p.rotation {
            RotationKind::None => None,
            RotationKind::Pca => Some(linalg::pca_balanced_rotation(&train, d, first_m)),
            RotationKind::Opq { iters } => {
                // Non-parametric OPQ (Ge et al. 2014) as faiss's OPQMatrix runs
                // it: alternate a few warm-started Lloyd iterations of the
                // codebooks on the rotated data with the orthogonal Procrustes
                // update of R. It starts from the identity (plain PQ): the
                // PCA-balanced start measured far worse on LLM hidden states
                // (faiss PQ72 on 30k SmolLM2 layer-16 vectors: recall@10 0.547
                // after a PCA-balanced rotation vs 0.743 without), and every
                // step from plain PQ can only lower the reconstruction error.
                let opq_rows = 16_384.min(rows.len());
                let sub = &train[..opq_rows * d];
                let mut r = linalg::identity(d);
                let mut st = train_stage(sub, d, first_m, 4.min(p.iters).max(1), p.seed ^ 0x0b0);
                for _ in 0..iters {
                    let y = linalg::rotate_rows_gemm(&r, sub, d).unwrap_or_else(|| rotate_rows(&r, sub, d)); // [nt, d]
                    st.lloyd(&y, d, 4);
                    let yhat = st.decode_all(&st.encode_all(&y, d), d); // [nt, d]
                    // maximise tr(R X^T Yhat): R = polar(Yhat^T X)
                    r = linalg::procrustes(sub, &yhat, d);
                }
                warm = Some(st);
                Some(r)
            }
        };
        let mut resid = match &rotation {
            Some(r) => linalg::rotate_rows_gemm(r, &train, d).unwrap_or_else(|| rotate_rows(r, &train, d)),
            None => train,
        };
        let mut stages = Vec::with_capacity(stage_ms.len());
        for (s, &m) in stage_ms.iter().enumerate() {
            let st = match (s, warm.take()) {
                (0, Some(mut st)) => {
                    st.lloyd(&resid, d, p.iters);
                    st
                }
                _ => train_stage(&resid, d, m, p.iters, p.seed.wrapping_add(0x5eed_0000 + s as u64)),
            };
            if s + 1 < stage_ms.len() {
                let codes = st.encode_all(&resid, d);
                let rec = st.decode_all(&codes, d);
                for (x, y) in resid.iter_mut().zip(&rec) {
                    *x -= y;
                }
            }
            stages.push(st);
        }
        Ok(Self { d, rotation, stages, scan_stages: p.scan_stages })
    }

    /// Vector dimension.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Bytes of the scanned code per row (M of the LUT).
    pub fn code_bytes(&self) -> usize {
        self.stages[..self.scan_stages].iter().map(|s| s.m).sum()
    }

    /// Bytes of refinement data per row (0 when there is none).
    pub fn refine_bytes(&self) -> usize {
        self.stages[self.scan_stages..].iter().map(|s| s.m).sum()
    }

    /// The rotation `[d, d]` (row-major, `y = R x`), if any.
    pub fn rotation(&self) -> Option<&[f32]> {
        self.rotation.as_deref()
    }

    /// All stages, scanned ones first.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Number of leading stages that form the scanned code.
    pub fn scan_stages(&self) -> usize {
        self.scan_stages
    }

    /// Rotate rows `[n, d]` into the quantizer's space (a copy when no rotation).
    pub fn rotate(&self, data: &[f32]) -> Result<Vec<f32>, PqError> {
        check_rows("rotate", data, self.d)?;
        Ok(match &self.rotation {
            Some(r) => rotate_rows(r, data, self.d),
            None => data.to_vec(),
        })
    }

    /// Encode rows `[n, d]`: scanned codes `[n, code_bytes]` and refinement
    /// codes `[n, refine_bytes]` (each stage encodes the previous residual).
    pub fn encode(&self, data: &[f32]) -> Result<Encoded, PqError> {
        self.encode_with(data, 1.0)
    }

    /// [`Self::encode`] with score-aware codes for `eta > 1` (see [`PqParams::eta`]):
    /// each stage starts from its nearest centroids, then [`ANISO_PASSES`] rounds of
    /// coordinate descent over its sub-quantizers lower the stage's anisotropic loss of
    /// the *total* error so far. Deterministic; decoding is unchanged.
    pub fn encode_with(&self, data: &[f32], eta: f32) -> Result<Encoded, PqError> {
        let n = check_rows("encode", data, self.d)?;
        if !(eta.is_finite() && eta >= 1.0) {
            return Err(PqError::Invalid(format!("anisotropic weight eta = {eta}: it must be a finite number >= 1 (1 = plain PQ)")));
        }
        let d = self.d;
        let (cb, rb) = (self.code_bytes(), self.refine_bytes());
        let total = cb + rb;
        let mut all = vec![0u8; n * total];
        let rot = self.rotation.as_deref();
        for_rows(&mut all, total, |i, out| {
            let x = &data[i * d..(i + 1) * d];
            let mut r = match rot {
                Some(r) => rotate_one(r, x, d),
                None => x.to_vec(),
            };
            let y = if eta > 1.0 { r.clone() } else { Vec::new() };
            let mut off = 0;
            for st in &self.stages {
                st.encode_one(&r, &mut out[off..off + st.m]);
                if eta > 1.0 {
                    st.anisotropic(&y, &r, eta, &mut out[off..off + st.m]);
                }
                st.subtract(&out[off..off + st.m], &mut r);
                off += st.m;
            }
        });
        let mut enc = Encoded { codes: Vec::with_capacity(n * cb), refine: Vec::with_capacity(n * rb) };
        for row in all.chunks_exact(total) {
            enc.codes.extend_from_slice(&row[..cb]);
            enc.refine.extend_from_slice(&row[cb..]);
        }
        Ok(enc)
    }

    /// Reconstruct rows in the *original* space from scanned codes
    /// (`[n, code_bytes]`) and, optionally, refinement codes (`[n, refine_bytes]`).
    pub fn decode(&self, codes: &[u8], refine: Option<&[u8]>) -> Result<Vec<f32>, PqError> {
        let cb = self.code_bytes();
        let rb = self.refine_bytes();
        if cb == 0 || codes.len() % cb != 0 {
            return Err(PqError::Invalid(format!("decode: {} code bytes is not [n, {cb}]", codes.len())));
        }
        let n = codes.len() / cb;
        if let Some(rf) = refine {
            if rf.len() != n * rb {
                return Err(PqError::Invalid(format!(
                    "decode: refinement data has {} bytes, expected {n} rows × {rb}",
                    rf.len()
                )));
            }
        }
        let d = self.d;
        let mut out = vec![0f32; n * d];
        for_rows(&mut out, d, |i, y| {
            let mut off = 0;
            let row = &codes[i * cb..(i + 1) * cb];
            for st in &self.stages[..self.scan_stages] {
                st.add(&row[off..off + st.m], y);
                off += st.m;
            }
            if let Some(rf) = refine {
                let row = &rf[i * rb..(i + 1) * rb];
                let mut off = 0;
                for st in &self.stages[self.scan_stages..] {
                    st.add(&row[off..off + st.m], y);
                    off += st.m;
                }
            }
            if let Some(r) = &self.rotation {
                // x = R^T y
                let mut x = vec![0f32; d];
                for (k, &yk) in y.iter().enumerate() {
                    for (xv, rv) in x.iter_mut().zip(&r[k * d..(k + 1) * d]) {
                        *xv += yk * rv;
                    }
                }
                y.copy_from_slice(&x);
            }
        });
        Ok(out)
    }

    /// Lookup tables of the scanned code for a batch of queries `[nq, d]`:
    /// `[nq, code_bytes, 256]`, `LUT[q][j][c] = dot((R q)_j, C_j[c])`.
    pub fn lut(&self, queries: &[f32]) -> Result<Vec<f32>, PqError> {
        self.luts_for(queries, 0..self.scan_stages)
    }

    /// Lookup tables of the refinement data: `[nq, refine_bytes, 256]`
    /// (empty when there is no refinement stage).
    pub fn refine_lut(&self, queries: &[f32]) -> Result<Vec<f32>, PqError> {
        self.luts_for(queries, self.scan_stages..self.stages.len())
    }

    fn luts_for(&self, queries: &[f32], stages: std::ops::Range<usize>) -> Result<Vec<f32>, PqError> {
        let nq = check_rows("lookup tables", queries, self.d)?;
        let d = self.d;
        let m: usize = self.stages[stages.clone()].iter().map(|s| s.m).sum();
        let w = m * KSUB;
        let mut out = vec![0f32; nq * w];
        let rot = self.rotation.as_deref();
        for_rows(&mut out, w, |i, lut| {
            let q = &queries[i * d..(i + 1) * d];
            let qr = match rot {
                Some(r) => rotate_one(r, q, d),
                None => q.to_vec(),
            };
            let mut off = 0;
            for st in &self.stages[stages.clone()] {
                for j in 0..st.m {
                    let qs = &qr[j * st.dsub..(j + 1) * st.dsub];
                    let book = st.codebook(j);
                    let row = &mut lut[(off + j) * KSUB..(off + j + 1) * KSUB];
                    for (c, v) in row.iter_mut().enumerate() {
                        *v = dot(qs, &book[c * st.dsub..(c + 1) * st.dsub]);
                    }
                }
                off += st.m;
            }
        });
        Ok(out)
    }

    /// Serialise to a self-describing, checksummed byte blob (little-endian):
    /// magic "LLPQ\0\0\0\x01", u32 version, u32 d, u32 has_rotation,
    /// u32 n_stages, u32 scan_stages, per stage (u32 m, u32 dsub), the
    /// rotation `[d, d]` f32 if present, each stage's centroids
    /// `[m, 256, dsub]` f32, and a trailing u32 CRC-32 of everything before it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        for v in [VERSION, self.d as u32, self.rotation.is_some() as u32, self.stages.len() as u32, self.scan_stages as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for st in &self.stages {
            b.extend_from_slice(&(st.m as u32).to_le_bytes());
            b.extend_from_slice(&(st.dsub as u32).to_le_bytes());
        }
        if let Some(r) = &self.rotation {
            for v in r {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        for st in &self.stages {
            for v in &st.centroids {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parse and validate a blob written by [`ProductQuantizer::to_bytes`].
    /// Every size is checked against the blob length before allocating.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PqError> {
        let bad = |m: String| PqError::Corrupt(m);
        if bytes.len() < MAGIC.len() + 24 + 4 {
            return Err(bad(format!("{} bytes is too short for a header", bytes.len())));
        }
        if &bytes[..8] != MAGIC {
            return Err(bad("bad magic (not a latentlens PQ blob)".into()));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let crc = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if crc32fast::hash(body) != crc {
            return Err(bad("checksum mismatch".into()));
        }
        let mut pos = 8usize;
        let u32_at = |pos: &mut usize| -> Result<usize, PqError> {
            let s = body.get(*pos..*pos + 4).ok_or_else(|| bad("truncated header".into()))?;
            *pos += 4;
            Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
        };
        let version = u32_at(&mut pos)?;
        if version != VERSION as usize {
            return Err(bad(format!("version {version}, this build reads version {VERSION}")));
        }
        let d = u32_at(&mut pos)?;
        let has_rot = u32_at(&mut pos)?;
        let n_stages = u32_at(&mut pos)?;
        let scan_stages = u32_at(&mut pos)?;
        if d == 0 || d > MAX_DIM {
            return Err(bad(format!("dimension {d} out of range 1..={MAX_DIM}")));
        }
        if has_rot > 1 {
            return Err(bad("rotation flag must be 0 or 1".into()));
        }
        if n_stages == 0 || n_stages > 64 || scan_stages == 0 || scan_stages > n_stages {
            return Err(bad(format!("{n_stages} stages with {scan_stages} scanned is not valid")));
        }
        let mut shapes = Vec::with_capacity(n_stages);
        let mut total_m = 0usize;
        for _ in 0..n_stages {
            let m = u32_at(&mut pos)?;
            let dsub = u32_at(&mut pos)?;
            if m == 0 || m > MAX_BYTES || dsub == 0 || m.checked_mul(dsub) != Some(d) {
                return Err(bad(format!("stage shape m={m}, dsub={dsub} does not tile dimension {d}")));
            }
            total_m += m;
            shapes.push((m, dsub));
        }
        if total_m > MAX_BYTES {
            return Err(bad(format!("{total_m} code bytes per row exceeds {MAX_BYTES}")));
        }
        // Exact length check before any allocation: every float is accounted for.
        let floats = has_rot * d * d + shapes.iter().map(|&(m, dsub)| m * KSUB * dsub).sum::<usize>();
        if body.len() != pos + floats * 4 {
            return Err(bad(format!(
                "length {} does not match the header (expected {})",
                bytes.len(),
                pos + floats * 4 + 4
            )));
        }
        let read_f32s = |count: usize, pos: &mut usize| -> Result<Vec<f32>, PqError> {
            let s = &body[*pos..*pos + count * 4];
            *pos += count * 4;
            let v: Vec<f32> = s.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(PqError::Corrupt("non-finite value in parameters".into()));
            }
            Ok(v)
        };
        let rotation = if has_rot == 1 { Some(read_f32s(d * d, &mut pos)?) } else { None };
        let mut stages = Vec::with_capacity(n_stages);
        for (m, dsub) in shapes {
            stages.push(Stage { m, dsub, centroids: read_f32s(m * KSUB * dsub, &mut pos)? });
        }
        Ok(Self { d, rotation, stages, scan_stages })
    }
}

impl Stage {
    /// Encode one vector (stage space, `[d]`) into `out` (`[m]`).
    fn encode_one(&self, x: &[f32], out: &mut [u8]) {
        for (j, o) in out.iter_mut().enumerate() {
            let xs = &x[j * self.dsub..(j + 1) * self.dsub];
            *o = kmeans::nearest(xs, self.codebook(j), self.dsub).0 as u8;
        }
    }

    /// Score-aware refinement of `code` (nearest centroids of `t` on entry): coordinate
    /// descent on `‖e‖² + (η − 1)⟨y, e⟩²/‖y‖²` with `e = t − decode(code)`, where `t` is
    /// what this stage encodes (the row `y` minus the earlier stages' reconstruction), so
    /// `e` is the row's total error after this stage. Each step keeps the best of the 256
    /// centroids of one sub-quantizer given the others (lowest index on ties), so the loss
    /// never rises.
    fn anisotropic(&self, y: &[f32], t: &[f32], eta: f32, code: &mut [u8]) {
        let yn: f32 = y.iter().map(|v| v * v).sum();
        if yn <= 0.0 || !yn.is_finite() {
            return;
        }
        let w = (eta - 1.0) / yn;
        let ds = self.dsub;
        let mut e = t.to_vec();
        self.subtract(code, &mut e);
        let mut p = dot(y, &e);
        let mut en: f32 = e.iter().map(|v| v * v).sum();
        for _ in 0..ANISO_PASSES {
            let mut changed = false;
            for j in 0..self.m {
                let (ys, ts) = (&y[j * ds..(j + 1) * ds], &t[j * ds..(j + 1) * ds]);
                let es = &e[j * ds..(j + 1) * ds];
                let (p0, en0) = (p - dot(ys, es), en - es.iter().map(|v| v * v).sum::<f32>());
                let yt = dot(ys, ts);
                let book = self.codebook(j);
                let (mut best, mut best_loss, mut best_pe) = (code[j] as usize, f32::INFINITY, (p, en));
                for (c, cent) in book.chunks_exact(ds).enumerate() {
                    let pc = p0 + yt - dot(ys, cent);
                    let ec = en0 + kmeans::l2sq(ts, cent);
                    let loss = ec + w * pc * pc;
                    if loss < best_loss {
                        (best, best_loss, best_pe) = (c, loss, (pc, ec));
                    }
                }
                if best != code[j] as usize {
                    changed = true;
                    code[j] = best as u8;
                }
                let cent = &book[best * ds..(best + 1) * ds];
                for ((ev, tv), cv) in e[j * ds..(j + 1) * ds].iter_mut().zip(ts).zip(cent) {
                    *ev = tv - cv;
                }
                (p, en) = best_pe;
            }
            if !changed {
                break;
            }
        }
    }

    /// `r -= decode(code)`.
    fn subtract(&self, code: &[u8], r: &mut [f32]) {
        for (j, &c) in code.iter().enumerate() {
            let cent = &self.codebook(j)[c as usize * self.dsub..(c as usize + 1) * self.dsub];
            for (v, cv) in r[j * self.dsub..(j + 1) * self.dsub].iter_mut().zip(cent) {
                *v -= cv;
            }
        }
    }

    /// `y += decode(code)`.
    fn add(&self, code: &[u8], y: &mut [f32]) {
        for (j, &c) in code.iter().enumerate() {
            let cent = &self.codebook(j)[c as usize * self.dsub..(c as usize + 1) * self.dsub];
            for (v, cv) in y[j * self.dsub..(j + 1) * self.dsub].iter_mut().zip(cent) {
                *v += cv;
            }
        }
    }

    /// `iters` warm-started Lloyd iterations of every sub-quantizer on rows
    /// `[n, d]` (sub-spaces in parallel).
    fn lloyd(&mut self, data: &[f32], d: usize, iters: usize) {
        let (m, dsub) = (self.m, self.dsub);
        let books = map_indices(m, |j| {
            let mut sub = Vec::with_capacity((data.len() / d) * dsub);
            for row in data.chunks_exact(d) {
                sub.extend_from_slice(&row[j * dsub..(j + 1) * dsub]);
            }
            let mut book = self.codebook(j).to_vec();
            kmeans::lloyd(&sub, dsub, &mut book, iters);
            book
        });
        self.centroids = books.concat();
    }

    fn encode_all(&self, data: &[f32], d: usize) -> Vec<u8> {
        let mut out = vec![0u8; (data.len() / d) * self.m];
        for_rows(&mut out, self.m, |i, o| self.encode_one(&data[i * d..(i + 1) * d], o));
        out
    }

    fn decode_all(&self, codes: &[u8], d: usize) -> Vec<f32> {
        let mut out = vec![0f32; (codes.len() / self.m) * d];
        for_rows(&mut out, d, |i, y| self.add(&codes[i * self.m..(i + 1) * self.m], y));
        out
    }
}

/// k-means per sub-space (in parallel over sub-spaces when rayon is on).
fn train_stage(data: &[f32], d: usize, m: usize, iters: usize, seed: u64) -> Stage {
    let dsub = d / m;
    let n = data.len() / d;
    let books = map_indices(m, |j| {
        // [n, dsub] slice of sub-space j
        let mut sub = Vec::with_capacity(n * dsub);
        for row in data.chunks_exact(d) {
            sub.extend_from_slice(&row[j * dsub..(j + 1) * dsub]);
        }
        kmeans::kmeans(&sub, dsub, KSUB, iters, seed.wrapping_mul(0x9E37_79B9).wrapping_add(j as u64))
    });
    Stage { m, dsub, centroids: books.concat() }
}

/// `y = R x` for one row.
fn rotate_one(r: &[f32], x: &[f32], d: usize) -> Vec<f32> {
    r.chunks_exact(d).map(|row| dot(row, x)).collect()
}

/// `Y = X R^T` for rows `[n, d]`.
fn rotate_rows(r: &[f32], data: &[f32], d: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for_rows(&mut out, d, |i, y| {
        let x = &data[i * d..(i + 1) * d];
        for (v, row) in y.iter_mut().zip(r.chunks_exact(d)) {
            *v = dot(row, x);
        }
    });
    out
}
