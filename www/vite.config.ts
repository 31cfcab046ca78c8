// The page: a UI thread (src/main.ts) and a module Worker (src/worker.ts) that
// owns the wasm package built by `./build.sh pkg` into ../pkg.
import { defineConfig } from "vite";
import { fileURLToPath } from "node:url";

export default defineConfig({
  base: "./",
  resolve: { alias: { latentlens: fileURLToPath(new URL("../pkg/latentlens.js", import.meta.url)) } },
  worker: { format: "es" },
  build: { target: "es2022", outDir: "dist", emptyOutDir: true },
  server: { fs: { allow: [".."] } },
});
