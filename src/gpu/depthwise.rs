//! Depthwise k×k convolution (`shaders/depthwise.wgsl`) on token-major activations, with bias
//! and optional fused ReLU6 on the input reads and on the output; CPU twin
//! [`depthwise_reference`]. Also [`ConvGeometry`], the TF "SAME" geometry shared with
//! [`super::im2col`].
//!
//! EfficientNet's depthwise convs (`crate::model::efficientnet`) in the layout the 1×1 convs
//! (plain [`super::matmul`] linears) read and write: `x: [h·w, C]`, taps `w: [k·k, C]`
//! (tap-major, the checkpoint's `[C, 1, k, k]` transposed), `bias: [C]`, `y: [oh·ow, C]`.

use super::forward::{u32_of, ForwardKernels, FwdKernel};
use super::{FieldOffsets, GpuError};

/// Output size and padding of a k×k convolution with stride `stride` on an `h × w` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub oh: usize,
    pub ow: usize,
    /// Zero rows above / columns left of the input; the rest of the padding is below / right.
    pub pad_top: usize,
    pub pad_left: usize,
}

/// TF "SAME" along one side of `n`: (output side `⌈n / s⌉`, padding before = ⌊total / 2⌋).
pub fn same_padding(n: usize, k: usize, s: usize) -> (usize, usize) {
    let out = n.div_ceil(s);
    let total = ((out - 1) * s + k).saturating_sub(n);
    (out, total / 2)
}

impl ConvGeometry {
    /// TF "SAME" padding (asymmetric for stride 2: the extra row / column goes below / right),
    /// as `crate::model::efficientnet` pads.
    pub fn same(h: usize, w: usize, k: usize, stride: usize) -> Result<Self, GpuError> {
        if h == 0 || w == 0 || k == 0 || stride == 0 {
            return Err(GpuError::InvalidInput(format!("conv: input {h}x{w}, kernel {k}, stride {stride}: all must be ≥ 1")));
        }
        let (oh, pad_top) = same_padding(h, k, stride);
        let (ow, pad_left) = same_padding(w, k, stride);
        Ok(ConvGeometry { h, w, k, stride, oh, ow, pad_top, pad_left })
    }

    /// Input pixel `(iy, ix)` read by output `(oy, ox)` at tap `(ky, kx)`, `None` in the padding.
    pub fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.stride + ky).checked_sub(self.pad_top)?;
        let ix = (ox * self.stride + kx).checked_sub(self.pad_left)?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
    }
}

/// Uniform params of `depthwise.wgsl` (`struct DepthwiseParams`, 48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DepthwiseParams {
    pub h: u32,
    pub w: u32,
    pub c: u32,
    pub k: u32,
    pub stride: u32,
    pub oh: u32,
    pub ow: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub act_in: u32,
    pub act_out: u32,
    pub _pad0: u32,
}

impl DepthwiseParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("h", std::mem::offset_of!(DepthwiseParams, h)),
        ("w", std::mem::offset_of!(DepthwiseParams, w)),
        ("c", std::mem::offset_of!(DepthwiseParams, c)),
        ("k", std::mem::offset_of!(DepthwiseParams, k)),
        ("stride", std::mem::offset_of!(DepthwiseParams, stride)),
        ("oh", std::mem::offset_of!(DepthwiseParams, oh)),
        ("ow", std::mem::offset_of!(DepthwiseParams, ow)),
        ("pad_top", std::mem::offset_of!(DepthwiseParams, pad_top)),
        ("pad_left", std::mem::offset_of!(DepthwiseParams, pad_left)),
        ("act_in", std::mem::offset_of!(DepthwiseParams, act_in)),
        ("act_out", std::mem::offset_of!(DepthwiseParams, act_out)),
        ("_pad0", std::mem::offset_of!(DepthwiseParams, _pad0)),
    ];
}

/// One depthwise convolution: geometry, channels, and where ReLU6 applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Depthwise {
    pub geo: ConvGeometry,
    pub c: usize,
    /// ReLU6 on every input value read (the previous 1×1 conv's activation, fused).
    pub act_in: bool,
    /// ReLU6 on the output.
    pub act_out: bool,
}

impl Depthwise {
    /// Floats of `x`, `w`, `bias`, `y`.
    pub fn lens(&self) -> [usize; 4] {
        let g = &self.geo;
        [g.h * g.w * self.c, g.k * g.k * self.c, self.c, g.oh * g.ow * self.c]
    }

