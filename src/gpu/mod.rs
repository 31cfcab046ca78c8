//! wgpu context and WGSL kernels; each kernel has a plain-Rust twin.

/// Errors of the GPU path.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
}
