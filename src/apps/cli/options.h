// sickle/apps/cli/options.h — what several commands share: the inputs an output is checked
// against (io/output_path.h).
#pragma once

#include <CLI/CLI.hpp>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "io/output_path.h"

namespace sickle::cli {

// Appends `files`, each named `what` (e.g. "--data file"), to the inputs for check_output.
std::vector<OutputInput> with_inputs(std::vector<OutputInput> inputs, std::string_view what,
                                     const std::vector<std::string>& files);

}  // namespace sickle::cli
