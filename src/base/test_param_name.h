// sickle/base/test_param_name.h — for tests only: a gtest parameter-name generator for string
// parameters such as preset names ("tiny-kimi" -> "tiny_kimi"; gtest names allow no '-').
#pragma once

#include <algorithm>
#include <string>

namespace sickle::test_util {

struct DashToUnderscore {
  template <class ParamInfo>
  std::string operator()(const ParamInfo& info) const {
    std::string s = info.param;
    std::replace(s.begin(), s.end(), '-', '_');
    return s;
  }
};

}  // namespace sickle::test_util
