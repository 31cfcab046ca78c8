#!/usr/bin/env python3
"""Tiny random VLM fixtures: the independent reference for the VLM parity tests.

Builds three tiny random models of real architectures with HF transformers
(f32, seeded), runs each through its HF processor (PIL backend: the
reference for our preprocessing) on a small real photo from scikit-image,
and saves, per model, under tests/fixtures/tiny/<name>/:

  config.json, model.safetensors        the model as `save_pretrained` writes it
  preprocessor_config.json / processor_config.json, tokenizer.json, ...
                                         the processor as `save_pretrained` writes it
  image.png                              the input photo (PNG: lossless, so Rust
                                         decodes the same bytes PIL does)
  golden.safetensors                     input_ids [T] (i64), pixel_values
                                         (as the processor returns them, f32),
                                         image_features [n_visual, d] (connector
                                         output), hidden_states.{i} [T, d] for
                                         i in 0..=L (output_hidden_states=True)
  meta.json                              prompt, expanded text, settings

Models:
  llava_clip_llama     LlavaForConditionalGeneration, CLIP vision (layer -2,
                       strategy "default": CLS dropped) + Llama text (GQA)
  llava_siglip_qwen2   LlavaForConditionalGeneration, SigLIP vision (layer -1,
                       strategy "full") + Qwen2 text (q/k/v bias, tied)
  idefics3_llama       Idefics3ForConditionalGeneration, SigLIP-style vision,
                       pixel shuffle (scale 2) + linear, Llama text, image
                       splitting on (2 x 3 tiles + global image)
  smolvlm_llama        SmolVLMForConditionalGeneration (the SmolVLM-256M
                       architecture), tall photo: 3 x 2 tiles + global; the
                       prompt is laid out by Idefics3Processor (SmolVLMProcessor
                       writes the same layout but needs num2words/torchvision)

Usage: .venv/bin/python tools/make_tiny_fixtures.py [out_dir]
(default out_dir: tests/fixtures/tiny). Deterministic for a given torch /
transformers version; the versions used are recorded in meta.json.
"""

import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import transformers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipImageProcessorPil,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SiglipVisionConfig,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fixtures", "tiny")

