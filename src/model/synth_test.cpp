// Tests for sickle synth: every preset round-trips through Checkpoint::open (which validates the
// layout against config.json), output is deterministic for a seed, values have the stated
// statistics, and bad options fail with a message naming the option.
#include "model/synth.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "base/error.h"
#include "base/hash.h"
#include "base/numeric.h"
#include "io/checkpoint.h"

#include "base/test_temp_dir.h"

namespace sickle {
namespace {
namespace fs = std::filesystem;

struct TempDir : test_util::TempDir {
  TempDir() : test_util::TempDir("sickle-synth-test") {}
};

std::string file_hash(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return hex64(hash64(s.data(), s.size()));
}

SynthOptions opts(const std::string& preset, uint64_t seed = 1) {
  SynthOptions o;
  o.preset = preset;
  o.seed = seed;
  o.progress = false;
  return o;
}

std::unique_ptr<Checkpoint> write_and_open(const SynthOptions& o, const fs::path& dir) {
  synth_write(synth_plan(o), dir, o);
  return Checkpoint::open(dir);  // throws (failing the test) if the layout disagrees with config
}

// Mean and std of every dequantized value of the weights whose base name contains `part`.
struct Stats {
  double mean = 0, std = 0, min = 1e30, max = -1e30;
  int64_t n = 0;
};
Stats weight_stats(const Checkpoint& ck, const std::string& base) {
  WeightView w = ck.weight(base);
  std::vector<float> row(size_t(w.cols));
  double s = 0, s2 = 0;
  Stats st;
  for (int64_t r = 0; r < w.rows; ++r) {
    w.dequant_row(r, row.data());
    for (float v : row) {
      s += v;
      s2 += double(v) * v;
      st.min = std::min<double>(st.min, v);
      st.max = std::max<double>(st.max, v);
    }
  }
  st.n = w.rows * w.cols;
  st.mean = s / double(st.n);
  st.std = std::sqrt(s2 / double(st.n) - st.mean * st.mean);
  return st;
}

// RMS of W x over random unit-RMS inputs x: the "activations stay O(1)" property.
double output_rms(const WeightView& w, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(w.cols)), row(size_t(w.cols));
  double s2 = 0;
  for (int rep = 0; rep < 4; ++rep) {
    for (auto& v : x) v = nd(rng);
    for (int64_t r = 0; r < w.rows; ++r) {
      w.dequant_row(r, row.data());
      double y = 0;
      for (int64_t c = 0; c < w.cols; ++c) y += double(row[size_t(c)]) * x[size_t(c)];
      s2 += y * y;
    }
  }
  return std::sqrt(s2 / double(4 * w.rows));
}

TEST(Synth, TinyKimiRoundTripsWithKimiLayout) {
  TempDir t;
  auto ck = write_and_open(opts("tiny-kimi"), t.path / "m");
  const ModelConfig& c = ck->config();
  EXPECT_EQ(c.architecture, "KimiK25ForConditionalGeneration");
  EXPECT_TRUE(c.is_nested);
  EXPECT_TRUE(c.has_vision);
  EXPECT_EQ(c.model_type, "kimi_k2");
  EXPECT_EQ(c.tensor_prefix, "language_model.");
  EXPECT_EQ(c.n_group, 1);
  EXPECT_EQ(c.n_routed_experts, 16);
  EXPECT_EQ(c.num_experts_per_tok, 4);
  EXPECT_EQ(c.first_k_dense_replace, 1);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 64.0);
  EXPECT_DOUBLE_EQ(c.rope_theta, 50000.0);
  EXPECT_EQ(c.quant.method, QuantMethod::kPackQuantizedInt4);
  EXPECT_EQ(c.quant.group_size, 32);
  // quantization_config at the root (as K2.5 ships it), not inside text_config.
  EXPECT_TRUE(ck->config_json().contains("quantization_config"));
  EXPECT_FALSE(ck->config_json()["text_config"].contains("quantization_config"));
  EXPECT_TRUE(ck->has("vision_tower.patch_embed.proj.weight"));
  EXPECT_TRUE(ck->has("mm_projector.proj.0.weight"));
  // Routed experts int4, everything else bf16.
  EXPECT_EQ(ck->weight(ck->names().expert(1, 3, "down_proj")).encoding, WeightEncoding::kInt4Group);
  EXPECT_EQ(ck->weight(ck->names().layer(1, "mlp.shared_experts.down_proj")).encoding, WeightEncoding::kBF16);
  EXPECT_EQ(ck->weight(ck->names().layer(0, "self_attn.q_b_proj")).encoding, WeightEncoding::kBF16);
  EXPECT_EQ(ck->weight(ck->names().layer(2, "mlp.gate")).encoding, WeightEncoding::kBF16);
  // Correction bias: f32 and not zero.
  TensorView bias = ck->tensor(ck->names().layer(1, "mlp.gate.e_score_correction_bias"));
  ASSERT_EQ(bias.dtype, DType::F32);
  int nonzero = 0;
  for (int64_t i = 0; i < bias.numel(); ++i) nonzero += bias.as<float>()[i] != 0.0f;
  EXPECT_EQ(nonzero, bias.numel());
}

