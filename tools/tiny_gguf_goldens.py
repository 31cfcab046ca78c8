#!/usr/bin/env python3
"""A tiny llama GGUF covering every quantisation type we read, with
transformers' hidden states as goldens (tests/fixtures/tiny_gguf/).

Weights are defined by their quantised blocks: Q4_0..Q8_0, F16, BF16 by
quantising random normal weights with gguf-py; K-quants (no quantiser in
gguf-py) by random raw blocks with sane f16 scales. q/k rows are permuted as
llama.cpp's convert_hf_to_gguf.py does, so the GGUF looks like a converted
model. transformers (its own GGUF dequantiser + reverse permutation) is the
reference. Never product code.

  .venv/bin/python tools/tiny_gguf_goldens.py
"""
import os

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import quantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tiny_gguf")
D, INTER, HEADS, KV, LAYERS, VOCAB = 256, 256, 4, 2, 2, 160
HD = D // HEADS
rng = np.random.default_rng(42)

TYPES = {
    0: {"attn_q": Q.Q4_0, "attn_k": Q.Q4_1, "attn_v": Q.Q5_0, "attn_output": Q.Q5_1,
        "ffn_gate": Q.Q8_0, "ffn_up": Q.F16, "ffn_down": Q.F32},
    1: {"attn_q": Q.Q4_K, "attn_k": Q.Q6_K, "attn_v": Q.Q2_K, "attn_output": Q.Q3_K,
        "ffn_gate": Q.Q5_K, "ffn_up": Q.BF16, "ffn_down": Q.Q8_0},
}

# Byte offsets of the f16 super-block scales in each K-quant block (ggml layout).
K_F16_FIELDS = {Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}
# Largest |sub-scale × quant| of each K format, so |w| stays near `scale`.
K_RANGE = {Q.Q2_K: 45, Q.Q3_K: 128, Q.Q4_K: 945, Q.Q5_K: 1953, Q.Q6_K: 4064}


def permute(w, n_head):
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def make(shape, qtype, scale):
    """Returns (data to write, raw dtype) for a weight of logical shape [rows, cols]."""
    rows, cols = shape
    if qtype in K_F16_FIELDS:
        block, tsize = GGML_QUANT_SIZES[qtype]
        nb = rows * cols // block
        raw = rng.integers(0, 256, size=(nb, tsize), dtype=np.uint8)
        for off in K_F16_FIELDS[qtype]:
            vals = (rng.uniform(0.5, 1.0, size=nb) * scale / K_RANGE[qtype]).astype(np.float16)
            raw[:, off:off + 2] = vals.view(np.uint8).reshape(nb, 2)
        return raw.reshape(rows, cols // block * tsize), qtype
    w = (rng.standard_normal(shape) * scale).astype(np.float32)
    if qtype == Q.F32:
        return w, None
    return quantize(w, qtype), qtype


def main():
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "tiny_llama_quants.gguf")
    wr = GGUFWriter(path, "llama")
    wr.add_name("tiny-llama-quants")
    wr.add_block_count(LAYERS)
    wr.add_context_length(256)
    wr.add_embedding_length(D)
    wr.add_feed_forward_length(INTER)
    wr.add_head_count(HEADS)
    wr.add_head_count_kv(KV)
    wr.add_rope_freq_base(10000.0)
    wr.add_rope_dimension_count(HD)
    wr.add_layer_norm_rms_eps(1e-5)
    wr.add_vocab_size(VOCAB)
    wr.add_file_type(1)

    def add(name, data, qtype):
        if qtype is None:
            wr.add_tensor(name, data)
        else:
            wr.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)

    emb, _ = make((VOCAB, D), Q.Q8_0, 1.0)
    add("token_embd.weight", emb, Q.Q8_0)
    for l in range(LAYERS):
        add(f"blk.{l}.attn_norm.weight", (1 + 0.2 * rng.standard_normal(D)).astype(np.float32), None)
        add(f"blk.{l}.ffn_norm.weight", (1 + 0.2 * rng.standard_normal(D)).astype(np.float32), None)
        shapes = {"attn_q": (HEADS * HD, D), "attn_k": (KV * HD, D), "attn_v": (KV * HD, D),
                  "attn_output": (D, HEADS * HD), "ffn_gate": (INTER, D), "ffn_up": (INTER, D),
                  "ffn_down": (D, INTER)}
        for part, shape in shapes.items():
            qtype = TYPES[l][part]
            if qtype in K_F16_FIELDS:
                # Random blocks are already "the converted weights" (permuted order).
                data, qt = make(shape, qtype, 0.3)
            else:
                w = (rng.standard_normal(shape) * 0.08).astype(np.float32)
                if part == "attn_q":
                    w = permute(w, HEADS)
                elif part == "attn_k":
                    w = permute(w, KV)
                data, qt = (w, None) if qtype == Q.F32 else (quantize(w, qtype), qtype)
            add(f"blk.{l}.{part}.weight", data, qt)
    add("output_norm.weight", (1 + 0.2 * rng.standard_normal(D)).astype(np.float32), None)
    out, _ = make((VOCAB, D), Q.Q6_K, 0.5)
    add("output.weight", out, Q.Q6_K)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()

    from transformers import AutoModelForCausalLM
    from safetensors.numpy import save_file
    model = AutoModelForCausalLM.from_pretrained(OUT, gguf_file="tiny_llama_quants.gguf", dtype=torch.float32).eval()
    ids = torch.tensor([rng.integers(0, VOCAB, size=23).tolist()])
    with torch.no_grad():
        o = model(ids, output_hidden_states=True)
    hs = np.stack([h[0].numpy() for h in o.hidden_states]).astype(np.float32)
    save_file({"ids": ids[0].numpy().astype(np.int64), "states": hs, "logits": o.logits[0].numpy()},
              os.path.join(OUT, "goldens.safetensors"))
    print(f"{path}: {os.path.getsize(path)} bytes; {len(o.hidden_states)} states; "
          f"|h| max per layer {[float(np.abs(h).max()) for h in hs]}")


if __name__ == "__main__":
    main()
