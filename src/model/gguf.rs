//! GGUF (llama.cpp) files: header and metadata through
//! `candle_core::quantized::gguf_file`, a [`TextConfig`] from the `llama.*`
//! keys, and the tensors dequantised to f32 and renamed to HF names.
//!
//! llama.cpp's `convert_hf_to_gguf.py` permutes the rows of `attn_q` and
//! `attn_k` for its interleaved RoPE (`permute(w, n_head, n_head_kv)`:
//! `reshape(n_head, 2, hd/2, d).swapaxes(1, 2)`). We undo it
//! ([`unpermute_rows`]) so the weights work with HF's `rotate_half` RoPE, as
//! transformers' GGUF loader does (`reverse_permute_weights`).

use std::collections::HashMap;
use std::io::{Read, Seek};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};

use super::config::{TextArch, TextConfig};
use super::llama::QuantizedWeights;
use super::weights::Weights;
use super::ModelError;

/// Quantisation types we dequantise (all of candle's GGUF block formats that
/// llama.cpp uses for weights).
pub const SUPPORTED_TYPES: &[GgmlDType] = &[
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// Reads the GGUF header (metadata and tensor table) from `r`.
pub fn read_content<R: Read + Seek>(r: &mut R, what: &str) -> Result<Content, ModelError> {
    Content::read(r).map_err(|e| {
        let s = e.to_string();
        let hint = if s.contains("unknown dtype") {
            "a tensor uses a quantisation type we cannot read (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K); re-quantise the model"
        } else {
            "not a valid GGUF file (truncated or corrupt?); re-download it"
        };
        ModelError::Weights { path: what.into(), msg: format!("{hint} ({s})") }
    })
}

fn meta<'a>(c: &'a Content, key: &str) -> Option<&'a Value> {
    c.metadata.get(key)
}

fn meta_usize(c: &Content, key: &str) -> Result<Option<usize>, ModelError> {
    let Some(v) = meta(c, key) else { return Ok(None) };
    let n = match v {
        Value::U8(x) => *x as u64,
        Value::U16(x) => *x as u64,
        Value::U32(x) => *x as u64,
        Value::U64(x) => *x,
        Value::I8(x) if *x >= 0 => *x as u64,
        Value::I16(x) if *x >= 0 => *x as u64,
        Value::I32(x) if *x >= 0 => *x as u64,
        Value::I64(x) if *x >= 0 => *x as u64,
        other => return Err(ModelError::config(key, format!("must be a non-negative integer, got {other:?}"))),
    };
    usize::try_from(n).map(Some).map_err(|_| ModelError::config(key, "value too large"))
}

fn meta_f64(c: &Content, key: &str) -> Result<Option<f64>, ModelError> {
    let Some(v) = meta(c, key) else { return Ok(None) };
    Ok(Some(match v {
        Value::F32(x) => *x as f64,
        Value::F64(x) => *x,
        other => return Err(ModelError::config(key, format!("must be a float, got {other:?}"))),
    }))
}

/// The `general.architecture` string.
pub fn architecture(c: &Content) -> Result<String, ModelError> {
    match meta(c, "general.architecture") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ModelError::config("general.architecture", "must be a string")),
        None => Err(ModelError::config("general.architecture", "missing: not a model GGUF file?")),
    }
}

