//! Strided copy (`shaders/permute.wgsl`): an index space of up to 8 dimensions, each with a
//! source and a destination stride; CPU twin [`permute_reference`].
//!
//! The vision path's data movement is all of this one form ([`Permute`] builds the plans):
//! - [`Permute::unfold_patches`]: pixels `[tiles, C, S, S]` → patch rows `[tiles, N, C·p·p]`
//!   (im2col for the patch-embedding matmul; HF `Conv2d(kernel = stride = p)` weight order),
//!   optionally leaving the first rows of each tile free (CLIP's class token);
//! - [`Permute::pixel_shuffle`]: Idefics3's space-to-depth of each tile's `g × g` feature grid
//!   (`crate::model::connector::pixel_shuffle`);
//! - [`Permute::rows`]: rows of one matrix into columns of another (LLaVA's feature layers,
//!   the class token dropped, several layers concatenated along features).

use super::forward::{u32_of, ForwardKernels, FwdKernel};
use super::{FieldOffsets, GpuError};

/// Most dimensions of one copy.
pub const MAX_DIMS: usize = 8;

/// Uniform params of `permute.wgsl` (`struct PermuteParams`, 112 bytes). Arrays are
/// `array<vec4<u32>, 2>` in WGSL: dimension `k` is `[k / 4][k % 4]`, dimension 7 fastest.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PermuteParams {
    pub shape: [u32; 8],
    pub src_stride: [u32; 8],
    pub dst_stride: [u32; 8],
    pub n: u32,
    pub src_off: u32,
    pub dst_off: u32,
    pub _pad0: u32,
}

impl PermuteParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("shape", std::mem::offset_of!(PermuteParams, shape)),
        ("src_stride", std::mem::offset_of!(PermuteParams, src_stride)),
        ("dst_stride", std::mem::offset_of!(PermuteParams, dst_stride)),
        ("n", std::mem::offset_of!(PermuteParams, n)),
        ("src_off", std::mem::offset_of!(PermuteParams, src_off)),
        ("dst_off", std::mem::offset_of!(PermuteParams, dst_off)),
        ("_pad0", std::mem::offset_of!(PermuteParams, _pad0)),
    ];
}

/// One strided copy: `dims[k] = (size, src_stride, dst_stride)`, last dimension fastest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permute {
    dims: Vec<(usize, usize, usize)>,
    src_off: usize,
    dst_off: usize,
}

impl Permute {
    /// A copy over `dims` (`(size, src_stride, dst_stride)`, at most [`MAX_DIMS`], every size
    /// at least 1) starting at `src_off` / `dst_off` (in f32 elements).
    pub fn new(dims: &[(usize, usize, usize)], src_off: usize, dst_off: usize) -> Result<Self, GpuError> {
        if dims.is_empty() || dims.len() > MAX_DIMS || dims.iter().any(|d| d.0 == 0) {
            return Err(GpuError::InvalidInput(format!(
                "permute: 1..={MAX_DIMS} dimensions of size ≥ 1 needed, got sizes {:?}",
                dims.iter().map(|d| d.0).collect::<Vec<_>>()
            )));
        }
        let p = Permute { dims: dims.to_vec(), src_off, dst_off };
        // every index must fit the kernel's u32 arithmetic
        u32_of(p.len(), "permute elements")?;
        u32_of(p.src_end(), "permute source extent")?;
        u32_of(p.dst_end(), "permute destination extent")?;
        Ok(p)
    }

    /// im2col of `tiles` images `[C, S, S]` (row-major `[tiles, C, S, S]`, no padding) with
    /// patch `p`: tile `t`, patch `(gy, gx)` becomes row `t·(lead + g²) + lead + gy·g + gx` of a
    /// `[tiles·(lead + g²), C·p·p]` matrix, columns in `(c, i, j)` order (a conv weight
    /// `[d, C, p, p]` read as `[d, C·p·p]`). The `lead` rows of each tile are not written.
    pub fn unfold_patches(tiles: usize, c: usize, s: usize, p: usize, lead: usize) -> Result<Self, GpuError> {
        if p == 0 || s % p != 0 {
            return Err(GpuError::InvalidInput(format!("unfold: patch {p} does not divide image side {s}")));
        }
        let g = s / p;
        let row = c * p * p;
        let per_tile = (lead + g * g) * row;
        Self::new(
            &[
                (tiles, c * s * s, per_tile),
                (g, p * s, g * row),
                (g, p, row),
                (c, s * s, p * p),
                (p, s, p),
                (p, 1, 1),
            ],
            0,
            lead * row,
        )
    }

