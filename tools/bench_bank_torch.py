#!/usr/bin/env python3
"""Reference side of `latentlens bench bank`: the bank builder's extraction
(hidden states of every corpus token at the bank layers) done with HF
transformers (PyTorch CPU) on the same GGUF (dequantised to f32), the same
sentences, truncation, layers and thread count. Never product code.

Batches are padded (right) and sorted by length to keep padding small, the
strongest plain-PyTorch baseline; rows of positions >= skip are gathered into
one float16 array per layer, as our builder stores them.

  bench_bank_torch.py --gguf FILE --corpus FILE --sentences N --layers 1,2,.. \
      --threads T --max-tokens 128 --batch-tokens 512 [--skip 2]
Prints one JSON line: {"sentences", "tokens", "seconds", "tokens_per_s", "rows", ...}.
"""
import argparse
import json
import os
import time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--sentences", type=int, required=True)
    ap.add_argument("--layers", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch-tokens", type=int, default=512)
    ap.add_argument("--skip", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import transformers

    d, name = os.path.split(os.path.abspath(a.gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval().model
    layers = [int(x) for x in a.layers.split(",")]
    with open(a.corpus, encoding="utf-8") as f:
        sents = [s.strip() for s in f.read().split("\n") if s.strip()][: a.sentences]

    t0 = time.perf_counter()
    ids = [tok(s)["input_ids"][: a.max_tokens] for s in sents]
    ids = [x for x in ids if len(x) > a.skip]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    tokens = sum(len(x) for x in ids)
    out = {l: [] for l in layers}
    with torch.inference_mode():
        i = 0
        while i < len(order):
            batch = [order[i]]
            i += 1
            while i < len(order) and len(ids[order[i]]) * (len(batch) + 1) <= a.batch_tokens:
                batch.append(order[i])
                i += 1
            t = max(len(ids[j]) for j in batch)
            x = torch.zeros((len(batch), t), dtype=torch.long)
            mask = torch.zeros((len(batch), t), dtype=torch.long)
            for r, j in enumerate(batch):
                x[r, : len(ids[j])] = torch.tensor(ids[j])
                mask[r, : len(ids[j])] = 1
            hs = model(x, attention_mask=mask, output_hidden_states=True).hidden_states
            for l in layers:
                h = hs[l]
                for r, j in enumerate(batch):
                    out[l].append(h[r, a.skip : len(ids[j])].to(torch.float16).numpy())
    rows = {l: int(sum(x.shape[0] for x in v)) for l, v in out.items()}
    for l in layers:
        np.concatenate(out[l])  # the gathered bank rows, as the builder holds them
    secs = time.perf_counter() - t0
    print(json.dumps({
        "torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
        "sentences": len(sents), "tokens": tokens, "seconds": secs, "tokens_per_s": tokens / secs,
        "rows_per_layer": rows[layers[0]],
    }))


if __name__ == "__main__":
    main()
