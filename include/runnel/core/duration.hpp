// Durations as users write them in flags and pipeline files: "45s", "30m", "12h", "90d".
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace runnel {

// A positive whole number (at most 100,000,000) and a unit s, m, h or d; else nullopt.
std::optional<std::chrono::seconds> ParseDuration(std::string_view text);

// The shortest form ParseDuration reads back: 3600 s -> "1h", 90 s -> "90s".
std::string FormatDuration(std::chrono::seconds duration);

}  // namespace runnel
