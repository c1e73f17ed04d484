// Tests for the deployment planner (`sickle plan`): the seed's figures for Kimi-K2.5 pruned to 72
// experts from a config.json with the real dimensions, what-if --keep == the model prune would
// write, the routing rules, --fit's answer and why, and the CPU target's arithmetic.
#include "prune/deploy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "base/error.h"
#include "base/test_temp_dir.h"
#include "model/model.h"
#include "model/synth.h"
#include "model/synth_testing.h"

namespace sickle {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

struct TempDir : test_util::TempDir {
  TempDir() : test_util::TempDir("sickle-deploy-test") {}
};

// A directory holding only a config.json.
fs::path config_dir(const json& config, const fs::path& dir) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump(2);
  return dir;
}

// Kimi-K2.5 (docs/formats.md §1): synth's kimi-k2.5-layers config at the real 61 layers and 384
// experts, with the released vision_config (§2b) in place of synth's stand-in.
json kimi_k25_config() {
  json root = synth_plan(test_util::synth_options("kimi-k2.5-layers", 61)).config;
  root.erase("sickle_synth");
  root["vision_config"] = test_util::kimi_k25_vision_config();
  return root;
}

PlanTarget gpus8(uint64_t mem, double util, int64_t context = 0) {
  PlanTarget t;
  t.n_gpus = 8;
  t.gpu_mem = mem;
  t.expert_parallel = true;
  t.gpu_memory_utilization = util;
  t.context = context;
  return t;
}

constexpr uint64_t kGiB = 1ull << 30;

// The seed: "72 experts because it is divisible by 8 GPUs, ~122 GB total fits 8 x 24 GB, ~15 GB
// per GPU of weights with expert parallelism leaves ~7 GB for KV cache and overhead, max
// context 57,344".
TEST(Deploy, KimiK25At72ExpertsReproducesTheSeedFigures) {
  TempDir t;
  ModelSource src = load_model_source(config_dir(kimi_k25_config(), t.path / "k25"));
  ASSERT_EQ(src.bytes_from, "config.json");
  // The unpruned model is the published 595 GB download (1T parameters).
  EXPECT_NEAR(double(analyze_source(src).loaded_bytes()) / 1e9, 595.0, 1.0);
  DeployRequest req;
  req.keep = 72;
  req.gpu = gpus8(24 * kGiB, 0.95, 57344);
  Deployment d = plan_deployment(src, req);
  EXPECT_EQ(d.keep, 72);
  EXPECT_EQ(d.report.config.n_routed_experts, 72);
  EXPECT_EQ(d.report.n_moe_layers(), 60);
  // ~122 GB total: the card's "122 GB" read as GiB, within 2%.
  const double total_gib = double(d.report.loaded_bytes()) / double(kGiB);
  EXPECT_NEAR(total_gib, 122.0, 0.02 * 122.0) << total_gib;
  // ~15-17 GB of weights per GPU: ~15 is the even split (total / 8), ~17 the busiest GPU once the
  // replicated pieces (q_a/kv_a down-projections, routers, norms, the vision tower's non-TP parts)
  // sit on every GPU and the embedding/lm_head shares are added.
  const MemoryPlan& p = *d.gpu;
  EXPECT_EQ(p.experts_busiest, 9);
  const double even_gib = double(p.even_split) / double(kGiB),
               busiest_gib = double(p.weights_per_device) / double(kGiB);
  EXPECT_NEAR(even_gib, 15.25, 0.5) << even_gib;
  EXPECT_GE(busiest_gib, 15.0);
  EXPECT_LE(busiest_gib, 17.0);
  EXPECT_GT(p.replicated, 1800000000u);  // 61 x (1536 + 576) x 7168 x 2 B of down-projections alone
  // MLA latent, bf16, not split by TP: (512 + 64) x 61 x 2 bytes per token on every GPU.
  EXPECT_EQ(p.kv_bytes_per_token, 70272u);
  // 57,344 tokens fit at --gpu-memory-utilization 0.95 on 8 x 24 GiB.
  EXPECT_TRUE(p.fits()) << format_memory_plan(d.report, p);
  EXPECT_GE(p.max_context, 57344);
  EXPECT_EQ(p.tokens % 64, 0);
  // ... and not at vLLM's default 0.9 with the same overhead: the utilization is what makes room.
  req.gpu = gpus8(24 * kGiB, 0.9, 57344);
  EXPECT_FALSE(plan_deployment(src, req).gpu->fits());
  // An fp8 cache halves the bytes per token.
  req.gpu = gpus8(24 * kGiB, 0.95, 57344);
  req.gpu->kv_bytes_per_value = 1;
  EXPECT_EQ(plan_deployment(src, req).gpu->kv_bytes_per_token, 35136u);
}

