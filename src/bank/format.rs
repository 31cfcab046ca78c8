//! Bank file format v1: the byte layout shared by the reader and the writer.
//!
//! Specified byte for byte in `docs/bank-format.md`; this module is its
//! executable twin: the fixed header, the JSON manifest, the section table,
//! the row-metadata record, the limits every size is checked against, and the
//! layout a manifest implies (which sections must exist, with which lengths).
//! All integers are little-endian; checksums are CRC-32 (IEEE, as zlib/PNG).

use serde::{Deserialize, Serialize};

use super::BankError;

/// File magic: `\x89LLBANK\n` (non-ASCII first byte and a newline, as PNG,
/// so text-mode transfers and non-bank files are caught at once).
pub const MAGIC: [u8; 8] = *b"\x89LLBANK\n";
/// Major format version: readers refuse any other major version.
pub const FORMAT_MAJOR: u16 = 1;
/// Minor format version written by this crate for a bank without exact rows;
/// readers accept any minor version of their major (minor versions only add
/// manifest fields or optional section kinds, which older readers ignore).
pub const FORMAT_MINOR: u16 = 0;
/// Minor version written for a bank with exact rows (v1.1: the optional
/// `exact` manifest field and [`SectionKind::ExactRows`] sections).
pub const FORMAT_MINOR_EXACT: u16 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 64;
/// Size of one section-table entry in bytes.
pub const SECTION_ENTRY_LEN: usize = 32;
/// Size of one row-metadata record in bytes.
pub const ROW_META_LEN: usize = 20;
/// Sections start at offsets that are multiples of this (writers pad with
/// zero bytes; readers do not rely on it).
pub const SECTION_ALIGN: u64 = 8;
/// The reader's first read: this many bytes (or the whole file if smaller),
/// which holds header, manifest and table of all but huge banks.
pub const PREFIX_READ_LEN: u64 = 64 << 10;

/// Upper bounds checked before anything is allocated or read.
pub mod limits {
    /// Manifest JSON size.
    pub const MAX_MANIFEST_LEN: u64 = 16 << 20;
    /// Number of section-table entries.
    pub const MAX_SECTIONS: u64 = 1 << 21;
    /// One quantizer blob.
    pub const MAX_QUANTIZER_LEN: u64 = 1 << 30;
    /// One codes / refinement / row-metadata chunk.
    pub const MAX_CHUNK_LEN: u64 = 256 << 20;
    /// One compressed sentence block.
    pub const MAX_BLOCK_LEN: u64 = 64 << 20;
    /// One decompressed sentence block.
    pub const MAX_BLOCK_RAW_LEN: u64 = 64 << 20;
    /// Hidden size `d`.
    pub const MAX_HIDDEN_SIZE: u32 = 1 << 16;
    /// Number of bank layers (slots are u16).
    pub const MAX_LAYERS: usize = 1024;
    /// Code bytes per row (M).
    pub const MAX_CODE_BYTES: u32 = 4096;
    /// Refinement bytes per row.
    pub const MAX_REFINE_BYTES: u32 = 1 << 16;
    /// Rows.
    pub const MAX_ROWS: u64 = 1 << 40;
    /// Rows per chunk.
    pub const MAX_ROWS_PER_CHUNK: u32 = 1 << 24;
    /// Sentences (ids are u32).
    pub const MAX_SENTENCES: u64 = u32::MAX as u64;
    /// Sentences per compressed block.
    pub const MAX_SENTENCES_PER_BLOCK: u32 = 1 << 16;
}

/// The 64-byte fixed header (see docs/bank-format.md, "Header").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Major format version (must equal [`FORMAT_MAJOR`]).
    pub major: u16,
    /// Minor format version.
    pub minor: u16,
    /// Total file length in bytes (detects truncation and appended bytes).
    pub file_len: u64,
    /// Byte offset of the manifest JSON.
    pub manifest_offset: u64,
    /// Length of the manifest JSON in bytes.
    pub manifest_len: u32,
    /// CRC-32 of the manifest bytes.
    pub manifest_crc: u32,
    /// Byte offset of the section table.
    pub table_offset: u64,
    /// Number of 32-byte entries in the section table.
    pub table_entries: u32,
    /// CRC-32 of the section table bytes.
    pub table_crc: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

