"""Train the controlled VLM's connector (PyTorch reference trainer).

The controlled VLM = frozen EfficientNet-Lite0 (7x7x1280 features,
tools/efficientnet_lite0.py) -> trained connector (LLaVA mlp2x_gelu:
Linear 1280->576, GELU, Linear 576->576) -> frozen SmolLM2-135M-Instruct
(the Q4_1 GGUF, dequantised by transformers). Only the connector is trained,
with the captioning loss on generated scenes (`latentlens scenes`).

Why PyTorch and not a candle trainer: the Rust runtime's CPU matmul reaches
~67 GFLOP/s on this machine against oneDNN's ~200 (docs/results.md), and a
forward+backward through the frozen 30-layer LLM is matmul-bound, so a candle
trainer would be >= 3x slower than this script (the issue's threshold). The
Rust runtime reproduces the trained model's forward (tests/controlled_vlm.rs,
golden written here).

Sequence layout (the Rust runtime builds the same ids, src/model/controlled.rs):
  PREFIX ids + 49 visual rows + SUFFIX ids [+ caption ids + <|im_end|>]
each piece tokenized separately (no special tokens added).

  python tools/train_connector.py --scenes DIR --heldout DIR --effnet F --gguf F --out DIR
"""
import argparse, json, math, os, random, sys, time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import efficientnet_lite0 as eff  # noqa: E402

PREFIX = "<|im_start|>user\n"
SUFFIX = "\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n"
END = "<|im_end|>"
N_VIS = 49


class Connector(nn.Module):
    """LLaVA mlp2x_gelu. While training, `mean`/`inv_std` standardise the
    EfficientNet features per channel (Adam then sees inputs of unit scale
    instead of ReLU6 outputs sharing a large positive mean); `folded()` turns
    that into plain Linear weights, so the saved connector has exactly the
    runtime's architecture: W' = W / std, b' = b - W' mean."""

    def __init__(self, d_in=1280, d=576):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(d, d)
        self.register_buffer('mean', torch.zeros(d_in))
        self.register_buffer('inv_std', torch.ones(d_in))

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1((x - self.mean) * self.inv_std)))

    def folded(self):
        """The runtime's four tensors (float64 fold, then f32)."""
        w = self.linear_1.weight.detach().double() * self.inv_std.double()[None, :]
        b = self.linear_1.bias.detach().double() - w @ self.mean.double()
        return {'linear_1.weight': w.float(), 'linear_1.bias': b.float(),
                'linear_2.weight': self.linear_2.weight.detach().float(),
                'linear_2.bias': self.linear_2.bias.detach().float()}

    def load_runtime(self, state):
        """Load the runtime's four tensors (no standardisation)."""
        self.load_state_dict({**{k: v.float() for k, v in state.items()},
                              'mean': torch.zeros_like(self.mean), 'inv_std': torch.ones_like(self.inv_std)})


def read_scenes(d):
    rows = [json.loads(l) for l in open(os.path.join(d, 'scenes.jsonl'))]
    return rows


def features_for(d, rows, sd, cache):
    if os.path.exists(cache):
        f = np.load(cache)
        if f.shape[0] == len(rows):
            return torch.from_numpy(f)
    out = []
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, len(rows), 32):
            batch = [eff.preprocess_u8(np.asarray(Image.open(os.path.join(d, r['image'])).convert('RGB')))
                     for r in rows[i:i + 32]]
            f = eff.features(sd, torch.cat(batch))  # [B, 1280, 7, 7]
            out.append(f.flatten(2).transpose(1, 2).contiguous())  # [B, 49, 1280]
            print(f'  features {min(i + 32, len(rows))}/{len(rows)} ({time.time() - t0:.0f}s)', file=sys.stderr, flush=True)
    f = torch.cat(out).numpy().astype(np.float32)
    np.save(cache, f)
    return torch.from_numpy(f)