    /// Idefics3 pixel shuffle of `tiles` feature grids `[g·g, d]` (row-major patches) by `s`:
    /// output token `(t, r, c)` (row-major) holds the `s × s` block at rows `r·s..`, columns
    /// `c·s..`, features ordered `(i, j, d)` → `[tiles·(g/s)², s²·d]`.
    pub fn pixel_shuffle(tiles: usize, g: usize, s: usize, d: usize) -> Result<Self, GpuError> {
        if s == 0 || g % s != 0 {
            return Err(GpuError::InvalidInput(format!("pixel shuffle: scale {s} does not divide the grid {g}")));
        }
        let h = g / s;
        let feat = s * s * d;
        Self::new(
            &[
                (tiles, g * g * d, h * h * feat),
                (h, s * g * d, h * feat),
                (h, s * d, feat),
                (s, g * d, s * d),
                (s, d, d),
                (d, 1, 1),
            ],
            0,
            0,
        )
    }

    /// `rows` rows of `width` floats: source row `r` at `src_off + r·src_stride`, destination
    /// row `r` at `dst_off + r·dst_stride`.
    pub fn rows(rows: usize, width: usize, (src_off, src_stride): (usize, usize), (dst_off, dst_stride): (usize, usize)) -> Result<Self, GpuError> {
        Self::new(&[(rows, src_stride, dst_stride), (width, 1, 1)], src_off, dst_off)
    }

    /// Elements copied.
    pub fn len(&self) -> usize {
        self.dims.iter().map(|d| d.0).product()
    }

    /// Never empty (sizes are at least 1); for clippy.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// One past the last source element read.
    pub fn src_end(&self) -> usize {
        self.src_off + self.dims.iter().map(|d| (d.0 - 1) * d.1).sum::<usize>() + 1
    }

    /// One past the last destination element written.
    pub fn dst_end(&self) -> usize {
        self.dst_off + self.dims.iter().map(|d| (d.0 - 1) * d.2).sum::<usize>() + 1
    }

    fn params(&self) -> Result<PermuteParams, GpuError> {
        let mut p = PermuteParams {
            shape: [1; 8],
            src_stride: [0; 8],
            dst_stride: [0; 8],
            n: u32_of(self.len(), "permute elements")?,
            src_off: u32_of(self.src_off, "permute source offset")?,
            dst_off: u32_of(self.dst_off, "permute destination offset")?,
            _pad0: 0,
        };
        // right-align: the shader's dimension 7 is the fastest
        let first = MAX_DIMS - self.dims.len();
        for (k, &(n, a, b)) in self.dims.iter().enumerate() {
            p.shape[first + k] = u32_of(n, "permute size")?;
            p.src_stride[first + k] = u32_of(a, "permute source stride")?;
            p.dst_stride[first + k] = u32_of(b, "permute destination stride")?;
        }
        Ok(p)
    }

    fn check_lens(&self, src_len: usize, dst_len: usize) -> Result<(), GpuError> {
        if self.src_end() > src_len || self.dst_end() > dst_len {
            return Err(GpuError::InvalidInput(format!(
                "permute reads up to element {} of {src_len} and writes up to {} of {dst_len}",
                self.src_end(),
                self.dst_end()
            )));
        }
        Ok(())
    }
}

/// Record the copy `src` → `dst` (two different buffers, sizes checked).
pub fn record_permute(
    fk: &ForwardKernels,
    enc: &mut wgpu::CommandEncoder,
    plan: &Permute,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
) -> Result<(), GpuError> {
    plan.check_lens((src.size() / 4) as usize, (dst.size() / 4) as usize)?;
    let params = plan.params()?;
    let groups = fk.groups_1d(plan.len() as u64)?;
    fk.dispatch(enc, FwdKernel::Permute, &params, &[src, dst], groups)
}

/// Upload `src` and `dst0` (the destination's initial contents), copy, read back `dst`.
pub async fn permute_once(fk: &ForwardKernels, plan: &Permute, src: &[f32], dst0: &[f32]) -> Result<Vec<f32>, GpuError> {
    plan.check_lens(src.len(), dst0.len())?;
    let sb = fk.upload_f32("permute src", src)?;
    let db = fk.upload_f32("permute dst", dst0)?;
    let (mut enc, scopes) = fk.begin("permute");
    record_permute(fk, &mut enc, plan, &sb, &db)?;
    fk.finish_read("permute", scopes, enc, &db, dst0.len() as u64).await
}

/// CPU twin: the same copy into `dst` (elements the plan does not touch keep their values).
pub fn permute_reference(plan: &Permute, src: &[f32], dst: &mut [f32]) -> Result<(), GpuError> {
    plan.check_lens(src.len(), dst.len())?;
    let mut idx = vec![0usize; plan.dims.len()];
    for _ in 0..plan.len() {
        let (mut s, mut d) = (plan.src_off, plan.dst_off);
        for (i, &(_, a, b)) in idx.iter().zip(&plan.dims) {
            s += i * a;
            d += i * b;
        }
        dst[d] = src[s];
        // odometer, last dimension fastest
        for k in (0..idx.len()).rev() {
            idx[k] += 1;
            if idx[k] < plan.dims[k].0 {
                break;
            }
            idx[k] = 0;
        }
    }
    Ok(())
}
