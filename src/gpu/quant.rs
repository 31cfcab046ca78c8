//! Weight formats of the forward kernels (`shaders/quant_common.wgsl`) and their CPU twin:
//! GGUF blocks repacked into a shader-friendly layout, and the dequantiser the kernels mirror.
//!
//! GGUF block formats (llama.cpp `ggml-common.h`): `Q8_0` = f16 `d` + 32 × i8, value `q·d`;
//! `Q4_0` = f16 `d` + 16 bytes of nibbles, value `(q−8)·d`; `Q4_1` = f16 `d`, f16 `m` + 16 bytes,
//! value `q·d + m`. In a 4-bit block, byte `i` holds element `i` (low nibble) and `i + 16`
//! (high nibble). On the GPU every block becomes one scale word `pack2x16float(d, m)` and its
//! quants in element order (4 bytes or 8 nibbles per `u32`, lowest first), so a kernel reads 8
//! consecutive elements with one or two word loads. Scales stay the file's f16 values, so the
//! dequantised numbers are those of candle's (and transformers') dequantiser.
//! F32, F16 and BF16 tensors are stored as f32; other GGUF types are refused by name.

use candle_core::quantized::GgmlDType;

use super::GpuError;

/// Elements per quantisation block.
pub const BLOCK: usize = 32;

/// Weight format of a [`HostMatrix`] (`FMT_*` in `quant_common.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// Plain f32.
    F32 = 0,
    /// GGUF Q8_0.
    Q8_0 = 1,
    /// GGUF Q4_0.
    Q4_0 = 2,
    /// GGUF Q4_1.
    Q4_1 = 3,
}

impl WeightFormat {
    /// Quant words (`u32`) per row of `k` elements.
    pub fn words_per_row(self, k: usize) -> usize {
        match self {
            WeightFormat::F32 => k,
            WeightFormat::Q8_0 => k / 4,
            WeightFormat::Q4_0 | WeightFormat::Q4_1 => k / 8,
        }
    }

    /// Scale words per row (one per block; none for f32).
    pub fn scales_per_row(self, k: usize) -> usize {
        match self {
            WeightFormat::F32 => 0,
            _ => k / BLOCK,
        }
    }
}

/// A weight matrix `[n, k]` (row `n` = output feature) in a shader format, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostMatrix {
    /// Rows (output features).
    pub n: usize,
    /// Columns (input features).
    pub k: usize,
    /// Storage format.
    pub format: WeightFormat,
    /// Quant words `[n, words_per_row]` (f32 bits for [`WeightFormat::F32`]).
    pub q: Vec<u32>,
    /// Scale words `[n, k / 32]` (`pack2x16float(d, m)`); empty for f32.
    pub s: Vec<u32>,
}

fn check_dims(n: usize, k: usize, what: &str) -> Result<(), GpuError> {
    if n == 0 || k == 0 || n.checked_mul(k).is_none_or(|e| e > u32::MAX as usize) {
        return Err(GpuError::InvalidInput(format!(
            "{what}: matrix [{n}, {k}] must be non-empty with fewer than 2^32 elements"
        )));
    }
    Ok(())
}

