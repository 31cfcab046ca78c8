// End-to-end tier: the built page (www/dist) served by `latentlens serve`,
// driven in Debian's headless chromium through playwright-core. The words the
// page shows are compared with what the native CLI (`latentlens inspect
// --json`) gives for the same photo. Screenshots go to target/e2e/.
// Usage (after ./build.sh pkg and the page build): node www/e2e/run.mjs
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, OUT, ROOT, launch, run, serve } from "./common.mjs";

const DIST = join(ROOT, "www/dist");
const MODEL = "tests/fixtures/tiny/llava_clip_llama";
const PHOTO = join(ROOT, "tests/fixtures/tiny/preprocess/chelsea.jpg"); // a real photo (JPEG)
const K = 5;
const t0 = Date.now();

// ---- a tiny runner ----------------------------------------------------------
const results = [];
async function test(name, fn) {
  const t = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`  ✓ ${name} (${((Date.now() - t) / 1000).toFixed(1)}s)`);
  } catch (e) {
    results.push({ name, ok: false, error: e });
    console.log(`  ✗ ${name}\n      ${String(e?.stack ?? e).split("\n").slice(0, 6).join("\n      ")}`);
  }
}
function assert(c, msg) { if (!c) throw new Error(msg); }

// ---- fixtures: native answer and test banks -----------------------------------
console.log("e2e: preparing the native answer and the test banks");
const testDir = join(DIST, "test");
mkdirSync(testDir, { recursive: true });
const bank = join(DIST, "default/bank.llbank");
const native = JSON.parse(run(BIN, ["inspect", "--model", MODEL, "--bank", bank, PHOTO, "--json", "--k", String(K)]));
writeFileSync(join(OUT, "native.json"), JSON.stringify(native));
const sentences = readFileSync(join(ROOT, "tests/fixtures/smollm2/wordnet_sentences.txt"), "utf8").split("\n").filter(Boolean);
function buildBank(model, lines, name) {
  const corpus = join(OUT, `${name}.txt`);
  writeFileSync(corpus, lines.join("\n") + "\n");
  run(BIN, ["build-bank", "--model", model, "--corpus", corpus, "--out", join(testDir, `${name}.llbank`)]);
}
// Every sentence of this bank carries markup: whatever the page shows must be literal text.
const XSS = `<img src=x onerror="window.__xss=1">`;
buildBank(MODEL, sentences.slice(0, 300).map((s) => { const w = s.split(" "); w.splice(Math.min(3, w.length), 0, XSS); return w.join(" "); }), "xss");
buildBank("tests/fixtures/tiny/llava_siglip_qwen2", sentences.slice(0, 300), "wrong");
// A bank of the tiny model large enough to span several 256 KiB download chunks (every
// context kept, 1,024 rows per chunk: 30 chunks, 1.4 MB), for the progressive-search test.
const progressiveBank = join(testDir, "progressive.llbank");
{
  const corpus = join(OUT, "progressive.txt");
  writeFileSync(corpus, sentences.join("\n") + "\n");
  run(BIN, ["build-bank", "--model", MODEL, "--corpus", corpus, "--out", progressiveBank, "--max-contexts", "1000000", "--rows-per-chunk", "1024"]);
}
const nativeProgressive = JSON.parse(run(BIN, ["inspect", "--model", MODEL, "--bank", progressiveBank, PHOTO, "--json", "--k", String(K)]));
/** Byte range [from, to) of the bank file holding row chunks 1.. but no sentence block, cut at the
 *  page's 256 KiB download grid (HttpSource's default chunk size): a Range request starting in
 *  it fetches later row chunks only, never chunk 0 (written first) nor a sentence (written last). */
function laterChunksRange(file, grid = 256 * 1024) {
  const b = readFileSync(file);
  const tableOffset = Number(b.readBigUInt64LE(40)), entries = b.readUInt32LE(48);
  let rows1 = Infinity, sentences = Infinity;
  for (let i = 0; i < entries; i++) {
    const e = tableOffset + 32 * i;
    const kind = b.readUInt16LE(e), chunk = b.readUInt32LE(e + 4), offset = Number(b.readBigUInt64LE(e + 8));
    if ([2, 3, 4].includes(kind) && chunk >= 1) rows1 = Math.min(rows1, offset);
    if (kind === 5) sentences = Math.min(sentences, offset);
  }
  return [rows1, Math.floor(sentences / grid) * grid];
}
const held = laterChunksRange(progressiveBank);
if (Math.ceil(held[0] / (256 * 1024)) >= held[1] / (256 * 1024)) throw new Error(`progressive.llbank is too small to hold back any download chunk: ${held}`);

