#include "base/file.h"

#include <fstream>
#include <sstream>

#include "base/error.h"

namespace sickle {

std::string read_file(const std::filesystem::path& path, std::string_view what) {
  const std::string label = what.empty() ? path.string() : fmt::format("{} {}", what, path.string());
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{}: cannot read", label);
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail("{}: read error", label);
  return ss.str();
}

}  // namespace sickle