fn f16_bits(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl HostMatrix {
    /// A row-major f32 matrix `[n, k]`.
    pub fn from_f32(data: &[f32], n: usize, k: usize, what: &str) -> Result<Self, GpuError> {
        check_dims(n, k, what)?;
        if data.len() != n * k {
            return Err(GpuError::InvalidInput(format!(
                "{what}: {} values for a [{n}, {k}] matrix",
                data.len()
            )));
        }
        Ok(HostMatrix {
            n,
            k,
            format: WeightFormat::F32,
            q: data.iter().map(|v| v.to_bits()).collect(),
            s: Vec::new(),
        })
    }

    /// Repacks the raw bytes of a GGUF tensor `[n, k]` of type `dtype` (`name` for errors).
    /// Q8_0, Q4_0 and Q4_1 stay quantised; F32, F16, BF16 become f32; other types are refused
    /// ([`GpuError::UnsupportedWeights`]) unless `dequantize_other` is set, in which case the
    /// caller passes them already dequantised through [`HostMatrix::from_f32`].
    pub fn from_ggml(dtype: GgmlDType, raw: &[u8], n: usize, k: usize, name: &str) -> Result<Self, GpuError> {
        check_dims(n, k, name)?;
        let short = |need: usize| {
            GpuError::InvalidInput(format!(
                "tensor `{name}` ({dtype:?} [{n}, {k}]): {} bytes, {need} needed (truncated file?)",
                raw.len()
            ))
        };
        let (format, block_bytes) = match dtype {
            GgmlDType::Q8_0 => (WeightFormat::Q8_0, 34),
            GgmlDType::Q4_0 => (WeightFormat::Q4_0, 18),
            GgmlDType::Q4_1 => (WeightFormat::Q4_1, 20),
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                let (size, conv): (usize, fn(&[u8]) -> f32) = match dtype {
                    GgmlDType::F32 => (4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    GgmlDType::F16 => (2, |c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
                    _ => (2, |c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
                };
                let need = n * k * size;
                let bytes = raw.get(..need).ok_or_else(|| short(need))?;
                let v: Vec<f32> = bytes.chunks_exact(size).map(conv).collect();
                return Self::from_f32(&v, n, k, name);
            }
            other => {
                return Err(GpuError::UnsupportedWeights(format!(
                    "tensor `{name}` is {other:?}; the WGSL kernels read Q8_0, Q4_0, Q4_1, F32, F16 and BF16 \
                     (use the CPU path, or load with dequantize_unsupported to run it as f32)"
                )))
            }
        };
        if k % BLOCK != 0 {
            return Err(GpuError::InvalidInput(format!(
                "tensor `{name}` ({dtype:?}): row width {k} is not a multiple of the block size {BLOCK}"
            )));
        }
        let blocks = n * k / BLOCK;
        let need = blocks * block_bytes;
        let raw = raw.get(..need).ok_or_else(|| short(need))?;
        let mut q = Vec::with_capacity(format.words_per_row(k) * n);
        let mut s = Vec::with_capacity(blocks);
        for b in raw.chunks_exact(block_bytes) {
            match format {
                WeightFormat::Q8_0 => {
                    s.push(f16_bits(b, 0) as u32);
                    for w in b[2..34].chunks_exact(4) {
                        q.push(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
                    }
                }
                WeightFormat::Q4_0 | WeightFormat::Q4_1 => {
                    let (scale, qs) = if format == WeightFormat::Q4_0 {
                        (f16_bits(b, 0) as u32, &b[2..18])
                    } else {
                        (f16_bits(b, 0) as u32 | (f16_bits(b, 2) as u32) << 16, &b[4..20])
                    };
                    s.push(scale);
                    let nib = |e: usize| -> u32 {
                        if e < 16 {
                            (qs[e] & 0xF) as u32
                        } else {
                            (qs[e - 16] >> 4) as u32
                        }
                    };
                    for w in 0..4 {
                        let mut word = 0u32;
                        for j in 0..8 {
                            word |= nib(w * 8 + j) << (4 * j);
                        }
                        q.push(word);
                    }
                }
                WeightFormat::F32 => {}
            }
        }
        Ok(HostMatrix { n, k, format, q, s })
    }

    /// Bytes of one row on the GPU (quants; scales are smaller and split with them).
    pub fn row_bytes(&self) -> u64 {
        self.format.words_per_row(self.k) as u64 * 4
    }

    /// CPU twin of the shaders' dequantisation: the matrix as row-major f32 `[n, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n * self.k);
        for r in 0..self.n {
            out.extend((0..self.k).map(|c| self.get(r, c)));
        }
        out
    }

    /// Element `(row, col)` as the shaders compute it.
    pub fn get(&self, row: usize, col: usize) -> f32 {
        let e = row * self.k + col;
        match self.format {
            WeightFormat::F32 => f32::from_bits(self.q[e]),
            WeightFormat::Q8_0 => {
                let d = half::f16::from_bits(self.s[e / BLOCK] as u16).to_f32();
                let byte = (self.q[e / 4] >> (8 * (e % 4))) as u8 as i8;
                byte as f32 * d
            }
            WeightFormat::Q4_0 | WeightFormat::Q4_1 => {
                let sw = self.s[e / BLOCK];
                let d = half::f16::from_bits(sw as u16).to_f32();
                let m = half::f16::from_bits((sw >> 16) as u16).to_f32();
                let q = (self.q[e / 8] >> (4 * (e % 8))) & 0xF;
                if self.format == WeightFormat::Q4_0 {
                    (q as i32 - 8) as f32 * d
                } else {
                    q as f32 * d + m
                }
            }
        }
    }

    /// Rows `perm[0], perm[1], …` of this matrix (rows are whole blocks, so any format).
    pub fn select_rows(&self, perm: &[usize]) -> Result<Self, GpuError> {
        let (wq, ws) = (self.format.words_per_row(self.k), self.format.scales_per_row(self.k));
        let mut q = Vec::with_capacity(perm.len() * wq);
        let mut s = Vec::with_capacity(perm.len() * ws);
        for &r in perm {
            if r >= self.n {
                return Err(GpuError::InvalidInput(format!("row {r} of a matrix with {} rows", self.n)));
            }
            q.extend_from_slice(&self.q[r * wq..(r + 1) * wq]);
            s.extend_from_slice(&self.s[r * ws..(r + 1) * ws]);
        }
        Ok(HostMatrix { n: perm.len(), k: self.k, format: self.format, q, s })
    }

    /// The matrices stacked along rows (a fused projection). Mixed formats are stored as f32.
    pub fn concat_rows(parts: &[&HostMatrix]) -> Result<Self, GpuError> {
        let first = parts.first().ok_or_else(|| GpuError::InvalidInput("no matrices to fuse".into()))?;
        if parts.iter().any(|p| p.k != first.k) {
            return Err(GpuError::InvalidInput("fused projections with different input widths".into()));
        }
        let n = parts.iter().map(|p| p.n).sum();
        if parts.iter().all(|p| p.format == first.format) {
            let mut q = Vec::new();
            let mut s = Vec::new();
            for p in parts {
                q.extend_from_slice(&p.q);
                s.extend_from_slice(&p.s);
            }
            return Ok(HostMatrix { n, k: first.k, format: first.format, q, s });
        }
        let mut v = Vec::with_capacity(n * first.k);
        for p in parts {
            v.extend(p.dequantize());
        }
        Self::from_f32(&v, n, first.k, "fused projection")
    }
}

/// Row order that undoes llama.cpp's q/k permutation: HF row `h·hd + j·hd/2 + i` is stored at
/// `h·hd + 2i + j` (see `crate::model::gguf::unpermute_rows`).
pub fn unpermute_order(rows: usize, n_head: usize) -> Result<Vec<usize>, GpuError> {
    if n_head == 0 || rows % (2 * n_head) != 0 {
        return Err(GpuError::InvalidInput(format!("{rows} q/k rows for {n_head} heads")));
    }
    let hd = rows / n_head;
    let mut perm = Vec::with_capacity(rows);
    for h in 0..n_head {
        for j in 0..2 {
            for i in 0..hd / 2 {
                perm.push(h * hd + 2 * i + j);
            }
        }
    }
    Ok(perm)
}
