// sickle/server/metrics.h — the server's Prometheus metrics (text exposition format 0.0.4).
//
// Counters and histograms are updated from the scheduler and HTTP threads; render() takes a
// consistent snapshot under one lock. Names follow vLLM's where one exists (vllm:* ->
// sickle_*), and the same figures are also exported under vLLM's own names (vllm:*, labelled
// model_name as vLLM does), so its Grafana dashboards work unchanged. Label values are escaped, and the label
// sets that clients choose are bounded (the HTTP front end already maps paths that are no route to `other`;
// past kMaxPathLabels distinct paths, new ones count as `other` here too).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace sickle::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double v);
  // Lines `name_bucket{le=...} n`, `name_sum`, `name_count`; `labels` (`k="v",...`) on each.
  void render(std::string& out, const std::string& name, const std::string& help,
              const std::string& labels = {}) const;
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last = +Inf
  uint64_t count_ = 0;
  double sum_ = 0;
};

// Instantaneous scheduler state for gauges.
struct SchedulerGauges {
  int64_t running = 0, waiting = 0;
  uint64_t kv_reserved_bytes = 0, kv_budget_bytes = 0, kv_allocated_bytes = 0;
  int64_t prefix_cache_entries = 0;
};

class Metrics {
 public:
  static constexpr int kMaxPathLabels = 32;

  explicit Metrics(std::string model_name = "sickle");
  void on_http(const std::string& path, int status);
  // A connection closed by the server before a request was served: connection_limit,
  // header_timeout, header_too_large.
  void on_dropped(const std::string& reason);
  void on_prompt(int64_t n_prompt, int64_t n_cached);
  void on_tokens(int64_t n);  // generated tokens of one step
  void on_ttft(double seconds);
  void on_itl(double seconds);
  void on_finished(const std::string& reason, double e2e_seconds);
  // A finished request's reason changed after it was counted (GenHandle::stop after a length end).
  void on_relabelled(const std::string& from, const std::string& to);
  std::string render(const SchedulerGauges& g);

  // Generated tokens per second over the last ~10 s.
  double tokens_per_second();

 private:
  std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> http_;
  std::set<std::string> paths_;  // the path labels in http_
  std::map<std::string, uint64_t> finished_, dropped_;
  uint64_t prompt_tokens_ = 0, cached_prompt_tokens_ = 0, generation_tokens_ = 0;
  Histogram ttft_, itl_, e2e_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, int64_t>> recent_;  // (time, tokens)
  std::chrono::steady_clock::time_point start_;
  std::string model_name_;
};

}  // namespace sickle::server