TEST(Synth, TinyDsv3RoundTripsWithFp8AndRopeParameters) {
  TempDir t;
  auto ck = write_and_open(opts("tiny-dsv3"), t.path / "m");
  const ModelConfig& c = ck->config();
  EXPECT_EQ(c.architecture, "DeepseekV3ForCausalLM");
  EXPECT_FALSE(c.is_nested);
  EXPECT_EQ(c.tensor_prefix, "");
  EXPECT_EQ(c.n_group, 4);
  EXPECT_EQ(c.topk_group, 2);
  EXPECT_EQ(c.quant.method, QuantMethod::kFp8Block);
  // rope_theta only inside rope_parameters: the parser found it there.
  EXPECT_FALSE(ck->config_json().contains("rope_theta"));
  EXPECT_TRUE(ck->config_json().contains("rope_parameters"));
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 40.0);
  // Every linear fp8 except router / embeddings / lm_head.
  for (const char* rest : {"self_attn.q_a_proj", "self_attn.q_b_proj", "self_attn.kv_a_proj_with_mqa",
                           "self_attn.kv_b_proj", "self_attn.o_proj"})
    EXPECT_EQ(ck->weight(ck->names().layer(1, rest)).encoding, WeightEncoding::kFp8Block) << rest;
  EXPECT_EQ(ck->weight(ck->names().layer(0, "mlp.down_proj")).encoding, WeightEncoding::kFp8Block);
  EXPECT_EQ(ck->weight(ck->names().layer(1, "mlp.shared_experts.up_proj")).encoding,
            WeightEncoding::kFp8Block);
  EXPECT_EQ(ck->weight(ck->names().expert(2, 15, "gate_proj")).encoding, WeightEncoding::kFp8Block);
  EXPECT_EQ(ck->weight(ck->names().layer(1, "mlp.gate")).encoding, WeightEncoding::kBF16);
  EXPECT_EQ(ck->info("lm_head.weight").dtype, DType::BF16);
  EXPECT_EQ(ck->info("model.embed_tokens.weight").dtype, DType::BF16);
  EXPECT_FALSE(ck->has("vision_tower.patch_embed.proj.weight"));
}

TEST(Synth, QuantAndDtypeVariantsRoundTrip) {
  struct Case {
    const char* preset;
    const char* quant;
    DType dtype;
    WeightEncoding expert_enc, attn_enc;
    QuantMethod method;
  };
  const Case cases[] = {
      {"tiny-kimi", "none", DType::F32, WeightEncoding::kF32, WeightEncoding::kF32, QuantMethod::kNone},
      {"tiny-kimi", "fp8", DType::BF16, WeightEncoding::kFp8Block, WeightEncoding::kFp8Block,
       QuantMethod::kFp8Block},
      {"tiny-dsv3", "none", DType::BF16, WeightEncoding::kBF16, WeightEncoding::kBF16, QuantMethod::kNone},
      {"tiny-dsv3", "int4", DType::F32, WeightEncoding::kInt4Group, WeightEncoding::kF32,
       QuantMethod::kPackQuantizedInt4},
  };
  for (const auto& cs : cases) {
    SCOPED_TRACE(std::string(cs.preset) + " " + cs.quant);
    TempDir t;
    SynthOptions o = opts(cs.preset);
    o.quant = cs.quant;
    o.dtype = cs.dtype;
    auto ck = write_and_open(o, t.path / "m");
    EXPECT_EQ(ck->config().quant.method, cs.method);
    EXPECT_EQ(ck->weight(ck->names().expert(1, 0, "up_proj")).encoding, cs.expert_enc);
    EXPECT_EQ(ck->weight(ck->names().layer(1, "self_attn.o_proj")).encoding, cs.attn_enc);
    EXPECT_EQ(ck->info(ck->names().final_norm()).dtype, cs.dtype);
  }
}

TEST(Synth, LayersAndExpertsOverrides) {
  TempDir t;
  SynthOptions o = opts("tiny-dsv3");
  o.n_layers = 5;
  o.n_experts = 8;  // 4 groups of 2; topk_group 2 x 2 = 4 = top-k: still routable
  auto ck = write_and_open(o, t.path / "m");
  EXPECT_EQ(ck->config().num_hidden_layers, 5);
  EXPECT_EQ(ck->config().n_routed_experts, 8);
  EXPECT_TRUE(ck->has(ck->names().expert(4, 7, "down_proj") + ".weight"));
  EXPECT_FALSE(ck->has(ck->names().expert(4, 8, "down_proj") + ".weight"));
}

