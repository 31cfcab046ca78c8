//! Typed text-model configs: HF `config.json` (`LlamaForCausalLM`,
//! `Qwen2ForCausalLM`, or the `text_config` of a VLM) and GGUF metadata
//! (`llama.*` keys, see [`crate::model::gguf`]) → [`TextConfig`].
//!
//! Every value we do not implement is refused with a message naming the field
//! (upstream: transformers' `LlamaConfig` / `Qwen2Config` defaults).

use serde_json::Value;

use super::ModelError;

/// Upper bounds that keep a hostile config from sizing huge allocations.
const MAX_DIM: usize = 1 << 17;
const MAX_LAYERS: usize = 1024;
const MAX_VOCAB: usize = 1 << 23;

/// The decoder family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextArch {
    /// Llama (SmolLM2, Llama 2/3 without rope scaling, …).
    Llama,
    /// Qwen2: Llama with biases on q/k/v projections.
    Qwen2,
}

impl TextArch {
    /// The HF `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            TextArch::Llama => "llama",
            TextArch::Qwen2 => "qwen2",
        }
    }
}

/// Configuration of a Llama-family decoder (every dimension the model reads).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Decoder family.
    pub arch: TextArch,
    /// Residual stream width `d`.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Number of decoder layers `L`.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention; divides `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Vocabulary size (rows of the embedding matrix).
    pub vocab_size: usize,
    /// Unembedding shares the input embedding matrix.
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v projections (Qwen2: always; Llama: `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama `attention_bias`; Qwen2: never).
    pub o_bias: bool,
    /// Biases on gate/up/down (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// Maximum sequence length the model was trained for.
    pub max_position_embeddings: usize,
}

impl TextConfig {
    /// Parses an HF `config.json` value: a text-only causal LM
    /// (`LlamaForCausalLM`, `Qwen2ForCausalLM`) or a VLM's `text_config`
    /// (identified by `model_type` `llama` / `qwen2`).
    pub fn from_hf_json(v: &Value) -> Result<Self, ModelError> {
        let obj = v.as_object().ok_or_else(|| {
            ModelError::config("<root>", "config.json must be a JSON object")
        })?;
        let arch_from_arches = match obj.get("architectures") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => {
                let names: Vec<&str> = a.iter().filter_map(|x| x.as_str()).collect();
                let mut found = None;
                for n in &names {
                    match *n {
                        "LlamaForCausalLM" | "LlamaModel" => found = Some(TextArch::Llama),
                        "Qwen2ForCausalLM" | "Qwen2Model" => found = Some(TextArch::Qwen2),
                        _ => {}
                    }
                }
                if found.is_none() {
                    return Err(ModelError::Unsupported(format!(
                        "architectures {names:?}: only LlamaForCausalLM and Qwen2ForCausalLM text models are supported here (VLMs are loaded through their own config)"
                    )));
                }
                found
            }
            Some(_) => return Err(ModelError::config("architectures", "must be a list of strings")),
        };
        let arch_from_type = match obj.get("model_type").and_then(|x| x.as_str()) {
            None => None,
            Some("llama") => Some(TextArch::Llama),
            Some("qwen2") => Some(TextArch::Qwen2),
            Some(other) => {
                return Err(ModelError::Unsupported(format!(
                    "model_type `{other}`: supported text models are `llama` and `qwen2`"
                )))
            }
        };
        let arch = match (arch_from_arches, arch_from_type) {
            (Some(a), Some(b)) if a != b => {
                return Err(ModelError::config(
                    "model_type",
                    format!(
                        "`{}` contradicts architectures (which name a {} model); fix config.json",
                        b.model_type(),
                        a.model_type()
                    ),
                ))
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => {
                return Err(ModelError::config(
                    "model_type",
                    "missing (and no `architectures`): cannot tell which model family this is; add \"model_type\": \"llama\" or \"qwen2\"",
                ))
            }
        };

        let hidden_size = req_usize(obj, "hidden_size", MAX_DIM)?;
        let intermediate_size = req_usize(obj, "intermediate_size", MAX_DIM * 4)?;
        let num_hidden_layers = req_usize(obj, "num_hidden_layers", MAX_LAYERS)?;
        let num_attention_heads = req_usize(obj, "num_attention_heads", MAX_DIM)?;
        let num_key_value_heads =
            opt_usize(obj, "num_key_value_heads", MAX_DIM)?.unwrap_or(num_attention_heads);
        let head_dim = match opt_usize(obj, "head_dim", MAX_DIM)? {
            Some(h) => h,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(ModelError::config(
                        "head_dim",
                        format!("missing, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}; set head_dim"),
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        let vocab_size = req_usize(obj, "vocab_size", MAX_VOCAB)?;
        let rms_norm_eps = opt_f64(obj, "rms_norm_eps")?.unwrap_or(1e-6);
        // transformers 5 keeps RoPE settings in `rope_parameters`; 4.x in
        // `rope_theta` + `rope_scaling`.
        let mut rope_theta = opt_f64(obj, "rope_theta")?;
        for key in ["rope_parameters", "rope_scaling"] {
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Object(rp)) => {
                    let ty = rp
                        .get("rope_type")
                        .or_else(|| rp.get("type"))
                        .and_then(|x| x.as_str())
                        .unwrap_or("default");
                    if ty != "default" {
                        return Err(ModelError::Unsupported(format!(
                            "{key}.rope_type `{ty}`: only plain RoPE (`default`) is implemented"
                        )));
                    }
                    if let Some(t) = rp.get("rope_theta") {
                        let t = t.as_f64().ok_or_else(|| {
                            ModelError::config(format!("{key}.rope_theta"), "must be a number")
                        })?;
                        if let Some(prev) = rope_theta {
                            if (prev - t).abs() > 1e-6 * prev.abs() {
                                return Err(ModelError::config(
                                    format!("{key}.rope_theta"),
                                    format!("{t} contradicts rope_theta {prev}"),
                                ));
                            }
                        }
                        rope_theta = Some(t);
                    }
                }
                Some(_) => return Err(ModelError::config(key, "must be an object or null")),
            }
        }
        let rope_theta = rope_theta.unwrap_or(10000.0);
        let tie_word_embeddings = opt_bool(obj, "tie_word_embeddings")?.unwrap_or(false);
        let attention_bias = opt_bool(obj, "attention_bias")?.unwrap_or(false);
        let mlp_bias = opt_bool(obj, "mlp_bias")?.unwrap_or(false);
        let max_position_embeddings =
            opt_usize(obj, "max_position_embeddings", usize::MAX)?.unwrap_or(2048);
        if let Some(act) = obj.get("hidden_act") {
            match act.as_str() {
                Some("silu") | Some("swish") => {}
                other => {
                    return Err(ModelError::Unsupported(format!(
                        "hidden_act {other:?}: only `silu` (SwiGLU) is implemented"
                    )))
                }
            }
        }
        if arch == TextArch::Qwen2 && opt_bool(obj, "use_sliding_window")?.unwrap_or(false) {
            return Err(ModelError::Unsupported(
                "use_sliding_window = true: sliding-window attention is not implemented".into(),
            ));
        }
        if let Some(Value::Array(types)) = obj.get("layer_types") {
            if let Some(bad) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
                return Err(ModelError::Unsupported(format!(
                    "layer_types contains {bad}: only full (causal) attention layers are implemented"
                )));
            }
        }
        let (qkv_bias, o_bias) = match arch {
            TextArch::Llama => (attention_bias, attention_bias),
            TextArch::Qwen2 => (true, false),
        };
        let cfg = TextConfig {
            arch,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            vocab_size,
            tie_word_embeddings,
            qkv_bias,
            o_bias,
            mlp_bias: mlp_bias && arch == TextArch::Llama,
            max_position_embeddings,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the relations between fields (called by every constructor).
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.num_key_value_heads == 0 || self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(ModelError::config(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(ModelError::config("head_dim", format!("{} must be even for RoPE", self.head_dim)));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(ModelError::config("rms_norm_eps", "must be a finite number ≥ 0"));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(ModelError::config("rope_theta", "must be a finite number > 0"));
        }
        if self.num_attention_heads.saturating_mul(self.head_dim) > MAX_DIM {
            return Err(ModelError::config("num_attention_heads", "num_attention_heads × head_dim is too large"));
        }
        Ok(())
    }

    /// Number of query heads sharing one key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

fn req_usize(obj: &serde_json::Map<String, Value>, key: &str, max: usize) -> Result<usize, ModelError> {
    opt_usize(obj, key, max)?.ok_or_else(|| ModelError::config(key, "missing; config.json must give it"))
}

fn opt_usize(obj: &serde_json::Map<String, Value>, key: &str, max: usize) -> Result<Option<usize>, ModelError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = v
                .as_u64()
                .ok_or_else(|| ModelError::config(key, format!("must be a non-negative integer, got {v}")))?;
            if n == 0 || n > max as u64 {
                return Err(ModelError::config(key, format!("{n} is out of range (1..={max})")));
            }
            Ok(Some(n as usize))
        }
    }
}

fn opt_f64(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<f64>, ModelError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| ModelError::config(key, format!("must be a number, got {v}"))),
    }
}

fn opt_bool(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<bool>, ModelError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| ModelError::config(key, format!("must be true or false, got {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smol() -> Value {
        json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
               "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
               "num_key_value_heads": 3, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
               "vocab_size": 49152, "tie_word_embeddings": true, "hidden_act": "silu"})
    }

    #[test]
    fn parses_smollm2_like_config() {
        let c = TextConfig::from_hf_json(&smol()).unwrap();
        assert_eq!((c.head_dim, c.group_size(), c.arch), (64, 3, TextArch::Llama));
        assert!(c.tie_word_embeddings && !c.qkv_bias);
    }

    #[test]
    fn qwen2_has_qkv_bias_only() {
        let mut v = smol();
        v["architectures"] = json!(["Qwen2ForCausalLM"]);
        v["model_type"] = json!("qwen2");
        let c = TextConfig::from_hf_json(&v).unwrap();
        assert!(c.qkv_bias && !c.o_bias);
    }

    #[test]
    fn refuses_unknown_architecture_and_names_it() {
        let mut v = smol();
        v["architectures"] = json!(["MistralForCausalLM"]);
        let e = TextConfig::from_hf_json(&v).unwrap_err().to_string();
        assert!(e.contains("MistralForCausalLM"), "{e}");
    }

    #[test]
    fn refuses_missing_and_contradictory_fields() {
        let mut v = smol();
        v.as_object_mut().unwrap().remove("hidden_size");
        assert!(TextConfig::from_hf_json(&v).unwrap_err().to_string().contains("hidden_size"));
        let mut v = smol();
        v["model_type"] = json!("qwen2");
        assert!(TextConfig::from_hf_json(&v).unwrap_err().to_string().contains("model_type"));
        let mut v = smol();
        v["num_key_value_heads"] = json!(4);
        assert!(TextConfig::from_hf_json(&v).unwrap_err().to_string().contains("num_key_value_heads"));
        let mut v = smol();
        v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0});
        assert!(TextConfig::from_hf_json(&v).unwrap_err().to_string().contains("llama3"));
        let mut v = smol();
        v["hidden_size"] = json!(-3);
        assert!(TextConfig::from_hf_json(&v).unwrap_err().to_string().contains("hidden_size"));
    }

    #[test]
    fn reads_transformers5_rope_parameters() {
        let mut v = smol();
        v.as_object_mut().unwrap().remove("rope_theta");
        v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 5e5});
        assert_eq!(TextConfig::from_hf_json(&v).unwrap().rope_theta, 5e5);
    }
}
