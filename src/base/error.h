// sickle/base/error.h — errors for untrusted input, CHECK for broken invariants.
//
// Habit 6 of ../shared/design/style.md: untrusted bytes (files, HTTP bodies, flags) get an
// Error with context (file, tensor, field, expected vs actual); internal invariants use
// SICKLE_CHECK, which is always on and aborts.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace sickle {

// Thrown for any user-facing failure: bad file, bad config, bad flag, I/O error.
// The message is complete on its own (it names the file/tensor/field at fault).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

template <typename... Args>
[[noreturn]] inline void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

[[noreturn]] void check_failed(const char* expr, const char* file, int line, const std::string& msg);

}  // namespace sickle

// Always-on invariant check (not for user input: use sickle::fail for that).
#define SICKLE_CHECK(cond, ...)                                                                    \
  do {                                                                                             \
    if (!(cond)) ::sickle::check_failed(#cond, __FILE__, __LINE__, ::fmt::format("" __VA_ARGS__)); \
  } while (0)
