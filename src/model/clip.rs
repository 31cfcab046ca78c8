//! CLIP vision transformer (`CLIPVisionModel`), the LLaVA-1.5 vision tower,
//! with the hidden states of every encoder layer.
//!
//! Mirrors HF transformers' `modeling_clip.py`: patch embedding (conv
//! without bias, stride = kernel = patch), a learned class token prepended,
//! learned absolute position embeddings, `pre_layrnorm` (sic), then
//! `num_hidden_layers` pre-norm encoder layers (`layer_norm1` →
//! multi-head self-attention `q/k/v/out_proj` → residual → `layer_norm2` →
//! `mlp.fc1` → activation → `mlp.fc2` → residual), `post_layernorm` (only on
//! the pooled class token, unused by LLaVA). Hidden states follow
//! `output_hidden_states=True`: `[0]` = the pre-layernormed embeddings,
//! `[i]` = after encoder layer `i` (LLaVA picks `vision_feature_layer`,
//! usually -2). The encoder layer is shared with SigLIP ([`super::siglip`]).

use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;
use serde_json::Value;

use super::llama::get_checked;
use super::ModelError;

/// Sanity bounds on config values (reject absurd configs before allocating).
const MAX_VISION_DIM: usize = 16384;
const MAX_VISION_LAYERS: usize = 256;
const MAX_IMAGE_SIDE: usize = 8192;

/// Activation of the vision MLP (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionAct {
    /// `quick_gelu`: `x · σ(1.702 x)` (CLIP).
    QuickGelu,
    /// `gelu`: exact erf GELU.
    Gelu,
    /// `gelu_pytorch_tanh` / `gelu_new`: tanh approximation (SigLIP).
    GeluTanh,
}

impl VisionAct {
    fn parse(s: &str, field: &str) -> Result<Self, ModelError> {
        Ok(match s {
            "quick_gelu" => VisionAct::QuickGelu,
            "gelu" => VisionAct::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => VisionAct::GeluTanh,
            other => {
                return Err(ModelError::config(
                    field,
                    format!("activation `{other}` is not supported (quick_gelu, gelu, gelu_pytorch_tanh)"),
                ))
            }
        })
    }

    pub(crate) fn apply(self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(match self {
            VisionAct::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            VisionAct::Gelu => x.gelu_erf()?,
            VisionAct::GeluTanh => x.gelu()?,
        })
    }
}

/// Which vision tower family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionKind {
    /// CLIP: class token, `pre_layrnorm`, conv without bias.
    Clip,
    /// SigLIP (and Idefics3's SigLIP variant): no class token, conv with bias.
    Siglip,
}

/// Vision tower config (HF `vision_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub kind: VisionKind,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: VisionAct,
}

fn req_usize(v: &Value, key: &str, prefix: &str, default: Option<usize>, max: usize) -> Result<usize, ModelError> {
    let field = format!("{prefix}.{key}");
    let n = match v.get(key) {
        None | Some(Value::Null) => {
            default.ok_or_else(|| ModelError::config(&field, "missing; the vision tower needs it"))?
        }
        Some(x) => x
            .as_u64()
            .ok_or_else(|| ModelError::config(&field, format!("must be a positive integer, got {x}")))?
            as usize,
    };
    if n == 0 || n > max {
        return Err(ModelError::config(&field, format!("{n} is out of range 1..={max}")));
    }
    Ok(n)
}

impl VisionConfig {
    /// Parses an HF `vision_config` object. `model_type` picks the family:
    /// `clip_vision_model` → CLIP; `siglip_vision_model`, `idefics3_vision`
    /// → SigLIP. Missing fields take the HF class defaults of that family.
    pub fn from_hf_json(v: &Value, prefix: &str) -> Result<Self, ModelError> {
        let mt = v.get("model_type").and_then(Value::as_str).ok_or_else(|| {
            ModelError::config(format!("{prefix}.model_type"), "missing: cannot tell the vision tower family")
        })?;
        let (kind, d, i, l, h, img, p, eps, act) = match mt {
            "clip_vision_model" | "clip" => (VisionKind::Clip, 768, 3072, 12, 12, 224, 32, 1e-5, "quick_gelu"),
            "siglip_vision_model" | "siglip" => (VisionKind::Siglip, 768, 3072, 12, 12, 224, 16, 1e-6, "gelu_pytorch_tanh"),
            "idefics3_vision" | "idefics3" => (VisionKind::Siglip, 1152, 3072, 32, 16, 224, 32, 1e-6, "gelu_pytorch_tanh"),
            other => {
                return Err(ModelError::Unsupported(format!(
                    "vision tower `{other}`: supported are clip_vision_model, siglip_vision_model, idefics3_vision"
                )))
            }
        };
        let hidden_size = req_usize(v, "hidden_size", prefix, Some(d), MAX_VISION_DIM)?;
        let intermediate_size = req_usize(v, "intermediate_size", prefix, Some(i), MAX_VISION_DIM * 8)?;
        let num_hidden_layers = req_usize(v, "num_hidden_layers", prefix, Some(l), MAX_VISION_LAYERS)?;
        let num_attention_heads = req_usize(v, "num_attention_heads", prefix, Some(h), MAX_VISION_DIM)?;
        let num_channels = req_usize(v, "num_channels", prefix, Some(3), 3)?;
        if num_channels != 3 {
            return Err(ModelError::config(format!("{prefix}.num_channels"), "only 3 (RGB) is supported"));
        }
        let image_size = req_usize(v, "image_size", prefix, Some(img), MAX_IMAGE_SIDE)?;
        let patch_size = req_usize(v, "patch_size", prefix, Some(p), MAX_IMAGE_SIDE)?;
        let layer_norm_eps = match v.get("layer_norm_eps") {
            None | Some(Value::Null) => eps,
            Some(x) => x.as_f64().filter(|e| e.is_finite() && *e > 0.0).ok_or_else(|| {
                ModelError::config(format!("{prefix}.layer_norm_eps"), format!("must be a positive number, got {x}"))
            })?,
        };
        let act = match v.get("hidden_act") {
            None | Some(Value::Null) => act.to_string(),
            Some(x) => x
                .as_str()
                .ok_or_else(|| ModelError::config(format!("{prefix}.hidden_act"), "must be a string"))?
                .to_string(),
        };
        let cfg = Self {
            kind,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_channels,
            image_size,
            patch_size,
            layer_norm_eps,
            hidden_act: VisionAct::parse(&act, &format!("{prefix}.hidden_act"))?,
        };
        cfg.validate(prefix)?;
        Ok(cfg)
    }

