// sickle/base/test_param_name.h — for tests only: a gtest parameter-name generator for string
// parameters such as preset names ("tiny-kimi" -> "tiny_kimi"; gtest names allow no '-').
#pragma once

#include <algorithm>
#include <string>
#include <tuple>

namespace sickle::test_util {

struct DashToUnderscore {
  template <class ParamInfo>
  std::string operator()(const ParamInfo& info) const {
    std::string s = info.param;
    std::replace(s.begin(), s.end(), '-', '_');
    return s;
  }
};

// For (string, kernel table) parameters: "tiny-kimi" on the avx2 table -> "tiny_kimi_avx2" (any
// second element with a `name` member works).
struct DashToUnderscoreAndTable {
  template <class ParamInfo>
  std::string operator()(const ParamInfo& info) const {
    std::string s = std::string(std::get<0>(info.param)) + "_" + std::get<1>(info.param)->name;
    std::replace(s.begin(), s.end(), '-', '_');
    return s;
  }
};

}  // namespace sickle::test_util
