//! Vision towers (CLIP, SigLIP and Idefics3's SigLIP) and connectors (LLaVA `mlp2x_gelu` /
//! `linear`, Idefics3 pixel shuffle + projection) on our WGSL kernels, and [`WgslVlm`]: those
//! image features spliced into the WGSL text decoder ([`super::wgsl::WgslTextModel`]), the GPU
//! twin of [`crate::model::vlm::Vlm`] returning the same [`HiddenStates`].
//!
//! Same maths as `crate::model::{clip, siglip, connector, llava, idefics3}` (HF
//! `modeling_clip.py`, `modeling_siglip.py`, `modeling_idefics3.py`, `modeling_llava.py`):
//! patch embedding = unfold ([`Permute::unfold_patches`]) + matmul (the conv weight
//! `[d, 3, p, p]` read as `[d, 3p²]`); CLIP's class token and the position embeddings added;
//! CLIP's `pre_layrnorm`; pre-norm encoder layers (LayerNorm → fused q|k|v → bidirectional
//! multi-head attention → `out_proj` + residual → LayerNorm → `fc1` → the config's GELU →
//! `fc2` + residual); then what the connector reads ([`Readout`]): LLaVA's
//! `vision_feature_layer` states (class token dropped for `"default"`, several layers
//! concatenated along features) or Idefics3's `post_layernorm` of the last layer, pixel
//! shuffled. All tiles of an image run through the tower together (attention stays inside each
//! tile, [`AttnShape::seq`]): one command submission, one read-back of `[n_visual, d_text]`,
//! rows and order exactly those of [`crate::model::vlm::Vlm::image_features`].
//!
//! Weights are f32 on the GPU (VLM checkpoints are safetensors f32 / f16 / bf16). Only the
//! encoder layers the readout needs are loaded (LLaVA usually stops one layer early).

use std::path::Path;
use std::sync::Mutex;

use candle_core::Device;
use serde_json::Value;

use super::wgsl::{gpu_err, F32Source, HostTextWeights, WgslTextModel};
use crate::gpu::add::record_add;
use crate::gpu::attention::{record_attention, AttnShape};
use crate::gpu::forward::ForwardKernels;
use crate::gpu::gelu::{record_gelu, GeluKind};
use crate::gpu::matmul::{GpuMatrix, View};
use crate::gpu::norm::{record_norm, NormKind};
use crate::gpu::permute::{record_permute, Permute};
use crate::gpu::quant::HostMatrix;
use crate::gpu::GpuError;
use crate::image::Preprocessed;
use crate::model::clip::{VisionAct, VisionConfig, VisionKind};
use crate::model::config::TextConfig;
use crate::model::hidden::{HiddenStates, PatchGeometry};
use crate::model::idefics3::Idefics3Config;
use crate::model::llava::{FeatureSelect, LlavaConfig, ProjectorType};
use crate::model::siglip::bucketized_position_ids;
use crate::model::vlm::{idefics3_patch_geometry, llava_patch_geometry, text_weights_prefix, vlm_family};
use crate::model::weights::Weights;
use crate::model::ModelError;

/// Largest head dimension `attention.wgsl` handles.
const MAX_HEAD_DIM: usize = 256;

/// What the connector reads from the tower's hidden states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readout {
    /// LLaVA: the states at `layers` (indices into the `L + 1` states, 0 = embeddings), the
    /// first `drop` rows of each tile left out (the class token for `"default"`), the layers
    /// concatenated along features.
    Layers { layers: Vec<usize>, drop: usize },
    /// Idefics3: `post_layernorm` of the last state.
    PostNorm,
}

/// A linear layer on the host: `w: [out, in]`, `b: [out]`.
#[derive(Clone, Debug)]
pub struct HostLinear {
    pub w: HostMatrix,
    pub b: Option<Vec<f32>>,
}

