//! The browser surface: the ONLY `#[wasm_bindgen]` file. It converts types
//! and errors between JavaScript and the core crate and holds no logic of
//! its own (automerge's "thin boundary"; burn's single `web.rs`).
//!
//! One [`Inspector`] holds a VLM, optionally a bank, and the hidden states of
//! the last image. Methods are camelCase; errors are JavaScript `Error`s whose
//! `name` says the domain (`ModelError`, `BankError`, `ImageError`,
//! `SearchError`, `FetchError`, `GpuError`, `InputError`, `StateError`) and
//! whose `message` says what was wrong and what to do. The TypeScript types
//! are written by hand below (`typescript_custom_section`).
//!
//! Models come in as bytes (the page fetches them itself, with progress).
//! Banks come as bytes ([`Inspector::load_bank`], a [`MemorySource`]) or as a
//! URL ([`Inspector::load_bank_url`]: the HTTP Range [`HttpSource`], chunks
//! kept in the browser's Cache API so a reload downloads nothing).
//!
//! Compute: CPU (wasm) by default; [`Inspector::enable_gpu`], when the browser
//! has a WebGPU adapter, uploads the model whole to the WGSL forward kernels (an HF
//! VLM: [`WgslVlm`]; the controlled VLM, EfficientNet-Lite0 + connector + LLM
//! decoder: [`WgslControlledVlm`]): every layer's hidden states of
//! [`Inspector::run_image`] are computed there. It also uploads every bank
//! layer to the WGSL search kernels ([`GpuPqLayer`]).
//!
//! Banks by URL load progressively: `loadBankUrl` resolves once the first row
//! chunk is in, LatentLens answers from the rows loaded so far, and each
//! [`Inspector::load_next_bank_chunk`] adds a chunk (cached LatentLens results
//! are dropped, so the next query refines). The search stays on the CPU until
//! the bank is complete; then, with WebGPU on, the whole bank is uploaded to
//! the GPU once, from memory (no re-upload per chunk, no second download).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use candle_core::Device;
use js_sys::{Array, Promise, Uint8Array};
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::bank::BankReader;
use crate::fetch::model_files::controlled_parts;
use crate::fetch::{BrowserCache, ByteSource, FetchOptions, HttpSource, MemorySource, ModelFiles, Progress};
use crate::backend::wgsl::HostTextWeights;
use crate::backend::wgsl_controlled::WgslControlledVlm;
use crate::backend::wgsl_vision::{HostVlmWeights, WgslVlm};
use crate::gpu::forward::ForwardKernels;
use crate::gpu::GpuContext;
use crate::search::{merge_layers, GpuPqLayer, Hit};
use crate::lens::{EmbeddingLens, LatentLens, LoadProgress, LogitLens, Method, Neighbour};
use crate::model::tokenizer::Tokenizer;
use crate::model::controlled::ControlledVlm;
use crate::model::vlm::Vlm;
use crate::model::{gguf, AnyVlm, LoadedTextModel};
use crate::model::weights::{load_safetensors_bytes, Weights};
use crate::model::HiddenStates;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Which lens: contextual bank, input embeddings, or final norm + unembedding. */
export type Method = "latent" | "embedding" | "logit";

/** Name of every error this package throws (the `name` of the Error). */
export type LatentLensErrorName =
  | "ModelError" | "BankError" | "ImageError" | "SearchError"
  | "FetchError" | "GpuError" | "InputError" | "StateError";

/** An Error thrown by this package: `name` is the domain, `message` what to do. */
export interface LatentLensError extends Error { name: LatentLensErrorName }

/** One explanation of a visual token (same fields as the CLI's JSON, camelCase). */
export interface Neighbour {
  rank: number;
  /** Cosine similarity (latent, embedding) or logit (logit). */
  score: number;
  /** Softmax probability (logit only). */
  prob?: number;
  /** The whole word (latent) or the decoded token. */
  word: string;
  /** The raw vocabulary string of the matched token. */
  token: string;
  tokenId: number;
  method: Method;
  /** The sentence the contextual embedding came from (latent only). */
  sentence?: string;
  /** UTF-8 byte span of `word` in `sentence` (as the CLI's JSON). */
  span?: [number, number];
  /** The same span in JavaScript string indices (UTF-16), for highlighting. */
  charSpan?: [number, number];
  /** LLM layer of the bank the hit came from (latent only). */
  bankLayer?: number;
}

/** Where a visual token comes from in the original image. */
export interface Patch {
  index: number;
  tile: number;
  row: number;
  col: number;
  /** Pixel rectangle in the original image: [x0, y0, x1, y1). */
  rect: [number, number, number, number];
}

export interface ModelInfo {
  name: string;
  /** "controlled": this project's controlled VLM (EfficientNet-Lite0 → connector → SmolLM2). */
  family: "llava" | "idefics3" | "controlled";
  fingerprint: string;
  /** Hidden states per input: num_hidden_layers + 1 (0 = embeddings). */
  numStates: number;
  hiddenSize: number;
  vocabSize: number;
  defaultPrompt: string;
  /** false when the model always runs with its own instruction (the controlled VLM). */
  takesPrompt: boolean;
}

/** How much of a bank is loaded: LatentLens answers from rows `[0, rowsLoaded)`. */
export interface BankProgress {
  rowsLoaded: number;
  rowsTotal: number;
  chunksLoaded: number;
  chunksTotal: number;
  /** Every chunk is in: results are final (equal to a fully loaded bank's). */
  complete: boolean;
}

export interface BankInfo {
  name: string;
  modelName: string;
  fingerprint: string;
  /** LLM layers the bank holds, in slot order. */
  layers: number[];
  rows: number;
  sentences: number;
  corpus: string;
  bytesPerVector: number;
  /** How much was loaded when this was read (see `Inspector.loadNextBankChunk`). */
  progress: BankProgress;
}

export interface ImageInfo {
  width: number;
  height: number;
  numStates: number;
  numTokens: number;
  numTiles: number;
  patches: Patch[];
  /** Wall time of the last runImage, ms: image decode + preprocessing + vision encoder + connector
   *  (`visionMs`, CPU path) and the LLM (`llmMs`; on WebGPU the whole forward). */
  timings: { visionMs: number; llmMs: number };
}

/** Mid-Layer Leap: for each query layer, how many top-1 LatentLens hits come from each bank layer. */
export interface Leap {
  queryLayers: number[];
  bankLayers: number[];
  /** counts[i][j]: query layer queryLayers[i], bank layer bankLayers[j]. */
  counts: number[][];
}

/** Download progress of a bank read by URL (HTTP Range requests, Cache API). */
export interface DownloadProgress {
  url: string;
  /** Distinct bytes of the file obtained so far (network + cache). */
  loaded: number;
  total: number;
  /** Network throughput, bytes per second. */
  bytesPerS: number;
  /** How many of `loaded` came from the browser cache. */
  fromCache: number;
}

/** A generated scene (SceneMaker.generate). */
export interface Scene {
  seed: number;
  png: Uint8Array;
  caption: string;
  /** Caption nouns of the drawn objects. */
  objects: string[];
  /** Ground truth per cell of the 7×7 grid, row-major: covering objects, background colours. */
  patches: { objects: string[]; background: string[] }[];
}

