#!/bin/bash
# sickle's image embeddings (`run --image ... --dump-image-embeddings`) against the float64
# reference tools/reference/vision_ref.py, on sickle synth's tiny-kimi tower: PNG (RGB, RGBA,
# grayscale, palette) and JPEG images of several shapes (square, wide, tall, smaller than one
# merge block, over the preset's 1024-patch limit), decoded for the reference by Pillow
# (Image.convert("RGB"), as the model's processor does). Then bad images must fail with a clear
# message: truncated, wrong signature, a 50000 x 50000 header, zero bytes.
set -euo pipefail
PY=/usr/bin/python3
SRC=${SICKLE_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${SICKLE_BIN:-$SRC/build/bin/sickle}
if ! $PY -c "import torch, numpy, PIL" 2>/dev/null; then
  echo "SKIP: Debian's python3-torch / python3-numpy / python3-pil missing (make test-deps installs them)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" synth --preset tiny-kimi --seed 3 -o "$tmp/m" >/dev/null 2>&1

$PY - "$tmp" <<'PYEOF'
import sys, numpy as np
from PIL import Image
d = sys.argv[1]
rng = np.random.default_rng(7)
def smooth(w, h):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], -1)
    return np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
cases = [("square.png", 64, 64, "RGB"), ("wide.png", 300, 70, "RGBA"), ("tall.png", 40, 180, "L"),
         ("tiny.png", 9, 12, "P"), ("big.jpg", 900, 600, "RGB")]
for name, w, h, mode in cases:
    im = Image.fromarray(smooth(w, h))
    if mode == "RGBA":
        a = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
        im = im.copy(); im.putalpha(a)
    elif mode != "RGB":
        im = im.convert(mode)
    im.save(f"{d}/{name}", quality=90) if name.endswith(".jpg") else im.save(f"{d}/{name}")
    np.save(f"{d}/{name}.npy", np.asarray(Image.open(f"{d}/{name}").convert("RGB")))
PYEOF

imgs=(square.png wide.png tall.png tiny.png big.jpg)
args=(); pix=()
for f in "${imgs[@]}"; do args+=(--image "$tmp/$f"); pix+=("$tmp/$f.npy"); done
"$BIN" run -m "$tmp/m" "${args[@]}" --dump-image-embeddings "$tmp/sickle.safetensors"
$PY "$SRC/tools/reference/vision_ref.py" --model "$tmp/m" --pixels "${pix[@]}" --out "$tmp/ref.safetensors"

$PY - "$tmp" "$SRC/tools/reference" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np, st
a, b = st.SafeTensors(f"{sys.argv[1]}/sickle.safetensors"), st.SafeTensors(f"{sys.argv[1]}/ref.safetensors")
ga, gb = a.get("grid_thw"), b.get("grid_thw")
assert (ga == gb).all(), (ga, gb)
assert sorted(a.names()) == sorted(b.names()), (a.names(), b.names())
worst = 0
for n in sorted(x for x in a.names() if x.startswith("image.")):
    x, y = a.get(n), b.get(n)
    assert x.shape == y.shape and a.dtype(n) == "F32", (n, x.shape, y.shape)
    rel = np.abs(x - y).max() / np.abs(y).max()
    print(f"{n}: {x.shape[0]} tokens, grid {ga[int(n[6:])].tolist()}, max|diff|/max|ref| = {rel:.2e}")
    worst = max(worst, rel)
assert worst < 1e-4, worst
PYEOF

# The text model with images in the prompt (bf16 experts: exact kernels): each placeholder 277
# (tiny-kimi's media_placeholder_token_id) expands to its image's tokens, which take the image's
# embeddings; logits at every position against ref_model.py fed the reference's embeddings.
"$BIN" synth --preset tiny-kimi --seed 5 --quant none -o "$tmp/t" >/dev/null 2>&1
toks=5,6,277,7,8,277,9
"$BIN" run -m "$tmp/t" --tokens $toks --image "$tmp/wide.png" --image "$tmp/tiny.png" -n 0 \
  --dump-logits "$tmp/sl.safetensors" 2>/dev/null
"$BIN" run -m "$tmp/t" --tokens $toks --image "$tmp/tiny.png" --image "$tmp/wide.png" -n 0 \
  --dump-logits "$tmp/swapped.safetensors" 2>/dev/null
$PY "$SRC/tools/reference/vision_ref.py" --model "$tmp/t" --pixels "$tmp/wide.png.npy" "$tmp/tiny.png.npy" \
  --out "$tmp/r2.safetensors" --tokens $toks --logits-out "$tmp/rl.safetensors"
$PY - "$tmp" "$SRC/tools/reference" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np, st
d = sys.argv[1]
a, b = st.SafeTensors(f"{d}/sl.safetensors").get("logits"), st.SafeTensors(f"{d}/rl.safetensors").get("logits")
w = st.SafeTensors(f"{d}/swapped.safetensors").get("logits")
assert a.shape == b.shape == (2 + 33 + 2 + 1 + 1, 512), (a.shape, b.shape)
rel = (np.abs(a - b).max(1) / np.abs(b).max(1)).max()
swapped = (np.abs(w - b).max(1) / np.abs(b).max(1)).max()
print(f"text logits with 2 images ({a.shape[0]} positions): max row |diff|/max|ref| = {rel:.2e}; "
      f"images swapped: {swapped:.2e}")
assert rel < 1e-4, rel
assert swapped > 1e-2, swapped  # the image content reaches the text model
PYEOF

# Bad images: a clear error, never a crash.
printf '\x89PNG\r\n\x1a\nrest' > "$tmp/trunc.png"
head -c 200 "$tmp/big.jpg" > "$tmp/trunc.jpg"
head -c $(( $(stat -c %s "$tmp/big.jpg") / 2 )) "$tmp/big.jpg" > "$tmp/halfscan.jpg"  # header intact
printf 'GIF89a......' > "$tmp/magic.gif"
: > "$tmp/empty.png"
$PY - "$tmp/bomb.png" <<'PYEOF'
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
PYEOF
check_bad() {  # file, expected message fragment
  if "$BIN" run -m "$tmp/m" --image "$tmp/$1" --dump-image-embeddings "$tmp/bad.safetensors" 2> "$tmp/err"; then
    echo "FAIL: $1 was accepted"; exit 1
  fi
  grep -q -- "$2" "$tmp/err" || { echo "FAIL: $1: message lacks '$2':"; cat "$tmp/err"; exit 1; }
  grep -q "$1" "$tmp/err" || { echo "FAIL: $1: message does not name the file:"; cat "$tmp/err"; exit 1; }
  [ ! -e "$tmp/bad.safetensors" ] || { echo "FAIL: $1 left an output"; exit 1; }
}
check_bad trunc.png "bad PNG"
check_bad trunc.jpg "bad JPEG"
check_bad halfscan.jpg "Premature end of JPEG file"
check_bad magic.gif "not a PNG or JPEG"
check_bad empty.png "empty image"
check_bad bomb.png "exceeds the limit"
echo "vision reference: OK"
