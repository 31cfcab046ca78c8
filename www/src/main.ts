// The UI thread: renders; never computes. Every model/bank operation is a
// typed request to the Worker (worker.ts). All text that comes from a model or
// a bank is written with textContent — never as HTML.
import type { Backend, BankProgress, ImageInfo, Leap, Neighbour, Patch, Scene } from "latentlens";
import type { Event, FromWorker, LayerSummary, PresetSpec, QueryResult, Request, ResultMap, SearchAllResult } from "./protocol";

const K = 5;
const qs = new URLSearchParams(location.search);
const SMOLVLM = "https://huggingface.co/HuggingFaceTB/SmolVLM-256M-Instruct/resolve/main/";
const PRESETS: Record<string, PresetSpec> = {
  default: {
    label: "Controlled VLM: EfficientNet-Lite0 → trained connector → SmolLM2-135M (trained on synthetic scenes)",
    modelBase: "./default/controlled/",
    modelName: "latentlens controlled VLM v1",
    bankUrl: "./default/smollm2.llbank",
  },
  tiny: {
    label: "Embedded test model: tiny LLaVA (CLIP + Llama), random weights",
    modelBase: "./default/model/",
    modelName: "tiny-llava-clip-llama (random weights, test model)",
    bankUrl: "./default/bank.llbank",
  },
  smolvlm: { label: "SmolVLM-256M-Instruct", modelBase: SMOLVLM, modelName: "HuggingFaceTB/SmolVLM-256M-Instruct", bankUrl: "" },
};

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const el = <K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

// ---- worker RPC ----------------------------------------------------------
const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
let nextId = 1;
const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
worker.onmessage = (ev: MessageEvent<FromWorker>) => {
  const m = ev.data;
  if ("id" in m) {
    const p = pending.get(m.id);
    pending.delete(m.id);
    if (!p) return;
    if (m.ok) p.resolve(m.result);
    else { const e = new Error(m.error.message); e.name = m.error.name; p.reject(e); }
  } else onEvent(m);
};
type Req = Request extends infer R ? (R extends { id: number } ? Omit<R, "id"> : never) : never;
function call<T extends keyof ResultMap>(r: Req & { type: T }, transfer: Transferable[] = []): Promise<ResultMap[T]> {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    worker.postMessage({ ...r, id }, transfer);
  });
}

// ---- state -----------------------------------------------------------------
interface State {
  loaded: boolean;
  hasBank: boolean;
  image: ImageInfo | null;
  bitmap: ImageBitmap | null;
  tile: number;
  layer: number;
  hover: number | null;
  locked: number | null;
  summary: LayerSummary | null;
  numStates: number;
  /** The generated scene shown (its per-patch ground truth), or null for photos. */
  scene: Scene | null;
  /** How much of the bank is loaded (LatentLens answers from these rows), or null without a bank. */
  bank: BankProgress | null;
}
const st: State = { loaded: false, hasBank: false, image: null, bitmap: null, tile: 0, layer: 0, hover: null, locked: null, summary: null, numStates: 0, scene: null, bank: null };
const selected = () => st.hover ?? st.locked;

// ---- progress, notices, errors ---------------------------------------------
const bars = new Map<string, HTMLElement>();
function onEvent(e: Event) {
  if (e.type === "progress") {
    let row = bars.get(e.label);
    if (!row) {
      row = el("div", "bar");
      row.append(el("span", "barLabel"), el("progress"), el("span", "barText"));
      $("progress").append(row);
      bars.set(e.label, row);
    }
    const [label, prog, text] = Array.from(row.children) as [HTMLElement, HTMLProgressElement, HTMLElement];
    label.textContent = e.label;
    if (e.total) { prog.max = e.total; prog.value = e.loaded; } else prog.removeAttribute("value");
    const cached = e.fromCache ? ` · ${mb(e.fromCache)} from cache` : "";
    text.textContent = `${mb(e.loaded)}${e.total ? " / " + mb(e.total) : ""} · ${mb(e.rate)}/s${cached}${e.done ? " ✓" : ""}`;
  } else if (e.type === "status") setStatus(e.text);
  else if (e.type === "bank") onBankChunk(e);
}

