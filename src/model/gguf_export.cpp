// sickle/model/gguf_export.cpp — DeepSeek-V3-family checkpoint -> llama.cpp `deepseek2` GGUF.
// Sources: llama.cpp (the release bundled by node-llama-cpp 3.21.1) conversion/deepseek.py,
// conversion/base.py, src/models/deepseek2.cpp, src/llama-arch.cpp, gguf-py/gguf/gguf_writer.py.
#include "model/gguf_export.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "base/error.h"
#include "base/log.h"
#include "base/numeric.h"
#include "io/checkpoint.h"
#include "io/output_path.h"
#include "tokenizer/tokenizer.h"

namespace sickle {

namespace fs = std::filesystem;
using gguf::GgmlType;
using gguf::Value;
using json = nlohmann::json;

// ---- building blocks ------------------------------------------------------------------------

int64_t int4_row_to_q4_0(const uint32_t* packed, const uint16_t* scales, int64_t cols, uint8_t* out,
                         std::string_view what) {
  SICKLE_CHECK(cols % 32 == 0, "{}: {} columns", what, cols);
  int64_t inexact = 0;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const float s = bf16_to_f32(scales[b]);
    const uint16_t d = f32_to_f16(s);
    if ((d & 0x7c00) == 0x7c00 && std::isfinite(s))
      fail("{}: int4 scale {} of block {} does not fit in f16 (max 65504): Q4_0 cannot hold it", what, s, b);
    if (f16_to_f32(d) != s) ++inexact;
    uint8_t* blk = out + b * 18;
    std::memcpy(blk, &d, 2);
    // Source: element j of the block is nibble j%8 of word j/8 (LSB first), already q + 8.
    // Q4_0: byte j holds element j (low nibble) and element j + 16 (high nibble).
    uint8_t nib[32];
    for (int w = 0; w < 4; ++w) {
      const uint32_t word = packed[b * 4 + w];
      for (int k = 0; k < 8; ++k) nib[w * 8 + k] = uint8_t((word >> (4 * k)) & 0xf);
    }
    for (int j = 0; j < 16; ++j) blk[2 + j] = uint8_t(nib[j] | (nib[j + 16] << 4));
  }
  return inexact;
}

void quantize_row_q8_0(const float* x, int64_t n, uint8_t* out) {
  SICKLE_CHECK(n % 32 == 0);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t* blk = out + b * 34;
    const uint16_t h = f32_to_f16(d);
    std::memcpy(blk, &h, 2);
    for (int j = 0; j < 32; ++j) blk[2 + j] = uint8_t(int8_t(std::roundf(xb[j] * id)));
  }
}

namespace {

// GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 + n in order.
const std::vector<std::string>& gpt2_byte_table() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    auto printable = [](int b) {
      return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    };
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cp = printable(b) ? uint32_t(b) : uint32_t(256 + n++);
      std::string s;
      if (cp < 0x80) {
        s.push_back(char(cp));
      } else {
        s.push_back(char(0xc0 | (cp >> 6)));
        s.push_back(char(0x80 | (cp & 0x3f)));
      }
      t[size_t(b)] = s;
    }
    return t;
  }();
  return table;
}

}  // namespace

std::string gpt2_byte_encode(std::string_view bytes) {
  const auto& t = gpt2_byte_table();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) out += t[c];
  return out;
}

std::vector<std::string> tiktoken_merges(const std::vector<std::string>& ranks) {
  std::unordered_map<std::string, int64_t> rank_of;
  rank_of.reserve(ranks.size() * 2);
  for (size_t i = 0; i < ranks.size(); ++i) rank_of.emplace(ranks[i], int64_t(i));
  std::vector<std::string> merges;
  std::vector<std::string> parts;
  for (size_t r = 0; r < ranks.size(); ++r) {
    const std::string& tok = ranks[r];
    if (tok.size() < 2) continue;
    parts.clear();
    for (char c : tok) parts.emplace_back(1, c);
    // QwenModel.bpe(mergeable_ranks, token, max_rank=rank): merge the lowest-ranked adjacent
    // pair (first on ties) while its rank is below the token's own.
    for (;;) {
      int64_t best = -1;
      size_t at = 0;
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        auto it = rank_of.find(parts[i] + parts[i + 1]);
        if (it != rank_of.end() && (best < 0 || it->second < best)) {
          best = it->second;
          at = i;
        }
      }
      if (best < 0 || best >= int64_t(r)) break;
      parts[at] += parts[at + 1];
      parts.erase(parts.begin() + long(at) + 1);
    }
    if (parts.size() == 2) merges.push_back(gpt2_byte_encode(parts[0]) + " " + gpt2_byte_encode(parts[1]));
  }
  return merges;
}

