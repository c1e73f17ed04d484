#!/bin/bash
# sickle chat's /image FILE (issue 15) on a synth tiny-kimi (a MoonViT tower in the real layout,
# media_placeholder_token_id = <|media_pad|> of the Kimi tokenizer written here), over stdin:
#   - the image reaches the model: two images of the same size give different greedy replies to
#     the same text, the same image the same reply;
#   - the prompt grows by the image's tokens (`-v` logs each turn's prompt and image tokens): a
#     112x56 image takes 4 tokens more than a 56x56 one; two attached images count both, and a
#     later turn keeps the earlier images (and reuses their cache);
#   - `/image` alone lists the pending images; a missing or truncated file is an error naming it
#     and the session goes on; a model without a tower says so.
set -euo pipefail
S=${SICKLE_BIN:?SICKLE_BIN not set}
SRC=${SICKLE_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
T=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$S" -q synth --preset tiny-kimi --seed 3 -o m > /dev/null
# The Kimi tokenizer of the synth vocabulary (as tests/server/lib.mjs writeKimiTokenizer: byte
# ranks, filler, Kimi's specials at [vocab - 256, vocab)) and the test images (PNG by hand:
# zlib + CRC, so the pixels are known exactly).
python3 - <<'PYEOF'
import base64, json, struct, zlib
cfg = json.load(open("m/config.json"))
vocab = cfg.get("text_config", cfg)["vocab_size"]
n = vocab - 256
lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
lines += ["%s %d" % (base64.b64encode(b"\x01f" + str(i).encode()).decode(), r) for i, r in enumerate(range(256, n))]
open("m/tiktoken.model", "w").write("\n".join(lines) + "\n")
specials = {0: "[BOS]", 1: "[EOS]", 2: "<|im_end|>", 3: "<|im_user|>", 4: "<|im_assistant|>", 10: "<|im_system|>",
            17: "<|im_middle|>", 18: "<|media_begin|>", 19: "<|media_content|>", 20: "<|media_end|>",
            21: "<|media_pad|>", 22: "<think>", 23: "</think>"}
atd = {str(n + k): {"content": v, "special": True} for k, v in specials.items()}
json.dump({"added_tokens_decoder": atd, "bos_token": "[BOS]", "eos_token": "[EOS]",
           "tokenizer_class": "TikTokenTokenizer"}, open("m/tokenizer_config.json", "w"))
assert cfg["media_placeholder_token_id"] == n + 21, cfg["media_placeholder_token_id"]

def png(path, w, h, salt, cut=0):
    raw = b"".join(b"\0" + bytes((x * 7 + y * 13 + c * 50 + salt * 91) & 255 for x in range(w) for c in range(3))
                   for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    open(path, "wb").write(data[:len(data) - cut] if cut else data)
png("a.png", 56, 56, 1)     # 4x4 patches -> 2x2 merged: 4 tokens
png("b.png", 56, 56, 2)     # same size, other pixels
png("wide.png", 112, 56, 1)  # 8 tokens
png("bad.png", 56, 56, 3, cut=40)
PYEOF

# chat NAME MODEL: stdin -> NAME.out (replies), NAME.err (messages and -v logs).
chat() {
  local model=$2
  timeout 120 "$S" -v chat -m "$model" -n 8 --temperature 0 -t 2 > "$1.out" 2> "$1.err" ||
    fail "chat $1 exited non-zero: $(tail -5 "$1.err")"
}
# The prompt / image tokens of turn N of NAME (from the -v log).
turn() { grep 'chat: prompt' "$1.err" | sed -n "${2}p"; }
prompt_tokens() { turn "$1" "$2" | sed -E 's/.*prompt ([0-9]+) tokens.*/\1/'; }
image_tokens() { turn "$1" "$2" | sed -E 's/.*\(([0-9]+) of images\).*/\1/'; }

printf '/image a.png\nWhat is in this picture?\n' | chat a m
printf '/image a.png\nWhat is in this picture?\n' | chat a2 m
printf '/image b.png\nWhat is in this picture?\n' | chat b m
printf '/image wide.png\nWhat is in this picture?\n' | chat wide m
printf 'What is in this picture?\n' | chat text m

grep -q '(image a.png: 4 tokens, attached to your next message)' a.err || fail "no attach message: $(cat a.err)"
[ -s a.out ] || fail "no reply with an image"
cmp -s a.out a2.out || fail "the same image gave different greedy replies: '$(cat a.out)' vs '$(cat a2.out)'"
cmp -s a.out b.out && fail "two different images gave the same reply '$(cat a.out)': the image did not reach the model"
[ "$(image_tokens a 1)" = 4 ] || fail "a.png: $(turn a 1)"
[ "$(image_tokens wide 1)" = 8 ] || fail "wide.png: $(turn wide 1)"
[ "$(image_tokens text 1)" = 0 ] || fail "text only: $(turn text 1)"
[ $(($(prompt_tokens wide 1) - $(prompt_tokens a 1))) = 4 ] ||
  fail "a 112x56 image must take 4 tokens more than a 56x56 one: $(turn wide 1) / $(turn a 1)"
[ "$(prompt_tokens a 1)" -gt $(($(prompt_tokens text 1) + 4)) ] ||
  fail "the image's tokens (and its markers) are missing from the prompt: $(turn a 1) / $(turn text 1)"

# Two images on one message, listed first; a second turn keeps them and reuses the cache.
printf '/image a.png\n/image wide.png\n/image\nCompare them.\nAnd now?\n' | chat two m
grep -q '(image 1: a.png, 4 tokens)' two.err || fail "/image list: $(cat two.err)"
grep -q '(image 2: wide.png, 8 tokens)' two.err || fail "/image list: $(cat two.err)"
[ "$(image_tokens two 1)" = 12 ] || fail "two images: $(turn two 1)"
[ "$(image_tokens two 2)" = 12 ] || fail "the second turn lost the images: $(turn two 2)"
reused=$(turn two 2 | sed -E 's/.*, ([0-9]+) reused.*/\1/')
[ "$reused" -ge "$(prompt_tokens two 1)" ] || fail "the second turn did not reuse the first turn's prompt (images included) from the cache: $(turn two 2)"
[ "$(wc -l < two.out)" = 2 ] || fail "two replies expected: $(cat two.out)"

# Bad files: an error naming each, the session goes on (the message is answered, text only).
printf '/image nope.png\n/image bad.png\n/image\nWhat is in this picture?\n' | chat bad m
grep -q '/image nope.png: .*nope.png' bad.err || fail "missing file: $(cat bad.err)"
grep -q '/image bad.png: .*bad.png' bad.err || fail "truncated file: $(cat bad.err)"
grep -q '(no image attached' bad.err || fail "/image list after errors: $(cat bad.err)"
[ "$(image_tokens bad 1)" = 0 ] || fail "a bad image was attached: $(turn bad 1)"
cmp -s bad.out text.out || fail "after the errors the session must answer as without images"

# A model without a vision tower (brown-kimi): a clear message, the session goes on.
if [ -f "$SRC/models/brown-kimi/config.json" ]; then
  printf '/image a.png\nhello\n' | chat notower "$SRC/models/brown-kimi"
  grep -q 'has no vision tower' notower.err || fail "no tower: $(cat notower.err)"
  [ -s notower.out ] || fail "no reply after the no-tower message"
fi
echo "chat_image: ok"