export interface Backend {
  /** Where the LLM forward (every layer's hidden states) runs; the vision tower runs on the CPU. */
  model: "cpu" | "webgpu";
  /** Why the model forward is not on WebGPU, when it is not. */
  modelNotice: string;
  /** Where the bank search runs (the CPU until the bank is completely loaded). */
  search: "cpu" | "webgpu";
  /** Why it is not WebGPU, when it is not. */
  notice: string;
}
"#;

/// Installs the panic hook once, when the module is instantiated.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// The package version (the crate's).
#[wasm_bindgen(js_name = version)]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Holds the browser-cache writes of every download on this thread (model files, bank chunks)
/// until [`release_cache_writes`]: on a cold load they compete with the download and the model
/// forward for the CPU. Call it before `Inspector.fromUrl` / `BankDownload.fromUrl`, and release
/// once the first results are shown, or on an error (so a reload resumes from what arrived).
#[wasm_bindgen(js_name = holdCacheWrites)]
pub fn hold_cache_writes() {
    BrowserCache::hold_writes();
}

/// Makes the cache writes held since [`hold_cache_writes`]; resolves with how many there were
/// once they are done.
#[wasm_bindgen(js_name = releaseCacheWrites)]
pub async fn release_cache_writes() -> u32 {
    BrowserCache::release_writes().await as u32
}

/// A JavaScript `Error` named after the domain.
fn js_error(name: &str, msg: impl std::fmt::Display) -> JsValue {
    let e = js_sys::Error::new(&msg.to_string());
    e.set_name(name);
    e.into()
}

fn domain_error(e: crate::Error) -> JsValue {
    use crate::Error as E;
    let name = match &e {
        E::Bank(_) => "BankError",
        E::Fetch(_) => "FetchError",
        #[cfg(feature = "gpu")]
        E::Gpu(_) => "GpuError",
        E::Image(_) => "ImageError",
        E::Model(_) => "ModelError",
        E::Search(_) => "SearchError",
    };
    js_error(name, e)
}

fn input_error(msg: impl std::fmt::Display) -> JsValue {
    js_error("InputError", msg)
}

fn state_error(msg: impl std::fmt::Display) -> JsValue {
    js_error("StateError", msg)
}

fn to_js(v: &Value) -> Result<JsValue, JsValue> {
    let s = serde_json::to_string(v).map_err(|e| input_error(format!("cannot serialise a result: {e}")))?;
    js_sys::JSON::parse(&s)
}

/// Bank bytes already in memory as a byte source.
fn bank_source(name: &str, bytes: Vec<u8>) -> Box<dyn ByteSource> {
    Box::new(MemorySource::with_name(name, bytes))
}

/// Chunk size (cache entry, resume unit) for model files, which are always read whole.
const MODEL_CHUNK: u64 = 4 << 20;

/// Name of the Cache API cache holding bank and model chunks.
const CACHE_NAME: &str = "latentlens-v1";

/// A bank URL as an HTTP Range source: chunks cached in the Cache API
/// (when available), progress reported to `on_progress`.
async fn url_source(url: &str, on_progress: Option<js_sys::Function>) -> Result<Box<dyn ByteSource>, JsValue> {
    let src = HttpSource::open(url, fetch_options(on_progress).await).await.map_err(|e| domain_error(e.into()))?;
    Ok(Box::new(src))
}

/// Download options: the Cache API cache (when available) and a progress callback.
async fn fetch_options(on_progress: Option<js_sys::Function>) -> FetchOptions {
    let mut opts = FetchOptions::default();
    if let Ok(cache) = BrowserCache::open(CACHE_NAME).await {
        opts = opts.with_cache(Rc::new(cache));
    }
    if let Some(f) = on_progress {
        opts = opts.with_progress(move |p: &Progress| {
            let v = json!({ "url": p.url, "loaded": p.loaded, "total": p.total, "bytesPerS": p.bytes_per_s, "fromCache": p.from_cache });
            if let Ok(js) = to_js(&v) {
                let _ = f.call1(&JsValue::NULL, &js);
            }
        });
    }
    opts
}

/// Opens a bank, refuses it if built for another model (before reading its
/// rows), loads its first row chunk (every chunk with `whole`) and installs it:
/// queries answer from the rows loaded so far while
/// [`Inspector::load_next_bank_chunk`] brings the rest. A complete bank goes
/// to the GPU at once when one is on.
async fn install_bank(state: &Rc<RefCell<State>>, name: String, source: Box<dyn ByteSource>, whole: bool) -> Result<JsValue, JsValue> {
    let reader = BankReader::open(source).await.map_err(|e| domain_error(e.into()))?;
    let lens = LatentLens::open(reader).await.map_err(|e| domain_error(e.into()))?;
    check_bank_model(state, &lens)?;
    lens.load_next_chunk().await.map_err(|e| domain_error(e.into()))?;
    install_lens(state, name, lens, whole).await
}

/// Refuses (BankError) a bank built for another model than the inspector's, naming both.
fn check_bank_model(state: &Rc<RefCell<State>>, lens: &LatentLens) -> Result<(), JsValue> {
    let s = state.borrow();
    lens.check_model(&s.name, &s.fingerprint).map_err(|e| domain_error(e.into()))
}

/// Installs an opened bank whose model was checked (every chunk with `whole`).
async fn install_lens(state: &Rc<RefCell<State>>, name: String, lens: LatentLens, whole: bool) -> Result<JsValue, JsValue> {
    while whole && lens.load_next_chunk().await.map_err(|e| domain_error(e.into()))?.is_some() {}
    let lens = Rc::new(lens);
    {
        let mut s = state.borrow_mut();
        s.bank = Some(lens.clone());
        s.gpu_bank = None;
        s.bank_name = name.clone();
        s.invalidate(true);
    }
    upload_bank_when_complete(state);
    to_js(&bank_info(&lens, &name))
}

/// A bank opened by URL on its own, before any model: header, manifest,
/// quantizers and first row chunk downloaded (HTTP Range requests, Cache API,
/// progress), so it can download beside the model and be handed to
/// [`Inspector::install_bank`] once the model is built.
#[wasm_bindgen]
pub struct BankDownload {
    url: String,
    lens: LatentLens,
}

#[wasm_bindgen]
impl BankDownload {
    /// Opens the bank at `url` and loads its first row chunk. Rejects
    /// (BankError, FetchError) a file that is not a bank or cannot be read;
    /// which model it belongs to is checked by `Inspector.installBank`.
    #[wasm_bindgen(js_name = fromUrl)]
    pub async fn from_url(
        url: String,
        #[wasm_bindgen(js_name = onProgress, unchecked_param_type = "((p: DownloadProgress) => void) | undefined")]
        on_progress: Option<js_sys::Function>,
    ) -> Result<BankDownload, JsValue> {
        let src = url_source(&url, on_progress).await?;
        let reader = BankReader::open(src).await.map_err(|e| domain_error(e.into()))?;
        let lens = LatentLens::open(reader).await.map_err(|e| domain_error(e.into()))?;
        lens.load_next_chunk().await.map_err(|e| domain_error(e.into()))?;
        Ok(BankDownload { url, lens })
    }

    /// The bank's URL.
    #[wasm_bindgen(getter)]
    pub fn url(&self) -> String {
        self.url.clone()
    }
}

