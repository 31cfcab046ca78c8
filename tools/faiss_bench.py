#!/usr/bin/env python3
"""faiss-cpu side of `latentlens bench search` (reference, never product code).

Reads the same bank and query vectors as the Rust bench (raw little-endian f32,
row-major [n, d] and [nq, d], L2-normalised), builds each requested faiss index
with inner-product metric, searches all queries at once with the given number of
OpenMP threads, and writes the returned ids ([nq, k] little-endian i64) so the
Rust side scores every method against the same exact top-k.

Configs (faiss index_factory strings separated by ';'; B = bytes per vector):
  Flat              exact inner product (cross-check of our exact search)
  PQ{B}             IndexPQ, B sub-quantizers of 8 bits
  OPQ{B},PQ{B}      learned rotation (OPQ) + PQ
  ...,Refine(PQ{R}) any of the above with a refinement PQ of R bytes reranking k_factor*k
  ...,RFlat@F       any of the above reranking F*k candidates by exact (f32) inner product
                    (`@F` sets k_factor for this config alone; F may be fractional)
  RQ{B}x8           residual quantizer (beam search), B stages of 8 bits
Prints one JSON object on its last stdout line:
  {"faiss_version", "threads", "results": [{"name", "bytes_per_vector", "train_s",
   "add_s", "search_ms_per_query", "ids_file"}]}

Usage: faiss_bench.py --bank F --queries F --d D --threads T --k 10 --configs C --out DIR
                      [--train N] [--k-factor 16]
"""
import argparse
import json
import os
import re
import sys
import time

import numpy as np


def code_bytes(name):
    """Bytes per vector that a faiss index of this factory string stores."""
    if name == "Flat":
        return None
    total = 0
    for part in re.findall(r"(?<![A-Za-z])(PQ|RQ)(\d+)(?:x(\d+))?", name):
        kind, m, nbits = part
        total += int(m) * int(nbits or 8) // 8
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bank", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--d", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--configs", default="Flat,PQ72")
    ap.add_argument("--train", type=int, default=65536, help="training subsample size")
    ap.add_argument("--k-factor", type=int, default=16, help="Refine: candidates = k_factor * k")
    ap.add_argument("--repeat", type=int, default=1, help="search repetitions (best time kept)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    xb = np.fromfile(args.bank, dtype="<f4").reshape(-1, args.d)
    xq = np.fromfile(args.queries, dtype="<f4").reshape(-1, args.d)
    n, nq = xb.shape[0], xq.shape[0]
    rs = np.random.RandomState(1234)
    train = xb[np.sort(rs.choice(n, min(n, args.train), replace=False))] if n > args.train else xb
    os.makedirs(args.out, exist_ok=True)
    results = []
    trained = {}
    configs = [c for c in args.configs.split(";") if c]
    for name in configs:
        t0 = time.perf_counter()
        factory, _, kf = name.partition("@")
        k_factor = float(kf) if kf else args.k_factor
        base = factory[: -len(",RFlat")] if factory.endswith(",RFlat") else None
        if base in trained:
            # The base index of this run, trained already (OPQ training takes minutes):
            # an empty copy of it, reranked by exact vectors.
            b = faiss.clone_index(trained[base])
            b.reset()
            index = faiss.IndexRefineFlat(b)
        else:
            index = faiss.index_factory(args.d, factory, faiss.METRIC_INNER_PRODUCT)
        if hasattr(index, "k_factor"):
            index.k_factor = k_factor
        else:
            try:
                faiss.downcast_index(index).k_factor = k_factor
            except AttributeError:
                pass
        if not index.is_trained:
            index.train(train)
        t1 = time.perf_counter()
        index.add(xb)
        trained[factory] = index
        t2 = time.perf_counter()
        best = float("inf")
        for _ in range(max(1, args.repeat)):
            s0 = time.perf_counter()
            _, ids = index.search(xq, args.k)
            best = min(best, time.perf_counter() - s0)
        fname = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") + ".i64"
        ids.astype("<i8").tofile(os.path.join(args.out, fname))
        results.append({
            "name": name, "bytes_per_vector": code_bytes(name),
            "train_s": round(t1 - t0, 3), "add_s": round(t2 - t1, 3),
            "search_ms_per_query": best * 1000.0 / nq, "ids_file": fname,
        })
        print(f"[faiss_bench] {name}: train {t1 - t0:.1f}s add {t2 - t1:.1f}s "
              f"search {best * 1000.0 / nq:.4f} ms/query", file=sys.stderr)
    print(json.dumps({"faiss_version": faiss.__version__, "threads": args.threads, "n": n, "nq": nq,
                      "results": results}))


if __name__ == "__main__":
    main()
