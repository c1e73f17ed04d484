#!/bin/bash
# Images in observe/eval chat-jsonl data, end to end on sickle synth's tiny-kimi (it has a vision
# tower) with a byte-level Kimi tokenizer written here:
#   (a) observe's statistics with an image record differ from the same record with another
#       image (the image rows reached the MoE layers) and equal those of the same image given as
#       a data: URL instead of a path relative to the jsonl file;
#   (b) eval scores exactly (positions - windows - (image tokens + 1) x images): no image
#       position is a target and neither is the token right after each image;
#   (c) errors name FILE:LINE and the part: no vision tower, a missing file, a network URL,
#       bytes that are no image, DeepSeek-V3's chat format.
set -euo pipefail
PY=/usr/bin/python3
SRC=${SICKLE_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=$(realpath "${SICKLE_BIN:-$SRC/build/bin/sickle}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$BIN" synth --preset tiny-kimi --seed 3 -o "$tmp/m" >/dev/null 2>&1
"$BIN" synth --preset tiny-dsv3 --seed 3 -o "$tmp/ds" >/dev/null 2>&1
cp "$SRC/tests/golden/tokenizer/deepseek_v3/"* "$tmp/ds/"

# Tokenizer (ranks 0..255 = bytes, Kimi's specials at vocab-256.., where synth puts bos/eos and
# media_placeholder_token_id), two 56x56 PNGs (4x4 patches -> 4 image tokens each) and the data.
$PY - "$tmp" <<'PYEOF'
import base64, json, struct, sys, zlib
d = sys.argv[1]
vocab = json.load(open(f"{d}/m/config.json")).get("vocab_size") or \
    json.load(open(f"{d}/m/config.json"))["text_config"]["vocab_size"]
first = vocab - 256
assert first == 256, vocab  # a byte-level vocabulary: every rank is one byte
with open(f"{d}/m/tiktoken.model", "w") as f:
    for b in range(256):
        f.write(f"{base64.b64encode(bytes([b])).decode()} {b}\n")
names = {0: "[BOS]", 1: "[EOS]", 2: "<|im_end|>", 3: "<|im_user|>", 4: "<|im_assistant|>",
         10: "<|im_system|>", 17: "<|im_middle|>", 18: "<|media_begin|>", 19: "<|media_content|>",
         20: "<|media_end|>", 21: "<|media_pad|>", 22: "<think>", 23: "</think>"}
atd = {str(first + i): {"content": names.get(i, f"<|reserved_{i}|>"), "special": True}
       for i in range(256)}
json.dump({"added_tokens_decoder": atd, "bos_token": "[BOS]", "eos_token": "[EOS]",
           "tokenizer_class": "TikTokenTokenizer"}, open(f"{d}/m/tokenizer_config.json", "w"))

def png(w, h, salt):
    raw = b"".join(b"\0" + bytes((x * 37 + y * 11 * salt + c * 80) % 256 for x in range(w) for c in range(3))
                   for y in range(h))
    chunk = lambda t, b: struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
import os
os.makedirs(f"{d}/data/img")
one, two = png(56, 56, 1), png(56, 56, 2)
open(f"{d}/data/img/one.png", "wb").write(one)
open(f"{d}/data/img/two.png", "wb").write(two)
open(f"{d}/data/img/bad.png", "wb").write(b"GIF89a not an image")

def record(url):
    return json.dumps({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "what is in the picture?"},
                                     {"type": "image_url", "image_url": {"url": url}}]},
        {"role": "assistant", "content": "a pattern of stripes"}]})
text = json.dumps({"messages": [{"role": "user", "content": "hello there"},
                                {"role": "assistant", "content": "hi"}]})
def write(name, url):
    open(f"{d}/data/{name}", "w").write(text + "\n" + record(url) + "\n")
write("one.jsonl", "img/one.png")  # relative to the jsonl file
write("two.jsonl", "img/two.png")
write("one_data.jsonl", "data:image/png;base64," + base64.b64encode(one).decode())
write("missing.jsonl", "img/missing.png")
write("net.jsonl", "https://example.com/cat.png")
write("bad.jsonl", "file://img/bad.png")
PYEOF

