//! PQ lookup-table construction (`shaders/lut.wgsl`) and its CPU twin.
//!
//! `LUT[q][j][c] = dot(query_q[off_j .. off_j + dsub], C_j[c])` (CONTRACT: ADC on inner product;
//! Jégou et al., "Product quantization for nearest neighbor search", 2011). The sub-space offset
//! of code byte `j` is `j * dsub` for plain PQ; explicit offsets let residual stages reuse the
//! sub-spaces of the first stage. OPQ rotations are applied to the query by the caller.

use super::{bytes_of_count, f32s_from_bytes, FieldOffsets, GpuContext, GpuError, Kernel};

/// Uniform params of `lut.wgsl` (`struct LutParams`, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LutParams {
    pub nq: u32,
    pub d: u32,
    pub m: u32,
    pub m_pad: u32,
    pub dsub: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

impl LutParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("nq", std::mem::offset_of!(LutParams, nq)),
        ("d", std::mem::offset_of!(LutParams, d)),
        ("m", std::mem::offset_of!(LutParams, m)),
        ("m_pad", std::mem::offset_of!(LutParams, m_pad)),
        ("dsub", std::mem::offset_of!(LutParams, dsub)),
        ("_pad0", std::mem::offset_of!(LutParams, _pad0)),
        ("_pad1", std::mem::offset_of!(LutParams, _pad1)),
        ("_pad2", std::mem::offset_of!(LutParams, _pad2)),
    ];
}

/// The codebooks of one layer's quantizer, CONTRACT layout.
#[derive(Clone, Copy, Debug)]
pub struct PqCodebooks<'a> {
    /// Query dimension.
    pub d: usize,
    /// Code bytes per row (M).
    pub m: usize,
    /// Sub-vector dimension.
    pub dsub: usize,
    /// Centroids `[m, 256, dsub]` f32.
    pub centroids: &'a [f32],
    /// Start of byte j's sub-space in the query, `[m]`; `None` means `j * dsub`.
    pub offsets: Option<&'a [u32]>,
}

impl PqCodebooks<'_> {
    /// M rounded up to a multiple of 4 (codes are packed 4 per u32).
    pub fn m_pad(&self) -> usize {
        self.m.div_ceil(4) * 4
    }

    /// Sub-space offsets, `[m]`.
    pub fn offsets_vec(&self) -> Vec<u32> {
        match self.offsets {
            Some(o) => o.to_vec(),
            None => (0..self.m).map(|j| (j * self.dsub) as u32).collect(),
        }
    }

    /// Check every size and offset (the data may come from a file).
    pub fn validate(&self) -> Result<(), GpuError> {
        let bad = |m: String| Err(GpuError::InvalidInput(m));
        if self.m == 0 || self.dsub == 0 || self.d == 0 {
            return bad(format!(
                "codebooks need m, dsub, d > 0 (m={}, dsub={}, d={})",
                self.m, self.dsub, self.d
            ));
        }
        if self.d > u32::MAX as usize / 2 || self.m > 65535 {
            return bad(format!("codebooks too large (m={}, d={})", self.m, self.d));
        }
        let want = self
            .m
            .checked_mul(256)
            .and_then(|x| x.checked_mul(self.dsub));
        if want != Some(self.centroids.len()) {
            return bad(format!(
                "centroids hold {} floats, [m={}, 256, dsub={}] needs {:?}",
                self.centroids.len(),
                self.m,
                self.dsub,
                want
            ));
        }
        let offs = self.offsets_vec();
        if offs.len() != self.m {
            return bad(format!(
                "{} sub-space offsets for m = {}",
                offs.len(),
                self.m
            ));
        }
        for (j, &o) in offs.iter().enumerate() {
            if o as usize + self.dsub > self.d {
                return bad(format!(
                    "code byte {j}: sub-space [{o}, {}) exceeds d = {}",
                    o as usize + self.dsub,
                    self.d
                ));
            }
        }
        Ok(())
    }
}

/// CPU twin of `lut.wgsl`: `[nq, m, 256]` (no padding). Sums in the kernel's order.
pub fn build_luts_reference(
    queries: &[f32],
    nq: usize,
    books: &PqCodebooks,
) -> Result<Vec<f32>, GpuError> {
    books.validate()?;
    check_queries(queries, nq, books.d)?;
    let offs = books.offsets_vec();
    let (m, dsub, d) = (books.m, books.dsub, books.d);
    let mut lut = vec![0f32; nq * m * 256];
    for q in 0..nq {
        for (j, &off) in offs.iter().enumerate() {
            let qs = &queries[q * d + off as usize..q * d + off as usize + dsub];
            for c in 0..256 {
                let cent = &books.centroids[(j * 256 + c) * dsub..(j * 256 + c + 1) * dsub];
                let mut acc = 0f32;
                for t in 0..dsub {
                    acc += qs[t] * cent[t];
                }
                lut[(q * m + j) * 256 + c] = acc;
            }
        }
    }
    Ok(lut)
}

