#include "base/log.h"

#include "base/error.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <mutex>

namespace sickle {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_mu;
}  // namespace

LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }
void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }

void log_line(LogLevel, const std::string& line) {
  std::lock_guard<std::mutex> lock(g_mu);
  std::fprintf(stderr, "%s\n", line.c_str());
}

std::string format_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) {
    b /= 1024.0;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.2f} {}", b, units[u]);
}

uint64_t parse_bytes(std::string_view text, std::string_view what) {
  std::string s(text);
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  std::string num = s.substr(0, i), unit = s.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  if (num.empty() || std::count(num.begin(), num.end(), '.') > 1)
    fail("{}: '{}' is not a size (examples: 5GiB, 512MiB, 24GB, 1048576)", what, text);
  double v = std::stod(num);
  for (auto& ch : unit) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  static const std::pair<const char*, double> kUnits[] = {{"", 1},
                                                          {"b", 1},
                                                          {"k", 1024.0},
                                                          {"kib", 1024.0},
                                                          {"kb", 1e3},
                                                          {"m", 1048576.0},
                                                          {"mib", 1048576.0},
                                                          {"mb", 1e6},
                                                          {"g", 1073741824.0},
                                                          {"gib", 1073741824.0},
                                                          {"gb", 1e9},
                                                          {"t", 1099511627776.0},
                                                          {"tib", 1099511627776.0},
                                                          {"tb", 1e12}};
  for (const auto& [name, mult] : kUnits) {
    if (unit == name) {
      double bytes = v * mult;
      if (!(bytes < 1.8e19)) fail("{}: '{}' is too large", what, text);
      return uint64_t(bytes + 0.5);
    }
  }
  fail("{}: '{}' has an unknown unit '{}' (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", what, text, unit);
}

std::string format_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f} B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f} M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.2f} K", n / 1e3);
  return fmt::format("{:.0f}", n);
}

Progress::Progress(std::string label, uint64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total) {
  is_tty_ = isatty(STDERR_FILENO) != 0;
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

void Progress::add(uint64_t n) { set(done_ + n); }

void Progress::set(uint64_t done) {
  done_ = done;
  draw(false);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (log_level() < LogLevel::kInfo) return;
  draw(true);
  if (is_tty_) std::fprintf(stderr, "\n");
}

void Progress::draw(bool force) {
  if (log_level() < LogLevel::kInfo) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  if (!force && since < (is_tty_ ? 0.1 : 5.0)) return;
  last_draw_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  double frac = total_ ? std::min(1.0, double(done_) / double(total_)) : 0.0;
  double eta = (rate > 0 && total_ > done_) ? (total_ - done_) / rate : 0.0;
  std::string rate_s = unit_ == "B" ? format_bytes(rate) + "/s" : fmt::format("{:.1f} {}/s", rate, unit_);
  std::lock_guard<std::mutex> lock(g_mu);
  if (is_tty_) {
    int width = 30, filled = static_cast<int>(frac * width);
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %5.1f%% %s  ETA %.0fs   ", label_.c_str(), bar.c_str(), frac * 100,
                 rate_s.c_str(), eta);
  } else {
    std::fprintf(stderr, "%s: %llu/%llu %s (%.1f%%), %s, ETA %.0fs\n", label_.c_str(),
                 (unsigned long long)done_, (unsigned long long)total_, unit_.c_str(), frac * 100,
                 rate_s.c_str(), eta);
  }
  std::fflush(stderr);
}

}  // namespace sickle
