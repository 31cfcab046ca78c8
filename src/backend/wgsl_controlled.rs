//! The controlled VLM ([`crate::model::controlled::ControlledVlm`]) whole on our WGSL kernels:
//! EfficientNet-Lite0 ([`WgslEfficientNet`]) → connector (`linear_1` 1280→d, exact GELU,
//! `linear_2` d→d on `matmul.wgsl` / `gelu.wgsl`, recorded in the same submission as the
//! vision encoder) → the visual tokens spliced into the placeholder rows of the WGSL decoder
//! ([`WgslTextModel::forward_ids_spliced`]). Returns the same [`HiddenStates`] as
//! [`ControlledVlm::hidden_states`].
//!
//! Built from the CPU model's folded EfficientNet and connector weights (both f32 on the GPU)
//! and the LLM's shader-format weights ([`HostTextWeights`], from the same GGUF); the
//! tokenization, resize and preprocessing stay on the CPU ([`ControlledVlm::prepare`]).

use std::sync::Mutex;

use candle_core::{DType, Tensor};

use super::wgsl::{gpu_err, HostTextWeights, WgslTextModel};
use super::wgsl_effnet::{EffnetPool, WgslEfficientNet};
use crate::gpu::forward::ForwardKernels;
use crate::gpu::gelu::{record_gelu, GeluKind};
use crate::gpu::matmul::{GpuMatrix, View};
use crate::gpu::quant::HostMatrix;
use crate::gpu::GpuError;
use crate::image::RgbImage;
use crate::model::clip::{Linear, VisionAct};
use crate::model::connector::Connector;
use crate::model::controlled::{ControlledPrepared, ControlledVlm, N_VISUAL};
use crate::model::efficientnet::FEATURES;
use crate::model::hidden::HiddenStates;
use crate::model::ModelError;

fn invalid(msg: String) -> GpuError {
    GpuError::InvalidInput(msg)
}

fn f32s(t: &Tensor, what: &str) -> Result<Vec<f32>, GpuError> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| invalid(format!("connector {what}: {e}")))
}

/// A linear layer on the GPU: `W [out, in]`, bias `[out]`.
struct GpuLinear {
    w: GpuMatrix,
    b: Option<wgpu::Buffer>,
}

impl GpuLinear {
    fn upload(fk: &ForwardKernels, l: &Linear, what: &str) -> Result<Self, GpuError> {
        let (w, b) = l.parts();
        let (n, k) = w.dims2().map_err(|e| invalid(format!("connector {what}: {e}")))?;
        let m = HostMatrix::from_f32(&f32s(w, what)?, n, k, what)?;
        let b = match b {
            Some(b) => Some(fk.upload_f32("connector bias", &f32s(b, what)?)?),
            None => None,
        };
        Ok(GpuLinear { w: GpuMatrix::upload(fk, &m)?, b })
    }

    fn record(&self, fk: &ForwardKernels, enc: &mut wgpu::CommandEncoder, x: &wgpu::Buffer, t: usize, y: &wgpu::Buffer) -> Result<(), GpuError> {
        self.w.record(fk, enc, x, View::dense(self.w.k), t, self.b.as_ref(), y, View::dense(self.w.n), false)
    }
}

/// Working buffers: the vision encoder's, the connector's hidden and output `[49, d]`.
struct Pool {
    eff: EffnetPool,
    mid: wgpu::Buffer,
    out: wgpu::Buffer,
}

/// The controlled VLM on the GPU. See the module docs.
pub struct WgslControlledVlm {
    fk: ForwardKernels,
    vision: WgslEfficientNet,
    linear_1: GpuLinear,
    act: GeluKind,
    linear_2: GpuLinear,
    text: WgslTextModel,
    pool: Mutex<Option<Pool>>,
}

impl std::fmt::Debug for WgslControlledVlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgslControlledVlm").field("vision", &self.vision).field("text", &self.text).finish()
    }
}

impl WgslControlledVlm {
    /// Uploads the vision encoder and connector of `cpu` and the decoder `text` (the
    /// shader-format weights of `cpu`'s LLM) once.
    pub fn new(fk: &ForwardKernels, cpu: &ControlledVlm, text: &HostTextWeights) -> Result<Self, GpuError> {
        let Connector::Mlp2xGelu { linear_1, act, linear_2 } = &cpu.connector else {
            return Err(invalid("the controlled VLM's connector is linear_1 → GELU → linear_2".into()));
        };
        let act = match act {
            VisionAct::Gelu => GeluKind::Erf,
            VisionAct::GeluTanh => GeluKind::Tanh,
            VisionAct::QuickGelu => GeluKind::Quick,
        };
        let (l1, l2) = (GpuLinear::upload(fk, linear_1, "linear_1")?, GpuLinear::upload(fk, linear_2, "linear_2")?);
        let d = text.config.hidden_size;
        if (l1.w.k, l1.w.n, l2.w.k, l2.w.n) != (FEATURES, d, d, d) {
            return Err(invalid(format!(
                "connector [{}, {}] → [{}, {}] does not join EfficientNet-Lite0 ({FEATURES}) to an LLM of width {d}",
                l1.w.n, l1.w.k, l2.w.n, l2.w.k
            )));
        }
        Ok(WgslControlledVlm {
            fk: fk.clone(),
            vision: WgslEfficientNet::new(fk, &cpu.vision)?,
            linear_1: l1,
            act,
            linear_2: l2,
            text: WgslTextModel::new(fk, text)?,
            pool: Mutex::new(None),
        })
    }

