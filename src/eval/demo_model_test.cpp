// Regression guard for the engine on the shipped demo models: sickle's perplexity on a fixed
// slice of the held-out test split must stay within a stated band of the figure the training
// script computed in PyTorch (models/<name>/eval_reference.json): brown-kimi (English prose,
// tools/train_demo_model.py) and tri-kimi (English, code, German; tools/train_domains_model.py).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace {
namespace fs = std::filesystem;

// Runs `cmd`, which must exit 0, and parses its stdout as JSON.
nlohmann::json run_json(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr) << cmd;
  if (!p) return nlohmann::json::object();
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << cmd << "\n" << out;
  return nlohmann::json::parse(out);
}

void check_against_torch(const char* name) {
  const char* src = std::getenv("SICKLE_SOURCE_DIR");
  fs::path root = src ? src : SICKLE_SOURCE_DIR;
  fs::path model = root / "models" / name;
  ASSERT_TRUE(fs::exists(model / "eval_reference.json")) << "no demo model in " << model;
  std::ifstream in(model / "eval_reference.json");
  auto ref = nlohmann::json::parse(in);
  // The reference windows: 127 test tokens per line. Torch scored them with [BOS] in front;
  // `--format tokens` adds none, so the first prediction of each window is dropped on both
  // sides ("without_first_prediction_of_each_window"), leaving the same 126 targets.
  const auto& r = ref.at("bos").at("without_first_prediction_of_each_window");
  double torch_ppl = r.at("ppl_int4").get<double>();
  int64_t n_pred = r.at("n_predictions").get<int64_t>();
  std::string windows = (model / "data/test_ref_windows.jsonl").string();
  const char* b = std::getenv("SICKLE_BIN");
  const std::string sickle = b ? b : SICKLE_BIN;
  auto j = run_json(sickle + " -q eval -m " + model.string() + " --data " + windows +
                    " --format tokens --no-pack --seq-len 128 --json 2>/dev/null");
  EXPECT_EQ(j["tokens"].get<int64_t>(), n_pred);
  double ppl = j["ppl"].get<double>();
  // Band: 2%. The remaining difference is the missing [BOS] context (measured 0.3%) plus
  // bf16/int4 rounding order between torch and sickle's kernels.
  EXPECT_NEAR(ppl / torch_ppl, 1.0, 0.02) << "sickle " << ppl << " vs torch " << torch_ppl;
  // Experts are used: none dead on the test split.
  EXPECT_EQ(j["dead_experts"].get<double>(), 0.0);
  // Next-line exact match against the training script's own implementation of the metric, on
  // held-out code: the same lines (a property of the tokens alone) and nearly the same exact
  // ones (an argmax may flip where torch and sickle round differently).
  if (ref.contains("line_em_code")) {
    const auto& le = ref["line_em_code"];
    auto c = run_json(sickle + " -q eval -m " + model.string() + " --data " +
                      (model / "data/code_ref_windows.jsonl").string() +
                      " --format tokens --no-pack --seq-len 128 --json 2>/dev/null");
    EXPECT_EQ(c["lines"].get<double>(), le.at("lines").get<double>());
    EXPECT_NEAR(c["line_em"].get<double>(), le.at("line_em").get<double>(), 0.02);
  }
}

TEST(DemoModel, PerplexityOnFixedTestWindowsMatchesTorchWithinBand) { check_against_torch("brown-kimi"); }

TEST(DomainsModel, PerplexityOnFixedTestWindowsMatchesTorchWithinBand) { check_against_torch("tri-kimi"); }

}  // namespace
