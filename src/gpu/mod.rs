//! wgpu context and WGSL compute kernels for search; each kernel has a plain-Rust twin.
//!
//! The same host code runs natively (Vulkan; lavapipe on machines without a GPU) and in the
//! browser (WebGPU): the library API is `async` and never blocks, except the native-only
//! convenience constructor [`GpuContext::new_blocking`].
//!
//! Kernels (one `.wgsl` in `shaders/` and one Rust file here each, with a `*_reference` CPU twin):
//! - [`lut`]: PQ lookup tables, queries `[nq, d]` × centroids `[M, 256, dsub]` → `[nq, M, 256]`.
//! - [`pq_scan`]: ADC scan of packed codes with a per-workgroup top-k.
//! - [`exact_topk`]: exact cosine top-k over f32 (or, with `shader-f16`, f16-stored) vectors.
//! - [`topk_merge`]: per-workgroup (or per-layer) candidate lists → final top-k per query.
//! - [`search`]: the high-level [`GpuSearch`] / [`GpuExactSearch`] that keep a layer on the GPU.
//!
//! Model-forward kernels (matmul with quantised weights, norms, RoPE, attention, activations,
//! embedding lookup, strided copies) live in [`forward`] and the files it lists; the WGSL forwards
//! built from them are `crate::backend::wgsl` (text) and `crate::backend::wgsl_vision` (vision).
//!
//! Data layout and the top-k order follow CONTRACT (search data layout): score is
//! `Σ_j LUT[j][code[j]]`; higher score first, then lower row, then lower layer tag; NaN never
//! enters a top-k. Buffers larger than `max_storage_buffer_binding_size` (lavapipe: 128 MiB)
//! are split into chunks, one dispatch each, merged on the GPU.

pub mod exact_topk;
pub mod lut;
pub mod pq_scan;
pub mod search;
pub mod topk_merge;

// Model-forward kernels (see `forward`).
pub mod add;
pub mod attention;
pub mod clamp;
pub mod depthwise;
pub mod embed;
pub mod forward;
pub mod gelu;
pub mod im2col;
pub mod matmul;
pub mod norm;
pub mod permute;
pub mod quant;
pub mod rope;
pub mod swiglu;

pub use exact_topk::{exact_topk_reference, normalize_query, Precision};
pub use lut::{build_luts_reference, PqCodebooks};
pub use pq_scan::{pack_codes, pq_scan_reference};
pub use search::{GpuExactSearch, GpuSearch};
pub use topk_merge::{merge_layers_reference, merge_topk_reference};

use std::cmp::Ordering;
use std::sync::{Arc, Mutex};