# The tensor bytes of a statistics file (its header names the data files, which differ).
stats_data() { $PY -c '
import struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
sys.stdout.write(b[8 + n:].hex())' "$1" | sha256sum | cut -c1-16; }

cd "$tmp"  # relative image paths must not depend on the working directory
obs=(observe -m "$tmp/m" --format chat-jsonl --no-pack --threads 1)
"$BIN" "${obs[@]}" --data data/one.jsonl -o s1.safetensors >obs1.txt 2>obs1.err || { cat obs1.err; fail "observe one"; }
"$BIN" "${obs[@]}" --data data/two.jsonl -o s2.safetensors >/dev/null 2>&1 || fail "observe two"
"$BIN" "${obs[@]}" --data data/one_data.jsonl -o s1d.safetensors >/dev/null 2>&1 || fail "observe data: URL"
grep -q "observe: 1 image(s), 4 image tokens, embedded by the vision tower" obs1.err || { cat obs1.err; fail "no image log"; }
h1=$(stats_data s1.safetensors) h2=$(stats_data s2.safetensors) h1d=$(stats_data s1d.safetensors)
[ "$h1" != "$h2" ] || fail "(a) statistics do not depend on the image ($h1)"
[ "$h1" = "$h1d" ] || fail "(a) the same image by path and by data: URL gives different statistics"
echo "(a) observe: image one $h1, image two $h2, one as data: URL $h1d"

# (b) positions and windows from observe ("observed N tokens in S sequences"), image tokens
# from eval; the scored count must leave out exactly image tokens + 1 per image.
read -r L S < <(sed -n 's/^observed \([0-9]*\) tokens in \([0-9]*\) sequences.*/\1 \2/p' obs1.txt)
"$BIN" eval -m "$tmp/m" --format chat-jsonl --no-pack --threads 1 --data data/one.jsonl --json >e1.json 2>e1.err ||
  { cat e1.err; fail "eval one"; }
"$BIN" eval -m "$tmp/m" --format chat-jsonl --no-pack --threads 1 --data data/two.jsonl --json >e2.json 2>/dev/null ||
  fail "eval two"
read -r scored images itok ppl1 < <($PY -c '
import json, sys; j = json.load(open(sys.argv[1]))
print(int(j["tokens"]), j["images"], j["image_tokens"], j["ppl"])' e1.json)
ppl2=$($PY -c 'import json, sys; print(json.load(open(sys.argv[1]))["ppl"])' e2.json)
[ "$images" = 1 ] && [ "$itok" = 4 ] || fail "(b) expected 1 image of 4 tokens, got $images / $itok"
want=$((L - S - (itok + 1) * images))
[ "$scored" = "$want" ] || fail "(b) eval scored $scored tokens; $L positions in $S windows, $images image(s) of $itok tokens -> $want"
[ "$ppl1" != "$ppl2" ] || fail "(b) eval's perplexity does not depend on the image ($ppl1)"
echo "(b) eval: $L positions, $S windows, $itok image tokens -> $scored scored; ppl $ppl1 vs $ppl2"

# (c) errors.
expect_error() {  # expect_error PATTERN sickle-args...
  local pat=$1; shift
  if "$BIN" "$@" >err.out 2>&1; then fail "(c) succeeded: $*"; fi
  grep -qF -- "$pat" err.out || { cat err.out; fail "(c) expected '$pat' from: $*"; }
}
ev=(eval --format chat-jsonl --no-pack --threads 1)
expect_error "data/one.jsonl:2: messages[0].content[1]: this model has no vision tower" \
  "${ev[@]}" -m "$SRC/models/brown-kimi" --data data/one.jsonl
expect_error "data/missing.jsonl:2: messages[0].content[1]: data/img/missing.png: cannot read" \
  "${ev[@]}" -m "$tmp/m" --data data/missing.jsonl
expect_error "data/net.jsonl:2: messages[0].content[1]: 'https' URLs are not read (never the network)" \
  "${obs[@]}" --data data/net.jsonl -o x.safetensors
expect_error "data/bad.jsonl:2: messages[0].content[1]: not a PNG or JPEG image" \
  "${obs[@]}" --data data/bad.jsonl -o x.safetensors
expect_error "data/one.jsonl:2: messages[0].content[1]: image parts need a Kimi-K2.5 model" \
  "${ev[@]}" -m "$tmp/ds" --data data/one.jsonl
[ ! -e x.safetensors ] || fail "(c) a failed observe wrote its output"
echo "(c) errors name the file, line and part"