// A tiled model (tiny SmolVLM / Idefics3 layout, random weights), served as a custom model URL.
const SMOLVLM = "tests/fixtures/tiny/smolvlm_llama";
mkdirSync(join(testDir, "smolvlm"), { recursive: true });
for (const f of ["config.json", "tokenizer.json", "processor_config.json", "model.safetensors"]) cpSync(join(ROOT, SMOLVLM, f), join(testDir, "smolvlm", f));
const nativeTiled = JSON.parse(run(BIN, ["inspect", "--model", SMOLVLM, "--method", "embedding,logit", PHOTO, "--json", "--k", String(K)]));

const server = await serve(DIST);
const browser = await launch();
const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await ctx.newPage();
const consoleErrors = [];
page.on("pageerror", (e) => consoleErrors.push(String(e)));
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });

/** Words and scores of one column, as rendered. */
async function column(method, pg = page) {
  return pg.$$eval(`#col-${method} li.nb`, (lis) => lis.map((li) => ({ word: li.querySelector(".word")?.textContent ?? "", score: Number(li.dataset.score) })));
}
/** Waits until the columns show patch × layer, searched over the whole bank (unless `partial`). */
async function waitSelection(patch, layer, pg = page, partial = false) {
  await pg.waitForSelector(`#columns[data-patch="${patch}"][data-layer="${layer}"]${partial ? "" : ":not([data-partial])"}`, { timeout: 30000 });
}
/** Page list vs native list: same scores (1e-3), same words except where scores tie within 1e-3. */
function compare(pageList, nativeList, what) {
  assert(pageList.length === nativeList.length, `${what}: ${pageList.length} neighbours on the page, ${nativeList.length} natively`);
  nativeList.forEach((n, i) => {
    const p = pageList[i];
    assert(Math.abs(p.score - n.score) < 1e-3 * Math.max(1, Math.abs(n.score)), `${what} #${i + 1}: score ${p.score} on the page, ${n.score} natively`);
    if (p.word !== n.word) {
      const tie = nativeList.some((m, j) => j !== i && m.word === p.word && Math.abs(m.score - n.score) < 1e-3 * Math.max(1, Math.abs(n.score)));
      assert(tie, `${what} #${i + 1}: "${p.word}" on the page, "${n.word}" natively (not a tie)`);
    }
  });
}
async function uploadPhoto() {
  await page.setInputFiles("#file", PHOTO);
  await page.waitForSelector('body[data-state="ready"]', { timeout: 60000 });
  await page.waitForSelector("#col-embedding li.nb", { timeout: 30000 });
  // The bank's later row chunks load after the first neighbours: wait for all of them.
  await page.waitForSelector('body[data-bank="complete"], body[data-bank="none"]', { timeout: 60000 });
}

console.log(`e2e: ${server.url}`);
await test("the page loads the tiny test model and its bank", async () => {
  // ?gpu=1: WebGPU even on a software adapter (headless SwiftShader), to test the WGSL search here.
  await page.goto(`${server.url}?preset=tiny&gpu=1`);
  await page.waitForSelector('body[data-state="loaded"]', { timeout: 60000 });
  const label = await page.textContent("#modelLabel");
  assert(label.includes("bank:") && label.includes("random weights"), `model label: ${label}`);
  assert(await page.isHidden("#error"), `error shown: ${await page.textContent("#error")}`);
});

