// sickle/base/log.h — minimal leveled logging to stderr, and a progress reporter.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace sickle {

enum class LogLevel { kQuiet = 0, kInfo = 1, kDebug = 2 };
LogLevel log_level();
void set_log_level(LogLevel level);

void log_line(LogLevel level, const std::string& line);

template <typename... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() >= LogLevel::kInfo) log_line(LogLevel::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() >= LogLevel::kDebug)
    log_line(LogLevel::kDebug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void log_warn(fmt::format_string<Args...> f, Args&&... args) {
  log_line(LogLevel::kQuiet, "warning: " + fmt::format(f, std::forward<Args>(args)...));
}

// Progress on stderr: a redrawn bar with rate and ETA on a terminal, plain periodic lines
// (every ~5 s) otherwise. `unit` names what is counted ("tok", "B", "tensors").
class Progress {
 public:
  Progress(std::string label, uint64_t total, std::string unit);
  ~Progress();
  void add(uint64_t n);
  void set(uint64_t done);
  void finish();

 private:
  void draw(bool force);
  std::string label_, unit_;
  uint64_t total_ = 0, done_ = 0;
  bool is_tty_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// Human-readable byte count: "1.50 GiB".
std::string format_bytes(double bytes);
// Parses a byte size: "5GiB", "512MiB", "24GB" (decimal), "2G" (bare K/M/G/T are binary, as dd),
// "1048576". Throws Error naming `what` (e.g. "--shard-size") on anything else.
uint64_t parse_bytes(std::string_view text, std::string_view what);
// Human-readable count: "3.21 B", "14.2 M".
std::string format_count(double n);

}  // namespace sickle
