// What a call throws, for tests that check error messages word for word.
#pragma once

#include <functional>
#include <string>

#include "runnel/core/error.hpp"

namespace runnel::testing {

// The message of the runnel::Error `f` throws, or "" when it throws none.
inline std::string MessageOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace runnel::testing