/// Builds a [`TextConfig`] from GGUF metadata (`llama.*` keys).
pub fn text_config(c: &Content) -> Result<TextConfig, ModelError> {
    let arch = architecture(c)?;
    if arch != "llama" {
        return Err(ModelError::Unsupported(format!(
            "GGUF general.architecture `{arch}`: only `llama` GGUF files are supported (use safetensors for qwen2)"
        )));
    }
    let req = |k: &str| -> Result<usize, ModelError> {
        let key = format!("llama.{k}");
        meta_usize(c, &key)?.ok_or_else(|| ModelError::config(key, "missing from the GGUF metadata"))
    };
    let hidden_size = req("embedding_length")?;
    let intermediate_size = req("feed_forward_length")?;
    let num_hidden_layers = req("block_count")?;
    let num_attention_heads = req("attention.head_count")?;
    let num_key_value_heads = meta_usize(c, "llama.attention.head_count_kv")?.unwrap_or(num_attention_heads);
    if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
        return Err(ModelError::config(
            "llama.attention.head_count",
            format!("{num_attention_heads} does not divide embedding_length {hidden_size}"),
        ));
    }
    let head_dim = hidden_size / num_attention_heads;
    if let Some(rd) = meta_usize(c, "llama.rope.dimension_count")? {
        if rd != head_dim {
            return Err(ModelError::Unsupported(format!(
                "llama.rope.dimension_count {rd} ≠ head dim {head_dim}: partial RoPE is not implemented"
            )));
        }
    }
    if let Some(Value::String(s)) = meta(c, "llama.rope.scaling.type") {
        if s != "none" {
            return Err(ModelError::Unsupported(format!("llama.rope.scaling.type `{s}`: only plain RoPE is implemented")));
        }
    }
    let n_tokens = match meta(c, "tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => Some(a.len()),
        _ => None,
    };
    let vocab_size = match (meta_usize(c, "llama.vocab_size")?, n_tokens) {
        (Some(v), Some(n)) if v != n => {
            return Err(ModelError::config("llama.vocab_size", format!("{v} contradicts the {n} tokens of tokenizer.ggml.tokens")))
        }
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => {
            // Fall back to the embedding matrix rows.
            c.tensor_infos
                .get("token_embd.weight")
                .and_then(|t| t.shape.dims().first().copied())
                .ok_or_else(|| ModelError::config("llama.vocab_size", "missing, and no tokenizer or token_embd to infer it from"))?
        }
    };
    let cfg = TextConfig {
        arch: TextArch::Llama,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: meta_f64(c, "llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
        rope_theta: meta_f64(c, "llama.rope.freq_base")?.unwrap_or(10000.0),
        vocab_size,
        tie_word_embeddings: !c.tensor_infos.contains_key("output.weight"),
        qkv_bias: c.tensor_infos.contains_key("blk.0.attn_q.bias"),
        o_bias: c.tensor_infos.contains_key("blk.0.attn_output.bias"),
        mlp_bias: false,
        max_position_embeddings: meta_usize(c, "llama.context_length")?.unwrap_or(2048),
    };
    cfg.validate()?;
    Ok(cfg)
}

/// GGUF tensor name → HF name (`model.`-prefixed, as in a causal-LM checkpoint).
pub fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (n, rest) = rest.split_once('.')?;
    let n: usize = n.parse().ok()?;
    let (part, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{n}.{hf}.{suffix}"))
}

/// Undoes llama.cpp's RoPE row permutation of a q/k weight `[n_head·hd, d]`
/// (or bias `[n_head·hd]`): rows viewed as `[n_head, hd/2, 2]` → `[n_head, 2, hd/2]`.
pub fn unpermute_rows(t: &Tensor, n_head: usize) -> Result<Tensor, ModelError> {
    let dims = t.dims().to_vec();
    let rows = *dims.first().ok_or_else(|| ModelError::Input("unpermute of a scalar".into()))?;
    if n_head == 0 || rows % (2 * n_head) != 0 {
        return Err(ModelError::Shape { name: "attn_q/attn_k".into(), expected: vec![n_head * 2], got: dims });
    }
    let half = rows / n_head / 2;
    let out = match dims.len() {
        1 => t.reshape((n_head, half, 2))?.transpose(1, 2)?.contiguous()?.reshape(rows)?,
        2 => t.reshape((n_head, half, 2, dims[1]))?.transpose(1, 2)?.contiguous()?.reshape((rows, dims[1]))?,
        _ => return Err(ModelError::Shape { name: "attn_q/attn_k".into(), expected: vec![rows, 0], got: dims }),
    };
    Ok(out)
}

/// Reads every tensor of a llama GGUF file, dequantised to f32, under HF
/// names (`model.embed_tokens.weight`, …, `lm_head.weight` when untied),
/// with the q/k permutation undone. Unknown tensor names and quantisation
/// types are refused.
pub fn load_weights<R: Read + Seek>(
    c: &Content,
    r: &mut R,
    cfg: &TextConfig,
    what: &str,
    dev: &Device,
) -> Result<Weights, ModelError> {
    let mut tensors = HashMap::new();
    let mut names: Vec<&String> = c.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let hf = check_tensor(c, name, what)?;
        tensors.insert(hf, load_f32(c, r, name, cfg, what, dev)?);
    }
    Ok(Weights { tensors })
}

/// The HF name of GGUF tensor `name`, after checking that we can read its quantisation type
/// and know the name.
pub fn check_tensor(c: &Content, name: &str, what: &str) -> Result<String, ModelError> {
    let info = c
        .tensor_infos
        .get(name)
        .ok_or_else(|| ModelError::Weights { path: what.into(), msg: format!("no tensor `{name}`") })?;
    if !SUPPORTED_TYPES.contains(&info.ggml_dtype) {
        return Err(ModelError::Unsupported(format!(
            "{what}: tensor `{name}` is quantised as {:?}; supported: {SUPPORTED_TYPES:?}",
            info.ggml_dtype
        )));
    }
    hf_name(name).ok_or_else(|| {
        ModelError::Unsupported(format!(
            "{what}: unexpected tensor `{name}` (rope scaling tables, other families are not implemented)"
        ))
    })
}

