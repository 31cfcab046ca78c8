//! The contextual bank: file format, reader, writer, product quantizer.
//!
//! A bank is one file holding, for several LLM layers, the product-quantized
//! hidden states of real words in real sentences (LatentLens, Krojer et al.
//! 2026), the per-row metadata linking each row to its token and sentence,
//! and the sentences themselves. The layout (docs/bank-format.md) is made for
//! HTTP Range access: header + manifest + section table come in one or two
//! small reads, codes come in row chunks so search can start on the first,
//! and a sentence is one range read of its compressed block.
//!
//! - [`format`]: header, manifest, section table, row metadata, limits.
//! - [`reader`]: [`BankReader`] over any [`crate::fetch::ByteSource`], validating everything.
//! - [`writer`]: [`BankWriter`], deterministic output.
//! - [`sentences`]: compressed sentence blocks.
//! - [`pq`]: the product quantizer (its blobs are opaque bytes to this module).

pub mod assemble;
pub mod builder;
pub mod format;
pub mod pq;
pub mod reader;
pub mod sentences;
pub mod writer;

pub use format::{
    BankManifest, CorpusInfo, ModelInfo, QuantizerInfo, RowMeta, SectionEntry, SectionKind,
    ToolInfo,
};
pub use reader::BankReader;
pub use writer::{BankWriter, LayerData};

use crate::fetch::FetchError;

fn version_message(major: u16, minor: u16) -> String {
    let ours = env!("CARGO_PKG_VERSION");
    let hint = if major > format::FORMAT_MAJOR {
        format!("this bank needs a newer latentlens that reads bank format v{major}: upgrade latentlens")
    } else {
        "rebuild the bank with this latentlens".to_string()
    };
    format!(
        "bank format v{major}.{minor} is not supported: latentlens {ours} reads bank format v{}.x; {hint}",
        format::FORMAT_MAJOR
    )
}

/// Errors of reading, validating or writing a bank. Messages name the
/// problem and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The byte source failed.
    #[error("cannot read the bank: {0}")]
    Fetch(#[from] FetchError),
    /// The file ends before a structure it declares.
    #[error(
        "bank file is truncated: the {what} needs {expected} bytes but only {actual} are there; re-download the bank"
    )]
    Truncated {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// The header's recorded file length differs from the source's length.
    #[error(
        "bank header records a {recorded}-byte file but the source has {actual} bytes: \
         the download is incomplete or the file was altered; re-download the bank"
    )]
    SizeMismatch { recorded: u64, actual: u64 },
    /// Not a bank file at all.
    #[error("not a latentlens bank file (first bytes {found:02x?}); check the path or URL")]
    BadMagic { found: [u8; 8] },
    /// A bank format major version this crate does not read.
    #[error("{}", version_message(*major, *minor))]
    UnsupportedVersion { major: u16, minor: u16 },
    /// A stored CRC-32 differs from the data's.
    #[error(
        "checksum mismatch in the {what} (stored {stored:08x}, computed {actual:08x}): \
         the bank file is corrupt; re-download it"
    )]
    Checksum {
        what: String,
        stored: u32,
        actual: u32,
    },
    /// The manifest is not valid JSON, misses fields, or holds insane values.
    #[error("bank manifest is invalid: {0}; the file is corrupt or not written by latentlens: re-download or rebuild the bank")]
    Manifest(String),
    /// The section table disagrees with itself, the file or the manifest.
    #[error("bank section table is inconsistent: {0}; the file is corrupt: re-download or rebuild the bank")]
    Layout(String),
    /// A required section kind unknown to this version.
    #[error(
        "section table entry {index} has kind {kind}, unknown to latentlens {}: \
         upgrade latentlens or rebuild the bank",
        env!("CARGO_PKG_VERSION")
    )]
    UnknownSection { index: usize, kind: u16 },
    /// Section content that passed its checksum but is inconsistent.
    #[error("bank data is corrupt: {0}; re-download or rebuild the bank")]
    Corrupt(String),
    /// The caller asked for a layer slot, chunk or sentence the bank lacks.
    #[error("{what} {index} is out of range: the bank has {count}")]
    OutOfRange {
        what: &'static str,
        index: u64,
        count: u64,
    },
    /// Refinement data was asked for but the bank has none.
    #[error("this bank has no refinement data (quantizer.refine_bytes = 0); rebuild it with refinement to rerank")]
    NoRefinement,
    /// The writer was given inconsistent data.
    #[error("cannot write the bank: {0}")]
    InvalidInput(String),
    /// The writer's output failed.
    #[error("i/o error writing the bank: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else that makes a bank unusable (e.g. a quantizer blob its decoder refuses).
    #[error("invalid bank: {0}")]
    Invalid(String),
}
