//! The Llama / Qwen2 text decoder on our WGSL kernels ([`crate::gpu::forward`]), returning the
//! hidden states of every layer exactly as the CPU path ([`crate::model::TextModel`]) does.
//!
//! Same maths as `crate::model::llama` (HF `LlamaModel` / `Qwen2Model`): RMSNorm → fused qkv
//! projection (+bias for Qwen2) → RoPE (`rotate_half`) → grouped-query causal attention →
//! output projection added to the residual → RMSNorm → fused gate|up → SwiGLU → down projection
//! added to the residual; final RMSNorm replaces the last state (HF `output_hidden_states`).
//!
//! Projections run on the f32 matmul by default; [`WgslTextModel::with_precision`] with
//! [`Precision::F16`] picks the f16-tile matmul (f32 accumulation) where the adapter has
//! `shader-f16`, and refuses with [`GpuError::MissingFeature`] where it does not. Norms,
//! RoPE, attention and the residual stream stay f32 either way.
//!
//! Weights are uploaded once ([`WgslTextModel::new`]): GGUF Q8_0 / Q4_0 / Q4_1 stay quantised
//! and are dequantised in the matmul shader (llama.cpp's q/k row permutation is undone on the
//! rows, which are whole blocks); f32 / f16 / bf16 become f32; other GGUF types are refused by
//! tensor name, or with [`LoadOptions::dequantize_unsupported`] run as f32 (per tensor).
//! Intermediate buffers are pooled across calls. One forward is one command submission (every
//! layer's dispatches and the copies of each layer's residual stream into one `[L+1, T, d]`
//! states buffer), followed by one read-back.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;
use std::sync::Mutex;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};

use crate::gpu::attention::{record_attention, AttnShape};
use crate::gpu::embed::GpuEmbedding;
use crate::gpu::forward::ForwardKernels;
use crate::gpu::matmul::{GpuMatrix, View};
use crate::gpu::norm::{record_norm, NormKind};
use crate::gpu::quant::{unpermute_order, HostMatrix};
use crate::gpu::rope::{record_rope, rope_tables};
use crate::gpu::swiglu::record_swiglu;
use crate::gpu::{GpuError, Precision};
use crate::model::config::TextConfig;
use crate::model::hidden::HiddenStates;
use crate::model::weights::Weights;
use crate::model::{gguf, ModelError};

/// Options for loading weights onto the GPU.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Dequantise GGUF types without a shader path (Q5_*, K-quants) to f32 on the host instead
    /// of refusing them.
    pub dequantize_unsupported: bool,
}

/// One decoder layer's weights on the host, in the shader formats.
#[derive(Clone, Debug)]
pub struct HostLayer {
    /// `[d]`
    pub attn_norm: Vec<f32>,
    /// `[(H + 2KV)·hd, d]`: q, k, v rows stacked (HF row order).
    pub qkv: HostMatrix,
    /// `[(H + 2KV)·hd]`
    pub qkv_bias: Option<Vec<f32>>,
    /// `[d, H·hd]`
    pub o: HostMatrix,
    /// `[d]`
    pub o_bias: Option<Vec<f32>>,
    /// `[d]`
    pub ffn_norm: Vec<f32>,
    /// `[2I, d]`: gate rows then up rows.
    pub gate_up: HostMatrix,
    /// `[2I]`
    pub gate_up_bias: Option<Vec<f32>>,
    /// `[d, I]`
    pub down: HostMatrix,
    /// `[d]`
    pub down_bias: Option<Vec<f32>>,
}

/// A text decoder's weights on the host, ready to upload.
#[derive(Clone, Debug)]
pub struct HostTextWeights {
    /// The config.
    pub config: TextConfig,
    /// `[vocab, d]`
    pub embed: HostMatrix,
    /// Decoder layers.
    pub layers: Vec<HostLayer>,
    /// Final norm `[d]`.
    pub norm: Vec<f32>,
}

pub(crate) fn gpu_err(e: GpuError) -> crate::Error {
    crate::Error::Gpu(e)
}

