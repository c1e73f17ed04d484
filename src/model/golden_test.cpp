// Golden tests: sickle's forward pass against the independent PyTorch reference
// (tools/reference/ref_model.py, float64; goldens made by tools/reference/make_goldens.py and
// committed under tests/golden/, so CI needs no torch).
//
// For each golden (tiny-kimi int4 / bf16: nested layout, n_group 1; tiny-dsv3 fp8 / bf16: flat
// layout, n_group 4 / topk_group 2, rope_parameters) the test regenerates the checkpoint with the
// exact `sickle synth` command recorded in the golden's json, checks it is the checkpoint the
// goldens were made from (config + every tensor's dtype, shape and byte checksum), then:
//   - prefill: logits of every position within the stated tolerance;
//   - decode: the prompt fed one token at a time over the KV cache, every step's logits;
//   - chunked prefill (two chunks) over the cache;
//   - greedy: >= 32 generated tokens identical, and each step's logits within tolerance;
//   - batch: two sequences in one forward step (prefill together, then decode together);
//   - REAP hook data: statistics accumulated from the observer's MoeLayerEvents equal the
//     reference's (tests/golden/reap/), i.e. real routing, unscaled renormalized gate weights,
//     raw expert outputs.
// Tolerance (json "tolerance"): per row max|sickle - golden| <= logits_rel * max|golden|.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "base/test_param_name.h"
#include "io/checkpoint.h"
#include "io/dtype.h"
#include "io/safetensors.h"
#include "kernels/dispatch.h"
#include "model/hooks.h"
#include "model/model.h"

namespace sickle {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string source_dir() {
  if (const char* s = std::getenv("SICKLE_SOURCE_DIR")) return s;
  return SICKLE_SOURCE_DIR;
}

std::string sickle_bin() {
  if (const char* s = std::getenv("SICKLE_BIN")) return s;
  return SICKLE_BIN;
}

json read_json(const fs::path& p) {
  std::ifstream f(p);
  if (!f) throw std::runtime_error("cannot open " + p.string());
  return json::parse(f);
}

// Same as tools/reference/ref_model.py tensor_checksum:
// sum_i (b[i] + 1) * ((i * 0x9E3779B1 + 1) mod 2^32) mod 2^64.
uint64_t tensor_checksum(const std::byte* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t w = (uint64_t(i) * 0x9E3779B1ull + 1ull) & 0xFFFFFFFFull;
    s += (uint64_t(std::to_integer<uint8_t>(p[i])) + 1ull) * w;
  }
  return s;
}

// One golden: its json, its tensors, and the regenerated checkpoint + the model loaded on each
// kernel table (shared by every test of the process: synth once, load once per table).
struct Golden {
  std::string name;
  json meta;
  std::unique_ptr<SafetensorsFile> file;
  fs::path ckpt_dir;
  std::map<std::string, std::unique_ptr<Model>> models;  // by kernel table name
  std::string error;                                     // set if regeneration or loading failed

  std::vector<int32_t> ints(const std::string& key) const {
    TensorView v = file->view(key);
    EXPECT_EQ(v.dtype, DType::I32) << key;
    return std::vector<int32_t>(v.as<int32_t>(), v.as<int32_t>() + v.numel());
  }
  // [rows, vocab] as a flat vector; rows written to *rows.
  std::vector<float> floats(const std::string& key, int64_t* rows = nullptr) const {
    TensorView v = file->view(key);
    EXPECT_EQ(v.dtype, DType::F32) << key;
    if (rows) *rows = v.shape.empty() ? 1 : v.shape[0];
    return std::vector<float>(v.as<float>(), v.as<float>() + v.numel());
  }
  std::string case_key(int i, const char* what) const { return "case." + std::to_string(i) + "." + what; }
  double tol() const { return meta.at("tolerance").at("logits_rel").get<double>(); }
  std::string synth_command(const fs::path& out) const {
    std::string cmd = "'" + sickle_bin() + "' synth";
    for (const auto& a : meta.at("synth").at("args")) cmd += " " + a.get<std::string>();
    return cmd + " -o '" + out.string() + "' --force > /dev/null";
  }
};

