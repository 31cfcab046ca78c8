//! EfficientNet-Lite0 ([`crate::model::efficientnet`]) on our WGSL kernels: the same folded
//! convolutions, the same TF "SAME" padding, the same `[49, 1280]` features.
//!
//! Activations stay token-major (`[h·w, C]`) from the stem to the head, so every 1×1 conv is
//! exactly a linear layer `y = x Wᵀ + b` on `matmul.wgsl` (the folded weight `[out, in, 1, 1]`
//! read as `[out, in]`), and the head's output `[49, 1280]` is already the features' layout.
//! - stem 3×3/2: `im2col.wgsl` on the CHW pixels (zero padding) → matmul `[12544, 27] ·
//!   [32, 27]ᵀ` → `clamp.wgsl` (ReLU6);
//! - MBConv block: expand matmul (its ReLU6 fused into the depthwise kernel's reads) →
//!   `depthwise.wgsl` (k 3 or 5, stride 1 or 2, bias, ReLU6 fused) → project matmul, the
//!   residual accumulated in place by the matmul (`accumulate`) when the block has one;
//! - head 1×1 → ReLU6.
//!
//! Weights are f32, uploaded once ([`WgslEfficientNet::new`]); working buffers are pooled.
//! One command submission and one read-back per image.

use std::sync::Mutex;

use super::wgsl::gpu_err;
use crate::gpu::clamp::{record_clamp, RELU6};
use crate::gpu::depthwise::{record_depthwise, ConvGeometry, Depthwise};
use crate::gpu::forward::ForwardKernels;
use crate::gpu::im2col::{record_im2col, Im2col};
use crate::gpu::matmul::{GpuMatrix, View};
use crate::gpu::quant::HostMatrix;
use crate::gpu::GpuError;
use crate::model::efficientnet::{EfficientNetLite0, FoldedConv, FEATURES, GRID, INPUT_SIZE};
use crate::model::ModelError;

/// Input channels (RGB).
const CHANNELS: usize = 3;

fn invalid(msg: String) -> GpuError {
    GpuError::InvalidInput(msg)
}

/// A 1×1 conv as a linear layer: `W [out, in]`, bias `[out]`.
struct Pointwise {
    w: GpuMatrix,
    b: wgpu::Buffer,
}

impl Pointwise {
    /// A conv whose weight `[out, in·k·k]` is read as a matrix (1×1 convs, and the stem on
    /// im2col columns).
    fn upload(fk: &ForwardKernels, c: &FoldedConv, what: &str) -> Result<Self, GpuError> {
        let m = HostMatrix::from_f32(&c.w, c.out, c.in_per_group() * c.k * c.k, what)?;
        if c.b.len() != c.out {
            return Err(invalid(format!("{what}: {} biases for {} outputs", c.b.len(), c.out)));
        }
        Ok(Pointwise { w: GpuMatrix::upload(fk, &m)?, b: fk.upload_f32("effnet bias", &c.b)? })
    }

    /// `y[t, out] (+)= x[t, in] Wᵀ + b`, dense rows.
    fn record(&self, fk: &ForwardKernels, enc: &mut wgpu::CommandEncoder, x: &wgpu::Buffer, t: usize, y: &wgpu::Buffer, acc: bool) -> Result<(), GpuError> {
        self.w.record(fk, enc, x, View::dense(self.w.k), t, Some(&self.b), y, View::dense(self.w.n), acc)
    }
}

/// One MBConv block on the GPU, its geometry fixed by the 224×224 input.
struct GpuBlock {
    expand: Option<Pointwise>,
    /// Taps `[k·k, mid]` (tap-major) and bias `[mid]`.
    dw_taps: wgpu::Buffer,
    dw_bias: wgpu::Buffer,
    dw: Depthwise,
    project: Pointwise,
    residual: bool,
}

/// Floats of the largest buffer of each kind.
#[derive(Clone, Copy, Debug, Default)]
struct Sizes {
    /// Block inputs / outputs `[h·w, C]` (two, ping-pong).
    state: usize,
    /// Expanded `[h·w, mid]`.
    expanded: usize,
    /// Depthwise outputs `[oh·ow, mid]`.
    depthwise: usize,
}

/// Working buffers of one forward (also used by `super::wgsl_controlled`).
pub(crate) struct EffnetPool {
    pix: wgpu::Buffer,
    cols: wgpu::Buffer,
    s: [wgpu::Buffer; 2],
    e: wgpu::Buffer,
    d: wgpu::Buffer,
    /// The features `[49, 1280]`.
    pub(crate) feat: wgpu::Buffer,
}

