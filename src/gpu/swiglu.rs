//! SwiGLU gate of Llama/Qwen2 MLPs (`shaders/swiglu.wgsl`): `silu(gate) · up` from a fused
//! `[t, 2·inter]` gate|up projection; CPU twin [`swiglu_reference`] (candle's `swiglu`).

use super::forward::{u32_of, ForwardKernels, FwdKernel};
use super::{FieldOffsets, GpuError};

/// Uniform params of `swiglu.wgsl` (`struct SwigluParams`, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SwigluParams {
    pub t: u32,
    pub inter: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

impl SwigluParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("t", std::mem::offset_of!(SwigluParams, t)),
        ("inter", std::mem::offset_of!(SwigluParams, inter)),
        ("_pad0", std::mem::offset_of!(SwigluParams, _pad0)),
        ("_pad1", std::mem::offset_of!(SwigluParams, _pad1)),
    ];
}

/// Record `out[t, i] = silu(gu[t, i]) · gu[t, inter + i]`.
pub fn record_swiglu(
    fk: &ForwardKernels,
    enc: &mut wgpu::CommandEncoder,
    gu: &wgpu::Buffer,
    out: &wgpu::Buffer,
    t: usize,
    inter: usize,
) -> Result<(), GpuError> {
    let params = SwigluParams { t: u32_of(t, "tokens")?, inter: u32_of(inter, "inter")?, _pad0: 0, _pad1: 0 };
    let groups = fk.groups_1d((t * inter) as u64)?;
    fk.dispatch(enc, FwdKernel::Swiglu, &params, &[gu, out], groups)
}

/// Upload, run, read back `[t, inter]`.
pub async fn swiglu_once(fk: &ForwardKernels, gu: &[f32], t: usize, inter: usize) -> Result<Vec<f32>, GpuError> {
    check(gu, t, inter)?;
    let gb = fk.upload_f32("swiglu in", gu)?;
    let ob = fk.buffer_f32("swiglu out", (t * inter) as u64)?;
    let (mut enc, scopes) = fk.begin("swiglu");
    record_swiglu(fk, &mut enc, &gb, &ob, t, inter)?;
    fk.finish_read("swiglu", scopes, enc, &ob, (t * inter) as u64).await
}

fn check(gu: &[f32], t: usize, inter: usize) -> Result<(), GpuError> {
    if t == 0 || inter == 0 || gu.len() != t * 2 * inter {
        return Err(GpuError::InvalidInput(format!("swiglu: {} floats for [{t}, 2·{inter}]", gu.len())));
    }
    Ok(())
}

/// CPU twin (candle: `silu(a) = a / (1 + e^(−a))`).
pub fn swiglu_reference(gu: &[f32], t: usize, inter: usize) -> Result<Vec<f32>, GpuError> {
    check(gu, t, inter)?;
    let mut out = Vec::with_capacity(t * inter);
    for r in 0..t {
        for i in 0..inter {
            let g = gu[r * 2 * inter + i];
            let u = gu[r * 2 * inter + inter + i];
            out.push(g / (1.0 + (-g).exp()) * u);
        }
    }
    Ok(out)
}
