// sickle/base/utf8.h — UTF-8 encoding of one code point, shared by the template engine's
// string escapes and case mapping and the grammar's regex character classes.
#pragma once

#include <cstdint>
#include <string>

namespace sickle {

// Appends the UTF-8 bytes of `cp` (< 0x110000; surrogates are encoded as they are).
inline void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

}  // namespace sickle