// ---- progressive bank: results refine as its row chunks arrive -----------------
const bankPct = (p: BankProgress) => Math.floor((100 * p.rowsLoaded) / Math.max(1, p.rowsTotal));
/** Shows how much of the bank LatentLens searched; body[data-bank] = none | partial | complete | error. */
function setBank(p: BankProgress | null, error = false) {
  st.bank = p;
  document.body.dataset.bank = error ? "error" : !p ? "none" : p.complete ? "complete" : "partial";
  $("bankState").textContent = p && !p.complete
    ? `· bank ${bankPct(p)}% loaded (${p.rowsLoaded.toLocaleString("en")} of ${p.rowsTotal.toLocaleString("en")} contexts)${error ? " — stopped" : ": results refine as the rest arrives"}`
    : "";
}
let lastBankRefresh = 0;
function onBankChunk(e: Extract<Event, { type: "bank" }>) {
  if (!st.loaded || !st.hasBank) return; // a late event of a bank replaced meanwhile
  setBank(e.progress, e.error !== undefined);
  if (e.error) { showError(`The bank stopped loading — ${e.error} (LatentLens shows what was loaded; reload to resume)`); return; }
  showBackend(e.backend);
  if (document.body.dataset.search) document.body.dataset.search = e.backend.search;
  const done = e.progress?.complete ?? false;
  // Refine what is shown: at most every 400 ms while chunks arrive, always at the end.
  if (!st.image || (!done && performance.now() - lastBankRefresh < 400)) return;
  lastBankRefresh = performance.now();
  void refreshLayer();
  if (done) void refreshLeap();
}
const mb = (b: number) => (b >= 1e6 ? (b / 1e6).toFixed(1) + " MB" : (b / 1e3).toFixed(1) + " kB");
function setStatus(t: string) { $("modelLabel").textContent = t; }
function showError(e: unknown) {
  const box = $("error");
  box.hidden = false;
  box.textContent = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
function clearError() { $("error").hidden = true; $("error").textContent = ""; }
function notice(t: string) { const n = $("notice"); n.hidden = !t; n.textContent = t; }

// ---- loading ---------------------------------------------------------------
function currentPreset(): PresetSpec {
  const v = ($("preset") as HTMLSelectElement).value;
  if (v === "custom") {
    const modelBase = ($("customModel") as HTMLInputElement).value.trim() || PRESETS.default.modelBase;
    return { label: "custom", modelBase, modelName: modelBase, bankUrl: ($("customBank") as HTMLInputElement).value.trim() };
  }
  return PRESETS[v] ?? PRESETS.default;
}

async function loadPreset() {
  clearError();
  const rel = currentPreset();
  // Absolute URLs: the worker resolves relative ones against its own script URL.
  const abs = (u: string) => (u ? new URL(u, location.href).href : "");
  const p = { ...rel, modelBase: abs(rel.modelBase), bankUrl: abs(rel.bankUrl) };
  st.loaded = false;
  setBank(null);
  bars.clear();
  $("progress").replaceChildren();
  setStatus(`loading ${p.label}…`);
  document.body.dataset.state = "loading";
  try {
    const r = await call({ type: "load", preset: p });
    st.loaded = true;
    st.hasBank = r.bank !== null;
    setBank(r.bank?.progress ?? null, r.bankError !== null);
    st.numStates = r.model.numStates;
    gpuPending = true;
    delete document.body.dataset.search;
    const layer = $("layer") as HTMLInputElement;
    layer.max = String(r.model.numStates - 1);
    st.layer = Math.min(st.layer, r.model.numStates - 1);
    layer.value = String(st.layer);
    $("layerOut").textContent = String(st.layer);
    setStatus(`${p.label} · ${r.model.family} · ${r.model.numStates - 1} layers · d=${r.model.hiddenSize}` +
      (r.bank ? ` · bank: ${r.bank.rows} contexts, layers ${r.bank.layers.join(",")}` : " · no bank"));
    showBackend(r.backend);
    if (r.bankError) showError(`The bank could not be loaded — ${r.bankError}`);
    else if (!r.bank) $("col-latent").replaceChildren(el("li", "muted", "No bank for this model: LatentLens needs one (custom URL)."));
    document.body.dataset.state = "loaded";
    if (st.bitmap && lastImageBytes) await runImage(lastImageBytes.slice(0));
    // No image soon: move the search to WebGPU anyway.
    setTimeout(() => { if (gpuPending && !document.body.classList.contains("busy")) void enableGpu(); }, 1500);
  } catch (e) {
    document.body.dataset.state = "error";
    setStatus("not loaded");
    showError(e);
  }
}

function showBackend(b: Backend) {
  const on = (x: string) => (x === "webgpu" ? "WebGPU" : "CPU");
  $("backend").textContent = `model on ${on(b.model)}, search on ${on(b.search)}`;
  $("backend").title = b.modelNotice;
  const why = !("gpu" in navigator) ? "this browser has no WebGPU: search runs on the CPU (WebAssembly)"
    : gpuPending ? "search runs on the CPU (WebAssembly) until WebGPU is ready" : softwareGpu || b.notice;
  notice(b.search === "webgpu" ? "" : `Note: ${why}.`);
}

/** Moves the search to WebGPU (when there is an adapter) after the first results: the
 *  first neighbours never wait for shader compilation. */
let gpuPending = false;
/** Set when the only WebGPU adapter is a software fallback (SwiftShader): slower than the CPU path. */
let softwareGpu = "";
async function enableGpu() {
  gpuPending = false;
  if (!st.loaded || qs.get("gpu") === "0") return; // ?gpu=0 keeps the search on the CPU
  try {
    // A software adapter runs our WGSL kernels far slower than WebAssembly runs the CPU path
    // (measured: EfficientNet 2.4 s vs 0.23 s), so the page stays on the CPU there unless
    // ?gpu=1 asks for WebGPU anyway.
    if (qs.get("gpu") !== "1" && "gpu" in navigator) {
      const gpu = (navigator as unknown as { gpu: { requestAdapter(): Promise<{ info?: { isFallbackAdapter?: boolean; architecture?: string } } | null> } }).gpu;
      const info = (await gpu.requestAdapter())?.info;
      if (info?.isFallbackAdapter) {
        softwareGpu = `the only WebGPU adapter here is a software fallback (${info.architecture || "software"}), slower than the CPU path: the model and the search stay on the CPU (WebAssembly); add ?gpu=1 to the URL to use it anyway`;
        const b = await call({ type: "backend" });
        showBackend(b);
        document.body.dataset.search = b.search;
        return;
      }
    }
    const b = await call({ type: "gpu" });
    showBackend(b);
    document.body.dataset.search = b.search;
    if (st.image) await refreshLayer();
  } catch (e) { showError(e); }
}

// ---- image -----------------------------------------------------------------
let lastImageBytes: ArrayBuffer | null = null;
async function takeImage(blob: Blob, scene: Scene | null = null) {
  clearError();
  st.scene = scene;
  if (!scene) $("sceneCaption").textContent = "";
  const bytes = await blob.arrayBuffer();
  try {
    st.bitmap = await createImageBitmap(blob);
  } catch {
    showError("ImageError: this file is not an image the browser can decode (use PNG or JPEG)");
    return;
  }
  lastImageBytes = bytes.slice(0);
  drawCanvas();
  if (!st.loaded) { showError("StateError: load a model first"); return; }
  await runImage(bytes);
}

async function runImage(bytes: ArrayBuffer) {
  document.body.dataset.state = "running";
  setBusy(true);
  try {
    st.image = await call({ type: "image", bytes }, [bytes]);
    console.info(`latentlens: forward ${st.image.timings.visionMs} ms (decode, vision, connector) + ${st.image.timings.llmMs} ms (LLM)`);
    st.locked = st.locked !== null && st.locked < st.image.patches.length ? st.locked : 0;
    st.hover = null;
    const tiles = $("tile") as HTMLSelectElement;
    tiles.replaceChildren(...Array.from({ length: st.image.numTiles }, (_, i) =>
      Object.assign(el("option", undefined, i === st.image!.numTiles - 1 && st.image!.numTiles > 1 ? `${i} (global)` : String(i)), { value: String(i) })));
    tiles.disabled = st.image.numTiles < 2;
    st.tile = st.image.patches[st.locked]?.tile ?? 0;
    tiles.value = String(st.tile);
    ($("layer") as HTMLInputElement).disabled = false;
    await Promise.all([refreshLayer(), refreshLeap()]);
    document.body.dataset.state = "ready";
  } catch (e) {
    document.body.dataset.state = "error";
    showError(e);
  } finally {
    setBusy(false);
  }
}
function setBusy(b: boolean) { document.body.classList.toggle("busy", b); }

// ---- canvas: image, patch grid, tint, selection ----------------------------
const canvas = $("canvas") as HTMLCanvasElement;
function scale(): number {
  if (!st.bitmap) return 1;
  const maxW = Math.min(480, ($("stage").clientWidth || 480));
  return Math.min(maxW / st.bitmap.width, 480 / st.bitmap.height);
}
function tilePatches(): Patch[] {
  return st.image ? st.image.patches.filter((p) => p.tile === st.tile) : [];
}
function drawCanvas() {
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  if (!st.bitmap) { ctx.clearRect(0, 0, canvas.width, canvas.height); return; }
  const s = scale();
  canvas.width = Math.round(st.bitmap.width * s);
  canvas.height = Math.round(st.bitmap.height * s);
  ctx.drawImage(st.bitmap, 0, 0, canvas.width, canvas.height);
  if (!st.image) return;
  const sel = selected();
  const tint = ($("tint") as HTMLInputElement).checked ? st.summary?.contextualMinusVocab : null;
  for (const p of tilePatches()) {
    const [x0, y0, x1, y1] = p.rect.map((v) => v * s);
    if (tint && tint[p.index] !== undefined) {
      const d = tint[p.index];
      const a = Math.min(0.45, Math.abs(d) * 2 + 0.08);
      ctx.fillStyle = d >= 0 ? `rgba(40,110,230,${a})` : `rgba(235,130,20,${a})`;
      ctx.fillRect(x0, y0, x1 - x0, y1 - y0);
    }
    ctx.strokeStyle = "rgba(255,255,255,0.35)";
    ctx.lineWidth = 1;
    ctx.strokeRect(x0 + 0.5, y0 + 0.5, x1 - x0 - 1, y1 - y0 - 1);
  }
  for (const [idx, color, w] of [[st.locked, "#ffd400", 3], [sel, "#ff2d55", 2]] as const) {
    if (idx === null || !st.image.patches[idx] || st.image.patches[idx].tile !== st.tile) continue;
    const [x0, y0, x1, y1] = st.image.patches[idx].rect.map((v) => v * s);
    ctx.strokeStyle = color;
    ctx.lineWidth = w;
    ctx.strokeRect(x0 + 1, y0 + 1, x1 - x0 - 2, y1 - y0 - 2);
  }
}
function patchAt(ev: MouseEvent): number | null {
  const r = canvas.getBoundingClientRect();
  const s = scale() * (r.width ? canvas.width / r.width : 1);
  const x = (ev.clientX - r.left) * (canvas.width / Math.max(1, r.width)) / scale();
  const y = (ev.clientY - r.top) * (canvas.height / Math.max(1, r.height)) / scale();
  void s;
  const hit = tilePatches().find((p) => x >= p.rect[0] && x < p.rect[2] && y >= p.rect[1] && y < p.rect[3]);
  return hit ? hit.index : null;
}

// ---- neighbours ------------------------------------------------------------
let queryGen = 0;
async function refreshColumns() {
  const p = selected();
  if (!st.image || p === null) return;
  const info = st.image.patches[p];
  const truth = st.scene && st.scene.patches.length === st.image.patches.length ? st.scene.patches[p] : null;
  const shows = truth ? ` · ground truth: ${truth.objects.length ? truth.objects.join(", ") : "background"} on ${truth.background.join("/") || "?"}` : "";
  $("patchLabel").textContent = `patch ${p} · tile ${info.tile} · row ${info.row} · col ${info.col}` + (st.locked === p && st.hover === null ? " (locked)" : "") + shows;
  const gen = ++queryGen;
  const ol = $("columns");
  // Marked again once this selection's results are shown (tests wait for that).
  delete ol.dataset.patch;
  delete ol.dataset.layer;
  try {
    const layer = st.layer;
    const r: QueryResult = await call({ type: "query", patch: p, layer, k: K });
    // A newer query was asked meanwhile (a bank chunk arrived, the selection moved): show
    // this answer only while it is still for what is selected (the worker answers in order,
    // so the newer answer replaces it when it comes).
    if (gen !== queryGen && (selected() !== p || st.layer !== layer)) return;
    renderColumn("latent", r.latent);
    renderColumn("embedding", r.embedding);
    renderColumn("logit", r.logit);
    if (performance.getEntriesByName("first-neighbours").length === 0) performance.mark("first-neighbours");
    if (gpuPending) void enableGpu();
    // LatentLens searched part of the bank: say so (the columns refine as chunks arrive).
    if (r.latent && r.bank && !r.bank.complete) ol.dataset.partial = String(bankPct(r.bank));
    else delete ol.dataset.partial;
    if (gen !== queryGen) return; // the newer answer sets the marks tests wait for
    ol.dataset.patch = String(p);
    ol.dataset.layer = String(st.layer);
  } catch (e) { showError(e); }
}
function renderColumn(method: string, list: Neighbour[] | null) {
  const ol = $(`col-${method}`);
  if (list === null) {
    ol.replaceChildren(el("li", "muted", "No bank loaded: LatentLens needs one."));
    return;
  }
  ol.replaceChildren(...list.map((n) => {
    const li = el("li", "nb");
    li.dataset.word = n.word;
    li.dataset.score = String(n.score);
    const head = el("div", "nbHead");
    head.append(el("span", "word", n.word), el("span", "score", n.prob !== undefined ? `${n.score.toFixed(2)} · p=${n.prob.toFixed(3)}` : n.score.toFixed(3)));
    if (n.bankLayer !== undefined) head.append(el("span", "bankLayer", `bank L${n.bankLayer}`));
    li.append(head);
    if (n.sentence !== undefined) {
      const s = el("div", "sentence");
      const [a, b] = n.charSpan ?? [0, 0];
      s.append(document.createTextNode(n.sentence.slice(0, a)), el("mark", undefined, n.sentence.slice(a, b)), document.createTextNode(n.sentence.slice(b)));
      li.append(s);
    } else if (n.token !== n.word) {
      li.append(el("div", "sentence muted", `token ${JSON.stringify(n.token)} #${n.tokenId}`));
    }
    return li;
  }));
}

async function refreshLayer() {
  $("layerOut").textContent = String(st.layer);
  const colsP = refreshColumns();
  if (st.hasBank && st.image) {
    try {
      const s = await call({ type: "layerSummary", layer: st.layer });
      if (s.layer === st.layer) st.summary = s;
    } catch (e) { showError(e); }
  } else st.summary = null;
  drawCanvas();
  await colsP;
}

// ---- Mid-Layer Leap chart (cells with text, no HTML) ------------------------
async function refreshLeap() {
  const box = $("leap");
  if (!st.hasBank || !st.image) { box.textContent = "Load a bank and an image."; return; }
  box.textContent = "computing…";
  try {
    const partial = st.bank !== null && !st.bank.complete;
    const leap: Leap = await call({ type: "leap" });
    renderLeap(leap, partial);
  } catch (e) { box.textContent = ""; showError(e); }
}
function renderLeap(leap: Leap, partial: boolean) {
  const box = $("leap");
  box.classList.remove("muted");
  const grid = el("div", "leapGrid");
  grid.style.gridTemplateColumns = `4em repeat(${leap.bankLayers.length}, minmax(2.5em, 1fr))`;
  grid.append(el("span", "leapCorner", "query ╲ bank"), ...leap.bankLayers.map((b) => el("span", "leapHead", `L${b}`)));
  leap.counts.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    const lab = el("button", "leapRow", `L${leap.queryLayers[i]}`);
    lab.type = "button";
    lab.title = "show this query layer";
    lab.onclick = () => setLayer(leap.queryLayers[i]);
    grid.append(lab);
    row.forEach((c, j) => {
      const share = c / total;
      const cell = el("span", "leapCell", share > 0 ? `${Math.round(share * 100)}%` : "");
      cell.style.background = `rgba(40,110,230,${share.toFixed(3)})`;
      cell.title = `query layer ${leap.queryLayers[i]}: ${c} of ${total} patches' best match from bank layer ${leap.bankLayers[j]}`;
      grid.append(cell);
    });
  });
  const note = partial ? " (from the first chunks of the bank; recomputed when it is complete)" : "";
  if (partial) box.dataset.partial = "1";
  else delete box.dataset.partial;
  box.replaceChildren(el("p", "sub", `Share of patches whose top-1 LatentLens match comes from each bank layer${note}.`), grid);
}

