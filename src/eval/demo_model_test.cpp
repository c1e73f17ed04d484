// Regression guard for the engine on the shipped demo model: sickle's perplexity on a fixed
// slice of the held-out test split must stay within a stated band of the figure the training
// script computed in PyTorch (models/brown-kimi/eval_reference.json).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace {
namespace fs = std::filesystem;

TEST(DemoModel, PerplexityOnFixedTestWindowsMatchesTorchWithinBand) {
  const char* src = std::getenv("SICKLE_SOURCE_DIR");
  fs::path root = src ? src : SICKLE_SOURCE_DIR;
  fs::path model = root / "models/brown-kimi";
  if (!fs::exists(model / "eval_reference.json")) GTEST_SKIP() << "no demo model in " << model;
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
  std::string cmd = std::string(b ? b : SICKLE_BIN) + " -q eval -m " + model.string() + " --data " + windows +
                    " --format tokens --no-pack --seq-len 128 --json 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["tokens"].get<int64_t>(), n_pred);
  double ppl = j["ppl"].get<double>();
  // Band: 2%. The remaining difference is the missing [BOS] context (measured 0.3%) plus
  // bf16/int4 rounding order between torch and sickle's kernels.
  EXPECT_NEAR(ppl / torch_ppl, 1.0, 0.02) << "sickle " << ppl << " vs torch " << torch_ppl;
  // Experts are used: none dead on the test split.
  EXPECT_EQ(j["dead_experts"].get<double>(), 0.0);
}

}  // namespace
