#include "model/perf.h"

#include <gtest/gtest.h>

#include "io/config.h"

namespace sickle {
namespace {

TEST(RunFigures, CacheBytesAverageTheDecodeStepsContexts) {
  ModelConfig c;
  c.num_hidden_layers = 2;
  c.kv_lora_rank = 4;
  c.qk_rope_head_dim = 2;  // a cache row: 6 f32 = 24 bytes per layer and position
  // Steps attend to 11, 12, 13, 14 positions: mean 12.5 -> 2 x 24 x 12.5.
  EXPECT_EQ(decode_cache_bytes_per_token(c, 10, 4), 600u);
  EXPECT_EQ(decode_cache_bytes_per_token(c, 0, 1), 48u);
  EXPECT_EQ(decode_cache_bytes_per_token(c, 10, 0), 0u);
}

TEST(RunFigures, FractionCountsWeightsAndCache) {
  RunFigures f;
  f.n_prompt = 8;
  f.prefill_s = 0.5;
  f.n_generated = 10;
  f.decode_s = 1.0;
  f.active_bytes_per_token = 400'000'000;
  f.bandwidth = 15e9;
  const std::string weights_only = format_figures(f, "measured");
  EXPECT_NE(weights_only.find("4.00 GB/s of weights (400.0 MB/token) = 0.27 of 15.0 GB/s measured"),
            std::string::npos)
      << weights_only;
  EXPECT_EQ(weights_only.find("KV cache"), std::string::npos);
  f.cache_bytes_per_token = 100'000'000;
  const std::string both = format_figures(f, "given");
  EXPECT_NE(both.find("4.00 GB/s of weights (400.0 MB/token) + 1.00 GB/s of KV cache (100.0 MB/token) = 0.33 "
                      "of 15.0 GB/s given"),
            std::string::npos)
      << both;
}

}  // namespace
}  // namespace sickle