// ---- interaction -----------------------------------------------------------
function setLayer(l: number) {
  st.layer = Math.max(0, Math.min(st.numStates - 1, l));
  ($("layer") as HTMLInputElement).value = String(st.layer);
  void refreshLayer();
}
function moveSelection(dr: number, dc: number) {
  if (!st.image) return;
  const cur = st.image.patches[st.locked ?? 0];
  if (!cur) return;
  const ps = tilePatches();
  const target = ps.find((p) => p.row === cur.row + dr && p.col === cur.col + dc);
  if (target) { st.locked = target.index; st.hover = null; drawCanvas(); void refreshColumns(); }
}

canvas.addEventListener("mousemove", (ev) => {
  const p = patchAt(ev);
  if (p !== st.hover) { st.hover = p; drawCanvas(); if (p !== null) void refreshColumns(); }
});
canvas.addEventListener("mouseleave", () => { st.hover = null; drawCanvas(); void refreshColumns(); });
canvas.addEventListener("click", (ev) => {
  const p = patchAt(ev);
  if (p !== null) { st.locked = p; st.hover = null; drawCanvas(); void refreshColumns(); $("stage").focus(); }
});
$("stage").addEventListener("keydown", (ev) => {
  const moves: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
  const m = moves[ev.key];
  if (m) { ev.preventDefault(); moveSelection(m[0], m[1]); }
  else if (ev.key === "PageUp") { ev.preventDefault(); setLayer(st.layer + 1); }
  else if (ev.key === "PageDown") { ev.preventDefault(); setLayer(st.layer - 1); }
});
$("layer").addEventListener("input", () => setLayer(Number(($("layer") as HTMLInputElement).value)));
$("tint").addEventListener("change", drawCanvas);
$("tile").addEventListener("change", () => {
  st.tile = Number(($("tile") as HTMLSelectElement).value);
  const first = tilePatches()[0];
  if (first) st.locked = first.index;
  drawCanvas();
  void refreshColumns();
});
$("preset").addEventListener("change", () => {
  $("customFields").hidden = ($("preset") as HTMLSelectElement).value !== "custom";
});
$("load").addEventListener("click", () => void loadPreset());
$("file").addEventListener("change", () => {
  const f = ($("file") as HTMLInputElement).files?.[0];
  if (f) void takeImage(f);
});
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  const f = ev.dataTransfer?.files?.[0];
  if (f) void takeImage(f);
});
drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); ($("file") as HTMLInputElement).click(); } });
window.addEventListener("resize", drawCanvas);

