// export-gguf: int4 -> Q4_0 repacking is exact (dequantized Q4_0 == dequantized int4), Q8_0
// follows ggml's reference, GPT-2 byte encoding and tiktoken merge reconstruction, and a whole
// tiny-kimi export read back: deepseek2 keys, tensor names/shapes/types, every expert row, the
// kv_b split and the norms equal the checkpoint's values.
#include "model/gguf_export.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include "base/error.h"
#include "base/numeric.h"
#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/weights.h"
#include "model/synth.h"

namespace sickle {
namespace {
namespace fs = std::filesystem;
using gguf::GgmlType;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "sickle-gguf-export-test-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

TEST(GgufExport, Int4BlocksRepackToQ4_0Exactly) {
  const int64_t cols = 96;  // three blocks
  std::mt19937 rng(7);
  std::vector<int8_t> q(cols);
  for (auto& v : q) v = int8_t(int(rng() % 16) - 8);
  q[0] = -8, q[1] = 7, q[31] = 0;  // extremes and zero
  std::vector<uint32_t> packed(cols / 8);
  for (int64_t w = 0; w < cols / 8; ++w) packed[w] = pack_int4_word(&q[w * 8]);
  // Scales: an ordinary value, a power of two, a negative one (symmetric int4 allows any bf16).
  std::vector<uint16_t> scales = {f32_to_bf16(0.0123f), f32_to_bf16(0.5f), f32_to_bf16(-3.75f)};
  WeightView wv;
  wv.encoding = WeightEncoding::kInt4Group;
  wv.rows = 1, wv.cols = cols, wv.group_size = 32, wv.scale_cols = 3;
  wv.data = packed.data();
  wv.scale_bf16 = scales.data();
  std::vector<float> ref(cols), got(cols);
  wv.dequant_row(0, ref.data());
  std::vector<uint8_t> blocks(3 * 18);
  EXPECT_EQ(int4_row_to_q4_0(packed.data(), scales.data(), cols, blocks.data(), "t"), 0);
  gguf::dequantize_row(GgmlType::kQ4_0, blocks.data(), cols, got.data());
  for (int64_t k = 0; k < cols; ++k) EXPECT_EQ(got[k], ref[k]) << k;
  // Layout: byte j of block 0 = element j (low) | element j+16 (high), each as q + 8.
  EXPECT_EQ(blocks[2 + 0], uint8_t((q[0] + 8) | ((q[16] + 8) << 4)));
  EXPECT_EQ(blocks[2 + 15], uint8_t((q[15] + 8) | ((q[31] + 8) << 4)));
}

TEST(GgufExport, Int4ScalesOutsideF16AreReportedOrRefused) {
  std::vector<uint32_t> packed(4, 0x88888888u);
  uint8_t out[18];
  uint16_t tiny = f32_to_bf16(1e-7f);  // below f16's normal range: rounded, counted
  EXPECT_EQ(int4_row_to_q4_0(packed.data(), &tiny, 32, out, "t"), 1);
  uint16_t huge = f32_to_bf16(1e6f);  // overflows f16: refused, naming the tensor
  try {
    int4_row_to_q4_0(packed.data(), &huge, 32, out, "blk.7.experts");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.7.experts"), std::string::npos);
  }
}

TEST(GgufExport, Q8_0MatchesGgmlReference) {
  std::vector<float> x(64);
  for (int k = 0; k < 64; ++k) x[k] = std::sin(float(k)) * (k < 32 ? 1.0f : 100.0f);
  x[40] = -250.0f;  // block max is negative
  std::vector<uint8_t> q(2 * 34);
  quantize_row_q8_0(x.data(), 64, q.data());
  std::vector<float> y(64);
  gguf::dequantize_row(GgmlType::kQ8_0, q.data(), 64, y.data());
  for (int b = 0; b < 2; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = f16_to_f32(f32_to_f16(amax / 127.0f));
    for (int j = 0; j < 32; ++j)
      EXPECT_NEAR(y[b * 32 + j], x[b * 32 + j], 0.5f * d + 1e-3f * amax) << b << " " << j;
  }
  EXPECT_EQ(int8_t(q[34 + 2 + 8]), -127);  // x[40] = -amax -> -127
  std::vector<float> zeros(32, 0.0f);
  quantize_row_q8_0(zeros.data(), 32, q.data());
  gguf::dequantize_row(GgmlType::kQ8_0, q.data(), 32, y.data());
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.0f);
}

TEST(GgufExport, Gpt2ByteEncoding) {
  EXPECT_EQ(gpt2_byte_encode("Hello"), "Hello");
  EXPECT_EQ(gpt2_byte_encode(" the"), "\xC4\xA0the");             // space -> U+0120 'Ġ'
  EXPECT_EQ(gpt2_byte_encode("\n"), "\xC4\x8A");                  // newline -> U+010A 'Ċ'
  EXPECT_EQ(gpt2_byte_encode(std::string(1, '\0')), "\xC4\x80");  // 0 -> U+0100
  EXPECT_EQ(gpt2_byte_encode("\xFF"), "\xC3\xBF");                // 255 is printable: U+00FF
}

TEST(GgufExport, TiktokenMergesFollowRanks) {
  // Ranks: bytes a b c, then "ab" (3), "bc" (4), "abc" (5), "ca" (6).
  // "abc" with ranks < 5 merges a+b first (rank 3 < 4): parts [ab, c] -> merge "ab c".
  std::vector<std::string> ranks = {"a", "b", "c", "ab", "bc", "abc", "ca"};
  std::vector<std::string> m = tiktoken_merges(ranks);
  EXPECT_EQ(m, (std::vector<std::string>{"a b", "b c", "ab c", "c a"}));
}

TEST(GgufExport, TinyKimiRoundTrip) {
  TempDir d;
  SynthOptions so;
  so.preset = "tiny-kimi";
  so.seed = 3;
  so.progress = false;
  const fs::path dir = d.path / "ck";
  synth_write(synth_plan(so), dir, so);
  const fs::path out = d.path / "m.gguf";
  GgufExportOptions opt;
  opt.type = "bf16";
  GgufExportReport rep = export_gguf(dir, out, opt);
  EXPECT_GT(rep.n_q4_blocks, 0);
  EXPECT_EQ(rep.n_scales_inexact, 0);
  EXPECT_THROW(export_gguf(dir, out, opt), Error);  // exists, no --force

  auto ck = Checkpoint::open(dir);
  const ModelConfig& c = ck->config();
  gguf::Reader r(out);
  EXPECT_EQ(r.get("general.architecture").s, "deepseek2");
  EXPECT_EQ(r.get("deepseek2.block_count").u, uint64_t(c.num_hidden_layers));
  EXPECT_EQ(r.get("deepseek2.attention.head_count_kv").u, 1u);
  EXPECT_EQ(r.get("deepseek2.attention.key_length").u, uint64_t(c.kv_lora_rank + c.qk_rope_head_dim));
  EXPECT_EQ(r.get("deepseek2.attention.value_length_mla").u, uint64_t(c.v_head_dim));
  EXPECT_EQ(r.get("deepseek2.expert_count").u, uint64_t(c.n_routed_experts));
  EXPECT_EQ(r.get("deepseek2.expert_gating_func").u, 2u);
  EXPECT_EQ(r.get("deepseek2.rope.scaling.type").s, "yarn");
  EXPECT_FLOAT_EQ(float(r.get("deepseek2.rope.scaling.factor").f), float(c.rope_scaling->factor));
  EXPECT_FLOAT_EQ(float(r.get("deepseek2.rope.scaling.yarn_log_multiplier").f),
                  float(0.1 * c.rope_scaling->mscale_all_dim));
  EXPECT_FLOAT_EQ(float(r.get("deepseek2.expert_weights_scale").f), float(c.routed_scaling_factor));
  EXPECT_EQ(r.get("deepseek2.expert_weights_norm").type, gguf::ValueType::kBool);
  EXPECT_EQ(r.get("tokenizer.ggml.tokens").array.size(), size_t(c.vocab_size));
  EXPECT_EQ(r.get("tokenizer.ggml.token_type").array_type, gguf::ValueType::kI32);

  const int64_t il = 1;  // first MoE layer
  ASSERT_TRUE(c.is_moe_layer(il));
  // Experts: every row of every expert dequantizes to exactly the checkpoint's values.
  for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
    const std::string gname = fmt::format("blk.{}.ffn_{}_exps.weight", il,
                                          std::string(proj).substr(0, std::string(proj).find('_')));
    const gguf::TensorInfo& t = r.tensor(gname);
    EXPECT_EQ(t.type, GgmlType::kQ4_0);
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      const WeightView wv = ck->weight(ck->names().expert(il, e, proj));
      ASSERT_EQ(t.ne, (std::vector<int64_t>{wv.cols, wv.rows, c.n_routed_experts}));
      std::vector<float> ref(wv.cols), got(wv.cols);
      const uint64_t rb = uint64_t(wv.cols / 32 * 18);
      for (int64_t row = 0; row < wv.rows; ++row) {
        wv.dequant_row(row, ref.data());
        gguf::dequantize_row(GgmlType::kQ4_0, r.tensor_data(t) + (e * wv.rows + row) * rb, wv.cols,
                             got.data());
        ASSERT_EQ(got, ref) << gname << " expert " << e << " row " << row;
      }
    }
  }
  // kv_b split: k_b[h][l][n] = kv_b[h*(nope+v) + n][l], v_b[h][v][l] = kv_b[h*(nope+v) + nope + v][l].
  const WeightView kvb = ck->weight(ck->names().layer(il, "self_attn.kv_b_proj"));
  const int64_t H = c.num_attention_heads, nope = c.qk_nope_head_dim, vd = c.v_head_dim, L = c.kv_lora_rank;
  const gguf::TensorInfo& kb = r.tensor(fmt::format("blk.{}.attn_k_b.weight", il));
  const gguf::TensorInfo& vb = r.tensor(fmt::format("blk.{}.attn_v_b.weight", il));
  EXPECT_EQ(kb.ne, (std::vector<int64_t>{nope, L, H}));
  EXPECT_EQ(vb.ne, (std::vector<int64_t>{L, vd, H}));
  ASSERT_EQ(kb.type, GgmlType::kBF16);
  auto at = [](const gguf::Reader& rd, const gguf::TensorInfo& t, int64_t i) {
    uint16_t h;
    std::memcpy(&h, rd.tensor_data(t) + 2 * i, 2);
    return bf16_to_f32(h);
  };
  std::vector<float> row(L);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t k = 0; k < nope + vd; ++k) {
      kvb.dequant_row(h * (nope + vd) + k, row.data());
      for (int64_t l = 0; l < L; ++l) {
        if (k < nope) ASSERT_EQ(at(r, kb, (h * L + l) * nope + k), row[l]);
        else ASSERT_EQ(at(r, vb, (h * vd + (k - nope)) * L + l), row[l]);
      }
    }
  // Norms and the router bias are f32 copies.
  const gguf::TensorInfo& bias = r.tensor(fmt::format("blk.{}.exp_probs_b.bias", il));
  EXPECT_EQ(bias.type, GgmlType::kF32);
  const TensorView bsrc = ck->tensor(ck->names().layer(il, "mlp.gate.e_score_correction_bias"));
  EXPECT_EQ(std::memcmp(r.tensor_data(bias), bsrc.data, bsrc.nbytes()), 0);
  EXPECT_EQ(r.tensor(fmt::format("blk.{}.ffn_gate_inp.weight", il)).type, GgmlType::kF32);
  EXPECT_EQ(r.tensor("output_norm.weight").type, GgmlType::kF32);
  EXPECT_TRUE(r.find_tensor("blk.0.ffn_gate.weight"));
  EXPECT_FALSE(r.find_tensor("blk.0.ffn_gate_exps.weight"));

  // q8_0 falls back to f16 where rows are not a multiple of 32 (k_b rows are nope = 16 wide).
  opt.type = "q8_0";
  opt.force = true;
  export_gguf(dir, out, opt);
  gguf::Reader r8(out);
  EXPECT_EQ(r8.tensor("token_embd.weight").type, GgmlType::kQ8_0);
  EXPECT_EQ(r8.tensor(fmt::format("blk.{}.attn_k_b.weight", il)).type,
            nope % 32 ? GgmlType::kF16 : GgmlType::kQ8_0);
}

}  // namespace
}  // namespace sickle
