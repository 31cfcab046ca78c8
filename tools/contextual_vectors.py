#!/usr/bin/env python3
"""Real contextual vectors for the search benchmark (reference tool, never product code).

LLM hidden states of real words in real sentences, as LatentLens banks hold them:
SmolLM2-135M-Instruct (GGUF, loaded dequantised by HF transformers) run over the
usage examples of WordNet (the quoted parts after each gloss in
/usr/share/wordnet/data.{noun,verb,adj,adv}), deduplicated.

For each requested layer, every token at position >= 2 of a sentence becomes one
vector (hidden_states[layer][pos], L2-normalised), with at most `--max-per-token`
contexts per token string. Sentences are shuffled with a fixed seed and split into
two disjoint sets: bank sentences (up to `--n` vectors) and query sentences (up to
`--queries` vectors, at most 2 per sentence), so queries never come from a bank
sentence.

Output (in --out, default .assets/vectors/):
  smollm2_L{layer}_bank.f32     little-endian f32 [n, d], row-major
  smollm2_L{layer}_queries.f32  little-endian f32 [nq, d]
  smollm2_L{layer}.json         {"n", "nq", "d", "layer", "model", "corpus", "seed",
                                 "bank_file", "queries_file", "bank_tokens", "query_tokens"}

Usage: .venv/bin/python tools/contextual_vectors.py [--n 100000] [--queries 1000] [--layers 16]
"""
import argparse
import json
import os
import random
import re
import sys
import time

import numpy as np

WORDNET = "/usr/share/wordnet"
POS_FILES = ["data.noun", "data.verb", "data.adj", "data.adv"]
QUOTE = re.compile(r'"([^"]+)"')