TEST(Synth, DeterministicForASeed) {
  TempDir t;
  auto write = [&](uint64_t seed, const std::string& name) {
    SynthOptions o = opts("tiny-kimi", seed);
    synth_write(synth_plan(o), t.path / name, o);
    return file_hash(t.path / name / "model.safetensors");
  };
  std::string a = write(7, "a"), b = write(7, "b"), c = write(8, "c");
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // config.json differs only in the recorded seed.
  EXPECT_NE(file_hash(t.path / "a" / "config.json"), file_hash(t.path / "c" / "config.json"));
  EXPECT_EQ(file_hash(t.path / "a" / "config.json"), file_hash(t.path / "b" / "config.json"));
}

TEST(Synth, FillIsIndependentOfChunking) {
  SynthOptions o = opts("tiny-dsv3", 3);
  o.quant = "fp8";
  SynthPlan plan = synth_plan(o);
  for (const auto& t : plan.tensors) {
    const size_t n = size_t(t.nbytes()), es = dtype_size(t.dtype);
    std::vector<std::byte> whole(n), pieces(n);
    synth_fill(t, 0, whole.data(), n);
    // Odd-sized pieces (multiples of the element size).
    size_t step = es * 7;
    for (size_t off = 0; off < n; off += step)
      synth_fill(t, off, pieces.data() + off, std::min(step, n - off));
    ASSERT_EQ(whole, pieces) << t.name;
  }
}

TEST(Synth, ValueStatisticsMatchTheStatedScales) {
  TempDir t;
  auto kimi = write_and_open(opts("tiny-kimi", 5), t.path / "kimi");
  auto dsv3 = write_and_open(opts("tiny-dsv3", 5), t.path / "dsv3");
  // int4 routed experts: dequantized std ~ 1/sqrt(fan_in), mean ~ 0, full nibble range used.
  double sum_std = 0;
  int n = 0;
  for (int64_t il = 1; il < 3; ++il)
    for (int64_t e = 0; e < 16; ++e)
      for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
        std::string base = kimi->names().expert(il, e, proj);
        Stats st = weight_stats(*kimi, base);
        WeightView w = kimi->weight(base);
        sum_std += st.std * std::sqrt(double(w.cols));
        ++n;
        EXPECT_LT(std::fabs(st.mean), 0.2 * st.std) << base;
      }
  EXPECT_NEAR(sum_std / n, 1.0, 0.05);
  {
    WeightView w = kimi->weight(kimi->names().expert(1, 0, "gate_proj"));
    int lo = 0, hi = 0;
    for (int64_t i = 0; i < w.rows * w.cols / 8; ++i) {
      int8_t q[8];
      unpack_int4_word(static_cast<const uint32_t*>(w.data)[i], q);
      for (int8_t v : q) {
        lo += v <= -6;
        hi += v >= 6;
      }
    }
    EXPECT_GT(lo, 0);
    EXPECT_GT(hi, 0);
  }
  // fp8 and bf16 linears: same std target.
  for (const char* rest : {"self_attn.q_b_proj", "self_attn.o_proj", "mlp.shared_experts.down_proj"}) {
    std::string base = dsv3->names().layer(1, rest);
    Stats st = weight_stats(*dsv3, base);
    EXPECT_NEAR(st.std * std::sqrt(double(dsv3->weight(base).cols)), 1.0, 0.1) << base;
    std::string kb = kimi->names().layer(1, rest);
    Stats sk = weight_stats(*kimi, kb);
    EXPECT_NEAR(sk.std * std::sqrt(double(kimi->weight(kb).cols)), 1.0, 0.1) << kb;
  }
  // Activations stay O(1): unit-RMS in, ~unit-RMS out, for each encoding.
  for (const auto* ck : {kimi.get(), dsv3.get()}) {
    for (const std::string& base :
         {ck->names().expert(2, 5, "down_proj"), ck->names().layer(1, "self_attn.kv_b_proj"),
          ck->names().layer(0, "mlp.up_proj")}) {
      double rms = output_rms(ck->weight(base), 11);
      EXPECT_GT(rms, 0.75) << base;
      EXPECT_LT(rms, 1.3) << base;
    }
  }
  // Norm weights ~ 1, embeddings ~ N(0, 1).
  Stats norm;
  {
    TensorView v = kimi->tensor(kimi->names().final_norm());
    double s = 0;
    for (int64_t i = 0; i < v.numel(); ++i) s += bf16_to_f32(v.as<uint16_t>()[i]);
    norm.mean = s / double(v.numel());
  }
  EXPECT_NEAR(norm.mean, 1.0, 0.05);
  Stats emb = weight_stats(*kimi, kimi->names().embed().substr(0, kimi->names().embed().size() - 7));
  EXPECT_NEAR(emb.std, 1.0, 0.05);
  EXPECT_LE(emb.max, 3.47);  // Irwin-Hall(4) bound 2 sqrt 3
}

