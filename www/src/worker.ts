// The Worker that owns the wasm module: downloads (with progress), the model
// forward and every search run here, so the UI thread never freezes.
// Requests are handled one at a time, in arrival order; the bank's row chunks
// load beside them (pumpBank), so queries answer from the first chunk on.
import init, { BankDownload, Inspector, SceneMaker, holdCacheWrites, releaseCacheWrites, type BankProgress, type DownloadProgress, type Scene } from "latentlens";
import type { FromWorker, LayerSummary, LoadResult, PresetSpec, QueryResult, Request, WireError } from "./protocol";

const K = 5;
let inspector: Inspector | null = null;
let wasmReady: Promise<unknown> | null = null;

function post(m: FromWorker) {
  (self as unknown as Worker).postMessage(m);
}

function named(name: string, message: string): Error {
  const e = new Error(message);
  e.name = name;
  return e;
}

/** Download progress from the wasm module (ranges, Cache API) → a progress bar per file. */
function progress(p: DownloadProgress) {
  const file = decodeURIComponent(new URL(p.url).pathname.split("/").pop() || p.url);
  const label = file.endsWith(".llbank") ? "bank" : file;
  if (p.loaded >= p.total) console.debug(`latentlens worker: ${file} ${p.total} bytes in at ${performance.now().toFixed(0)} ms${p.fromCache ? " (cache)" : ""}`);
  post({ type: "progress", label, loaded: p.loaded, total: p.total, rate: p.bytesPerS, done: p.loaded >= p.total, fromCache: p.fromCache });
}

/** Cache API writes are held while a load downloads and until its first neighbours are
 *  posted (they compete with the download and the forward for the CPU: ~0.7 s of a 4.5 s cold
 *  start on 2 cores), then made; on an error at once, so a reload resumes from what arrived.
 *  A page that never queries gets them 10 s after the load. */
let holding = false;
async function releaseWrites() {
  if (!holding) return;
  holding = false;
  const n = await releaseCacheWrites();
  console.debug(`latentlens worker: ${n} held cache writes made at ${performance.now().toFixed(0)} ms`);
}

async function load(p: PresetSpec): Promise<LoadResult> {
  try {
    const r = await loadModelAndBank(p);
    if (r.bankError) await releaseWrites();
    else setTimeout(() => void releaseWrites(), 10000);
    return r;
  } catch (e) {
    await releaseWrites();
    throw e;
  }
}

async function loadModelAndBank(p: PresetSpec): Promise<LoadResult> {
  if (!wasmReady) wasmReady = init();
  await wasmReady;
  holdCacheWrites();
  holding = true;
  bankGen++; // stops the previous bank's pump
  inspector?.free();
  inspector = null;
  post({ type: "status", text: "downloading the model and the bank…" });
  const t0 = performance.now();
  console.debug(`latentlens worker: model download starts at ${t0.toFixed(0)} ms`);
  // The bank's header, quantizers and first row chunk download beside the model; the
  // model check happens when it is installed.
  const gen = ++bankGen;
  const bankDl = p.bankUrl ? BankDownload.fromUrl(p.bankUrl, progress) : null;
  bankDl?.catch(() => { /* reported below, once the model is in */ });
  let opened: BankDownload | null = null;
  try {
    inspector = await Inspector.fromUrl(p.modelName, p.modelBase, progress);
  } catch (e) {
    await bankDl?.then((b) => b.free(), () => {});
    throw e;
  }
  const t1 = performance.now();
  let bank = null;
  let bankError: string | null = null;
  if (bankDl) {
    try {
      opened = await bankDl;
      console.debug(`latentlens worker: bank's first chunk in ${(performance.now() - t1).toFixed(0)} ms after the model`);
      post({ type: "status", text: "reading the bank…" });
      const insp = inspector, b = opened;
      opened = null; // installBank consumes it, even when it refuses the bank
      bank = await insp.installBank(b);
      if (!bank.progress.complete) setTimeout(() => void pumpBank(insp, gen), 0); // after this answer is posted
    } catch (e) {
      opened?.free();
      bankError = errorText(e);
    }
  }
  console.debug(`latentlens worker: model ${(t1 - t0).toFixed(0)} ms, bank installed ${(performance.now() - t1).toFixed(0)} ms after it`);
  return { model: inspector.modelInfo(), bank, backend: inspector.backend(), bankError };
}

/** The bank by HTTP Range requests (chunks cached in the Cache API), with progress.
 *  Resolves once its first row chunk is in; the rest loads beside the requests. */
async function loadBank(url: string) {
  const insp = need();
  post({ type: "status", text: "reading the bank…" });
  const gen = ++bankGen;
  const info = await insp.loadBankUrl(url, progress);
  if (!info.progress.complete) setTimeout(() => void pumpBank(insp, gen), 0); // after this answer is posted
  return info;
}