// ---- generated scenes (the controlled VLM's kind of data, with ground truth) --
async function generateScene(seed?: number) {
  const s = seed ?? Math.floor(Math.random() * 1e9);
  try {
    const scene = await call({ type: "scene", seed: s, bundleUrl: new URL("./default/scenes.bin", location.href).href });
    $("sceneCaption").textContent = `Scene ${scene.seed}: “${scene.caption}”`;
    const png = new Blob([scene.png as BlobPart], { type: "image/png" });
    await takeImage(png, scene);
  } catch (e) { showError(e); }
}
$("scene").addEventListener("click", () => void generateScene());

// ---- bundled sample photos -------------------------------------------------
interface Sample { file: string; title: string; credit: string }
async function loadSamples() {
  try {
    const r = await fetch("./samples/index.json");
    if (!r.ok) return;
    const list: Sample[] = await r.json();
    $("samples").replaceChildren(el("span", undefined, "or try:"), ...list.map((s) => {
      const b = el("button", "sample", s.title);
      b.type = "button";
      b.title = s.credit;
      b.dataset.file = s.file;
      b.onclick = async () => {
        const res = await fetch(`./samples/${s.file}`);
        if (res.ok) await takeImage(await res.blob());
      };
      return b;
    }));
  } catch { /* no samples bundled */ }
}