    fn check(&self, have: [usize; 4]) -> Result<(), GpuError> {
        let need = self.lens();
        if self.c == 0 || have.iter().zip(&need).any(|(h, n)| h < n) {
            return Err(GpuError::InvalidInput(format!(
                "depthwise conv {}x{} → {}x{}, {} channels, k {}: needs x, taps, bias, y of {need:?} floats, got {have:?}",
                self.geo.h, self.geo.w, self.geo.oh, self.geo.ow, self.c, self.geo.k
            )));
        }
        Ok(())
    }

    fn params(&self) -> Result<DepthwiseParams, GpuError> {
        let g = &self.geo;
        u32_of(self.lens()[0].max(self.lens()[3]), "depthwise elements")?;
        Ok(DepthwiseParams {
            h: u32_of(g.h, "height")?,
            w: u32_of(g.w, "width")?,
            c: u32_of(self.c, "channels")?,
            k: u32_of(g.k, "kernel")?,
            stride: u32_of(g.stride, "stride")?,
            oh: u32_of(g.oh, "output height")?,
            ow: u32_of(g.ow, "output width")?,
            pad_top: u32_of(g.pad_top, "padding")?,
            pad_left: u32_of(g.pad_left, "padding")?,
            act_in: self.act_in as u32,
            act_out: self.act_out as u32,
            _pad0: 0,
        })
    }
}

/// Record `y = conv(x)` (four different buffers, sizes checked).
pub fn record_depthwise(
    fk: &ForwardKernels,
    enc: &mut wgpu::CommandEncoder,
    dw: &Depthwise,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<(), GpuError> {
    dw.check([x, w, bias, y].map(|b| (b.size() / 4) as usize))?;
    let params = dw.params()?;
    let groups = fk.groups_1d(dw.lens()[3] as u64)?;
    fk.dispatch(enc, FwdKernel::Depthwise, &params, &[x, w, bias, y], groups)
}

/// Upload, run, read back `y: [oh·ow, C]`.
pub async fn depthwise_once(fk: &ForwardKernels, dw: &Depthwise, x: &[f32], w: &[f32], bias: &[f32]) -> Result<Vec<f32>, GpuError> {
    let n = dw.lens()[3];
    dw.check([x.len(), w.len(), bias.len(), n])?;
    let (xb, wb, bb) = (fk.upload_f32("depthwise x", x)?, fk.upload_f32("depthwise taps", w)?, fk.upload_f32("depthwise bias", bias)?);
    let yb = fk.buffer_f32("depthwise y", n as u64)?;
    let (mut enc, scopes) = fk.begin("depthwise");
    record_depthwise(fk, &mut enc, dw, &xb, &wb, &bb, &yb)?;
    fk.finish_read("depthwise", scopes, enc, &yb, n as u64).await
}

fn relu6(v: f32) -> f32 {
    v.clamp(0.0, 6.0)
}

/// CPU twin: the shader's sum, in its order.
pub fn depthwise_reference(dw: &Depthwise, x: &[f32], w: &[f32], bias: &[f32]) -> Result<Vec<f32>, GpuError> {
    let [_, _, _, n] = dw.lens();
    dw.check([x.len(), w.len(), bias.len(), n])?;
    let (g, c) = (&dw.geo, dw.c);
    let mut y = vec![0f32; n];
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for ch in 0..c {
                let mut acc = bias[ch];
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        if let Some((iy, ix)) = g.source(oy, ox, ky, kx) {
                            let v = x[(iy * g.w + ix) * c + ch];
                            acc += w[(ky * g.k + kx) * c + ch] * if dw.act_in { relu6(v) } else { v };
                        }
                    }
                }
                y[(oy * g.ow + ox) * c + ch] = if dw.act_out { relu6(acc) } else { acc };
            }
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_is_tf_style_asymmetric() {
        // stride 2 on an even side: one padding row, after the input
        assert_eq!(same_padding(224, 3, 2), (112, 0));
        assert_eq!(same_padding(4, 3, 2), (2, 0));
        // odd side, stride 2, k 5: 4 rows of padding, 2 before
        assert_eq!(same_padding(5, 5, 2), (3, 2));
        // stride 1 keeps the size, (k − 1) / 2 before
        assert_eq!(same_padding(7, 5, 1), (7, 2));
        assert_eq!(same_padding(1, 3, 2), (1, 1));
        assert!(ConvGeometry::same(0, 3, 3, 1).is_err());
    }
}