/// Errors of the GPU path.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter (no WebGPU in this browser, no Vulkan/Metal/DX12 driver natively).
    #[error("no WebGPU/Vulkan adapter: use the CPU search (latentlens::search) instead ({0})")]
    NoAdapter(String),
    /// The adapter refused to open a device.
    #[error("could not open a GPU device on adapter {adapter}: {msg}; use the CPU search instead")]
    RequestDevice { adapter: String, msg: String },
    /// A device limit is below what a kernel needs.
    #[error(
        "GPU limit `{limit}` is too small: {need} needed, the adapter allows {have}; \
         use the CPU search (or a smaller layer / fewer queries per batch)"
    )]
    LimitTooSmall {
        limit: &'static str,
        need: u64,
        have: u64,
    },
    /// An optional feature a kernel needs is missing.
    #[error(
        "the GPU adapter lacks the `{0}` feature (or GpuOptions::allow_f16 turned it off), which \
         the f16 kernels need; use the f32 variant (Precision::F32)"
    )]
    MissingFeature(&'static str),
    /// The device was lost (driver reset, tab in background too long, `destroy`).
    #[error("GPU device lost ({0}); create a new GpuContext or use the CPU path")]
    DeviceLost(String),
    /// wgpu validation or out-of-memory error raised while running a kernel.
    #[error("GPU error in {what}: {msg}\n(if the GPU was lost or reset, create a new GpuContext or use the CPU path)")]
    Kernel { what: &'static str, msg: String },
    /// Mapping a result buffer failed.
    #[error("reading GPU results back failed in {what}: {msg}")]
    Readback { what: &'static str, msg: String },
    /// The caller's input does not fit the kernel's contract.
    #[error("invalid input to the GPU search: {0}")]
    InvalidInput(String),
    /// A weight tensor's type has no shader path (the message names the tensor and type).
    #[error("unsupported weights for the WGSL forward: {0}")]
    UnsupportedWeights(String),
}

/// Largest `k` the top-k kernels accept (each round sorts 1024 candidates, k of them kept).
pub const MAX_K: usize = 256;
/// Size of the workgroup sort buffer (`SORT_N` in `shaders/topk_common.wgsl`).
pub const SORT_N: u32 = 1024;
/// Invocations per workgroup of every kernel (`WG` in the shaders).
pub const WORKGROUP: u32 = 256;
/// Row index of an empty candidate slot.
pub const EMPTY_ROW: u32 = u32::MAX;

/// One top-k candidate as the kernels store it (`struct Candidate` in `topk_common.wgsl`,
/// 12 bytes, no padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Candidate {
    /// Score (cosine or ADC inner product); `-inf` for empty slots.
    pub score: f32,
    /// Global row index in the layer.
    pub row: u32,
    /// Bank-layer slot (cross-layer merge); 0 for single-layer searches unless set.
    pub tag: u32,
}

impl Candidate {
    /// The empty slot: `(-inf, u32::MAX, u32::MAX)`, last in every order.
    pub const EMPTY: Candidate = Candidate {
        score: f32::NEG_INFINITY,
        row: EMPTY_ROW,
        tag: EMPTY_ROW,
    };

    /// A real hit: finite or `+inf` score (NaN and `-inf` never enter a top-k).
    pub fn is_hit(&self) -> bool {
        self.score > f32::NEG_INFINITY
    }
}

/// CONTRACT order: higher score first; equal score → lower row; equal row → lower tag.
/// NaN is treated as `-inf`.
pub fn candidate_order(a: &Candidate, b: &Candidate) -> Ordering {
    let (sa, sb) = (sanitize_score(a.score), sanitize_score(b.score));
    if sa != sb {
        return if sa > sb {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    a.row.cmp(&b.row).then(a.tag.cmp(&b.tag))
}

/// NaN → `-inf` (the kernels' `sanitize`).
pub fn sanitize_score(s: f32) -> f32 {
    if s.is_nan() {
        f32::NEG_INFINITY
    } else {
        s
    }
}

/// Reference top-k: the best `k` hits of `cands` in CONTRACT order (non-hits dropped).
pub fn topk_reference(cands: impl IntoIterator<Item = Candidate>, k: usize) -> Vec<Candidate> {
    let mut hits: Vec<Candidate> = cands
        .into_iter()
        .map(|c| Candidate {
            score: sanitize_score(c.score),
            ..c
        })
        .filter(Candidate::is_hit)
        .collect();
    hits.sort_by(candidate_order);
    hits.truncate(k);
    hits
}

/// The kernels, one `.wgsl` each in `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Lut,
    PqScan,
    ExactTopk,
    ExactTopkF16,
    TopkMerge,
}

const TOPK_COMMON: &str = include_str!("../../shaders/topk_common.wgsl");

impl Kernel {
    /// All kernels.
    pub const ALL: [Kernel; 5] = [
        Kernel::Lut,
        Kernel::PqScan,
        Kernel::ExactTopk,
        Kernel::ExactTopkF16,
        Kernel::TopkMerge,
    ];

    /// File name in `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Kernel::Lut => "lut.wgsl",
            Kernel::PqScan => "pq_scan.wgsl",
            Kernel::ExactTopk => "exact_topk.wgsl",
            Kernel::ExactTopkF16 => "exact_topk_f16.wgsl",
            Kernel::TopkMerge => "topk_merge.wgsl",
        }
    }

    fn raw(self) -> &'static str {
        match self {
            Kernel::Lut => include_str!("../../shaders/lut.wgsl"),
            Kernel::PqScan => include_str!("../../shaders/pq_scan.wgsl"),
            Kernel::ExactTopk => include_str!("../../shaders/exact_topk.wgsl"),
            Kernel::ExactTopkF16 => include_str!("../../shaders/exact_topk_f16.wgsl"),
            Kernel::TopkMerge => include_str!("../../shaders/topk_merge.wgsl"),
        }
    }

    /// The WGSL the pipeline is built from: the kernel file, with `topk_common.wgsl` inserted
    /// after its `enable` directives when the file says `requires: topk_common.wgsl`.
    pub fn source(self) -> String {
        compose_wgsl(self.raw(), TOPK_COMMON)
    }
}