impl Header {
    /// Encodes the header, computing its own checksum (bytes 60..64).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.major.to_le_bytes());
        b[10..12].copy_from_slice(&self.minor.to_le_bytes());
        // 12..16 reserved, zero.
        b[16..24].copy_from_slice(&self.file_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.manifest_offset.to_le_bytes());
        b[32..36].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[36..40].copy_from_slice(&self.manifest_crc.to_le_bytes());
        b[40..48].copy_from_slice(&self.table_offset.to_le_bytes());
        b[48..52].copy_from_slice(&self.table_entries.to_le_bytes());
        b[52..56].copy_from_slice(&self.table_crc.to_le_bytes());
        // 56..60 reserved, zero.
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks magic, major version and header checksum, in that
    /// order (a future major version may lay the header out differently, so
    /// its checksum is not looked at). `b` may be longer than the header.
    pub fn decode(b: &[u8]) -> Result<Self, BankError> {
        if b.len() < HEADER_LEN {
            return Err(BankError::Truncated {
                what: "header".into(),
                expected: HEADER_LEN as u64,
                actual: b.len() as u64,
            });
        }
        if b[0..8] != MAGIC {
            let mut found = [0u8; 8];
            found.copy_from_slice(&b[0..8]);
            return Err(BankError::BadMagic { found });
        }
        let major = u16_at(b, 8);
        let minor = u16_at(b, 10);
        if major != FORMAT_MAJOR {
            return Err(BankError::UnsupportedVersion { major, minor });
        }
        let stored = u32_at(b, 60);
        let actual = crc32fast::hash(&b[0..60]);
        if stored != actual {
            return Err(BankError::Checksum {
                what: "header".into(),
                stored,
                actual,
            });
        }
        Ok(Self {
            major,
            minor,
            file_len: u64_at(b, 16),
            manifest_offset: u64_at(b, 24),
            manifest_len: u32_at(b, 32),
            manifest_crc: u32_at(b, 36),
            table_offset: u64_at(b, 40),
            table_entries: u32_at(b, 48),
            table_crc: u32_at(b, 52),
        })
    }
}

/// Kind of a section (the `kind` field of a table entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SectionKind {
    /// Per-layer quantizer blob (opaque bytes), chunk 0.
    Quantizer,
    /// Per-layer PQ codes of one row chunk: `[rows_in_chunk, code_bytes]` u8.
    Codes,
    /// Per-layer refinement data of one row chunk: `[rows_in_chunk, refine_bytes]` u8.
    Refine,
    /// Row metadata of one row chunk (all layers share it): `[rows_in_chunk]` × 20 bytes.
    RowMeta,
    /// One deflate-compressed block of sentences.
    SentenceBlock,
    /// v1.1, optional: per-layer exact vectors of one row chunk, one
    /// [`exact_row_len`]-byte record per row (`d` f16 + the record's CRC-32),
    /// read row by row to rerank candidates (code `0x8001`: a v1.0 reader
    /// skips it).
    ExactRows,
    /// A kind unknown to this reader with the "optional" bit (0x8000) set:
    /// added by a later minor version and ignored here.
    Optional(u16),
}

impl SectionKind {
    /// The on-disk code, or `None` for a kind this reader must refuse.
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(Self::Quantizer),
            2 => Some(Self::Codes),
            3 => Some(Self::Refine),
            4 => Some(Self::RowMeta),
            5 => Some(Self::SentenceBlock),
            EXACT_ROWS_CODE => Some(Self::ExactRows),
            c if c & 0x8000 != 0 => Some(Self::Optional(c)),
            _ => None,
        }
    }

    /// The on-disk code.
    pub fn code(self) -> u16 {
        match self {
            Self::Quantizer => 1,
            Self::Codes => 2,
            Self::Refine => 3,
            Self::RowMeta => 4,
            Self::SentenceBlock => 5,
            Self::ExactRows => EXACT_ROWS_CODE,
            Self::Optional(c) => c,
        }
    }

    /// Whether the `slot` field names a bank layer (otherwise it must be 0).
    pub fn per_layer(self) -> bool {
        matches!(self, Self::Quantizer | Self::Codes | Self::Refine | Self::ExactRows)
    }
}

/// On-disk code of [`SectionKind::ExactRows`] (optional bit set).
pub const EXACT_ROWS_CODE: u16 = 0x8001;

/// Bytes of one exact-row record for hidden size `d`: `d` little-endian f16
/// then the CRC-32 of those `2d` bytes.
pub fn exact_row_len(d: usize) -> usize {
    2 * d + 4
}