namespace {

// gguf-py TokenType
constexpr int32_t kTokNormal = 1, kTokControl = 3, kTokUserDefined = 4, kTokUnused = 5;

// Id of a tokenizer_config.json special-token field ("[BOS]" or {"content": "[BOS]"}), -1 if none.
int32_t special_field_id(const Tokenizer& tok, const json& cfg, const char* field) {
  if (!cfg.contains(field)) return -1;
  const json& f = cfg[field];
  std::string text;
  if (f.is_string()) text = f.get<std::string>();
  else if (f.is_object() && f.contains("content") && f["content"].is_string())
    text = f["content"].get<std::string>();
  else return -1;
  return tok.token_id(text);
}

void add_special_ids(gguf::Writer& w, const Tokenizer& tok, const json& cfg) {
  const std::pair<const char*, const char*> fields[] = {{"bos_token", "tokenizer.ggml.bos_token_id"},
                                                        {"eos_token", "tokenizer.ggml.eos_token_id"},
                                                        {"unk_token", "tokenizer.ggml.unknown_token_id"},
                                                        {"pad_token", "tokenizer.ggml.padding_token_id"}};
  for (auto [field, key] : fields) {
    const int32_t id = special_field_id(tok, cfg, field);
    if (id >= 0) w.add_kv(key, Value::u32(uint32_t(id)));
  }
  const int32_t eot = tok.token_id("<|im_end|>");
  if (eot >= 0) w.add_kv("tokenizer.ggml.eot_token_id", Value::u32(uint32_t(eot)));
  // SpecialVocab writes add_bos/add_eos only when the config says; Kimi and DeepSeek-V3 add none
  // at encode time (DeepSeek-V3's chat template writes its BOS), so say so explicitly.
  w.add_kv("tokenizer.ggml.add_bos_token", Value::boolean(cfg.value("add_bos_token", false)));
  w.add_kv("tokenizer.ggml.add_eos_token", Value::boolean(cfg.value("add_eos_token", false)));
  if (cfg.contains("chat_template") && cfg["chat_template"].is_string())
    w.add_kv("tokenizer.chat_template", Value::str(cfg["chat_template"].get<std::string>()));
}

std::string write_tiktoken_vocab(gguf::Writer& w, const Tokenizer& tok, int64_t n_vocab) {
  std::vector<std::string> ranks;
  for (int64_t id = 0; id < tok.vocab_size() && !tok.is_special(int32_t(id)); ++id)
    ranks.push_back(tok.token_text(int32_t(id)));
  std::vector<std::string> tokens(static_cast<size_t>(n_vocab));
  std::vector<int32_t> types(static_cast<size_t>(n_vocab));
  for (int64_t i = 0; i < n_vocab; ++i) {
    if (i < int64_t(ranks.size())) {
      tokens[size_t(i)] = gpt2_byte_encode(ranks[size_t(i)]);
      types[size_t(i)] = kTokNormal;
    } else if (i < tok.vocab_size()) {
      tokens[size_t(i)] = tok.token_text(int32_t(i));  // special: its text, not byte-encoded
      types[size_t(i)] = kTokControl;
    } else {
      tokens[size_t(i)] = fmt::format("[PAD{}]", i);
      types[size_t(i)] = kTokUnused;
    }
  }
  std::vector<std::string> merges = tiktoken_merges(ranks);
  w.add_kv("tokenizer.ggml.model", Value::str("gpt2"));
  w.add_kv("tokenizer.ggml.pre", Value::str("kimi-k2"));
  w.add_kv("tokenizer.ggml.tokens", Value::str_array(tokens));
  w.add_kv("tokenizer.ggml.token_type", Value::i32_array(types));
  w.add_kv("tokenizer.ggml.merges", Value::str_array(merges));
  add_special_ids(w, tok, tok.config());
  return fmt::format("tiktoken (pre kimi-k2): {} tokens ({} ranks), {} merges", n_vocab, ranks.size(),
                     merges.size());
}

// HF byte-level BPE (DeepSeek-V3): tokens and merges are already in the GPT-2 byte encoding.
std::string write_hf_vocab(gguf::Writer& w, const Tokenizer& tok, const fs::path& dir, int64_t n_vocab) {
  const json tj = read_json_file(dir / "tokenizer.json");
  const std::string label = (dir / "tokenizer.json").string();
  if (!tj.contains("model") || !tj["model"].contains("vocab") || !tj["model"]["vocab"].is_object())
    fail("{}: no model.vocab object", label);
  std::vector<std::string> tokens(static_cast<size_t>(n_vocab));
  std::vector<int32_t> types(size_t(n_vocab), kTokUnused);
  for (int64_t i = 0; i < n_vocab; ++i) tokens[size_t(i)] = fmt::format("[PAD{}]", i);
  for (const auto& [text, idj] : tj["model"]["vocab"].items()) {
    const int64_t id = idj.get<int64_t>();
    if (id < 0 || id >= n_vocab) continue;
    tokens[size_t(id)] = text;
    types[size_t(id)] = kTokNormal;
  }
  if (tj.contains("added_tokens"))
    for (const auto& a : tj["added_tokens"]) {
      const int64_t id = a.value("id", int64_t(-1));
      if (id < 0 || id >= n_vocab) continue;
      tokens[size_t(id)] = a.value("content", std::string());
      types[size_t(id)] = a.value("special", false) ? kTokControl : kTokUserDefined;
    }
  std::vector<std::string> merges;
  if (tj["model"].contains("merges"))
    for (const auto& m : tj["model"]["merges"]) {
      if (m.is_string()) merges.push_back(m.get<std::string>());
      else if (m.is_array() && m.size() == 2)
        merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    }
  w.add_kv("tokenizer.ggml.model", Value::str("gpt2"));
  w.add_kv("tokenizer.ggml.pre", Value::str("deepseek-v3"));
  w.add_kv("tokenizer.ggml.tokens", Value::str_array(tokens));
  w.add_kv("tokenizer.ggml.token_type", Value::i32_array(types));
  w.add_kv("tokenizer.ggml.merges", Value::str_array(merges));
  add_special_ids(w, tok, tok.config());
  return fmt::format("HF byte-level BPE (pre deepseek-v3): {} tokens, {} merges", n_vocab, merges.size());
}

// No tokenizer in the checkpoint (synth): the 256 byte tokens then placeholders, so llama.cpp
// loads the model and runs on token ids.
std::string write_placeholder_vocab(gguf::Writer& w, const ModelConfig& cfg) {
  const int64_t n_vocab = cfg.vocab_size;
  std::vector<std::string> tokens(static_cast<size_t>(n_vocab));
  std::vector<int32_t> types(size_t(n_vocab), kTokNormal);
  for (int64_t i = 0; i < n_vocab; ++i) {
    if (i < 256) {
      tokens[size_t(i)] = gpt2_byte_encode(std::string(1, char(i)));
    } else {
      tokens[size_t(i)] = fmt::format("[PAD{}]", i);
      types[size_t(i)] = kTokUnused;
    }
  }
  w.add_kv("tokenizer.ggml.model", Value::str("gpt2"));
  w.add_kv("tokenizer.ggml.pre", Value::str("default"));
  w.add_kv("tokenizer.ggml.tokens", Value::str_array(tokens));
  w.add_kv("tokenizer.ggml.token_type", Value::i32_array(types));
  w.add_kv("tokenizer.ggml.merges", Value::str_array({}));
  if (cfg.eos_token_id && *cfg.eos_token_id < n_vocab)
    w.add_kv("tokenizer.ggml.eos_token_id", Value::u32(uint32_t(*cfg.eos_token_id)));
  if (cfg.bos_token_id && *cfg.bos_token_id < n_vocab)
    w.add_kv("tokenizer.ggml.bos_token_id", Value::u32(uint32_t(*cfg.bos_token_id)));
  w.add_kv("tokenizer.ggml.add_bos_token", Value::boolean(false));
  return fmt::format("none in the checkpoint: placeholder vocabulary of {} ids (byte tokens + [PADn])",
                     n_vocab);
}

void convert_row(const float* x, int64_t n, GgmlType t, uint8_t* out) {
  switch (t) {
    case GgmlType::kF32: std::memcpy(out, x, size_t(n) * 4); return;
    case GgmlType::kF16:
      for (int64_t k = 0; k < n; ++k) {
        const uint16_t h = f32_to_f16(x[k]);
        std::memcpy(out + 2 * k, &h, 2);
      }
      return;
    case GgmlType::kBF16:
      for (int64_t k = 0; k < n; ++k) {
        const uint16_t h = f32_to_bf16(x[k]);
        std::memcpy(out + 2 * k, &h, 2);
      }
      return;
    case GgmlType::kQ8_0: quantize_row_q8_0(x, n, out); return;
    case GgmlType::kQ4_0: SICKLE_CHECK(false, "Q4_0 is only written from int4 source blocks");
  }
}

uint64_t row_bytes(GgmlType t, int64_t n) {
  return uint64_t(n / gguf::ggml_block_size(t) * gguf::ggml_block_bytes(t));
}

class Exporter {
 public:
  Exporter(const Checkpoint& ck, gguf::Writer& w, GgmlType wtype, GgufExportReport& rep)
      : ck_(ck), w_(w), wtype_(wtype), rep_(rep) {}