/// With WebGPU on and every chunk of the bank loaded, uploads the bank to the
/// GPU search kernels (once, from memory). Until then, and if the upload
/// fails (`notice` says why), the search runs on the CPU.
fn upload_bank_when_complete(state: &Rc<RefCell<State>>) {
    let (ctx, bank) = {
        let s = state.borrow();
        if s.gpu_bank.is_some() {
            return;
        }
        match (&s.gpu_ctx, &s.bank) {
            (Some(c), Some(b)) if b.is_complete() => (c.clone(), b.clone()),
            _ => return,
        }
    };
    match upload_bank(&ctx, &bank) {
        Ok(layers) => {
            let mut s = state.borrow_mut();
            // Still the same bank (uploading is synchronous, but stay safe).
            if s.bank.as_ref().is_some_and(|b| Rc::ptr_eq(b, &bank)) {
                s.gpu_bank = Some(Rc::new(layers));
                s.gpu_notice = format!("search on WebGPU ({})", ctx.adapter_info().name);
                s.invalidate(true);
            }
        }
        Err(e) => {
            state.borrow_mut().gpu_notice = format!("search runs on the CPU (WebAssembly): uploading the bank to the GPU failed: {e}")
        }
    }
}

/// Every bank layer on the GPU: quantizer, codes and refinement data of the
/// rows loaded (all of them: called once the bank is complete).
fn upload_bank(ctx: &GpuContext, lens: &LatentLens) -> Result<Vec<GpuPqLayer>, crate::Error> {
    let n = lens.bank_layers().len();
    let mut layers = Vec::with_capacity(n);
    for slot in 0..n {
        let layer = lens
            .with_layer_rows(slot, |pq, codes, refine| GpuPqLayer::new(ctx, pq, codes, refine, slot as u16))
            .ok_or_else(|| crate::bank::BankError::Corrupt(format!("bank layer slot {slot} is missing")))??;
        layers.push(layer);
    }
    Ok(layers)
}

/// LatentLens on the GPU: per bank layer top-k (shortlist reranked with the
/// refinement data), merged across layers, read out like the CPU path.
async fn gpu_explain(lens: &LatentLens, gpu: &[GpuPqLayer], queries: &[f32], d: usize, k: usize) -> Result<Vec<Vec<Neighbour>>, JsValue> {
    let q = crate::lens::latent::unit_rows(queries, d); // [Q, d], unit rows: cosine = inner product
    // With exact rows, more candidates per query, reranked by exact cosine as on the CPU path.
    let kk = if lens.reranks_exactly() { k.max(lens.exact_candidates) } else { k };
    let mut per_layer: Vec<Vec<Vec<Hit>>> = Vec::with_capacity(gpu.len());
    for l in gpu {
        per_layer.push(l.search(&q, kk, lens.shortlist).await.map_err(domain_error)?);
    }
    let mut merged = merge_layers(&per_layer, kk).map_err(|e| domain_error(e.into()))?;
    if lens.reranks_exactly() {
        merged = lens.rerank_exact(&q, &merged, k).await.map_err(domain_error)?;
    }
    let mut out = Vec::with_capacity(merged.len());
    for hits in merged {
        out.push(lens.neighbours(&hits).await.map_err(|e| domain_error(e.into()))?);
    }
    Ok(out)
}

/// UTF-8 byte offset → UTF-16 index in `s` (JavaScript string index).
fn utf16_index(s: &str, byte: usize) -> Option<usize> {
    s.get(..byte).map(|p| p.encode_utf16().count())
}

fn neighbour_json(n: &Neighbour) -> Value {
    let mut v = json!({
        "rank": n.rank, "score": n.score, "word": n.word, "token": n.token,
        "tokenId": n.token_id, "method": n.method,
    });
    if let Some(p) = n.prob {
        v["prob"] = json!(p);
    }
    if let Some(s) = &n.sentence {
        v["sentence"] = json!(s);
        if let Some((a, b)) = n.span {
            v["span"] = json!([a, b]);
            if let (Some(ca), Some(cb)) = (utf16_index(s, a), utf16_index(s, b)) {
                v["charSpan"] = json!([ca, cb]);
            }
        }
    }
    if let Some(l) = n.bank_layer {
        v["bankLayer"] = json!(l);
    }
    v
}

fn parse_method(m: &str) -> Result<Method, JsValue> {
    Method::parse(m).ok_or_else(|| input_error(format!("unknown method `{m}`: use \"latent\", \"embedding\" or \"logit\"")))
}

/// Largest `k` the page may ask for (bounds every allocation sized by `k`).
const MAX_K: usize = 256;

/// The hidden states of the image last run, and its size.
struct ImageRun {
    hs: HiddenStates,
    width: u32,
    height: u32,
    tiles: u32,
    /// Wall time of the stages, ms: `[image decode + preprocessing + vision encoder + connector, LLM]`
    /// on the CPU path, `[decode, whole forward]` on the GPU.
    stage_ms: [f64; 2],
}

/// Neighbours of every patch (index = patch), shared with the cache.
type Lists = Rc<Vec<Vec<Neighbour>>>;

/// Everything an [`Inspector`] holds; shared with its pending promises.
struct State {
    vlm: AnyVlm,
    name: String,
    fingerprint: String,
    embedding: Option<Rc<EmbeddingLens>>,
    bank: Option<Rc<LatentLens>>,
    bank_name: String,
    /// The WebGPU context, once [`Inspector::enable_gpu`] found an adapter.
    gpu_ctx: Option<Rc<GpuContext>>,
    /// The bank's layers on the GPU (with `gpu_ctx` and a bank).
    gpu_bank: Option<Rc<Vec<GpuPqLayer>>>,
    /// Why the search is not on the GPU.
    gpu_notice: String,
    /// Where the LLM's decoder is uploaded to the WGSL forward kernels from.
    gpu_source: GpuSource,
    /// The model on the WGSL forward kernels, after a successful `enableGpu`.
    gpu_model: Option<GpuModel>,
    /// Why the model forward is not on the GPU.
    model_notice: String,
    image: Option<Rc<ImageRun>>,
    /// (query layer, method, k) → neighbours of every patch, for the current image.
    cache: HashMap<(usize, Method, usize), Lists>,
    /// Bumped whenever the image, the bank or the search backend changes, so a
    /// search that was running meanwhile does not fill the cache with stale results.
    generation: u64,
}

impl State {
    /// Drops cached results (all, or LatentLens only) and starts a new generation.
    fn invalidate(&mut self, latent_only: bool) {
        if latent_only {
            self.cache.retain(|(_, m, _), _| *m != Method::Latent);
        } else {
            self.cache.clear();
        }
        self.generation += 1;
    }
}

/// A loaded VLM (+ optional bank) and the image last run through it.
#[wasm_bindgen]
pub struct Inspector {
    state: Rc<RefCell<State>>,
}

fn array_bytes(a: &Array, what: &str) -> Result<Vec<Vec<u8>>, JsValue> {
    let mut out = Vec::with_capacity(a.length() as usize);
    for (i, v) in a.iter().enumerate() {
        let u: Uint8Array =
            v.dyn_into().map_err(|_| input_error(format!("{what}[{i}] is not a Uint8Array: pass the file's bytes")))?;
        out.push(u.to_vec());
    }
    Ok(out)
}

