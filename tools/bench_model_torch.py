#!/usr/bin/env python3
"""Reference side of `latentlens bench model`: HF transformers (PyTorch CPU)
forward of the same GGUF (dequantised to f32 by transformers) returning all
hidden states, on the same token ids and thread count. Never product code.

  bench_model_torch.py --gguf FILE --ids IDS.json --threads N --out-dir DIR
IDS.json: {"64": [ids...], "256": [...]}. Line protocol on stdin/stdout, so the
caller can alternate our timed runs with these (same machine load for both):
  prints `ready` once loaded and warmed up;
  `run KEY`  → one timed forward, prints the milliseconds;
  `dump`     → writes DIR/states_{KEY}.f32 (raw f32 [L+1, T, d]), prints one
               JSON line {"torch", "transformers", "threads", "peak_rss_mb"} and exits.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--out-dir", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import transformers
    from transformers import AutoModelForCausalLM
    transformers.logging.set_verbosity_error()
    d, name = os.path.split(os.path.abspath(a.gguf))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    base = model.model
    with open(a.ids) as f:
        inputs = {k: torch.tensor([v]) for k, v in json.load(f).items()}
    last = {}
    with torch.inference_mode():
        for k, x in inputs.items():
            last[k] = base(x, output_hidden_states=True)  # warm-up
        print("ready", flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if cmd[:1] == ["run"] and len(cmd) == 2 and cmd[1] in inputs:
                t0 = time.perf_counter()
                last[cmd[1]] = base(inputs[cmd[1]], output_hidden_states=True)
                print(f"{(time.perf_counter() - t0) * 1e3:.4f}", flush=True)
            elif cmd[:1] == ["dump"]:
                for k, out in last.items():
                    hs = torch.stack([h[0] for h in out.hidden_states]).float().numpy()
                    hs.astype(np.float32).tofile(os.path.join(a.out_dir, f"states_{k}.f32"))
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
                print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                                  "threads": torch.get_num_threads(), "peak_rss_mb": peak}), flush=True)
                return
            else:
                print(f"error: unknown command {line!r}", flush=True)


if __name__ == "__main__":
    main()