def load_llm(gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, f = os.path.dirname(gguf), os.path.basename(gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return tok, model


def ids(tok, text):
    return tok(text, add_special_tokens=False)['input_ids']


def build_batch(tok, model, conn, feats, captions, pre, suf, end):
    """-> inputs_embeds [B, T, d], attention mask, labels (-100 outside the caption)."""
    emb = model.get_input_embeddings()
    vis = conn(feats)  # [B, 49, d]
    seqs, labels = [], []
    for b, cap in enumerate(captions):
        cap_ids = ids(tok, cap) + end
        tail = torch.tensor(suf + cap_ids)
        e = torch.cat([emb(torch.tensor(pre)), vis[b], emb(tail)])
        lab = [-100] * (len(pre) + N_VIS + len(suf)) + cap_ids
        seqs.append(e)
        labels.append(lab)
    T = max(s.shape[0] for s in seqs)
    d = seqs[0].shape[1]
    x = torch.zeros(len(seqs), T, d)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    lab = torch.full((len(seqs), T), -100, dtype=torch.long)
    for b, (s, l) in enumerate(zip(seqs, labels)):
        x[b, :s.shape[0]] = s
        mask[b, :s.shape[0]] = 1
        lab[b, :len(l)] = torch.tensor(l)
    return x, mask, lab


def loss_of(model, x, mask, lab):
    """Mean next-token cross-entropy over the caption tokens. The unembedding
    (49,152 x 576) runs only at the positions that predict a caption token
    (the same value as full logits + ignore_index, ~20% less work per step)."""
    h = model.model(inputs_embeds=x, attention_mask=mask).last_hidden_state[:, :-1]  # [B, T-1, d]
    tgt = lab[:, 1:]
    keep = tgt != -100
    logits = model.lm_head(h[keep])  # [K, vocab]
    return nn.functional.cross_entropy(logits, tgt[keep])


@torch.no_grad()
def heldout_loss(tok, model, conn, feats, rows, pre, suf, end, bs=16):
    tot, n = 0.0, 0
    for i in range(0, len(rows), bs):
        x, m, l = build_batch(tok, model, conn, feats[i:i + bs], [r['caption'] for r in rows[i:i + bs]], pre, suf, end)
        k = int((l[:, 1:] != -100).sum())
        tot += float(loss_of(model, x, m, l)) * k
        n += k
    return tot / n


@torch.no_grad()
def greedy(tok, model, conn, feat, pre, suf, end_id, max_new=40):
    emb = model.get_input_embeddings()
    x = torch.cat([emb(torch.tensor(pre)), conn(feat[None])[0], emb(torch.tensor(suf))])[None]
    out, past = [], None
    inp = x
    for _ in range(max_new):
        o = model(inputs_embeds=inp, past_key_values=past, use_cache=True)
        past = o.past_key_values
        t = int(o.logits[0, -1].argmax())
        if t == end_id:
            break
        out.append(t)
        inp = emb(torch.tensor([[t]]))
    return tok.decode(out)


def names_object(text, words):
    toks = set(''.join(c if c.isalnum() else ' ' for c in text.lower()).split())
    return any(w in toks for w in words)


def svg_curve(train, held, path):
    W, H, P = 640, 360, 50
    pts = train + held
    ymax = max(v for _, v in pts) * 1.05
    ymin = min(0.0, min(v for _, v in pts))
    xmax = max(s for s, _ in pts) or 1
    X = lambda s: P + (W - 2 * P) * s / xmax
    Y = lambda v: H - P - (H - 2 * P) * (v - ymin) / (ymax - ymin)
    line = lambda data, col: '<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' % (
        col, ' '.join(f'{X(s):.1f},{Y(v):.1f}' for s, v in data))
    ticks = ''.join(f'<text x="{P - 8}" y="{Y(v) + 4:.1f}" font-size="11" text-anchor="end">{v:.1f}</text>'
                    for v in np.linspace(ymin, ymax, 5))
    xt = ''.join(f'<text x="{X(s):.1f}" y="{H - P + 16}" font-size="11" text-anchor="middle">{int(s)}</text>'
                 for s in np.linspace(0, xmax, 5))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">'
           f'<rect width="{W}" height="{H}" fill="white"/>'
           f'<line x1="{P}" y1="{H - P}" x2="{W - P}" y2="{H - P}" stroke="black"/>'
           f'<line x1="{P}" y1="{P}" x2="{P}" y2="{H - P}" stroke="black"/>{ticks}{xt}'
           f'{line(train, "#1f77b4")}{line(held, "#d62728")}'
           f'<text x="{W / 2}" y="{H - 12}" font-size="12" text-anchor="middle">step</text>'
           f'<text x="{W - P}" y="{P - 20}" font-size="12" text-anchor="end" fill="#1f77b4">train loss (mean of 10 steps)</text>'
           f'<text x="{W - P}" y="{P - 6}" font-size="12" text-anchor="end" fill="#d62728">held-out loss</text>'
           f'<text x="{W / 2}" y="20" font-size="14" text-anchor="middle">controlled VLM connector: captioning loss</text></svg>')
    open(path, 'w').write(svg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--scenes', required=True)
    ap.add_argument('--heldout', required=True)
    ap.add_argument('--effnet', required=True)
    ap.add_argument('--gguf', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--steps', type=int, default=400)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--eval-every', type=int, default=50)
    ap.add_argument('--n-heldout-loss', type=int, default=64)
    ap.add_argument('--n-generate', type=int, default=60)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--standardize', type=int, default=1,
                    help='1: train on per-channel standardised features, folded into linear_1 when saved')
    ap.add_argument('--bf16', type=int, default=1,
                    help='1: bf16 autocast for the frozen LLM forward/backward (CPU avx512_bf16; f32 master weights)')
    ap.add_argument('--init', default='',
                    help='start from the connector (and feature standardisation) of a previous run\'s '
                         'checkpoint.pt: a second stage with a fresh warm-up + cosine schedule (a warm restart); '
                         'its curves continue that run\'s, with steps counted from its last step')
    ap.add_argument('--feature-cache', default='',
                    help='directory holding features_train.npy / features_heldout.npy (default: --out)')
    ap.add_argument('--resume', action='store_true',
                    help='continue from OUT/checkpoint.pt (written at every held-out evaluation) when it exists')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    t_start = time.time()

    sd = eff.load_safetensors(a.effnet)
    train_rows, held_rows = read_scenes(a.scenes), read_scenes(a.heldout)
    fc = a.feature_cache or a.out
    ftr = features_for(a.scenes, train_rows, sd, os.path.join(fc, 'features_train.npy'))
    fho = features_for(a.heldout, held_rows, sd, os.path.join(fc, 'features_heldout.npy'))
    t_feat = time.time() - t_start
    tok, model = load_llm(a.gguf)
    pre, suf, end = ids(tok, PREFIX), ids(tok, SUFFIX), ids(tok, END)
    assert len(end) == 1, end
    conn = Connector()
    init = None
    if a.init:
        init = torch.load(a.init, weights_only=False)
        if init['args'].get('train_scenes') != len(train_rows):
            sys.exit(f'{a.init} was trained on {init["args"].get("train_scenes")} scenes, not {len(train_rows)}')
        conn.load_state_dict(init['conn'])  # weights and the first stage's mean / inv_std
    elif a.standardize:
        flat = ftr.reshape(-1, ftr.shape[-1]).double()
        conn.mean.copy_(flat.mean(0).float())
        # Channels that barely vary (ReLU6 units nearly always 0) keep a floor, so the folded
        # weights W / std stay small enough for the f16 file.
        conn.inv_std.copy_(1.0 / flat.std(0).clamp_min(0.05).float())
    opt = torch.optim.AdamW(conn.parameters(), lr=a.lr, weight_decay=0.0)
    warm = max(1, a.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps)))
    hl = held_rows[:a.n_heldout_loss]
    run_args = {'steps': a.steps, 'batch': a.batch, 'lr': a.lr, 'seed': a.seed, 'standardize': a.standardize,
                'bf16': a.bf16, 'train_scenes': len(train_rows)}
    prior_stages = []  # the stages this run continues (--init): settings, steps run, seconds; oldest first
    if init is not None:
        run_args['init'] = {'args': init['args'], 'step': init['step']}
        prior_stages = init.get('stages', []) + [dict({k: v for k, v in init['args'].items() if k != 'init'},
                                                      steps=init['step'], seconds=round(init['train_seconds'], 1))]
    off = sum(st['steps'] for st in prior_stages)  # curves and reported steps continue from there
    ckpt_path = os.path.join(a.out, 'checkpoint.pt')
    g = torch.Generator().manual_seed(a.seed)
    start, done_s = 1, 0.0
    if a.resume and os.path.exists(ckpt_path):
        c = torch.load(ckpt_path, weights_only=False)
        if c['args'] != run_args:
            sys.exit(f'{ckpt_path} was written for {c["args"]}, not {run_args}: delete it or pass the same settings')
        conn.load_state_dict(c['conn']); opt.load_state_dict(c['opt']); sched.load_state_dict(c['sched'])
        g.set_state(c['g']); order = c['order']; start = c['step'] + 1; done_s = c['train_seconds']
        untrained, held_curve, train_curve = c['untrained'], c['held_curve'], c['train_curve']
        print(f'resumed at step {c["step"]} ({done_s:.0f}s of training so far)', file=sys.stderr, flush=True)
    elif init is not None:
        untrained, held_curve, train_curve, order = init['untrained'], list(init['held_curve']), list(init['train_curve']), []
        done_s = 0.0
    else:
        untrained = heldout_loss(tok, model, conn, fho, hl, pre, suf, end)
        held_curve, train_curve, order = [(0, untrained)], [], []
    print(f'untrained held-out loss {untrained:.4f}', file=sys.stderr, flush=True)
    window = []
    t_train = time.time() - done_s
    for step in range(start, a.steps + 1):
        if len(order) < a.batch:
            order += torch.randperm(len(train_rows), generator=g).tolist()
        idx, order = order[:a.batch], order[a.batch:]
        x, m, l = build_batch(tok, model, conn, ftr[idx], [train_rows[i]['caption'] for i in idx], pre, suf, end)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bool(a.bf16)):
            loss = loss_of(model, x, m, l)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        window.append(float(loss))
        if step % 10 == 0:
            train_curve.append((off + step, sum(window) / len(window)))
            window = []
            el = time.time() - t_train
            print(f'[{step}/{a.steps}] loss {train_curve[-1][1]:.4f}  {el:.0f}s elapsed, '
                  f'{el / step * (a.steps - step):.0f}s left', file=sys.stderr, flush=True)
        if step % a.eval_every == 0 or step == a.steps:
            h = heldout_loss(tok, model, conn, fho, hl, pre, suf, end)
            held_curve.append((off + step, h))
            print(f'  held-out loss {h:.4f}', file=sys.stderr, flush=True)
            torch.save({'args': run_args,
                        'conn': conn.state_dict(), 'opt': opt.state_dict(), 'sched': sched.state_dict(),
                        'g': g.get_state(), 'order': order, 'step': step, 'train_seconds': time.time() - t_train,
                        'stages': prior_stages,
                        'untrained': untrained, 'held_curve': held_curve, 'train_curve': train_curve},
                       ckpt_path + '.tmp')
            os.replace(ckpt_path + '.tmp', ckpt_path)
    train_s = time.time() - t_train

    # Store in f16 (the committed file); everything below uses the stored weights.
    from safetensors.torch import save_file
    state = {k: v.to(torch.float16).contiguous() for k, v in conn.folded().items()}
    path = os.path.join(a.out, 'connector.safetensors')
    save_file(state, path, metadata={'format': 'latentlens-controlled-connector-v1', 'd_in': '1280', 'd': '576',
                                     'act': 'gelu', 'seed': str(a.seed), 'steps': str(off + a.steps)})
    loss_unfolded = heldout_loss(tok, model, conn, fho, hl, pre, suf, end)
    conn.load_runtime(state)
    final = heldout_loss(tok, model, conn, fho, hl, pre, suf, end)

    gen_rows = held_rows[a.n_heldout_loss:a.n_heldout_loss + a.n_generate] or held_rows[:a.n_generate]
    offs = a.n_heldout_loss if len(held_rows) > a.n_heldout_loss else 0
    examples, named = [], 0
    for i, r in enumerate(gen_rows):
        cap = greedy(tok, model, conn, fho[offs + i], pre, suf, end[0])
        ok = names_object(cap, r['object_words'])
        named += ok
        examples.append({'image': r['image'], 'objects': r['objects'], 'reference': r['caption'],
                         'generated': cap, 'names_an_object': ok})
    svg_curve(train_curve, held_curve, os.path.join(a.out, 'loss_curve.svg'))
    stages = prior_stages + [dict({k: v for k, v in run_args.items() if k != 'init'}, seconds=round(train_s, 1))]
    total_steps = off + a.steps
    report = {
        'steps': total_steps, 'batch': a.batch, 'lr': a.lr, 'seed': a.seed, 'threads': a.threads,
        'standardize': a.standardize, 'bf16': a.bf16, 'stages': stages,
        'heldout_loss_before_f16_fold': round(loss_unfolded, 4),
        'train_scenes': len(train_rows), 'examples_seen': total_steps * a.batch,
        'feature_seconds': round(t_feat, 1), 'train_seconds': round(sum(st['seconds'] for st in stages), 1),
        'seconds_per_example': round(train_s / (a.steps * a.batch), 4),
        'heldout_loss_untrained': round(untrained, 4), 'heldout_loss_final': round(final, 4),
        'heldout_scenes_loss': len(hl), 'heldout_scenes_generated': len(gen_rows),
        'naming_rate': round(named / max(1, len(gen_rows)), 4),
        'held_curve': held_curve, 'train_curve': train_curve, 'examples': examples,
        'torch': torch.__version__,
    }
    json.dump(report, open(os.path.join(a.out, 'report.json'), 'w'), indent=1)
    print(json.dumps({k: report[k] for k in ('steps', 'train_seconds', 'heldout_loss_untrained',
                                             'heldout_loss_final', 'naming_rate')}))


if __name__ == '__main__':
    main()
