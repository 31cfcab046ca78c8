//! Compute backends that produce [`crate::model::HiddenStates`] other than the candle CPU path
//! of [`crate::model`].
//!
//! - [`wgsl`] (feature `gpu`): our own WGSL kernels on wgpu (WebGPU in the browser, Vulkan /
//!   Metal / DX12 natively; lavapipe without a GPU). Same `HiddenStates` as the CPU path.
//! - [`wgsl_vision`] (feature `gpu`): the VLM vision towers and connectors on the same kernels,
//!   and `WgslVlm` (image features + the text decoder).
//! - [`wgsl_effnet`], [`wgsl_controlled`] (feature `gpu`): EfficientNet-Lite0 on the same
//!   kernels, and the controlled VLM whole (vision encoder, connector, decoder).

#[cfg(feature = "gpu")]
pub mod wgsl;
#[cfg(feature = "gpu")]
pub mod wgsl_controlled;
#[cfg(feature = "gpu")]
pub mod wgsl_effnet;
#[cfg(feature = "gpu")]
pub mod wgsl_vision;