/// Source of named tensors in the shader formats.
trait TensorSource {
    fn matrix(&mut self, name: &str, n: usize, k: usize) -> crate::Result<HostMatrix>;
    fn vector(&mut self, name: &str, n: usize) -> crate::Result<Vec<f32>>;
}

struct GgufSource<'a, R> {
    content: &'a Content,
    reader: &'a mut R,
    what: &'a str,
    opts: LoadOptions,
}

impl<R: Read + Seek> GgufSource<'_, R> {
    fn read(&mut self, name: &str) -> crate::Result<candle_core::quantized::QTensor> {
        if !self.content.tensor_infos.contains_key(name) {
            return Err(ModelError::MissingTensor { name: name.into(), source_desc: self.what.into() }.into());
        }
        self.content.tensor(self.reader, name, &Device::Cpu).map_err(|e| {
            ModelError::Weights { path: self.what.into(), msg: format!("tensor `{name}`: {e} (truncated or corrupt file?)") }.into()
        })
    }
}

impl<R: Read + Seek> TensorSource for GgufSource<'_, R> {
    fn matrix(&mut self, name: &str, n: usize, k: usize) -> crate::Result<HostMatrix> {
        let q = self.read(name)?;
        let dims = q.shape().dims().to_vec();
        if dims != [n, k] {
            return Err(ModelError::Shape { name: name.into(), expected: vec![n, k], got: dims }.into());
        }
        let raw = q.data().map_err(ModelError::from)?;
        match HostMatrix::from_ggml(q.dtype(), &raw, n, k, name) {
            Err(GpuError::UnsupportedWeights(_)) if self.opts.dequantize_unsupported => {
                let v = q.dequantize(&Device::Cpu).map_err(ModelError::from)?;
                let v = v.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(ModelError::from)?;
                HostMatrix::from_f32(&v, n, k, name).map_err(gpu_err)
            }
            other => other.map_err(gpu_err),
        }
    }

    fn vector(&mut self, name: &str, n: usize) -> crate::Result<Vec<f32>> {
        let q = self.read(name)?;
        let v = q.dequantize(&Device::Cpu).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(ModelError::from)?;
        if v.len() != n {
            return Err(ModelError::Shape { name: name.into(), expected: vec![n], got: q.shape().dims().to_vec() }.into());
        }
        Ok(v)
    }
}

/// f32 tensors by HF name (shape-checked reads; shared with the vision loader).
pub(crate) struct F32Source<'a> {
    pub(crate) tensors: &'a HashMap<String, Tensor>,
    pub(crate) what: &'a str,
}

impl F32Source<'_> {
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> crate::Result<Vec<f32>> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { name: name.into(), source_desc: self.what.into() })?;
        if t.dims() != shape {
            return Err(ModelError::Shape { name: name.into(), expected: shape.to_vec(), got: t.dims().to_vec() }.into());
        }
        let v = t
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(ModelError::from)?;
        Ok(v)
    }
}

impl TensorSource for F32Source<'_> {
    fn matrix(&mut self, name: &str, n: usize, k: usize) -> crate::Result<HostMatrix> {
        let v = self.get(name, &[n, k])?;
        HostMatrix::from_f32(&v, n, k, name).map_err(gpu_err)
    }
    fn vector(&mut self, name: &str, n: usize) -> crate::Result<Vec<f32>> {
        self.get(name, &[n])
    }
}

/// Tensor names of one family of files.
struct Names {
    embed: String,
    norm: String,
    /// `(layer, HF part)` → name, part one of the HF suffixes below.
    layer: fn(&str, usize, &str) -> String,
    prefix: String,
    /// q/k rows stored in llama.cpp's permuted order.
    permuted_qk: bool,
}

fn hf_layer_name(prefix: &str, i: usize, part: &str) -> String {
    format!("{prefix}layers.{i}.{part}")
}

fn gguf_layer_name(_prefix: &str, i: usize, part: &str) -> String {
    let (p, suffix) = part.rsplit_once('.').unwrap_or((part, "weight"));
    let g = match p {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        _ => "ffn_down",
    };
    format!("blk.{i}.{g}.{suffix}")
}

