#include "runnel/server/http_message.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "runnel/core/error.hpp"

namespace runnel::server {

using nlohmann::json;

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

BodyFile::BodyFile(int fd, size_t size) : fd_(fd), size_(size) {
  if (size_ == 0) return;
  data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
  if (data_ == MAP_FAILED) {
    const int err = errno;
    data_ = nullptr;
    ::close(fd_);
    throw Error(ErrorCode::Io, fmt::format("cannot map a spooled body of {} bytes: {}", size, std::strerror(err)));
  }
}

BodyFile::~BodyFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
  ::close(fd_);
}

int BodyFile::OpenSpool(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) return fd;
  // A file system without O_TMPFILE: a named file, unlinked before anyone could use it.
  std::string path = dir + "/runnel-body-XXXXXX";
  fd = ::mkostemp(path.data(), O_CLOEXEC);
  if (fd >= 0) ::unlink(path.c_str());
  return fd;
}

std::optional<std::string_view> HttpRequest::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return std::nullopt;
}

std::string_view HttpRequest::HeaderOr(std::string_view name, std::string_view fallback) const {
  return Header(name).value_or(fallback);
}

std::optional<std::string_view> HttpRequest::Query(std::string_view name) const {
  for (const auto& [key, value] : query) {
    if (key == name) return value;
  }
  return std::nullopt;
}

void Reply(HttpResponse& res, int status, const json& body) {
  res.status = status;
  res.content_type = "application/json";
  res.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  res.body += '\n';  // so that answers printed by curl do not run into the prompt or each other
}

void ReplyError(HttpResponse& res, const HttpError& error) {
  json body = error.details;
  body["error"] = error.message;
  Reply(res, error.status, body);
}

std::optional<size_t> InvalidUtf8At(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t n = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (i + n >= text.size()) return i;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(text[i + k]);
      if ((d & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n + 1;
  }
  return std::nullopt;
}

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes one component and checks it is UTF-8; `where` names it in the error.
std::string DecodeComponent(std::string_view text, bool plus_is_space, const std::string& where) {
  auto decoded = PercentDecode(text, plus_is_space);
  if (!decoded) throw HttpError{400, fmt::format("malformed percent-escape in {}", where)};
  if (auto at = InvalidUtf8At(*decoded))
    throw HttpError{400, fmt::format("invalid UTF-8 in {} at byte {}", where, *at)};
  return std::move(*decoded);
}

}  // namespace

std::optional<std::string> PercentDecode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      const int hi = HexValue(text[i + 1]), lo = HexValue(text[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void ParseTarget(std::string_view target, HttpRequest& req) {
  const auto question = target.find('?');
  req.path = DecodeComponent(target.substr(0, question), false, "the path");
  req.query.clear();
  if (question == std::string_view::npos) return;
  std::string_view rest = target.substr(question + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    std::string name = DecodeComponent(pair.substr(0, eq), true, "a query parameter's name");
    std::string value = eq == std::string_view::npos
                            ? std::string()
                            : DecodeComponent(pair.substr(eq + 1), true, fmt::format("query parameter '{}'", name));
    req.query.emplace_back(std::move(name), std::move(value));
  }
}

}  // namespace runnel::server