    /// The vision encoder.
    pub fn vision(&self) -> &WgslEfficientNet {
        &self.vision
    }

    /// The text decoder.
    pub fn text(&self) -> &WgslTextModel {
        &self.text
    }

    fn make_pool(&self) -> Result<Pool, GpuError> {
        let rows = (N_VISUAL * self.text.config().hidden_size) as u64;
        Ok(Pool {
            eff: self.vision.make_pool()?,
            mid: self.fk.buffer_f32("connector hidden", rows)?,
            out: self.fk.buffer_f32("visual tokens", rows)?,
        })
    }

    /// Visual tokens `[49, d]` of preprocessed pixels `[3, 224, 224]`: the vision encoder and
    /// the connector in one submission ([`ControlledVlm::visual_tokens`] of
    /// [`ControlledVlm::vision_features`] on the GPU).
    pub async fn visual_tokens(&self, pixels: &[f32]) -> crate::Result<Vec<f32>> {
        WgslEfficientNet::check_pixels(pixels)?;
        let pool = match self.pool.lock().ok().and_then(|mut p| p.take()) {
            Some(p) => p,
            None => self.make_pool().map_err(gpu_err)?,
        };
        let out = self.record_and_read(&pool, pixels).await;
        if let Ok(mut slot) = self.pool.lock() {
            *slot = Some(pool);
        }
        out.map_err(gpu_err)
    }

    async fn record_and_read(&self, p: &Pool, pixels: &[f32]) -> Result<Vec<f32>, GpuError> {
        let fk = &self.fk;
        fk.context().check_alive("wgsl controlled VLM")?;
        let d = self.text.config().hidden_size;
        let (mut enc, scopes) = fk.begin("wgsl controlled VLM");
        self.vision.record(&mut enc, &p.eff, pixels)?;
        self.linear_1.record(fk, &mut enc, &p.eff.feat, N_VISUAL, &p.mid)?;
        record_gelu(fk, &mut enc, self.act, &p.mid, N_VISUAL * d)?;
        self.linear_2.record(fk, &mut enc, &p.mid, N_VISUAL, &p.out)?;
        fk.finish_read("wgsl controlled VLM", scopes, enc, &p.out, (N_VISUAL * d) as u64).await
    }

    /// Hidden states of every LLM layer for a prepared input ([`ControlledVlm::prepare`]):
    /// the GPU twin of [`ControlledVlm::hidden_states`].
    pub async fn forward(&self, input: &ControlledPrepared) -> crate::Result<HiddenStates> {
        if input.visual_rows.len() != N_VISUAL || input.patches.len() != N_VISUAL {
            return Err(ModelError::Input(format!(
                "{} visual rows and {} patches: the controlled VLM has {N_VISUAL} visual tokens (use ControlledVlm::prepare)",
                input.visual_rows.len(),
                input.patches.len()
            ))
            .into());
        }
        let visual = self.visual_tokens(&input.pixels).await?;
        let layers = self.text.forward_ids_spliced(&input.token_ids, &input.visual_rows, &visual).await?;
        Ok(HiddenStates {
            hidden_size: self.text.config().hidden_size,
            token_ids: input.token_ids.clone(),
            layers,
            visual_rows: input.visual_rows.clone(),
            patches: input.patches.clone(),
        })
    }

    /// `image` → hidden states: [`ControlledVlm::prepare`] on the CPU (`cpu` gives the
    /// tokenizer), then [`WgslControlledVlm::forward`].
    pub async fn hidden_states(&self, cpu: &ControlledVlm, image: &RgbImage) -> crate::Result<HiddenStates> {
        let input = cpu.prepare(image)?;
        self.forward(&input).await
    }

    /// Native convenience: [`WgslControlledVlm::visual_tokens`] driven with `pollster`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn visual_tokens_blocking(&self, pixels: &[f32]) -> crate::Result<Vec<f32>> {
        pollster::block_on(self.visual_tokens(pixels))
    }

    /// Native convenience: [`WgslControlledVlm::forward`] driven with `pollster`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_blocking(&self, input: &ControlledPrepared) -> crate::Result<HiddenStates> {
        pollster::block_on(self.forward(input))
    }
}