fn json_bytes(bytes: &[u8], what: &str) -> Result<Value, JsValue> {
    serde_json::from_slice(bytes).map_err(|e| js_error("ModelError", format!("{what} is not valid JSON ({e}): check the file or URL")))
}

/// Builds an [`Inspector`] from the bytes of a VLM's files.
fn build_inspector(name: &str, config: &[u8], processor_config: &[u8], tokenizer: &[u8], shards: &[&[u8]]) -> Result<Built, JsValue> {
    let dev = Device::Cpu;
    let config = json_bytes(config, "config.json")?;
    let processor_config = json_bytes(processor_config, "preprocessor_config.json")?;
    Vlm::check_config(&config).map_err(|e| domain_error(e.into()))?;
    let tok = Tokenizer::from_json_bytes(tokenizer).map_err(|e| domain_error(e.into()))?;
    if shards.is_empty() {
        return Err(input_error("no weight files: pass the bytes of model.safetensors (or every shard)"));
    }
    let mut w = Weights::default();
    for (i, s) in shards.iter().enumerate() {
        let what = format!("{name} weights file {}", i + 1);
        let part = load_safetensors_bytes(s, &what, &dev).map_err(|e| domain_error(e.into()))?;
        w.extend(part, &what).map_err(|e| domain_error(e.into()))?;
    }
    let vlm = Vlm::from_parts(&config, w.var_builder(&dev), &processor_config, tok, name).map_err(|e| domain_error(e.into()))?;
    Ok((AnyVlm::Hf(Box::new(vlm)), GpuSource::Weights(config, w)))
}

/// How the controlled VLM's LLM file is named in messages.
const GGUF_WHAT: &str = "LLM GGUF";

/// A model built from its files, before its fingerprint is taken.
type Built = (AnyVlm, GpuSource);

/// Builds an [`Inspector`] for the controlled VLM from its three weight files (`text`: the
/// LLM built from `text_gguf`, whole or streamed with [`GgufStream`]).
fn build_controlled(name: &str, vision: &[u8], connector: &[u8], text: LoadedTextModel, text_gguf: Vec<u8>) -> Result<Built, JsValue> {
    let dev = Device::Cpu;
    let vision = load_safetensors_bytes(vision, "vision encoder (EfficientNet-Lite0 safetensors)", &dev).map_err(|e| domain_error(e.into()))?;
    let conn = load_safetensors_bytes(connector, "connector safetensors", &dev).map_err(|e| domain_error(e.into()))?;
    let vlm = ControlledVlm::from_parts(&vision, &conn, text, "connector safetensors", name).map_err(|e| domain_error(e.into()))?;
    Ok((AnyVlm::Controlled(Box::new(vlm)), GpuSource::Gguf(text_gguf)))
}

/// An [`Inspector`] from a built model, its fingerprint taken in Rust (synchronous callers).
fn sync_inspector(name: &str, (vlm, src): Built) -> Result<Inspector, JsValue> {
    let fingerprint = vlm.fingerprint().map_err(|e| domain_error(e.into()))?;
    new_inspector(name, vlm, src, fingerprint)
}

/// The model fingerprint ([`crate::model::fingerprint`]) hashed by the browser's native
/// SHA-256 (`crypto.subtle.digest`: the 113 MB of a SmolLM2 embedding in ~0.1 s instead of
/// ~0.35 s in wasm); the same digest, computed in Rust where SubtleCrypto is missing.
async fn browser_fingerprint(vlm: &AnyVlm) -> Result<String, JsValue> {
    match subtle_fingerprint(vlm).await {
        Ok(f) => Ok(f),
        Err(_) => vlm.fingerprint().map_err(|e| domain_error(e.into())),
    }
}

async fn subtle_fingerprint(vlm: &AnyVlm) -> Result<String, JsValue> {
    use wasm_bindgen::JsCast;
    let fail = |m: &str| JsValue::from_str(m);
    let emb = vlm.text_model().embedding_matrix().to_dtype(candle_core::DType::F32).and_then(|t| t.contiguous()).map_err(|_| fail("embedding"))?;
    let header = crate::model::fingerprint::fingerprint_header(&vlm.tokenizer().vocab_in_id_order(), emb.dims());
    let buf = {
        let (storage, layout) = emb.storage_and_layout();
        let (candle_core::Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) else {
            return Err(fail("not a contiguous CPU tensor"));
        };
        let vals = cpu.as_slice::<f32>().ok().and_then(|v| v.get(a..b)).ok_or_else(|| fail("not f32"))?;
        let bytes: &[u8] = bytemuck::cast_slice(vals);
        let total = u32::try_from(header.len() + bytes.len()).map_err(|_| fail("too large"))?;
        let buf = Uint8Array::new_with_length(total);
        buf.subarray(0, header.len() as u32).copy_from(&header);
        buf.subarray(header.len() as u32, total).copy_from(bytes);
        buf
    };
    let global = js_sys::global();
    let crypto = js_sys::Reflect::get(&global, &JsValue::from_str("crypto"))?;
    let subtle = js_sys::Reflect::get(&crypto, &JsValue::from_str("subtle"))?;
    let digest: js_sys::Function = js_sys::Reflect::get(&subtle, &JsValue::from_str("digest"))?.dyn_into()?;
    let p: Promise = digest.call2(&subtle, &JsValue::from_str("SHA-256"), &buf)?.dyn_into()?;
    let out = wasm_bindgen_futures::JsFuture::from(p).await?;
    let d = Uint8Array::new(&out).to_vec();
    if d.len() != 32 {
        return Err(fail("digest length"));
    }
    Ok(crate::model::fingerprint::fingerprint_from_digest(&d))
}

/// Where the WGSL decoder's weights come from: the HF checkpoint's tensors (sharing storage
/// with the CPU model's) or the GGUF file's bytes.
enum GpuSource {
    /// The parsed `config.json` and the checkpoint's tensors.
    Weights(Value, Weights),
    Gguf(Vec<u8>),
}

/// What runs on the WGSL kernels: a whole HF VLM (vision tower, connector, decoder) or the
/// whole controlled VLM (EfficientNet-Lite0, connector, decoder).
#[derive(Clone)]
enum GpuModel {
    Vlm(Rc<WgslVlm>),
    Controlled(Rc<WgslControlledVlm>),
}

fn new_inspector(name: &str, vlm: AnyVlm, gpu_source: GpuSource, fingerprint: String) -> Result<Inspector, JsValue> {
    let state = State {
        vlm,
        name: name.to_string(),
        fingerprint,
        embedding: None,
        bank: None,
        bank_name: String::new(),
        gpu_ctx: None,
        gpu_bank: None,
        gpu_notice: "search runs on the CPU (WebAssembly): call enableGpu() to use WebGPU".to_string(),
        gpu_source,
        gpu_model: None,
        model_notice: "the model runs on the CPU (WebAssembly): call enableGpu() to use WebGPU".to_string(),
        image: None,
        cache: HashMap::new(),
        generation: 0,
    };
    Ok(Inspector { state: Rc::new(RefCell::new(state)) })
}

