//! The model-forward kernels (one `.wgsl` each in `shaders/`, one host file each here with its
//! CPU twin) and [`ForwardKernels`], their compiled pipelines on a [`GpuContext`].
//!
//! Kernels: [`matmul`](super::matmul) (f32 / Q8_0 / Q4_0 / Q4_1 weights, dequantised in the
//! shader, tiled in workgroup memory; an f16-tile variant compiled only when the context has
//! `shader-f16`), [`norm`](super::norm) (RMSNorm, LayerNorm),
//! [`rope`](super::rope) (HF `rotate_half`), [`attention`](super::attention) (causal or
//! bidirectional, grouped-query, online softmax), [`swiglu`](super::swiglu),
//! [`gelu`](super::gelu) (tanh, erf, quick), [`add`](super::add), [`embed`](super::embed),
//! [`permute`](super::permute) (strided copies: patch unfolding, pixel shuffle, row picking);
//! for EfficientNet: [`depthwise`](super::depthwise) (depthwise k×k conv, TF "SAME" padding,
//! fused ReLU6), [`im2col`](super::im2col) (dense-conv columns with zero padding, for the
//! stem's matmul), [`clamp`](super::clamp) (ReLU6).
//! Every host records into a caller's `CommandEncoder`, so a whole model forward is one
//! submission; the `*_once` helpers upload, run one kernel and read back (tests, small jobs).
//!
//! Limits used beyond the search kernels': 16 KiB of workgroup memory (the matmul tiles; the
//! WebGPU default), 5 storage buffers per stage (WebGPU default 8). Buffers bigger than the
//! storage binding limit are split by rows ([`super::matmul::GpuMatrix`], the embedding) or
//! refused with the limit named.


use super::{FieldOffsets, GpuContext, GpuError};

/// Invocations per workgroup of every forward kernel.
pub const FWD_WG: u32 = 256;

const QUANT_COMMON: &str = include_str!("../../shaders/quant_common.wgsl");

/// The forward kernels, one `.wgsl` each in `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwdKernel {
    Matmul,
    /// f16 tiles, f32 accumulation; only on contexts with `shader-f16`.
    MatmulF16,
    Norm,
    Rope,
    Attention,
    Swiglu,
    Gelu,
    Add,
    Embed,
    Permute,
    Depthwise,
    Im2col,
    Clamp,
}

impl FwdKernel {
    /// All forward kernels.
    pub const ALL: [FwdKernel; 13] = [
        FwdKernel::Matmul,
        FwdKernel::MatmulF16,
        FwdKernel::Norm,
        FwdKernel::Rope,
        FwdKernel::Attention,
        FwdKernel::Swiglu,
        FwdKernel::Gelu,
        FwdKernel::Add,
        FwdKernel::Embed,
        FwdKernel::Permute,
        FwdKernel::Depthwise,
        FwdKernel::Im2col,
        FwdKernel::Clamp,
    ];