/// A LayerNorm on the host: weight and bias `[d]`.
#[derive(Clone, Debug)]
pub struct HostLayerNorm {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

/// One encoder layer's weights on the host.
#[derive(Clone, Debug)]
pub struct HostVisionLayer {
    pub layer_norm1: HostLayerNorm,
    /// `[3d, d]`: q, k, v rows stacked, with their biases `[3d]`.
    pub qkv: HostLinear,
    /// `[d, d]`
    pub out_proj: HostLinear,
    pub layer_norm2: HostLayerNorm,
    /// `[I, d]`
    pub fc1: HostLinear,
    /// `[d, I]`
    pub fc2: HostLinear,
}

/// The connector's weights on the host.
#[derive(Clone, Debug)]
pub enum HostConnector {
    /// LLaVA `mlp2x_gelu`: `linear_1` → act → `linear_2`.
    Mlp { linear_1: HostLinear, act: GeluKind, linear_2: HostLinear },
    /// LLaVA `linear`: `linear_1`.
    Linear(HostLinear),
    /// Idefics3: pixel shuffle by `scale`, then `modality_projection.proj` (no bias).
    PixelShuffle { scale: usize, proj: HostLinear },
}

/// A vision tower + connector on the host, ready to upload.
#[derive(Clone, Debug)]
pub struct HostVisionWeights {
    pub config: VisionConfig,
    /// Patch embedding `[d, 3p²]` (+ bias for SigLIP).
    pub patch: HostLinear,
    /// CLIP's class token `[d]`.
    pub class_embedding: Option<Vec<f32>>,
    /// Position embeddings, one row per token of a tile `[(cls) + g², d]`.
    pub position: Vec<f32>,
    /// CLIP's `pre_layrnorm`.
    pub pre_norm: Option<HostLayerNorm>,
    /// The encoder layers the readout needs.
    pub layers: Vec<HostVisionLayer>,
    /// `post_layernorm` (read by [`Readout::PostNorm`]).
    pub post_norm: Option<HostLayerNorm>,
    pub readout: Readout,
    pub connector: HostConnector,
}

/// `VisionAct` → the gelu kernel's mode.
fn gelu_kind(a: VisionAct) -> GeluKind {
    match a {
        VisionAct::QuickGelu => GeluKind::Quick,
        VisionAct::Gelu => GeluKind::Erf,
        VisionAct::GeluTanh => GeluKind::Tanh,
    }
}

/// The projector activation as `crate::model::connector::Connector::mlp2x` accepts it.
fn projector_act(s: &str) -> Result<GeluKind, ModelError> {
    match s {
        "gelu" => Ok(GeluKind::Erf),
        "gelu_pytorch_tanh" | "gelu_new" => Ok(GeluKind::Tanh),
        "quick_gelu" => Ok(GeluKind::Quick),
        other => Err(ModelError::config(
            "projector_hidden_act",
            format!("`{other}` is not supported (gelu, gelu_pytorch_tanh, quick_gelu)"),
        )),
    }
}

/// The first of `candidates` (prefixes ending in `.`) under which `probe` exists.
fn find_prefix(w: &Weights, candidates: &[&str], probe: &str) -> Result<String, ModelError> {
    candidates
        .iter()
        .find(|p| w.tensors.contains_key(&format!("{p}{probe}")))
        .map(|p| p.to_string())
        .ok_or_else(|| ModelError::MissingTensor {
            name: format!("{{{}}}{probe}", candidates.join(",")),
            source_desc: "the weights (none of the known checkpoint layouts matches)".into(),
        })
}

fn linear(src: &F32Source, name: &str, out: usize, inp: usize, bias: bool) -> crate::Result<HostLinear> {
    let w = src.get(&format!("{name}.weight"), &[out, inp])?;
    let b = if bias { Some(src.get(&format!("{name}.bias"), &[out])?) } else { None };
    Ok(HostLinear { w: HostMatrix::from_f32(&w, out, inp, name).map_err(gpu_err)?, b })
}

fn layer_norm(src: &F32Source, name: &str, d: usize) -> crate::Result<HostLayerNorm> {
    Ok(HostLayerNorm { w: src.get(&format!("{name}.weight"), &[d])?, b: src.get(&format!("{name}.bias"), &[d])? })
}

/// The tower's weights under `p` (the `vision_model.` level), `n_layers` encoder layers.
struct Tower {
    patch: HostLinear,
    class_embedding: Option<Vec<f32>>,
    position: Vec<f32>,
    pre_norm: Option<HostLayerNorm>,
    layers: Vec<HostVisionLayer>,
    post_norm: Option<HostLayerNorm>,
}

fn load_tower(cfg: &VisionConfig, src: &F32Source, p: &str, n_layers: usize, post_norm: bool) -> crate::Result<Tower> {
    let (d, inter, ps, g) = (cfg.hidden_size, cfg.intermediate_size, cfg.patch_size, cfg.grid());
    let clip = cfg.kind == VisionKind::Clip;
    let k = cfg.num_channels * ps * ps;
    let pw = src.get(&format!("{p}embeddings.patch_embedding.weight"), &[d, cfg.num_channels, ps, ps])?;
    let pb = if clip { None } else { Some(src.get(&format!("{p}embeddings.patch_embedding.bias"), &[d])?) };
    let patch = HostLinear { w: HostMatrix::from_f32(&pw, d, k, "patch_embedding").map_err(gpu_err)?, b: pb };
    let n_pos = g * g + usize::from(clip);
    let table = src.get(&format!("{p}embeddings.position_embedding.weight"), &[n_pos, d])?;
    let position = if clip {
        table
    } else {
        // Idefics3's bucketised ids (the identity for full-size tiles), as the CPU path reads them
        bucketized_position_ids(g, g, g).iter().flat_map(|&i| table[i as usize * d..(i as usize + 1) * d].iter().copied()).collect()
    };
    let class_embedding = if clip { Some(src.get(&format!("{p}embeddings.class_embedding"), &[d])?) } else { None };
    let pre_norm = if clip { Some(layer_norm(src, &format!("{p}pre_layrnorm"), d)?) } else { None };
    let mut layers = Vec::with_capacity(n_layers);
    for i in 0..n_layers {
        let l = format!("{p}encoder.layers.{i}.");
        let a = format!("{l}self_attn.");
        let (q, kk, v) = (
            linear(src, &format!("{a}q_proj"), d, d, true)?,
            linear(src, &format!("{a}k_proj"), d, d, true)?,
            linear(src, &format!("{a}v_proj"), d, d, true)?,
        );
        let qkv_w = HostMatrix::concat_rows(&[&q.w, &kk.w, &v.w]).map_err(gpu_err)?;
        let qkv_b = [q.b, kk.b, v.b].into_iter().flatten().flatten().collect();
        layers.push(HostVisionLayer {
            layer_norm1: layer_norm(src, &format!("{l}layer_norm1"), d)?,
            qkv: HostLinear { w: qkv_w, b: Some(qkv_b) },
            out_proj: linear(src, &format!("{a}out_proj"), d, d, true)?,
            layer_norm2: layer_norm(src, &format!("{l}layer_norm2"), d)?,
            fc1: linear(src, &format!("{l}mlp.fc1"), inter, d, true)?,
            fc2: linear(src, &format!("{l}mlp.fc2"), d, inter, true)?,
        });
    }
    let post_norm = if post_norm { Some(layer_norm(src, &format!("{p}post_layernorm"), d)?) } else { None };
    Ok(Tower { patch, class_embedding, position, pre_norm, layers, post_norm })
}

impl HostVisionWeights {
    fn assemble(config: &VisionConfig, t: Tower, readout: Readout, connector: HostConnector) -> Self {
        HostVisionWeights {
            config: config.clone(),
            patch: t.patch,
            class_embedding: t.class_embedding,
            position: t.position,
            pre_norm: t.pre_norm,
            layers: t.layers,
            post_norm: t.post_norm,
            readout,
            connector,
        }
    }

