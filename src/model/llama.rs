//! Llama-family decoder (Llama, Qwen2) on candle's CPU path, returning the
//! hidden states of every layer.
//!
//! Mirrors HF transformers' `LlamaModel` / `Qwen2Model`
//! (`modeling_llama.py`): RMSNorm → grouped-query causal self-attention with
//! RoPE in the `rotate_half` layout → residual → RMSNorm → SwiGLU MLP →
//! residual; final RMSNorm; unembedding tied to the input embedding or a
//! separate `lm_head`. Tensor names follow the checkpoint under the
//! [`VarBuilder`] prefix given to [`TextModel::new`]: `embed_tokens`,
//! `layers.{i}.self_attn.{q,k,v,o}_proj`, `layers.{i}.mlp.{gate,up,down}_proj`,
//! `layers.{i}.{input,post_attention}_layernorm`, `norm`.
//!
//! Hidden states follow transformers' `output_hidden_states=True` (checked
//! against transformers 5.24 by `tools/smollm2_goldens.py`): `L + 1` tensors
//! `[T, d]`; `[0]` = input embeddings, `[i]` = residual stream after layer
//! `i` for `i < L`, `[L]` = after the final norm.
//!
//! Speed: q/k/v and gate/up projections are fused into one matmul each at
//! load time; attention runs per key/value head on the `[G·T, hd]` block of
//! its query group, so keys and values are never repeated. Optionally the
//! projections stay in their GGUF block format ([`TextModel::new_quantized`]).

use std::collections::HashMap;

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use super::config::{TextArch, TextConfig};
use super::ModelError;

/// Loads tensor `name` under `vb`, checking presence and shape with errors
/// that name the full tensor path.
pub(crate) fn get_checked(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Tensor, ModelError> {
    let full = if vb.prefix().is_empty() { name.to_string() } else { format!("{}.{name}", vb.prefix()) };
    if !vb.contains_tensor(name) {
        return Err(ModelError::MissingTensor { name: full, source_desc: "the weights".into() });
    }
    let t = vb.get_unchecked_dtype(name, DType::F32)?;
    if t.dims() != shape {
        return Err(ModelError::Shape { name: full, expected: shape.to_vec(), got: t.dims().to_vec() });
    }
    Ok(t)
}

/// Quantised (GGUF block format) weights by HF name, for
/// [`TextModel::new_quantized`]. Rows of q/k in llama.cpp's permuted order.
pub type QuantizedWeights = HashMap<String, QTensor>;

/// A weight matrix `[out, in]`: dense f32, or kept in its GGUF block format.
#[derive(Debug, Clone)]
enum Weight {
    /// `[out, in]` f32.
    Dense(Tensor),
    /// `[out, in]` in a GGUF block format, dequantised to f32 for each
    /// matmul (prefill of whole sequences is matmul-bound: block-wise int8
    /// dot products are far slower there than dequantise + f32 GEMM, and this
    /// keeps the f32 path's numbers).
    Quant(Arc<QTensor>),
}

/// A linear layer `y = x Wᵀ (+ b)` with `W: [out, in]`.
#[derive(Debug, Clone)]
struct Linear {
    w: Weight,
    /// `[out]`
    b: Option<Tensor>,
}

impl Linear {
    /// `x: [T, in]` → `[T, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let y = match &self.w {
            Weight::Dense(w) => matmul_t(x, w)?,
            Weight::Quant(q) => {
                let w = q.dequantize(x.device())?; // [out, in]
                matmul_t(x, &w)?
            }
        };
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    fn out_dim(&self) -> Result<usize, ModelError> {
        Ok(match &self.w {
            Weight::Dense(w) => w.dim(0)?,
            Weight::Quant(q) => q.shape().dims2()?.0,
        })
    }
}

/// `x Wᵀ`: through the system BLAS when one is loaded (native), else candle.
fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor, ModelError> {
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(y) = super::blas::matmul_nt(x, w)? {
        return Ok(y);
    }
    Ok(x.matmul(&w.t()?)?)
}

