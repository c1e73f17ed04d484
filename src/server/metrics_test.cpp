// Tests of the Prometheus exposition: label values escaped, label sets bounded.
#include "server/metrics.h"

#include <gtest/gtest.h>

#include <set>

namespace sickle::server {
namespace {

int count_lines_with(const std::string& text, const std::string& prefix) {
  int n = 0;
  for (size_t at = 0; (at = text.find("\n" + prefix, at)) != std::string::npos; ++at) ++n;
  return n;
}

// A label value carries `\`, `"` and newlines escaped (text format 0.0.4), so it cannot end
// its label or its line and inject series.
TEST(Metrics, LabelValuesEscaped) {
  Metrics m;
  m.on_http("/a\"b\\c\nfake_series 1", 200);
  m.on_finished("x\"\n", 0.1);
  const std::string t = m.render({});
  EXPECT_NE(t.find(R"(sickle_http_requests_total{path="/a\"b\\c\nfake_series 1",status="200"} 1)"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find(R"(sickle_request_success_total{finished_reason="x\"\n"} 1)"), std::string::npos) << t;
  EXPECT_EQ(t.find("\nfake_series"), std::string::npos) << t;
  for (size_t at = 0; (at = t.find('\n', at)) != std::string::npos;
       ++at) {  // every line a comment or a sample
    if (at + 1 < t.size()) {
      EXPECT_TRUE(t[at + 1] == '#' || t.compare(at + 1, 7, "sickle_") == 0 ||
                  t.compare(at + 1, 5, "vllm:") == 0)
          << t.substr(at + 1, 40);
    }
  }
}

// However many distinct paths are counted, the per-path series stay bounded: past the bound
// new paths count as `other`.
TEST(Metrics, PathLabelsBounded) {
  Metrics m;
  for (int i = 0; i < 10000; ++i) m.on_http("/p" + std::to_string(i), 404);
  m.on_http("/p0", 404);  // a path already counted keeps its own series
  const std::string t = m.render({});
  const int series = count_lines_with(t, "sickle_http_requests_total{");
  EXPECT_LE(series, Metrics::kMaxPathLabels + 1) << series;
  EXPECT_NE(t.find(R"(sickle_http_requests_total{path="/p0",status="404"} 2)"), std::string::npos);
  EXPECT_NE(t.find(R"(sickle_http_requests_total{path="other",status="404"} )" +
                   std::to_string(10000 - Metrics::kMaxPathLabels)),
            std::string::npos)
      << t.substr(0, 2000);
  EXPECT_LT(t.size(), size_t(64) << 10);
}

// vLLM's names next to sickle's, with the same values, labelled model_name (its dashboards
// select on it); histograms keep their labels on every bucket.
TEST(Metrics, VllmNamesMirrorSickles) {
  Metrics m("kimi \"x\"");
  m.on_prompt(10, 4);
  m.on_tokens(7);
  m.on_ttft(0.03);
  m.on_finished("stop", 0.2);
  m.on_finished("length", 0.4);
  SchedulerGauges g;
  g.running = 2;
  g.waiting = 3;
  const std::string t = m.render(g);
  const std::string ml = R"(model_name="kimi \"x\"")";
  for (const std::string& line :
       {"vllm:num_requests_running{" + ml + "} 2", "vllm:num_requests_waiting{" + ml + "} 3",
        "vllm:prompt_tokens_total{" + ml + "} 10", "vllm:generation_tokens_total{" + ml + "} 7",
        "vllm:prefix_cache_hits_total{" + ml + "} 4",
        "vllm:request_success_total{finished_reason=\"stop\"," + ml + "} 1",
        "vllm:request_success_total{finished_reason=\"length\"," + ml + "} 1",
        "vllm:time_to_first_token_seconds_bucket{" + ml + ",le=\"0.04\"} 1",
        "vllm:time_to_first_token_seconds_count{" + ml + "} 1",
        "vllm:e2e_request_latency_seconds_count{" + ml + "} 2", std::string("sickle_num_requests_running 2")})
    EXPECT_NE(t.find("\n" + line + "\n"), std::string::npos) << line << "\n" << t;
}

}  // namespace
}  // namespace sickle::server
