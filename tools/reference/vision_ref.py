#!/usr/bin/python3
"""Kimi-K2.5 vision reference: preprocessing (from decoded RGB pixels), the MoonViT tower and the
patch-merger projector, in float64 torch. Independent of sickle's C++ code.

Written from the public semantics (not from sickle):
  - vLLM `kimi_k25_vit.py`: MoonVision3dPatchEmbed (conv patch 14 + learnable [h0, w0, C] position
    table, `F.interpolate(mode="bicubic")` to the image's grid when the grid differs from the
    table), Rope2DPosEmbRepeated (theta 10000; per head, complex pair 2k turns by x * f_k and pair
    2k+1 by y * f_k, f_k = theta^(-4k/d), pairs are adjacent elements: not neox style),
    MoonViTEncoderLayer (pre-LayerNorm eps 1e-5, fused wqkv viewed [3, heads, head_dim], full
    attention within one image, scale head_dim^-0.5, MLP fc0 -> gelu(tanh) -> fc1), final
    LayerNorm, tpool_patch_merger (2x2 blocks, element order (kh, kw)), KimiK25MultiModalProjector
    "patchmerger" (pre_norm LayerNorm over C, view [-1, 4C], proj.0 -> exact-erf GELU -> proj.2);
  - the Kimi-K2.5 media processor (vLLM `kimi_k25_vision_fused.py`, a port of the HF
    KimiK25VisionProcessor): navit_resize_image (scale = min(1, sqrt(in_patch_limit /
    (max(1, w // 14) * max(1, h // 14))), 512 * 14 / w, 512 * 14 / h); int() truncation), PIL's
    bicubic resize to that size (only when the size changes), zero padding right / bottom to a
    multiple of merge * patch, x / 255, (x - mean) / std from preprocessor_config.json, patchify;
    tokens per image = (H / 28) * (W / 28);
  - Pillow's `ImagingResample` for 8-bit images (libImaging/Resample.c): bicubic a = -0.5,
    support 2 x max(1, in/out), taps from round-half-up bounds, weights normalised then fixed point
    with 22 fraction bits (rounded away from zero), accumulators starting at 2^21, floor then clamp
    to [0, 255]; the horizontal pass first (to uint8), then the vertical.

CLI: vision_ref.py --model DIR --pixels A.npy [B.npy ...] --out OUT.safetensors
     (each .npy a uint8 [H, W, 3] array; OUT holds F32 image.i [tokens, text hidden] and I64
     grid_thw [n, 3], the layout `sickle run --dump-image-embeddings` writes).
     With --tokens 1,2,P,3 --logits-out F: the text model's logits (ref_model.py) for that prompt,
     each media placeholder P (config.json media_placeholder_token_id) expanded, left to right, to
     its image's token count and those positions fed the image's float64 embeddings (vLLM's
     expand_media_tokens_in_input_ids + embedding merge); F holds F32 `logits` [T, vocab].
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
from ref_model import Checkpoint  # noqa: E402

torch.set_default_dtype(torch.float64)

DEFAULT_MEDIA_CFG = {"patch_size": 14, "merge_kernel_size": 2, "in_patch_limit": 16384,
                     "patch_limit_on_one_side": 512, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def media_cfg(model_dir):
    cfg = dict(DEFAULT_MEDIA_CFG)
    p = os.path.join(model_dir, "preprocessor_config.json")
    if os.path.exists(p):
        with open(p) as f:
            cfg.update(json.load(f).get("media_proc_cfg", {}))
    mk = cfg["merge_kernel_size"]
    cfg["merge_kernel_size"] = int(mk[0]) if isinstance(mk, (list, tuple)) else int(mk)
    return cfg


def navit_size(w, h, cfg):
    ps, side = cfg["patch_size"], cfg["patch_limit_on_one_side"]
    s1 = math.sqrt(cfg["in_patch_limit"] / (max(1.0, w // ps) * max(1.0, h // ps)))
    scale = min(1.0, s1, side * ps / w, side * ps / h)
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    return min(nw, side * ps), min(nh, side * ps)


# ---- Pillow's 8-bit bicubic resample ----
PREC = 22


def _bicubic(x):
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _coeffs(in_size, out_size):
    scale = in_size / out_size
    fscale = max(scale, 1.0)
    support = 2.0 * fscale
    rows = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        w = [_bicubic((x + xmin - center + 0.5) / fscale) for x in range(xmax)]
        ww = sum(w)
        if ww != 0.0:
            w = [v / ww for v in w]
        k = [int(-0.5 + v * (1 << PREC)) if v < 0 else int(0.5 + v * (1 << PREC)) for v in w]
        rows.append((xmin, np.array(k, dtype=np.int64)))
    return rows


def _pass(img, out_size, axis):
    """One 1-D pass over axis 1 (horizontal) or 0 (vertical) of an int64 [H, W, 3] array."""
    src = img if axis == 1 else img.transpose(1, 0, 2)
    out = np.empty((src.shape[0], out_size, 3), dtype=np.int64)
    for xx, (xmin, k) in enumerate(_coeffs(src.shape[1], out_size)):
        acc = (1 << (PREC - 1)) + np.tensordot(src[:, xmin:xmin + len(k), :], k, axes=([1], [0]))
        out[:, xx, :] = np.clip(acc >> PREC, 0, 255)
    return out if axis == 1 else out.transpose(1, 0, 2)


def pil_resize_bicubic(px, nw, nh):
    h, w, _ = px.shape
    img = px.astype(np.int64)
    if nw != w:
        img = _pass(img, nw, 1)
    if nh != h:
        img = _pass(img, nh, 0)
    return img.astype(np.uint8)


def preprocess(px, cfg):
    """uint8 [H, W, 3] -> (patches [N, 3, ps, ps] float64, (t, gh, gw))."""
    h, w, _ = px.shape
    ps, m = cfg["patch_size"], cfg["merge_kernel_size"]
    nw, nh = navit_size(w, h, cfg)
    if (nw, nh) != (w, h):
        px = pil_resize_bicubic(px, nw, nh)
    f = ps * m
    ph, pw = (f - nh % f) % f, (f - nw % f) % f
    px = np.pad(px, ((0, ph), (0, pw), (0, 0)))
    x = px.astype(np.float64) / 255.0
    x = (x - np.array(cfg["image_mean"], dtype=np.float64)) / np.array(cfg["image_std"], dtype=np.float64)
    H, W = x.shape[:2]
    gh, gw = H // ps, W // ps
    patches = x.reshape(gh, ps, gw, ps, 3).transpose(0, 2, 4, 1, 3).reshape(-1, 3, ps, ps)
    return torch.from_numpy(np.ascontiguousarray(patches)), (1, gh, gw)


# ---- tower and projector ----
class Vision:
    def __init__(self, ck):
        v = ck.root["vision_config"]

        def key(*names, default=None):
            for n in names:
                if n in v:
                    return v[n]
            if default is None:
                raise KeyError(names[0])
            return default

        self.C = key("vt_hidden_size", "hidden_size")
        self.heads = key("vt_num_attention_heads", "num_attention_heads")
        self.layers = key("vt_num_hidden_layers", "num_hidden_layers")
        self.merge = list(key("merge_kernel_size", default=[2, 2]))
        self.ck = ck

    def w(self, name):
        return torch.from_numpy(self.ck.where[name].get_f64(name))

    def lin(self, x, base):
        return x @ self.w(base + ".weight").T + self.w(base + ".bias")

    def ln(self, x, base):
        return F.layer_norm(x, (x.shape[-1],), self.w(base + ".weight"), self.w(base + ".bias"), eps=1e-5)

    def pos_emb(self, gh, gw):
        table = self.w("vision_tower.patch_embed.pos_emb.weight")  # [h0, w0, C]
        if (gh, gw) == tuple(table.shape[:2]):
            return table.reshape(-1, self.C)
        x = F.interpolate(table.permute(2, 0, 1).unsqueeze(0), size=(gh, gw), mode="bicubic", align_corners=False)
        return x.squeeze(0).permute(1, 2, 0).reshape(-1, self.C)

    def rope(self, x, gh, gw):
        """x [seq, heads, d]: pairs (2i, 2i+1) rotated; pair 2k by col * f_k, pair 2k+1 by row * f_k."""
        d = x.shape[-1]
        f = 1.0 / (10000.0 ** (torch.arange(0, d, 4)[: d // 4].double() / d))
        rows = torch.arange(gh).double().repeat_interleave(gw)
        cols = torch.arange(gw).double().repeat(gh)
        ang = torch.stack([torch.outer(cols, f), torch.outer(rows, f)], dim=-1).reshape(gh * gw, d // 2)
        cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def image(self, patches, grid):
        _, gh, gw = grid
        C, H = self.C, self.heads
        d = C // H
        wp = self.w("vision_tower.patch_embed.proj.weight").reshape(C, -1)
        x = patches.reshape(patches.shape[0], -1) @ wp.T + self.w("vision_tower.patch_embed.proj.bias")
        x = x + self.pos_emb(gh, gw)
        n = x.shape[0]
        for i in range(self.layers):
            B = f"vision_tower.encoder.blocks.{i}."
            qkv = self.lin(self.ln(x, B + "norm0"), B + "wqkv").view(n, 3, H, d)
            q, k, v = self.rope(qkv[:, 0], gh, gw), self.rope(qkv[:, 1], gh, gw), qkv[:, 2]
            s = torch.einsum("qhd,khd->hqk", q, k) * d ** -0.5
            o = torch.einsum("hqk,khd->qhd", torch.softmax(s, dim=-1), v).reshape(n, C)
            x = x + self.lin(o, B + "wo")
            hmid = F.gelu(self.lin(self.ln(x, B + "norm1"), B + "mlp.fc0"), approximate="tanh")
            x = x + self.lin(hmid, B + "mlp.fc1")
        x = self.ln(x, "vision_tower.encoder.final_layernorm")
        kh, kw = self.merge
        x = x.view(gh // kh, kh, gw // kw, kw, C).permute(0, 2, 1, 3, 4).reshape(-1, kh * kw, C)
        x = self.ln(x, "mm_projector.pre_norm").reshape(-1, kh * kw * C)
        x = F.gelu(self.lin(x, "mm_projector.proj.0"))
        return self.lin(x, "mm_projector.proj.2")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--pixels", nargs="+", required=True, help="uint8 [H, W, 3] .npy files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", help="comma-separated prompt ids with one media placeholder per image")
    ap.add_argument("--logits-out")
    a = ap.parse_args()
    ck = Checkpoint(a.model)
    cfg = media_cfg(a.model)
    vis = Vision(ck)
    out, grids, exact = {}, [], []
    for i, p in enumerate(a.pixels):
        px = np.load(p)
        if px.dtype != np.uint8 or px.ndim != 3 or px.shape[2] != 3:
            raise SystemExit(f"{p}: want a uint8 [H, W, 3] array, got {px.dtype} {px.shape}")
        patches, grid = preprocess(px, cfg)
        exact.append(vis.image(patches, grid))
        out[f"image.{i}"] = exact[-1].numpy().astype(np.float32)
        grids.append(grid)
    out["grid_thw"] = np.array(grids, dtype=np.int64)
    st.write_safetensors(a.out, out)
    if a.tokens:
        from ref_model import RefModel
        media = ck.root["media_placeholder_token_id"]
        prompt = [int(t) for t in a.tokens.split(",") if t.strip()]
        if sum(t == media for t in prompt) != len(exact):
            raise SystemExit(f"--tokens has {sum(t == media for t in prompt)} placeholders for {len(exact)} images")
        toks, embeds, queue = [], {}, list(exact)
        for t in prompt:
            if t != media:
                toks.append(t)
                continue
            for row in queue.pop(0):
                embeds[len(toks)] = row
                toks.append(media)
        with torch.no_grad():
            logits = RefModel(a.model).forward(toks, embeds=embeds)
        st.write_safetensors(a.logits_out, {"logits": logits.numpy().astype(np.float32),
                                            "tokens": np.array(toks, dtype=np.int32)})


if __name__ == "__main__":
    main()