fn load_linear(
    vb: &VarBuilder,
    q: Option<&QuantizedWeights>,
    out_dim: usize,
    in_dim: usize,
    bias: bool,
) -> Result<Linear, ModelError> {
    let full = format!("{}.weight", vb.prefix());
    let w = match q.and_then(|q| q.get(&full)) {
        Some(qt) => {
            let dims = qt.shape().dims().to_vec();
            if dims != [out_dim, in_dim] {
                return Err(ModelError::Shape { name: full, expected: vec![out_dim, in_dim], got: dims });
            }
            let raw = qt.data()?;
            let copy = qtensor_from_ggml(qt.dtype(), &raw, dims, &qt.device())?;
            Weight::Quant(Arc::new(copy))
        }
        None => Weight::Dense(get_checked(vb, &[out_dim, in_dim], "weight")?),
    };
    let b = if bias { Some(get_checked(vb, &[out_dim], "bias")?) } else { None };
    Ok(Linear { w, b })
}

/// Concatenates linears along the output dimension (one matmul instead of
/// several). Quantised parts of one block format are concatenated row-wise
/// in their raw bytes (rows are independent blocks); mixed parts are
/// dequantised.
fn fuse(parts: &[Linear]) -> Result<Linear, ModelError> {
    let qparts: Vec<&QTensor> = parts
        .iter()
        .filter_map(|l| match &l.w {
            Weight::Quant(q) => Some(q.as_ref()),
            _ => None,
        })
        .collect();
    let w = if qparts.len() == parts.len() && qparts.iter().all(|q| q.dtype() == qparts[0].dtype()) {
        let dtype = qparts[0].dtype();
        let in_dim = qparts[0].shape().dims2()?.1;
        let mut raw = Vec::new();
        let mut rows = 0;
        for q in &qparts {
            let (r, c) = q.shape().dims2()?;
            if c != in_dim {
                return Err(ModelError::Input("fused projections with different input widths".into()));
            }
            rows += r;
            raw.extend_from_slice(&q.data()?);
        }
        Weight::Quant(Arc::new(qtensor_from_ggml(dtype, &raw, vec![rows, in_dim], &Device::Cpu)?))
    } else {
        let mut ws = Vec::with_capacity(parts.len());
        for l in parts {
            ws.push(match &l.w {
                Weight::Dense(w) => w.clone(),
                Weight::Quant(q) => q.dequantize(&Device::Cpu)?,
            });
        }
        Weight::Dense(Tensor::cat(&ws, 0)?.contiguous()?)
    };
    let b = if parts.iter().all(|l| l.b.is_some()) {
        let bs: Vec<&Tensor> = parts.iter().filter_map(|l| l.b.as_ref()).collect();
        Some(Tensor::cat(&bs, 0)?)
    } else if parts.iter().any(|l| l.b.is_some()) {
        // Some with, some without: materialise zeros for the missing ones.
        let mut bs = Vec::with_capacity(parts.len());
        for l in parts {
            bs.push(match &l.b {
                Some(b) => b.clone(),
                None => Tensor::zeros(l.out_dim()?, DType::F32, &Device::Cpu)?,
            });
        }
        Some(Tensor::cat(&bs, 0)?)
    } else {
        None
    };
    Ok(Linear { w, b })
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    /// `[d]`
    input_layernorm: Tensor,
    /// `[d]`
    post_attention_layernorm: Tensor,
    /// Fused q, k, v: `[(H + 2·KV)·hd, d]`.
    qkv: Linear,
    /// `[d, H·hd]`
    o_proj: Linear,
    /// Fused gate, up: `[2·I, d]`.
    gate_up: Linear,
    /// `[d, I]`
    down_proj: Linear,
}