    /// LLaVA's tower (up to the last feature layer) and projector from a checkpoint (any of
    /// the layouts `crate::model::llava` accepts).
    pub fn from_llava(cfg: &LlavaConfig, w: &Weights, what: &str) -> crate::Result<Self> {
        let src = F32Source { tensors: &w.tensors, what };
        let vp = find_prefix(
            w,
            &["vision_tower.", "vision_tower.vision_model.", "model.vision_tower.", "model.vision_tower.vision_model."],
            "embeddings.patch_embedding.weight",
        )?;
        let upto = cfg.vision_feature_layers.iter().copied().max().unwrap_or(0);
        let tower = load_tower(&cfg.vision, &src, &vp, upto, false)?;
        let pp = find_prefix(w, &["multi_modal_projector.", "model.multi_modal_projector."], "linear_1.weight")?;
        let d_in = cfg.vision.hidden_size * cfg.vision_feature_layers.len();
        let d_out = cfg.text.hidden_size;
        let l1 = linear(&src, &format!("{pp}linear_1"), d_out, d_in, cfg.projector_bias)?;
        let connector = match cfg.projector {
            ProjectorType::Mlp2xGelu => HostConnector::Mlp {
                linear_1: l1,
                act: projector_act(&cfg.projector_hidden_act)?,
                linear_2: linear(&src, &format!("{pp}linear_2"), d_out, d_out, cfg.projector_bias)?,
            },
            ProjectorType::Linear => HostConnector::Linear(l1),
        };
        let drop = usize::from(cfg.select == FeatureSelect::Default);
        let readout = Readout::Layers { layers: cfg.vision_feature_layers.clone(), drop };
        Ok(Self::assemble(&cfg.vision, tower, readout, connector))
    }

    /// Idefics3's tower (all layers + `post_layernorm`) and connector from a checkpoint.
    pub fn from_idefics3(cfg: &Idefics3Config, w: &Weights, what: &str) -> crate::Result<Self> {
        let src = F32Source { tensors: &w.tensors, what };
        let vp = find_prefix(w, &["model.vision_model.", "vision_model."], "embeddings.patch_embedding.weight")?;
        let tower = load_tower(&cfg.vision, &src, &vp, cfg.vision.num_hidden_layers, true)?;
        let cp = find_prefix(w, &["model.connector.", "connector."], "modality_projection.proj.weight")?;
        let s = cfg.scale_factor;
        let proj = linear(&src, &format!("{cp}modality_projection.proj"), cfg.text.hidden_size, cfg.vision.hidden_size * s * s, false)?;
        Ok(Self::assemble(&cfg.vision, tower, Readout::PostNorm, HostConnector::PixelShuffle { scale: s, proj }))
    }
}

/// Refuses what the CPU path runs but the shaders do not, naming the config field.
fn check_shader_support(vision: &VisionConfig, text: &TextConfig) -> Result<(), ModelError> {
    let hd = vision.head_dim();
    if hd > MAX_HEAD_DIM {
        return Err(ModelError::config(
            "vision_config.num_attention_heads",
            format!(
                "head dim {hd} (hidden_size {} / {} heads) exceeds {MAX_HEAD_DIM}, the most attention.wgsl handles; use the CPU path",
                vision.hidden_size, vision.num_attention_heads
            ),
        ));
    }
    if text.head_dim > MAX_HEAD_DIM {
        return Err(ModelError::config(
            "text_config.head_dim",
            format!("{} exceeds {MAX_HEAD_DIM}, the most attention.wgsl handles; use the CPU path", text.head_dim),
        ));
    }
    Ok(())
}

/// A VLM `config.json` parsed for the WGSL path.
#[derive(Clone, Debug, PartialEq)]
pub enum VlmConfig {
    Llava(LlavaConfig),
    Idefics3(Idefics3Config),
}

impl VlmConfig {
    /// Parses a LLaVA or Idefics3 / SmolVLM `config.json` and checks the shaders run it.
    pub fn from_hf_json(v: &Value) -> Result<Self, ModelError> {
        crate::model::vlm::Vlm::check_config(v)?;
        let c = match vlm_family(v) {
            Some("llava") => VlmConfig::Llava(LlavaConfig::from_hf_json(v)?),
            _ => VlmConfig::Idefics3(Idefics3Config::from_hf_json(v)?),
        };
        check_shader_support(c.vision(), c.text())?;
        if let VlmConfig::Llava(l) = &c {
            projector_act(&l.projector_hidden_act)?;
        }
        Ok(c)
    }

