//! Scaled dot-product attention (`shaders/attention.wgsl`): grouped-query heads, causal (text)
//! or bidirectional (vision), optionally over a batch of equal-length sequences (vision tiles),
//! online softmax over key chunks; CPU twin [`attention_reference`].
//!
//! HF semantics (`eager_attention_forward`): `softmax(q kᵀ · scale + mask) v` per head, query
//! head `h` using key/value head `h / (heads / kv_heads)` (`repeat_kv`).

use super::forward::{u32_of, ForwardKernels, FwdKernel};
use super::{FieldOffsets, GpuError};

/// Uniform params of `attention.wgsl` (`struct AttnParams`, 48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AttnParams {
    pub t: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub hd: u32,
    pub stride: u32,
    pub q_off: u32,
    pub k_off: u32,
    pub v_off: u32,
    pub out_stride: u32,
    pub causal: u32,
    pub scale: f32,
    pub seq: u32,
}

impl AttnParams {
    /// Field offsets (checked against naga's layout of the WGSL struct).
    pub const FIELDS: FieldOffsets = &[
        ("t", std::mem::offset_of!(AttnParams, t)),
        ("heads", std::mem::offset_of!(AttnParams, heads)),
        ("kv_heads", std::mem::offset_of!(AttnParams, kv_heads)),
        ("hd", std::mem::offset_of!(AttnParams, hd)),
        ("stride", std::mem::offset_of!(AttnParams, stride)),
        ("q_off", std::mem::offset_of!(AttnParams, q_off)),
        ("k_off", std::mem::offset_of!(AttnParams, k_off)),
        ("v_off", std::mem::offset_of!(AttnParams, v_off)),
        ("out_stride", std::mem::offset_of!(AttnParams, out_stride)),
        ("causal", std::mem::offset_of!(AttnParams, causal)),
        ("scale", std::mem::offset_of!(AttnParams, scale)),
        ("seq", std::mem::offset_of!(AttnParams, seq)),
    ];
}

/// Shape of one attention call over a fused `[t, (heads + 2·kv_heads)·hd]` qkv buffer
/// (q heads, then k heads, then v heads in each row).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    pub t: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub hd: usize,
    pub causal: bool,
    /// Usually `1/sqrt(hd)`.
    pub scale: f32,
    /// Rows per independent sequence (a batch of vision tiles: keys stay inside the block of
    /// `seq` rows holding the query; `t` a multiple of it); 0 = one sequence of `t` rows.
    pub seq: usize,
}

impl AttnShape {
    /// Width of a fused qkv row.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.hd
    }

    fn validate(&self) -> Result<(), GpuError> {
        if self.t == 0 || self.heads == 0 || self.kv_heads == 0 || self.hd == 0 {
            return Err(GpuError::InvalidInput(format!("attention needs non-empty shapes, got {self:?}")));
        }
        if self.heads % self.kv_heads != 0 {
            return Err(GpuError::InvalidInput(format!(
                "{} query heads are not a multiple of {} key/value heads",
                self.heads, self.kv_heads
            )));
        }
        if self.seq != 0 && self.t % self.seq != 0 {
            return Err(GpuError::InvalidInput(format!("{} rows are not whole sequences of {}", self.t, self.seq)));
        }
        if self.hd > 256 {
            return Err(GpuError::InvalidInput(format!("head dim {} > 256 is not supported by attention.wgsl", self.hd)));
        }
        Ok(())
    }
}

/// Record attention: `qkv` `[t, qkv_width]` → `out` `[t, heads·hd]`.
pub fn record_attention(
    fk: &ForwardKernels,
    enc: &mut wgpu::CommandEncoder,
    s: &AttnShape,
    qkv: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<(), GpuError> {
    s.validate()?;
    let params = AttnParams {
        t: u32_of(s.t, "tokens")?,
        heads: u32_of(s.heads, "heads")?,
        kv_heads: u32_of(s.kv_heads, "kv heads")?,
        hd: u32_of(s.hd, "head dim")?,
        stride: u32_of(s.qkv_width(), "qkv width")?,
        q_off: 0,
        k_off: u32_of(s.heads * s.hd, "k offset")?,
        v_off: u32_of((s.heads + s.kv_heads) * s.hd, "v offset")?,
        out_stride: u32_of(s.heads * s.hd, "out width")?,
        causal: s.causal as u32,
        scale: s.scale,
        seq: u32_of(s.seq, "sequence length")?,
    };
    fk.dispatch(enc, FwdKernel::Attention, &params, &[qkv, out], (params.heads, params.t))
}

/// Upload, run attention, read back `[t, heads·hd]`.
pub async fn attention_once(fk: &ForwardKernels, s: &AttnShape, qkv: &[f32]) -> Result<Vec<f32>, GpuError> {
    s.validate()?;
    if qkv.len() != s.t * s.qkv_width() {
        return Err(GpuError::InvalidInput(format!("qkv has {} floats, [{}, {}] expected", qkv.len(), s.t, s.qkv_width())));
    }
    let qb = fk.upload_f32("attention qkv", qkv)?;
    let n = (s.t * s.heads * s.hd) as u64;
    let ob = fk.buffer_f32("attention out", n)?;
    let (mut enc, scopes) = fk.begin("attention");
    record_attention(fk, &mut enc, s, &qb, &ob)?;
    fk.finish_read("attention", scopes, enc, &ob, n).await
}

/// CPU twin: plain two-pass softmax attention in f64 accumulation (the reference the online
/// softmax must match).
pub fn attention_reference(s: &AttnShape, qkv: &[f32]) -> Result<Vec<f32>, GpuError> {
    s.validate()?;
    let w = s.qkv_width();
    if qkv.len() != s.t * w {
        return Err(GpuError::InvalidInput(format!("qkv has {} floats, [{}, {w}] expected", qkv.len(), s.t)));
    }
    let (hd, g) = (s.hd, s.heads / s.kv_heads);
    let mut out = vec![0f32; s.t * s.heads * hd];
    let mut scores = vec![0f64; s.t];
    let seq = if s.seq == 0 { s.t } else { s.seq };
    for h in 0..s.heads {
        let kvh = h / g;
        for t in 0..s.t {
            let q = &qkv[t * w + h * hd..t * w + (h + 1) * hd];
            let k0 = t / seq * seq;
            let nk = if s.causal { t + 1 - k0 } else { seq };
            let mut mx = f64::NEG_INFINITY;
            for (j, sc) in scores.iter_mut().enumerate().take(nk) {
                let kb = (k0 + j) * w + (s.heads + kvh) * hd;
                let dot: f64 = q.iter().zip(&qkv[kb..kb + hd]).map(|(a, b)| *a as f64 * *b as f64).sum();
                *sc = dot * s.scale as f64;
                mx = mx.max(*sc);
            }
            let mut sum = 0f64;
            for sc in scores.iter_mut().take(nk) {
                *sc = (*sc - mx).exp();
                sum += *sc;
            }
            for c in 0..hd {
                let mut acc = 0f64;
                for (j, p) in scores.iter().enumerate().take(nk) {
                    acc += p * qkv[(k0 + j) * w + (s.heads + s.kv_heads + kvh) * hd + c] as f64;
                }
                out[t * s.heads * hd + h * hd + c] = (acc / sum) as f32;
            }
        }
    }
    Ok(out)
}
