// Shared by the end-to-end tests (run.mjs) and the page benchmark (bench.mjs):
// paths, the `latentlens serve` process, and Debian's chromium through
// playwright-core (no browser download: `npx playwright install` cannot reach
// its CDN here).
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:net";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const OUT = join(ROOT, "target/e2e");
mkdirSync(OUT, { recursive: true });

export const BIN = process.env.LATENTLENS_BIN ?? join(ROOT, "target/debug/latentlens");
if (!existsSync(BIN)) throw new Error(`no latentlens binary at ${BIN}: run via ./build.sh e2e`);

export function chromiumPath() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  try {
    return execFileSync("sh", ["-c", "command -v chromium"]).toString().trim();
  } catch {
    throw new Error("Debian's chromium is not installed: apt-get install chromium (./build.sh e2e does)");
  }
}

export async function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Starts `latentlens serve DIR` on a free port; resolves once it answers. */
export async function serve(dir) {
  const port = await freePort();
  const proc = spawn(BIN, ["serve", dir, "--addr", `127.0.0.1:${port}`], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (d) => (stderr += d));
  const url = `http://127.0.0.1:${port}/`;
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(url, { method: "HEAD" });
      if (r.status) return { url, port, stop: () => proc.kill("SIGTERM") };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
    if (proc.exitCode !== null) break;
  }
  proc.kill("SIGTERM");
  throw new Error(`latentlens serve did not start: ${stderr}`);
}

/** Headless chromium with a software WebGPU adapter and a fresh profile. */
export async function launch() {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: [
      "--no-sandbox", "--enable-unsafe-webgpu", "--headless=new", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
    ],
  });
}

export function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { cwd: ROOT, maxBuffer: 256 << 20, ...opts }).toString();
}