    /// The vision tower's config.
    pub fn vision(&self) -> &VisionConfig {
        match self {
            VlmConfig::Llava(c) => &c.vision,
            VlmConfig::Idefics3(c) => &c.vision,
        }
    }

    /// The text model's config.
    pub fn text(&self) -> &TextConfig {
        match self {
            VlmConfig::Llava(c) => &c.text,
            VlmConfig::Idefics3(c) => &c.text,
        }
    }

    /// The image placeholder token id.
    pub fn image_token_id(&self) -> u32 {
        match self {
            VlmConfig::Llava(c) => c.image_token_id,
            VlmConfig::Idefics3(c) => c.image_token_id,
        }
    }

    /// Geometry of each visual token of `pre` (as [`crate::model::vlm::Vlm::image_features`]).
    pub fn patch_geometry(&self, pre: &Preprocessed) -> Result<Vec<PatchGeometry>, ModelError> {
        match self {
            VlmConfig::Llava(c) => llava_patch_geometry(c, pre),
            VlmConfig::Idefics3(c) => Ok(idefics3_patch_geometry(c, pre)),
        }
    }
}

/// A whole VLM's weights on the host in the shader formats.
#[derive(Clone, Debug)]
pub struct HostVlmWeights {
    pub config: VlmConfig,
    pub vision: HostVisionWeights,
    pub text: HostTextWeights,
}

impl HostVlmWeights {
    /// From a parsed `config.json` and a checkpoint's tensors (no file system: also for wasm).
    pub fn from_weights(config: &Value, w: &Weights, what: &str) -> crate::Result<Self> {
        let config = VlmConfig::from_hf_json(config)?;
        let vision = match &config {
            VlmConfig::Llava(c) => HostVisionWeights::from_llava(c, w, what)?,
            VlmConfig::Idefics3(c) => HostVisionWeights::from_idefics3(c, w, what)?,
        };
        let prefix = text_weights_prefix(w.tensors.keys()).ok_or_else(|| ModelError::MissingTensor {
            name: "<language model prefix>embed_tokens.weight".into(),
            source_desc: format!("{what} (no known VLM checkpoint layout holds the language model)"),
        })?;
        let text = HostTextWeights::from_weights(config.text(), w, &prefix, what)?;
        Ok(HostVlmWeights { config, vision, text })
    }

    /// Reads an HF VLM directory (`config.json` + safetensors); the config is checked first.
    pub fn load(dir: &Path) -> crate::Result<Self> {
        let cfg_path = dir.join("config.json");
        let what = dir.display().to_string();
        let bytes = std::fs::read(&cfg_path).map_err(|source| ModelError::Io { path: cfg_path.display().to_string(), source })?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ModelError::Weights { path: cfg_path.display().to_string(), msg: format!("invalid JSON: {e}") })?;
        VlmConfig::from_hf_json(&v)?;
        let w = crate::model::weights::load_safetensors_dir(dir, &Device::Cpu)?;
        Self::from_weights(&v, &w, &what)
    }
}

struct GpuLinear {
    w: GpuMatrix,
    b: Option<wgpu::Buffer>,
}

impl GpuLinear {
    fn upload(fk: &ForwardKernels, l: &HostLinear) -> Result<Self, GpuError> {
        Ok(GpuLinear { w: GpuMatrix::upload(fk, &l.w)?, b: l.b.as_deref().map(|b| fk.upload_f32("bias", b)).transpose()? })
    }

    /// `y[t, out] (+)= x[t, in] Wᵀ + b`, dense rows.
    fn record(&self, fk: &ForwardKernels, enc: &mut wgpu::CommandEncoder, x: &wgpu::Buffer, t: usize, y: &wgpu::Buffer, acc: bool) -> Result<(), GpuError> {
        self.w.record(fk, enc, x, View::dense(self.w.k), t, self.b.as_ref(), y, View::dense(self.w.n), acc)
    }
}

struct GpuLayerNorm {
    w: wgpu::Buffer,
    b: wgpu::Buffer,
}