#[wasm_bindgen]
impl Inspector {
    /// Loads a VLM from the bytes of its HF files: `config.json`,
    /// `preprocessor_config.json` (or `processor_config.json`),
    /// `tokenizer.json` and the safetensors file(s). `name` is shown in
    /// messages and compared with a bank's model name.
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(
        name: &str,
        config: &[u8],
        #[wasm_bindgen(js_name = processorConfig)] processor_config: &[u8],
        tokenizer: &[u8],
        #[wasm_bindgen(unchecked_param_type = "Uint8Array[]")] weights: Array,
    ) -> Result<Inspector, JsValue> {
        let shards = array_bytes(&weights, "weights")?;
        let refs: Vec<&[u8]> = shards.iter().map(Vec::as_slice).collect();
        sync_inspector(name, build_inspector(name, config, processor_config, tokenizer, &refs)?)
    }

    /// Loads the controlled VLM from the bytes of its three parts: the vision encoder
    /// (EfficientNet-Lite0 safetensors), the connector safetensors and the LLM's GGUF.
    #[wasm_bindgen(js_name = fromControlledBytes)]
    pub fn from_controlled_bytes(name: &str, vision: &[u8], connector: &[u8], gguf: Vec<u8>) -> Result<Inspector, JsValue> {
        let text = LoadedTextModel::from_gguf_bytes(&gguf, GGUF_WHAT).map_err(|e| domain_error(e.into()))?;
        sync_inspector(name, build_controlled(name, vision, connector, text, gguf)?)
    }

    /// Downloads and loads a VLM from its folder URL (a Hugging Face
    /// repository URL or any base URL holding `config.json`,
    /// `tokenizer.json`, `preprocessor_config.json` or
    /// `processor_config.json`, and `model.safetensors` or its shards; or a
    /// controlled-VLM folder: `config.json` naming its three files), in
    /// ranges, cached in the browser's Cache API (a reload or an interrupted
    /// download reads what is cached), reporting progress per file.
    #[wasm_bindgen(js_name = fromUrl)]
    pub async fn from_url(
        name: String,
        base: String,
        #[wasm_bindgen(js_name = onProgress, unchecked_param_type = "((p: DownloadProgress) => void) | undefined")]
        on_progress: Option<js_sys::Function>,
    ) -> Result<Inspector, JsValue> {
        // Whole files: a coarse chunk grid (4 MiB cache entries, 16 MiB requests). Every Cache
        // API entry has a fixed cost in the browser: with 256 KiB entries the cache writes made
        // the cold model download 3× slower (4.8 s vs 1.5 s uncached for 119 MB from localhost).
        let opts = fetch_options(on_progress).await.with_chunk_size(MODEL_CHUNK);
        let opts = FetchOptions { max_request: 4 * MODEL_CHUNK, ..opts };
        // A controlled VLM's LLM is dequantised while its GGUF downloads: after the last byte
        // only the last tensor and the model assembly remain (0.15 s instead of 0.7 s; the
        // download itself slows by ~0.4 s, as it shares the worker thread: docs/results.md).
        let mut stream = LoadedTextModel::gguf_stream(GGUF_WHAT);
        let mut files = ModelFiles::fetch_model_with(&base, &opts, &mut |p| stream.feed(p)).await.map_err(|e| domain_error(e.into()))?;
        let config = files.get("config.json").ok_or_else(|| input_error(format!("{base}: no config.json")))?;
        if let Some(parts) = controlled_parts(config).map_err(|m| js_error("ModelError", m))? {
            let gguf = files.files.remove(&parts[2]).unwrap_or_default();
            let text = stream.finish(&gguf).map_err(|e| domain_error(e.into()))?;
            let part = |i: usize| files.get(&parts[i]).ok_or_else(|| input_error(format!("{base}: no {}", parts[i])));
            let (vlm, src) = build_controlled(&name, part(0)?, part(1)?, text, gguf)?;
            let fp = browser_fingerprint(&vlm).await?;
            return new_inspector(&name, vlm, src, fp);
        }
        let get = |n: &str| files.get(n);
        let config = get("config.json").ok_or_else(|| input_error(format!("{base}: no config.json")))?;
        let tokenizer = get("tokenizer.json").ok_or_else(|| input_error(format!("{base}: no tokenizer.json")))?;
        let processor = get("preprocessor_config.json").or_else(|| get("processor_config.json")).ok_or_else(|| {
            js_error("ModelError", format!("{base}: neither preprocessor_config.json nor processor_config.json: is this a vision-language model?"))
        })?;
        let shards: Vec<&[u8]> = files
            .files
            .iter()
            .filter(|(n, _)| n.ends_with(".safetensors"))
            .map(|(_, b)| b.as_slice())
            .collect();
        let (vlm, src) = build_inspector(&name, config, processor, tokenizer, &shards)?;
        let fp = browser_fingerprint(&vlm).await?;
        new_inspector(&name, vlm, src, fp)
    }

    /// The model: name, family, fingerprint, number of hidden states, sizes.
    #[wasm_bindgen(js_name = modelInfo, unchecked_return_type = "ModelInfo")]
    pub fn model_info(&self) -> Result<JsValue, JsValue> {
        let s = self.state.borrow();
        let cfg = s.vlm.text_model().config();
        to_js(&json!({
            "name": s.name, "family": s.vlm.family(), "fingerprint": s.fingerprint,
            "numStates": cfg.num_hidden_layers + 1, "hiddenSize": cfg.hidden_size,
            "vocabSize": s.vlm.tokenizer().vocab_size(), "defaultPrompt": s.vlm.default_prompt(),
            "takesPrompt": s.vlm.takes_prompt(),
        }))
    }

    /// Number of hidden states per input (`num_hidden_layers + 1`): query layers are `0..numStates`.
    #[wasm_bindgen(getter, js_name = numStates)]
    pub fn num_states(&self) -> usize {
        self.state.borrow().vlm.text_model().config().num_hidden_layers + 1
    }