/// Encodes one vector as an exact-row record (f16, round to nearest, + CRC-32).
pub fn encode_exact_row(v: &[f32], out: &mut Vec<u8>) {
    let start = out.len();
    for &x in v {
        out.extend_from_slice(&half::f16::from_f32(x).to_le_bytes());
    }
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Decodes an exact-row record of hidden size `d`; `None` when its length
/// or checksum is wrong.
pub fn decode_exact_row(rec: &[u8], d: usize) -> Option<Vec<f32>> {
    if rec.len() != exact_row_len(d) {
        return None;
    }
    let (vals, crc) = rec.split_at(2 * d);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(vals) != stored {
        return None;
    }
    Some(vals.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect())
}

/// One 32-byte section-table entry (see docs/bank-format.md, "Section table").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionEntry {
    /// What the section holds.
    pub kind: SectionKind,
    /// Bank-layer slot (index into `manifest.layers`) for per-layer kinds, else 0.
    pub slot: u16,
    /// Row-chunk index (codes, refine, row metadata), block index (sentences), else 0.
    pub chunk: u32,
    /// Byte offset of the section in the file.
    pub offset: u64,
    /// Length of the section in bytes.
    pub len: u64,
    /// CRC-32 of the section bytes.
    pub crc: u32,
    /// Kind-specific: decompressed length of a sentence block, else 0.
    pub aux: u32,
}

impl SectionEntry {
    /// Encodes into 32 bytes.
    pub fn encode(&self) -> [u8; SECTION_ENTRY_LEN] {
        let mut b = [0u8; SECTION_ENTRY_LEN];
        b[0..2].copy_from_slice(&self.kind.code().to_le_bytes());
        b[2..4].copy_from_slice(&self.slot.to_le_bytes());
        b[4..8].copy_from_slice(&self.chunk.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b[24..28].copy_from_slice(&self.crc.to_le_bytes());
        b[28..32].copy_from_slice(&self.aux.to_le_bytes());
        b
    }

    /// Decodes entry number `index` from its 32 bytes.
    pub fn decode(b: &[u8], index: usize) -> Result<Self, BankError> {
        if b.len() < SECTION_ENTRY_LEN {
            return Err(BankError::Truncated {
                what: format!("section table entry {index}"),
                expected: SECTION_ENTRY_LEN as u64,
                actual: b.len() as u64,
            });
        }
        let code = u16_at(b, 0);
        let kind =
            SectionKind::from_code(code).ok_or(BankError::UnknownSection { index, kind: code })?;
        Ok(Self {
            kind,
            slot: u16_at(b, 2),
            chunk: u32_at(b, 4),
            offset: u64_at(b, 8),
            len: u64_at(b, 16),
            crc: u32_at(b, 24),
            aux: u32_at(b, 28),
        })
    }

    /// `offset + len`, or `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }
}

/// Which model the bank was built with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Human-readable model name, e.g. `"HuggingFaceTB/SmolLM2-135M-Instruct"`.
    pub name: String,
    /// Model fingerprint (tokenizer + embedding digest); a bank refuses a
    /// model whose fingerprint differs.
    pub fingerprint: String,
}

/// Where the bank's sentences came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusInfo {
    /// Short name, e.g. `"wordnet-3.0-glosses"`.
    pub name: String,
    /// Free-text description (source, filtering, licence).
    pub description: String,
}

/// How the vectors were quantized. The bank only checks the byte counts;
/// `kind` and `params` belong to the quantizer (see `bank::pq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizerInfo {
    /// Quantizer kind, e.g. `"pq"`, `"opq"`.
    pub kind: String,
    /// Kind-specific parameters (a JSON object), for display and checks.
    pub params: serde_json::Value,
    /// Code bytes per row and layer (M).
    pub code_bytes: u32,
    /// Refinement bytes per row and layer (0: no refinement sections).
    pub refine_bytes: u32,
}

/// The tool that wrote the bank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// Tool name, e.g. `"latentlens"`.
    pub name: String,
    /// Tool version, e.g. `"0.1.0"`.
    pub version: String,
}

/// The bank manifest, stored as UTF-8 JSON (see docs/bank-format.md, "Manifest").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankManifest {
    /// The model the bank was built with.
    pub model: ModelInfo,
    /// Hidden size `d` of the model (dimension of the quantized vectors).
    pub hidden_size: u32,
    /// LLM layer index of each bank-layer slot (HF convention: 0 = embeddings).
    pub layers: Vec<u32>,
    /// Number of rows (the same rows in every bank layer).
    pub rows: u64,
    /// Rows per chunk of codes / refinement / row metadata (the last chunk may be shorter).
    pub rows_per_chunk: u32,
    /// Number of sentences.
    pub sentences: u64,
    /// Sentences per compressed block (the last block may be shorter).
    pub sentences_per_block: u32,
    /// The text corpus.
    pub corpus: CorpusInfo,
    /// The quantizer.
    pub quantizer: QuantizerInfo,
    /// The tool that wrote the bank.
    pub tool: ToolInfo,
    /// v1.1: exact vectors stored beside the codes (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<ExactInfo>,
}

