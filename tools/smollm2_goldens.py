#!/usr/bin/env python3
"""Reference goldens for the text runtime (src/model/{llama,gguf,tokenizer}.rs).

Independent reference: HF transformers + torch (CPU), loading the SAME GGUF file
(dequantised by transformers' own GGUF loader) and building tiny random
Llama / Qwen2 models. Never product code; CI reads the committed fixtures.

  .venv/bin/python tools/smollm2_goldens.py write   [--gguf PATH]
      writes tests/fixtures/smollm2/{wordnet_sentences.txt, wordnet_ids.txt,
      hidden_states.safetensors} and tests/fixtures/{tiny_llama,tiny_qwen2}/
  .venv/bin/python tools/smollm2_goldens.py compare --bin target/release/latentlens [--gguf PATH]
      runs our `latentlens hidden-states` on the 20 parity sentences and prints
      per-layer min cosine and max abs error against transformers.

Sentences: WordNet usage examples (the quoted text after the glosses in
/usr/share/wordnet/data.*), chosen deterministically.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
DEFAULT_GGUF = os.path.join(ROOT, ".assets", "smollm2-0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")
N_TOKENIZER = 1200
N_PARITY = 20
N_STORED = 3  # parity sentences whose all-layer states are committed (f16)


def wordnet_sentences():
    out, seen = [], set()
    for pos in ("noun", "verb", "adj", "adv"):
        path = f"/usr/share/wordnet/data.{pos}"
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue
                gloss = line.split("|", 1)[1]
                for s in re.findall(r'"([^"]+)"', gloss):
                    s = s.strip()
                    if len(s) >= 3 and s not in seen:
                        seen.add(s)
                        out.append(s)
    return out


def tokenizer_sentences(all_s):
    step = max(1, len(all_s) // N_TOKENIZER)
    return all_s[::step][:N_TOKENIZER]


def parity_sentences(all_s):
    longish = [s for s in all_s if 10 <= len(s.split()) <= 30]
    step = max(1, len(longish) // N_PARITY)
    return longish[::step][:N_PARITY]


def load_hf(gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, name = os.path.split(os.path.abspath(gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    model.eval()
    return tok, model


@torch.no_grad()
def hf_states(model, ids):
    # Capture the raw output of the last decoder layer to document what
    # transformers puts in hidden_states[-1] (raw or after the final norm).
    cap = {}
    h = model.model.layers[-1].register_forward_hook(
        lambda m, i, o: cap.__setitem__("last", o[0] if isinstance(o, tuple) else o))
    out = model(torch.tensor([ids]), output_hidden_states=True)
    h.remove()
    hs = [x[0].float().numpy() for x in out.hidden_states]
    cap["top1"] = out.logits[0].argmax(-1).numpy().astype(np.int64)
    raw = cap["last"][0].float().numpy()
    normed = model.model.norm(cap["last"])[0].float().numpy()
    return hs, raw, normed, cap["top1"]


def write(args):
    from safetensors.numpy import save_file
    all_s = wordnet_sentences()
    tok, model = load_hf(args.gguf)
    out = os.path.join(FIX, "smollm2")
    os.makedirs(out, exist_ok=True)
    ts = tokenizer_sentences(all_s)
    with open(os.path.join(out, "wordnet_sentences.txt"), "w", encoding="utf-8") as f:
        for s in ts:
            f.write(s.replace("\n", " ") + "\n")
    with open(os.path.join(out, "wordnet_ids.txt"), "w") as f:
        for s in ts:
            f.write(" ".join(map(str, tok(s)["input_ids"])) + "\n")
    print(f"tokenizer goldens: {len(ts)} sentences")
    edge = [
        "<|im_start|>user\nWhat is in this image?<|im_end|>\n<|im_start|>assistant\n",
        "Prices rose 12.5% in 2023 (from $1,234 to $1,388).",
        "naïve café – “quoted” — Zürich, São Paulo, Kraków; 東京 and Москва 🙂👍🏽",
        "  leading and trailing spaces   \n\n\ttabs\r\nCRLF  ",
        "don't won't it's we'll they've I'm you'd",
        "snake_case camelCase SCREAMING-KEBAB https://example.org/a?b=c#d",
    ]
    with open(os.path.join(out, "tokenizer_edge_cases.jsonl"), "w", encoding="utf-8") as f:
        for e in edge:
            f.write(json.dumps({"text": e, "ids": tok(e)["input_ids"]}, ensure_ascii=False) + "\n")

    ps = parity_sentences(all_s)
    with open(os.path.join(out, "parity_sentences.txt"), "w", encoding="utf-8") as f:
        for s in ps:
            f.write(s + "\n")
    tensors = {}
    meta = {"sentences": json.dumps(ps[:N_STORED]), "gguf": os.path.basename(args.gguf),
            "transformers": __import__("transformers").__version__, "torch": torch.__version__}
    for i, s in enumerate(ps[:N_STORED]):
        ids = tok(s)["input_ids"]
        hs, raw, normed, top1 = hf_states(model, ids)
        if i == 0:
            d_raw = float(np.abs(hs[-1] - raw).max())
            d_norm = float(np.abs(hs[-1] - normed).max())
            print(f"hidden_states: {len(hs)} entries; last vs raw last layer max|d|={d_raw:.3g}, vs final norm max|d|={d_norm:.3g}")
            meta["last_state"] = "final_norm" if d_norm < 1e-5 else "raw"
        tensors[f"s{i}.ids"] = np.array(ids, dtype=np.int64)
        tensors[f"s{i}.top1"] = top1  # argmax of the logits per position
        tensors[f"s{i}.states"] = np.stack(hs).astype(np.float16)  # [L+1, T, d]
    save_file(tensors, os.path.join(out, "hidden_states.safetensors"), metadata=meta)
    print(f"hidden-state goldens: {N_STORED} sentences × {len(hs)} layers (f16)")
    tiny(args)


TINY_SENTENCE = "the quick brown fox jumped over the lazy dog near the river bank"


def tiny_tokenizer():
    """A small BPE (≤ 200 ids) trained on WordNet sentences, so the tiny
    models' directories are complete HF model dirs (config + weights + tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>"], limit_alphabet=40, show_progress=False)
    tk.train_from_iterator(wordnet_sentences()[:3000], trainer)
    return tk