    /// Loads a bank from its bytes, every row chunk (nothing to wait for: for
    /// progressive results while a bank downloads, use `loadBankUrl`); refuses
    /// (BankError) a bank built for another model, naming both.
    #[wasm_bindgen(js_name = loadBank, unchecked_return_type = "Promise<BankInfo>")]
    pub fn load_bank(&self, name: String, bytes: Vec<u8>) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move { install_bank(&state, name.clone(), bank_source(&name, bytes), true).await })
    }

    /// Loads a bank from its URL with HTTP Range requests (chunks cached in
    /// the browser's Cache API, so a reload reads them locally; an
    /// interrupted download resumes from what is cached), reporting progress.
    /// Refuses (BankError) a bank built for another model before reading its rows.
    /// Resolves once the first row chunk is in: LatentLens answers from it at
    /// once; call `loadNextBankChunk` until it resolves to `null` for the rest.
    #[wasm_bindgen(js_name = loadBankUrl, unchecked_return_type = "Promise<BankInfo>")]
    pub fn load_bank_url(
        &self,
        url: String,
        #[wasm_bindgen(js_name = onProgress, unchecked_param_type = "((p: DownloadProgress) => void) | undefined")]
        on_progress: Option<js_sys::Function>,
    ) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let src = url_source(&url, on_progress).await?;
            install_bank(&state, url, src, false).await
        })
    }

    /// Installs a bank opened with `BankDownload.fromUrl` (which may have
    /// downloaded beside this model), as `loadBankUrl` would have: refuses
    /// (BankError) a bank built for another model; the `BankDownload` is
    /// consumed. Call `loadNextBankChunk` for the rest of the rows.
    #[wasm_bindgen(js_name = installBank, unchecked_return_type = "Promise<BankInfo>")]
    pub fn install_bank(&self, bank: BankDownload) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            check_bank_model(&state, &bank.lens)?;
            install_lens(&state, bank.url, bank.lens, false).await
        })
    }

    /// Moves the LatentLens search to WebGPU when the browser has an adapter
    /// (the WGSL kernels of the bank search; a bank still loading goes there
    /// when its last chunk arrives); otherwise stays on the CPU and says why
    /// in `notice`. Resolves to the backend in use.
    #[wasm_bindgen(js_name = enableGpu, unchecked_return_type = "Promise<Backend>")]
    pub fn enable_gpu(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            if state.borrow().gpu_ctx.is_none() {
                match GpuContext::new().await {
                    Ok(ctx) => {
                        let mut s = state.borrow_mut();
                        s.gpu_notice = format!("search on WebGPU ({})", ctx.adapter_info().name);
                        s.gpu_ctx = Some(Rc::new(ctx));
                    }
                    Err(e) => state.borrow_mut().gpu_notice = format!("search runs on the CPU (WebAssembly): {e}"),
                }
            }
            if let Err(msg) = enable_gpu_model(&state).await {
                state.borrow_mut().model_notice = format!("the model runs on the CPU (WebAssembly): {msg}");
            }
            upload_bank_when_complete(&state);
            to_js(&backend_json(&state.borrow()))
        })
    }

    /// Leaves WebGPU: the search runs on the CPU again.
    #[wasm_bindgen(js_name = disableGpu)]
    pub fn disable_gpu(&self) {
        let mut s = self.state.borrow_mut();
        s.gpu_bank = None;
        s.gpu_model = None;
        s.gpu_ctx = None;
        s.gpu_notice = "search runs on the CPU (WebAssembly): WebGPU switched off".to_string();
        s.model_notice = "the model runs on the CPU (WebAssembly): WebGPU switched off".to_string();
        s.invalidate(true);
    }

    /// Loads the bank's next row chunk (codes of every layer, row metadata;
    /// downloaded with progress for a URL bank). Resolves to the progress
    /// after it, or `null` once every chunk is loaded. Cached LatentLens
    /// results are dropped, so the next query searches the new rows too. Safe
    /// to call while queries run; when the last chunk arrives and WebGPU is on,
    /// the bank is uploaded to the GPU. A failed download rejects
    /// (FetchError) and keeps what was loaded: calling again retries the chunk.
    #[wasm_bindgen(js_name = loadNextBankChunk, unchecked_return_type = "Promise<BankProgress | null>")]
    pub fn load_next_bank_chunk(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let bank = state.borrow().bank.clone().ok_or_else(|| state_error("no bank yet: call loadBank or loadBankUrl first"))?;
            let Some(p) = bank.load_next_chunk().await.map_err(|e| domain_error(e.into()))? else {
                return Ok(JsValue::NULL);
            };
            // The bank may have been replaced while the chunk downloaded: then it is not searched any more.
            let current = state.borrow().bank.as_ref().is_some_and(|b| Rc::ptr_eq(b, &bank));
            if current {
                state.borrow_mut().invalidate(true);
                upload_bank_when_complete(&state);
            }
            to_js(&progress_json(&p))
        })
    }

    /// How much of the bank is loaded, or `null` without a bank.
    #[wasm_bindgen(js_name = bankProgress, unchecked_return_type = "BankProgress | null")]
    pub fn bank_progress(&self) -> Result<JsValue, JsValue> {
        match &self.state.borrow().bank {
            Some(b) => to_js(&progress_json(&b.load_progress())),
            None => Ok(JsValue::NULL),
        }
    }

    /// The loaded bank, or `null`.
    #[wasm_bindgen(js_name = bankInfo, unchecked_return_type = "BankInfo | null")]
    pub fn bank_info(&self) -> Result<JsValue, JsValue> {
        let s = self.state.borrow();
        match &s.bank {
            Some(b) => to_js(&bank_info(b, &s.bank_name)),
            None => Ok(JsValue::NULL),
        }
    }

    /// Runs an image (PNG or JPEG bytes) through the VLM with `prompt` (an
    /// `<image>` placeholder is prepended when missing; default as the CLI's
    /// `inspect`). Resolves to the patch grid. The LLM forward runs on WebGPU
    /// after a successful `enableGpu()` (see `backend()`); if the GPU fails
    /// mid-way, this image is rerun on the CPU and `backend().modelNotice` says why.
    #[wasm_bindgen(js_name = runImage, unchecked_return_type = "Promise<ImageInfo>")]
    pub fn run_image(&self, bytes: &[u8], prompt: Option<String>) -> Promise {
        let state = self.state.clone();
        let bytes = bytes.to_vec();
        future_to_promise(async move {
            let t0 = crate::fetch::clock::now_ms();
            let img = crate::image::decode(&bytes).map_err(|e| domain_error(e.into()))?;
            let (width, height) = (img.width, img.height);
            let mut stage_ms = [crate::fetch::clock::now_ms() - t0, 0.0];
            let t1 = crate::fetch::clock::now_ms();
            let gpu = state.borrow().gpu_model.clone();
            let on_gpu = match gpu {
                Some(GpuModel::Vlm(g)) => {
                    let prepared = {
                        let s = state.borrow();
                        match &s.vlm {
                            AnyVlm::Hf(v) => Some(v.prepare(&img, prompt.as_deref()).map_err(|e| domain_error(e.into()))?),
                            AnyVlm::Controlled(_) => None,
                        }
                    };
                    match prepared {
                        Some((ids, pre)) => match g.forward(&ids, &pre).await {
                            Ok(hs) => Some((hs, pre.num_tiles() as u32)),
                            Err(e) => {
                                gpu_failed(&state, &e);
                                None
                            }
                        },
                        None => None,
                    }
                }
                Some(GpuModel::Controlled(g)) => {
                    // the controlled VLM always runs with its own instruction (as on the CPU)
                    let prepared = match &state.borrow().vlm {
                        AnyVlm::Controlled(c) => Some(c.prepare(&img).map_err(|e| domain_error(e.into()))?),
                        AnyVlm::Hf(_) => None,
                    };
                    match prepared {
                        Some(input) => match g.forward(&input).await {
                            Ok(hs) => Some((hs, 1)),
                            Err(e) => {
                                gpu_failed(&state, &e);
                                None
                            }
                        },
                        None => None,
                    }
                }
                None => None,
            };
            let (hs, tiles) = match on_gpu {
                Some(r) => {
                    stage_ms[1] = crate::fetch::clock::now_ms() - t1;
                    r
                }
                None => {
                    let s = state.borrow();
                    let t = crate::fetch::clock::now_ms();
                    let (input, tiles) = s.vlm.input(&img, prompt.as_deref()).map_err(|e| domain_error(e.into()))?;
                    stage_ms[0] += crate::fetch::clock::now_ms() - t;
                    let t = crate::fetch::clock::now_ms();
                    let layers = s.vlm.decode_cpu(&input).map_err(|e| domain_error(e.into()))?;
                    stage_ms[1] = crate::fetch::clock::now_ms() - t;
                    (input.into_hidden_states(layers), tiles as u32)
                }
            };
            let run = ImageRun { hs, width, height, tiles, stage_ms };
            let info = image_info(&run);
            let mut s = state.borrow_mut();
            s.image = Some(Rc::new(run));
            s.invalidate(false);
            to_js(&info)
        })
    }

    /// The last image's patch grid and sizes, or `null`.
    #[wasm_bindgen(js_name = imageInfo, unchecked_return_type = "ImageInfo | null")]
    pub fn image_info(&self) -> Result<JsValue, JsValue> {
        match &self.state.borrow().image {
            Some(r) => to_js(&image_info(r)),
            None => Ok(JsValue::NULL),
        }
    }

    /// Top-`k` neighbours of one patch at query layer `layer` with `method`.
    #[wasm_bindgen(unchecked_return_type = "Promise<Neighbour[]>")]
    pub fn query(&self, patch: u32, layer: u32, #[wasm_bindgen(unchecked_param_type = "Method")] method: String, k: u32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let list = query_one(&state, patch as usize, layer as usize, &method, k as usize).await?;
            to_js(&Value::Array(list.iter().map(neighbour_json).collect()))
        })
    }

    /// Top-`k` neighbours of every patch at query layer `layer` with `method`
    /// (index = patch index).
    #[wasm_bindgen(js_name = queryAll, unchecked_return_type = "Promise<Neighbour[][]>")]
    pub fn query_all(&self, layer: u32, #[wasm_bindgen(unchecked_param_type = "Method")] method: String, k: u32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let all = query_all(&state, layer as usize, &method, k as usize).await?;
            to_js(&Value::Array(all.iter().map(|l| Value::Array(l.iter().map(neighbour_json).collect())).collect()))
        })
    }

    /// The Mid-Layer Leap of the current image: for every query layer, the
    /// bank layers of the top-1 LatentLens neighbours of all patches.
    #[wasm_bindgen(unchecked_return_type = "Promise<Leap>")]
    pub fn leap(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let (n_states, bank_layers) = {
                let s = state.borrow();
                let bank = s.bank.as_ref().ok_or_else(|| state_error("the Mid-Layer Leap needs a bank: call loadBank first"))?;
                (s.vlm.text_model().config().num_hidden_layers + 1, bank.bank_layers())
            };
            let mut counts = Vec::with_capacity(n_states);
            for l in 0..n_states {
                let all = query_all(&state, l, "latent", 1).await?;
                let mut row = vec![0u32; bank_layers.len()];
                for n in all.iter().filter_map(|v| v.first()) {
                    if let Some(j) = n.bank_layer.and_then(|b| bank_layers.iter().position(|&x| x == b)) {
                        row[j] += 1;
                    }
                }
                counts.push(row);
            }
            to_js(&json!({ "queryLayers": (0..n_states).collect::<Vec<_>>(), "bankLayers": bank_layers, "counts": counts }))
        })
    }

    /// Which compute paths run: the model forward on the CPU; the LatentLens
    /// search on WebGPU after a successful [`enable_gpu`](Self::enable_gpu), else on the CPU.
    #[wasm_bindgen(unchecked_return_type = "Backend")]
    pub fn backend(&self) -> Result<JsValue, JsValue> {
        to_js(&backend_json(&self.state.borrow()))
    }

    /// Frees the hidden states and cached results of the current image.
    #[wasm_bindgen(js_name = clearImage)]
    pub fn clear_image(&self) {
        let mut s = self.state.borrow_mut();
        s.image = None;
        s.invalidate(false);
    }
}

