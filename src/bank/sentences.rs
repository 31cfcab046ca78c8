//! Sentence blocks: a run of consecutive sentences, deflate-compressed.
//!
//! Decompressed layout of a block of `k` sentences (see docs/bank-format.md,
//! "Sentence blocks"): `k + 1` little-endian u32 offsets into the text
//! (`offsets[0] = 0`, non-decreasing, `offsets[k]` = text length), then the
//! UTF-8 text of the sentences concatenated. Compression is raw deflate
//! (RFC 1951) through miniz_oxide (pure Rust, builds for wasm32).
//! Decompression is bounded by the decompressed length recorded in the
//! section table, and the result is validated before use.

use super::format::limits::MAX_BLOCK_RAW_LEN;
use super::BankError;

/// Deflate level used by the writer (fixed, so output is deterministic).
pub const DEFLATE_LEVEL: u8 = 6;

/// A decompressed, validated block of sentences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceBlock {
    /// `[k + 1]` offsets into `text`, at char boundaries, non-decreasing.
    offsets: Vec<u32>,
    text: String,
}

impl SentenceBlock {
    /// Number of sentences in the block.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether the block has no sentence.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sentence `i` of the block (0-based within the block).
    pub fn get(&self, i: usize) -> Option<&str> {
        let start = *self.offsets.get(i)? as usize;
        let end = *self.offsets.get(i + 1)? as usize;
        self.text.get(start..end)
    }

    /// Decodes a decompressed block expected to hold `count` sentences.
    pub fn decode(raw: &[u8], count: usize, block: u64) -> Result<Self, BankError> {
        let corrupt = |msg: String| BankError::Corrupt(format!("sentence block {block}: {msg}"));
        let header_len = count
            .checked_add(1)
            .and_then(|c| c.checked_mul(4))
            .ok_or_else(|| corrupt(format!("{count} sentences is too many")))?;
        if raw.len() < header_len {
            return Err(corrupt(format!(
                "{} decompressed bytes cannot hold {count} sentence offsets",
                raw.len()
            )));
        }
        let (head, text) = raw.split_at(header_len);
        let offsets: Vec<u32> = head
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let text = std::str::from_utf8(text)
            .map_err(|e| corrupt(format!("text is not valid UTF-8: {e}")))?;
        if offsets.first() != Some(&0) {
            return Err(corrupt("first sentence offset is not 0".into()));
        }
        if offsets.last().map(|&o| o as usize) != Some(text.len()) {
            return Err(corrupt(format!(
                "last sentence offset is not the text length {}",
                text.len()
            )));
        }
        for (i, w) in offsets.windows(2).enumerate() {
            if w[1] < w[0] {
                return Err(corrupt(format!(
                    "sentence offsets decrease at sentence {i}"
                )));
            }
            if !text.is_char_boundary(w[1] as usize) {
                return Err(corrupt(format!(
                    "sentence {} ends inside a UTF-8 character",
                    i
                )));
            }
        }
        Ok(Self {
            offsets,
            text: text.to_string(),
        })
    }

    /// Decompresses `compressed` (expected to inflate to exactly `raw_len`
    /// bytes, at most [`MAX_BLOCK_RAW_LEN`]) and decodes it.
    pub fn decompress(
        compressed: &[u8],
        raw_len: u64,
        count: usize,
        block: u64,
    ) -> Result<Self, BankError> {
        if raw_len > MAX_BLOCK_RAW_LEN {
            return Err(BankError::Corrupt(format!(
                "sentence block {block}: decompressed length {raw_len} exceeds the limit {MAX_BLOCK_RAW_LEN}"
            )));
        }
        let raw = miniz_oxide::inflate::decompress_to_vec_with_limit(compressed, raw_len as usize).map_err(|e| {
            BankError::Corrupt(format!(
                "sentence block {block}: deflate data is invalid or inflates past its recorded {raw_len} bytes ({:?})",
                e.status
            ))
        })?;
        if raw.len() as u64 != raw_len {
            return Err(BankError::Corrupt(format!(
                "sentence block {block}: inflates to {} bytes, the section table records {raw_len}",
                raw.len()
            )));
        }
        Self::decode(&raw, count, block)
    }
}

/// Encodes `sentences` into a decompressed block (offsets + text).
/// Errors if the text exceeds the u32 offsets or [`MAX_BLOCK_RAW_LEN`].
pub fn encode_block(sentences: &[impl AsRef<str>], block: u64) -> Result<Vec<u8>, BankError> {
    let text_len: usize = sentences.iter().map(|s| s.as_ref().len()).sum();
    let raw_len = (sentences.len() + 1) * 4 + text_len;
    if raw_len as u64 > MAX_BLOCK_RAW_LEN {
        return Err(BankError::InvalidInput(format!(
            "sentence block {block} would be {raw_len} bytes decompressed, over the {MAX_BLOCK_RAW_LEN}-byte limit; \
             use a smaller sentences_per_block"
        )));
    }
    let mut raw = Vec::with_capacity(raw_len);
    let mut off = 0u32;
    raw.extend_from_slice(&off.to_le_bytes());
    for s in sentences {
        // Bounded by MAX_BLOCK_RAW_LEN < u32::MAX above.
        off += s.as_ref().len() as u32;
        raw.extend_from_slice(&off.to_le_bytes());
    }
    for s in sentences {
        raw.extend_from_slice(s.as_ref().as_bytes());
    }
    Ok(raw)
}

/// Raw-deflate compression used for sentence blocks.
pub fn compress(raw: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(raw, DEFLATE_LEVEL)
}
