#include "apps/cli/options.h"

namespace sickle::cli {

std::vector<OutputInput> with_inputs(std::vector<OutputInput> inputs, std::string_view what,
                                     const std::vector<std::string>& files) {
  for (const auto& f : files) inputs.push_back({std::string(what), f});
  return inputs;
}

}  // namespace sickle::cli