// --fit: the largest routable keep that fits, and which term binds at the next one.
TEST(Deploy, FitAnswers72ForTheSeedTargetAndSaysWhatBinds) {
  TempDir t;
  ModelSource src = load_model_source(config_dir(kimi_k25_config(), t.path / "k25"));
  DeployRequest req;
  req.fit = true;
  req.gpu = gpus8(24 * kGiB, 0.95, 57344);
  Deployment d = plan_deployment(src, req);
  ASSERT_TRUE(d.fit);
  EXPECT_EQ(d.fit->keep, 72) << d.fit->binds;
  EXPECT_EQ(d.keep, 72);
  EXPECT_EQ(d.fit->next_keep, 73);  // n_group 1: every count from top-k up is routable
  EXPECT_EQ(d.fit->candidates.front(), 8);
  EXPECT_NE(d.fit->binds.find("routed experts"), std::string::npos) << d.fit->binds;
  EXPECT_NE(d.fit->binds.find("57344"), std::string::npos) << d.fit->binds;
  EXPECT_TRUE(d.gpu->fits());
  // With --even-experts only multiples of 8 are candidates.
  req.even_experts = true;
  Deployment e = plan_deployment(src, req);
  EXPECT_EQ(e.fit->keep, 72);
  EXPECT_EQ(e.fit->next_keep, 80);
  for (int64_t k : e.fit->candidates) EXPECT_EQ(k % 8, 0);
  // The seed's command, 24 GB read as 24e9 bytes, vLLM's default utilization, no context demand:
  // a keep close to 72.
  req = DeployRequest{};
  req.fit = true;
  req.gpu = gpus8(24000000000ull, 0.9);
  Deployment s = plan_deployment(src, req);
  EXPECT_GE(s.fit->keep, 64);
  EXPECT_LE(s.fit->keep, 80);
  EXPECT_NE(s.fit->binds.find("no KV block"), std::string::npos) << s.fit->binds;
}

// What-if --keep weighs exactly the checkpoint with that many experts: the same tensors synth
// writes for --experts N (prune's output is checked against `inspect` in plan_cli_test.sh).
TEST(Deploy, WhatIfKeepIsTheModelWithThatManyExperts) {
  for (const char* preset : {"tiny-kimi", "tiny-dsv3"}) {
    SCOPED_TRACE(preset);
    TempDir t;
    SynthOptions o = test_util::synth_options(preset);
    synth_write(synth_plan(o), t.path / "m", o);
    SynthOptions o8 = test_util::synth_options(preset, 0, 8);
    synth_write(synth_plan(o8), t.path / "m8", o8);
    DeployRequest req;
    req.keep = 8;
    json a = deployment_json(plan_deployment(load_model_source(t.path / "m"), req))["model"];
    json b = report_json(analyze_source(load_model_source(t.path / "m8")), nullptr);
    for (auto* j : {&a, &b}) {
      j->erase("source");
      j->erase("bytes_from");
    }
    EXPECT_EQ(a, b);
  }
}