def tiny(args):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    from safetensors.numpy import save_file
    common = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=200, max_position_embeddings=128, rms_norm_eps=1e-5,
                  hidden_act="silu")
    specs = [
        ("tiny_llama", LlamaConfig, LlamaForCausalLM, dict(tie_word_embeddings=False, rope_theta=10000.0)),
        ("tiny_qwen2", Qwen2Config, Qwen2ForCausalLM, dict(tie_word_embeddings=True, rope_theta=1000000.0)),
    ]
    for name, C, M, extra in specs:
        torch.manual_seed(1234)
        cfg = C(**common, **extra)
        model = M(cfg).eval()
        with torch.no_grad():
            # Larger-than-init random weights so attention and norms do real work.
            for pn, p in model.named_parameters():
                if "norm" in pn:
                    p.copy_(1.0 + 0.3 * torch.randn_like(p))
                else:
                    p.copy_(0.25 * torch.randn_like(p))
        d = os.path.join(FIX, name)
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        tok_path = os.path.join(d, "tokenizer.json")
        tiny_tokenizer().save(tok_path)
        from transformers import PreTrainedTokenizerFast
        hf_tok = PreTrainedTokenizerFast(tokenizer_file=tok_path)
        ids = torch.tensor([hf_tok(TINY_SENTENCE)["input_ids"]])
        assert ids.max() < common["vocab_size"]
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
        hs = np.stack([x[0].numpy() for x in out.hidden_states]).astype(np.float32)
        save_file({"ids": ids[0].numpy().astype(np.int64), "states": hs,
                   "logits": out.logits[0].numpy().astype(np.float32)},
                  os.path.join(d, "goldens.safetensors"), metadata={"text": TINY_SENTENCE})
        print(f"{name}: {len(out.hidden_states)} states, ids {ids[0].tolist()}")


def cos_rows(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(na * nb, 1e-30)


def compare(args):
    from safetensors.numpy import load_file
    tok, model = load_hf(args.gguf)
    ps = parity_sentences(wordnet_sentences())
    worst_cos, worst_abs, n_tok = 1.0, 0.0, 0
    per_layer_cos = None
    ids_ok = 0
    with tempfile.TemporaryDirectory() as td:
        for i, s in enumerate(ps):
            ids = tok(s)["input_ids"]
            hs, _, _, _ = hf_states(model, ids)
            out = os.path.join(td, f"{i}.safetensors")
            subprocess.run([args.bin, "hidden-states", "--model", args.gguf, "--text", s, "--out", out],
                           check=True, stdout=subprocess.DEVNULL)
            ours = load_file(out)
            ours_ids = ours["token_ids"].tolist()
            ids_ok += ours_ids == ids
            if ours_ids != ids:
                print(f"token ids differ on sentence {i}: {s!r}\n  ours {ours_ids}\n  hf   {ids}")
                continue
            L = len(hs)
            if per_layer_cos is None:
                per_layer_cos = [1.0] * L
                per_layer_abs = [0.0] * L
                per_layer_rel = [0.0] * L
            for l in range(L):
                a = ours[f"layer.{l}"]
                c = cos_rows(a, hs[l]).min()
                e = np.abs(a - hs[l]).max()
                per_layer_cos[l] = min(per_layer_cos[l], float(c))
                per_layer_abs[l] = max(per_layer_abs[l], float(e))
                rel = (np.abs(a - hs[l]).max(-1) / np.maximum(np.abs(hs[l]).max(-1), 1e-30)).max()
                per_layer_rel[l] = max(per_layer_rel[l], float(rel))
            n_tok += len(ids)
    print(f"{'layer':>5} {'min cos':>12} {'max |err|':>12} {'max |err|/row max':>18}")
    for l in range(len(per_layer_cos)):
        print(f"{l:>5} {per_layer_cos[l]:>12.9f} {per_layer_abs[l]:>12.3e} {per_layer_rel[l]:>18.3e}")
    print(json.dumps({"sentences": len(ps), "ids_identical": ids_ok, "tokens": n_tok,
                      "min_cosine": min(per_layer_cos), "max_abs_err": max(per_layer_abs),
                      "max_rel_err": max(per_layer_rel)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["write", "compare", "tiny"])
    ap.add_argument("--gguf", default=os.environ.get("LATENTLENS_SMOLLM2_GGUF", DEFAULT_GGUF))
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "latentlens"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    {"write": write, "compare": compare, "tiny": tiny}[args.mode](args)


if __name__ == "__main__":
    main()
