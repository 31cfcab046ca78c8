//! The contextual bank: file format, reader, writer, product quantizer.
//! See docs/bank-format.md.

pub mod builder;
pub mod pq;

/// Errors of reading, validating or writing a bank.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("invalid bank: {0}")]
    Invalid(String),
}