    fn validate(&self, prefix: &str) -> Result<(), ModelError> {
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(ModelError::config(
                format!("{prefix}.num_attention_heads"),
                format!("{} does not divide hidden_size {}", self.num_attention_heads, self.hidden_size),
            ));
        }
        if self.image_size % self.patch_size != 0 {
            return Err(ModelError::config(
                format!("{prefix}.patch_size"),
                format!("{} does not divide image_size {}", self.patch_size, self.image_size),
            ));
        }
        Ok(())
    }

    /// Patches per side of a full-size image.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// A linear layer `y = x Wᵀ + b`, `W: [out, in]` (HF `nn.Linear`).
#[derive(Debug, Clone)]
pub struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    pub(crate) fn new(vb: &VarBuilder, inp: usize, out: usize, bias: bool) -> Result<Self, ModelError> {
        let w = get_checked(vb, &[out, inp], "weight")?;
        let b = if bias { Some(get_checked(vb, &[out], "bias")?) } else { None };
        Ok(Self { w, b })
    }

    /// The weight `[out, in]` and bias `[out]` (for the WGSL path).
    pub(crate) fn parts(&self) -> (&Tensor, Option<&Tensor>) {
        (&self.w, self.b.as_ref())
    }

    /// `x: [N, in]` → `[N, out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let y = x.matmul(&self.w.t()?)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// LayerNorm over the last dimension with weight and bias.
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub(crate) fn new(vb: &VarBuilder, d: usize, eps: f64) -> Result<Self, ModelError> {
        Ok(Self { w: get_checked(vb, &[d], "weight")?, b: get_checked(vb, &[d], "bias")?, eps })
    }

    /// `x: [N, d]` → `[N, d]`, statistics in f32 like torch.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let mean = x.mean_keepdim(D::Minus1)?; // [N, 1]
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?; // [N, 1]
        let y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(y.broadcast_mul(&self.w)?.broadcast_add(&self.b)?)
    }
}

/// One pre-norm ViT encoder layer (CLIP and SigLIP share the layout).
#[derive(Debug, Clone)]
pub(crate) struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    act: VisionAct,
}

impl EncoderLayer {
    pub(crate) fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        let d = cfg.hidden_size;
        let a = vb.pp("self_attn");
        let m = vb.pp("mlp");
        Ok(Self {
            layer_norm1: LayerNorm::new(&vb.pp("layer_norm1"), d, cfg.layer_norm_eps)?,
            q_proj: Linear::new(&a.pp("q_proj"), d, d, true)?,
            k_proj: Linear::new(&a.pp("k_proj"), d, d, true)?,
            v_proj: Linear::new(&a.pp("v_proj"), d, d, true)?,
            out_proj: Linear::new(&a.pp("out_proj"), d, d, true)?,
            layer_norm2: LayerNorm::new(&vb.pp("layer_norm2"), d, cfg.layer_norm_eps)?,
            fc1: Linear::new(&m.pp("fc1"), d, cfg.intermediate_size, true)?,
            fc2: Linear::new(&m.pp("fc2"), cfg.intermediate_size, d, true)?,
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act,
        })
    }

    /// `x: [N, d]` (one image's tokens, full bidirectional attention) → `[N, d]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let (n, d) = x.dims2()?;
        let hd = d / self.heads;
        let h = self.layer_norm1.forward(x)?;
        let split = |t: Tensor| -> Result<Tensor, ModelError> {
            Ok(t.reshape((n, self.heads, hd))?.transpose(0, 1)?.contiguous()?) // [H, N, hd]
        };
        let q = split((self.q_proj.forward(&h)? * (hd as f64).powf(-0.5))?)?;
        let k = split(self.k_proj.forward(&h)?)?;
        let v = split(self.v_proj.forward(&h)?)?;
        let att = q.matmul(&k.t()?)?; // [H, N, N]
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let o = att.matmul(&v)?; // [H, N, hd]
        let o = o.transpose(0, 1)?.contiguous()?.reshape((n, d))?; // [N, d]
        let x = (x + self.out_proj.forward(&o)?)?;
        let h = self.layer_norm2.forward(&x)?;
        let h = self.fc2.forward(&self.act.apply(&self.fc1.forward(&h)?)?)?;
        Ok((x + h)?)
    }
}

