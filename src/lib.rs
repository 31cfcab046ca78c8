//! # latentlens
//!
//! LatentLens (Krojer et al., 2026) in Rust and WebAssembly: read what a
//! vision-language model "sees" in each image patch by comparing the hidden
//! state of every visual token, at any LLM layer, with a bank of *contextual*
//! text embeddings (the same LLM's hidden states of real words in real
//! sentences), next to the EmbeddingLens and LogitLens baselines.
//!
//! ## Data path (one module per stage, in order)
//! ```text
//! image ─▶ image::      preprocess (resize, tiles, normalise; HF processor parity)
//!       ─▶ model::      vision tower ─▶ connector ─▶ LLM layers 0..L ─▶ HiddenStates
//!       ─▶ search::     cosine top-k over the bank (exact / PQ, CPU / gpu::)
//!       ─▶ lens::       LatentLens / EmbeddingLens / LogitLens readout
//! corpus ─▶ model:: ─▶ bank:: (PQ-compressed contextual bank file) ─▶ fetch:: (byte ranges)
//! ```
//!
//! ## Module map
//! - [`error`]: one small error enum per domain, and the crate [`Result`].
//! - [`fetch`]: byte-range sources (local file now; HTTP Range in the browser).
//! - [`bank`]: the bank file format (reader, writer), product quantizer.
//! - [`search`]: exact and PQ cosine top-k, cross-layer merge, on the CPU.
//! - [`gpu`]: wgpu context and WGSL kernels, each with a plain-Rust twin.
//! - `backend` (feature `gpu`): the text-model forward on our WGSL kernels.
//! - [`image`]: decoding and preprocessing of images.
//! - [`model`]: configs, weights, tokenizers, model families, `HiddenStates`.
//! - [`lens`]: LatentLens, EmbeddingLens, LogitLens and the word readout.
//! - `wasm` (wasm32 with feature gpu): the `#[wasm_bindgen]` surface used by the npm package and the page.

#[cfg(feature = "gpu")]
pub mod backend;
pub mod bank;
pub mod error;
pub mod eval;
pub mod fetch;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod image;
pub mod lens;
pub mod model;
pub mod search;
#[cfg(all(target_arch = "wasm32", feature = "gpu"))]
pub mod wasm;

pub use error::{Error, Result};