std::string check_fingerprint(const Golden& g, const Checkpoint& ck) {
  const json& want_cfg = g.meta.at("config");
  if (ck.config_json() != want_cfg)
    return "config.json of `" + g.meta["synth"]["command"].get<std::string>() +
           "` differs from the one the goldens were made from: regenerate with "
           "tools/reference/make_goldens.py";
  const json& want = g.meta.at("tensors");
  std::vector<std::string> names = ck.tensor_names();
  if (names.size() != want.size())
    return "tensor count " + std::to_string(names.size()) + " != golden's " + std::to_string(want.size());
  for (const auto& n : names) {
    if (!want.contains(n)) return "tensor " + n + " not in the golden's checkpoint";
    const json& w = want[n];
    TensorView v = ck.tensor(n);
    if (std::string(dtype_name(v.dtype)) != w[0].get<std::string>())
      return "tensor " + n + " dtype " + std::string(dtype_name(v.dtype)) + " != " + w[0].get<std::string>();
    if (v.shape != w[1].get<std::vector<int64_t>>())
      return "tensor " + n + " shape " + v.shape_str() + " differs";
    const uint64_t sum = tensor_checksum(v.data, v.nbytes());
    if (std::to_string(sum) != w[2].get<std::string>())
      return "tensor " + n +
             " bytes differ from the golden's checkpoint (synth generator changed?): regenerate "
             "goldens with tools/reference/make_goldens.py";
  }
  return "";
}

Golden& golden(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Golden>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[name];
  if (slot) return *slot;
  slot = std::make_unique<Golden>();
  Golden& g = *slot;
  g.name = name;
  const fs::path base = fs::path(source_dir()) / "tests" / "golden" / "engine" / name;
  try {
    g.meta = read_json(base.string() + ".json");
    g.file = SafetensorsFile::open(base.string() + ".safetensors");
    g.ckpt_dir = fs::temp_directory_path() / ("sickle-golden-" + name + "-" + std::to_string(::getpid()));
    const std::string cmd = g.synth_command(g.ckpt_dir);
    if (std::system(cmd.c_str()) != 0) {
      g.error = "failed: " + cmd;
      return g;
    }
    auto ck = Checkpoint::open(g.ckpt_dir);
    g.error = check_fingerprint(g, *ck);
  } catch (const std::exception& e) {
    g.error = e.what();
  }
  return g;
}

// The golden's model running on kernel table kt (loaded on first use).
Model& golden_model(Golden& g, const KernelTable& kt) {
  std::unique_ptr<Model>& m = g.models[kt.name];
  if (!m) {
    ModelOptions opt;
    opt.n_threads = 2;
    opt.kernels = &kt;
    m = Model::load(g.ckpt_dir, opt);
  }
  return *m;
}

// Every golden test runs on each kernel table this CPU runs: names end in the golden and the
// table (GoldenTest.PrefillLogits/tiny_kimi_int4_avx2), so the AVX2 and scalar paths are proven
// end to end on an AVX-512 / AMX machine too.
using GoldenParam = std::tuple<std::string, const KernelTable*>;

// Removes the regenerated checkpoints at exit.
struct Cleanup {
  ~Cleanup() {
    std::error_code ec;
    for (const char* n : {"tiny-kimi-int4", "tiny-kimi-bf16", "tiny-dsv3-fp8", "tiny-dsv3-bf16"})
      fs::remove_all(
          fs::temp_directory_path() / ("sickle-golden-" + std::string(n) + "-" + std::to_string(::getpid())),
          ec);
  }
} cleanup;

