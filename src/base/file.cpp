#include "base/file.h"

#include <fstream>
#include <sstream>

#include "base/error.h"

namespace sickle {

std::string read_file(const std::filesystem::path& path, std::string_view what) {
  const std::string label = what.empty() ? path.string() : fmt::format("{} {}", what, path.string());
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail("{}: cannot read (a directory)", label);
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{}: cannot read", label);
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail("{}: read error", label);
  return ss.str();
}

}  // namespace sickle
