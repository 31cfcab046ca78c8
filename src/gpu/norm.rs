//! RMSNorm and LayerNorm of each row (`shaders/norm.wgsl`) and the CPU twin [`norm_reference`].
//!
//! RMSNorm (Llama/Qwen2, `LlamaRMSNorm`): `y = x / sqrt(mean(x²) + eps) · w`.
//! LayerNorm (CLIP/SigLIP, `nn.LayerNorm`): `y = (x − μ) / sqrt(mean((x − μ)²) + eps) · w + b`.

use super::forward::{u32_of, ForwardKernels, FwdKernel};
use super::matmul::View;
use super::{FieldOffsets, GpuError};

/// Which normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// Root-mean-square norm (no centring, no bias).
    Rms = 0,
    /// Layer norm (centred, optional bias).
    Layer = 1,
}

/// Uniform params of `norm.wgsl` (`struct NormParams`, 48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NormParams {
    pub rows: u32,
    pub d: u32,
    pub mode: u32,
    pub has_bias: u32,
    pub x_stride: u32,
    pub x_offset: u32,
    pub y_stride: u32,
    pub y_offset: u32,
    pub eps: f32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

impl NormParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("rows", std::mem::offset_of!(NormParams, rows)),
        ("d", std::mem::offset_of!(NormParams, d)),
        ("mode", std::mem::offset_of!(NormParams, mode)),
        ("has_bias", std::mem::offset_of!(NormParams, has_bias)),
        ("x_stride", std::mem::offset_of!(NormParams, x_stride)),
        ("x_offset", std::mem::offset_of!(NormParams, x_offset)),
        ("y_stride", std::mem::offset_of!(NormParams, y_stride)),
        ("y_offset", std::mem::offset_of!(NormParams, y_offset)),
        ("eps", std::mem::offset_of!(NormParams, eps)),
        ("_pad0", std::mem::offset_of!(NormParams, _pad0)),
        ("_pad1", std::mem::offset_of!(NormParams, _pad1)),
        ("_pad2", std::mem::offset_of!(NormParams, _pad2)),
    ];
}

/// Record the norm of `rows` rows of width `d`: `x` (view `xv`) → `y` (view `yv`).
#[allow(clippy::too_many_arguments)]
pub fn record_norm(
    fk: &ForwardKernels,
    enc: &mut wgpu::CommandEncoder,
    kind: NormKind,
    eps: f32,
    (x, xv): (&wgpu::Buffer, View),
    rows: usize,
    d: usize,
    w: &wgpu::Buffer,
    b: Option<&wgpu::Buffer>,
    (y, yv): (&wgpu::Buffer, View),
) -> Result<(), GpuError> {
    let params = NormParams {
        rows: u32_of(rows, "rows")?,
        d: u32_of(d, "d")?,
        mode: kind as u32,
        has_bias: b.is_some() as u32,
        x_stride: xv.stride,
        x_offset: xv.offset,
        y_stride: yv.stride,
        y_offset: yv.offset,
        eps,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    // one workgroup per row: groups_1d counts invocations, so ask for rows · 256
    let groups = fk.groups_1d(rows as u64 * super::forward::FWD_WG as u64)?;
    fk.dispatch(enc, FwdKernel::Norm, &params, &[x, w, b.unwrap_or(&fk.dummy), y], groups)
}

fn check(x: &[f32], rows: usize, d: usize, w: &[f32], b: Option<&[f32]>) -> Result<(), GpuError> {
    if rows == 0 || d == 0 || rows.checked_mul(d) != Some(x.len()) || w.len() != d || b.is_some_and(|b| b.len() != d) {
        return Err(GpuError::InvalidInput(format!(
            "norm: x has {} floats for [{rows}, {d}], weight {} and bias {:?} need d",
            x.len(),
            w.len(),
            b.map(|b| b.len())
        )));
    }
    Ok(())
}

/// Upload, run one norm, read back `[rows, d]`.
pub async fn norm_once(
    fk: &ForwardKernels,
    kind: NormKind,
    eps: f32,
    x: &[f32],
    rows: usize,
    d: usize,
    w: &[f32],
    b: Option<&[f32]>,
) -> Result<Vec<f32>, GpuError> {
    check(x, rows, d, w, b)?;
    let xb = fk.upload_f32("norm x", x)?;
    let wb = fk.upload_f32("norm w", w)?;
    let bb = b.map(|b| fk.upload_f32("norm b", b)).transpose()?;
    let yb = fk.buffer_f32("norm y", x.len() as u64)?;
    let (mut enc, scopes) = fk.begin("norm");
    record_norm(fk, &mut enc, kind, eps, (&xb, View::dense(d)), rows, d, &wb, bb.as_ref(), (&yb, View::dense(d)))?;
    fk.finish_read("norm", scopes, enc, &yb, x.len() as u64).await
}

/// CPU twin of `norm.wgsl` on `[rows, d]`.
pub fn norm_reference(
    kind: NormKind,
    eps: f32,
    x: &[f32],
    rows: usize,
    d: usize,
    w: &[f32],
    b: Option<&[f32]>,
) -> Result<Vec<f32>, GpuError> {
    check(x, rows, d, w, b)?;
    let mut y = vec![0f32; x.len()];
    for r in 0..rows {
        let xr = &x[r * d..(r + 1) * d];
        let mean = match kind {
            NormKind::Rms => 0.0,
            NormKind::Layer => xr.iter().sum::<f32>() / d as f32,
        };
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..d {
            let mut v = (xr[i] - mean) * inv * w[i];
            if let Some(b) = b {
                v += b[i];
            }
            y[r * d + i] = v;
        }
    }
    Ok(y)
}