TEST(Synth, MiniWithFewLayersRoundTripsAndFullPlanIsAboutFiveBillion) {
  // Full plan: count logical parameters without writing (~3 GB).
  SynthPlan full = synth_plan(opts("mini"));
  double params = 0;
  for (const auto& t : full.tensors) {
    if (t.gen.kind == SynthGen::Kind::kInt4Packed) params += double(t.gen.rows) * double(t.gen.cols);
    else if (t.gen.kind == SynthGen::Kind::kInt4Scale || t.gen.kind == SynthGen::Kind::kShape) continue;
    else params += double(t.nbytes()) / double(dtype_size(t.dtype));
  }
  EXPECT_GT(params, 3e9);
  EXPECT_LT(params, 5e9);
  EXPECT_EQ(full.config["num_hidden_layers"], 12);
  EXPECT_EQ(full.config["n_routed_experts"], 64);
  EXPECT_EQ(full.config["hidden_size"], 2048);
  // Written with 2 layers and 8 experts (~0.4 GB): the real dims round-trip.
  TempDir t;
  SynthOptions o = opts("mini");
  o.n_layers = 2;
  o.n_experts = 8;
  o.max_shard_bytes = 200ull << 20;  // forces several shards + an index
  auto ck = write_and_open(o, t.path / "m");
  EXPECT_GT(ck->files().size(), 1u);
  EXPECT_TRUE(fs::exists(t.path / "m" / "model.safetensors.index.json"));
  EXPECT_EQ(ck->config().hidden_size, 2048);
  EXPECT_EQ(ck->weight(ck->names().expert(1, 7, "down_proj")).encoding, WeightEncoding::kInt4Group);
}

TEST(Synth, KimiK25LayersPlanHasRealDimensions) {
  SynthOptions o = opts("kimi-k2.5-layers");
  SynthPlan plan = synth_plan(o);
  const auto& tc = plan.config["text_config"];
  EXPECT_EQ(tc["hidden_size"], 7168);
  EXPECT_EQ(tc["n_routed_experts"], 384);
  EXPECT_EQ(tc["moe_intermediate_size"], 2048);
  EXPECT_EQ(tc["vocab_size"], 163840);
  EXPECT_EQ(tc["num_hidden_layers"], 3);
  EXPECT_EQ(tc["bos_token_id"], 163584);  // Kimi's [BOS]
  ModelConfig c = ModelConfig::from_json(plan.config, "plan");
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.kv_lora_rank, 512);
  // One int4 expert projection [2048, 7168]: 2048*7168/2 packed + 2048*224*2 scales + 8 shape bytes.
  uint64_t expert_proj = 2048ull * 7168 / 2 + 2048ull * 224 * 2 + 8;
  uint64_t routed = 0;
  for (const auto& t : plan.tensors)
    if (t.name.find(".mlp.experts.") != std::string::npos) routed += t.nbytes();
  EXPECT_EQ(routed, 2ull * 384 * 3 * expert_proj);
  o.n_layers = 2;
  o.n_experts = 72;
  EXPECT_EQ(synth_plan(o).config["text_config"]["n_routed_experts"], 72);
}

TEST(Synth, BadOptionsFailNamingTheOption) {
  auto msg = [](SynthOptions o) -> std::string {
    try {
      synth_plan(o);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  SynthOptions o = opts("no-such");
  EXPECT_NE(msg(o).find("unknown preset 'no-such'"), std::string::npos);
  o = opts("tiny-dsv3");
  o.n_experts = 18;
  EXPECT_NE(msg(o).find("--experts 18 is not divisible by n_group 4"), std::string::npos);
  o = opts("tiny-kimi");
  o.quant = "int3";
  EXPECT_NE(msg(o).find("--quant 'int3'"), std::string::npos);
  o = opts("tiny-kimi");
  o.n_experts = 2;
  EXPECT_NE(msg(o).find("too few"), std::string::npos);
  // An existing output is refused without --force, and replaced with it.
  TempDir t;
  fs::create_directories(t.path / "m");
  o = opts("tiny-kimi");
  try {
    synth_write(synth_plan(o), t.path / "m", o);
    ADD_FAILURE() << "existing output was overwritten";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos);
  }
  o.force = true;
  synth_write(synth_plan(o), t.path / "m", o);
  EXPECT_NO_THROW(Checkpoint::open(t.path / "m"));
}

}  // namespace
}  // namespace sickle
