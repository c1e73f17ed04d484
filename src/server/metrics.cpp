// sickle/server/metrics.cpp — see metrics.h.
#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace sickle::server {

namespace {

// A label value in the text format: backslash, double quote and line feed escaped.
std::string label_value(const std::string& v) {
  std::string o;
  o.reserve(v.size());
  for (char c : v) {
    if (c == '\\') o += "\\\\";
    else if (c == '"') o += "\\\"";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

}  // namespace

void Histogram::observe(double v) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();  // le semantics
  ++counts_[i];
  ++count_;
  sum_ += v;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help,
                       const std::string& labels) const {
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  const std::string pre = labels.empty() ? "" : labels + ",";
  const std::string own = labels.empty() ? "" : "{" + labels + "}";
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += fmt::format("{}_bucket{{{}le=\"{}\"}} {}\n", name, pre, bounds_[i], cum);
  }
  out += fmt::format("{}_bucket{{{}le=\"+Inf\"}} {}\n{}_sum{} {}\n{}_count{} {}\n", name, pre, count_, name,
                     own, sum_, name, own, count_);
}

// Bucket bounds as vLLM's (vllm/engine/metrics.py) for time-to-first-token and time per token.
Metrics::Metrics(std::string model_name)
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20,
             40, 80}),
      itl_({0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5, 10}),
      e2e_({0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120, 300}),
      start_(std::chrono::steady_clock::now()),
      model_name_(std::move(model_name)) {}

void Metrics::on_http(const std::string& path, int status) {
  std::lock_guard lk(mu_);
  const bool known =
      paths_.count(path) || (int(paths_.size()) < kMaxPathLabels && paths_.insert(path).second);
  ++http_[{known ? path : "other", status}];
}
void Metrics::on_dropped(const std::string& reason) {
  std::lock_guard lk(mu_);
  ++dropped_[reason];
}
void Metrics::on_prompt(int64_t n_prompt, int64_t n_cached) {
  std::lock_guard lk(mu_);
  prompt_tokens_ += n_prompt;
  cached_prompt_tokens_ += n_cached;
}
void Metrics::on_tokens(int64_t n) {
  std::lock_guard lk(mu_);
  generation_tokens_ += n;
  auto now = std::chrono::steady_clock::now();
  recent_.emplace_back(now, n);
  while (!recent_.empty() && now - recent_.front().first > std::chrono::seconds(10)) recent_.pop_front();
}
void Metrics::on_ttft(double s) {
  std::lock_guard lk(mu_);
  ttft_.observe(s);
}
void Metrics::on_itl(double s) {
  std::lock_guard lk(mu_);
  itl_.observe(s);
}
void Metrics::on_finished(const std::string& reason, double e2e) {
  std::lock_guard lk(mu_);
  ++finished_[reason];
  e2e_.observe(e2e);
}
void Metrics::on_relabelled(const std::string& from, const std::string& to) {
  std::lock_guard lk(mu_);
  auto it = finished_.find(from);
  if (it == finished_.end() || it->second == 0) return;
  --it->second;
  ++finished_[to];
}

double Metrics::tokens_per_second() {
  std::lock_guard lk(mu_);
  auto now = std::chrono::steady_clock::now();
  while (!recent_.empty() && now - recent_.front().first > std::chrono::seconds(10)) recent_.pop_front();
  int64_t n = 0;
  for (auto& [t, k] : recent_) n += k;
  double window = std::min(10.0, std::chrono::duration<double>(now - start_).count());
  return window > 0 ? double(n) / window : 0.0;
}