/// Insert `common` into `kernel` (after leading `enable …;` directives) when the kernel says
/// `requires: topk_common.wgsl`. Public so the naga test validates exactly what ships.
pub fn compose_wgsl(kernel: &str, common: &str) -> String {
    if !kernel.contains("requires: topk_common.wgsl") {
        return kernel.to_string();
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

/// Options for [`GpuContext::with_options`].
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Cap on the bytes bound per storage buffer (below the device limit); tests use it to
    /// exercise chunking without allocating 128 MiB.
    pub max_binding_bytes: Option<u64>,
    /// Request `shader-f16` when the adapter has it (enables [`Precision::F16`]).
    pub allow_f16: bool,
    /// Adapter preference.
    pub power_preference: wgpu::PowerPreference,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            max_binding_bytes: None,
            allow_f16: true,
            power_preference: wgpu::PowerPreference::HighPerformance,
        }
    }
}

struct Pipelines {
    lut: wgpu::ComputePipeline,
    pq_scan: wgpu::ComputePipeline,
    exact: wgpu::ComputePipeline,
    exact_f16: Option<wgpu::ComputePipeline>,
    merge: wgpu::ComputePipeline,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    f16: bool,
    max_binding: u64,
    /// Set by the device-lost callback.
    lost: Arc<Mutex<Option<String>>>,
    /// Errors outside any error scope (wgpu would panic on them by default).
    uncaptured: Arc<Mutex<Option<String>>>,
    pipelines: Pipelines,
}

/// A wgpu device with the search kernels compiled. Cheap to clone (shared).
#[derive(Clone)]
pub struct GpuContext {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .field("f16", &self.inner.f16)
            .field("max_binding", &self.inner.max_binding)
            .finish()
    }
}