fn load_host(cfg: &TextConfig, src: &mut dyn TensorSource, names: &Names) -> crate::Result<HostTextWeights> {
    cfg.validate()?;
    let (d, h, kv, hd, inter) =
        (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size);
    let embed = src.matrix(&names.embed, cfg.vocab_size, d)?;
    let norm = src.vector(&names.norm, d)?;
    let name = |i: usize, part: &str| (names.layer)(&names.prefix, i, part);
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for i in 0..cfg.num_hidden_layers {
        let mut q = src.matrix(&name(i, "self_attn.q_proj.weight"), h * hd, d)?;
        let mut k = src.matrix(&name(i, "self_attn.k_proj.weight"), kv * hd, d)?;
        let v = src.matrix(&name(i, "self_attn.v_proj.weight"), kv * hd, d)?;
        let (pq, pk) = if names.permuted_qk {
            (Some(unpermute_order(h * hd, h).map_err(gpu_err)?), Some(unpermute_order(kv * hd, kv).map_err(gpu_err)?))
        } else {
            (None, None)
        };
        if let (Some(pq), Some(pk)) = (&pq, &pk) {
            q = q.select_rows(pq).map_err(gpu_err)?;
            k = k.select_rows(pk).map_err(gpu_err)?;
        }
        let qkv = HostMatrix::concat_rows(&[&q, &k, &v]).map_err(gpu_err)?;
        let qkv_bias = if cfg.qkv_bias {
            let mut qb = src.vector(&name(i, "self_attn.q_proj.bias"), h * hd)?;
            let mut kb = src.vector(&name(i, "self_attn.k_proj.bias"), kv * hd)?;
            let vb = src.vector(&name(i, "self_attn.v_proj.bias"), kv * hd)?;
            if let (Some(pq), Some(pk)) = (&pq, &pk) {
                qb = pq.iter().map(|&r| qb[r]).collect();
                kb = pk.iter().map(|&r| kb[r]).collect();
            }
            Some([qb, kb, vb].concat())
        } else {
            None
        };
        let o = src.matrix(&name(i, "self_attn.o_proj.weight"), d, h * hd)?;
        let o_bias = if cfg.o_bias { Some(src.vector(&name(i, "self_attn.o_proj.bias"), d)?) } else { None };
        let gate = src.matrix(&name(i, "mlp.gate_proj.weight"), inter, d)?;
        let up = src.matrix(&name(i, "mlp.up_proj.weight"), inter, d)?;
        let gate_up = HostMatrix::concat_rows(&[&gate, &up]).map_err(gpu_err)?;
        let down = src.matrix(&name(i, "mlp.down_proj.weight"), d, inter)?;
        let (gate_up_bias, down_bias) = if cfg.mlp_bias {
            let gb = src.vector(&name(i, "mlp.gate_proj.bias"), inter)?;
            let ub = src.vector(&name(i, "mlp.up_proj.bias"), inter)?;
            (Some([gb, ub].concat()), Some(src.vector(&name(i, "mlp.down_proj.bias"), d)?))
        } else {
            (None, None)
        };
        layers.push(HostLayer {
            attn_norm: src.vector(&name(i, "input_layernorm.weight"), d)?,
            qkv,
            qkv_bias,
            o,
            o_bias,
            ffn_norm: src.vector(&name(i, "post_attention_layernorm.weight"), d)?,
            gate_up,
            gate_up_bias,
            down,
            down_bias,
        });
    }
    Ok(HostTextWeights { config: cfg.clone(), embed, layers, norm })
}

impl HostTextWeights {
    /// Reads a llama GGUF file's decoder (blocks kept where the shaders read them).
    pub fn from_gguf<R: Read + Seek>(content: &Content, reader: &mut R, what: &str, opts: &LoadOptions) -> crate::Result<Self> {
        let cfg = gguf::text_config(content)?;
        let names = Names {
            embed: "token_embd.weight".into(),
            norm: "output_norm.weight".into(),
            layer: gguf_layer_name,
            prefix: String::new(),
            permuted_qk: true,
        };
        let mut src = GgufSource { content, reader, what, opts: opts.clone() };
        load_host(&cfg, &mut src, &names)
    }

