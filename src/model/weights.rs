//! Weight loading into f32 tensors under HF names: safetensors (f32, f16,
//! bf16), sharded safetensors (`model.safetensors.index.json`), and GGUF
//! (via [`crate::model::gguf`], dequantised and renamed).
//!
//! The result, [`Weights`], feeds a `candle_nn::VarBuilder`
//! ([`Weights::var_builder`]) so the same `new(cfg, vb)` constructors serve
//! every format. Files are validated by the `safetensors` crate (header,
//! offsets, truncation); dtypes we do not convert are refused by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::ModelError;

/// Named f32 tensors on one device.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    /// HF name → tensor (f32).
    pub tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// A `VarBuilder` over these tensors (f32).
    pub fn var_builder(&self, dev: &Device) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.tensors.clone(), DType::F32, dev)
    }

    /// Merges another set (later shards override nothing: a duplicate name is an error).
    pub fn extend(&mut self, other: Weights, what: &str) -> Result<(), ModelError> {
        for (k, v) in other.tensors {
            if self.tensors.contains_key(&k) {
                return Err(ModelError::Weights {
                    path: what.into(),
                    msg: format!("tensor `{k}` appears in two shards: the index or shards are inconsistent"),
                });
            }
            self.tensors.insert(k, v);
        }
        Ok(())
    }

    /// Tensor by name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }
}

/// Parses one safetensors file's bytes, converting f32/f16/bf16 to f32.
/// `what` names the source in error messages.
pub fn load_safetensors_bytes(bytes: &[u8], what: &str, dev: &Device) -> Result<Weights, ModelError> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| ModelError::Weights {
        path: what.into(),
        msg: format!("not a valid safetensors file ({e}); re-download or re-export it"),
    })?;
    let mut tensors = HashMap::new();
    for (name, view) in st.iter() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => le_chunks::<4>(data).map(f32::from_le_bytes).collect(),
            safetensors::Dtype::F16 => le_chunks::<2>(data).map(|b| half::f16::from_le_bytes(b).to_f32()).collect(),
            safetensors::Dtype::BF16 => le_chunks::<2>(data).map(|b| half::bf16::from_le_bytes(b).to_f32()).collect(),
            other => {
                return Err(ModelError::Unsupported(format!(
                    "{what}: tensor `{name}` has dtype {other:?}; only F32, F16 and BF16 safetensors are supported"
                )))
            }
        };
        if vals.len() != n {
            return Err(ModelError::Weights {
                path: what.into(),
                msg: format!("tensor `{name}`: {} values for shape {shape:?}", vals.len()),
            });
        }
        tensors.insert(name.to_string(), Tensor::from_vec(vals, shape, dev)?);
    }
    Ok(Weights { tensors })
}

fn le_chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io { path: path.display().to_string(), source })
}

/// Loads the safetensors weights of an HF model directory: `model.safetensors`,
/// or the shards listed in `model.safetensors.index.json`.
pub fn load_safetensors_dir(dir: &Path, dev: &Device) -> Result<Weights, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    let single = dir.join("model.safetensors");
    if index.is_file() {
        let files = shard_files(&index)?;
        let mut w = Weights::default();
        for f in files {
            let p = dir.join(&f);
            let bytes = read_file(&p)?;
            let part = load_safetensors_bytes(&bytes, &p.display().to_string(), dev)?;
            w.extend(part, &index.display().to_string())?;
        }
        Ok(w)
    } else if single.is_file() {
        load_safetensors_bytes(&read_file(&single)?, &single.display().to_string(), dev)
    } else {
        Err(ModelError::Weights {
            path: dir.display().to_string(),
            msg: "no model.safetensors or model.safetensors.index.json in this directory".into(),
        })
    }
}

/// The shard file names of a `model.safetensors.index.json` (sorted, unique),
/// refusing names that leave the directory.
pub fn shard_files(index: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let what = index.display().to_string();
    let v: serde_json::Value = serde_json::from_slice(&read_file(index)?)
        .map_err(|e| ModelError::Weights { path: what.clone(), msg: format!("invalid JSON: {e}") })?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::Weights {
        path: what.clone(),
        msg: "no `weight_map` object".into(),
    })?;
    let mut files: Vec<String> = Vec::new();
    for (k, f) in map {
        let f = f.as_str().ok_or_else(|| ModelError::Weights {
            path: what.clone(),
            msg: format!("weight_map[`{k}`] is not a file name"),
        })?;
        if f.contains('/') || f.contains('\\') || f.starts_with('.') {
            return Err(ModelError::Weights { path: what.clone(), msg: format!("shard name `{f}` must be a plain file name") });
        }
        files.push(f.to_string());
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(ModelError::Weights { path: what, msg: "weight_map is empty".into() });
    }
    Ok(files.into_iter().map(PathBuf::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_f16_and_bf16_and_refuses_ints() {
        let dev = Device::Cpu;
        let f16: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        let bf16: Vec<u8> = [0.25f32, 3.0].iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
        let mut m = HashMap::new();
        m.insert("a".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2], &f16).unwrap());
        m.insert("b".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![2], &bf16).unwrap());
        let bytes = safetensors::serialize(&m, None).unwrap();
        let w = load_safetensors_bytes(&bytes, "t", &dev).unwrap();
        assert_eq!(w.get("a").unwrap().to_vec1::<f32>().unwrap(), vec![1.5, -2.0]);
        assert_eq!(w.get("b").unwrap().to_vec1::<f32>().unwrap(), vec![0.25, 3.0]);
        // Truncated file → Weights error.
        let e = load_safetensors_bytes(&bytes[..bytes.len() - 3], "t", &dev).unwrap_err();
        assert!(matches!(e, ModelError::Weights { .. }), "{e}");
        let ints = [0u8; 8];
        let mut m = HashMap::new();
        m.insert("i".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1], &ints).unwrap());
        let bytes = safetensors::serialize(&m, None).unwrap();
        let e = load_safetensors_bytes(&bytes, "t", &dev).unwrap_err().to_string();
        assert!(e.contains("I64") && e.contains("`i`"), "{e}");
    }
}