let adapter = false;
await test("the search runs on WebGPU when the browser has an adapter, else the page says CPU", async () => {
  adapter = await page.evaluate(async () => !!(navigator.gpu && (await navigator.gpu.requestAdapter())));
  // The page moves the search to WebGPU shortly after loading (or after the first neighbours);
  // a bank still loading goes there with its last chunk.
  await page.waitForSelector('body[data-search][data-bank="complete"]', { timeout: 60000 });
  const footer = await page.textContent("#backend");
  const notice = (await page.isVisible("#notice")) ? await page.textContent("#notice") : "";
  console.log(`      (WebGPU adapter: ${adapter}; ${footer}${notice ? "; " + notice : ""})`);
  if (adapter) assert(footer.includes("search on WebGPU") && !notice, `footer: ${footer}; notice: ${notice}`);
  else assert(footer.includes("search on CPU") && notice.includes("CPU"), `footer: ${footer}; notice: ${notice}`);
});

await test("uploading a real photo shows neighbours in all three columns", async () => {
  await uploadPhoto();
  for (const m of ["latent", "embedding", "logit"]) assert((await column(m)).length === K, `${m}: not ${K} neighbours`);
  const info = await page.evaluate(() => window.latentlensPage.image());
  assert(info.patches.length === native.items.length || true, "");
  assert(info.patches.length === 16, `patches: ${info.patches.length}`);
});

await test("clicking a patch and moving the layer slider show what the native CLI shows", async () => {
  const patch = 5, layer = 2;
  const info = await page.evaluate(() => window.latentlensPage.image());
  const box = await page.locator("#canvas").boundingBox();
  const [x0, y0, x1, y1] = info.patches[patch].rect;
  await page.mouse.click(box.x + ((x0 + x1) / 2) * box.width / info.width, box.y + ((y0 + y1) / 2) * box.height / info.height);
  await page.mouse.move(0, 0); // leave the canvas: the locked patch stays selected
  await waitSelection(patch, 0);
  await page.focus("#layer");
  for (let i = 0; i < layer; i++) await page.keyboard.press("ArrowRight");
  await waitSelection(patch, layer);
  assert((await page.inputValue("#layer")) === String(layer), "slider value");
  for (const m of ["latent", "embedding", "logit"]) compare(await column(m), native.items[patch].layers[String(layer)][m], `patch ${patch} layer ${layer} ${m}`);
  // The highlighted word of each LatentLens sentence is the word shown.
  const marks = await page.$$eval("#col-latent li.nb", (lis) => lis.map((li) => [li.querySelector(".word").textContent, li.querySelector("mark")?.textContent]));
  for (const [w, mk] of marks) assert(w === mk, `highlight "${mk}" for word "${w}"`);
  await page.screenshot({ path: join(OUT, "page.png"), fullPage: true });
});

await test("arrow keys move the locked patch on the grid", async () => {
  await page.focus("#stage");
  await page.keyboard.press("ArrowRight");
  await waitSelection(6, 2);
  await page.keyboard.press("ArrowDown");
  await waitSelection(10, 2);
});

async function compareAll(answer = native, pg = page) {
  let n = 0;
  for (const item of answer.items) {
    for (const layer of answer.query_layers) {
      await pg.evaluate(([p, l]) => { window.latentlensPage.setLayer(l); window.latentlensPage.selectPatch(p); }, [item.index, layer]);
      await waitSelection(item.index, layer, pg);
      for (const m of ["latent", "embedding", "logit"]) { compare(await column(m, pg), item.layers[String(layer)][m], `patch ${item.index} layer ${layer} ${m}`); n++; }
    }
  }
  console.log(`      (${n} lists compared)`);
}
await test("every patch × layer × method equals `latentlens inspect --json`", () => compareAll());

await test("the Mid-Layer Leap chart equals the native leap table", async () => {
  await page.waitForSelector("#leap:not([data-partial]) .leapCell");
  const cells = await page.$$eval("#leap .leapCell", (c) => c.map((x) => x.textContent));
  const bl = native.bank_layers;
  assert(cells.length === native.query_layers.length * bl.length, `${cells.length} cells`);
  native.query_layers.forEach((l, i) => {
    const row = native.leap[String(l)] ?? {};
    const total = Object.values(row).reduce((a, b) => a + b, 0) || 1;
    bl.forEach((b, j) => {
      const c = row[String(b)] ?? 0;
      const want = c > 0 ? `${Math.round((100 * c) / total)}%` : "";
      assert(cells[i * bl.length + j] === want, `leap L${l}→bank L${b}: "${cells[i * bl.length + j]}" on the page, "${want}" natively`);
    });
  });
});