fn backend_json(s: &State) -> Value {
    let on_gpu = s.gpu_ctx.is_some() && (s.gpu_bank.is_some() || s.bank.is_none());
    let notice = match (&s.gpu_ctx, &s.bank) {
        (Some(_), Some(b)) if !b.is_complete() => {
            let p = b.load_progress();
            format!(
                "search runs on the CPU (WebAssembly) while the bank loads ({} of {} rows); it moves to WebGPU with the last chunk",
                p.rows_loaded, p.n_rows
            )
        }
        _ => s.gpu_notice.clone(),
    };
    json!({
        "model": if s.gpu_model.is_some() { "webgpu" } else { "cpu" },
        "modelNotice": s.model_notice,
        "search": if on_gpu { "webgpu" } else { "cpu" },
        "notice": notice,
    })
}

/// Uploads the whole model to the WGSL forward kernels (once; needs `gpu_ctx`).
/// `Err` says why the model stays on the CPU.
async fn enable_gpu_model(state: &Rc<RefCell<State>>) -> Result<(), String> {
    enum Host {
        Vlm(HostVlmWeights),
        /// The controlled VLM's decoder; its vision encoder and connector come from the CPU model.
        Controlled(HostTextWeights),
    }
    let (ctx, host) = {
        let s = state.borrow();
        if s.gpu_model.is_some() {
            return Ok(());
        }
        let Some(ctx) = s.gpu_ctx.clone() else { return Err("no WebGPU adapter".into()) };
        let host = match &s.gpu_source {
            GpuSource::Weights(config, w) => Host::Vlm(HostVlmWeights::from_weights(config, w, &s.name).map_err(|e| e.to_string())?),
            GpuSource::Gguf(bytes) => {
                let mut r = std::io::Cursor::new(bytes.as_slice());
                let content = gguf::read_content(&mut r, "LLM GGUF").map_err(|e| e.to_string())?;
                Host::Controlled(HostTextWeights::from_gguf(&content, &mut r, "LLM GGUF", &Default::default()).map_err(|e| e.to_string())?)
            }
        };
        (ctx, host)
    };
    let fk = ForwardKernels::new(&ctx).await.map_err(|e| e.to_string())?;
    let (model, what) = match host {
        Host::Vlm(h) => (GpuModel::Vlm(Rc::new(WgslVlm::new(&fk, &h).map_err(|e| e.to_string())?)), ""),
        Host::Controlled(h) => {
            let s = state.borrow();
            let AnyVlm::Controlled(cpu) = &s.vlm else { return Err("the GGUF decoder belongs to a controlled VLM".into()) };
            let g = WgslControlledVlm::new(&fk, cpu, &h).map_err(|e| e.to_string())?;
            (GpuModel::Controlled(Rc::new(g)), " (EfficientNet-Lite0, connector and LLM)")
        }
    };
    let name = &ctx.adapter_info().name;
    let adapter = if name.is_empty() { String::new() } else { format!(" ({name})") };
    let mut s = state.borrow_mut();
    s.model_notice = format!("the whole model runs on WebGPU{adapter}{what}");
    s.gpu_model = Some(model);
    Ok(())
}

/// The WGSL forward failed: back to the CPU for this and later images, saying why.
fn gpu_failed(state: &Rc<RefCell<State>>, e: &crate::Error) {
    let mut s = state.borrow_mut();
    s.gpu_model = None;
    s.model_notice = format!("the model runs on the CPU (WebAssembly): the WebGPU forward failed: {e}");
}

fn bank_info(lens: &LatentLens, name: &str) -> Value {
    let m = lens.reader().manifest();
    json!({
        "name": name, "modelName": m.model.name, "fingerprint": m.model.fingerprint,
        "layers": lens.bank_layers(), "rows": m.rows, "sentences": m.sentences,
        "corpus": m.corpus.name, "bytesPerVector": lens.reader().code_bytes(),
        "progress": progress_json(&lens.load_progress()),
    })
}