  // The weight type for a matrix whose rows have `ne0` elements (q8_0 needs multiples of 32;
  // convert_hf_to_gguf falls back to f16 the same way).
  GgmlType type_for(int64_t ne0) const {
    return (wtype_ == GgmlType::kQ8_0 && ne0 % 32 != 0) ? GgmlType::kF16 : wtype_;
  }

  // A 1D tensor (norm weight, bias) as f32.
  void vector_f32(const std::string& gname, const std::string& src) {
    const TensorView tv = ck_.tensor(src);
    if (tv.shape.size() != 1)
      fail("{}: '{}' has shape {}, expected 1D", ck_.dir().string(), src, tv.shape_str());
    const int64_t n = tv.shape[0];
    w_.add_tensor(gname, GgmlType::kF32, {n}, [tv, n](gguf::TensorSink& s) {
      std::vector<float> v(static_cast<size_t>(n));
      for (int64_t k = 0; k < n; ++k) {
        switch (tv.dtype) {
          case DType::F32: std::memcpy(&v[size_t(k)], tv.data + 4 * k, 4); break;
          case DType::BF16: {
            uint16_t h;
            std::memcpy(&h, tv.data + 2 * k, 2);
            v[size_t(k)] = bf16_to_f32(h);
            break;
          }
          case DType::F16: {
            uint16_t h;
            std::memcpy(&h, tv.data + 2 * k, 2);
            v[size_t(k)] = f16_to_f32(h);
            break;
          }
          default:
            fail("'{}': dtype {} for a norm/bias (expected F32, BF16 or F16)", tv.name, dtype_name(tv.dtype));
        }
      }
      s.write(v.data(), v.size() * 4);
    });
  }