/// Limits every kernel needs: (name, needed, adapter value).
fn check_limits(l: &wgpu::Limits) -> Result<(), GpuError> {
    let checks: [(&'static str, u64, u64); 6] = [
        (
            "max_compute_invocations_per_workgroup",
            WORKGROUP as u64,
            l.max_compute_invocations_per_workgroup as u64,
        ),
        (
            "max_compute_workgroup_size_x",
            WORKGROUP as u64,
            l.max_compute_workgroup_size_x as u64,
        ),
        // three arrays of SORT_N words in topk_common.wgsl
        (
            "max_compute_workgroup_storage_size",
            3 * 4 * SORT_N as u64,
            l.max_compute_workgroup_storage_size as u64,
        ),
        (
            "max_storage_buffers_per_shader_stage",
            4,
            l.max_storage_buffers_per_shader_stage as u64,
        ),
        (
            "max_uniform_buffers_per_shader_stage",
            1,
            l.max_uniform_buffers_per_shader_stage as u64,
        ),
        (
            "max_compute_workgroups_per_dimension",
            1,
            l.max_compute_workgroups_per_dimension as u64,
        ),
    ];
    for (limit, need, have) in checks {
        if have < need {
            return Err(GpuError::LimitTooSmall { limit, need, have });
        }
    }
    Ok(())
}

impl GpuContext {
    /// Open the default adapter and compile the kernels.
    pub async fn new() -> Result<Self, GpuError> {
        Self::with_options(GpuOptions::default()).await
    }

    /// Native convenience: [`GpuContext::new`] driven to completion with `pollster`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(options: GpuOptions) -> Result<Self, GpuError> {
        pollster::block_on(Self::with_options(options))
    }

    /// Open an adapter as `options` says and compile the kernels.
    pub async fn with_options(options: GpuOptions) -> Result<Self, GpuError> {
        // Vulkan / Metal / DX12 natively, WebGPU in the browser (`WGPU_BACKEND` overrides natively).
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::PRIMARY.with_env(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: options.power_preference,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let adapter_limits = adapter.limits();
        check_limits(&adapter_limits)?;
        let f16 = options.allow_f16 && adapter.features().contains(wgpu::Features::SHADER_F16);
        let required_features = if f16 {
            wgpu::Features::SHADER_F16
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("latentlens"),
                required_features,
                required_limits: adapter_limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::RequestDevice {
                adapter: info.name.clone(),
                msg: e.to_string(),
            })?;
        let limits = device.limits();

        let lost = Arc::new(Mutex::new(None::<String>));
        let lost_cb = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut slot) = lost_cb.lock() {
                *slot = Some(format!("{reason:?}: {msg}"));
            }
        });
        let uncaptured = Arc::new(Mutex::new(None::<String>));
        let uncaptured_cb = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = uncaptured_cb.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));

        let mut max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        if let Some(cap) = options.max_binding_bytes {
            max_binding = max_binding.min(cap);
        }
        max_binding &= !3;

        let pipelines = Pipelines {
            lut: compile(&device, Kernel::Lut).await?,
            pq_scan: compile(&device, Kernel::PqScan).await?,
            exact: compile(&device, Kernel::ExactTopk).await?,
            exact_f16: if f16 {
                Some(compile(&device, Kernel::ExactTopkF16).await?)
            } else {
                None
            },
            merge: compile(&device, Kernel::TopkMerge).await?,
        };
        Ok(GpuContext {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                limits,
                f16,
                max_binding,
                lost,
                uncaptured,
                pipelines,
            }),
        })
    }

    /// The adapter's description (name, backend, device type).
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The device limits in force.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// Whether f16 storage kernels are available ([`Precision::F16`]).
    pub fn has_shader_f16(&self) -> bool {
        self.inner.f16
    }

    /// Most bytes bound per storage buffer (device limit, or the option's cap); data larger
    /// than this is split into chunks.
    pub fn max_binding_bytes(&self) -> u64 {
        self.inner.max_binding
    }

    /// The wgpu device (to share it with other GPU code).
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    pub(crate) fn pipeline(&self, kernel: Kernel) -> Result<&wgpu::ComputePipeline, GpuError> {
        let p = &self.inner.pipelines;
        match kernel {
            Kernel::Lut => Ok(&p.lut),
            Kernel::PqScan => Ok(&p.pq_scan),
            Kernel::ExactTopk => Ok(&p.exact),
            Kernel::ExactTopkF16 => p
                .exact_f16
                .as_ref()
                .ok_or(GpuError::MissingFeature("shader-f16")),
            Kernel::TopkMerge => Ok(&p.merge),
        }
    }

    /// Fail early when the device was lost or an error escaped the error scopes.
    pub(crate) fn check_alive(&self, what: &'static str) -> Result<(), GpuError> {
        if let Ok(slot) = self.inner.lost.lock() {
            if let Some(msg) = slot.as_ref() {
                return Err(GpuError::DeviceLost(msg.clone()));
            }
        }
        if let Ok(mut slot) = self.inner.uncaptured.lock() {
            if let Some(msg) = slot.take() {
                return Err(GpuError::Kernel { what, msg });
            }
        }
        Ok(())
    }

    /// Error if a storage binding of `bytes` exceeds the (possibly capped) binding limit.
    pub(crate) fn check_binding(&self, what: &'static str, bytes: u64) -> Result<(), GpuError> {
        if bytes > self.inner.max_binding {
            return Err(GpuError::LimitTooSmall {
                limit: "max_storage_buffer_binding_size",
                need: bytes,
                have: self.inner.max_binding,
            });
        }
        let _ = what;
        Ok(())
    }

    pub(crate) fn max_workgroups(&self) -> u32 {
        self.inner.limits.max_compute_workgroups_per_dimension
    }

    /// Buffer of `usage` (plus `COPY_DST`) holding `bytes`, padded to 4 bytes and never
    /// empty. Written through the queue rather than `mapped_at_creation`, so that a lost
    /// device surfaces as an error at the next check instead of a panic inside wgpu.
    pub(crate) fn buffer_with(&self, label: &str, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let size = (bytes.len() as u64).max(4).div_ceil(4) * 4;
        let buf = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            self.inner.queue.write_buffer(&buf, 0, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.inner.queue.write_buffer(&buf, whole as u64, &tail);
        }
        buf
    }

    /// Storage buffer initialised with `bytes` (padded to 4 bytes, never empty). Readable
    /// back (`COPY_SRC`) because kernels that work in place read their result from it.
    pub(crate) fn storage_init(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        self.buffer_with(label, bytes, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC)
    }

    /// Uniform buffer holding one params struct.
    pub(crate) fn uniform_init<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.buffer_with(label, bytemuck::bytes_of(value), wgpu::BufferUsages::UNIFORM)
    }

    /// Uninitialised storage buffer a kernel writes (at least 4 bytes).
    pub(crate) fn storage_out(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).div_ceil(4) * 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// Bind group 0 of `kernel` with `buffers` at bindings 0, 1, ….
    pub(crate) fn bind(
        &self,
        kernel: Kernel,
        buffers: &[&wgpu::Buffer],
    ) -> Result<wgpu::BindGroup, GpuError> {
        let pipeline = self.pipeline(kernel)?;
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        Ok(self
            .inner
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(kernel.file_name()),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            }))
    }

    /// Record one dispatch of `kernel`.
    pub(crate) fn dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        kernel: Kernel,
        bind: &wgpu::BindGroup,
        groups: (u32, u32),
    ) -> Result<(), GpuError> {
        let max = self.max_workgroups();
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
        let pipeline = self.pipeline(kernel)?;
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(kernel.file_name()),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
        Ok(())
    }

    pub(crate) fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Open validation and out-of-memory error scopes around GPU work.
    pub(crate) fn scopes(&self) -> Scopes {
        let oom = self
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        Scopes { validation, oom }
    }

    /// Submit `enc` after copying `src[..bytes]` into a mappable buffer, wait for the GPU
    /// (asynchronously on the web), and return the bytes.
    pub(crate) async fn submit_and_read(
        &self,
        what: &'static str,
        scopes: Scopes,
        mut enc: wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<u8>, GpuError> {
        let size = bytes.max(4).div_ceil(4) * 4;
        let staging = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("latentlens readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, size);
        self.inner.queue.submit(Some(enc.finish()));
        if let Err(e) = scopes.finish(what).await {
            // a lost device shows up first as validation errors on its dead objects
            #[cfg(not(target_arch = "wasm32"))]
            let _ = self.inner.device.poll(wgpu::PollType::Poll);
            return Err(match self.check_alive(what) {
                Err(lost @ GpuError::DeviceLost(_)) => lost,
                _ => e,
            });
        }
        self.check_alive(what)?;

        let (tx, rx) = futures::channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.lost_or(what, e.to_string()))?;
        let mapped = rx
            .await
            .map_err(|_| self.lost_or(what, "map callback dropped".into()))?;
        mapped.map_err(|e| self.lost_or(what, e.to_string()))?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| self.lost_or(what, e.to_string()))?;
            view[..bytes as usize].to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    fn lost_or(&self, what: &'static str, msg: String) -> GpuError {
        match self.check_alive(what) {
            Err(e) => e,
            Ok(()) => GpuError::Readback { what, msg },
        }
    }
}

