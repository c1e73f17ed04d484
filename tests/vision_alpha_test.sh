#!/bin/bash
# Transparent PNGs decode to the RGB that vLLM's image loader gives Kimi-K2.5's processor
# (vllm/multimodal/media/image.py ImageMediaIO._convert_image_mode with its defaults: mode RGBA ->
# rgba_to_rgb, a paste onto a white RGB image with the alpha plane as mask; any other mode ->
# Image.convert("RGB")), performed here by Pillow 9.4 as the oracle. Pillow writes an RGBA, a
# gray+alpha (LA), a palette+tRNS (P), an RGB+tRNS and a gray+tRNS PNG with partial
# transparency; the image embeddings sickle computes from each must equal, byte for byte, those
# of an RGB PNG holding the oracle's pixels (the pipeline after decoding is deterministic and any
# changed pixel changes them). The test also checks that the cases tell the rules apart: the RGBA
# oracle differs from the alpha-dropping convert("RGB") and from truncating x / 255.
set -euo pipefail
PY=/usr/bin/python3
SRC=${SICKLE_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${SICKLE_BIN:-$SRC/build/bin/sickle}
. "$SRC/tests/vision_lib.sh"
vision_setup numpy PIL

$PY - "$tmp" <<'PYEOF'
import sys, warnings
import numpy as np
from PIL import Image
# Pillow warns on convert("RGB") of a palette image with tRNS bytes; vLLM runs the same call.
warnings.simplefilter("ignore", UserWarning)
d = sys.argv[1]
rng = np.random.default_rng(5)
w, h = 47, 33

def vllm_rgb(im):  # ImageMediaIO._convert_image_mode(image), image_mode "RGB", default kwargs
    if im.mode == "RGB":
        return im
    if im.mode == "RGBA":  # rgba_to_rgb(image, (255, 255, 255))
        out = Image.new("RGB", im.size, (255, 255, 255))
        out.paste(im, mask=im.split()[3])
        return out
    return im.convert("RGB")

rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
alpha[0, :5] = 0
alpha[1, :5] = 255
Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(f"{d}/rgba.png")
Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA").save(f"{d}/la.png")
pal = Image.fromarray(rgb).quantize(colors=16)
pal.save(f"{d}/ptrns.png", transparency=bytes(rng.integers(0, 256, 16, dtype=np.uint8)))
# The colour key covers an 8 x 8 block (and a few random pixels).
keyed = rgb.copy()
keyed[2:10, 2:10] = rgb[3, 3]
Image.fromarray(keyed).save(f"{d}/rgbtrns.png", transparency=tuple(int(v) for v in rgb[3, 3]))
Image.fromarray(keyed[..., 1]).save(f"{d}/ltrns.png", transparency=int(rgb[3, 3, 1]))

names = ["rgba", "la", "ptrns", "rgbtrns", "ltrns"]
modes = {"rgba": "RGBA", "la": "LA", "ptrns": "P", "rgbtrns": "RGB", "ltrns": "L"}
for n in names:
    im = Image.open(f"{d}/{n}.png")
    assert im.mode == modes[n], (n, im.mode)
    assert n == "rgba" or n == "la" or "transparency" in im.info, n
    # Pixels only: saving the image itself would carry its tRNS key into the oracle's file.
    Image.fromarray(np.asarray(vllm_rgb(im))).save(f"{d}/{n}.oracle.png")
    assert "transparency" not in Image.open(f"{d}/{n}.oracle.png").info, n
open(f"{d}/list", "w").write(" ".join(names) + "\n")

# The RGBA case separates the rules: compositing vs dropping alpha, rounding vs truncation.
o = np.asarray(Image.open(f"{d}/rgba.oracle.png")).astype(int)
a = alpha[..., None].astype(int)
assert (o != rgb).any(), "the RGBA oracle equals convert('RGB')"
assert (o != (255 * (255 - a) + rgb * a) // 255).any(), "the RGBA oracle equals truncation"
assert (o[0, :5] == 255).all() and (o[1, :5] == rgb[1, :5]).all()
PYEOF

read -r -a names <"$tmp/list"
same_embeddings "$tmp" "$tmp/m" png oracle.png "transparent PNGs do not decode to vLLM's RGB (Pillow oracle)" \
  "${names[@]}" || exit 1
echo "transparent PNGs decode to vLLM's RGB exactly: ${names[*]}"