// Compares rows [n, vocab] of sickle to the golden's; returns the worst max|diff|/max|golden|.
double compare_rows(const float* got, const float* want, int64_t n, int64_t vocab, double tol,
                    const std::string& what) {
  double worst = 0;
  for (int64_t r = 0; r < n; ++r) {
    double dmax = 0, gmax = 0;
    int64_t at = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const double d = std::fabs(double(got[r * vocab + v]) - double(want[r * vocab + v]));
      if (!(d <= dmax)) dmax = d, at = v;  // NaN-safe: a NaN becomes the maximum
      gmax = std::max(gmax, std::fabs(double(want[r * vocab + v])));
    }
    const double rel = dmax / std::max(gmax, 1e-30);
    worst = std::max(worst, std::isnan(rel) ? INFINITY : rel);
    EXPECT_LE(rel, tol) << what << " row " << r << ": max|diff| " << dmax << " at vocab " << at << " (sickle "
                        << got[r * vocab + at] << ", golden " << want[r * vocab + at] << "), max|golden| "
                        << gmax;
  }
  return worst;
}

// max|got - want| / max|want| of one row.
double row_rel(const float* got, const float* want, int64_t vocab) {
  double dmax = 0, gmax = 0;
  for (int64_t v = 0; v < vocab; ++v) {
    const double d = std::fabs(double(got[v]) - double(want[v]));
    if (!(d <= dmax)) dmax = d;
    gmax = std::max(gmax, std::fabs(double(want[v])));
  }
  const double rel = dmax / std::max(gmax, 1e-30);
  return std::isnan(rel) ? INFINITY : rel;
}

int32_t argmax(const float* row, int64_t vocab) { return int32_t(std::max_element(row, row + vocab) - row); }

class GoldenTest : public ::testing::TestWithParam<GoldenParam> {
 protected:
  void SetUp() override {
    name_ = std::get<0>(GetParam()) + " on " + std::get<1>(GetParam())->name;
    g_ = &golden(std::get<0>(GetParam()));
    ASSERT_TRUE(g_->error.empty()) << name_ << ": " << g_->error;
    model_ = &golden_model(*g_, *std::get<1>(GetParam()));
    vocab_ = model_->vocab_size();
    n_cases_ = int(g_->meta.at("cases").size());
  }
  const std::string& name() const { return name_; }
  std::string name_;
  Golden* g_ = nullptr;
  Model* model_ = nullptr;
  int64_t vocab_ = 0;
  int n_cases_ = 0;
};

TEST_P(GoldenTest, PrefillLogits) {
  double worst = 0;
  std::vector<double> exact_rel;  // per row, vs the exact-semantics logits (int4 goldens only)
  for (int i = 0; i < n_cases_; ++i) {
    const auto toks = g_->ints(g_->case_key(i, "tokens"));
    int64_t rows = 0;
    const auto want = g_->floats(g_->case_key(i, "logits"), &rows);
    ASSERT_EQ(rows, int64_t(toks.size()));
    auto seq = model_->new_sequence();
    std::vector<float> logits;
    model_->forward(*seq, toks, logits, /*all_logits=*/true);
    ASSERT_EQ(int64_t(logits.size()), rows * vocab_);
    worst = std::max(worst, compare_rows(logits.data(), want.data(), rows, vocab_, g_->tol(),
                                         name() + " prefill case " + std::to_string(i)));
    EXPECT_EQ(seq->n_past(), rows);
    // int4 goldens emulate the kernels' Q8_0 activations; the exact-semantics logits are kept
    // too and must agree within the looser stated bound.
    if (g_->file->find(g_->case_key(i, "logits_exact"))) {
      const auto exact = g_->floats(g_->case_key(i, "logits_exact"));
      for (int64_t r = 0; r < rows; ++r)
        exact_rel.push_back(row_rel(&logits[r * vocab_], &exact[r * vocab_], vocab_));
    }
  }
  std::printf("[%s] prefill: worst max|diff|/max|logit| = %.3g (tolerance %.3g)\n", name().c_str(), worst,
              g_->tol());
  if (!exact_rel.empty()) {
    // Q8_0 activations move logits by ~1% and can flip a near-tie routing decision (then a row
    // moves by tens of %), so the exact-semantics bound is statistical: median and 90th
    // percentile of the per-row error (json tolerance.exact_*).
    std::sort(exact_rel.begin(), exact_rel.end());
    const double med = exact_rel[exact_rel.size() / 2], p90 = exact_rel[exact_rel.size() * 9 / 10];
    const json& t = g_->meta.at("tolerance");
    EXPECT_LE(med, t.at("exact_median_rel").get<double>())
        << name() << " vs exact semantics: median row error";
    EXPECT_LE(p90, t.at("exact_p90_rel").get<double>()) << name() << " vs exact semantics: 90th percentile";
    std::printf("[%s] vs exact semantics (no activation quantization): median %.3g, p90 %.3g, max %.3g\n",
                name().c_str(), med, p90, exact_rel.back());
  }
}