std::string Metrics::render(const SchedulerGauges& g) {
  double tps = tokens_per_second();
  std::lock_guard lk(mu_);
  std::string o;
  o += "# HELP sickle_http_requests_total HTTP requests by path and status.\n# TYPE "
       "sickle_http_requests_total counter\n";
  for (auto& [k, n] : http_)
    o += fmt::format("sickle_http_requests_total{{path=\"{}\",status=\"{}\"}} {}\n", label_value(k.first),
                     k.second, n);
  o += "# HELP sickle_http_dropped_connections_total Connections closed before a request was served, by "
       "reason.\n"
       "# TYPE sickle_http_dropped_connections_total counter\n";
  for (auto& [k, n] : dropped_)
    o += fmt::format("sickle_http_dropped_connections_total{{reason=\"{}\"}} {}\n", label_value(k), n);
  o += "# HELP sickle_request_success_total Finished generations by finish reason.\n# TYPE "
       "sickle_request_success_total counter\n";
  for (auto& [k, n] : finished_)
    o += fmt::format("sickle_request_success_total{{finished_reason=\"{}\"}} {}\n", label_value(k), n);
  o += fmt::format(
      "# HELP sickle_prompt_tokens_total Prompt tokens processed (including prefix-cache hits).\n"
      "# TYPE sickle_prompt_tokens_total counter\nsickle_prompt_tokens_total {}\n",
      prompt_tokens_);
  o += fmt::format(
      "# HELP sickle_prefix_cache_hit_tokens_total Prompt tokens served from the prefix cache.\n"
      "# TYPE sickle_prefix_cache_hit_tokens_total counter\nsickle_prefix_cache_hit_tokens_total {}\n",
      cached_prompt_tokens_);
  o += fmt::format(
      "# HELP sickle_generation_tokens_total Generated tokens.\n"
      "# TYPE sickle_generation_tokens_total counter\nsickle_generation_tokens_total {}\n",
      generation_tokens_);
  o += fmt::format(
      "# HELP sickle_generation_tokens_per_second Generated tokens per second over the last 10 s.\n"
      "# TYPE sickle_generation_tokens_per_second gauge\nsickle_generation_tokens_per_second {:.3f}\n",
      tps);
  o += fmt::format(
      "# HELP sickle_num_requests_running Sequences in the running batch.\n"
      "# TYPE sickle_num_requests_running gauge\nsickle_num_requests_running {}\n",
      g.running);
  o += fmt::format(
      "# HELP sickle_num_requests_waiting Requests waiting to be admitted.\n"
      "# TYPE sickle_num_requests_waiting gauge\nsickle_num_requests_waiting {}\n",
      g.waiting);
  double use = g.kv_budget_bytes ? double(g.kv_reserved_bytes) / double(g.kv_budget_bytes) : 0.0;
  o += fmt::format(
      "# HELP sickle_kv_cache_usage_perc KV cache budget in use (reserved by running sequences and the "
      "prefix cache), 0..1.\n"
      "# TYPE sickle_kv_cache_usage_perc gauge\nsickle_kv_cache_usage_perc {:.6f}\n",
      use);
  o += fmt::format(
      "# HELP sickle_kv_cache_allocated_bytes KV cache bytes allocated.\n"
      "# TYPE sickle_kv_cache_allocated_bytes gauge\nsickle_kv_cache_allocated_bytes {}\n",
      g.kv_allocated_bytes);
  o += fmt::format(
      "# HELP sickle_kv_cache_budget_bytes KV cache budget.\n"
      "# TYPE sickle_kv_cache_budget_bytes gauge\nsickle_kv_cache_budget_bytes {}\n",
      g.kv_budget_bytes);
  o += fmt::format(
      "# HELP sickle_prefix_cache_entries Finished sequences kept for prefix reuse.\n"
      "# TYPE sickle_prefix_cache_entries gauge\nsickle_prefix_cache_entries {}\n",
      g.prefix_cache_entries);
  ttft_.render(o, "sickle_time_to_first_token_seconds",
               "Time from request arrival to its first generated token.");
  itl_.render(o, "sickle_inter_token_latency_seconds",
              "Time between consecutive generated tokens of a request.");
  e2e_.render(o, "sickle_e2e_request_latency_seconds", "Time from request arrival to its last token.");

  // The same figures under vLLM's names (v1 engine), labelled with the served model.
  const std::string ml = fmt::format("model_name=\"{}\"", label_value(model_name_));
  auto one = [&](const char* name, const char* type, const char* help, auto value) {
    o += fmt::format("# HELP {} {}\n# TYPE {} {}\n{}{{{}}} {}\n", name, help, name, type, name, ml, value);
  };
  one("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", g.running);
  one("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", g.waiting);
  one("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
      fmt::format("{:.6f}", use));
  one("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", prompt_tokens_);
  one("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
      generation_tokens_);
  one("vllm:prefix_cache_queries_total", "counter",
      "Prefix cache queries, in terms of number of queried tokens.", prompt_tokens_);
  one("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached tokens.",
      cached_prompt_tokens_);
  o += "# HELP vllm:request_success_total Count of successfully processed requests.\n"
       "# TYPE vllm:request_success_total counter\n";
  for (auto& [k, n] : finished_)
    o += fmt::format("vllm:request_success_total{{finished_reason=\"{}\",{}}} {}\n", label_value(k), ml, n);
  ttft_.render(o, "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", ml);
  itl_.render(o, "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ml);
  itl_.render(o, "vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", ml);
  e2e_.render(o, "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", ml);
  return o;
}

}  // namespace sickle::server