fn progress_json(p: &LoadProgress) -> Value {
    json!({
        "rowsLoaded": p.rows_loaded, "rowsTotal": p.n_rows, "chunksLoaded": p.chunks_loaded,
        "chunksTotal": p.n_chunks, "complete": p.is_complete(),
    })
}

fn image_info(r: &ImageRun) -> Value {
    let patches: Vec<Value> = r
        .hs
        .patches
        .iter()
        .enumerate()
        .map(|(i, p)| json!({ "index": i, "tile": p.tile, "row": p.row, "col": p.col, "rect": p.rect }))
        .collect();
    json!({
        "width": r.width, "height": r.height, "numStates": r.hs.num_layers(), "numTokens": r.hs.num_tokens(),
        "numTiles": r.tiles, "patches": patches,
        "timings": { "visionMs": r.stage_ms[0].round(), "llmMs": r.stage_ms[1].round() },
    })
}

/// Neighbours of every patch at one layer, computed once per (layer, method, k).
async fn query_all(
    state: &Rc<RefCell<State>>,
    layer: usize,
    method: &str,
    k: usize,
) -> Result<Lists, JsValue> {
    lists(state, layer, method, k, None).await
}

/// The neighbours of one patch: from the every-patch cache when it has this
/// (layer, method, k), else searched for that patch alone (one query row, not
/// the whole image: the first neighbours do not wait for every patch).
async fn query_one(state: &Rc<RefCell<State>>, patch: usize, layer: usize, method: &str, k: usize) -> Result<Vec<Neighbour>, JsValue> {
    let n = state.borrow().image.as_ref().map(|r| r.hs.visual_rows.len()).unwrap_or(0);
    if patch >= n && n > 0 {
        return Err(input_error(format!("patch {patch} is out of range: the image has {n} patches")));
    }
    let got = lists(state, layer, method, k, Some(patch)).await?;
    let one = if got.len() == 1 { got.first() } else { got.get(patch) };
    one.cloned().ok_or_else(|| input_error(format!("patch {patch} is out of range: the image has {n} patches")))
}

/// Neighbours of every patch (`only` = None; cached) or of patch `only` (the
/// cached every-patch lists when present, else a one-row search, not cached).
async fn lists(
    state: &Rc<RefCell<State>>,
    layer: usize,
    method: &str,
    k: usize,
    only: Option<usize>,
) -> Result<Lists, JsValue> {
    let method = parse_method(method)?;
    if k == 0 || k > MAX_K {
        return Err(input_error(format!("k = {k}: ask for between 1 and {MAX_K} neighbours")));
    }
    // Everything needed is cloned out of the state so no borrow is held across an await.
    let (run, bank, gpu, generation) = {
        let s = state.borrow();
        if let Some(hit) = s.cache.get(&(layer, method, k)) {
            return Ok(hit.clone());
        }
        let run = s.image.clone().ok_or_else(|| state_error("no image yet: call runImage first"))?;
        if layer >= run.hs.num_layers() {
            return Err(input_error(format!(
                "layer {layer} is out of range: the model has hidden states 0..{} (0 = embeddings)",
                run.hs.num_layers().saturating_sub(1)
            )));
        }
        (run, s.bank.clone(), s.gpu_bank.clone(), s.generation)
    };
    let d = run.hs.hidden_size;
    let rows: &[usize] = match only {
        Some(p) => run.hs.visual_rows.get(p..p + 1).ok_or_else(|| {
            input_error(format!("patch {p} is out of range: the image has {} patches", run.hs.visual_rows.len()))
        })?,
        None => &run.hs.visual_rows,
    };
    let mut q = Vec::with_capacity(rows.len() * d); // [patches, d]
    for &r in rows {
        q.extend_from_slice(
            run.hs.row(layer, r).ok_or_else(|| input_error(format!("hidden state row {r} of layer {layer} is missing")))?,
        );
    }
    let lists = match method {
        Method::Latent => {
            let bank = bank.ok_or_else(|| state_error("LatentLens needs a bank: call loadBank first"))?;
            match gpu {
                Some(g) => gpu_explain(&bank, &g, &q, d, k).await?,
                None => bank.explain(&q, k).await.map_err(domain_error)?,
            }
        }
        Method::Embedding => {
            let emb = {
                let mut s = state.borrow_mut();
                match &s.embedding {
                    Some(e) => e.clone(),
                    None => {
                        let e = Rc::new(EmbeddingLens::new(s.vlm.text_model()).map_err(|e| domain_error(e.into()))?);
                        s.embedding = Some(e.clone());
                        e
                    }
                }
            };
            let s = state.borrow();
            emb.explain(s.vlm.tokenizer(), &q, k).map_err(|e| domain_error(e.into()))?
        }
        Method::Logit => {
            let s = state.borrow();
            // The last hidden state already went through the final norm (HF convention).
            let normed = layer + 1 == run.hs.num_layers();
            LogitLens::explain(s.vlm.text_model(), s.vlm.tokenizer(), &q, normed, k).map_err(|e| domain_error(e.into()))?
        }
    };
    let lists = Rc::new(lists);
    let mut s = state.borrow_mut();
    if s.generation == generation && only.is_none() {
        s.cache.insert((layer, method, k), lists.clone());
    }
    Ok(lists)
}

/// Synthetic scenes like the controlled VLM's training and evaluation data (emoji objects
/// on coloured backgrounds, with a caption and per-patch ground truth), generated here in
/// the browser from an artwork bundle (`latentlens scenes --bundle`).
#[wasm_bindgen]
pub struct SceneMaker {
    catalog: crate::eval::scenes::Catalog,
}

#[wasm_bindgen]
impl SceneMaker {
    /// Reads the artwork bundle (an `InputError` naming the problem when it is not one).
    #[wasm_bindgen(js_name = fromBundle)]
    pub fn from_bundle(bytes: &[u8]) -> Result<SceneMaker, JsValue> {
        let catalog = crate::eval::scenes::Catalog::from_bundle(bytes).map_err(|e| js_error("InputError", e.to_string()))?;
        Ok(SceneMaker { catalog })
    }

    /// Number of object kinds.
    #[wasm_bindgen(getter, js_name = numKinds)]
    pub fn num_kinds(&self) -> usize {
        self.catalog.kinds.len()
    }

    /// The scene of `seed` (deterministic): PNG bytes, caption, objects and the ground truth
    /// of each 32×32 cell of the 7×7 grid (row-major).
    #[wasm_bindgen(unchecked_return_type = "Scene")]
    pub fn generate(&self, seed: u32) -> Result<JsValue, JsValue> {
        use crate::eval::scenes::{encode_png, generate, SceneConfig};
        let scene = generate(&self.catalog, seed as u64, &SceneConfig::default()).map_err(|e| input_error(e.to_string()))?;
        let png = encode_png(&scene.rgb, scene.size, image::ExtendedColorType::Rgb8).map_err(|e| input_error(e.to_string()))?;
        let info = to_js(&json!({
            "seed": seed,
            "caption": scene.caption,
            "objects": scene.objects.iter().map(|o| o.noun.clone()).collect::<Vec<_>>(),
            "patches": scene.patches.iter().map(|p| json!({"objects": p.objects, "background": p.background})).collect::<Vec<_>>(),
        }))?;
        js_sys::Reflect::set(&info, &JsValue::from_str("png"), &Uint8Array::from(png.as_slice()))?;
        Ok(info)
    }
}