/// Patch embedding as a matmul: `[3, H, W]` pixels → `[gh·gw, d]`
/// (row-major patches), equal to HF's `Conv2d(stride = kernel = patch)`.
#[derive(Debug, Clone)]
pub(crate) struct PatchEmbed {
    /// `[d, 3·p·p]`
    w: Tensor,
    /// `[d]`
    b: Option<Tensor>,
    p: usize,
}

impl PatchEmbed {
    pub(crate) fn new(cfg: &VisionConfig, vb: &VarBuilder, bias: bool) -> Result<Self, ModelError> {
        let (d, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        let w = get_checked(vb, &[d, c, p, p], "weight")?.reshape((d, c * p * p))?;
        let b = if bias { Some(get_checked(vb, &[d], "bias")?) } else { None };
        Ok(Self { w, b, p })
    }

    /// `pixels: [3, H, W]` → `[gh·gw, d]`.
    pub(crate) fn forward(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        let (c, h, w) = pixels.dims3()?;
        let p = self.p;
        let (gh, gw) = (h / p, w / p);
        // [c, gh, p, gw, p] → [gh, gw, c, p, p] → [gh·gw, c·p·p]
        let x = pixels
            .reshape((c, gh, p, gw, p))?
            .permute((1, 3, 0, 2, 4))?
            .contiguous()?
            .reshape((gh * gw, c * p * p))?;
        let y = x.matmul(&self.w.t()?)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Checks a tile's pixel tensor against the tower's expected size.
pub(crate) fn check_pixels(cfg: &VisionConfig, pixels: &Tensor) -> Result<(), ModelError> {
    let dims = pixels.dims();
    let want = [cfg.num_channels, cfg.image_size, cfg.image_size];
    if dims != want {
        return Err(ModelError::Input(format!(
            "pixel values of shape {dims:?}, the vision tower expects {want:?} (check the image processor config against vision_config.image_size)"
        )));
    }
    Ok(())
}

/// The CLIP vision tower.
#[derive(Debug, Clone)]
pub struct ClipVision {
    cfg: VisionConfig,
    patch_embedding: PatchEmbed,
    /// `[d]`
    class_embedding: Tensor,
    /// `[1 + g², d]`
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
}

impl ClipVision {
    /// Builds from the tensors under `vb` (the `vision_model.` level:
    /// `embeddings.*`, `pre_layrnorm`, `encoder.layers.*`).
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        let d = cfg.hidden_size;
        let e = vb.pp("embeddings");
        let n_pos = cfg.grid() * cfg.grid() + 1;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(cfg, vb.pp("encoder.layers").pp(i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_embedding: PatchEmbed::new(cfg, &e.pp("patch_embedding"), false)?,
            class_embedding: get_checked(&e, &[d], "class_embedding")?,
            position_embedding: get_checked(&e.pp("position_embedding"), &[n_pos, d], "weight")?,
            pre_layrnorm: LayerNorm::new(&vb.pp("pre_layrnorm"), d, cfg.layer_norm_eps)?,
            layers,
        })
    }

    /// The config.
    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Hidden states of one tile `pixels: [3, S, S]`: `L + 1` tensors
    /// `[1 + g², d]` (class token first), HF `output_hidden_states` order.
    /// Stops after layer `upto` when given (later states are not needed).
    pub fn hidden_states(&self, pixels: &Tensor, upto: Option<usize>) -> Result<Vec<Tensor>, ModelError> {
        check_pixels(&self.cfg, pixels)?;
        let patches = self.patch_embedding.forward(&pixels.to_dtype(DType::F32)?)?; // [g², d]
        let cls = self.class_embedding.unsqueeze(0)?; // [1, d]
        let x = Tensor::cat(&[&cls, &patches], 0)?; // [1 + g², d]
        let x = (x + &self.position_embedding)?;
        let mut x = self.pre_layrnorm.forward(&x)?;
        let n = upto.unwrap_or(self.layers.len()).min(self.layers.len());
        let mut states = Vec::with_capacity(n + 1);
        states.push(x.clone());
        for layer in &self.layers[..n] {
            x = layer.forward(&x)?;
            states.push(x.clone());
        }
        Ok(states)
    }
}
