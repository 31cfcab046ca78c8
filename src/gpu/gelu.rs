//! GELU activations in place (`shaders/gelu.wgsl`): tanh approximation, exact (erf) and CLIP's
//! `quick_gelu`; CPU twin [`gelu_reference`] with the same formulas (erf by Abramowitz & Stegun
//! 7.1.26, |error| ≤ 1.5e-7, as WGSL has no erf).

use super::forward::{u32_of, ForwardKernels, FwdKernel};
use super::{FieldOffsets, GpuError};

/// Which GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluKind {
    /// `0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))` (`gelu_pytorch_tanh`, `gelu_new`).
    Tanh = 0,
    /// `0.5x(1 + erf(x/√2))` (`gelu`).
    Erf = 1,
    /// `x·σ(1.702x)` (`quick_gelu`).
    Quick = 2,
}

/// Uniform params of `gelu.wgsl` (`struct GeluParams`, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GeluParams {
    pub n: u32,
    pub mode: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

impl GeluParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("n", std::mem::offset_of!(GeluParams, n)),
        ("mode", std::mem::offset_of!(GeluParams, mode)),
        ("_pad0", std::mem::offset_of!(GeluParams, _pad0)),
        ("_pad1", std::mem::offset_of!(GeluParams, _pad1)),
    ];
}

/// Record GELU on the first `n` floats of `x`.
pub fn record_gelu(fk: &ForwardKernels, enc: &mut wgpu::CommandEncoder, kind: GeluKind, x: &wgpu::Buffer, n: usize) -> Result<(), GpuError> {
    let params = GeluParams { n: u32_of(n, "elements")?, mode: kind as u32, _pad0: 0, _pad1: 0 };
    let groups = fk.groups_1d(n as u64)?;
    fk.dispatch(enc, FwdKernel::Gelu, &params, &[x], groups)
}

/// Upload, run, read back.
pub async fn gelu_once(fk: &ForwardKernels, kind: GeluKind, x: &[f32]) -> Result<Vec<f32>, GpuError> {
    if x.is_empty() {
        return Ok(Vec::new());
    }
    let xb = fk.upload_f32("gelu x", x)?;
    let (mut enc, scopes) = fk.begin("gelu");
    record_gelu(fk, &mut enc, kind, &xb, x.len())?;
    fk.finish_read("gelu", scopes, enc, &xb, x.len() as u64).await
}

/// erf by Abramowitz & Stegun 7.1.26 (the shader's).
pub fn erf_as(v: f32) -> f32 {
    let a = v.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    let r = 1.0 - poly * (-a * a).exp();
    if v < 0.0 {
        -r
    } else {
        r
    }
}

/// CPU twin of `gelu.wgsl`.
pub fn gelu_reference(kind: GeluKind, x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| match kind {
            GeluKind::Tanh => {
                let c = (0.797_884_6 * v * (1.0 + 0.044715 * v * v)).clamp(-15.0, 15.0);
                let e = (2.0 * c).exp();
                0.5 * v * (1.0 + (e - 1.0) / (e + 1.0))
            }
            GeluKind::Erf => 0.5 * v * (1.0 + erf_as(v * std::f32::consts::FRAC_1_SQRT_2)),
            GeluKind::Quick => v / (1.0 + (-1.702 * v).exp()),
        })
        .collect()
}
