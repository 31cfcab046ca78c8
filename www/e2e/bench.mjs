// `./build.sh bench page`: the page in headless chromium with the embedded
// default model and bank (the controlled VLM + its SmolLM2 bank; `LATENTLENS_BENCH_PRESET=tiny`
// measures the tiny test model instead). Cold = a fresh browser context (empty HTTP cache);
// warm = a reload in the same context (ETag revalidation). Time to first
// neighbours is measured from navigation start to the page's
// `first-neighbours` performance mark (model + bank download, wasm start,
// model build, forward of a bundled photo, the three lenses for one patch).
// Then the time to search all patches × all query layers × three methods.
// Prints a table; the last line is one JSON object.
import { launch, serve, ROOT } from "./common.mjs";
import { join } from "node:path";

const RUNS = Number(process.env.LATENTLENS_BENCH_RUNS ?? 3);
const server = await serve(join(ROOT, "www/dist"));
const browser = await launch();
const PRESET = process.env.LATENTLENS_BENCH_PRESET ?? "default";
const presetQs = PRESET === "default" ? "" : `preset=${encodeURIComponent(PRESET)}&`;
const url = `${server.url}?${presetQs}sample=chelsea.png`;

async function firstNeighbours(page, url) {
  await page.goto(url);
  await page.waitForFunction(() => performance.getEntriesByName("first-neighbours").length > 0, null, { timeout: 120000 });
  return page.evaluate(() => performance.getEntriesByName("first-neighbours")[0].startTime);
}
function byteCounter(ctx) {
  const c = { bytes: 0, requests: 0 };
  ctx.on("requestfinished", async (req) => {
    try {
      const s = await req.sizes();
      c.bytes += s.responseBodySize + s.responseHeadersSize;
      c.requests++;
    } catch { /* request gone */ }
  });
  return c;
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const cold = [], warm = [], coldBytes = [], warmBytes = [], searchGpu = [], searchCpu = [];
let queries = 0, gpuNote = "", otherBackend = "gpu=1";
// WebGPU search measured only within this budget per run (a software adapter can take minutes).
const GPU_BUDGET_MS = Number(process.env.LATENTLENS_BENCH_GPU_BUDGET_MS ?? 120000);
const within = (p, ms) => Promise.race([p, new Promise((r) => setTimeout(() => r(null), ms))]);
for (let i = 0; i < RUNS; i++) {
  // Timed runs carry no request listener: Playwright's network events (one per response, plus
  // sizes()) cost CPU on a 2-core machine and slowed the cold load by ~0.5 s. Bytes are
  // counted in a run of their own below.
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  cold.push(await firstNeighbours(page, url));
  // The page moves to WebGPU after the first neighbours when it has a hardware adapter; on a
  // software fallback adapter it stays on the CPU (data-search says which).
  await page.waitForSelector("body[data-search]", { timeout: 120000 });
  await page.waitForSelector('body[data-bank="complete"]', { timeout: 120000 }); // search the whole bank
  const backend = await page.getAttribute("body", "data-search");
  const r = await page.evaluate(() => window.latentlensPage.searchAll(10));
  (backend === "webgpu" ? searchGpu : searchCpu).push(r.ms);
  queries = r.queries;
  warm.push(await firstNeighbours(page, url));
  if (i === 0) otherBackend = backend === "webgpu" ? "gpu=0" : "gpu=1";
  await ctx.close();
}
// Bytes downloaded up to the first neighbours (+300 ms), cold and after a reload: one untimed run.
{
  const ctx = await browser.newContext();
  const counter = byteCounter(ctx);
  const page = await ctx.newPage();
  await firstNeighbours(page, url);
  await new Promise((r) => setTimeout(r, 300));
  coldBytes.push(counter.bytes);
  await page.waitForSelector('body[data-bank="complete"]', { timeout: 120000 });
  await new Promise((r) => setTimeout(r, 1000)); // the held cache writes
  counter.bytes = 0;
  await firstNeighbours(page, url);
  await new Promise((r) => setTimeout(r, 300));
  warmBytes.push(counter.bytes);
  await ctx.close();
}
await browser.close();

// The other backend, once, after every timed run, in a browser of its own (closed after, so a
// WebGPU search still running on a software adapter cannot slow another measurement):
// ?gpu=0 (CPU search) or ?gpu=1 (WebGPU even on a software adapter), within a time budget.
{
  const b = await launch();
  const page = await (await b.newContext()).newPage();
  await page.goto(`${server.url}?${presetQs}${otherBackend}&sample=chelsea.png`);
  await page.waitForFunction(() => performance.getEntriesByName("first-neighbours").length > 0, null, { timeout: 120000 });
  await page.waitForSelector('body[data-bank="complete"]', { timeout: 120000 });
  await page.waitForSelector("body[data-search]", { timeout: 300000 });
  const b2 = await page.getAttribute("body", "data-search");
  const r2 = await within(page.evaluate(() => window.latentlensPage.searchAll(10)), b2 === "webgpu" ? GPU_BUDGET_MS : 1e9);
  if (r2) (b2 === "webgpu" ? searchGpu : searchCpu).push(r2.ms);
  else gpuNote = `WebGPU search of all patches × layers (?${otherBackend}) did not finish within ${GPU_BUDGET_MS} ms`;
  await b.close();
}
server.stop();

const f = (x) => x.toFixed(0).padStart(8);
const what = PRESET === "default"
  ? "embedded default: controlled VLM (EfficientNet-Lite0 + connector + SmolLM2-135M) + SmolLM2 bank"
  : `preset ${PRESET}`;
console.log(`page benchmark (headless chromium; ${what}; first image's model forward on the CPU, wasm)`);
console.log(`runs: ${RUNS}, medians (cold runs: ${cold.map((x) => x.toFixed(0)).join(", ")} ms)`);
console.log(`  first neighbours, cold cache   ${f(median(cold))} ms   (${(median(coldBytes) / 1e6).toFixed(2)} MB downloaded)`);
console.log(`  first neighbours, warm cache   ${f(median(warm))} ms   (${(median(warmBytes) / 1e6).toFixed(3)} MB downloaded)`);
console.log(`  search all patches × layers    ${f(median(searchCpu))} ms   CPU search (${queries} patch queries, k=10, 3 methods)`);
if (searchGpu.length) console.log(`  search all patches × layers    ${f(median(searchGpu))} ms   WebGPU search (headless: software adapter, SwiftShader)`);
if (gpuNote) console.log(`  note: ${gpuNote}`);
console.log(`  floor: first neighbours < 5000 ms cold: ${median(cold) < 5000 ? "met" : "NOT MET"}`);
console.log(JSON.stringify({
  bench: "page", preset: PRESET, runs: RUNS,
  first_neighbours_cold_ms: Math.round(median(cold)), first_neighbours_cold_runs_ms: cold.map(Math.round), first_neighbours_warm_ms: Math.round(median(warm)),
  search_all_cpu_ms: Math.round(median(searchCpu)), search_all_webgpu_ms: searchGpu.length ? Math.round(median(searchGpu)) : null,
  search_all_queries: queries, webgpu_search_measured: searchGpu.length > 0, note: gpuNote || null,
  bytes_cold: median(coldBytes), bytes_warm: median(warmBytes), floor_cold_ms: 5000, floor_met: median(cold) < 5000,
}));