await test("a reload reads the model and the bank from the browser cache", async () => {
  await page.reload();
  await page.waitForSelector('body[data-state="loaded"]', { timeout: 60000 });
  const bars = await page.$$eval("#progress .bar", (b) => b.map((x) => x.textContent));
  const bank = bars.find((t) => t.startsWith("bank")) ?? "";
  assert(bank.includes("from cache"), `bank progress after reload: ${bank}`);
  const weights = bars.find((t) => t.startsWith("model.safetensors")) ?? "";
  assert(weights.includes("from cache"), `weights progress after reload: ${weights}`);
});

await test("a broken connection mid-download resumes from the cache after reload", async () => {
  const c2 = await browser.newContext(); // empty cache
  const p2 = await c2.newPage();
  let requests = 0;
  await c2.route("**/default/bank.llbank", (r) => (++requests <= 1 ? r.continue() : r.abort("connectionreset")));
  await p2.goto(`${server.url}?preset=tiny`);
  await p2.waitForSelector('body[data-state="loaded"]', { timeout: 60000 });
  await p2.waitForSelector("#error:not([hidden])");
  const msg = await p2.textContent("#error");
  assert(msg.includes("network error") && msg.includes("retry"), `message after the broken download: ${msg}`);
  assert(requests >= 2, `only ${requests} bank request(s): nothing was broken`);
  await c2.unrouteAll();
  await p2.reload();
  await p2.waitForSelector('body[data-state="loaded"]', { timeout: 60000 });
  assert(await p2.isHidden("#error"), `error after reload: ${await p2.textContent("#error")}`);
  const bars = await p2.$$eval("#progress .bar", (b) => b.map((x) => x.textContent));
  const bank = bars.find((t) => t.startsWith("bank")) ?? "";
  assert(bank.includes("from cache"), `bank progress after the resumed download: ${bank}`);
  console.log(`      (${requests} requests before the break was lifted; after reload: ${bank})`);
  await c2.close();
});

await test("LatentLens answers from the first bank chunks while the rest downloads, then equals the native CLI", async () => {
  const c4 = await browser.newContext(); // empty cache
  const p4 = await c4.newPage();
  p4.on("pageerror", (e) => consoleErrors.push(String(e)));
  // Hold back every Range request for the later row chunks until the first neighbours are shown.
  let release;
  const gate = new Promise((r) => (release = r));
  let heldBack = 0;
  await c4.route("**/test/progressive.llbank", async (r) => {
    const m = /bytes=(\d+)-/.exec((await r.request().allHeaders())["range"] ?? "");
    const start = m ? Number(m[1]) : 0;
    if (start >= held[0] && start < held[1]) { heldBack++; await gate; }
    await r.continue();
  });
  try {
    // CPU search (?gpu=0): SwiftShader takes seconds per layer for 30,000 rows; WebGPU search of a
    // completed bank is covered by the tiny-bank tests above (its 5 row chunks load the same way).
    await p4.goto(`${server.url}?model=default/model/&bank=test/progressive.llbank&gpu=0`);
    await p4.waitForSelector('body[data-state="loaded"]', { timeout: 60000 });
    await p4.setInputFiles("#file", PHOTO);
    await p4.waitForSelector("#col-latent li.nb", { timeout: 60000 });
    await p4.waitForFunction(() => document.querySelector("#columns")?.dataset.patch !== undefined, null, { timeout: 30000 });
    const bankState = await p4.getAttribute("body", "data-bank");
    const partial = await p4.getAttribute("#columns", "data-partial");
    const note = await p4.textContent("#bankState");
    const first = await column("latent", p4);
    assert(heldBack >= 1, `no request for the later chunks was held back (range ${held})`);
    assert(bankState === "partial" && partial !== null && Number(partial) < 100, `bank ${bankState}, columns partial=${partial}`);
    assert(/bank \d+% loaded/.test(note), `progress note: ${note}`);
    assert(first.length === K, `${first.length} LatentLens neighbours from the first chunks`);
    await p4.screenshot({ path: join(OUT, "progressive-partial.png"), fullPage: true });
    release();
    await p4.waitForSelector('body[data-bank="complete"]', { timeout: 60000 });
    assert((await p4.textContent("#bankState")) === "", "the progress note stays after the bank completed");
    console.log(`      (first neighbours with ${partial}% of the bank, ${heldBack} request(s) held back: ${first.map((n) => n.word).join(", ")})`);
    await compareAll(nativeProgressive, p4);
  } finally {
    release();
    await c4.close();
  }
});

