//! Embedding lookup from an f32 or block-quantised table (`shaders/embed.wgsl`), dequantised in
//! the shader; CPU twin [`embed_reference`]. Tables larger than the binding limit are split by
//! rows; each part writes the tokens whose id falls in it.

use super::forward::{u32_of, ForwardKernels, FwdKernel};
use super::matmul::{upload_row_parts, Part};
use super::quant::{HostMatrix, WeightFormat};
use super::{FieldOffsets, GpuError};

/// Uniform params of `embed.wgsl` (`struct EmbedParams`, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EmbedParams {
    pub t: u32,
    pub d: u32,
    pub fmt: u32,
    pub row0: u32,
    pub rows: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

impl EmbedParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("t", std::mem::offset_of!(EmbedParams, t)),
        ("d", std::mem::offset_of!(EmbedParams, d)),
        ("fmt", std::mem::offset_of!(EmbedParams, fmt)),
        ("row0", std::mem::offset_of!(EmbedParams, row0)),
        ("rows", std::mem::offset_of!(EmbedParams, rows)),
        ("_pad0", std::mem::offset_of!(EmbedParams, _pad0)),
        ("_pad1", std::mem::offset_of!(EmbedParams, _pad1)),
        ("_pad2", std::mem::offset_of!(EmbedParams, _pad2)),
    ];
}

/// An embedding table `[vocab, d]` on the GPU.
#[derive(Debug)]
pub struct GpuEmbedding {
    /// Rows.
    pub vocab: usize,
    /// Width.
    pub d: usize,
    /// Storage format.
    pub format: WeightFormat,
    parts: Vec<Part>,
}

impl GpuEmbedding {
    /// Upload `m` (`[vocab, d]`), split into row ranges within the binding limit.
    pub fn upload(fk: &ForwardKernels, m: &HostMatrix) -> Result<Self, GpuError> {
        let parts = upload_row_parts(fk, m, ["embedding", "embedding scales"])?;
        Ok(GpuEmbedding { vocab: m.n, d: m.k, format: m.format, parts })
    }

    /// Number of row parts.
    pub fn num_parts(&self) -> usize {
        self.parts.len()
    }

    /// Record the lookup of `t` ids (`ids` buffer, already range-checked) into `out` `[t, d]`.
    pub fn record(&self, fk: &ForwardKernels, enc: &mut wgpu::CommandEncoder, ids: &wgpu::Buffer, t: usize, out: &wgpu::Buffer) -> Result<(), GpuError> {
        let groups = fk.groups_1d((t * self.d) as u64)?;
        for p in &self.parts {
            let params = EmbedParams {
                t: u32_of(t, "tokens")?,
                d: u32_of(self.d, "d")?,
                fmt: self.format as u32,
                row0: u32_of(p.row0, "row")?,
                rows: u32_of(p.rows, "rows")?,
                _pad0: 0,
                _pad1: 0,
                _pad2: 0,
            };
            fk.dispatch(enc, FwdKernel::Embed, &params, &[ids, &p.q, &p.s, out], groups)?;
        }
        Ok(())
    }

    /// Check ids against the vocabulary (before they reach a kernel).
    pub fn check_ids(&self, ids: &[u32]) -> Result<(), GpuError> {
        if ids.is_empty() {
            return Err(GpuError::InvalidInput("no token ids".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.vocab) {
            return Err(GpuError::InvalidInput(format!(
                "token id {bad} is outside the vocabulary (size {}): wrong tokenizer for this model?",
                self.vocab
            )));
        }
        Ok(())
    }
}

/// Upload the table and ids, look up, read back `[ids.len(), d]`.
pub async fn embed_once(fk: &ForwardKernels, table: &HostMatrix, ids: &[u32]) -> Result<Vec<f32>, GpuError> {
    let e = GpuEmbedding::upload(fk, table)?;
    e.check_ids(ids)?;
    let ib = fk.upload_words("embed ids", ids)?;
    let n = (ids.len() * table.k) as u64;
    let ob = fk.buffer_f32("embed out", n)?;
    let (mut enc, scopes) = fk.begin("embed");
    e.record(fk, &mut enc, &ib, ids.len(), &ob)?;
    fk.finish_read("embed", scopes, enc, &ob, n).await
}

/// CPU twin: rows `ids` of the dequantised table.
pub fn embed_reference(table: &HostMatrix, ids: &[u32]) -> Result<Vec<f32>, GpuError> {
    let mut out = Vec::with_capacity(ids.len() * table.k);
    for &id in ids {
        if id as usize >= table.n {
            return Err(GpuError::InvalidInput(format!("token id {id} outside the vocabulary ({})", table.n)));
        }
        out.extend((0..table.k).map(|c| table.get(id as usize, c)));
    }
    Ok(out)
}