/// The exact vectors of a v1.1 bank: every row of every layer as an
/// L2-normalised f16 record, read row by row to rerank search candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExactInfo {
    /// Element type; only `"f16"` exists.
    pub dtype: String,
}

fn manifest_err(msg: impl Into<String>) -> BankError {
    BankError::Manifest(msg.into())
}

impl BankManifest {
    /// Parses manifest JSON and checks it with [`validate`](Self::validate).
    pub fn from_json(bytes: &[u8]) -> Result<Self, BankError> {
        let m: Self = serde_json::from_slice(bytes)
            .map_err(|e| manifest_err(format!("not valid manifest JSON: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    /// Serialises to compact JSON (deterministic: struct field order, sorted object keys of `params`).
    pub fn to_json(&self) -> Result<Vec<u8>, BankError> {
        serde_json::to_vec(self)
            .map_err(|e| manifest_err(format!("cannot serialise manifest: {e}")))
    }

    /// Checks every field for presence and sanity and every derived count
    /// against [`limits`], so later arithmetic cannot overflow.
    pub fn validate(&self) -> Result<(), BankError> {
        use limits::*;
        if self.model.fingerprint.is_empty() {
            return Err(manifest_err("model.fingerprint is empty"));
        }
        if self.tool.name.is_empty() {
            return Err(manifest_err("tool.name is empty"));
        }
        if self.quantizer.kind.is_empty() {
            return Err(manifest_err("quantizer.kind is empty"));
        }
        if !self.quantizer.params.is_object() {
            return Err(manifest_err("quantizer.params must be a JSON object"));
        }
        if self.hidden_size == 0 || self.hidden_size > MAX_HIDDEN_SIZE {
            return Err(manifest_err(format!(
                "hidden_size {} is not in 1..={MAX_HIDDEN_SIZE}",
                self.hidden_size
            )));
        }
        if self.layers.is_empty() || self.layers.len() > MAX_LAYERS {
            return Err(manifest_err(format!(
                "{} bank layers, expected 1..={MAX_LAYERS}",
                self.layers.len()
            )));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if self.layers[..i].contains(l) {
                return Err(manifest_err(format!("layer {l} is listed twice in layers")));
            }
        }
        if self.rows == 0 || self.rows > MAX_ROWS {
            return Err(manifest_err(format!(
                "rows {} is not in 1..={MAX_ROWS}",
                self.rows
            )));
        }
        if self.rows_per_chunk == 0 || self.rows_per_chunk > MAX_ROWS_PER_CHUNK {
            return Err(manifest_err(format!(
                "rows_per_chunk {} is not in 1..={MAX_ROWS_PER_CHUNK}",
                self.rows_per_chunk
            )));
        }
        if self.sentences == 0 || self.sentences > MAX_SENTENCES {
            return Err(manifest_err(format!(
                "sentences {} is not in 1..={MAX_SENTENCES}",
                self.sentences
            )));
        }
        if self.sentences_per_block == 0 || self.sentences_per_block > MAX_SENTENCES_PER_BLOCK {
            return Err(manifest_err(format!(
                "sentences_per_block {} is not in 1..={MAX_SENTENCES_PER_BLOCK}",
                self.sentences_per_block
            )));
        }
        let q = &self.quantizer;
        if q.code_bytes == 0 || q.code_bytes > MAX_CODE_BYTES {
            return Err(manifest_err(format!(
                "quantizer.code_bytes {} is not in 1..={MAX_CODE_BYTES}",
                q.code_bytes
            )));
        }
        if q.refine_bytes > MAX_REFINE_BYTES {
            return Err(manifest_err(format!(
                "quantizer.refine_bytes {} is not in 0..={MAX_REFINE_BYTES}",
                q.refine_bytes
            )));
        }
        let rpc = u64::from(self.rows_per_chunk);
        let widest = u64::from(q.code_bytes.max(q.refine_bytes)).max(ROW_META_LEN as u64);
        if rpc * widest > MAX_CHUNK_LEN {
            return Err(manifest_err(format!(
                "rows_per_chunk {rpc} × {widest} bytes per row exceeds the {MAX_CHUNK_LEN}-byte chunk limit"
            )));
        }
        if let Some(x) = &self.exact {
            if x.dtype != "f16" {
                return Err(manifest_err(format!("exact.dtype {:?} is not supported (only \"f16\")", x.dtype)));
            }
            let rec = exact_row_len(self.hidden_size as usize) as u64;
            if rpc * rec > MAX_CHUNK_LEN {
                return Err(manifest_err(format!(
                    "rows_per_chunk {rpc} × {rec} exact-row bytes exceeds the {MAX_CHUNK_LEN}-byte chunk limit"
                )));
            }
        }
        let expected = self.layout().expected_sections();
        if expected > MAX_SECTIONS {
            return Err(manifest_err(format!(
                "the manifest implies {expected} sections, more than the limit of {MAX_SECTIONS}; \
                 use larger rows_per_chunk / sentences_per_block"
            )));
        }
        Ok(())
    }

    /// Derived counts. Only meaningful on a validated manifest (all bounded
    /// there, so no arithmetic here overflows).
    pub fn layout(&self) -> Layout {
        let n_chunks = self.rows.div_ceil(u64::from(self.rows_per_chunk.max(1)));
        let n_blocks = self
            .sentences
            .div_ceil(u64::from(self.sentences_per_block.max(1)));
        Layout {
            n_layers: self.layers.len() as u64,
            n_chunks,
            n_blocks,
            has_refine: self.quantizer.refine_bytes > 0,
            has_exact: self.exact.is_some(),
        }
    }

    /// Rows `[start, end)` of chunk `chunk` (empty if past the last chunk).
    pub fn chunk_rows(&self, chunk: u64) -> std::ops::Range<u64> {
        let rpc = u64::from(self.rows_per_chunk);
        let start = chunk.saturating_mul(rpc).min(self.rows);
        let end = start.saturating_add(rpc).min(self.rows);
        start..end
    }

    /// Sentence ids `[start, end)` of block `block` (empty if past the last block).
    pub fn block_sentences(&self, block: u64) -> std::ops::Range<u64> {
        let spb = u64::from(self.sentences_per_block);
        let start = block.saturating_mul(spb).min(self.sentences);
        let end = start.saturating_add(spb).min(self.sentences);
        start..end
    }
}

/// Section counts implied by a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bank-layer slots.
    pub n_layers: u64,
    /// Row chunks.
    pub n_chunks: u64,
    /// Sentence blocks.
    pub n_blocks: u64,
    /// Whether refinement sections exist.
    pub has_refine: bool,
    /// Whether exact-row sections exist (v1.1).
    pub has_exact: bool,
}

impl Layout {
    /// Number of sections a v1.0 file must have (saturating; compared with limits).
    pub fn expected_sections(&self) -> u64 {
        let per_layer_chunks = 1 + u64::from(self.has_refine) + u64::from(self.has_exact);
        let per_layer = 1u64.saturating_add(self.n_chunks.saturating_mul(per_layer_chunks));
        self.n_layers
            .saturating_mul(per_layer)
            .saturating_add(self.n_chunks)
            .saturating_add(self.n_blocks)
    }
}

/// Metadata of one bank row (one token occurrence in one sentence), the same
/// for every bank layer. Stored as 20 bytes: five little-endian u32 in field order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RowMeta {
    /// Token id in the model's tokenizer.
    pub token_id: u32,
    /// Sentence id (index into the bank's sentences).
    pub sentence_id: u32,
    /// Start of the token's text in its sentence, in UTF-8 bytes (inclusive).
    pub span_start: u32,
    /// End of the token's text in its sentence, in UTF-8 bytes (exclusive).
    pub span_end: u32,
    /// Position of the token in the model input sequence of its sentence (0-based).
    pub position: u32,
}

impl RowMeta {
    /// Encodes into 20 bytes.
    pub fn encode(&self) -> [u8; ROW_META_LEN] {
        let mut b = [0u8; ROW_META_LEN];
        b[0..4].copy_from_slice(&self.token_id.to_le_bytes());
        b[4..8].copy_from_slice(&self.sentence_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.span_start.to_le_bytes());
        b[12..16].copy_from_slice(&self.span_end.to_le_bytes());
        b[16..20].copy_from_slice(&self.position.to_le_bytes());
        b
    }

    /// Decodes from (at least) 20 bytes; missing bytes read as zero (callers pass exact records).
    pub fn decode(b: &[u8]) -> Self {
        Self {
            token_id: u32_at(b, 0),
            sentence_id: u32_at(b, 4),
            span_start: u32_at(b, 8),
            span_end: u32_at(b, 12),
            position: u32_at(b, 16),
        }
    }

    /// The token's text within its sentence, or `None` if the span is not
    /// a valid UTF-8 range of `sentence` (out of bounds or mid-character).
    pub fn span_in<'s>(&self, sentence: &'s str) -> Option<&'s str> {
        sentence.get(self.span_start as usize..self.span_end as usize)
    }
}