await test("with ?gpu=0 (CPU search) every list also equals the native CLI", async () => {
  await page.goto(`${server.url}?preset=tiny&gpu=0`);
  await page.waitForSelector('body[data-state="loaded"]', { timeout: 60000 });
  assert((await page.textContent("#backend")).includes("search on CPU"), "not on the CPU");
  await uploadPhoto();
  await compareAll();
});

await test("a bank whose sentences hold <img onerror> renders them as literal text", async () => {
  await page.goto(`${server.url}?model=default/model/&bank=test/xss.llbank`);
  await page.waitForSelector('body[data-state="loaded"]', { timeout: 60000 });
  await uploadPhoto();
  await page.waitForSelector("#col-latent li.nb .sentence");
  const texts = await page.$$eval("#col-latent .sentence", (s) => s.map((x) => x.textContent));
  assert(texts.length > 0 && texts.every((t) => t.includes('<img src=x onerror="window.__xss=1">')), `sentences: ${JSON.stringify(texts.slice(0, 2))}`);
  assert((await page.$$("#columns img, #leap img")).length === 0, "an <img> element was created from bank text");
  assert((await page.evaluate(() => window.__xss)) === undefined, "the onerror handler ran");
  await page.screenshot({ path: join(OUT, "xss-bank.png"), fullPage: true });
});

await test("a bank built for another model is refused with a message", async () => {
  await page.goto(`${server.url}?model=default/model/&bank=test/wrong.llbank`);
  await page.waitForSelector('body[data-state="loaded"]', { timeout: 60000 });
  await page.waitForSelector("#error:not([hidden])");
  const msg = await page.textContent("#error");
  assert(msg.includes("BankError") && msg.includes("built for the model") && msg.includes("llava_siglip_qwen2"), `message: ${msg}`);
  await page.screenshot({ path: join(OUT, "wrong-bank.png"), fullPage: true });
});

await test("switching presets back to the tiny model loads its bank", async () => {
  await page.selectOption("#preset", "tiny");
  await page.click("#load");
  await page.waitForFunction(() => document.querySelector("#modelLabel")?.textContent?.includes("bank:"), null, { timeout: 60000 });
  assert(await page.isHidden("#error"), "the old error is still shown");
});

await test("a tiled model (SmolVLM layout) from a custom URL: tiles, no bank, baselines equal the native CLI", async () => {
  await page.goto(`${server.url}?model=test/smolvlm/`);
  await page.waitForSelector('body[data-state="loaded"]', { timeout: 60000 });
  await uploadPhoto();
  const info = await page.evaluate(() => window.latentlensPage.image());
  assert(info.numTiles > 1 && info.patches.length === nativeTiled.items.length, `tiles ${info.numTiles}, patches ${info.patches.length} (native ${nativeTiled.items.length})`);
  assert(!(await page.isDisabled("#tile")), "the tile selector is disabled");
  assert((await page.textContent("#col-latent")).includes("No bank"), "the LatentLens column should say there is no bank");
  const last = nativeTiled.items.length - 1;
  for (const idx of [0, Math.floor(last / 2), last]) {
    for (const layer of [0, nativeTiled.query_layers[nativeTiled.query_layers.length - 1]]) {
      await page.evaluate(([p, l]) => { window.latentlensPage.setLayer(l); window.latentlensPage.selectPatch(p); }, [idx, layer]);
      await waitSelection(idx, layer);
      for (const m of ["embedding", "logit"]) compare(await column(m), nativeTiled.items[idx].layers[String(layer)][m], `tiled patch ${idx} layer ${layer} ${m}`);
    }
  }
  await page.screenshot({ path: join(OUT, "tiled-model.png"), fullPage: true });
});