/// Error scopes around a piece of GPU work; [`Scopes::finish`] reports what they caught.
pub(crate) struct Scopes {
    validation: wgpu::ErrorScopeGuard,
    oom: wgpu::ErrorScopeGuard,
}

impl Scopes {
    pub(crate) async fn finish(self, what: &'static str) -> Result<(), GpuError> {
        let v = self.validation.pop().await;
        let o = self.oom.pop().await;
        if let Some(e) = v.or(o) {
            return Err(GpuError::Kernel {
                what,
                msg: e.to_string(),
            });
        }
        Ok(())
    }
}

async fn compile(device: &wgpu::Device, kernel: Kernel) -> Result<wgpu::ComputePipeline, GpuError> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let source = kernel.source();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(kernel.file_name()),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(kernel.file_name()),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    if let Some(e) = scope.pop().await {
        return Err(GpuError::Kernel {
            what: kernel.file_name(),
            msg: e.to_string(),
        });
    }
    Ok(pipeline)
}

/// Work split of one chunk of rows for the scan kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockPlan {
    /// Rows per workgroup (a multiple of the 512-row step).
    pub rows_per_wg: u32,
    /// Workgroups along x (candidate lists per query for this chunk).
    pub groups: u32,
}

/// Rows handled per workgroup step (`STEP` in `topk_common.wgsl`).
pub const STEP: u32 = 512;

