//! Linear layer `y (+)= x Wᵀ + b` with f32 or block-quantised weights (`shaders/matmul.wgsl`)
//! and its CPU twin [`matmul_reference`]; the f16 variant (`shaders/matmul_f16.wgsl`, same
//! params and bindings: x and dequantised W tiles rounded to f16, exact f32 products, f32
//! accumulation) and its twin [`matmul_f16_reference`], chosen per matrix by [`Precision`]
//! at upload ([`GpuMatrix::upload_with`]; [`Precision::F16`] needs `shader-f16`).
//!
//! `x: [t, k]` f32 rows (any stride/offset in a larger buffer), `W: [n, k]` a [`HostMatrix`]
//! uploaded once as a [`GpuMatrix`], `y: [t, n]`. With `accumulate` the product is added to
//! `y` (a fused residual add). Weights larger than the storage binding limit are split by rows
//! into parts, one dispatch each, writing disjoint output columns.

use super::forward::{u32_of, ForwardKernels, FwdKernel};
use super::quant::{HostMatrix, WeightFormat};
use super::{FieldOffsets, GpuError, Precision};

/// Uniform params of `matmul.wgsl` (`struct MatmulParams`, 48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MatmulParams {
    pub t: u32,
    pub n: u32,
    pub k: u32,
    pub fmt: u32,
    pub x_stride: u32,
    pub x_offset: u32,
    pub y_stride: u32,
    pub y_offset: u32,
    pub n_offset: u32,
    pub has_bias: u32,
    pub accumulate: u32,
    pub _pad0: u32,
}

impl MatmulParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("t", std::mem::offset_of!(MatmulParams, t)),
        ("n", std::mem::offset_of!(MatmulParams, n)),
        ("k", std::mem::offset_of!(MatmulParams, k)),
        ("fmt", std::mem::offset_of!(MatmulParams, fmt)),
        ("x_stride", std::mem::offset_of!(MatmulParams, x_stride)),
        ("x_offset", std::mem::offset_of!(MatmulParams, x_offset)),
        ("y_stride", std::mem::offset_of!(MatmulParams, y_stride)),
        ("y_offset", std::mem::offset_of!(MatmulParams, y_offset)),
        ("n_offset", std::mem::offset_of!(MatmulParams, n_offset)),
        ("has_bias", std::mem::offset_of!(MatmulParams, has_bias)),
        ("accumulate", std::mem::offset_of!(MatmulParams, accumulate)),
        ("_pad0", std::mem::offset_of!(MatmulParams, _pad0)),
    ];
}

/// Output tile of one workgroup (tokens × features), `TM`/`TN` in the shader.
pub const TILE: u32 = 64;

/// Rows and columns of a matrix inside a larger f32 buffer: row `r` starts at `offset + r·stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub offset: u32,
    pub stride: u32,
}

impl View {
    /// A dense `[rows, width]` matrix at the start of its buffer.
    pub fn dense(width: usize) -> View {
        View { offset: 0, stride: width as u32 }
    }
}

/// One row range of a weight matrix on the GPU.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) row0: usize,
    pub(crate) rows: usize,
    pub(crate) q: wgpu::Buffer,
    pub(crate) s: wgpu::Buffer,
}