TEST_P(GoldenTest, DecodeStepByStep) {
  double worst = 0;
  for (int i = 0; i < n_cases_; ++i) {
    const auto toks = g_->ints(g_->case_key(i, "tokens"));
    int64_t rows = 0;
    const auto want = g_->floats(g_->case_key(i, "logits"), &rows);
    auto seq = model_->new_sequence();
    std::vector<float> logits;
    for (int64_t t = 0; t < rows; ++t) {
      model_->forward(*seq, std::span<const int32_t>(&toks[t], 1), logits);
      ASSERT_EQ(int64_t(logits.size()), vocab_);
      worst = std::max(
          worst, compare_rows(logits.data(), want.data() + t * vocab_, 1, vocab_, g_->tol(),
                              name() + " decode case " + std::to_string(i) + " pos " + std::to_string(t)));
    }
  }
  std::printf("[%s] step-by-step decode: worst %.3g\n", name().c_str(), worst);
}

TEST_P(GoldenTest, ChunkedPrefill) {
  // The longest case in two chunks: the second chunk attends over the cache of the first.
  int best = 0;
  for (int i = 0; i < n_cases_; ++i)
    if (g_->meta["cases"][i]["n_tokens"] > g_->meta["cases"][best]["n_tokens"]) best = i;
  const auto toks = g_->ints(g_->case_key(best, "tokens"));
  ASSERT_GE(toks.size(), 3u);
  const auto want = g_->floats(g_->case_key(best, "logits"));
  const size_t split = toks.size() * 2 / 5;
  auto seq = model_->new_sequence();
  std::vector<float> a, b;
  model_->forward(*seq, std::span<const int32_t>(toks.data(), split), a, true);
  model_->forward(*seq, std::span<const int32_t>(toks.data() + split, toks.size() - split), b, true);
  compare_rows(a.data(), want.data(), int64_t(split), vocab_, g_->tol(), name() + " chunk 1");
  compare_rows(b.data(), want.data() + split * vocab_, int64_t(toks.size() - split), vocab_, g_->tol(),
               name() + " chunk 2");
}

TEST_P(GoldenTest, GreedyContinuation) {
  double worst = 0;
  for (int i = 0; i < n_cases_; ++i) {
    const auto toks = g_->ints(g_->case_key(i, "tokens"));
    const auto want = g_->ints(g_->case_key(i, "greedy"));
    const auto want_rows = g_->floats(g_->case_key(i, "greedy_logits"));
    ASSERT_GE(want.size(), 32u);
    auto seq = model_->new_sequence();
    std::vector<float> logits;
    model_->forward(*seq, toks, logits);
    std::vector<int32_t> got;
    for (size_t s = 0; s < want.size(); ++s) {
      ASSERT_EQ(int64_t(logits.size()), vocab_);
      worst = std::max(
          worst, compare_rows(logits.data(), want_rows.data() + s * vocab_, 1, vocab_, g_->tol(),
                              name() + " greedy case " + std::to_string(i) + " step " + std::to_string(s)));
      const int32_t t = argmax(logits.data(), vocab_);
      got.push_back(t);
      if (t != want[s]) break;  // the rest would compare different prefixes
      model_->forward(*seq, std::span<const int32_t>(&t, 1), logits);
    }
    EXPECT_EQ(got, want) << name() << " case " << i << ": greedy continuation diverges at step "
                         << got.size() - 1;
  }
  std::printf("[%s] greedy: worst %.3g\n", name().c_str(), worst);
}