/// EfficientNet-Lite0 on the GPU. See the module docs.
pub struct WgslEfficientNet {
    fk: ForwardKernels,
    stem_cols: Im2col,
    stem: Pointwise,
    blocks: Vec<GpuBlock>,
    head: Pointwise,
    sizes: Sizes,
    pool: Mutex<Option<EffnetPool>>,
}

impl std::fmt::Debug for WgslEfficientNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgslEfficientNet").field("blocks", &self.blocks.len()).finish()
    }
}

/// Floats in `[3, 224, 224]`.
pub const PIXELS: usize = CHANNELS * INPUT_SIZE * INPUT_SIZE;

impl WgslEfficientNet {
    /// Uploads the folded weights of `m` once and checks that its layers fit together.
    pub fn new(fk: &ForwardKernels, m: &EfficientNetLite0) -> Result<Self, GpuError> {
        let stem = m.stem();
        if stem.in_per_group() != CHANNELS {
            return Err(invalid(format!("the stem conv takes {} channels, not RGB", stem.in_per_group())));
        }
        let geo = ConvGeometry::same(INPUT_SIZE, INPUT_SIZE, stem.k, stem.stride)?;
        let stem_cols = Im2col::chw(geo, CHANNELS);
        let (mut h, mut w, mut c) = (geo.oh, geo.ow, stem.out);
        let mut sizes = Sizes { state: h * w * c, ..Default::default() };
        let mut blocks = Vec::with_capacity(m.blocks().len());
        for (i, b) in m.blocks().iter().enumerate() {
            let dwc = &b.depthwise;
            let mid = dwc.out;
            let expand = match &b.expand {
                Some(e) => {
                    if e.k != 1 || e.in_per_group() != c || e.out != mid {
                        return Err(invalid(format!("block {i}: expand conv {}→{} (k {}) does not fit {c} → {mid}", e.in_per_group(), e.out, e.k)));
                    }
                    sizes.expanded = sizes.expanded.max(h * w * mid);
                    Some(Pointwise::upload(fk, e, "effnet expand")?)
                }
                None if mid == c => None,
                None => return Err(invalid(format!("block {i}: depthwise conv of {mid} channels on a {c}-channel input"))),
            };
            if dwc.in_per_group() != 1 || dwc.b.len() != mid {
                return Err(invalid(format!("block {i}: the depthwise conv is not depthwise")));
            }
            let g = ConvGeometry::same(h, w, dwc.k, dwc.stride)?;
            let kk = dwc.k * dwc.k;
            // [mid, k·k] → [k·k, mid]
            let mut taps = vec![0f32; kk * mid];
            for (ch, row) in dwc.w.chunks_exact(kk).enumerate() {
                for (t, &v) in row.iter().enumerate() {
                    taps[t * mid + ch] = v;
                }
            }
            let p = &b.project;
            if p.k != 1 || p.in_per_group() != mid {
                return Err(invalid(format!("block {i}: project conv takes {} channels, the depthwise conv gives {mid}", p.in_per_group())));
            }
            if b.residual && (g.oh, g.ow, p.out) != (h, w, c) {
                return Err(invalid(format!("block {i}: a residual block must keep its shape")));
            }
            sizes.depthwise = sizes.depthwise.max(g.oh * g.ow * mid);
            sizes.state = sizes.state.max(g.oh * g.ow * p.out);
            blocks.push(GpuBlock {
                expand,
                dw_taps: fk.upload_f32("effnet depthwise taps", &taps)?,
                dw_bias: fk.upload_f32("effnet depthwise bias", &dwc.b)?,
                dw: Depthwise { geo: g, c: mid, act_in: b.expand.is_some(), act_out: true },
                project: Pointwise::upload(fk, p, "effnet project")?,
                residual: b.residual,
            });
            (h, w, c) = (g.oh, g.ow, p.out);
        }
        let head = m.head();
        if head.k != 1 || head.in_per_group() != c || head.out != FEATURES || (h, w) != (GRID, GRID) {
            return Err(invalid(format!("the head conv {}→{} on a {h}x{w}x{c} grid does not give [{GRID}x{GRID}, {FEATURES}]", head.in_per_group(), head.out)));
        }
        Ok(WgslEfficientNet {
            fk: fk.clone(),
            stem_cols,
            stem: Pointwise::upload(fk, stem, "effnet stem")?,
            blocks,
            head: Pointwise::upload(fk, head, "effnet head")?,
            sizes,
            pool: Mutex::new(None),
        })
    }

    /// The kernels (and context) this model runs on.
    pub fn kernels(&self) -> &ForwardKernels {
        &self.fk
    }