    /// Reads f32 weights under HF names, the decoder under `prefix` (`"model."` for a causal
    /// LM checkpoint; a VLM's language model prefix otherwise).
    pub fn from_weights(cfg: &TextConfig, weights: &Weights, prefix: &str, what: &str) -> crate::Result<Self> {
        let names = Names {
            embed: format!("{prefix}embed_tokens.weight"),
            norm: format!("{prefix}norm.weight"),
            layer: hf_layer_name,
            prefix: prefix.to_string(),
            permuted_qk: false,
        };
        let mut src = F32Source { tensors: &weights.tensors, what };
        load_host(cfg, &mut src, &names)
    }

    /// Loads a `.gguf` file or an HF directory (`config.json` + safetensors).
    pub fn load(path: &Path, opts: &LoadOptions) -> crate::Result<Self> {
        let what = path.display().to_string();
        if path.is_dir() {
            let cfg_path = path.join("config.json");
            let bytes = std::fs::read(&cfg_path).map_err(|source| ModelError::Io { path: cfg_path.display().to_string(), source })?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ModelError::Weights { path: cfg_path.display().to_string(), msg: format!("invalid JSON: {e}") })?;
            let cfg = TextConfig::from_hf_json(&v)?;
            let w = crate::model::weights::load_safetensors_dir(path, &Device::Cpu)?;
            return Self::from_weights(&cfg, &w, "model.", &what);
        }
        let f = std::fs::File::open(path).map_err(|source| ModelError::Io { path: what.clone(), source })?;
        let mut r = std::io::BufReader::new(f);
        let content = gguf::read_content(&mut r, &what)?;
        Self::from_gguf(&content, &mut r, &what, opts)
    }
}

struct GpuLayer {
    attn_norm: wgpu::Buffer,
    qkv: GpuMatrix,
    qkv_bias: Option<wgpu::Buffer>,
    o: GpuMatrix,
    o_bias: Option<wgpu::Buffer>,
    ffn_norm: wgpu::Buffer,
    gate_up: GpuMatrix,
    gate_up_bias: Option<wgpu::Buffer>,
    down: GpuMatrix,
    down_bias: Option<wgpu::Buffer>,
}

/// Working buffers for sequences of up to `cap` tokens.
struct Pool {
    cap: usize,
    ids: wgpu::Buffer,
    x: wgpu::Buffer,
    xn: wgpu::Buffer,
    qkv: wgpu::Buffer,
    ctx: wgpu::Buffer,
    gu: wgpu::Buffer,
    act: wgpu::Buffer,
    cos: wgpu::Buffer,
    sin: wgpu::Buffer,
    /// `[L + 1, cap, d]`, copy target only (may exceed the binding limit).
    states: wgpu::Buffer,
}

/// The text decoder on the GPU. See the module docs.
pub struct WgslTextModel {
    fk: ForwardKernels,
    cfg: TextConfig,
    embed: GpuEmbedding,
    layers: Vec<GpuLayer>,
    norm: wgpu::Buffer,
    pool: Mutex<Option<Pool>>,
    weight_bytes: u64,
    precision: Precision,
}

impl std::fmt::Debug for WgslTextModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgslTextModel")
            .field("config", &self.cfg)
            .field("weight_bytes", &self.weight_bytes)
            .field("precision", &self.precision)
            .finish()
    }
}

