//! Errors: one small enum per domain (defined next to its domain), gathered
//! here into the crate-level [`Error`]. Messages say what was wrong and what
//! to do about it.

pub use crate::bank::BankError;
pub use crate::fetch::FetchError;
#[cfg(feature = "gpu")]
pub use crate::gpu::GpuError;
pub use crate::image::ImageError;
pub use crate::model::ModelError;
pub use crate::search::SearchError;

/// Any error of the crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bank(#[from] BankError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[cfg(feature = "gpu")]
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Search(#[from] SearchError),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
