// sickle/model/gguf_export.h — a DeepSeek-V3-family checkpoint as a llama.cpp GGUF.
//
// Target: llama.cpp's `deepseek2` architecture as of the release node-llama-cpp 3.21.1 bundles
// (conversion/deepseek.py DeepseekV2Model, src/models/deepseek2.cpp, src/llama-arch.cpp):
//  - MLA split for absorption: kv_b_proj [heads*(nope+v), kv_lora] becomes
//    attn_k_b ggml ne {nope, kv_lora, heads} (per head W_UK transposed) and
//    attn_v_b ggml ne {kv_lora, v, heads} (per head W_UV), with key_length_mla/value_length_mla.
//  - routed experts stacked in 3D (ffn_{gate,up,down}_exps ne {in, out, n_expert}).
//  - int4 group-32 experts (compressed-tensors pack-quantized, symmetric) become Q4_0 with no
//    requantization: d = f16(bf16 scale), nibbles reordered (docs/formats.md §3).
//  - norms, biases and the router (ffn_gate_inp) in f32 as convert_hf_to_gguf.py writes them;
//    other weights in f16, bf16 or q8_0 (ggml's reference quantize_row_q8_0).
//  - tokenizer: tiktoken (Kimi) as "gpt2" + pre "kimi-k2" with merges rebuilt from the ranks
//    (DeepseekV2Model.set_vocab / QwenModel.bpe); HF tokenizer.json (DeepSeek-V3) as "gpt2" +
//    pre "deepseek-v3"; no tokenizer: a placeholder vocabulary (feed token ids).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/gguf.h"

namespace sickle {

struct GgufExportOptions {
  // Non-expert (and non-int4 expert) linear weights: bf16 | f32 | f16 | q8_0. bf16 by default:
  // lossless for bf16 checkpoints (f16 can overflow past 65504), and the one half-width type
  // every CPU build of llama.cpp tried loads (tests/gguf_llamacpp_test.sh).
  std::string type = "bf16";
  bool force = false;
  bool progress = false;
};

struct GgufExportReport {
  int64_t n_tensors = 0;
  uint64_t data_bytes = 0;
  int64_t n_q4_blocks = 0;       // int4 blocks mapped to Q4_0
  int64_t n_scales_inexact = 0;  // bf16 scales not exactly representable in f16 (tiny values)
  std::string first_inexact;     // tensor of the first one
  std::string tokenizer;         // what was written ("kimi-k2 tiktoken, 2304 tokens, 1791 merges")
};

GgufExportReport export_gguf(const std::filesystem::path& model_dir, const std::filesystem::path& out,
                             const GgufExportOptions& opt);

// ---- building blocks (exposed for tests) ----------------------------------------------------

// One row of a compressed-tensors int4 weight (group 32): `packed` uint32 [cols/8], `scales`
// bf16 [cols/32] -> cols/32 Q4_0 blocks (18 bytes each) at `out`. Returns the number of scales
// whose f16 value differs from the bf16 value; Error (naming `what`) if one overflows f16.
int64_t int4_row_to_q4_0(const uint32_t* packed, const uint16_t* scales, int64_t cols, uint8_t* out,
                         std::string_view what);
// ggml's quantize_row_q8_0_ref: per block d = max|x| / 127, q = round(x / d).
void quantize_row_q8_0(const float* x, int64_t n, uint8_t* out);

// GPT-2's bytes_to_unicode applied to raw token bytes (the form GGUF "gpt2" vocabularies use).
std::string gpt2_byte_encode(std::string_view bytes);
// The merges a tiktoken rank table implies (QwenModel.bpe in convert_hf_to_gguf): for each
// multi-byte token in rank order, the two parts byte-pair merging with ranks below its own
// ends in, as "A B" in the GPT-2 byte encoding. `ranks[i]` = bytes of rank i.
std::vector<std::string> tiktoken_merges(const std::vector<std::string>& ranks);

}  // namespace sickle
