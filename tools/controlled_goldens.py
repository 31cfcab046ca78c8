"""Golden hidden states of the controlled VLM from the PyTorch training model
(tools/train_connector.py): EfficientNet-Lite0 reference -> the committed f16
connector -> SmolLM2 (transformers, GGUF dequantised), for the committed scene
PNGs in tests/fixtures/controlled/. tests/controlled_vlm.rs compares the Rust
runtime against it.

  python tools/controlled_goldens.py --connector F --effnet F --gguf F --out tests/fixtures/controlled/golden.json
"""
import argparse, glob, json, os, sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import efficientnet_lite0 as eff  # noqa: E402
import train_connector as tc  # noqa: E402

LAYERS = [0, 1, 8, 15, 29, 30]
DIMS = list(range(0, 576, 36))  # 16 dims


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--connector', required=True)
    ap.add_argument('--effnet', required=True)
    ap.add_argument('--gguf', required=True)
    ap.add_argument('--images', default='tests/fixtures/controlled')
    ap.add_argument('--out', required=True)
    a = ap.parse_args()
    torch.set_num_threads(2)
    sd = eff.load_safetensors(a.effnet)
    tok, model = tc.load_llm(a.gguf)
    from safetensors.torch import load_file
    conn = tc.Connector()
    conn.load_runtime(load_file(a.connector))
    pre, suf = tc.ids(tok, tc.PREFIX), tc.ids(tok, tc.SUFFIX)
    emb = model.get_input_embeddings()
    out = []
    for path in sorted(glob.glob(os.path.join(a.images, '*.png'))):
        img = np.asarray(Image.open(path).convert('RGB'))
        with torch.no_grad():
            f = eff.features(sd, eff.preprocess_u8(img))[0].flatten(1).T  # [49, 1280]
            vis = conn(f)
            x = torch.cat([emb(torch.tensor(pre)), vis, emb(torch.tensor(suf))])[None]
            hs = model(inputs_embeds=x, output_hidden_states=True).hidden_states
        T = x.shape[1]
        rows = [len(pre), len(pre) + 24, len(pre) + 48, T - 1]
        out.append({
            'image': os.path.basename(path),
            'prefix_ids': pre, 'suffix_ids': suf, 'tokens': T, 'rows': rows, 'dims': DIMS,
            'layers': {str(l): {'values': hs[l][0][rows][:, DIMS].numpy().round(6).tolist(),
                                'norms': hs[l][0][rows].norm(dim=-1).numpy().round(5).tolist()} for l in LAYERS},
            'greedy_next': int(model.lm_head(hs[-1][0, -1]).argmax()),
        })
    json.dump({'reference': f'tools/controlled_goldens.py (torch {torch.__version__})', 'items': out}, open(a.out, 'w'))
    print('wrote', a.out)


if __name__ == '__main__':
    main()