    /// File name in `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            FwdKernel::Matmul => "matmul.wgsl",
            FwdKernel::MatmulF16 => "matmul_f16.wgsl",
            FwdKernel::Norm => "norm.wgsl",
            FwdKernel::Rope => "rope.wgsl",
            FwdKernel::Attention => "attention.wgsl",
            FwdKernel::Swiglu => "swiglu.wgsl",
            FwdKernel::Gelu => "gelu.wgsl",
            FwdKernel::Add => "add.wgsl",
            FwdKernel::Embed => "embed.wgsl",
            FwdKernel::Permute => "permute.wgsl",
            FwdKernel::Depthwise => "depthwise.wgsl",
            FwdKernel::Im2col => "im2col.wgsl",
            FwdKernel::Clamp => "clamp.wgsl",
        }
    }

    fn raw(self) -> &'static str {
        match self {
            FwdKernel::Matmul => include_str!("../../shaders/matmul.wgsl"),
            FwdKernel::MatmulF16 => include_str!("../../shaders/matmul_f16.wgsl"),
            FwdKernel::Norm => include_str!("../../shaders/norm.wgsl"),
            FwdKernel::Rope => include_str!("../../shaders/rope.wgsl"),
            FwdKernel::Attention => include_str!("../../shaders/attention.wgsl"),
            FwdKernel::Swiglu => include_str!("../../shaders/swiglu.wgsl"),
            FwdKernel::Gelu => include_str!("../../shaders/gelu.wgsl"),
            FwdKernel::Add => include_str!("../../shaders/add.wgsl"),
            FwdKernel::Embed => include_str!("../../shaders/embed.wgsl"),
            FwdKernel::Permute => include_str!("../../shaders/permute.wgsl"),
            FwdKernel::Depthwise => include_str!("../../shaders/depthwise.wgsl"),
            FwdKernel::Im2col => include_str!("../../shaders/im2col.wgsl"),
            FwdKernel::Clamp => include_str!("../../shaders/clamp.wgsl"),
        }
    }

    /// Whether the kernel needs the `shader-f16` feature (compiled only where it is present).
    pub fn needs_f16(self) -> bool {
        matches!(self, FwdKernel::MatmulF16)
    }

    /// The WGSL the pipeline is built from (`quant_common.wgsl` inserted when the file says
    /// `requires: quant_common.wgsl`).
    pub fn source(self) -> String {
        compose_forward(self.raw(), QUANT_COMMON)
    }
}

/// Insert `common` when `kernel` says `requires: quant_common.wgsl`: at the top, or after the
/// kernel's leading `enable …;` directives, which WGSL wants first (public so the naga test
/// validates exactly what ships).
pub fn compose_forward(kernel: &str, common: &str) -> String {
    if !kernel.contains("requires: quant_common.wgsl") {
        return kernel.to_string();
    }
    if !kernel.trim_start().starts_with("enable ") {
        return format!("{common}\n{kernel}");
    }
    let mut directives = String::new();
    let mut body = String::new();
    for line in kernel.lines() {
        if line.trim_start().starts_with("enable ") && body.trim().is_empty() {
            directives.push_str(line);
            directives.push('\n');
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    format!("{directives}{common}\n{body}")
}

/// Every uniform params struct of the forward kernels: (file, struct, Rust size, offsets).
pub fn uniform_layouts() -> Vec<(&'static str, &'static str, usize, FieldOffsets)> {
    use std::mem::size_of;
    vec![
        ("matmul.wgsl", "MatmulParams", size_of::<super::matmul::MatmulParams>(), super::matmul::MatmulParams::FIELDS),
        ("matmul_f16.wgsl", "MatmulParams", size_of::<super::matmul::MatmulParams>(), super::matmul::MatmulParams::FIELDS),
        ("norm.wgsl", "NormParams", size_of::<super::norm::NormParams>(), super::norm::NormParams::FIELDS),
        ("rope.wgsl", "RopeParams", size_of::<super::rope::RopeParams>(), super::rope::RopeParams::FIELDS),
        ("attention.wgsl", "AttnParams", size_of::<super::attention::AttnParams>(), super::attention::AttnParams::FIELDS),
        ("swiglu.wgsl", "SwigluParams", size_of::<super::swiglu::SwigluParams>(), super::swiglu::SwigluParams::FIELDS),
        ("gelu.wgsl", "GeluParams", size_of::<super::gelu::GeluParams>(), super::gelu::GeluParams::FIELDS),
        ("add.wgsl", "AddParams", size_of::<super::add::AddParams>(), super::add::AddParams::FIELDS),
        ("embed.wgsl", "EmbedParams", size_of::<super::embed::EmbedParams>(), super::embed::EmbedParams::FIELDS),
        ("permute.wgsl", "PermuteParams", size_of::<super::permute::PermuteParams>(), super::permute::PermuteParams::FIELDS),
        ("depthwise.wgsl", "DepthwiseParams", size_of::<super::depthwise::DepthwiseParams>(), super::depthwise::DepthwiseParams::FIELDS),
        ("im2col.wgsl", "Im2colParams", size_of::<super::im2col::Im2colParams>(), super::im2col::Im2colParams::FIELDS),
        ("clamp.wgsl", "ClampParams", size_of::<super::clamp::ClampParams>(), super::clamp::ClampParams::FIELDS),
    ]
}

/// The forward kernels compiled on one [`GpuContext`]. Cheap to clone.
#[derive(Clone)]
pub struct ForwardKernels {
    ctx: GpuContext,
    /// One per [`FwdKernel::ALL`], in order; `None` for an f16 kernel on a context without
    /// `shader-f16`.
    pipelines: std::sync::Arc<Vec<Option<wgpu::ComputePipeline>>>,
    /// 16-byte placeholder bound where a kernel's optional input (bias) is absent.
    pub(crate) dummy: wgpu::Buffer,
}

impl std::fmt::Debug for ForwardKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardKernels").field("ctx", &self.ctx).finish()
    }
}