impl GpuLayerNorm {
    fn upload(fk: &ForwardKernels, n: &HostLayerNorm) -> Result<Self, GpuError> {
        Ok(GpuLayerNorm { w: fk.upload_f32("layer norm w", &n.w)?, b: fk.upload_f32("layer norm b", &n.b)? })
    }

    #[allow(clippy::too_many_arguments)]
    fn record(&self, fk: &ForwardKernels, enc: &mut wgpu::CommandEncoder, eps: f32, x: &wgpu::Buffer, rows: usize, d: usize, y: &wgpu::Buffer) -> Result<(), GpuError> {
        record_norm(fk, enc, NormKind::Layer, eps, (x, View::dense(d)), rows, d, &self.w, Some(&self.b), (y, View::dense(d)))
    }
}

struct GpuVisionLayer {
    ln1: GpuLayerNorm,
    qkv: GpuLinear,
    out_proj: GpuLinear,
    ln2: GpuLayerNorm,
    fc1: GpuLinear,
    fc2: GpuLinear,
}

enum GpuConnector {
    Mlp { linear_1: GpuLinear, act: GeluKind, linear_2: GpuLinear },
    Linear(GpuLinear),
    PixelShuffle { scale: usize, proj: GpuLinear },
}

/// Per-tile sizes, derived once from the config and the readout.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// Tokens per tile in the tower (`(1) + g²`).
    n: usize,
    /// Leading rows per tile not from patches (CLIP's class token).
    lead: usize,
    /// Rows per tile the readout keeps, and their width.
    n_sel: usize,
    w_sel: usize,
    /// Visual tokens per tile out of the connector, and `d_text`.
    n_out: usize,
    d_out: usize,
}

/// Working buffers for up to `tiles` tiles.
struct Pool {
    tiles: usize,
    pix: wgpu::Buffer,
    cols: wgpu::Buffer,
    x: wgpu::Buffer,
    xn: wgpu::Buffer,
    qkv: wgpu::Buffer,
    ctx: wgpu::Buffer,
    h: wgpu::Buffer,
    /// [`Readout::Layers`] target `[tiles·n_sel, w_sel]`.
    sel: Option<wgpu::Buffer>,
    /// Pixel-shuffled `[tiles·n_out, s²·w_sel]`.
    shuf: Option<wgpu::Buffer>,
    /// The MLP connector's hidden `[tiles·n_out, d_out]`.
    mid: Option<wgpu::Buffer>,
    out: wgpu::Buffer,
}

/// A vision tower + connector on the GPU. See the module docs.
pub struct WgslVisionModel {
    fk: ForwardKernels,
    cfg: VisionConfig,
    readout: Readout,
    sizes: Sizes,
    patch: GpuLinear,
    /// `[n, d]`, CLIP's class token folded into row 0.
    pos: wgpu::Buffer,
    pre_norm: Option<GpuLayerNorm>,
    layers: Vec<GpuVisionLayer>,
    post_norm: Option<GpuLayerNorm>,
    connector: GpuConnector,
    pool: Mutex<Option<Pool>>,
}

impl std::fmt::Debug for WgslVisionModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgslVisionModel").field("config", &self.cfg).field("readout", &self.readout).finish()
    }
}

fn invalid(msg: String) -> GpuError {
    GpuError::InvalidInput(msg)
}

