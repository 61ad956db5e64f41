// Process-wide logging on top of spdlog. Library code logs through spdlog's default
// logger; faces (cli/, server/) decide the level and the sink.
#pragma once

#include <string_view>

namespace runnel {

// Sets the default logger to stderr with the given level name: trace, debug, info,
// warn, error, critical or off. Throws Error(Config) naming the bad level.
// Thread safety: call once at start-up, before other threads log.
void InitLogging(std::string_view level);

}  // namespace runnel