  // A linear weight [rows, cols] as ggml ne {cols, rows}.
  void matrix(const std::string& gname, const std::string& base, std::optional<GgmlType> force = {}) {
    const WeightView wv = ck_.weight(base);
    const GgmlType t = force ? *force : type_for(wv.cols);
    w_.add_tensor(gname, t, {wv.cols, wv.rows}, [wv, t](gguf::TensorSink& s) {
      std::vector<float> row(static_cast<size_t>(wv.cols));
      std::vector<uint8_t> out(row_bytes(t, wv.cols));
      for (int64_t r = 0; r < wv.rows; ++r) {
        wv.dequant_row(r, row.data());
        convert_row(row.data(), wv.cols, t, out.data());
        s.write(out.data(), out.size());
      }
    });
  }

  // kv_b_proj [heads*(nope+v), kv_lora] -> attn_k_b ne {nope, kv_lora, heads} (k_b transposed
  // per head) and attn_v_b ne {kv_lora, v, heads} (conversion/deepseek.py modify_tensors).
  void kv_b_split(int64_t il, const std::string& base) {
    const ModelConfig& c = ck_.config();
    const WeightView wv = ck_.weight(base);
    const int64_t H = c.num_attention_heads, nope = c.qk_nope_head_dim, vd = c.v_head_dim, L = c.kv_lora_rank;
    if (wv.rows != H * (nope + vd) || wv.cols != L)
      fail("{}: '{}' is [{}, {}], expected [{}, {}]", ck_.dir().string(), base, wv.rows, wv.cols,
           H * (nope + vd), L);
    auto full = std::make_shared<std::vector<float>>();  // [rows, L], filled at write time
    auto load = [wv, full]() {
      if (!full->empty()) return;
      full->resize(size_t(wv.rows * wv.cols));
      for (int64_t r = 0; r < wv.rows; ++r) wv.dequant_row(r, full->data() + r * wv.cols);
    };
    const GgmlType tk = type_for(nope), tv = type_for(L);
    w_.add_tensor(fmt::format("blk.{}.attn_k_b.weight", il), tk, {nope, L, H}, [=](gguf::TensorSink& s) {
      load();
      std::vector<float> row(static_cast<size_t>(nope));
      std::vector<uint8_t> out(row_bytes(tk, nope));
      for (int64_t h = 0; h < H; ++h)
        for (int64_t l = 0; l < L; ++l) {
          for (int64_t n = 0; n < nope; ++n) row[size_t(n)] = (*full)[size_t((h * (nope + vd) + n) * L + l)];
          convert_row(row.data(), nope, tk, out.data());
          s.write(out.data(), out.size());
        }
    });
    w_.add_tensor(fmt::format("blk.{}.attn_v_b.weight", il), tv, {L, vd, H}, [=](gguf::TensorSink& s) {
      load();
      std::vector<uint8_t> out(row_bytes(tv, L));
      for (int64_t h = 0; h < H; ++h)
        for (int64_t v = 0; v < vd; ++v) {
          convert_row(full->data() + (h * (nope + vd) + nope + v) * L, L, tv, out.data());
          s.write(out.data(), out.size());
        }
      full->clear();
      full->shrink_to_fit();
    });
  }