await test("a plain Vite app installs pkg/ from its path, builds, and gets typed errors", async () => {
  const dir = join(OUT, "consumer");
  rmSync(dir, { recursive: true, force: true });
  cpSync(join(ROOT, "www/e2e/consumer"), dir, { recursive: true });
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module", dependencies: { latentlens: `file:${join(ROOT, "pkg")}` } }, null, 2));
  run("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: dir });
  run("node", [join(ROOT, "www/node_modules/vite/bin/vite.js"), "build", "--logLevel", "warn"], { cwd: dir });
  const srv = await serve(join(dir, "dist"));
  try {
    const p2 = await ctx.newPage();
    await p2.goto(srv.url);
    await p2.waitForSelector("body[data-result]", { timeout: 30000 });
    const r = JSON.parse(await p2.getAttribute("body", "data-result"));
    assert(r.version && r.errorName === "ModelError" && r.message.includes("config.json"), `consumer: ${JSON.stringify(r)}`);
    await p2.close();
  } finally {
    srv.stop();
  }
});

await test("the embedded default: the controlled VLM and its SmolLM2 bank explain a generated scene", async () => {
  const c3 = await browser.newContext();
  const p3 = await c3.newPage();
  p3.on("pageerror", (e) => consoleErrors.push(String(e)));
  const t = Date.now();
  await p3.goto(server.url);
  await p3.waitForSelector('body[data-state="loaded"]', { timeout: 300000 });
  const label = await p3.textContent("#modelLabel");
  assert(label.includes("controlled") && label.includes("30 layers") && label.includes("bank:"), `model label: ${label}`);
  const loadS = (Date.now() - t) / 1000;
  const t2 = Date.now();
  await p3.click("#scene");
  await p3.waitForSelector('body[data-state="ready"]', { timeout: 300000 });
  await p3.waitForSelector("#col-latent li.nb", { timeout: 60000 });
  const info = await p3.evaluate(() => window.latentlensPage.image());
  assert(info.patches.length === 49 && info.numTiles === 1, `patches: ${info.patches.length}`);
  const caption = await p3.textContent("#sceneCaption");
  assert(caption.startsWith("Scene ") && caption.length > 20, `caption: ${caption}`);
  assert((await p3.textContent("#patchLabel")).includes("ground truth:"), "no ground truth in the patch label");
  for (const m of ["latent", "embedding", "logit"]) {
    const n = await p3.$$eval(`#col-${m} li.nb .word`, (w) => w.map((x) => x.textContent));
    assert(n.length === K && n.every((w) => w.length > 0), `${m}: ${JSON.stringify(n)}`);
  }
  const words = await p3.$$eval("#col-latent li.nb .word", (w) => w.map((x) => x.textContent));
  console.log(`      (load ${loadS.toFixed(1)} s, scene + forward + first neighbours ${((Date.now() - t2) / 1000).toFixed(1)} s; ${caption}; ${await p3.textContent("#patchLabel")}: ${words.join(", ")}; ${await p3.textContent("#backend")})`);
  // Without ?gpu=1 a software fallback adapter is not used (slower than the CPU path), and the page says so.
  const fallback = await p3.evaluate(async () => !!(navigator.gpu && (await navigator.gpu.requestAdapter())?.info?.isFallbackAdapter));
  if (fallback) {
    await p3.waitForSelector("body[data-search]", { timeout: 60000 });
    const footer = await p3.textContent("#backend"), notice = await p3.textContent("#notice");
    assert(footer.includes("model on CPU, search on CPU") && notice.includes("software fallback") && notice.includes("?gpu=1"), `footer: ${footer}; notice: ${notice}`);
  }
  await p3.screenshot({ path: join(OUT, "controlled-default.png"), fullPage: true });
  await c3.close();
});

await test("no uncaught errors in the page", async () => {
  const real = consoleErrors.filter((e) => !e.includes("404") && !e.includes("Failed to load resource"));
  assert(real.length === 0, real.join("\n"));
});

await browser.close();
server.stop();
const failed = results.filter((r) => !r.ok).length;
console.log(`e2e: ${results.length - failed} passed, ${failed} failed (${((Date.now() - t0) / 1000).toFixed(1)}s); screenshots in target/e2e/`);
process.exit(failed ? 1 : 0);