    pub(crate) fn make_pool(&self) -> Result<EffnetPool, GpuError> {
        let fk = &self.fk;
        let z = &self.sizes;
        Ok(EffnetPool {
            pix: fk.buffer_f32("effnet pixels", PIXELS as u64)?,
            cols: fk.buffer_f32("effnet stem columns", self.stem_cols.lens().1 as u64)?,
            s: [fk.buffer_f32("effnet state a", z.state as u64)?, fk.buffer_f32("effnet state b", z.state as u64)?],
            e: fk.buffer_f32("effnet expanded", z.expanded.max(1) as u64)?,
            d: fk.buffer_f32("effnet depthwise", z.depthwise as u64)?,
            feat: fk.buffer_f32("effnet features", (GRID * GRID * FEATURES) as u64)?,
        })
    }

    /// Refuses anything but `[3, 224, 224]` pixels (as the CPU path).
    pub(crate) fn check_pixels(pixels: &[f32]) -> Result<(), ModelError> {
        if pixels.len() != PIXELS {
            return Err(ModelError::Input(format!(
                "EfficientNet-Lite0 takes 3x{INPUT_SIZE}x{INPUT_SIZE} pixels ({PIXELS} values), got {}",
                pixels.len()
            )));
        }
        Ok(())
    }

    /// Writes `pixels` (checked by the caller) and records the forward into `enc`; the
    /// features land in `p.feat`.
    pub(crate) fn record(&self, enc: &mut wgpu::CommandEncoder, p: &EffnetPool, pixels: &[f32]) -> Result<(), GpuError> {
        let fk = &self.fk;
        fk.context().queue().write_buffer(&p.pix, 0, bytemuck::cast_slice(pixels));
        let g = &self.stem_cols.geo;
        let t = g.oh * g.ow;
        record_im2col(fk, enc, &self.stem_cols, &p.pix, &p.cols)?;
        self.stem.record(fk, enc, &p.cols, t, &p.s[0], false)?; // [112², 32]
        record_clamp(fk, enc, RELU6, &p.s[0], t * self.stem.w.n)?;
        let mut cur = 0;
        for b in &self.blocks {
            let gi = &b.dw.geo;
            let (t_in, t_out) = (gi.h * gi.w, gi.oh * gi.ow);
            let dw_in = match &b.expand {
                Some(e) => {
                    e.record(fk, enc, &p.s[cur], t_in, &p.e, false)?; // [h·w, mid], ReLU6 on read
                    &p.e
                }
                None => &p.s[cur],
            };
            record_depthwise(fk, enc, &b.dw, dw_in, &b.dw_taps, &b.dw_bias, &p.d)?; // [oh·ow, mid]
            if b.residual {
                b.project.record(fk, enc, &p.d, t_out, &p.s[cur], true)?;
            } else {
                b.project.record(fk, enc, &p.d, t_out, &p.s[1 - cur], false)?;
                cur = 1 - cur;
            }
        }
        self.head.record(fk, enc, &p.s[cur], GRID * GRID, &p.feat, false)?; // [49, 1280]
        record_clamp(fk, enc, RELU6, &p.feat, GRID * GRID * FEATURES)
    }

    /// Pixels → features: `pixels` `[3, 224, 224]` CHW, already preprocessed
    /// ([`crate::model::efficientnet::preprocess`]); returns `[49, 1280]` row-major, row
    /// `r·7 + c` grid cell `(r, c)`, as [`EfficientNetLite0::features`].
    pub async fn features(&self, pixels: &[f32]) -> crate::Result<Vec<f32>> {
        Self::check_pixels(pixels)?;
        let pool = match self.pool.lock().ok().and_then(|mut p| p.take()) {
            Some(p) => p,
            None => self.make_pool().map_err(gpu_err)?,
        };
        let out = self.record_and_read(&pool, pixels).await;
        if let Ok(mut slot) = self.pool.lock() {
            *slot = Some(pool);
        }
        out.map_err(gpu_err)
    }

    async fn record_and_read(&self, p: &EffnetPool, pixels: &[f32]) -> Result<Vec<f32>, GpuError> {
        self.fk.context().check_alive("wgsl efficientnet")?;
        let (mut enc, scopes) = self.fk.begin("wgsl efficientnet");
        self.record(&mut enc, p, pixels)?;
        self.fk.finish_read("wgsl efficientnet", scopes, enc, &p.feat, (GRID * GRID * FEATURES) as u64).await
    }

    /// Native convenience: [`WgslEfficientNet::features`] driven with `pollster`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn features_blocking(&self, pixels: &[f32]) -> crate::Result<Vec<f32>> {
        pollster::block_on(self.features(pixels))
    }
}