TEST(Deploy, RoutingRulesRefuseWhatPruneRefuses) {
  // tiny-dsv3: 16 experts, top-4, 4 groups.
  const json dsv3_json = synth_plan(test_util::synth_options("tiny-dsv3")).config;
  ModelConfig dsv3 = ModelConfig::from_json(dsv3_json, "x");
  EXPECT_EQ(routable_keep(dsv3, 8, -1), 8);
  EXPECT_EQ(routable_keep(dsv3, 0, 0.5), 8);
  auto msg = [&](int64_t keep) {
    try {
      routable_keep(dsv3, keep, -1);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(msg(6).find("multiple of 4"), std::string::npos) << msg(6);
  EXPECT_NE(msg(4).find("at least 2"), std::string::npos) << msg(4);
  EXPECT_NE(msg(20).find("only 16"), std::string::npos) << msg(20);
  TempDir t;
  ModelSource src = load_model_source(config_dir(dsv3_json, t.path / "d"));
  DeployRequest req;
  req.fit = true;
  req.gpu = PlanTarget{};
  req.gpu->gpu_mem = 1ull << 30;
  req.gpu->runtime_overhead = 0;
  Deployment d = plan_deployment(src, req);
  EXPECT_EQ(d.fit->candidates, (std::vector<int64_t>{8, 12, 16}));
  EXPECT_EQ(d.fit->keep, 16);
  EXPECT_EQ(d.fit->next_keep, 0);
  req.keep = 6;
  EXPECT_THROW(plan_deployment(src, req), Error);
  // A target too small for even the smallest routable count: nothing fits, and it says why.
  req.keep = 0;
  req.gpu->gpu_mem = 100000;
  Deployment n = plan_deployment(src, req);
  EXPECT_EQ(n.fit->keep, 0);
  EXPECT_NE(n.fit->binds.find("smallest routable"), std::string::npos) << n.fit->binds;
}

// CPU target: decode tok/s = fraction x bandwidth / bytes read per token; the bytes per token
// agree with the runtime's own count (Model::active_bytes_per_token, which leaves out norms and
// the routers' f32 correction biases) on the demo model.
TEST(Deploy, CpuTargetArithmeticAndBytesPerToken) {
  const char* src_dir = std::getenv("SICKLE_SOURCE_DIR");
  fs::path model = fs::path(src_dir ? src_dir : SICKLE_SOURCE_DIR) / "models/brown-kimi";
  ModelReport r = analyze_source(load_model_source(model));
  auto m = Model::load(model);
  const double ours = double(r.active_bytes_per_token()), runtime = double(m->active_bytes_per_token());
  EXPECT_NEAR(ours / runtime, 1.0, 0.01) << ours << " vs " << runtime;
  CpuTarget t;
  t.mem = 1ull << 30;
  t.overhead = 1 << 20;
  t.membw = 300e9;
  t.bw_fraction = 0.8;
  t.want_tok_s = 50;
  t.context = 100;
  CpuPlan p = plan_cpu(r, t);
  EXPECT_DOUBLE_EQ(p.tok_s, 0.8 * 300e9 / double(p.bytes_per_token));
  EXPECT_EQ(p.kv_bytes_per_token, uint64_t(64 + 16) * 5 * 4);  // f32 latent
  const double at_ctx = double(p.bytes_per_token) + 100.0 * double(p.kv_bytes_per_token);
  EXPECT_DOUBLE_EQ(p.tok_s_at_context, 0.8 * 300e9 / at_ctx);
  EXPECT_DOUBLE_EQ(p.needed_membw, 50 * at_ctx / 0.8);
  EXPECT_TRUE(p.fits());
  EXPECT_EQ(p.max_context, r.config.max_position_embeddings);  // 1 GiB holds more than 512 tokens
  t.mem = r.loaded_bytes() + t.overhead;  // weights and overhead only: no room for the cache
  EXPECT_FALSE(plan_cpu(r, t).fits());
}

}  // namespace
}  // namespace sickle
