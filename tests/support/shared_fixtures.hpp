// The fixtures in ../shared (real models and reference results made by other tools).
// A fresh clone may not have them: tests skip with a message, except under CI=true,
// where their absence is a failure.
#pragma once

#include <gtest/gtest.h>

#include "shared_paths.hpp"

// Use at the top of a test body that needs ../shared.
#define RUNNEL_REQUIRE_SHARED()                                                                        \
  do {                                                                                                 \
    if (!std::filesystem::exists(::runnel::testing::SharedDir() / "README.md")) {                      \
      if (::runnel::testing::InCi()) {                                                                 \
        FAIL() << "CI=true but the shared fixtures are missing at " << ::runnel::testing::SharedDir(); \
      }                                                                                                \
      GTEST_SKIP() << "shared fixtures not found at " << ::runnel::testing::SharedDir()                \
                   << " (clone them beside the repository or set RUNNEL_SHARED_DIR)";                  \
    }                                                                                                  \
  } while (0)
