//! `HiddenStates`: the output every compute path returns for one input, and
//! the one interface the lenses read.
//!
//! Convention (same as HF transformers' `output_hidden_states=True`):
//! `layers[0]` is the input embedding (the residual stream before layer 1),
//! `layers[i]` the residual stream after decoder layer `i`, and the last
//! entry is what transformers returns there (for Llama-family models:
//! after the final norm). So there are `num_hidden_layers + 1` entries.

use serde::{Deserialize, Serialize};

/// Where one visual token comes from in the original image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PatchGeometry {
    /// Tile index (0 for single-image models; for tiled processors the
    /// tiles in processor order, the downscaled global image last).
    pub tile: u32,
    /// Row and column of the token in its tile's token grid.
    pub row: u32,
    pub col: u32,
    /// Pixel rectangle in the ORIGINAL image, `[x0, y0, x1, y1)`.
    pub rect: [f32; 4],
}

/// Hidden states of every LLM layer for one input (image + prompt, or text).
#[derive(Debug, Clone)]
pub struct HiddenStates {
    /// Hidden size `d`.
    pub hidden_size: usize,
    /// Token ids of the sequence (image placeholder ids included).
    pub token_ids: Vec<u32>,
    /// Per layer `0..=L`: row-major `[tokens × d]` f32.
    pub layers: Vec<Vec<f32>>,
    /// Sequence positions (rows) that hold visual tokens, in patch order.
    pub visual_rows: Vec<usize>,
    /// Geometry of each visual token, parallel to `visual_rows`.
    pub patches: Vec<PatchGeometry>,
}

impl HiddenStates {
    /// Number of tokens in the sequence.
    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// Number of layers stored (`L + 1`).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Row `token` of layer `layer`, or `None` when out of range.
    pub fn row(&self, layer: usize, token: usize) -> Option<&[f32]> {
        let d = self.hidden_size;
        self.layers.get(layer)?.get(token * d..(token + 1) * d)
    }
}
