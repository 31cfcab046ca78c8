//! The three lenses — LatentLens (contextual bank), EmbeddingLens (input
//! embedding matrix), LogitLens (final norm + unembedding) — and the readout
//! that turns their hits into words.

pub mod readout;
