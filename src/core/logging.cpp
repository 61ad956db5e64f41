#include "runnel/core/logging.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <string>

#include "runnel/core/error.hpp"

namespace runnel {

void InitLogging(std::string_view level) {
  auto parsed = spdlog::level::from_str(std::string(level));
  // spdlog maps unknown names to "off"; only accept "off" when it was asked for.
  if (parsed == spdlog::level::off && level != "off") {
    throw Error(ErrorCode::Config, "unknown log level '" + std::string(level) +
                                       "' (expected trace, debug, info, warn, error, critical or off)");
  }
  spdlog::drop("runnel");  // allow re-initialisation (tests, embedding)
  auto logger = spdlog::stderr_color_mt("runnel");
  logger->set_pattern("%^[%H:%M:%S.%e %l]%$ %v");
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
}

}  // namespace runnel
