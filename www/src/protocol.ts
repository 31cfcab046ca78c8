// Typed messages between the UI thread (main.ts) and the Worker (worker.ts)
// that owns the wasm module. Every request carries an id; the worker answers
// each with exactly one Response, and sends Events (progress, status) at any time.
import type { BankInfo, BankProgress, Backend, ImageInfo, Leap, ModelInfo, Neighbour, Scene } from "latentlens";

/** Where a model and (optionally) its bank come from. */
export interface PresetSpec {
  /** Shown on the page and used in messages. */
  label: string;
  /** Folder URL holding config.json, tokenizer.json, (pre)processor_config.json, model.safetensors. */
  modelBase: string;
  /** Name the model is known by (compared with the bank's model name only in messages). */
  modelName: string;
  /** Bank URL, or "" for none (LatentLens column disabled). */
  bankUrl: string;
}

export type Request =
  | { id: number; type: "load"; preset: PresetSpec }
  | { id: number; type: "loadBank"; url: string }
  | { id: number; type: "image"; bytes: ArrayBuffer; prompt?: string }
  | { id: number; type: "query"; patch: number; layer: number; k: number }
  | { id: number; type: "layerSummary"; layer: number }
  | { id: number; type: "leap" }
  | { id: number; type: "searchAll"; k: number }
  | { id: number; type: "gpu" }
  | { id: number; type: "backend" }
  | { id: number; type: "scene"; seed: number; bundleUrl: string };

export interface LoadResult { model: ModelInfo; bank: BankInfo | null; backend: Backend; bankError: string | null }
/** `bank`: how much of the bank was loaded when the query ran (LatentLens is partial until `complete`). */
export interface QueryResult { latent: Neighbour[] | null; embedding: Neighbour[]; logit: Neighbour[]; bank: BankProgress | null }
/** Per patch: top-1 LatentLens score minus top-1 EmbeddingLens score (null without a bank). */
export interface LayerSummary { layer: number; contextualMinusVocab: number[] | null; latentTop1: string[] | null }
export interface SearchAllResult { ms: number; queries: number }

export interface ResultMap {
  load: LoadResult;
  loadBank: BankInfo;
  image: ImageInfo;
  query: QueryResult;
  layerSummary: LayerSummary;
  leap: Leap;
  searchAll: SearchAllResult;
  gpu: Backend;
  backend: Backend;
  scene: Scene;
}

export interface WireError { name: string; message: string }

export type Response =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: WireError };

export type Event =
  | { type: "progress"; label: string; loaded: number; total: number | null; rate: number; done: boolean; fromCache?: number }
  | { type: "status"; text: string }
  /** A bank chunk arrived (or loading stopped with `error`): LatentLens results refine. */
  | { type: "bank"; progress: BankProgress | null; backend: Backend; error?: string }
  | { type: "ready" };

export type FromWorker = Response | Event;