/// The input of one forward.
enum Input<'a> {
    Ids(&'a [u32]),
    Embeds(&'a [f32]),
    /// Token ids whose rows `rows` (increasing) take `feats` `[rows.len(), d]` instead.
    Spliced { ids: &'a [u32], rows: &'a [usize], feats: &'a [f32] },
}

/// Runs of consecutive values in increasing `rows`: `(index of the run's first, first row, length)`.
fn runs(rows: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for (k, &r) in rows.iter().enumerate() {
        match out.last_mut() {
            Some((_, r0, n)) if *r0 + *n == r => *n += 1,
            _ => out.push((k, r, 1)),
        }
    }
    out
}

impl WgslTextModel {
    /// Uploads `w` once (weights stay on the GPU for every later forward); f32 matmuls.
    pub fn new(fk: &ForwardKernels, w: &HostTextWeights) -> Result<Self, GpuError> {
        Self::with_precision(fk, w, Precision::F32)
    }

    /// [`WgslTextModel::new`] with the projections on the matmul of `precision`.
    /// [`Precision::F16`] needs `shader-f16` ([`ForwardKernels::has_f16`]): without it this is
    /// [`GpuError::MissingFeature`]`("shader-f16")`, before any weight is uploaded (callers that
    /// prefer to fall back check `has_f16` first).
    pub fn with_precision(fk: &ForwardKernels, w: &HostTextWeights, precision: Precision) -> Result<Self, GpuError> {
        if precision == Precision::F16 && !fk.has_f16() {
            return Err(GpuError::MissingFeature("shader-f16"));
        }
        let mm = |m: &HostMatrix| GpuMatrix::upload_with(fk, m, precision);
        let up = |v: &[f32], what: &'static str| fk.upload_f32(what, v);
        let opt = |v: &Option<Vec<f32>>, what: &'static str| v.as_deref().map(|v| fk.upload_f32(what, v)).transpose();
        let mut layers = Vec::with_capacity(w.layers.len());
        let mut weight_bytes = 0;
        for l in &w.layers {
            let g = GpuLayer {
                attn_norm: up(&l.attn_norm, "attn_norm")?,
                qkv: mm(&l.qkv)?,
                qkv_bias: opt(&l.qkv_bias, "qkv bias")?,
                o: mm(&l.o)?,
                o_bias: opt(&l.o_bias, "o bias")?,
                ffn_norm: up(&l.ffn_norm, "ffn_norm")?,
                gate_up: mm(&l.gate_up)?,
                gate_up_bias: opt(&l.gate_up_bias, "gate_up bias")?,
                down: mm(&l.down)?,
                down_bias: opt(&l.down_bias, "down bias")?,
            };
            weight_bytes += g.qkv.gpu_bytes() + g.o.gpu_bytes() + g.gate_up.gpu_bytes() + g.down.gpu_bytes();
            layers.push(g);
        }
        Ok(WgslTextModel {
            fk: fk.clone(),
            cfg: w.config.clone(),
            embed: GpuEmbedding::upload(fk, &w.embed)?,
            layers,
            norm: up(&w.norm, "final norm")?,
            pool: Mutex::new(None),
            weight_bytes,
            precision,
        })
    }

    /// The precision of the projection matmuls.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The config.
    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// Bytes of decoder-layer projection weights on the GPU (read once per forward).
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// The kernels (and context) this model runs on.
    pub fn kernels(&self) -> &ForwardKernels {
        &self.fk
    }

    fn make_pool(&self, cap: usize) -> Result<Pool, GpuError> {
        let c = &self.cfg;
        let (d, hd) = (c.hidden_size as u64, c.head_dim as u64);
        let cap64 = cap as u64;
        let qkv_w = ((c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim) as u64;
        let fk = &self.fk;
        let states_bytes = (self.layers.len() as u64 + 1) * cap64 * d * 4;
        let max_buf = fk.context().limits().max_buffer_size;
        if states_bytes > max_buf {
            return Err(GpuError::LimitTooSmall { limit: "max_buffer_size", need: states_bytes, have: max_buf });
        }
        Ok(Pool {
            cap,
            ids: fk.buffer_f32("ids", cap64)?,
            x: fk.buffer_f32("x", cap64 * d)?,
            xn: fk.buffer_f32("xn", cap64 * d)?,
            qkv: fk.buffer_f32("qkv", cap64 * qkv_w)?,
            ctx: fk.buffer_f32("attn ctx", cap64 * (c.num_attention_heads as u64) * hd)?,
            gu: fk.buffer_f32("gate_up", cap64 * 2 * c.intermediate_size as u64)?,
            act: fk.buffer_f32("act", cap64 * c.intermediate_size as u64)?,
            cos: fk.buffer_f32("rope cos", cap64 * hd / 2)?,
            sin: fk.buffer_f32("rope sin", cap64 * hd / 2)?,
            states: fk.context().device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("hidden states"),
                size: states_bytes.max(16),
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        })
    }

    /// Hidden states of every layer for token ids: `L + 1` row-major `[T, d]` vectors.
    pub async fn forward_ids(&self, ids: &[u32]) -> crate::Result<Vec<Vec<f32>>> {
        self.embed.check_ids(ids).map_err(gpu_err)?;
        self.run(Input::Ids(ids), ids.len()).await
    }

    /// Hidden states of every layer for input embeddings `[t, d]` (text and visual tokens).
    pub async fn forward_embeds(&self, embeds: &[f32], t: usize) -> crate::Result<Vec<Vec<f32>>> {
        if t.checked_mul(self.cfg.hidden_size) != Some(embeds.len()) {
            return Err(ModelError::Input(format!(
                "embeddings have {} floats, [{t}, {}] expected",
                embeds.len(),
                self.cfg.hidden_size
            ))
            .into());
        }
        self.run(Input::Embeds(embeds), t).await
    }

    /// Hidden states of every layer for token ids whose rows `rows` (strictly increasing) take
    /// the embeddings `feats` `[rows.len(), d]` instead of their token's (a VLM's visual tokens
    /// written over the image placeholders, as [`crate::model::vlm::Vlm::input_embeds`] does):
    /// the lookup and the splice happen on the GPU.
    pub async fn forward_ids_spliced(&self, ids: &[u32], rows: &[usize], feats: &[f32]) -> crate::Result<Vec<Vec<f32>>> {
        self.embed.check_ids(ids).map_err(gpu_err)?;
        let d = self.cfg.hidden_size;
        if rows.len().checked_mul(d) != Some(feats.len()) {
            return Err(ModelError::Input(format!("{} spliced rows need {} floats, got {}", rows.len(), rows.len() * d, feats.len())).into());
        }
        if rows.windows(2).any(|w| w[0] >= w[1]) || rows.last().is_some_and(|&r| r >= ids.len()) {
            return Err(ModelError::Input(format!("spliced rows must increase and lie below {} tokens", ids.len())).into());
        }
        self.run(Input::Spliced { ids, rows, feats }, ids.len()).await
    }

    /// [`WgslTextModel::forward_ids`] wrapped as [`HiddenStates`] (the CPU path's output).
    pub async fn hidden_states_ids(&self, ids: &[u32]) -> crate::Result<HiddenStates> {
        let layers = self.forward_ids(ids).await?;
        Ok(HiddenStates {
            hidden_size: self.cfg.hidden_size,
            token_ids: ids.to_vec(),
            layers,
            visual_rows: Vec::new(),
            patches: Vec::new(),
        })
    }

    /// Native convenience: [`WgslTextModel::hidden_states_ids`] driven with `pollster`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn hidden_states_ids_blocking(&self, ids: &[u32]) -> crate::Result<HiddenStates> {
        pollster::block_on(self.hidden_states_ids(ids))
    }

    async fn run(&self, input: Input<'_>, t: usize) -> crate::Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        if t == 0 {
            return Err(ModelError::Input("empty sequence: at least one token is needed".into()).into());
        }
        if t > c.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "{t} tokens: this model handles at most {} (max_position_embeddings); shorten the input",
                c.max_position_embeddings
            ))
            .into());
        }
        let pool = match self.pool.lock().ok().and_then(|mut p| p.take()) {
            Some(p) if p.cap >= t => p,
            _ => self.make_pool(t.next_power_of_two().min(c.max_position_embeddings).max(t)).map_err(gpu_err)?,
        };
        let out = self.record_and_read(&pool, input, t).await;
        if let Ok(mut slot) = self.pool.lock() {
            *slot = Some(pool);
        }
        out.map_err(gpu_err)
    }

    async fn record_and_read(&self, p: &Pool, input: Input<'_>, t: usize) -> Result<Vec<Vec<f32>>, GpuError> {
        let c = &self.cfg;
        let fk = &self.fk;
        fk.context().check_alive("wgsl text forward")?;
        let queue = fk.context().queue();
        let (d, h, kv, hd, inter) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size);
        let eps = c.rms_norm_eps as f32;
        let positions: Vec<usize> = (0..t).collect();
        let (cos, sin) = rope_tables(&positions, hd, c.rope_theta as f32);
        queue.write_buffer(&p.cos, 0, bytemuck::cast_slice(&cos));
        queue.write_buffer(&p.sin, 0, bytemuck::cast_slice(&sin));
        let (mut enc, scopes) = fk.begin("wgsl text forward");
        match input {
            Input::Ids(ids) => {
                queue.write_buffer(&p.ids, 0, bytemuck::cast_slice(ids));
                self.embed.record(fk, &mut enc, &p.ids, t, &p.x)?;
            }
            Input::Embeds(e) => queue.write_buffer(&p.x, 0, bytemuck::cast_slice(e)),
            Input::Spliced { ids, rows, feats } => {
                queue.write_buffer(&p.ids, 0, bytemuck::cast_slice(ids));
                // staged in xn, which the first layer's norm overwrites after the splice
                if !feats.is_empty() {
                    queue.write_buffer(&p.xn, 0, bytemuck::cast_slice(feats));
                }
                self.embed.record(fk, &mut enc, &p.ids, t, &p.x)?;
                let row_bytes = (d * 4) as u64;
                for (k, r, n) in runs(rows) {
                    enc.copy_buffer_to_buffer(&p.xn, k as u64 * row_bytes, &p.x, r as u64 * row_bytes, n as u64 * row_bytes);
                }
            }
        }
        let layer_bytes = (t * d * 4) as u64;
        enc.copy_buffer_to_buffer(&p.x, 0, &p.states, 0, layer_bytes);
        let dv = View::dense(d);
        let qkv_w = (h + 2 * kv) * hd;
        let attn = AttnShape { t, heads: h, kv_heads: kv, hd, causal: true, scale: 1.0 / (hd as f32).sqrt(), seq: 0 };
        for (i, l) in self.layers.iter().enumerate() {
            record_norm(fk, &mut enc, NormKind::Rms, eps, (&p.x, dv), t, d, &l.attn_norm, None, (&p.xn, dv))?;
            l.qkv.record(fk, &mut enc, &p.xn, dv, t, l.qkv_bias.as_ref(), &p.qkv, View::dense(qkv_w), false)?;
            record_rope(fk, &mut enc, &p.cos, &p.sin, &p.qkv, View::dense(qkv_w), t, h + kv, hd)?;
            record_attention(fk, &mut enc, &attn, &p.qkv, &p.ctx)?;
            l.o.record(fk, &mut enc, &p.ctx, View::dense(h * hd), t, l.o_bias.as_ref(), &p.x, dv, true)?;
            record_norm(fk, &mut enc, NormKind::Rms, eps, (&p.x, dv), t, d, &l.ffn_norm, None, (&p.xn, dv))?;
            l.gate_up.record(fk, &mut enc, &p.xn, dv, t, l.gate_up_bias.as_ref(), &p.gu, View::dense(2 * inter), false)?;
            record_swiglu(fk, &mut enc, &p.gu, &p.act, t, inter)?;
            l.down.record(fk, &mut enc, &p.act, View::dense(inter), t, l.down_bias.as_ref(), &p.x, dv, true)?;
            let src = if i + 1 == self.layers.len() {
                // HF: the last state is the final-normed one
                record_norm(fk, &mut enc, NormKind::Rms, eps, (&p.x, dv), t, d, &self.norm, None, (&p.xn, dv))?;
                &p.xn
            } else {
                &p.x
            };
            enc.copy_buffer_to_buffer(src, 0, &p.states, (i as u64 + 1) * layer_bytes, layer_bytes);
        }
        if self.layers.is_empty() {
            record_norm(fk, &mut enc, NormKind::Rms, eps, (&p.x, dv), t, d, &self.norm, None, (&p.xn, dv))?;
            enc.copy_buffer_to_buffer(&p.xn, 0, &p.states, 0, layer_bytes);
        }
        let n_states = self.layers.len() + 1;
        let all = fk.finish_read("wgsl text forward", scopes, enc, &p.states, (n_states * t * d) as u64).await?;
        Ok(all.chunks_exact(t * d).map(|c| c.to_vec()).collect())
    }
}