/** Loads the bank's remaining row chunks one by one, outside the request queue (a
 *  query runs between two chunks and sees every chunk loaded before it starts),
 *  posting the progress after each so the page refines its columns. Stops when the
 *  bank is complete, on an error (posted), or when another model or bank replaces it. */
let bankGen = 0;
async function pumpBank(insp: Inspector, gen: number) {
  while (gen === bankGen) {
    let p: BankProgress | null;
    try {
      p = await insp.loadNextBankChunk();
    } catch (e) {
      await releaseWrites();
      if (gen === bankGen) post({ type: "bank", progress: insp.bankProgress(), backend: insp.backend(), error: errorText(e) });
      return;
    }
    if (gen !== bankGen || p === null) return;
    post({ type: "bank", progress: p, backend: insp.backend() });
    if (p.complete) return;
  }
}

function need(): Inspector {
  if (!inspector) throw named("StateError", "no model loaded yet: choose a preset and press Load");
  return inspector;
}

async function query(patch: number, layer: number, k: number): Promise<QueryResult> {
  const insp = need();
  // Read before the LatentLens query: rows only grow, so it searched at least these
  // (`complete` is exact: a query that started on fewer rows cannot claim it).
  const bank = insp.bankProgress();
  const t0 = performance.now();
  const latent = insp.bankInfo() ? await insp.query(patch, layer, "latent", k) : null;
  const t1 = performance.now();
  const embedding = await insp.query(patch, layer, "embedding", k);
  const t2 = performance.now();
  const logit = await insp.query(patch, layer, "logit", k);
  console.debug(`latentlens worker: query layer ${layer}: latent ${(t1 - t0).toFixed(0)} ms, embedding ${(t2 - t1).toFixed(0)} ms, logit ${(performance.now() - t2).toFixed(0)} ms`);
  return { latent, embedding, logit, bank };
}

async function layerSummary(layer: number): Promise<LayerSummary> {
  const insp = need();
  if (!insp.bankInfo()) return { layer, contextualMinusVocab: null, latentTop1: null };
  const lat = await insp.queryAll(layer, "latent", K);
  const emb = await insp.queryAll(layer, "embedding", K);
  return {
    layer,
    contextualMinusVocab: lat.map((l, i) => (l[0]?.score ?? 0) - (emb[i]?.[0]?.score ?? 0)),
    latentTop1: lat.map((l) => l[0]?.word ?? ""),
  };
}

async function searchAll(k: number) {
  const insp = need();
  const t0 = performance.now();
  const n = insp.numStates;
  const methods: ("latent" | "embedding" | "logit")[] = insp.bankInfo() ? ["latent", "embedding", "logit"] : ["embedding", "logit"];
  let queries = 0;
  const patches = insp.imageInfo()?.patches.length ?? 0;
  for (let l = 0; l < n; l++) for (const m of methods) { await insp.queryAll(l, m, k); queries += patches; }
  return { ms: performance.now() - t0, queries };
}

/** A generated scene (emoji objects, caption, per-patch ground truth) from the artwork
 *  bundle next to the page (fetched once). */
let scenes: Promise<SceneMaker> | null = null;
async function scene(seed: number, bundleUrl: string): Promise<Scene> {
  if (!wasmReady) wasmReady = init();
  await wasmReady;
  if (!scenes) {
    scenes = (async () => {
      const r = await fetch(bundleUrl);
      if (!r.ok) throw named("FetchError", `the scene artwork ${bundleUrl} answered HTTP ${r.status}`);
      return SceneMaker.fromBundle(new Uint8Array(await r.arrayBuffer()));
    })();
    scenes.catch(() => { scenes = null; });
  }
  const s = (await scenes).generate(seed);
  return s;
}

function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

function wire(e: unknown): WireError {
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: "Error", message: String(e) };
}

async function handle(r: Request): Promise<unknown> {
  switch (r.type) {
    case "load": return load(r.preset);
    case "loadBank": return loadBank(r.url);
    case "image": return need().runImage(new Uint8Array(r.bytes), r.prompt);
    case "query": return query(r.patch, r.layer, r.k);
    case "layerSummary": return layerSummary(r.layer);
    case "leap": return need().leap();
    case "searchAll": return searchAll(r.k);
    case "gpu": return "gpu" in navigator ? need().enableGpu() : need().backend();
    case "backend": return need().backend();
    case "scene": return scene(r.seed, r.bundleUrl);
  }
}

let queue: Promise<void> = Promise.resolve();
self.onmessage = (ev: MessageEvent<Request>) => {
  const r = ev.data;
  queue = queue.then(async () => {
    try {
      post({ id: r.id, ok: true, result: await handle(r) });
    } catch (e) {
      post({ id: r.id, ok: false, error: wire(e) });
    }
    // The first neighbours are out: now the held cache writes.
    if (r.type === "query") void releaseWrites();
  });
};
post({ type: "ready" });
