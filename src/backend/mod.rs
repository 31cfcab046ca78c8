//! Compute backends that produce [`crate::model::HiddenStates`] other than the candle CPU path
//! of [`crate::model`].
//!
//! - [`wgsl`] (feature `gpu`): our own WGSL kernels on wgpu (WebGPU in the browser, Vulkan /
//!   Metal / DX12 natively; lavapipe without a GPU). Same `HiddenStates` as the CPU path.

#[cfg(feature = "gpu")]
pub mod wgsl;
