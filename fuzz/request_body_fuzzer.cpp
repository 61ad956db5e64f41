// libFuzzer target: what the HTTP API parses from a client before any handler runs:
// the request target (path and query), the records of a POST (JSON, NDJSON, form)
// and multipart/form-data. The first byte picks the parser. Besides not crashing:
// every failure is an HttpError with a 4xx status, a decoded target is UTF-8, and
// multipart parts lie inside the body.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "runnel/server/http_message.hpp"
#include "runnel/server/request_body.hpp"

using runnel::server::HttpError;

namespace {

void CheckTarget(std::string_view text) {
  runnel::server::HttpRequest req;
  runnel::server::ParseTarget(text, req);
  if (runnel::server::InvalidUtf8At(req.path)) std::abort();
  for (const auto& [name, value] : req.query) {
    if (runnel::server::InvalidUtf8At(name) || runnel::server::InvalidUtf8At(value)) std::abort();
  }
}

void CheckMultipart(std::string_view body) {
  for (const auto& part : runnel::server::ParseMultipart(body, "multipart/form-data; boundary=b")) {
    if (part.content.data() < body.data() || part.content.data() + part.content.size() > body.data() + body.size())
      std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 5) {
      case 0: CheckTarget(text); break;
      case 1: runnel::server::ParseRecords(text, "application/json"); break;
      case 2: runnel::server::ParseRecords(text, "application/x-ndjson"); break;
      case 3: runnel::server::ParseRecords(text, "application/x-www-form-urlencoded"); break;
      default: CheckMultipart(text); break;
    }
  } catch (const HttpError& e) {
    if (e.status < 400 || e.status > 499) std::abort();
  }
  return 0;
}