// ---- automation hooks (Playwright tests and `./build.sh bench page`) ----------
declare global { interface Window { latentlensPage: { searchAll(k: number): Promise<SearchAllResult>; setLayer(l: number): void; selectPatch(p: number): void; image(): ImageInfo | null } } }
window.latentlensPage = {
  image: () => st.image,
  searchAll: (k: number) => call({ type: "searchAll", k }),
  setLayer,
  selectPatch: (p: number) => {
    st.locked = p;
    st.hover = null;
    if (st.image?.patches[p]) { st.tile = st.image.patches[p].tile; ($("tile") as HTMLSelectElement).value = String(st.tile); }
    drawCanvas();
    void refreshColumns();
  },
};

// URL parameters: ?preset=NAME picks a preset (default, tiny, smolvlm); ?model=URL&bank=URL
// selects the custom preset.
const presetParam = qs.get("preset");
if (presetParam && presetParam in PRESETS) ($("preset") as HTMLSelectElement).value = presetParam;
if (qs.get("model") || qs.get("bank")) {
  ($("preset") as HTMLSelectElement).value = "custom";
  $("customFields").hidden = false;
  ($("customModel") as HTMLInputElement).value = qs.get("model") ?? "";
  ($("customBank") as HTMLInputElement).value = qs.get("bank") ?? "";
}
void loadSamples();
void loadPreset().then(async () => {
  // ?sample=chelsea.png runs a bundled photo once loaded (benchmarks, links).
  const sample = qs.get("sample");
  if (sample && /^[\w.-]+$/.test(sample) && st.loaded) {
    const res = await fetch(`./samples/${sample}`);
    if (res.ok) await takeImage(await res.blob());
  }
});
