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
  EXPECT_NE(t.find(R"(sickle_http_requests_total{path="/a\"b\\c\nfake_series 1",status="200"} 1)"), std::string::npos) << t;
  EXPECT_NE(t.find(R"(sickle_request_success_total{finished_reason="x\"\n"} 1)"), std::string::npos) << t;
  EXPECT_EQ(t.find("\nfake_series"), std::string::npos) << t;
  for (size_t at = 0; (at = t.find('\n', at)) != std::string::npos; ++at) {  // every line a comment or a sample
    if (at + 1 < t.size()) {
      EXPECT_TRUE(t[at + 1] == '#' || t.compare(at + 1, 7, "sickle_") == 0) << t.substr(at + 1, 40);
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
                   std::to_string(10000 - Metrics::kMaxPathLabels)), std::string::npos) << t.substr(0, 2000);
  EXPECT_LT(t.size(), size_t(64) << 10);
}

}  // namespace
}  // namespace sickle::server