  // Routed experts of one projection stacked: ne {cols, rows, n_expert}. int4 group 32 -> Q4_0.
  void experts(int64_t il, const std::string& proj, const std::string& gname) {
    const ModelConfig& c = ck_.config();
    const int64_t E = c.n_experts(il);
    std::vector<WeightView> views;
    views.reserve(size_t(E));
    for (int64_t e = 0; e < E; ++e) views.push_back(ck_.weight(ck_.names().expert(il, e, proj)));
    const WeightView& v0 = views[0];
    const bool q4 = v0.encoding == WeightEncoding::kInt4Group && v0.group_size == 32;
    for (const auto& v : views)
      if (v.rows != v0.rows || v.cols != v0.cols || v.encoding != v0.encoding ||
          v.group_size != v0.group_size)
        fail("{}: expert '{}' differs from '{}' in shape or encoding ({}x{} {} vs {}x{} {})",
             ck_.dir().string(), v.name, v0.name, v.rows, v.cols, encoding_name(v.encoding), v0.rows, v0.cols,
             encoding_name(v0.encoding));
    const GgmlType t = q4 ? GgmlType::kQ4_0 : type_for(v0.cols);
    GgufExportReport* rep = &rep_;
    w_.add_tensor(
        gname, t, {v0.cols, v0.rows, E}, [views = std::move(views), t, q4, rep](gguf::TensorSink& s) {
          const int64_t cols = views[0].cols;
          std::vector<uint8_t> out(row_bytes(t, cols));
          std::vector<float> row(static_cast<size_t>(cols));
          for (const auto& v : views)
            for (int64_t r = 0; r < v.rows; ++r) {
              if (q4) {
                const auto* packed = static_cast<const uint32_t*>(v.data) + r * (cols / 8);
                const int64_t inexact =
                    int4_row_to_q4_0(packed, v.scale_bf16 + r * v.scale_cols, cols, out.data(), v.name);
                if (inexact && rep->n_scales_inexact == 0) rep->first_inexact = v.name;
                rep->n_scales_inexact += inexact;
                rep->n_q4_blocks += cols / 32;
              } else {
                v.dequant_row(r, row.data());
                convert_row(row.data(), cols, t, out.data());
              }
              s.write(out.data(), out.size());
            }
        });
  }