TEST_P(GoldenTest, TwoSequencesInOneStep) {
  for (const auto& grp : g_->meta.at("batch")) {
    const int ia = grp[0], ib = grp[1];
    const auto ta = g_->ints(g_->case_key(ia, "tokens")), tb = g_->ints(g_->case_key(ib, "tokens"));
    const auto wa = g_->floats(g_->case_key(ia, "logits")), wb = g_->floats(g_->case_key(ib, "logits"));
    const auto ga = g_->ints(g_->case_key(ia, "greedy")), gb = g_->ints(g_->case_key(ib, "greedy"));
    const auto gra = g_->floats(g_->case_key(ia, "greedy_logits"));
    const auto grb = g_->floats(g_->case_key(ib, "greedy_logits"));
    auto sa = model_->new_sequence(), sb = model_->new_sequence();
    std::vector<float> logits;
    std::vector<StepItem> items = {{sa.get(), ta, true}, {sb.get(), tb, true}};
    model_->forward(items, logits);
    ASSERT_EQ(int64_t(logits.size()), int64_t(ta.size() + tb.size()) * vocab_);
    compare_rows(logits.data(), wa.data(), int64_t(ta.size()), vocab_, g_->tol(),
                 name() + " batch prefill a");
    compare_rows(logits.data() + ta.size() * vocab_, wb.data(), int64_t(tb.size()), vocab_, g_->tol(),
                 name() + " batch prefill b");
    // Decode both together, feeding the golden greedy tokens; each step's two rows.
    const size_t steps = std::min(ga.size(), gb.size());
    for (size_t s = 1; s < steps; ++s) {
      const int32_t xa = ga[s - 1], xb = gb[s - 1];
      std::vector<StepItem> step = {{sa.get(), std::span<const int32_t>(&xa, 1)},
                                    {sb.get(), std::span<const int32_t>(&xb, 1)}};
      model_->forward(step, logits);
      ASSERT_EQ(int64_t(logits.size()), 2 * vocab_);
      compare_rows(logits.data(), gra.data() + s * vocab_, 1, vocab_, g_->tol(),
                   name() + " batch decode a step " + std::to_string(s));
      compare_rows(logits.data() + vocab_, grb.data() + s * vocab_, 1, vocab_, g_->tol(),
                   name() + " batch decode b step " + std::to_string(s));
      EXPECT_EQ(argmax(logits.data(), vocab_), ga[s]) << "batch a step " << s;
      EXPECT_EQ(argmax(logits.data() + vocab_, vocab_), gb[s]) << "batch b step " << s;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Synth, GoldenTest,
                         ::testing::Combine(::testing::Values("tiny-kimi-int4", "tiny-kimi-bf16",
                                                              "tiny-dsv3-fp8", "tiny-dsv3-bf16"),
                                            ::testing::ValuesIn(runnable_kernel_tables())),
                         test_util::DashToUnderscoreAndTable());

// ---- REAP statistics from the observer hook vs tools/reference/reap_stats.py ----

struct StatsObserver : ForwardObserver {
  struct Layer {
    std::vector<double> count, gate_sum, reap_sum, ean_sum, ean_sq_sum, max_act;
    double tokens = 0;
  };
  std::map<int64_t, Layer> layers;
  int64_t n_experts_of(int64_t il) const { return n_experts.at(il); }
  std::map<int64_t, int64_t> n_experts;
  bool wants_expert_outputs() const override { return true; }
  void on_moe_layer(const MoeLayerEvent& e) override {
    Layer& L = layers[e.layer];
    const size_t E = size_t(n_experts.at(e.layer));
    if (L.count.empty())
      for (auto* v : {&L.count, &L.gate_sum, &L.reap_sum, &L.ean_sum, &L.ean_sq_sum, &L.max_act})
        v->assign(E, 0.0);
    ASSERT_NE(e.expert_out, nullptr);
    L.tokens += double(e.n_tokens);
    for (int64_t t = 0; t < e.n_tokens; ++t)
      for (int64_t s = 0; s < e.k; ++s) {
        const int32_t j = e.experts[t * e.k + s];
        ASSERT_GE(j, 0);
        ASSERT_LT(size_t(j), E);
        const double g = e.weights[t * e.k + s];
        const float* f = e.expert_out + (t * e.k + s) * e.hidden;
        double sq = 0, amax = 0;
        for (int64_t h = 0; h < e.hidden; ++h)
          sq += double(f[h]) * f[h], amax = std::max(amax, std::fabs(double(f[h])));
        const double norm = std::sqrt(sq);
        L.count[j] += 1;
        L.gate_sum[j] += g;
        L.reap_sum[j] += g * norm;
        L.ean_sum[j] += norm;
        L.ean_sq_sum[j] += sq;
        L.max_act[j] = std::max(L.max_act[j], amax);
      }
  }
};

class ReapGoldenTest : public ::testing::TestWithParam<GoldenParam> {};

TEST_P(ReapGoldenTest, ObserverStatisticsMatchReference) {
  const std::string& golden_name = std::get<0>(GetParam());
  Golden& g = golden(golden_name);
  ASSERT_TRUE(g.error.empty()) << golden_name << ": " << g.error;
  Model& model = golden_model(g, *std::get<1>(GetParam()));
  const fs::path base = fs::path(source_dir()) / "tests" / "golden" / "reap" / golden_name;
  const json meta = read_json(base.string() + ".json");
  ASSERT_EQ(meta.at("fingerprint_sha256"), g.meta.at("fingerprint_sha256"));
  auto file = SafetensorsFile::open(base.string() + ".safetensors");
  const double rel = meta.at("tolerance").at("sums_rel").get<double>();
  StatsObserver obs;
  const ModelConfig& cfg = model.config();
  for (int64_t il = 0; il < cfg.num_hidden_layers; ++il)
    if (cfg.is_moe_layer(il)) obs.n_experts[il] = cfg.n_experts(il);
  model.set_observer(&obs);
  std::vector<float> logits;
  for (const auto& s : meta.at("sequences")) {
    const auto toks = s.get<std::vector<int32_t>>();
    auto seq = model.new_sequence();
    model.forward(*seq, toks, logits);
  }
  model.set_observer(nullptr);
  ASSERT_EQ(obs.layers.size(), obs.n_experts.size());
  for (const auto& [il, L] : obs.layers) {
    const std::string p = "layers." + std::to_string(il) + ".";
    const TensorView tok = file->view(p + "tokens");
    EXPECT_EQ(L.tokens, tok.as<double>()[0]) << p << "tokens";
    const std::pair<const char*, const std::vector<double>*> stats[] = {
        {"count", &L.count},     {"gate_sum", &L.gate_sum},     {"reap_sum", &L.reap_sum},
        {"ean_sum", &L.ean_sum}, {"ean_sq_sum", &L.ean_sq_sum}, {"max_act", &L.max_act}};
    for (const auto& [name, got] : stats) {
      const TensorView v = file->view(p + name);
      ASSERT_EQ(v.dtype, DType::F64);
      ASSERT_EQ(size_t(v.numel()), got->size()) << p << name;
      for (size_t j = 0; j < got->size(); ++j) {
        const double want = v.as<double>()[j];
        if (std::string(name) == "count")
          EXPECT_EQ((*got)[j], want) << p << name << "[" << j << "] (routing differs from the reference)";
        else
          EXPECT_LE(std::fabs((*got)[j] - want), rel * std::max(std::fabs(want), 1e-6))
              << p << name << "[" << j << "]";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Synth, ReapGoldenTest,
                         ::testing::Combine(::testing::Values("tiny-kimi-int4", "tiny-dsv3-fp8"),
                                            ::testing::ValuesIn(runnable_kernel_tables())),
                         test_util::DashToUnderscoreAndTable());

}  // namespace
}  // namespace sickle