impl WgslVisionModel {
    /// Uploads `w` once; checks that its parts fit together.
    pub fn new(fk: &ForwardKernels, w: &HostVisionWeights) -> Result<Self, GpuError> {
        let c = &w.config;
        let (d, g) = (c.hidden_size, c.grid());
        if c.head_dim() > MAX_HEAD_DIM || c.hidden_size % c.num_attention_heads != 0 {
            return Err(invalid(format!("vision head dim {} is not supported by attention.wgsl (at most {MAX_HEAD_DIM})", c.head_dim())));
        }
        let lead = usize::from(w.class_embedding.is_some());
        if lead == 1 && w.patch.b.is_some() {
            return Err(invalid("a class token with a patch-embedding bias is not supported (CLIP has no bias)".into()));
        }
        let n = g * g + lead;
        if w.position.len() != n * d || w.patch.w.n != d || w.patch.w.k != c.num_channels * c.patch_size * c.patch_size {
            return Err(invalid(format!("vision weights do not match the config (position table {} floats for [{n}, {d}])", w.position.len())));
        }
        let (n_sel, w_sel) = match &w.readout {
            Readout::Layers { layers, drop } => {
                if layers.is_empty() || layers.iter().any(|&l| l > w.layers.len()) || *drop >= n {
                    return Err(invalid(format!("readout {:?} needs states the {} loaded layers do not give", w.readout, w.layers.len())));
                }
                (n - drop, layers.len() * d)
            }
            Readout::PostNorm => {
                if w.post_norm.is_none() {
                    return Err(invalid("the post-norm readout needs post_layernorm weights".into()));
                }
                (n, d)
            }
        };
        let (n_out, k_in, d_out) = match &w.connector {
            HostConnector::Mlp { linear_1, linear_2, .. } => {
                if linear_2.w.k != linear_1.w.n {
                    return Err(invalid("connector linear_2 does not take linear_1's output".into()));
                }
                (n_sel, linear_1.w.k, linear_2.w.n)
            }
            HostConnector::Linear(l) => (n_sel, l.w.k, l.w.n),
            HostConnector::PixelShuffle { scale, proj } => {
                if lead != 0 || n_sel != g * g || *scale == 0 || g % scale != 0 {
                    return Err(invalid(format!("pixel shuffle by {scale} needs a square patch grid divisible by it, got {n_sel} tokens")));
                }
                (n_sel / (scale * scale), w_sel * scale * scale, proj.w.n)
            }
        };
        let want_k = match &w.connector {
            HostConnector::PixelShuffle { .. } => w_sel * n_sel / n_out,
            _ => w_sel,
        };
        if k_in != want_k {
            return Err(invalid(format!("the connector takes {k_in} features, the readout gives {want_k}")));
        }
        // CLIP: the class token rows of the unfolded patches are zero, so the patch matmul
        // leaves 0 there and the position add puts class_embedding + position[0]
        let mut pos = w.position.clone();
        if let Some(cls) = &w.class_embedding {
            for (p, c) in pos[..d].iter_mut().zip(cls) {
                *p += c;
            }
        }
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            layers.push(GpuVisionLayer {
                ln1: GpuLayerNorm::upload(fk, &l.layer_norm1)?,
                qkv: GpuLinear::upload(fk, &l.qkv)?,
                out_proj: GpuLinear::upload(fk, &l.out_proj)?,
                ln2: GpuLayerNorm::upload(fk, &l.layer_norm2)?,
                fc1: GpuLinear::upload(fk, &l.fc1)?,
                fc2: GpuLinear::upload(fk, &l.fc2)?,
            });
        }
        let connector = match &w.connector {
            HostConnector::Mlp { linear_1, act, linear_2 } => {
                GpuConnector::Mlp { linear_1: GpuLinear::upload(fk, linear_1)?, act: *act, linear_2: GpuLinear::upload(fk, linear_2)? }
            }
            HostConnector::Linear(l) => GpuConnector::Linear(GpuLinear::upload(fk, l)?),
            HostConnector::PixelShuffle { scale, proj } => GpuConnector::PixelShuffle { scale: *scale, proj: GpuLinear::upload(fk, proj)? },
        };
        Ok(WgslVisionModel {
            fk: fk.clone(),
            cfg: c.clone(),
            readout: w.readout.clone(),
            sizes: Sizes { n, lead, n_sel, w_sel, n_out, d_out },
            patch: GpuLinear::upload(fk, &w.patch)?,
            pos: fk.upload_f32("position embeddings", &pos)?,
            pre_norm: w.pre_norm.as_ref().map(|n| GpuLayerNorm::upload(fk, n)).transpose()?,
            layers,
            post_norm: w.post_norm.as_ref().map(|n| GpuLayerNorm::upload(fk, n)).transpose()?,
            connector,
            pool: Mutex::new(None),
        })
    }

    /// The tower's config.
    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Visual tokens per tile.
    pub fn tokens_per_tile(&self) -> usize {
        self.sizes.n_out
    }

    /// Width of a visual token (the text model's hidden size).
    pub fn output_size(&self) -> usize {
        self.sizes.d_out
    }

    fn make_pool(&self, tiles: usize) -> Result<Pool, GpuError> {
        let (c, z) = (&self.cfg, &self.sizes);
        let fk = &self.fk;
        let t = tiles as u64;
        let rows = t * z.n as u64;
        let (d, i) = (c.hidden_size as u64, c.intermediate_size as u64);
        let side = c.image_size as u64;
        let k = (c.num_channels * c.patch_size * c.patch_size) as u64;
        let out_rows = t * z.n_out as u64;
        Ok(Pool {
            tiles,
            pix: fk.buffer_f32("pixels", t * c.num_channels as u64 * side * side)?,
            cols: fk.buffer_f32("patch columns", rows * k)?,
            x: fk.buffer_f32("vision x", rows * d)?,
            xn: fk.buffer_f32("vision xn", rows * d)?,
            qkv: fk.buffer_f32("vision qkv", rows * 3 * d)?,
            ctx: fk.buffer_f32("vision attn ctx", rows * d)?,
            h: fk.buffer_f32("vision mlp", rows * i)?,
            sel: match self.readout {
                Readout::Layers { .. } => Some(fk.buffer_f32("vision features", t * (z.n_sel * z.w_sel) as u64)?),
                Readout::PostNorm => None,
            },
            shuf: match self.connector {
                GpuConnector::PixelShuffle { .. } => Some(fk.buffer_f32("pixel shuffle", t * (z.n_sel * z.w_sel) as u64)?),
                _ => None,
            },
            mid: match self.connector {
                GpuConnector::Mlp { .. } => Some(fk.buffer_f32("connector hidden", out_rows * z.d_out as u64)?),
                _ => None,
            },
            out: fk.buffer_f32("visual tokens", out_rows * z.d_out as u64)?,
        })
    }

    /// Visual tokens of `tiles` tiles `pixels: [tiles, 3, S, S]` (row-major, S the config's
    /// `image_size`): `[tiles · tokens_per_tile, d_text]` row-major, tiles in order.
    pub async fn features(&self, pixels: &[f32], tiles: usize) -> crate::Result<Vec<f32>> {
        let c = &self.cfg;
        let per_tile = c.num_channels * c.image_size * c.image_size;
        if tiles == 0 || tiles.checked_mul(per_tile) != Some(pixels.len()) {
            return Err(ModelError::Input(format!(
                "{} pixel values for {tiles} tiles of [{}, {s}, {s}] (vision_config.image_size {s})",
                pixels.len(),
                c.num_channels,
                s = c.image_size
            ))
            .into());
        }
        let pool = match self.pool.lock().ok().and_then(|mut p| p.take()) {
            Some(p) if p.tiles >= tiles => p,
            _ => self.make_pool(tiles).map_err(gpu_err)?,
        };
        let out = self.record_and_read(&pool, pixels, tiles).await;
        if let Ok(mut slot) = self.pool.lock() {
            *slot = Some(pool);
        }
        out.map_err(gpu_err)
    }

    async fn record_and_read(&self, p: &Pool, pixels: &[f32], tiles: usize) -> Result<Vec<f32>, GpuError> {
        let (c, z) = (&self.cfg, &self.sizes);
        let fk = &self.fk;
        fk.context().check_alive("wgsl vision forward")?;
        let (d, inter, heads) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
        let eps = c.layer_norm_eps as f32;
        let rows = tiles * z.n;
        fk.context().queue().write_buffer(&p.pix, 0, bytemuck::cast_slice(pixels));
        let (mut enc, scopes) = fk.begin("wgsl vision forward");
        // patch embedding: unfold, matmul; class token (zero rows + folded position row); positions
        if z.lead > 0 {
            enc.clear_buffer(&p.cols, 0, None);
        }
        let unfold = Permute::unfold_patches(tiles, c.num_channels, c.image_size, c.patch_size, z.lead)?;
        record_permute(fk, &mut enc, &unfold, &p.pix, &p.cols)?;
        self.patch.record(fk, &mut enc, &p.cols, rows, &p.x, false)?;
        record_add(fk, &mut enc, &self.pos, z.n * d, &p.x, rows * d)?;
        let state_bytes = (rows * d * 4) as u64;
        if let Some(ln) = &self.pre_norm {
            ln.record(fk, &mut enc, eps, &p.x, rows, d, &p.xn)?;
            enc.copy_buffer_to_buffer(&p.xn, 0, &p.x, 0, state_bytes);
        }
        self.select(&mut enc, p, tiles, 0)?;
        let attn = AttnShape { t: rows, heads, kv_heads: heads, hd: d / heads, causal: false, scale: 1.0 / ((d / heads) as f32).sqrt(), seq: z.n };
        for (i, l) in self.layers.iter().enumerate() {
            l.ln1.record(fk, &mut enc, eps, &p.x, rows, d, &p.xn)?;
            l.qkv.record(fk, &mut enc, &p.xn, rows, &p.qkv, false)?;
            record_attention(fk, &mut enc, &attn, &p.qkv, &p.ctx)?;
            l.out_proj.record(fk, &mut enc, &p.ctx, rows, &p.x, true)?;
            l.ln2.record(fk, &mut enc, eps, &p.x, rows, d, &p.xn)?;
            l.fc1.record(fk, &mut enc, &p.xn, rows, &p.h, false)?;
            record_gelu(fk, &mut enc, gelu_kind(c.hidden_act), &p.h, rows * inter)?;
            l.fc2.record(fk, &mut enc, &p.h, rows, &p.x, true)?;
            self.select(&mut enc, p, tiles, i + 1)?;
        }
        let sel = match (&self.readout, &p.sel) {
            (Readout::Layers { .. }, Some(sel)) => sel,
            _ => {
                let ln = self.post_norm.as_ref().ok_or_else(|| invalid("post-norm readout without weights".into()))?;
                ln.record(fk, &mut enc, eps, &p.x, rows, d, &p.xn)?;
                &p.xn
            }
        };
        let n_out = tiles * z.n_out;
        match &self.connector {
            GpuConnector::Mlp { linear_1, act, linear_2 } => {
                let mid = p.mid.as_ref().ok_or_else(|| invalid("no connector buffer".into()))?;
                linear_1.record(fk, &mut enc, sel, n_out, mid, false)?;
                record_gelu(fk, &mut enc, *act, mid, n_out * z.d_out)?;
                linear_2.record(fk, &mut enc, mid, n_out, &p.out, false)?;
            }
            GpuConnector::Linear(l) => l.record(fk, &mut enc, sel, n_out, &p.out, false)?,
            GpuConnector::PixelShuffle { scale, proj } => {
                let shuf = p.shuf.as_ref().ok_or_else(|| invalid("no pixel shuffle buffer".into()))?;
                let g = c.grid();
                record_permute(fk, &mut enc, &Permute::pixel_shuffle(tiles, g, *scale, z.w_sel)?, sel, shuf)?;
                proj.record(fk, &mut enc, shuf, n_out, &p.out, false)?;
            }
        }
        fk.finish_read("wgsl vision forward", scopes, enc, &p.out, (n_out * z.d_out) as u64).await
    }

    /// Copies state `state` (0 = embeddings) into the readout's feature columns when selected.
    fn select(&self, enc: &mut wgpu::CommandEncoder, p: &Pool, tiles: usize, state: usize) -> Result<(), GpuError> {
        let (Readout::Layers { layers, drop }, Some(sel)) = (&self.readout, &p.sel) else { return Ok(()) };
        let (d, z) = (self.cfg.hidden_size, &self.sizes);
        for (j, _) in layers.iter().enumerate().filter(|(_, l)| **l == state) {
            // rows of every tile, the first `drop` left out: [tiles, n_sel, d] → columns j·d..
            let plan = Permute::new(&[(tiles, z.n * d, z.n_sel * z.w_sel), (z.n_sel, d, z.w_sel), (d, 1, 1)], drop * d, j * d)?;
            record_permute(&self.fk, enc, &plan, &p.x, sel)?;
        }
        Ok(())
    }
}