/// Uploads `m` split into row ranges of at most the binding limit each (`what` labels the
/// buffers); a single row wider than the limit is refused, naming it.
pub(crate) fn upload_row_parts(fk: &ForwardKernels, m: &HostMatrix, what: [&'static str; 2]) -> Result<Vec<Part>, GpuError> {
    let max = fk.context().max_binding_bytes();
    let row_bytes = m.row_bytes().max(4);
    let rows_per_part = (max / row_bytes) as usize;
    if rows_per_part == 0 {
        return Err(GpuError::LimitTooSmall { limit: "max_storage_buffer_binding_size", need: row_bytes, have: max });
    }
    let (wq, ws) = (m.format.words_per_row(m.k), m.format.scales_per_row(m.k));
    let mut parts = Vec::new();
    let mut row0 = 0;
    while row0 < m.n {
        let rows = rows_per_part.min(m.n - row0);
        let q = fk.upload_words(what[0], &m.q[row0 * wq..(row0 + rows) * wq])?;
        let s = fk.upload_words(what[1], &m.s[row0 * ws..(row0 + rows) * ws])?;
        parts.push(Part { row0, rows, q, s });
        row0 += rows;
    }
    Ok(parts)
}

/// A weight matrix uploaded once (split by rows to fit the binding limit).
#[derive(Debug)]
pub struct GpuMatrix {
    /// Rows (output features).
    pub n: usize,
    /// Columns (input features).
    pub k: usize,
    /// Storage format.
    pub format: WeightFormat,
    /// Which kernel multiplies with it (`matmul.wgsl` or `matmul_f16.wgsl`).
    pub precision: Precision,
    parts: Vec<Part>,
}

impl GpuMatrix {
    /// Upload `m`, split into row ranges of at most the binding limit each; multiplied by the
    /// f32 kernel.
    pub fn upload(fk: &ForwardKernels, m: &HostMatrix) -> Result<Self, GpuError> {
        Self::upload_with(fk, m, Precision::F32)
    }

    /// [`GpuMatrix::upload`] for the kernel of `precision` (the weights on the GPU are the
    /// same; only the tiles differ). [`Precision::F16`] on kernels without `shader-f16` is
    /// refused before anything is uploaded.
    pub fn upload_with(fk: &ForwardKernels, m: &HostMatrix, precision: Precision) -> Result<Self, GpuError> {
        if precision == Precision::F16 && !fk.has_f16() {
            return Err(GpuError::MissingFeature("shader-f16"));
        }
        let parts = upload_row_parts(fk, m, ["matmul weights", "matmul scales"])?;
        Ok(GpuMatrix { n: m.n, k: m.k, format: m.format, precision, parts })
    }

    /// Number of row parts (1 unless the matrix exceeds the binding limit).
    pub fn num_parts(&self) -> usize {
        self.parts.len()
    }

    /// Bytes of weights on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.q.size() + p.s.size()).sum()
    }

    /// Record `y[t, n] (+)= x[t, :] · W[n, :] + bias[n]` for `t` rows.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        fk: &ForwardKernels,
        enc: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        xv: View,
        t: usize,
        bias: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
        yv: View,
        accumulate: bool,
    ) -> Result<(), GpuError> {
        let t32 = u32_of(t, "tokens")?;
        for p in &self.parts {
            let params = MatmulParams {
                t: t32,
                n: u32_of(p.rows, "rows")?,
                k: u32_of(self.k, "k")?,
                fmt: self.format as u32,
                x_stride: xv.stride,
                x_offset: xv.offset,
                y_stride: yv.stride,
                y_offset: yv.offset,
                n_offset: u32_of(p.row0, "row offset")?,
                has_bias: bias.is_some() as u32,
                accumulate: accumulate as u32,
                _pad0: 0,
            };
            let groups = ((p.rows as u32).div_ceil(TILE), t32.div_ceil(TILE));
            let b = bias.unwrap_or(&fk.dummy);
            let kernel = match self.precision {
                Precision::F32 => FwdKernel::Matmul,
                Precision::F16 => FwdKernel::MatmulF16,
            };
            fk.dispatch(enc, kernel, &params, &[x, &p.q, &p.s, b, y], groups)?;
        }
        Ok(())
    }
}

/// Upload, run one matmul and read back: `x: [t, k]`, `bias: [n]`, `y0: [t, n]` the initial
/// output when accumulating. Returns `[t, n]`.
pub async fn matmul_once(
    fk: &ForwardKernels,
    x: &[f32],
    t: usize,
    w: &HostMatrix,
    bias: Option<&[f32]>,
    y0: Option<&[f32]>,
) -> Result<Vec<f32>, GpuError> {
    matmul_once_with(fk, Precision::F32, x, t, w, bias, y0).await
}

