// Headless Chromium (Debian's chromium) driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe: commands on the child's fd 3, answers on its fd 4, each a
// JSON message ended by '\0'), for browser tests that act on a page — click, wait,
// read — beyond what --dump-dom shows. One page per object; not thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace runnel::testing {

class HeadlessChromium {
 public:
  static constexpr const char* kBinary = "/usr/bin/chromium";
  static bool Available();

  // Starts Chromium (profile in `profile_dir`) and opens `url` in a new page. Throws
  // std::runtime_error when Chromium cannot start or answer.
  HeadlessChromium(const std::string& url, const std::filesystem::path& profile_dir);
  ~HeadlessChromium();  // closes the browser
  HeadlessChromium(const HeadlessChromium&) = delete;
  HeadlessChromium& operator=(const HeadlessChromium&) = delete;

  // Evaluates `expression` in the page (a promise is awaited) and returns its value
  // (JSON). Throws std::runtime_error with the page's exception when it throws, or
  // when nothing answers within `timeout`.
  nlohmann::json Evaluate(const std::string& expression, std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Sends a DevTools command to the page (Emulation.setDeviceMetricsOverride, ...) and
  // returns its result. Throws std::runtime_error with the protocol's error.
  nlohmann::json Command(const std::string& method, const nlohmann::json& params);

 private:
  nlohmann::json Call(const std::string& method, const nlohmann::json& params, bool in_page,
                      std::chrono::milliseconds timeout);
  std::string ReadMessage(std::chrono::steady_clock::time_point deadline);

  pid_t pid_ = -1;
  int to_browser_ = -1, from_browser_ = -1;
  int next_id_ = 1;
  std::string session_;
  std::string pending_;  // bytes read past the last message
};

}  // namespace runnel::testing
