//! In-place clamp (`shaders/clamp.wgsl`): `x[i] = clamp(x[i], lo, hi)`; ReLU6 is `(0, 6)`.
//! CPU twin [`clamp_reference`].

use super::forward::{u32_of, ForwardKernels, FwdKernel};
use super::{FieldOffsets, GpuError};

/// Uniform params of `clamp.wgsl` (`struct ClampParams`, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ClampParams {
    pub n: u32,
    pub lo: f32,
    pub hi: f32,
    pub _pad0: u32,
}

impl ClampParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("n", std::mem::offset_of!(ClampParams, n)),
        ("lo", std::mem::offset_of!(ClampParams, lo)),
        ("hi", std::mem::offset_of!(ClampParams, hi)),
        ("_pad0", std::mem::offset_of!(ClampParams, _pad0)),
    ];
}

/// ReLU6's bounds.
pub const RELU6: (f32, f32) = (0.0, 6.0);

fn check_bounds((lo, hi): (f32, f32)) -> Result<(), GpuError> {
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(GpuError::InvalidInput(format!("clamp: bounds ({lo}, {hi}) need lo ≤ hi")));
    }
    Ok(())
}

/// Record the clamp of the first `n` floats of `x`.
pub fn record_clamp(fk: &ForwardKernels, enc: &mut wgpu::CommandEncoder, bounds: (f32, f32), x: &wgpu::Buffer, n: usize) -> Result<(), GpuError> {
    check_bounds(bounds)?;
    if (x.size() / 4) < n as u64 {
        return Err(GpuError::InvalidInput(format!("clamp of {n} floats in a buffer of {}", x.size() / 4)));
    }
    let params = ClampParams { n: u32_of(n, "elements")?, lo: bounds.0, hi: bounds.1, _pad0: 0 };
    let groups = fk.groups_1d(n as u64)?;
    fk.dispatch(enc, FwdKernel::Clamp, &params, &[x], groups)
}

/// Upload, run, read back.
pub async fn clamp_once(fk: &ForwardKernels, bounds: (f32, f32), x: &[f32]) -> Result<Vec<f32>, GpuError> {
    check_bounds(bounds)?;
    if x.is_empty() {
        return Ok(Vec::new());
    }
    let xb = fk.upload_f32("clamp x", x)?;
    let (mut enc, scopes) = fk.begin("clamp");
    record_clamp(fk, &mut enc, bounds, &xb, x.len())?;
    fk.finish_read("clamp", scopes, enc, &xb, x.len() as u64).await
}

/// CPU twin (finite inputs; NaN stays NaN here, the shader's NaN is unspecified).
pub fn clamp_reference(bounds: (f32, f32), x: &[f32]) -> Result<Vec<f32>, GpuError> {
    check_bounds(bounds)?;
    Ok(x.iter().map(|v| v.clamp(bounds.0, bounds.1)).collect())
}
