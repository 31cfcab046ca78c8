//! Columns of a dense k×k convolution with zero padding (`shaders/im2col.wgsl`); CPU twin
//! [`im2col_reference`]. The conv is then `cols · Wᵀ + b` on [`super::matmul`] with the weight
//! `[out, C, k, k]` read as `[out, C·k·k]`, outputs token-major `[oh·ow, out]`: EfficientNet's
//! stem (3×3 / 2 on the CHW pixels).
//!
//! Input element `(c, y, x)` at `c·c_stride + y·y_stride + x·x_stride` (CHW pixels:
//! `(h·w, w, 1)`; token-major `[h·w, C]`: `(1, w·C, C)`); output `cols: [oh·ow, C·k·k]`,
//! columns in `(c, ky, kx)` order.

use super::depthwise::ConvGeometry;
use super::forward::{u32_of, ForwardKernels, FwdKernel};
use super::{FieldOffsets, GpuError};

/// Uniform params of `im2col.wgsl` (`struct Im2colParams`, 48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Im2colParams {
    pub h: u32,
    pub w: u32,
    pub c: u32,
    pub k: u32,
    pub stride: u32,
    pub oh: u32,
    pub ow: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub c_stride: u32,
    pub y_stride: u32,
    pub x_stride: u32,
}

impl Im2colParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("h", std::mem::offset_of!(Im2colParams, h)),
        ("w", std::mem::offset_of!(Im2colParams, w)),
        ("c", std::mem::offset_of!(Im2colParams, c)),
        ("k", std::mem::offset_of!(Im2colParams, k)),
        ("stride", std::mem::offset_of!(Im2colParams, stride)),
        ("oh", std::mem::offset_of!(Im2colParams, oh)),
        ("ow", std::mem::offset_of!(Im2colParams, ow)),
        ("pad_top", std::mem::offset_of!(Im2colParams, pad_top)),
        ("pad_left", std::mem::offset_of!(Im2colParams, pad_left)),
        ("c_stride", std::mem::offset_of!(Im2colParams, c_stride)),
        ("y_stride", std::mem::offset_of!(Im2colParams, y_stride)),
        ("x_stride", std::mem::offset_of!(Im2colParams, x_stride)),
    ];
}

/// One unfolding: geometry, channels, and the input's strides `(c, y, x)` in floats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Im2col {
    pub geo: ConvGeometry,
    pub c: usize,
    pub strides: (usize, usize, usize),
}

impl Im2col {
    /// Input in CHW layout `[C, h, w]`.
    pub fn chw(geo: ConvGeometry, c: usize) -> Self {
        Im2col { geo, c, strides: (geo.h * geo.w, geo.w, 1) }
    }

    /// Width of a column row (`C·k·k`).
    pub fn row(&self) -> usize {
        self.c * self.geo.k * self.geo.k
    }

    /// Floats read (one past the last input element) and written.
    pub fn lens(&self) -> (usize, usize) {
        let (g, (cs, ys, xs)) = (&self.geo, self.strides);
        let src_end = (self.c.max(1) - 1) * cs + (g.h - 1) * ys + (g.w - 1) * xs + 1;
        (src_end, g.oh * g.ow * self.row())
    }

    fn check(&self, src: usize, dst: usize) -> Result<(), GpuError> {
        let (need_src, need_dst) = self.lens();
        if self.c == 0 || src < need_src || dst < need_dst {
            return Err(GpuError::InvalidInput(format!(
                "im2col of {} channels {}x{} (k {}, stride {}): reads {need_src} floats of {src}, writes {need_dst} of {dst}",
                self.c, self.geo.h, self.geo.w, self.geo.k, self.geo.stride
            )));
        }
        Ok(())
    }

    fn params(&self) -> Result<Im2colParams, GpuError> {
        let g = &self.geo;
        let (src, dst) = self.lens();
        u32_of(src.max(dst), "im2col elements")?;
        Ok(Im2colParams {
            h: u32_of(g.h, "height")?,
            w: u32_of(g.w, "width")?,
            c: u32_of(self.c, "channels")?,
            k: u32_of(g.k, "kernel")?,
            stride: u32_of(g.stride, "stride")?,
            oh: u32_of(g.oh, "output height")?,
            ow: u32_of(g.ow, "output width")?,
            pad_top: u32_of(g.pad_top, "padding")?,
            pad_left: u32_of(g.pad_left, "padding")?,
            c_stride: u32_of(self.strides.0, "channel stride")?,
            y_stride: u32_of(self.strides.1, "row stride")?,
            x_stride: u32_of(self.strides.2, "column stride")?,
        })
    }
}

/// Record `cols = im2col(x)` (two different buffers, sizes checked).
pub fn record_im2col(fk: &ForwardKernels, enc: &mut wgpu::CommandEncoder, plan: &Im2col, x: &wgpu::Buffer, cols: &wgpu::Buffer) -> Result<(), GpuError> {
    plan.check((x.size() / 4) as usize, (cols.size() / 4) as usize)?;
    let params = plan.params()?;
    let groups = fk.groups_1d(plan.lens().1 as u64)?;
    fk.dispatch(enc, FwdKernel::Im2col, &params, &[x, cols], groups)
}

/// Upload, run, read back `cols: [oh·ow, C·k·k]`.
pub async fn im2col_once(fk: &ForwardKernels, plan: &Im2col, x: &[f32]) -> Result<Vec<f32>, GpuError> {
    let n = plan.lens().1;
    plan.check(x.len(), n)?;
    let xb = fk.upload_f32("im2col x", x)?;
    let cb = fk.buffer_f32("im2col cols", n as u64)?;
    let (mut enc, scopes) = fk.begin("im2col");
    record_im2col(fk, &mut enc, plan, &xb, &cb)?;
    fk.finish_read("im2col", scopes, enc, &cb, n as u64).await
}

/// CPU twin.
pub fn im2col_reference(plan: &Im2col, x: &[f32]) -> Result<Vec<f32>, GpuError> {
    let n = plan.lens().1;
    plan.check(x.len(), n)?;
    let (g, (cs, ys, xs), row) = (&plan.geo, plan.strides, plan.row());
    let mut cols = vec![0f32; n];
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let base = (oy * g.ow + ox) * row;
            for c in 0..plan.c {
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        if let Some((iy, ix)) = g.source(oy, ox, ky, kx) {
                            cols[base + (c * g.k + ky) * g.k + kx] = x[c * cs + iy * ys + ix * xs];
                        }
                    }
                }
            }
        }
    }
    Ok(cols)
}
