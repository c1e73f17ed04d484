// sickle/vision/data_url.cpp — see data_url.h.
#include "vision/data_url.h"

#include <cctype>
#include <optional>

#include "base/error.h"
#include "tokenizer/tokenizer.h"  // base64_decode

namespace sickle::vision {

namespace {

bool starts_with_nocase(std::string_view s, std::string_view lower_prefix) {
  if (s.size() < lower_prefix.size()) return false;
  for (size_t i = 0; i < lower_prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != lower_prefix[i]) return false;
  return true;
}

constexpr const char* kExpected = "expected a data:image/png;base64,... or data:image/jpeg;base64,... URL";

}  // namespace

bool is_data_url(std::string_view url) { return starts_with_nocase(url, "data:"); }

std::string decode_data_url(std::string_view url, const std::string& what) {
  if (!is_data_url(url)) fail("{}: {}, not one starting '{}'", what, kExpected, url.substr(0, 16));
  const size_t comma = url.find(',');
  if (comma == std::string_view::npos) fail("{}: {} (no ',' before the data)", what, kExpected);
  // data:<media type>[;param=value]...;base64 — the encoding is the last ';' field.
  const std::string_view spec = url.substr(5, comma - 5);
  const std::string_view type = spec.substr(0, spec.find(';'));
  if (!starts_with_nocase(type, "image/"))
    fail("{}: {}, not one of type '{}'", what, kExpected, type.empty() ? "text/plain (the default)" : type);
  const size_t semi = spec.rfind(';');
  if (semi == std::string_view::npos || spec.size() - semi != 7 || !starts_with_nocase(spec.substr(semi), ";base64"))
    fail("{}: {} (only base64 data: URLs are read)", what, kExpected);
  std::string payload;
  for (char c : url.substr(comma + 1))
    if (!std::isspace(static_cast<unsigned char>(c))) payload.push_back(c);
  // base64_decode takes any run of its alphabet; a run of 4k + 1 characters cannot be base64
  // (one leftover character carries 6 of a byte's 8 bits).
  std::optional<std::string> bytes = base64_decode(payload);
  const size_t n_data = payload.find('=') == std::string::npos ? payload.size() : payload.find('=');
  if (!bytes || n_data % 4 == 1) fail("{}: the data: URL's payload is not valid base64", what);
  if (bytes->empty()) fail("{}: the data: URL has no data after ','", what);
  return std::move(*bytes);
}

}  // namespace sickle::vision
