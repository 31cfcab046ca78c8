#!/usr/bin/env python3
"""Reference side of `latentlens bench model`: HF transformers (PyTorch CPU)
forward of the same GGUF (dequantised to f32 by transformers) returning all
hidden states, on the same token ids and thread count. Never product code.

  bench_model_torch.py --gguf FILE --ids IDS.json --threads N --reps R --out-dir DIR
IDS.json: {"64": [ids...], "256": [...]}. Prints one JSON line:
{"torch": ..., "transformers": ..., "threads": N, "results": {"64": {"ms": median, "all_ms": [...]}, ...},
 "peak_rss_mb": ...}; writes DIR/states_{T}.f32 (raw f32 [L+1, T, d]) for the cosine check.
"""
import argparse
import json
import os
import resource
import statistics
import time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out-dir", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM
    import transformers
    d, name = os.path.split(os.path.abspath(a.gguf))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    base = model.model
    with open(a.ids) as f:
        inputs = json.load(f)
    results = {}
    with torch.inference_mode():
        for key, ids in inputs.items():
            x = torch.tensor([ids])
            base(x, output_hidden_states=True)  # warm-up
            times = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                out = base(x, output_hidden_states=True)
                times.append((time.perf_counter() - t0) * 1e3)
            hs = torch.stack([h[0] for h in out.hidden_states]).float().numpy()
            hs.astype(np.float32).tofile(os.path.join(a.out_dir, f"states_{key}.f32"))
            results[key] = {"ms": statistics.median(times), "all_ms": times, "shape": list(hs.shape)}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                      "threads": torch.get_num_threads(), "results": results, "peak_rss_mb": peak}))


if __name__ == "__main__":
    main()