/// [`matmul_once`] on the kernel of `precision`.
pub async fn matmul_once_with(
    fk: &ForwardKernels,
    precision: Precision,
    x: &[f32],
    t: usize,
    w: &HostMatrix,
    bias: Option<&[f32]>,
    y0: Option<&[f32]>,
) -> Result<Vec<f32>, GpuError> {
    check_shapes(x, t, w, bias, y0)?;
    let gm = GpuMatrix::upload_with(fk, w, precision)?;
    let xb = fk.upload_f32("matmul x", x)?;
    let bb = bias.map(|b| fk.upload_f32("matmul bias", b)).transpose()?;
    let out = (t * w.n) as u64;
    let yb = match y0 {
        Some(y0) => fk.upload_f32("matmul y", y0)?,
        None => fk.buffer_f32("matmul y", out)?,
    };
    let (mut enc, scopes) = fk.begin("matmul");
    gm.record(fk, &mut enc, &xb, View::dense(w.k), t, bb.as_ref(), &yb, View::dense(w.n), y0.is_some())?;
    fk.finish_read("matmul", scopes, enc, &yb, out).await
}

fn check_shapes(x: &[f32], t: usize, w: &HostMatrix, bias: Option<&[f32]>, y0: Option<&[f32]>) -> Result<(), GpuError> {
    if t == 0 || t.checked_mul(w.k) != Some(x.len()) {
        return Err(GpuError::InvalidInput(format!("x has {} floats for t = {t}, k = {}", x.len(), w.k)));
    }
    if bias.is_some_and(|b| b.len() != w.n) {
        return Err(GpuError::InvalidInput(format!("bias must have n = {} values", w.n)));
    }
    if y0.is_some_and(|y| Some(y.len()) != t.checked_mul(w.n)) {
        return Err(GpuError::InvalidInput(format!("y must be [t = {t}, n = {}]", w.n)));
    }
    Ok(())
}

/// CPU twin: `y[t, n] = (y0) + Σ_k x[t, k] · W[n, k] + bias[n]` with the shader's dequantised
/// weights, summed in k order.
pub fn matmul_reference(
    x: &[f32],
    t: usize,
    w: &HostMatrix,
    bias: Option<&[f32]>,
    y0: Option<&[f32]>,
) -> Result<Vec<f32>, GpuError> {
    check_shapes(x, t, w, bias, y0)?;
    Ok(matmul_core(x, t, &w.dequantize(), w.n, w.k, bias, y0))
}

/// `v` as `matmul_f16.wgsl` stores it in its tiles: clamped to ±65504 (the largest finite
/// f16), rounded to the nearest f16.
pub fn round_f16(v: f32) -> f32 {
    half::f16::from_f32(v.clamp(-65504.0, 65504.0)).to_f32()
}

/// CPU twin of `matmul_f16.wgsl`: [`matmul_reference`] with x and the dequantised weights
/// rounded through [`round_f16`] first; products and sums stay f32 (a product of two f16
/// values is exact in f32, so this equals the shader's fma chain in the same k order).
pub fn matmul_f16_reference(
    x: &[f32],
    t: usize,
    w: &HostMatrix,
    bias: Option<&[f32]>,
    y0: Option<&[f32]>,
) -> Result<Vec<f32>, GpuError> {
    check_shapes(x, t, w, bias, y0)?;
    let xh: Vec<f32> = x.iter().map(|&v| round_f16(v)).collect();
    let wh: Vec<f32> = w.dequantize().into_iter().map(round_f16).collect();
    Ok(matmul_core(&xh, t, &wh, w.n, w.k, bias, y0))
}

/// The CPU twin's loop: `x: [t, k]`, `wd: [n, k]` dequantised, fma in k order.
fn matmul_core(x: &[f32], t: usize, wd: &[f32], n: usize, k: usize, bias: Option<&[f32]>, y0: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![0f32; t * n];
    for r in 0..t {
        let xr = &x[r * k..(r + 1) * k];
        for c in 0..n {
            let wr = &wd[c * k..(c + 1) * k];
            let mut acc = 0f32;
            for i in 0..k {
                acc = xr[i].mul_add(wr[i], acc);
            }
            if let Some(b) = bias {
                acc += b[c];
            }
            if let Some(y0) = y0 {
                acc += y0[r * n + c];
            }
            y[r * n + c] = acc;
        }
    }
    y
}