impl DecoderLayer {
    fn new(cfg: &TextConfig, vb: VarBuilder, qw: Option<&QuantizedWeights>) -> Result<Self, ModelError> {
        let d = cfg.hidden_size;
        let (h, kv, hd, i) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size);
        let att = vb.pp("self_attn");
        let q = load_linear(&att.pp("q_proj"), qw, h * hd, d, cfg.qkv_bias)?;
        let k = load_linear(&att.pp("k_proj"), qw, kv * hd, d, cfg.qkv_bias)?;
        let v = load_linear(&att.pp("v_proj"), qw, kv * hd, d, cfg.qkv_bias)?;
        let o_proj = load_linear(&att.pp("o_proj"), qw, d, h * hd, cfg.o_bias)?;
        let mlp = vb.pp("mlp");
        let gate = load_linear(&mlp.pp("gate_proj"), qw, i, d, cfg.mlp_bias)?;
        let up = load_linear(&mlp.pp("up_proj"), qw, i, d, cfg.mlp_bias)?;
        let down_proj = load_linear(&mlp.pp("down_proj"), qw, d, i, cfg.mlp_bias)?;
        Ok(Self {
            input_layernorm: get_checked(&vb.pp("input_layernorm"), &[d], "weight")?,
            post_attention_layernorm: get_checked(&vb.pp("post_attention_layernorm"), &[d], "weight")?,
            qkv: fuse(&[q, k, v])?,
            o_proj,
            gate_up: fuse(&[gate, up])?,
            down_proj,
        })
    }

    /// `x: [T, d]` → `[T, d]`; `cos`, `sin`: `[T, hd/2]`.
    fn forward(
        &self,
        cfg: &TextConfig,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        attn: &AttnMode,
        rope_interleaved: bool,
    ) -> Result<Tensor, ModelError> {
        let (t, _d) = x.dims2()?;
        let (h, kv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let g = h / kv;
        let eps = cfg.rms_norm_eps as f32;

        // --- attention ---
        let xn = candle_nn::ops::rms_norm(x, &self.input_layernorm, eps)?; // [T, d]
        let qkv = self.qkv.forward(&xn)?; // [T, (H+2KV)·hd]
        let qkv = qkv.reshape((t, h + 2 * kv, hd))?.transpose(0, 1)?.contiguous()?; // [H+2KV, T, hd]
        let qk = qkv.narrow(0, 0, h + kv)?.unsqueeze(0)?; // [1, H+KV, T, hd]
        // GGUF-ordered q/k rows (quantised mode) pair dims (2i, 2i+1): the
        // interleaved RoPE on them gives the same q·k as rotate_half on HF rows.
        let qk = if rope_interleaved {
            candle_nn::rotary_emb::rope_i(&qk, cos, sin)?
        } else {
            candle_nn::rotary_emb::rope(&qk, cos, sin)?
        }
        .squeeze(0)?; // [H+KV, T, hd]
        let scale = 1.0 / (hd as f64).sqrt();
        let q = (qk.narrow(0, 0, h)? * scale)?; // [H, T, hd]
        let k = qk.narrow(0, h, kv)?; // [KV, T, hd]
        let v = qkv.narrow(0, h + kv, kv)?; // [KV, T, hd]
        let ctx = match attn {
            AttnMode::Masked(mask) => {
                // Query heads kv·G .. kv·G+G-1 share key/value head kv (HF repeat_kv).
                let q = q.reshape((kv, g * t, hd))?; // [KV, G·T, hd]
                let scores = q.matmul(&k.t()?)?; // [KV, G·T, T]
                let scores = scores.reshape((h, t, t))?.broadcast_add(mask)?; // [H, T, T]
                let probs = candle_nn::ops::softmax_last_dim(&scores)?; // [H, T, T]
                let probs = probs.reshape((kv, g * t, t))?; // [KV, G·T, T]
                probs.matmul(&v)?.reshape((h, t, hd))? // [H, T, hd]
            }
            AttnMode::Segments(lens) => segment_attention(&q, &k, &v, lens)?, // [H, T, hd]
        };
        let ctx = ctx.transpose(0, 1)?.contiguous()?.reshape((t, h * hd))?; // [T, H·hd]
        let x = (x + self.o_proj.forward(&ctx)?)?; // [T, d]

        // --- MLP ---
        let xn = candle_nn::ops::rms_norm(&x, &self.post_attention_layernorm, eps)?; // [T, d]
        let gu = self.gate_up.forward(&xn)?; // [T, 2I]
        let act = candle_nn::ops::swiglu(&gu)?; // [T, I]
        let x = (x + self.down_proj.forward(&act)?)?; // [T, d]
        Ok(x)
    }
}

/// A Llama / Qwen2 text decoder with access to its embedding, final norm and
/// unembedding (for the lenses).
#[derive(Debug, Clone)]
pub struct TextModel {
    cfg: TextConfig,
    /// `[vocab, d]`
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    /// `[d]`
    norm: Tensor,
    /// `[vocab, d]`; the embedding matrix when tied, `None` until set otherwise.
    lm_head: Option<Tensor>,
    /// q/k rows in llama.cpp order (quantised mode): interleaved RoPE.
    rope_interleaved: bool,
}

