// Timeline of one cold load of the page (default preset + a sample photo): state changes and
// performance marks with their times, for finding where the first-neighbours time goes.
// LATENTLENS_PROBE_QS adds URL parameters (e.g. "gpu=0").
import { launch, serve, ROOT } from "./common.mjs";
import { join } from "node:path";

const server = await serve(join(ROOT, "www/dist"));
const browser = await launch();
const page = await (await browser.newContext()).newPage();
const t0 = Date.now();
page.on("console", (m) => console.log(`${((Date.now() - t0) / 1000).toFixed(1)}s console.${m.type()}: ${m.text().slice(0, 200)}`));
page.on("pageerror", (e) => console.log(`pageerror ${e}`));
await page.goto(`${server.url}?sample=chelsea.png&${process.env.LATENTLENS_PROBE_QS ?? ""}`);
let last = "";
for (let i = 0; i < 600; i++) {
  const s = await page.evaluate(() => JSON.stringify({ state: document.body.dataset.state, bank: document.body.dataset.bank, search: document.body.dataset.search,
    marks: performance.getEntriesByType("mark").map((m) => `${m.name}@${m.startTime.toFixed(0)}`), status: document.querySelector("#status")?.textContent?.slice(0, 120) }));
  if (s !== last) { console.log(`${((Date.now() - t0) / 1000).toFixed(1)}s ${s}`); last = s; }
  if (s.includes("first-neighbours") && s.includes('"bank":"complete"') && s.includes('"search"')) break;
  await new Promise((r) => setTimeout(r, 250));
}
await browser.close();
server.stop();