 private:
  const Checkpoint& ck_;
  gguf::Writer& w_;
  GgmlType wtype_;
  GgufExportReport& rep_;
};

GgmlType parse_type(const std::string& s) {
  if (s == "f16") return GgmlType::kF16;
  if (s == "bf16") return GgmlType::kBF16;
  if (s == "q8_0") return GgmlType::kQ8_0;
  if (s == "f32") return GgmlType::kF32;
  fail("--type: '{}' is not one of f16, bf16, q8_0, f32", s);
}

// llama_ftype (include/llama.h) for general.file_type.
uint32_t file_type_of(GgmlType t, bool q4_experts) {
  if (q4_experts) return 2;  // LLAMA_FTYPE_MOSTLY_Q4_0 (the bulk of the bytes)
  switch (t) {
    case GgmlType::kF32: return 0;
    case GgmlType::kF16: return 1;
    case GgmlType::kQ8_0: return 7;
    case GgmlType::kBF16: return 32;
    default: return 1;
  }
}

}  // namespace

GgufExportReport export_gguf(const fs::path& model_dir, const fs::path& out, const GgufExportOptions& opt) {
  check_output(out, OutputKind::kFile, opt.force, {{"model directory", model_dir}});
  const GgmlType wtype = parse_type(opt.type);
  auto ck = Checkpoint::open(model_dir);
  const ModelConfig& c = ck->config();
  const TensorNames& nm = ck->names();
  const std::string where = model_dir.string();
  const int64_t L = c.num_hidden_layers;

  // llama.cpp's deepseek2 holds one expert count for every MoE layer.
  int64_t n_expert = 0;
  for (int64_t il = 0; il < L; ++il) {
    if (!c.is_moe_layer(il)) continue;
    if (n_expert == 0) n_expert = c.n_experts(il);
    if (c.n_experts(il) != n_expert)
      fail(
          "{}: layer {} has {} experts, layer before {}: llama.cpp's deepseek2 needs the same count in every "
          "MoE "
          "layer (non-uniform pruning cannot be exported)",
          where, il, c.n_experts(il), n_expert);
  }
  for (int64_t il = 0; il < L; ++il)
    if (c.is_moe_layer(il) != (il >= c.first_k_dense_replace))
      fail(
          "{}: layer {} breaks the dense-then-MoE pattern (first_k_dense_replace {}, moe_layer_freq {}) that "
          "llama.cpp's leading_dense_block_count expresses",
          where, il, c.first_k_dense_replace, c.moe_layer_freq);
  if (c.n_group > 1 && c.topk_method != "noaux_tc" && c.topk_method != "group_limited_greedy")
    log_warn("{}: topk_method '{}' is exported as llama.cpp's grouped top-k", where, c.topk_method);

  gguf::Writer w(out, opt.force);
  GgufExportReport rep;
  const std::string A = "deepseek2";
  auto key = [&](const char* k) { return A + "." + k; };

  bool q4_experts = false;
  for (int64_t il = 0; il < L && !q4_experts; ++il)
    if (c.is_moe_layer(il)) {
      const WeightView v = ck->weight(nm.expert(il, 0, "gate_proj"));
      q4_experts = v.encoding == WeightEncoding::kInt4Group && v.group_size == 32;
    }

  w.add_kv("general.architecture", Value::str(A));
  w.add_kv("general.name", Value::str(fs::absolute(model_dir).lexically_normal().filename().string()));
  w.add_kv("general.file_type", Value::u32(file_type_of(wtype, q4_experts)));
  w.add_kv("general.quantization_version", Value::u32(2));  // GGML_QNT_VERSION
  w.add_kv(key("block_count"), Value::u32(uint32_t(L)));
  w.add_kv(key("context_length"), Value::u32(uint32_t(c.max_position_embeddings)));
  w.add_kv(key("embedding_length"), Value::u32(uint32_t(c.hidden_size)));
  w.add_kv(key("feed_forward_length"), Value::u32(uint32_t(c.intermediate_size)));
  w.add_kv(key("attention.head_count"), Value::u32(uint32_t(c.num_attention_heads)));
  w.add_kv(key("attention.head_count_kv"), Value::u32(1));  // MLA as MQA (set_gguf_parameters)
  w.add_kv(key("rope.freq_base"), Value::f32(float(c.rope_theta)));
  w.add_kv(key("attention.layer_norm_rms_epsilon"), Value::f32(float(c.rms_norm_eps)));
  if (n_expert > 0) {
    w.add_kv(key("expert_count"), Value::u32(uint32_t(n_expert)));
    w.add_kv(key("expert_used_count"), Value::u32(uint32_t(c.num_experts_per_tok)));
    w.add_kv(key("expert_group_count"), Value::u32(uint32_t(c.n_group)));
    w.add_kv(key("expert_group_used_count"), Value::u32(uint32_t(c.topk_group)));
  }
  if (c.scoring_func == "sigmoid") w.add_kv(key("expert_gating_func"), Value::u32(2));       // SIGMOID
  else if (c.scoring_func == "softmax") w.add_kv(key("expert_gating_func"), Value::u32(1));  // SOFTMAX
  else fail("{}: scoring_func '{}' has no llama.cpp expert_gating_func", where, c.scoring_func);
  if (c.rope_scaling && c.rope_scaling->type == "yarn") {
    const RopeScaling& rs = *c.rope_scaling;
    w.add_kv(key("rope.scaling.type"), Value::str("yarn"));
    w.add_kv(key("rope.scaling.factor"), Value::f32(float(rs.factor)));
    w.add_kv(key("rope.scaling.original_context_length"),
             Value::u32(uint32_t(rs.original_max_position_embeddings)));
    w.add_kv(key("rope.scaling.yarn_beta_fast"), Value::f32(float(rs.beta_fast)));
    w.add_kv(key("rope.scaling.yarn_beta_slow"), Value::f32(float(rs.beta_slow)));
  } else if (c.rope_scaling) {
    fail("{}: rope_scaling type '{}' is not exported (only yarn)", where, c.rope_scaling->type);
  }
  w.add_kv(key("leading_dense_block_count"), Value::u32(uint32_t(c.first_k_dense_replace)));
  w.add_kv(key("vocab_size"), Value::u32(uint32_t(c.vocab_size)));
  if (c.q_lora_rank > 0) w.add_kv(key("attention.q_lora_rank"), Value::u32(uint32_t(c.q_lora_rank)));
  w.add_kv(key("attention.kv_lora_rank"), Value::u32(uint32_t(c.kv_lora_rank)));
  w.add_kv(key("attention.key_length"), Value::u32(uint32_t(c.kv_lora_rank + c.qk_rope_head_dim)));
  w.add_kv(key("attention.value_length"), Value::u32(uint32_t(c.kv_lora_rank)));
  w.add_kv(key("attention.key_length_mla"), Value::u32(uint32_t(c.qk_nope_head_dim + c.qk_rope_head_dim)));
  w.add_kv(key("attention.value_length_mla"), Value::u32(uint32_t(c.v_head_dim)));
  w.add_kv(key("expert_feed_forward_length"), Value::u32(uint32_t(c.moe_intermediate_size)));
  w.add_kv(key("expert_shared_count"), Value::u32(uint32_t(c.n_shared_experts)));
  w.add_kv(key("expert_weights_scale"), Value::f32(float(c.routed_scaling_factor)));
  if (c.norm_topk_prob) w.add_kv(key("expert_weights_norm"), Value::boolean(true));
  w.add_kv(key("rope.dimension_count"), Value::u32(uint32_t(c.qk_rope_head_dim)));
  // [TAG_DEEPSEEK2_YARN_LOG_MUL_FIX]: the loader divides this by 0.1 to get mscale_all_dim.
  if (c.rope_scaling)
    w.add_kv(key("rope.scaling.yarn_log_multiplier"),
             Value::f32(float(0.1 * c.rope_scaling->mscale_all_dim)));

  // Tokenizer.
  const bool has_tiktoken = fs::exists(model_dir / "tiktoken.model");
  const bool has_hf = fs::exists(model_dir / "tokenizer.json");
  if (has_tiktoken || has_hf) {
    auto tok = Tokenizer::load(model_dir);
    if (tok->vocab_size() > c.vocab_size)
      fail("{}: the tokenizer has {} ids, more than vocab_size {}", where, tok->vocab_size(), c.vocab_size);
    rep.tokenizer = tok->kind() == TokenizerKind::kTiktoken
                        ? write_tiktoken_vocab(w, *tok, c.vocab_size)
                        : write_hf_vocab(w, *tok, model_dir, c.vocab_size);
  } else {
    rep.tokenizer = write_placeholder_vocab(w, c);
  }

  // Tensors, in llama.cpp's order.
  Exporter ex(*ck, w, wtype, rep);
  ex.matrix("token_embd.weight", nm.prefix + "model.embed_tokens");
  for (int64_t il = 0; il < L; ++il) {
    auto src = [&](std::string_view rest) { return nm.layer(il, rest); };
    auto dst = [&](std::string_view rest) { return fmt::format("blk.{}.{}", il, rest); };
    ex.vector_f32(dst("attn_norm.weight"), src("input_layernorm.weight"));
    if (c.q_lora_rank > 0) {
      ex.matrix(dst("attn_q_a.weight"), src("self_attn.q_a_proj"));
      ex.vector_f32(dst("attn_q_a_norm.weight"), src("self_attn.q_a_layernorm.weight"));
      ex.matrix(dst("attn_q_b.weight"), src("self_attn.q_b_proj"));
    } else {
      ex.matrix(dst("attn_q.weight"), src("self_attn.q_proj"));
    }
    ex.matrix(dst("attn_kv_a_mqa.weight"), src("self_attn.kv_a_proj_with_mqa"));
    ex.vector_f32(dst("attn_kv_a_norm.weight"), src("self_attn.kv_a_layernorm.weight"));
    ex.kv_b_split(il, src("self_attn.kv_b_proj"));
    ex.matrix(dst("attn_output.weight"), src("self_attn.o_proj"));
    ex.vector_f32(dst("ffn_norm.weight"), src("post_attention_layernorm.weight"));
    if (!c.is_moe_layer(il)) {
      ex.matrix(dst("ffn_gate.weight"), src("mlp.gate_proj"));
      ex.matrix(dst("ffn_up.weight"), src("mlp.up_proj"));
      ex.matrix(dst("ffn_down.weight"), src("mlp.down_proj"));
      continue;
    }
    ex.matrix(dst("ffn_gate_inp.weight"), src("mlp.gate"), GgmlType::kF32);
    if (ck->has(src("mlp.gate.e_score_correction_bias")))
      ex.vector_f32(dst("exp_probs_b.bias"), src("mlp.gate.e_score_correction_bias"));
    ex.experts(il, "gate_proj", dst("ffn_gate_exps.weight"));
    ex.experts(il, "up_proj", dst("ffn_up_exps.weight"));
    ex.experts(il, "down_proj", dst("ffn_down_exps.weight"));
    if (c.n_shared_experts > 0) {
      ex.matrix(dst("ffn_gate_shexp.weight"), src("mlp.shared_experts.gate_proj"));
      ex.matrix(dst("ffn_up_shexp.weight"), src("mlp.shared_experts.up_proj"));
      ex.matrix(dst("ffn_down_shexp.weight"), src("mlp.shared_experts.down_proj"));
    }
  }
  ex.vector_f32("output_norm.weight", nm.final_norm());
  if (!c.tie_word_embeddings) ex.matrix("output.weight", nm.prefix + "lm_head");

  rep.n_tensors = int64_t(w.n_tensors());
  rep.data_bytes = w.data_bytes();
  std::unique_ptr<Progress> prog;
  if (opt.progress) {
    prog = std::make_unique<Progress>("export-gguf", w.data_bytes(), "B");
    w.on_bytes = [&](uint64_t done) { prog->set(done); };
  }
  w.commit();
  if (prog) prog->finish();
  if (rep.n_scales_inexact > 0)
    log_warn("{}: {} int4 scales are below f16's normal range and were rounded (first in {})", out.string(),
             rep.n_scales_inexact, rep.first_inexact);
  return rep;
}

}  // namespace sickle