/// Aim for enough workgroups to fill a GPU (nq × groups ≈ 512) while keeping the candidate
/// lists few; never more groups than the dispatch limit allows.
pub(crate) fn plan_blocks(n_rows: u32, nq: u32, max_groups: u32) -> BlockPlan {
    let want_groups = 512u32.div_ceil(nq.max(1)).max(1);
    let mut rows_per_wg = n_rows.div_ceil(want_groups).max(1).div_ceil(STEP) * STEP;
    rows_per_wg = rows_per_wg.max(n_rows.div_ceil(max_groups.max(1)).div_ceil(STEP) * STEP);
    let groups = n_rows.div_ceil(rows_per_wg).max(1);
    BlockPlan {
        rows_per_wg,
        groups,
    }
}

/// Validate `k` for the kernels.
pub(crate) fn check_k(k: usize) -> Result<u32, GpuError> {
    if k == 0 || k > MAX_K {
        return Err(GpuError::InvalidInput(format!(
            "k = {k}: the GPU top-k needs 1 <= k <= {MAX_K}"
        )));
    }
    Ok(k as u32)
}

/// Split `[nq, k]` kernel output into per-query hit lists.
pub(crate) fn split_results(out: &[Candidate], nq: usize, k: usize) -> Vec<Vec<Candidate>> {
    (0..nq)
        .map(|q| {
            out.get(q * k..(q + 1) * k)
                .unwrap_or(&[])
                .iter()
                .copied()
                .filter(Candidate::is_hit)
                .collect()
        })
        .collect()
}

/// Decode little-endian candidate bytes.
pub(crate) fn candidates_from_bytes(bytes: &[u8]) -> Vec<Candidate> {
    bytes
        .chunks_exact(12)
        .map(|c| Candidate {
            score: f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            row: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            tag: u32::from_le_bytes([c[8], c[9], c[10], c[11]]),
        })
        .collect()
}