impl TextModel {
    /// Builds the decoder from the tensors under `vb` (the `model.` level of a
    /// causal LM: `embed_tokens`, `layers.*`, `norm`). With tied embeddings the
    /// unembedding is the embedding matrix; otherwise call
    /// [`TextModel::new_causal_lm`] or [`TextModel::with_lm_head`].
    pub fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        Self::build(cfg, vb, None)
    }

    /// As [`TextModel::new`], but the decoder-layer projections are taken
    /// from `qw` (full HF names, e.g. `model.layers.0.self_attn.q_proj.weight`)
    /// and kept in their GGUF block format, dequantised one matrix at a time
    /// inside each matmul: ~4–8× less weight memory, the same numbers as the
    /// f32 path up to summation order. `qw` holds q/k rows in llama.cpp's
    /// permuted order, as stored in GGUF; RoPE is applied interleaved
    /// accordingly. Norms, biases and the embedding come from `vb` (f32).
    pub fn new_quantized(cfg: &TextConfig, vb: VarBuilder, qw: &QuantizedWeights) -> Result<Self, ModelError> {
        let mut m = Self::build(cfg, vb, Some(qw))?;
        m.rope_interleaved = true;
        Ok(m)
    }

    fn build(cfg: &TextConfig, vb: VarBuilder, qw: Option<&QuantizedWeights>) -> Result<Self, ModelError> {
        cfg.validate()?;
        let d = cfg.hidden_size;
        let embed_tokens = get_checked(&vb.pp("embed_tokens"), &[cfg.vocab_size, d], "weight")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let vl = vb.pp("layers");
        for i in 0..cfg.num_hidden_layers {
            layers.push(DecoderLayer::new(cfg, vl.pp(i), qw)?);
        }
        let norm = get_checked(&vb.pp("norm"), &[d], "weight")?;
        let lm_head = if cfg.tie_word_embeddings { Some(embed_tokens.clone()) } else { None };
        Ok(Self { cfg: cfg.clone(), embed_tokens, layers, norm, lm_head, rope_interleaved: false })
    }

    /// Builds a causal LM from the root of its checkpoint: the decoder under
    /// `model.`, and `lm_head.weight` unless the embeddings are tied.
    pub fn new_causal_lm(cfg: &TextConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        Self::causal_lm(cfg, vb, None)
    }

    /// [`TextModel::new_causal_lm`] with quantised projections (see
    /// [`TextModel::new_quantized`]).
    pub fn new_causal_lm_quantized(cfg: &TextConfig, vb: VarBuilder, qw: &QuantizedWeights) -> Result<Self, ModelError> {
        Self::causal_lm(cfg, vb, Some(qw))
    }

    fn causal_lm(cfg: &TextConfig, vb: VarBuilder, qw: Option<&QuantizedWeights>) -> Result<Self, ModelError> {
        let m = match qw {
            Some(q) => Self::new_quantized(cfg, vb.pp("model"), q)?,
            None => Self::new(cfg, vb.pp("model"))?,
        };
        if cfg.tie_word_embeddings {
            return Ok(m);
        }
        let w = get_checked(&vb.pp("lm_head"), &[cfg.vocab_size, cfg.hidden_size], "weight")?;
        m.with_lm_head(w)
    }

    /// Sets a separate unembedding matrix `[vocab, d]` (untied models whose
    /// `lm_head` lives outside the decoder prefix, e.g. inside a VLM).
    pub fn with_lm_head(mut self, w: Tensor) -> Result<Self, ModelError> {
        let want = [self.cfg.vocab_size, self.cfg.hidden_size];
        if w.dims() != want {
            return Err(ModelError::Shape { name: "lm_head.weight".into(), expected: want.to_vec(), got: w.dims().to_vec() });
        }
        self.lm_head = Some(w.to_dtype(DType::F32)?);
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// Input embeddings of `ids`: `[T, d]`. Ids ≥ vocab size are an error.
    pub fn embed_tokens(&self, ids: &[u32]) -> Result<Tensor, ModelError> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            return Err(ModelError::Input(format!(
                "token id {bad} is outside the vocabulary (size {}): wrong tokenizer for this model?",
                self.cfg.vocab_size
            )));
        }
        let idx = Tensor::from_slice(ids, ids.len(), self.device())?;
        Ok(self.embed_tokens.index_select(&idx, 0)?) // [T, d]
    }

    /// Runs the decoder on input embeddings `[T, d]` (text embeddings, or
    /// text and visual tokens spliced together) and returns `L + 1` hidden
    /// states `[T, d]`: `[0]` = the input, `[i]` = after layer `i`, the last
    /// after the final norm (the HF convention).
    pub fn forward_embeds(&self, embeds: &Tensor) -> Result<Vec<Tensor>, ModelError> {
        let (t, d) = embeds.dims2().map_err(|_| {
            ModelError::Input(format!("embeddings must be [tokens, d], got shape {:?}", embeds.dims()))
        })?;
        if d != self.cfg.hidden_size {
            return Err(ModelError::Input(format!("embeddings have width {d}, the model expects {}", self.cfg.hidden_size)));
        }
        if t == 0 {
            return Err(ModelError::Input("empty sequence: at least one token is needed".into()));
        }
        if t > self.cfg.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "{t} tokens: this model handles at most {} (max_position_embeddings); shorten the input",
                self.cfg.max_position_embeddings
            )));
        }
        let x = embeds.to_dtype(DType::F32)?.contiguous()?;
        let (cos, sin) = self.rope_tables(t)?;
        let attn = AttnMode::Masked(causal_mask(t, self.device())?);
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        states.push(x.clone());
        let mut x = x;
        for layer in &self.layers {
            x = layer.forward(&self.cfg, &x, &cos, &sin, &attn, self.rope_interleaved)?;
            states.push(x.clone());
        }
        // HF replaces the last layer's raw output with the normed one.
        let last = self.final_norm(&x)?;
        if let Some(slot) = states.last_mut() {
            *slot = last;
        }
        Ok(states)
    }

    /// Runs several independent sequences packed into one batch: `embeds`
    /// `[ΣT, d]` holds the sequences one after another, `lens` their lengths.
    /// Each sequence gets its own positions (from 0) and attends only to
    /// itself (block-diagonal causal mask), so the result equals running
    /// [`TextModel::forward_embeds`] on each sequence alone, with the matmuls
    /// of all sequences done at once (used by the bank builder).
    pub fn forward_embeds_packed(&self, embeds: &Tensor, lens: &[usize]) -> Result<Vec<Tensor>, ModelError> {
        self.forward_embeds_packed_upto(embeds, lens, self.layers.len())
    }

    /// [`TextModel::forward_embeds_packed`] stopped after hidden state
    /// `last` (0 = the embeddings; the number of layers = every state, the
    /// last one final-normed as HF returns it): the layers past the deepest
    /// state a caller keeps (the bank builder's deepest bank layer) are not run.
    pub fn forward_embeds_packed_upto(&self, embeds: &Tensor, lens: &[usize], last: usize) -> Result<Vec<Tensor>, ModelError> {
        if last > self.layers.len() {
            return Err(ModelError::Input(format!(
                "hidden state {last} asked for: this model has states 0..={}",
                self.layers.len()
            )));
        }
        let (t, d) = embeds.dims2().map_err(|_| {
            ModelError::Input(format!("embeddings must be [tokens, d], got shape {:?}", embeds.dims()))
        })?;
        if d != self.cfg.hidden_size {
            return Err(ModelError::Input(format!("embeddings have width {d}, the model expects {}", self.cfg.hidden_size)));
        }
        if lens.iter().sum::<usize>() != t || lens.iter().any(|&l| l == 0) {
            return Err(ModelError::Input(format!(
                "packed lengths {lens:?} must be non-zero and add up to the {t} rows of the batch"
            )));
        }
        let positions: Vec<usize> = lens.iter().flat_map(|&l| 0..l).collect();
        let (cos, sin) = self.rope_tables_at(&positions)?;
        // Short sequences (the bank builder's sentences): attention within
        // each segment only, instead of a [ΣT, ΣT] block-diagonal mask that
        // spends most of its work on masked-out pairs.
        let attn = if lens.iter().all(|&l| l <= SEGMENT_ATTENTION_MAX_LEN) {
            AttnMode::Segments(lens.to_vec())
        } else {
            AttnMode::Masked(packed_causal_mask(lens, self.device())?)
        };
        let x = embeds.to_dtype(DType::F32)?.contiguous()?;
        let mut states = Vec::with_capacity(last + 1);
        states.push(x.clone());
        let mut x = x;
        for layer in &self.layers[..last] {
            x = layer.forward(&self.cfg, &x, &cos, &sin, &attn, self.rope_interleaved)?;
            states.push(x.clone());
        }
        if last == self.layers.len() {
            let normed = self.final_norm(&x)?;
            if let Some(slot) = states.last_mut() {
                *slot = normed;
            }
        }
        Ok(states)
    }

    /// RoPE tables `[positions.len(), hd/2]` for arbitrary positions.
    fn rope_tables_at(&self, positions: &[usize]) -> Result<(Tensor, Tensor), ModelError> {
        let hd = self.cfg.head_dim;
        let theta = self.cfg.rope_theta as f32;
        let inv_freq: Vec<f32> = (0..hd / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / hd as f32)).collect();
        let mut cos = Vec::with_capacity(positions.len() * hd / 2);
        let mut sin = Vec::with_capacity(positions.len() * hd / 2);
        for &p in positions {
            for &f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let (t, dev) = (positions.len(), self.device());
        Ok((Tensor::from_vec(cos, (t, hd / 2), dev)?, Tensor::from_vec(sin, (t, hd / 2), dev)?))
    }

    /// Convenience: embeddings of `ids` then [`TextModel::forward_embeds`].
    pub fn forward_ids(&self, ids: &[u32]) -> Result<Vec<Tensor>, ModelError> {
        let e = self.embed_tokens(ids)?;
        self.forward_embeds(&e)
    }

    /// The input embedding matrix `[vocab, d]`.
    pub fn embedding_matrix(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// The final RMSNorm applied to `x: [T, d]`.
    pub fn final_norm(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(candle_nn::ops::rms_norm(x, &self.norm, self.cfg.rms_norm_eps as f32)?)
    }

    /// Logits `[T, vocab]` of already normed states `[T, d]`.
    pub fn lm_head(&self, x_normed: &Tensor) -> Result<Tensor, ModelError> {
        let w = self.lm_head.as_ref().ok_or_else(|| {
            ModelError::Unsupported("this model has untied embeddings and no lm_head was loaded (use TextModel::new_causal_lm or with_lm_head)".into())
        })?;
        Ok(x_normed.matmul(&w.t()?)?)
    }

    /// The unembedding matrix `[vocab, d]`, if known.
    pub fn lm_head_matrix(&self) -> Option<&Tensor> {
        self.lm_head.as_ref()
    }

    /// RoPE tables for positions `0..t`: `cos`, `sin` `[t, hd/2]`, computed in
    /// f32 as transformers does (`inv_freq = 1 / θ^(2i/hd)`, `freqs = pos · inv_freq`).
    fn rope_tables(&self, t: usize) -> Result<(Tensor, Tensor), ModelError> {
        let hd = self.cfg.head_dim;
        let theta = self.cfg.rope_theta as f32;
        let inv_freq: Vec<f32> = (0..hd / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / hd as f32)).collect();
        let mut cos = Vec::with_capacity(t * hd / 2);
        let mut sin = Vec::with_capacity(t * hd / 2);
        for p in 0..t {
            for &f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let dev = self.device();
        Ok((Tensor::from_vec(cos, (t, hd / 2), dev)?, Tensor::from_vec(sin, (t, hd / 2), dev)?))
    }
}

