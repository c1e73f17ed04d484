// End-to-end checks of `sickle eval` on synthetic checkpoints: a fixture whose perplexity is
// known by hand, and --fail-if on good vs deliberately broken checkpoints.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "base/numeric.h"
#include "io/checkpoint.h"
#include "io/test_checkpoint_edit.h"
#include "io/writer.h"

namespace sickle {
namespace {
namespace fs = std::filesystem;

std::string bin() {
  const char* b = std::getenv("SICKLE_BIN");
  return b ? b : SICKLE_BIN;
}

int run(const std::string& cmd, std::string* out = nullptr) {
  std::string full = cmd + " 2>/dev/null";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  std::string s;
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) s.append(buf, n);
  int st = ::pclose(p);
  if (out) *out = s;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

using test_util::copy_with_edits;

class EvalCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("sickle-eval-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    ASSERT_EQ(run(bin() + " synth --preset tiny-kimi --seed 3 -o " + (dir_ / "model").string()), 0);
    std::mt19937 rng(7);
    std::ofstream f(dir_ / "tokens.jsonl");
    for (int d = 0; d < 6; ++d) {
      nlohmann::json toks = nlohmann::json::array();
      for (int i = 0; i < 48; ++i) toks.push_back(int(rng() % 512));
      f << nlohmann::json{{"tokens", toks}}.dump() << "\n";
    }
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string eval_cmd(const fs::path& model, const std::string& extra) {
    return bin() + " eval -m " + model.string() + " --data " + (dir_ / "tokens.jsonl").string() +
           " --format tokens --seq-len 48 --threads 1 " + extra;
  }
  static fs::path dir_;
};
fs::path EvalCli::dir_;

TEST_F(EvalCli, ZeroLmHeadGivesPerplexityEqualToVocabulary) {
  // All logits 0 -> every token has p = 1/V -> perplexity is exactly V whatever the inputs.
  fs::path zero = dir_ / "zero-head";
  auto ck = Checkpoint::open(dir_ / "model");
  std::string head = ck->names().lm_head();
  copy_with_edits(
      dir_ / "model", zero,
      {{head, [](const TensorView& v) { return std::vector<std::byte>(v.nbytes(), std::byte{0}); }}});
  std::string out;
  ASSERT_EQ(run(eval_cmd(zero, "--json"), &out), 0) << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_NEAR(j["ppl"].get<double>(), double(ck->config().vocab_size), 1e-6 * ck->config().vocab_size);
  EXPECT_EQ(j["tokens"].get<int64_t>(), 6 * 47);  // 6 windows of 48 tokens score 47 each
}

TEST_F(EvalCli, SelfComparisonAgreesPerfectlyAndPassesGates) {
  fs::path m = dir_ / "model";
  std::string out;
  ASSERT_EQ(run(eval_cmd(m, "--teacher " + m.string() +
                                " --json --fail-if 'kl>1e-6,top1<0.999,ppl_ratio>1.000001'"),
                &out),
            0)
      << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_NEAR(j["kl"].get<double>(), 0.0, 1e-9);
  EXPECT_EQ(j["top1"].get<double>(), 1.0);
  EXPECT_TRUE(j["pass"].get<bool>());
}

TEST_F(EvalCli, GateFiresOnRouterRowsThatNoLongerMatchTheirExperts) {
  // The classic broken prune: a gate whose rows are in a different order than the experts.
  fs::path broken = dir_ / "scrambled-gate";
  auto ck = Checkpoint::open(dir_ / "model");
  std::map<std::string, std::function<std::vector<std::byte>(const TensorView&)>> edits;
  for (int64_t il = 0; il < ck->config().num_hidden_layers; ++il) {
    if (!ck->config().is_moe_layer(il)) continue;
    edits[ck->names().layer(il, "mlp.gate.weight")] = [](const TensorView& v) {
      size_t rows = size_t(v.shape[0]), row_bytes = v.nbytes() / rows;
      std::vector<std::byte> b(v.nbytes());
      for (size_t r = 0; r < rows; ++r)
        std::memcpy(b.data() + r * row_bytes, v.data + (rows - 1 - r) * row_bytes, row_bytes);
      return b;
    };
  }
  copy_with_edits(dir_ / "model", broken, edits);
  std::string gates = "--fail-if 'kl>0.01,top1<0.9'";
  std::string out;
  EXPECT_EQ(run(eval_cmd(broken, "--teacher " + (dir_ / "model").string() + " --json " + gates), &out), 2)
      << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_FALSE(j["pass"].get<bool>());
  EXPECT_GT(j["kl"].get<double>(), 0.01);
  // The same gates pass on the intact model.
  EXPECT_EQ(run(eval_cmd(dir_ / "model", "--teacher " + (dir_ / "model").string() + " " + gates)), 0);
}

TEST_F(EvalCli, NanInAnExpertScaleIsBrokenEvenWithoutGates) {
  fs::path nan_model = dir_ / "nan-scale";
  auto ck = Checkpoint::open(dir_ / "model");
  int64_t il = ck->config().first_k_dense_replace;
  std::string scale = ck->names().expert(il, 0, "down_proj") + ".weight_scale";
  ASSERT_TRUE(ck->has(scale));
  copy_with_edits(dir_ / "model", nan_model, {{scale, [](const TensorView& v) {
                                                 std::vector<std::byte> b(v.data, v.data + v.nbytes());
                                                 uint16_t nan = 0x7fc0;
                                                 std::memcpy(b.data(), &nan, 2);
                                                 return b;
                                               }}});
  std::string out;
  EXPECT_EQ(run(eval_cmd(nan_model, ""), &out), 2) << out;
  EXPECT_NE(out.find("weight_scale"), std::string::npos) << out;
}

TEST_F(EvalCli, BadGateIsAnErrorNotAPass) {
  EXPECT_EQ(run(eval_cmd(dir_ / "model", "--fail-if 'perplexity>3'")), 1);
}

}  // namespace
}  // namespace sickle