fn check_forward_limits(l: &wgpu::Limits) -> Result<(), GpuError> {
    let checks: [(&'static str, u64, u64); 3] = [
        ("max_compute_workgroup_storage_size", 16384, l.max_compute_workgroup_storage_size as u64),
        ("max_storage_buffers_per_shader_stage", 5, l.max_storage_buffers_per_shader_stage as u64),
        ("max_compute_invocations_per_workgroup", FWD_WG as u64, l.max_compute_invocations_per_workgroup as u64),
    ];
    for (limit, need, have) in checks {
        if have < need {
            return Err(GpuError::LimitTooSmall { limit, need, have });
        }
    }
    Ok(())
}

impl ForwardKernels {
    /// Compile the forward kernels on `ctx` (checks the limits they need first); the f16
    /// variants only when `ctx` has `shader-f16` ([`ForwardKernels::has_f16`]).
    pub async fn new(ctx: &GpuContext) -> Result<Self, GpuError> {
        check_forward_limits(ctx.limits())?;
        let device = ctx.device();
        let mut pipelines = Vec::with_capacity(FwdKernel::ALL.len());
        for k in FwdKernel::ALL {
            if k.needs_f16() && !ctx.has_shader_f16() {
                pipelines.push(None);
                continue;
            }
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(k.file_name()),
                source: wgpu::ShaderSource::Wgsl(k.source().into()),
            });
            let p = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.file_name()),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            if let Some(e) = scope.pop().await {
                return Err(GpuError::Kernel { what: k.file_name(), msg: e.to_string() });
            }
            pipelines.push(Some(p));
        }
        let dummy = ctx.storage_init("latentlens dummy", &[0u8; 16]);
        Ok(ForwardKernels { ctx: ctx.clone(), pipelines: std::sync::Arc::new(pipelines), dummy })
    }

    /// Native convenience: [`ForwardKernels::new`] driven with `pollster`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(ctx: &GpuContext) -> Result<Self, GpuError> {
        pollster::block_on(Self::new(ctx))
    }

    /// The context the kernels run on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Whether the f16 kernels ([`FwdKernel::MatmulF16`]) were compiled (the context has
    /// `shader-f16`).
    pub fn has_f16(&self) -> bool {
        self.pipelines.get(FwdKernel::MatmulF16 as usize).is_some_and(|p| p.is_some())
    }

    fn pipeline(&self, k: FwdKernel) -> Result<&wgpu::ComputePipeline, GpuError> {
        // ALL lists every variant in declaration order, and `new` compiled them in that order;
        // only an f16 kernel on a context without shader-f16 is absent.
        self.pipelines.get(k as usize).and_then(|p| p.as_ref()).ok_or(GpuError::MissingFeature("shader-f16"))
    }

    /// Workgroups for `items` elements handled one per invocation, split over x and y when
    /// beyond the per-dimension limit (the shaders rebuild the index from `num_workgroups`).
    pub(crate) fn groups_1d(&self, items: u64) -> Result<(u32, u32), GpuError> {
        let max = self.ctx.max_workgroups() as u64;
        let wgs = items.div_ceil(FWD_WG as u64);
        let gy = wgs.div_ceil(max).max(1);
        let gx = wgs.div_ceil(gy);
        if gy > max {
            return Err(GpuError::LimitTooSmall { limit: "max_compute_workgroups_per_dimension", need: gy, have: max });
        }
        Ok((gx as u32, gy as u32))
    }

    /// Record one dispatch of `kernel` with `params` (uniform, binding 0) and `buffers`
    /// (storage, bindings 1, 2, …).
    pub(crate) fn dispatch<P: bytemuck::Pod>(
        &self,
        enc: &mut wgpu::CommandEncoder,
        kernel: FwdKernel,
        params: &P,
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32),
    ) -> Result<(), GpuError> {
        let max = self.ctx.max_workgroups();
        if groups.0 > max || groups.1 > max {
            return Err(GpuError::LimitTooSmall {
                limit: "max_compute_workgroups_per_dimension",
                need: groups.0.max(groups.1) as u64,
                have: max as u64,
            });
        }
        if groups.0 == 0 || groups.1 == 0 {
            return Ok(());
        }
        let device = self.ctx.device();
        let uniform = self.ctx.uniform_init(kernel.file_name(), params);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() });
        }
        let pipeline = self.pipeline(kernel)?;
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.file_name()),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(kernel.file_name()),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
        Ok(())
    }

    /// Storage buffer holding `data` (checked against the binding limit).
    pub(crate) fn upload_f32(&self, what: &'static str, data: &[f32]) -> Result<wgpu::Buffer, GpuError> {
        self.upload_words(what, bytemuck::cast_slice(data))
    }

    /// Storage buffer holding `words` (checked against the binding limit).
    pub(crate) fn upload_words(&self, what: &'static str, words: &[u32]) -> Result<wgpu::Buffer, GpuError> {
        self.ctx.check_binding(what, words.len() as u64 * 4)?;
        Ok(self.ctx.storage_init(what, bytemuck::cast_slice(words)))
    }

    /// Uninitialised storage buffer of `floats` f32 (binding limit checked), also a copy
    /// source and destination.
    pub(crate) fn buffer_f32(&self, what: &'static str, floats: u64) -> Result<wgpu::Buffer, GpuError> {
        let bytes = floats.checked_mul(4).ok_or_else(|| GpuError::InvalidInput(format!("{what}: size overflows")))?;
        self.ctx.check_binding(what, bytes)?;
        Ok(self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes.max(16).div_ceil(16) * 16,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// A command encoder and the error scopes around it.
    pub(crate) fn begin(&self, label: &str) -> (wgpu::CommandEncoder, super::Scopes) {
        let scopes = self.ctx.scopes();
        (self.ctx.encoder(label), scopes)
    }

    /// Submit `enc`, wait, and read `floats` f32 from the start of `src`.
    pub(crate) async fn finish_read(
        &self,
        what: &'static str,
        scopes: super::Scopes,
        enc: wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        floats: u64,
    ) -> Result<Vec<f32>, GpuError> {
        self.ctx.check_alive(what)?;
        let bytes = self.ctx.submit_and_read(what, scopes, enc, src, floats * 4).await?;
        Ok(super::f32s_from_bytes(&bytes))
    }
}

/// `u32` from a size, or an error naming what overflowed.
pub(crate) fn u32_of(v: usize, what: &str) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| GpuError::InvalidInput(format!("{what} = {v} does not fit the kernels' u32 indices")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_forward_keeps_enable_directives_first() {
        let k = "enable f16;\n// requires: quant_common.wgsl\nfn main() {}\n";
        let s = compose_forward(k, "const X: u32 = 1u;");
        assert!(s.starts_with("enable f16;\nconst X"), "{s}");
        // kernels without directives: the common code in front, as before
        let k = "// requires: quant_common.wgsl\nfn main() {}";
        assert_eq!(compose_forward(k, "const X: u32 = 1u;"), format!("const X: u32 = 1u;\n{k}"));
        assert_eq!(compose_forward("fn f() {}", "const X: u32 = 1u;"), "fn f() {}");
    }

    #[test]
    fn only_the_f16_variants_need_shader_f16() {
        for k in FwdKernel::ALL {
            assert_eq!(k.needs_f16(), k.file_name().ends_with("_f16.wgsl"), "{k:?}");
            assert_eq!(k.needs_f16(), k.source().starts_with("enable f16;"), "{k:?}");
        }
    }
}
