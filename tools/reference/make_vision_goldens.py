#!/usr/bin/python3
"""Goldens for src/vision/vision_test.cpp -> tests/golden/vision/tiny_kimi.safetensors.

  - image.i / grid_thw: vision_ref.py's projected embeddings (float64 reference, stored F32) of
    `sickle synth --preset tiny-kimi --seed 1` for test images of several shapes;
  - pil.i: Pillow's own Image.resize(BICUBIC) of test images (Debian python3-pil: the processor's
    resize, an oracle nobody here wrote); vision_ref's numpy port is checked against it here too;
  - interp: torch's F.interpolate(mode="bicubic", align_corners=False) of a small table.
Test images: pixel (x, y, c) = test_pixel(x, y, c) below, which the C++ test recomputes.

Usage: /usr/bin/python3 tools/reference/make_vision_goldens.py --sickle build/bin/sickle
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
import vision_ref  # noqa: E402
from ref_model import Checkpoint  # noqa: E402

# (width, height): square with padding, wide, tall, smaller than one 28x28 merge block, and one
# over tiny-kimi's in_patch_limit of 1024 patches (85 x 35 = 2975 patches: resized).
SIZES = [(61, 47), (200, 90), (30, 130), (10, 10), (1200, 500)]
RESIZES = [((23, 17), (9, 7)), ((40, 12), (40, 5)), ((300, 20), (91, 20))]


def test_image(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    c = np.arange(3, dtype=np.int64)
    v = (x[..., None] * 3 + y[..., None] * 5 + c * 80 + ((x[..., None] * 7919 + y[..., None] * 104729 + c * 31337) % 61))
    return (v % 256).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sickle", required=True)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../tests/golden/vision/tiny_kimi.safetensors"))
    a = ap.parse_args()
    out = {}
    for i, ((w, h), (nw, nh)) in enumerate(RESIZES):
        px = test_image(w, h)
        pil = np.asarray(Image.fromarray(px).resize((nw, nh), resample=Image.BICUBIC))
        assert (pil == vision_ref.pil_resize_bicubic(px, nw, nh)).all(), "numpy port != Pillow"
        out[f"pil.{i}"] = ("U8", pil)
    table = torch.arange(3 * 4 * 2, dtype=torch.float64).reshape(3, 4, 2).sin() * 3
    out["interp"] = F.interpolate(table.permute(2, 0, 1).unsqueeze(0), size=(5, 7), mode="bicubic",
                                  align_corners=False).squeeze(0).permute(1, 2, 0).numpy().astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        model = os.path.join(d, "m")
        subprocess.run([a.sickle, "synth", "--preset", "tiny-kimi", "--seed", "1", "-o", model], check=True,
                       stdout=subprocess.DEVNULL)
        ck = Checkpoint(model)
        cfg = vision_ref.media_cfg(model)
        vis = vision_ref.Vision(ck)
        grids = []
        for i, (w, h) in enumerate(SIZES):
            patches, grid = vision_ref.preprocess(test_image(w, h), cfg)
            out[f"image.{i}"] = vis.image(patches, grid).numpy().astype(np.float32)
            grids.append(grid)
        out["grid_thw"] = np.array(grids, dtype=np.int64)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    st.write_safetensors(a.out, out, metadata={"sizes": ";".join(f"{w}x{h}" for w, h in SIZES),
                                               "resizes": ";".join(f"{w}x{h}:{nw}x{nh}" for (w, h), (nw, nh) in RESIZES)})
    print(a.out)


if __name__ == "__main__":
    main()
