#include "headless_chromium.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>
#include <vector>

namespace runnel::testing {

bool HeadlessChromium::Available() {
  return std::filesystem::exists(kBinary);
}

HeadlessChromium::HeadlessChromium(const std::string& url, const std::filesystem::path& profile_dir) {
  int commands[2], answers[2];
  if (::pipe2(commands, O_CLOEXEC) != 0 || ::pipe2(answers, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe: " + std::string(std::strerror(errno)));
  const std::string profile = "--user-data-dir=" + profile_dir.string();
  std::vector<std::string> args = {kBinary,          "--headless=new",          "--no-sandbox", "--disable-gpu",
                                   "--no-first-run", "--remote-debugging-pipe", profile,        "about:blank"};
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork: " + std::string(std::strerror(errno)));
  if (pid_ == 0) {  // the child: the pipe ends on fds 3 and 4, output silenced
    ::dup2(commands[0], 3);
    ::dup2(answers[1], 4);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(kBinary, argv.data());
    ::_exit(127);
  }
  ::close(commands[0]);
  ::close(answers[1]);
  to_browser_ = commands[1];
  from_browser_ = answers[0];
  const auto timeout = std::chrono::seconds(30);
  const auto target = Call("Target.createTarget", {{"url", url}}, false, timeout);
  const auto attached =
      Call("Target.attachToTarget", {{"targetId", target["targetId"]}, {"flatten", true}}, false, timeout);
  session_ = attached["sessionId"].get<std::string>();
  // The page loads after createTarget answers; until then its context comes and goes.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    try {
      if (Evaluate("document.readyState === 'complete' && location.href !== 'about:blank'") == true) return;
    } catch (const std::runtime_error&) {
      if (std::chrono::steady_clock::now() > deadline) throw;
    }
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("the page did not load: " + url);
    ::usleep(50'000);
  }
}

HeadlessChromium::~HeadlessChromium() {
  try {
    Call("Browser.close", nlohmann::json::object(), false, std::chrono::seconds(5));
  } catch (const std::exception&) {
  }
  ::close(to_browser_);
  ::close(from_browser_);
  for (int i = 0; i < 50; ++i) {  // up to 5 s to exit, then killed
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
    ::usleep(100'000);
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
}

nlohmann::json HeadlessChromium::Evaluate(const std::string& expression, std::chrono::milliseconds timeout) {
  const auto result = Call(
      "Runtime.evaluate", {{"expression", expression}, {"awaitPromise", true}, {"returnByValue", true}}, true, timeout);
  if (result.contains("exceptionDetails")) throw std::runtime_error("the page threw: " + result.dump());
  return result["result"].value("value", nlohmann::json());
}

nlohmann::json HeadlessChromium::Command(const std::string& method, const nlohmann::json& params) {
  return Call(method, params, true, std::chrono::seconds(30));
}

nlohmann::json HeadlessChromium::Call(const std::string& method, const nlohmann::json& params, bool in_page,
                                      std::chrono::milliseconds timeout) {
  const int id = next_id_++;
  nlohmann::json message = {{"id", id}, {"method", method}, {"params", params}};
  if (in_page) message["sessionId"] = session_;
  const std::string text = message.dump() + '\0';
  for (size_t sent = 0; sent < text.size();) {
    const ssize_t n = ::write(to_browser_, text.data() + sent, text.size() - sent);
    if (n <= 0) throw std::runtime_error("the browser does not take commands");
    sent += static_cast<size_t>(n);
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto answer = nlohmann::json::parse(ReadMessage(deadline), nullptr, false);
    if (!answer.is_object() || answer.value("id", -1) != id) continue;  // an event, or another call's
    if (answer.contains("error")) throw std::runtime_error(method + ": " + answer["error"].dump());
    return answer.value("result", nlohmann::json::object());
  }
}

std::string HeadlessChromium::ReadMessage(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    if (const size_t end = pending_.find('\0'); end != std::string::npos) {
      std::string message = pending_.substr(0, end);
      pending_.erase(0, end + 1);
      return message;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) throw std::runtime_error("the browser did not answer in time");
    pollfd p{from_browser_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[65536];
    const ssize_t n = ::read(from_browser_, buf, sizeof buf);
    if (n <= 0) throw std::runtime_error("the browser closed its pipe");
    pending_.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace runnel::testing
