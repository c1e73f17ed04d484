// sickle/base/file.h — a whole small file (configs, templates, request files) as a string.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace sickle {

// The file's bytes. An Error naming the file (after `what`, e.g. the flag that gave it, when
// not empty) if it cannot be opened or read.
std::string read_file(const std::filesystem::path& path, std::string_view what = {});

}  // namespace sickle