def wordnet_sentences():
    """Quoted usage examples after the gloss, in file order, deduplicated."""
    seen, out = set(), []
    for name in POS_FILES:
        with open(os.path.join(WORDNET, name), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" ") or "|" not in line:
                    continue  # licence header
                gloss = line.split("|", 1)[1]
                for s in QUOTE.findall(gloss):
                    s = " ".join(s.split())
                    if len(s) < 8 or s in seen:
                        continue
                    seen.add(s)
                    out.append(s)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--gguf", default=os.environ.get(
        "LATENTLENS_SMOLLM2_GGUF", os.path.join(root, ".assets/smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    ap.add_argument("--out", default=os.path.join(root, ".assets/vectors"))
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--layers", default="16")
    ap.add_argument("--max-per-token", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    sents = wordnet_sentences()
    random.Random(args.seed).shuffle(sents)
    print(f"[contextual_vectors] {len(sents)} distinct WordNet usage sentences", file=sys.stderr)

    d_gguf, f_gguf = os.path.split(args.gguf)
    tok = AutoTokenizer.from_pretrained(d_gguf, gguf_file=f_gguf)
    model = AutoModelForCausalLM.from_pretrained(d_gguf, gguf_file=f_gguf, torch_dtype=torch.float32)
    model.eval()
    # Only layers up to the deepest requested one are needed.
    deepest = max(layers)
    # (one extra layer kept so hidden_states[deepest] is never the final-normed output)
    model.model.layers = model.model.layers[:deepest + 1]
    d = model.config.hidden_size
    print(f"[contextual_vectors] model loaded in {time.time() - t0:.1f}s, d={d}", file=sys.stderr)

    # Query sentences: the first ones after shuffling; bank: the rest.
    nq_sents = max(1, (args.queries + 1) // 2) * 2
    q_sents, b_sents = sents[:nq_sents], sents[nq_sents:]

    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    rng = random.Random(args.seed + 1)
    token_str = {}

    def tstr(i):
        if i not in token_str:
            token_str[i] = tok.decode([i])
        return token_str[i]

    def select(sent_list, limit, per_sentence, capped):
        """Decide which (sentence, position) pairs to keep before running the model."""
        counts, picks, total = {}, [], 0
        for si, s in enumerate(sent_list):
            if total >= limit:
                break
            ids = tok(s, add_special_tokens=False)["input_ids"]
            positions = list(range(2, len(ids)))
            if per_sentence:
                rng.shuffle(positions)
            kept = []
            for p in positions:
                if total >= limit or (per_sentence and len(kept) >= per_sentence):
                    break
                st = tstr(ids[p])
                if capped:
                    if counts.get(st, 0) >= args.max_per_token:
                        continue
                    counts[st] = counts.get(st, 0) + 1
                kept.append(p)
                total += 1
            if kept:
                picks.append((ids, sorted(kept)))
        return picks

    def collect(picks, what):
        """Run the kept sentences (length-sorted batches, truncated after the last kept position)."""
        order = sorted(range(len(picks)), key=lambda k: picks[k][1][-1])
        out = {}  # (pick index, position) -> {layer: vector}
        done = 0
        for b0 in range(0, len(order), args.batch):
            chunk = order[b0:b0 + args.batch]
            T = max(picks[k][1][-1] + 1 for k in chunk)
            ids = torch.full((len(chunk), T), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), T), dtype=torch.long)
            for r, k in enumerate(chunk):
                seq = picks[k][0][:T]
                ids[r, :len(seq)] = torch.tensor(seq)
                mask[r, :len(seq)] = 1
            with torch.no_grad():
                hs = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            for l in layers:
                h = hs[l].float().numpy()  # [B, T, d]
                for r, k in enumerate(chunk):
                    for p in picks[k][1]:
                        out.setdefault((k, p), {})[l] = h[r, p].copy()
            done += len(chunk)
            print(f"\r[contextual_vectors] {what}: {done}/{len(picks)} sentences", end="", file=sys.stderr)
        print(file=sys.stderr)
        vecs = {l: [] for l in layers}
        toks = []
        for k, (ids, kept) in enumerate(picks):  # rows in corpus order
            for p in kept:
                for l in layers:
                    vecs[l].append(out[(k, p)][l])
                toks.append(tstr(ids[p]))
        return {l: np.stack(v).astype(np.float32) for l, v in vecs.items()}, toks

    bank_picks = select(b_sents, args.n, 0, True)
    print(f"[contextual_vectors] bank: {sum(len(k) for _, k in bank_picks)} vectors from "
          f"{len(bank_picks)} sentences", file=sys.stderr)
    bank, bank_toks = collect(bank_picks, "bank")
    # Queries: at most 2 tokens per held-out sentence, a random pick among positions >= 2.
    queries, query_toks = collect(select(q_sents, args.queries, 2, False), "queries")

    os.makedirs(args.out, exist_ok=True)
    for l in layers:
        for arr in (bank[l], queries[l]):
            nrm = np.linalg.norm(arr, axis=1, keepdims=True)
            arr /= np.maximum(nrm, 1e-12)
        base = f"smollm2_L{l}"
        bank[l].astype("<f4").tofile(os.path.join(args.out, base + "_bank.f32"))
        queries[l].astype("<f4").tofile(os.path.join(args.out, base + "_queries.f32"))
        meta = {
            "n": int(bank[l].shape[0]), "nq": int(queries[l].shape[0]), "d": d, "layer": l,
            "model": os.path.basename(args.gguf),
            "corpus": "WordNet usage examples (data.noun/verb/adj/adv), deduplicated, positions 0-1 skipped",
            "max_per_token": args.max_per_token, "seed": args.seed,
            "bank_file": base + "_bank.f32", "queries_file": base + "_queries.f32",
            "bank_tokens": bank_toks, "query_tokens": query_toks,
        }
        with open(os.path.join(args.out, base + ".json"), "w") as f:
            json.dump(meta, f)
        print(f"[contextual_vectors] layer {l}: bank {bank[l].shape}, queries {queries[l].shape} -> {args.out}",
              file=sys.stderr)
    print(f"[contextual_vectors] done in {time.time() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