/// How a decoder layer restricts attention.
enum AttnMode {
    /// An additive `[T, T]` mask (0 / -inf) over the whole batch.
    Masked(Tensor),
    /// Packed independent sequences of these lengths, each causal within
    /// itself ([`segment_attention`]).
    Segments(Vec<usize>),
}

/// Longest sequence for which packed batches use [`segment_attention`]
/// (its scalar loops are cheaper than the masked GEMMs for short sentences).
const SEGMENT_ATTENTION_MAX_LEN: usize = 256;

/// Causal attention inside each packed segment. `q: [H, T, hd]` (already
/// scaled), `k`, `v`: `[KV, T, hd]`; query head `i` reads key/value head
/// `i / (H / KV)` (HF `repeat_kv`). Returns `[H, T, hd]`. Heads are split
/// across candle's thread count.
fn segment_attention(q: &Tensor, k: &Tensor, v: &Tensor, lens: &[usize]) -> Result<Tensor, ModelError> {
    let (h, t, hd) = q.dims3()?;
    let kv = k.dim(0)?;
    let g = h / kv.max(1);
    let qv = q.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let kvv = k.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let vv = v.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    if qv.len() != h * t * hd || kvv.len() != kv * t * hd || vv.len() != kv * t * hd || lens.iter().sum::<usize>() != t {
        return Err(ModelError::Input(format!("segment attention: shapes q {:?} k {:?} v {:?} for lengths summing to {}", q.dims(), k.dims(), v.dims(), lens.iter().sum::<usize>())));
    }
    let mut out = vec![0f32; h * t * hd];
    let one_head = |head: usize, o: &mut [f32]| {
        let kh = head / g.max(1);
        let qh = &qv[head * t * hd..(head + 1) * t * hd];
        let kh_ = &kvv[kh * t * hd..(kh + 1) * t * hd];
        let vh = &vv[kh * t * hd..(kh + 1) * t * hd];
        let mut scores = Vec::new();
        let mut start = 0;
        for &len in lens {
            for i in 0..len {
                let qi = &qh[(start + i) * hd..(start + i + 1) * hd];
                scores.clear();
                let mut max = f32::NEG_INFINITY;
                for j in 0..=i {
                    let s = dot(qi, &kh_[(start + j) * hd..(start + j + 1) * hd]);
                    max = max.max(s);
                    scores.push(s);
                }
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let oi = &mut o[(start + i) * hd..(start + i + 1) * hd];
                for (j, &p) in scores.iter().enumerate() {
                    let w = p / sum;
                    for (a, &b) in oi.iter_mut().zip(&vh[(start + j) * hd..(start + j + 1) * hd]) {
                        *a += w * b;
                    }
                }
            }
            start += len;
        }
    };
    let threads = candle_core::utils::get_num_threads().clamp(1, h.max(1));
    let heads_per = h.div_ceil(threads).max(1);
    if threads <= 1 || cfg!(target_arch = "wasm32") {
        for (head, o) in out.chunks_mut(t * hd).enumerate() {
            one_head(head, o);
        }
    } else {
        std::thread::scope(|sc| {
            for (c, block) in out.chunks_mut(heads_per * t * hd).enumerate() {
                let one_head = &one_head;
                sc.spawn(move || {
                    for (i, o) in block.chunks_mut(t * hd).enumerate() {
                        one_head(c * heads_per + i, o);
                    }
                });
            }
        });
    }
    Ok(Tensor::from_vec(out, (h, t, hd), q.device())?)
}