/// A VLM on the WGSL kernels: [`WgslVisionModel`] + [`WgslTextModel`]. See the module docs.
#[derive(Debug)]
pub struct WgslVlm {
    config: VlmConfig,
    vision: WgslVisionModel,
    text: WgslTextModel,
}

impl WgslVlm {
    /// Uploads both parts once.
    pub fn new(fk: &ForwardKernels, w: &HostVlmWeights) -> Result<Self, GpuError> {
        let vision = WgslVisionModel::new(fk, &w.vision)?;
        if vision.output_size() != w.config.text().hidden_size {
            return Err(invalid(format!(
                "visual tokens of width {} for a text model of hidden size {}",
                vision.output_size(),
                w.config.text().hidden_size
            )));
        }
        Ok(WgslVlm { config: w.config.clone(), vision, text: WgslTextModel::new(fk, &w.text)? })
    }

    /// The parsed config.
    pub fn config(&self) -> &VlmConfig {
        &self.config
    }

    /// The vision tower + connector.
    pub fn vision(&self) -> &WgslVisionModel {
        &self.vision
    }

    /// The text decoder.
    pub fn text(&self) -> &WgslTextModel {
        &self.text
    }

    /// Visual tokens of a preprocessed image `[n_visual, d_text]` (row-major, tiles in order)
    /// and each one's geometry: [`crate::model::vlm::Vlm::image_features`] on the GPU.
    pub async fn image_features(&self, pre: &Preprocessed) -> crate::Result<(Vec<f32>, Vec<PatchGeometry>)> {
        let s = self.config.vision().image_size;
        if (pre.width as usize, pre.height as usize) != (s, s) {
            return Err(ModelError::Input(format!(
                "preprocessed tiles are {}x{}, the vision tower expects {s}x{s} (vision_config.image_size)",
                pre.width, pre.height
            ))
            .into());
        }
        let geo = self.config.patch_geometry(pre)?;
        let feats = self.vision.features(&pre.pixel_values, pre.num_tiles()).await?;
        Ok((feats, geo))
    }

