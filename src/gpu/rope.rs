//! Rotary position embedding in HF's `rotate_half` layout (`shaders/rope.wgsl`), in place on the
//! q and k heads of a fused qkv buffer, and the CPU twin [`rope_reference`].
//!
//! Tables follow transformers (`LlamaRotaryEmbedding`, default rope): `inv_freq_i = 1/θ^(2i/hd)`,
//! angle `p · inv_freq_i` in f32 — computed on the host by [`rope_tables`] exactly as the CPU
//! runtime (`crate::model::llama`) does, so both paths rotate by the same numbers.

use super::forward::{u32_of, ForwardKernels, FwdKernel};
use super::matmul::View;
use super::{FieldOffsets, GpuError};

/// Uniform params of `rope.wgsl` (`struct RopeParams`, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RopeParams {
    pub t: u32,
    pub heads: u32,
    pub hd: u32,
    pub stride: u32,
    pub offset: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

impl RopeParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("t", std::mem::offset_of!(RopeParams, t)),
        ("heads", std::mem::offset_of!(RopeParams, heads)),
        ("hd", std::mem::offset_of!(RopeParams, hd)),
        ("stride", std::mem::offset_of!(RopeParams, stride)),
        ("offset", std::mem::offset_of!(RopeParams, offset)),
        ("_pad0", std::mem::offset_of!(RopeParams, _pad0)),
        ("_pad1", std::mem::offset_of!(RopeParams, _pad1)),
        ("_pad2", std::mem::offset_of!(RopeParams, _pad2)),
    ];
}

/// `(cos, sin)`, each `[positions.len(), hd/2]`, for base `theta`.
pub fn rope_tables(positions: &[usize], hd: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let inv_freq: Vec<f32> = (0..hd / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / hd as f32)).collect();
    let mut cos = Vec::with_capacity(positions.len() * hd / 2);
    let mut sin = Vec::with_capacity(positions.len() * hd / 2);
    for &p in positions {
        for &f in &inv_freq {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

/// Record RoPE on `heads` heads of width `hd` of `t` rows of `x` (view `xv`).
#[allow(clippy::too_many_arguments)]
pub fn record_rope(
    fk: &ForwardKernels,
    enc: &mut wgpu::CommandEncoder,
    cos: &wgpu::Buffer,
    sin: &wgpu::Buffer,
    x: &wgpu::Buffer,
    xv: View,
    t: usize,
    heads: usize,
    hd: usize,
) -> Result<(), GpuError> {
    if hd % 2 != 0 {
        return Err(GpuError::InvalidInput(format!("RoPE needs an even head dim, got {hd}")));
    }
    let params = RopeParams {
        t: u32_of(t, "tokens")?,
        heads: u32_of(heads, "heads")?,
        hd: u32_of(hd, "head dim")?,
        stride: xv.stride,
        offset: xv.offset,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    let groups = fk.groups_1d((t * heads * hd / 2) as u64)?;
    fk.dispatch(enc, FwdKernel::Rope, &params, &[cos, sin, x], groups)
}

fn check(x: &[f32], t: usize, width: usize, heads: usize, hd: usize, cos: &[f32], sin: &[f32]) -> Result<(), GpuError> {
    if hd % 2 != 0 || heads * hd > width || t.checked_mul(width) != Some(x.len()) || cos.len() != t * hd / 2 || sin.len() != cos.len() {
        return Err(GpuError::InvalidInput(format!(
            "rope: x {} floats for [{t}, {width}], {heads} heads of {hd}, tables {}/{}",
            x.len(),
            cos.len(),
            sin.len()
        )));
    }
    Ok(())
}

/// Upload, rotate the first `heads` heads of each `[t, width]` row, read back.
#[allow(clippy::too_many_arguments)]
pub async fn rope_once(
    fk: &ForwardKernels,
    x: &[f32],
    t: usize,
    width: usize,
    heads: usize,
    hd: usize,
    cos: &[f32],
    sin: &[f32],
) -> Result<Vec<f32>, GpuError> {
    check(x, t, width, heads, hd, cos, sin)?;
    let xb = fk.upload_f32("rope x", x)?;
    let cb = fk.upload_f32("rope cos", cos)?;
    let sb = fk.upload_f32("rope sin", sin)?;
    let (mut enc, scopes) = fk.begin("rope");
    record_rope(fk, &mut enc, &cb, &sb, &xb, View::dense(width), t, heads, hd)?;
    fk.finish_read("rope", scopes, enc, &xb, x.len() as u64).await
}

/// CPU twin of `rope.wgsl`.
pub fn rope_reference(
    x: &[f32],
    t: usize,
    width: usize,
    heads: usize,
    hd: usize,
    cos: &[f32],
    sin: &[f32],
) -> Result<Vec<f32>, GpuError> {
    check(x, t, width, heads, hd, cos, sin)?;
    let mut y = x.to_vec();
    let half = hd / 2;
    for r in 0..t {
        for h in 0..heads {
            let base = r * width + h * hd;
            for i in 0..half {
                let (c, s) = (cos[r * half + i], sin[r * half + i]);
                let (a, b) = (x[base + i], x[base + i + half]);
                y[base + i] = a * c - b * s;
                y[base + i + half] = b * c + a * s;
            }
        }
    }
    Ok(y)
}