/// Dot product with 8 independent accumulators (vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// `[T, T]` additive causal mask: 0 on and below the diagonal, -inf above.
fn causal_mask(t: usize, dev: &Device) -> Result<Tensor, ModelError> {
    let mut m = vec![0f32; t * t];
    for i in 0..t {
        for v in &mut m[i * t + i + 1..(i + 1) * t] {
            *v = f32::NEG_INFINITY;
        }
    }
    Ok(Tensor::from_vec(m, (t, t), dev)?)
}

/// `[ΣT, ΣT]` additive mask for packed sequences: causal inside each
/// sequence, -inf across sequences.
fn packed_causal_mask(lens: &[usize], dev: &Device) -> Result<Tensor, ModelError> {
    let t: usize = lens.iter().sum();
    let mut m = vec![f32::NEG_INFINITY; t * t];
    let mut start = 0;
    for &l in lens {
        for i in 0..l {
            let row = (start + i) * t;
            for v in &mut m[row + start..row + start + i + 1] {
                *v = 0.0;
            }
        }
        start += l;
    }
    Ok(Tensor::from_vec(m, (t, t), dev)?)
}

/// Copies hidden states (`[T, d]` tensors) into row-major f32 vectors.
pub fn states_to_vecs(states: &[Tensor]) -> Result<Vec<Vec<f32>>, ModelError> {
    states.iter().map(|s| Ok(s.flatten_all()?.to_vec1::<f32>()?)).collect()
}
