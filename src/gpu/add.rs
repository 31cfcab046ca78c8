//! In-place add (`shaders/add.wgsl`): `y[i] += x[i mod x_len]` — a residual add (`x_len = n`)
//! or one row broadcast to every row (biases, position tables); CPU twin [`add_reference`].

use super::forward::{u32_of, ForwardKernels, FwdKernel};
use super::{FieldOffsets, GpuError};

/// Uniform params of `add.wgsl` (`struct AddParams`, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AddParams {
    pub n: u32,
    pub x_len: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

impl AddParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("n", std::mem::offset_of!(AddParams, n)),
        ("x_len", std::mem::offset_of!(AddParams, x_len)),
        ("_pad0", std::mem::offset_of!(AddParams, _pad0)),
        ("_pad1", std::mem::offset_of!(AddParams, _pad1)),
    ];
}

/// Record `y[i] += x[i % x_len]` for `i < n`.
pub fn record_add(
    fk: &ForwardKernels,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    x_len: usize,
    y: &wgpu::Buffer,
    n: usize,
) -> Result<(), GpuError> {
    if x_len == 0 {
        return Err(GpuError::InvalidInput("add: empty x".into()));
    }
    let params = AddParams { n: u32_of(n, "elements")?, x_len: u32_of(x_len, "x length")?, _pad0: 0, _pad1: 0 };
    let groups = fk.groups_1d(n as u64)?;
    fk.dispatch(enc, FwdKernel::Add, &params, &[x, y], groups)
}

/// Upload, run, read back `y`.
pub async fn add_once(fk: &ForwardKernels, x: &[f32], y: &[f32]) -> Result<Vec<f32>, GpuError> {
    if x.is_empty() || y.is_empty() {
        return Err(GpuError::InvalidInput("add: empty input".into()));
    }
    let xb = fk.upload_f32("add x", x)?;
    let yb = fk.upload_f32("add y", y)?;
    let (mut enc, scopes) = fk.begin("add");
    record_add(fk, &mut enc, &xb, x.len(), &yb, y.len())?;
    fk.finish_read("add", scopes, enc, &yb, y.len() as u64).await
}

/// CPU twin.
pub fn add_reference(x: &[f32], y: &[f32]) -> Vec<f32> {
    y.iter().enumerate().map(|(i, v)| v + x[i % x.len()]).collect()
}