SPECIAL = (
    ["<unk>", "<s>", "</s>", "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
    + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
)


def wordnet_sentences(limit=4000):
    """Glosses from Debian's wordnet-base: real text to train the tiny BPE on."""
    out = []
    path = "/usr/share/wordnet/data.noun"
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.startswith(" ") or "|" not in line:
                continue
            out.append(line.split("|", 1)[1].strip())
            if len(out) >= limit:
                break
    return out + ["USER: What is in the picture? ASSISTANT:", "User: Describe the image. Assistant:"]


def make_tokenizer(vocab_size=320):
    """A small byte-level BPE tokenizer (tokenizers library) with the VLM special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(wordnet_sentences(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIAL[3:]})
    return fast


def small_photo(name, size_wh):
    """A scikit-image sample photo, resized small with PIL (LANCZOS), RGB uint8."""
    from skimage import data

    arr = getattr(data, name)()
    img = Image.fromarray(arr).convert("RGB")
    return img.resize(size_wh, Image.LANCZOS)


def save_fixture(name, model, processor, image, prompt, extra_meta):
    out = os.path.join(OUT, name)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    image.save(os.path.join(out, "image.png"), optimize=True)
    # Reload the PNG exactly as a user would pass it.
    img = Image.open(os.path.join(out, "image.png")).convert("RGB")
    inputs = processor(images=img, text=prompt, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True, return_dict=True)
        feats = model.get_image_features(
            **{k: v for k, v in inputs.items() if k in ("pixel_values", "pixel_attention_mask")}
        )
        feats = feats.pooler_output
        feats = torch.cat([f.reshape(-1, f.shape[-1]) for f in feats], dim=0)
    tensors = {
        "input_ids": inputs["input_ids"][0].to(torch.int64).contiguous(),
        "pixel_values": inputs["pixel_values"].to(torch.float32).contiguous(),
        "image_features": feats.to(torch.float32).contiguous(),
    }
    for i, h in enumerate(outputs.hidden_states):
        tensors[f"hidden_states.{i}"] = h[0].to(torch.float32).contiguous()
    save_file(tensors, os.path.join(out, "golden.safetensors"))
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    meta = {
        "prompt": prompt,
        "expanded_text": text,
        "num_tokens": int(inputs["input_ids"].shape[1]),
        "num_hidden_states": len(outputs.hidden_states),
        "pixel_values_shape": list(inputs["pixel_values"].shape),
        "image_size_wh": list(img.size),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        **extra_meta,
    }
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    # Drop files the tests do not read (chat templates etc. stay if written).
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{name}: tokens={meta['num_tokens']} pixel_values={meta['pixel_values_shape']} "
          f"hidden_states={meta['num_hidden_states']} bytes={total}")


def llama_text(vocab):
    return LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, initializer_range=0.05,
        pad_token_id=None, bos_token_id=1, eos_token_id=2,
    )


def qwen2_text(vocab):
    return Qwen2Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, initializer_range=0.05,
        pad_token_id=None, bos_token_id=1, eos_token_id=2,
    )


def main():
    torch.manual_seed(0)
    tok = make_tokenizer()
    vocab = len(tok)
    image_id = tok.convert_tokens_to_ids("<image>")

    # 1. LLaVA: CLIP vision + Llama text.
    torch.manual_seed(1)
    vis = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=32, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )
    cfg = LlavaConfig(
        vision_config=vis, text_config=llama_text(vocab), image_token_id=image_id,
        projector_hidden_act="gelu", vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(cfg).eval().to(torch.float32)
    ip = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)
    save_fixture("llava_clip_llama", model, proc, small_photo("chelsea", (90, 60)),
                 "USER: <image>\nWhat is in the picture? ASSISTANT:", {"family": "llava"})

    # 2. LLaVA: SigLIP vision + Qwen2 text.
    torch.manual_seed(2)
    vis = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
    )
    cfg = LlavaConfig(
        vision_config=vis, text_config=qwen2_text(vocab), image_token_id=image_id,
        projector_hidden_act="gelu", vision_feature_layer=-1, vision_feature_select_strategy="full",
    )
    model = LlavaForConditionalGeneration(cfg).eval().to(torch.float32)
    ip = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8,
                          vision_feature_select_strategy="full", num_additional_image_tokens=0)
    save_fixture("llava_siglip_qwen2", model, proc, small_photo("astronaut", (64, 64)),
                 "USER: <image>\nDescribe the image. ASSISTANT:", {"family": "llava"})

    # 3. Idefics3 (SmolVLM layout): SigLIP vision + pixel shuffle + Llama text, splitting on.
    torch.manual_seed(3)
    cfg = Idefics3Config(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "image_size": 32, "patch_size": 4, "layer_norm_eps": 1e-6,
            "hidden_act": "gelu_pytorch_tanh",
        },
        text_config=llama_text(vocab).to_dict(),
        scale_factor=2, image_token_id=image_id,
    )
    model = Idefics3ForConditionalGeneration(cfg).eval().to(torch.float32)
    ip = Idefics3ImageProcessorPil(size={"longest_edge": 96}, max_image_size={"longest_edge": 32},
                                   do_image_splitting=True)
    image_seq_len = (32 // 4) ** 2 // (2 ** 2)
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=image_seq_len)
    save_fixture("idefics3_llama", model, proc, small_photo("coffee", (120, 80)),
                 "User:<image>Describe the image.<end_of_utterance>\nAssistant:",
                 {"family": "idefics3", "image_seq_len": image_seq_len})

    # 3b. SmolVLM (same layout as Idefics3), tall image, smaller text model.
    torch.manual_seed(4)
    text = llama_text(vocab).to_dict()
    text.update(num_hidden_layers=2, intermediate_size=96)
    cfg = SmolVLMConfig(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "image_size": 32, "patch_size": 4, "layer_norm_eps": 1e-6,
            "hidden_act": "gelu_pytorch_tanh",
        },
        text_config=text, scale_factor=2, image_token_id=image_id,
    )
    model = SmolVLMForConditionalGeneration(cfg).eval().to(torch.float32)
    ip = Idefics3ImageProcessorPil(size={"longest_edge": 96}, max_image_size={"longest_edge": 32},
                                   do_image_splitting=True)
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=image_seq_len)
    save_fixture("smolvlm_llama", model, proc, small_photo("rocket", (64, 96)),
                 "User:<image>What is this?<end_of_utterance>\nAssistant:",
                 {"family": "idefics3", "image_seq_len": image_seq_len})

    # 4. Preprocessing-only goldens on a larger photo (no model): our image
    # processors vs the HF PIL processors, more resampling work than above.
    out = os.path.join(OUT, "preprocess")
    os.makedirs(out, exist_ok=True)
    photo = small_photo("chelsea", (225, 150))
    photo.save(os.path.join(out, "chelsea.png"), optimize=True)
    img = Image.open(os.path.join(out, "chelsea.png")).convert("RGB")
    procs = {
        "clip": CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}),
        "siglip": SiglipImageProcessorPil(size={"height": 48, "width": 48}),
        "idefics3": Idefics3ImageProcessorPil(size={"longest_edge": 128}, max_image_size={"longest_edge": 48}),
        "idefics3_nosplit": Idefics3ImageProcessorPil(size={"longest_edge": 128},
                                                      max_image_size={"longest_edge": 48},
                                                      do_image_splitting=False),
    }
    tensors, cfgs = {}, {}
    for k, p in procs.items():
        pv = p(images=img, return_tensors="pt")["pixel_values"].to(torch.float32)
        tensors[k] = pv.reshape(-1, *pv.shape[-3:]).contiguous()
        cfgs[k] = p.to_dict()
    save_file(tensors, os.path.join(out, "pixel_values.safetensors"))
    with open(os.path.join(out, "processors.json"), "w") as f:
        json.dump(cfgs, f, indent=1, default=str)
    print("preprocess:", {k: list(v.shape) for k, v in tensors.items()})


    # 5. Real-size processor settings (LLaVA-1.5 CLIP 336, CLIP 224, SigLIP
    # 384, SmolVLM 2048/512, Idefics3 1456/364) on the full-size chelsea photo:
    # too big to store whole, so a compact golden: per tile and channel the
    # f64 sum, and every 397th value of the flat pixel values.
    full = Image.fromarray(__import__("skimage").data.chelsea()).convert("RGB")
    full.save(os.path.join(out, "chelsea_full.png"), optimize=True)
    img = Image.open(os.path.join(out, "chelsea_full.png")).convert("RGB")
    procs = {
        "clip336": CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        "clip224": CLIPImageProcessorPil(),
        "siglip384": SiglipImageProcessorPil(size={"height": 384, "width": 384}),
        "smolvlm": Idefics3ImageProcessorPil(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512}),
        "idefics3": Idefics3ImageProcessorPil(),
    }
    tensors, cfgs = {}, {}
    for k, p in procs.items():
        pv = p(images=img, return_tensors="pt")["pixel_values"].to(torch.float32)
        pv = pv.reshape(-1, *pv.shape[-3:]).contiguous()
        tensors[f"{k}.shape"] = torch.tensor(list(pv.shape), dtype=torch.int64)
        tensors[f"{k}.sums"] = pv.to(torch.float64).sum(dim=(-1, -2)).reshape(-1).contiguous()
        tensors[f"{k}.samples"] = pv.reshape(-1)[::397].contiguous()
        cfgs[k] = p.to_dict()
        print("real-size", k, list(pv.shape))
    save_file(tensors, os.path.join(out, "real_size.safetensors"))
    with open(os.path.join(out, "real_size_processors.json"), "w") as f:
        json.dump(cfgs, f, indent=1, default=str)

    # 6. JPEG: the same small photo as JPEG, and PIL's decoded RGB (our
    # decoder is the `image` crate's; JPEG decoders may differ slightly).
    photo.save(os.path.join(out, "chelsea.jpg"), quality=90)
    rgb = np.array(Image.open(os.path.join(out, "chelsea.jpg")).convert("RGB"))
    save_file({"rgb": torch.from_numpy(rgb.copy())}, os.path.join(out, "chelsea_jpg_pil_rgb.safetensors"))


    # 7. RGBA PNG (alpha gradient): HF composites transparency onto white
    # (convert_to_rgb) before the processor; the PIL RGBA image is passed as is.
    small = small_photo("chelsea", (45, 30))
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, 45).astype(np.uint8), (30, 1)), "L")
    rgba = small.copy()
    rgba.putalpha(alpha)
    rgba.save(os.path.join(out, "chelsea_rgba.png"), optimize=True)
    p = SiglipImageProcessorPil(size={"height": 24, "width": 36})
    pv = p(images=Image.open(os.path.join(out, "chelsea_rgba.png")), return_tensors="pt")["pixel_values"]
    save_file({"pixel_values": pv.to(torch.float32).contiguous()}, os.path.join(out, "chelsea_rgba_siglip.safetensors"))
    with open(os.path.join(out, "chelsea_rgba_siglip.json"), "w") as f:
        json.dump(p.to_dict(), f, indent=1, default=str)


if __name__ == "__main__":
    main()