    /// Hidden states of every LLM layer for token ids `ids` (placeholders expanded, e.g. by
    /// [`crate::model::vlm::Vlm::expand_prompt`]) and a preprocessed image: the GPU twin of
    /// [`crate::model::vlm::Vlm::forward`].
    pub async fn forward(&self, ids: &[u32], pre: &Preprocessed) -> crate::Result<HiddenStates> {
        let image_id = self.config.image_token_id();
        let visual_rows: Vec<usize> = ids.iter().enumerate().filter(|(_, &t)| t == image_id).map(|(i, _)| i).collect();
        let n_expected = pre.num_tiles() * self.vision.tokens_per_tile();
        if visual_rows.len() != n_expected {
            return Err(ModelError::Input(format!(
                "the token ids hold {} image placeholders but the image gives {n_expected} visual tokens: expand the prompt with Vlm::expand_prompt",
                visual_rows.len()
            ))
            .into());
        }
        let (feats, patches) = self.image_features(pre).await?;
        let layers = self.text.forward_ids_spliced(ids, &visual_rows, &feats).await?;
        Ok(HiddenStates { hidden_size: self.text.config().hidden_size, token_ids: ids.to_vec(), layers, visual_rows, patches })
    }

    /// Native convenience: [`WgslVlm::image_features`] driven with `pollster`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn image_features_blocking(&self, pre: &Preprocessed) -> crate::Result<(Vec<f32>, Vec<PatchGeometry>)> {
        pollster::block_on(self.image_features(pre))
    }

    /// Native convenience: [`WgslVlm::forward`] driven with `pollster`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_blocking(&self, ids: &[u32], pre: &Preprocessed) -> crate::Result<HiddenStates> {
        pollster::block_on(self.forward(ids, pre))
    }
}
