//! Model fingerprint: a stable digest of the tokenizer vocabulary and the
//! input embedding matrix, stored in a bank so that a bank built for one
//! model refuses another (DESIGN.md, "The bank").
//!
//! Format: `llfp1-sha256:<64 hex>` over, in order: the tag `latentlens-fp-v1\0`,
//! the vocabulary size (u64 LE) and each token's UTF-8 bytes followed by
//! `\0` (id order), the embedding shape (u64 LE per dim), and the f32 values
//! (little-endian, row-major). Weights loaded from different quantisations
//! give different fingerprints on purpose: their hidden states differ.

use candle_core::{DType, Tensor};
use sha2::{Digest, Sha256};

use super::tokenizer::Tokenizer;
use super::ModelError;

/// Prefix identifying the fingerprint scheme.
pub const FINGERPRINT_PREFIX: &str = "llfp1-sha256:";

/// Computes the fingerprint of a tokenizer + embedding matrix `[vocab, d]`.
pub fn model_fingerprint(tokenizer: &Tokenizer, embedding: &Tensor) -> Result<String, ModelError> {
    let vocab = tokenizer.vocab_in_id_order();
    fingerprint_parts(&vocab, embedding)
}

/// As [`model_fingerprint`], from the vocabulary strings in id order.
pub fn fingerprint_parts(vocab: &[String], embedding: &Tensor) -> Result<String, ModelError> {
    let mut h = Sha256::new();
    h.update(fingerprint_header(vocab, embedding.dims()));
    let flat = embedding.to_dtype(DType::F32)?.flatten_all()?;
    let n = flat.dim(0)?;
    // Hash in row chunks to avoid a second full copy of the matrix as bytes.
    let chunk = 1 << 16;
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let vals = flat.narrow(0, start, len)?.to_vec1::<f32>()?;
        h.update(bytemuck::cast_slice::<f32, u8>(&vals));
        start += len;
    }
    Ok(fingerprint_from_digest(&h.finalize()))
}

/// The bytes hashed before the embedding values: the tag, the vocabulary and the
/// embedding shape (see the module docs). The embedding's f32 values (LE, row-major) follow.
pub fn fingerprint_header(vocab: &[String], dims: &[usize]) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + dims.len() * 8 + vocab.iter().map(|t| t.len() + 1).sum::<usize>());
    m.extend_from_slice(b"latentlens-fp-v1\0");
    m.extend_from_slice(&(vocab.len() as u64).to_le_bytes());
    for t in vocab {
        m.extend_from_slice(t.as_bytes());
        m.push(0);
    }
    for &d in dims {
        m.extend_from_slice(&(d as u64).to_le_bytes());
    }
    m
}

/// The fingerprint string of a SHA-256 digest of header + values (for callers that hash
/// elsewhere, e.g. the browser's native SHA-256).
pub fn fingerprint_from_digest(digest: &[u8]) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{FINGERPRINT_PREFIX}{hex}")
}

/// Checks that a bank's stored fingerprint matches the loaded model.
pub fn check_fingerprint(expected: &str, actual: &str) -> Result<(), ModelError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ModelError::Input(format!(
            "this bank was built for another model (bank fingerprint {expected}, model fingerprint {actual}); use the model the bank was built with, or build a bank for this model"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fingerprint_changes_with_vocab_and_weights() {
        let e = Tensor::from_vec(vec![1f32, 2., 3., 4.], (2, 2), &Device::Cpu).unwrap();
        let e2 = Tensor::from_vec(vec![1f32, 2., 3., 4.5], (2, 2), &Device::Cpu).unwrap();
        let v = vec!["a".to_string(), "b".to_string()];
        let w = vec!["a".to_string(), "c".to_string()];
        let a = fingerprint_parts(&v, &e).unwrap();
        assert!(a.starts_with(FINGERPRINT_PREFIX) && a.len() == FINGERPRINT_PREFIX.len() + 64);
        assert_eq!(a, fingerprint_parts(&v, &e).unwrap());
        assert_ne!(a, fingerprint_parts(&w, &e).unwrap());
        assert_ne!(a, fingerprint_parts(&v, &e2).unwrap());
        assert!(check_fingerprint(&a, &a).is_ok());
        assert!(check_fingerprint(&a, "x").unwrap_err().to_string().contains("another model"));
    }
}