/// Decode little-endian f32 bytes.
pub(crate) fn f32s_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `a * b` as u64 bytes-count helper with overflow check.
pub(crate) fn bytes_of_count(count: usize, elem: usize, what: &str) -> Result<u64, GpuError> {
    count
        .checked_mul(elem)
        .map(|b| b as u64)
        .ok_or_else(|| GpuError::InvalidInput(format!("{what}: size overflows")))
}

/// Field offsets of a uniform params struct, for the layout test against naga.
pub type FieldOffsets = &'static [(&'static str, usize)];

/// Every uniform params struct: (WGSL file, WGSL struct name, Rust size, field offsets).
pub fn uniform_layouts() -> Vec<(&'static str, &'static str, usize, FieldOffsets)> {
    vec![
        (
            "lut.wgsl",
            "LutParams",
            std::mem::size_of::<lut::LutParams>(),
            lut::LutParams::FIELDS,
        ),
        (
            "pq_scan.wgsl",
            "ScanParams",
            std::mem::size_of::<pq_scan::ScanParams>(),
            pq_scan::ScanParams::FIELDS,
        ),
        (
            "exact_topk.wgsl",
            "ExactParams",
            std::mem::size_of::<exact_topk::ExactParams>(),
            exact_topk::ExactParams::FIELDS,
        ),
        (
            "exact_topk_f16.wgsl",
            "ExactParams",
            std::mem::size_of::<exact_topk::ExactParams>(),
            exact_topk::ExactParams::FIELDS,
        ),
        (
            "topk_merge.wgsl",
            "MergeParams",
            std::mem::size_of::<topk_merge::MergeParams>(),
            topk_merge::MergeParams::FIELDS,
        ),
        (
            "topk_common.wgsl",
            "Candidate",
            std::mem::size_of::<Candidate>(),
            CANDIDATE_FIELDS,
        ),
    ]
}

const CANDIDATE_FIELDS: FieldOffsets = &[
    ("score", std::mem::offset_of!(Candidate, score)),
    ("row", std::mem::offset_of!(Candidate, row)),
    ("tag", std::mem::offset_of!(Candidate, tag)),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cover_every_row_within_the_dispatch_limit() {
        for &(n, nq, max) in &[
            (1u32, 1u32, 65535u32),
            (100_000, 64, 65535),
            (100_000, 1, 65535),
            (5_000_000, 1, 100),
            (511, 3, 1),
        ] {
            let p = plan_blocks(n, nq, max);
            assert_eq!(p.rows_per_wg % STEP, 0, "{p:?}");
            assert!(
                p.groups as u64 * p.rows_per_wg as u64 >= n as u64,
                "{p:?} leaves rows out of {n}"
            );
            assert!(
                (p.groups - 1) as u64 * (p.rows_per_wg as u64) < n.max(1) as u64,
                "{p:?}: an empty workgroup"
            );
            assert!(p.groups <= max, "{p:?} over the dispatch limit {max}");
        }
    }

    #[test]
    fn compose_keeps_enable_directives_first() {
        let k = "enable f16;\n// requires: topk_common.wgsl\nfn main() {}\n";
        let s = compose_wgsl(k, "const X: u32 = 1u;");
        assert!(s.starts_with("enable f16;\nconst X"), "{s}");
        assert_eq!(compose_wgsl("fn f() {}", "const X: u32 = 1u;"), "fn f() {}");
    }

    #[test]
    fn reference_topk_orders_by_score_row_tag_and_drops_nan() {
        let c = |score: f32, row: u32, tag: u32| Candidate { score, row, tag };
        let got = topk_reference(
            vec![
                c(1.0, 5, 1),
                c(f32::NAN, 0, 0),
                c(2.0, 9, 0),
                c(1.0, 5, 0),
                c(1.0, 3, 2),
                Candidate::EMPTY,
            ],
            10,
        );
        assert_eq!(
            got,
            vec![c(2.0, 9, 0), c(1.0, 3, 2), c(1.0, 5, 0), c(1.0, 5, 1)]
        );
    }
}