pub(crate) fn check_queries(queries: &[f32], nq: usize, d: usize) -> Result<(), GpuError> {
    if nq.checked_mul(d) != Some(queries.len()) {
        return Err(GpuError::InvalidInput(format!(
            "{} query floats for nq = {nq}, d = {d} (need nq * d)",
            queries.len()
        )));
    }
    Ok(())
}

/// Codebooks uploaded once: centroids and offsets buffers.
pub(crate) struct LutTables {
    pub centroids: wgpu::Buffer,
    pub offsets: wgpu::Buffer,
    pub d: u32,
    pub m: u32,
    pub m_pad: u32,
    pub dsub: u32,
}

impl LutTables {
    pub fn upload(ctx: &GpuContext, books: &PqCodebooks) -> Result<Self, GpuError> {
        books.validate()?;
        let cbytes = bytes_of_count(books.centroids.len(), 4, "centroids")?;
        ctx.check_binding("centroids", cbytes)?;
        Ok(LutTables {
            centroids: ctx.storage_init("pq centroids", bytemuck::cast_slice(books.centroids)),
            offsets: ctx.storage_init("pq offsets", bytemuck::cast_slice(&books.offsets_vec())),
            d: books.d as u32,
            m: books.m as u32,
            m_pad: books.m_pad() as u32,
            dsub: books.dsub as u32,
        })
    }

    /// Bytes of the LUT of one query (`[m_pad, 256]` f32).
    pub fn lut_bytes_per_query(&self) -> u64 {
        self.m_pad as u64 * 256 * 4
    }

    /// Record the LUT build for `nq` queries already in `queries` (`[nq, d]`); returns the LUT
    /// buffer `[nq, m_pad, 256]`.
    pub fn encode(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        queries: &wgpu::Buffer,
        nq: u32,
    ) -> Result<wgpu::Buffer, GpuError> {
        let bytes = self.lut_bytes_per_query() * nq as u64;
        ctx.check_binding("lookup tables", bytes)?;
        let lut = ctx.storage_out("pq lut", bytes);
        let params = LutParams {
            nq,
            d: self.d,
            m: self.m,
            m_pad: self.m_pad,
            dsub: self.dsub,
            ..bytemuck::Zeroable::zeroed()
        };
        let ubuf = ctx.uniform_init("lut params", &params);
        let bind = ctx.bind(
            Kernel::Lut,
            &[&ubuf, queries, &self.centroids, &self.offsets, &lut],
        )?;
        ctx.dispatch(enc, Kernel::Lut, &bind, (self.m_pad, nq))?;
        Ok(lut)
    }
}

/// Build the lookup tables on the GPU and read them back: `[nq, m, 256]` (padding rows dropped),
/// the same layout as [`build_luts_reference`].
pub async fn build_luts(
    ctx: &GpuContext,
    queries: &[f32],
    nq: usize,
    books: &PqCodebooks<'_>,
) -> Result<Vec<f32>, GpuError> {
    ctx.check_alive("lut")?;
    check_queries(queries, nq, books.d)?;
    if nq == 0 {
        return Ok(Vec::new());
    }
    if nq > ctx.max_workgroups() as usize {
        return Err(GpuError::LimitTooSmall {
            limit: "max_compute_workgroups_per_dimension",
            need: nq as u64,
            have: ctx.max_workgroups() as u64,
        });
    }
    let scopes = ctx.scopes();
    let tables = LutTables::upload(ctx, books)?;
    ctx.check_binding("queries", bytes_of_count(queries.len(), 4, "queries")?)?;
    let qbuf = ctx.storage_init("queries", bytemuck::cast_slice(queries));
    let mut enc = ctx.encoder("lut");
    let lut = tables.encode(ctx, &mut enc, &qbuf, nq as u32)?;
    let bytes = tables.lut_bytes_per_query() * nq as u64;
    let raw = f32s_from_bytes(&ctx.submit_and_read("lut", scopes, enc, &lut, bytes).await?);
    let (m, m_pad) = (books.m, books.m_pad());
    let mut out = Vec::with_capacity(nq * m * 256);
    for q in 0..nq {
        out.extend_from_slice(&raw[q * m_pad * 256..(q * m_pad + m) * 256]);
    }
    Ok(out)
}
