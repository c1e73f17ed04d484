#!/bin/bash
# sickle's image embeddings (`run --image ... --dump-image-embeddings`) against the float64
# reference tools/reference/vision_ref.py, on sickle synth's tiny-kimi tower: PNG (RGB, RGBA,
# grayscale, palette) and JPEG images of several shapes (square, wide, tall, smaller than one
# merge block, over the preset's 1024-patch limit), decoded for the reference by Pillow as vLLM's
# image loader does (RGBA composited onto white, other modes Image.convert("RGB"); see
# tests/vision_alpha_test.sh). Then bad images must fail with a clear
# message: truncated, wrong signature, a 50000 x 50000 header, zero bytes. CMYK and YCCK JPEGs
# must decode to Pillow's RGB byte for byte.
set -euo pipefail
PY=/usr/bin/python3
SRC=${SICKLE_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${SICKLE_BIN:-$SRC/build/bin/sickle}
. "$SRC/tests/vision_lib.sh"
vision_setup torch numpy PIL

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
    im = Image.open(f"{d}/{name}")
    if im.mode == "RGBA":  # vllm/multimodal/media/image.py: rgba_to_rgb onto (255, 255, 255)
        rgb = Image.new("RGB", im.size, (255, 255, 255))
        rgb.paste(im, mask=im.split()[3])
    else:
        rgb = im.convert("RGB")
    np.save(f"{d}/{name}.npy", np.asarray(rgb))
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

# CMYK and YCCK JPEGs decode to exactly Pillow's RGB. Pillow writes Adobe CMYK JPEGs; a YCCK
# one is the same file with the Adobe marker's transform byte set to 2 (libjpeg then reads the
# planes as YCCK), and a plain CMYK one drops the Adobe marker. Each JPEG's image embeddings must
# equal, byte for byte, those of a PNG holding Pillow's decoded pixels: the pipeline after
# decoding is deterministic and any changed pixel changes them.
$PY - "$tmp" <<'PYEOF'
import io, struct, sys
import numpy as np
from PIL import Image
d = sys.argv[1]
rng = np.random.default_rng(11)

def segments(b):  # (marker, start, end) of each marker segment before the scan
    i = 2
    while b[i] == 0xFF and b[i + 1] != 0xDA:
        n = struct.unpack(">H", b[i + 2:i + 4])[0]
        yield b[i + 1], i, i + 2 + n
        i += 2 + n

def adobe(b):
    for m, s, e in segments(b):
        if m == 0xEE and b[s + 4:s + 9] == b"Adobe":
            return s, e
    raise SystemExit("Pillow wrote no Adobe marker")

cases = []
for name, w, h, sub in [("cmyk", 61, 45, 0), ("cmyk420", 90, 70, 2)]:
    y, x = np.mgrid[0:h, 0:w]
    planes = [x * 255 // (w - 1), y * 255 // (h - 1), (x * 3 + y * 5) % 256, ((x - w / 2) ** 2 + (y - h / 2) ** 2) % 256]
    a = np.clip(np.stack(planes, -1) + rng.integers(-25, 26, (h, w, 4)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, "CMYK").save(buf, "JPEG", quality=92, subsampling=sub)
    b = buf.getvalue()
    s, e = adobe(b)
    assert b[e - 1] == 0, "expected an Adobe transform 0 (CMYK) marker"
    cases.append((name, b))
    cases.append((name + "_ycck", b[:e - 1] + b"\x02" + b[e:]))  # same planes read as YCCK
    cases.append((name + "_noadobe", b[:s] + b[e:]))
for name, b in cases:
    open(f"{d}/{name}.jpg", "wb").write(b)
    im = Image.open(f"{d}/{name}.jpg")
    assert im.mode == "CMYK", (name, im.mode)
    rgb = im.convert("RGB")
    rgb.save(f"{d}/{name}.png")
open(f"{d}/list", "w").write(" ".join(n for n, _ in cases) + "\n")
# The YCCK reading must change the pixels (else the patch did nothing).
p = lambda n: np.asarray(Image.open(f"{d}/{n}.png"))
assert (p("cmyk") != p("cmyk_ycck")).any() and (p("cmyk") == p("cmyk_noadobe")).all()
PYEOF

read -r -a names <"$tmp/list"
same_embeddings "$tmp" "$tmp/m" jpg png "CMYK/YCCK JPEG embeddings differ from those of Pillow's decoded pixels" \
  "${names[@]}" || exit 1
echo "CMYK/YCCK JPEGs decode to Pillow's RGB exactly: ${names[*]}"

# Bad images: a clear error, never a crash.
printf '\x89PNG\r\n\x1a\nrest' > "$tmp/trunc.png"
head -c 200 "$tmp/big.jpg" > "$tmp/trunc.jpg"
head -c $(( $(stat -c %s "$tmp/big.jpg") / 2 )) "$tmp/big.jpg" > "$tmp/halfscan.jpg"  # header intact
head -c $(( $(stat -c %s "$tmp/cmyk420.jpg") / 2 )) "$tmp/cmyk420.jpg" > "$tmp/halfcmyk.jpg"
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
check_bad halfcmyk.jpg "Premature end of JPEG file"
check_bad magic.gif "not a PNG or JPEG"
check_bad empty.png "empty image"
check_bad bomb.png "exceeds the limit"
echo "vision reference: OK"