/// Byte range `[start, end)` of tensor `name`'s data in the file, checked against overflow.
pub fn tensor_span(c: &Content, name: &str) -> Option<(u64, u64)> {
    let info = c.tensor_infos.get(name)?;
    let bs = info.ggml_dtype.block_size();
    let elems = info.shape.elem_count();
    if bs == 0 || elems % bs != 0 {
        return None;
    }
    let size = ((elems / bs) as u64).checked_mul(info.ggml_dtype.type_size() as u64)?;
    let start = c.tensor_data_offset.checked_add(info.offset)?;
    Some((start, start.checked_add(size)?))
}

/// Tensor `name` read from `r`, dequantised to f32, with llama.cpp's q/k row permutation undone.
pub fn load_f32<R: Read + Seek>(
    c: &Content,
    r: &mut R,
    name: &str,
    cfg: &TextConfig,
    what: &str,
    dev: &Device,
) -> Result<Tensor, ModelError> {
    let q = c.tensor(r, name, dev).map_err(|e| ModelError::Weights {
        path: what.into(),
        msg: format!("tensor `{name}`: {e} (truncated or corrupt file? re-download it)"),
    })?;
    let mut t = q.dequantize(dev)?; // f32, row-major [out, in]
    if name.contains(".attn_q.") {
        t = unpermute_rows(&t, cfg.num_attention_heads)?;
    } else if name.contains(".attn_k.") {
        t = unpermute_rows(&t, cfg.num_key_value_heads)?;
    }
    Ok(t)
}

/// Reads a llama GGUF file for [`crate::model::TextModel::new_quantized`]:
/// the decoder-layer projections (`blk.N.{attn_q,attn_k,attn_v,attn_output,
/// ffn_gate,ffn_up,ffn_down}.weight`) stay quantised under their HF names,
/// in GGUF row order (no un-permutation: the model uses interleaved RoPE);
/// everything else (embedding, norms, biases, `lm_head`) is dequantised to f32.
pub fn load_weights_quantized<R: Read + Seek>(
    c: &Content,
    r: &mut R,
    what: &str,
    dev: &Device,
) -> Result<(Weights, QuantizedWeights), ModelError> {
    let mut tensors = HashMap::new();
    let mut quant = HashMap::new();
    let mut names: Vec<&String> = c.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let hf = check_tensor(c, name, what)?;
        let q = c.tensor(r, name, dev).map_err(|e| ModelError::Weights {
            path: what.into(),
            msg: format!("tensor `{name}`: {e} (truncated or corrupt file? re-download it)"),
        })?;
        let is_proj = name.starts_with("blk.")
            && name.ends_with(".weight")
            && ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
                .iter()
                .any(|p| name.contains(&format!(".{p}.")));
        if is_proj {
            quant.insert(hf, q);
        } else {
            tensors.insert(hf, q.dequantize(dev)?);
        }
    }
    Ok((Weights { tensors }, quant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_llama_cpp_tensors() {
        assert_eq!(hf_name("blk.12.attn_q.weight").as_deref(), Some("model.layers.12.self_attn.q_proj.weight"));
        assert_eq!(hf_name("blk.0.ffn_norm.weight").as_deref(), Some("model.layers.0.post_attention_layernorm.weight"));
        assert_eq!(hf_name("token_embd.weight").as_deref(), Some("model.embed_tokens.weight"));
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    /// The inverse of llama.cpp's `permute` (written here in its numpy form
    /// on indices): HF row `h·hd + j·hd/2 + i` is stored at `h·hd + 2i + j`.
    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (n_head, hd, d) = (3usize, 8usize, 2usize);
        let rows = n_head * hd;
        let hf: Vec<f32> = (0..rows * d).map(|x| x as f32).collect();
        let mut stored = vec![0f32; rows * d];
        for h in 0..n_head {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    let src = h * hd + j * hd / 2 + i;
                    let dst = h * hd + 2 * i + j;
                    stored[dst * d..dst * d + d].copy_from_slice(&hf[src * d..src * d + d]);
                }
            }
        }
        let t = Tensor::from_vec(stored, (rows, d), &Device::Cpu).unwrap();
        let back = unpermute_rows(&t, n_head).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(back, hf);
    }
}
