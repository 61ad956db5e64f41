#include "runnel/server/request_body.hpp"

#include <fmt/format.h>

#include "runnel/server/http_message.hpp"

namespace runnel::server {

using nlohmann::json;

bool IsNdjson(std::string_view content_type) {
  return content_type.starts_with("application/x-ndjson") || content_type.starts_with("application/jsonl");
}

namespace {

std::vector<json> ParseNdjson(std::string_view body) {
  std::vector<json> records;
  size_t start = 0;
  while (start < body.size() && records.size() <= kMaxRecordsPerRequest) {
    size_t end = body.find('\n', start);
    if (end == std::string_view::npos) end = body.size();
    const std::string_view line = body.substr(start, end - start);
    if (line.find_first_not_of(" \t\r") != std::string_view::npos) records.push_back(ParseJson(line, start));
    start = end + 1;
  }
  return records;
}

}  // namespace

// The parser refuses any byte that is not UTF-8, so the text is scanned for one only
// when parsing failed, to name it when it came first.
json ParseJson(std::string_view text, size_t offset_base) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    const size_t at_error = e.byte > 0 ? e.byte - 1 : 0;
    if (auto at = InvalidUtf8At(text); at && *at <= at_error) {
      throw HttpError{
          400, fmt::format("invalid UTF-8 in the body at byte {}", offset_base + *at), {{"offset", offset_base + *at}}};
    }
    const size_t offset = offset_base + at_error;
    throw HttpError{400, fmt::format("malformed JSON at byte {}: {}", offset, e.what()), {{"offset", offset}}};
  } catch (const json::exception& e) {
    // A number past double's range (1e400) is out_of_range, not a parse error.
    throw HttpError{400, fmt::format("unreadable JSON{}: {}",
                                     offset_base > 0 ? fmt::format(" at byte {}", offset_base) : "", e.what())};
  }
}

// curl -d sends application/x-www-form-urlencoded unless told otherwise: such a body
// is read as the JSON it usually is, and refused with 415 when it is not.
json ParseJsonBody(std::string_view body, std::string_view content_type) {
  if (!content_type.starts_with("application/x-www-form-urlencoded") && !content_type.starts_with("multipart/"))
    return ParseJson(body, 0);
  try {
    return ParseJson(body, 0);
  } catch (const HttpError& e) {
    throw HttpError{415, fmt::format("a {} body that is not JSON ({}): send Content-Type: application/json or "
                                     "application/x-ndjson (curl -H 'Content-Type: application/json')",
                                     content_type.substr(0, content_type.find(';')), e.message)};
  }
}

std::vector<json> ParseRecords(std::string_view body, std::string_view content_type) {
  std::vector<json> records;
  if (IsNdjson(content_type)) {
    records = ParseNdjson(body);
  } else {
    json parsed = ParseJsonBody(body, content_type);
    if (parsed.is_array()) {
      records = std::move(parsed.get_ref<json::array_t&>());
    } else {
      records.push_back(std::move(parsed));
    }
  }
  if (records.empty()) throw HttpError{422, "the body holds no records"};
  if (records.size() > kMaxRecordsPerRequest)
    throw HttpError{413, fmt::format("more than {} records in one request", kMaxRecordsPerRequest)};
  return records;
}

namespace {

// The value of parameter `name` in a header value ("multipart/form-data;
// boundary=xyz", "form-data; name=\"file\""), unquoted; nullopt when absent.
std::optional<std::string> HeaderParam(std::string_view value, std::string_view name) {
  size_t at = 0;
  while ((at = value.find(';', at)) != std::string_view::npos) {
    ++at;
    while (at < value.size() && value[at] == ' ') ++at;
    if (!EqualsIgnoreCase(value.substr(at, name.size()), name) || value.substr(at + name.size(), 1) != "=") continue;
    std::string_view rest = value.substr(at + name.size() + 1);
    if (rest.starts_with('"')) {
      const auto end = rest.find('"', 1);
      if (end == std::string_view::npos) return std::nullopt;
      return std::string(rest.substr(1, end - 1));
    }
    return std::string(rest.substr(0, rest.find(';')));
  }
  return std::nullopt;
}

// One part: headers up to an empty line, then the content.
FormPart ParsePart(std::string_view part, size_t index) {
  const auto blank = part.find("\r\n\r\n");
  if (blank == std::string_view::npos) throw HttpError{400, fmt::format("multipart part {} has no header end", index)};
  FormPart out;
  bool disposition = false;
  std::string_view headers = part.substr(0, blank);
  while (!headers.empty()) {
    const auto eol = headers.find("\r\n");
    const std::string_view line = headers.substr(0, eol);
    headers = eol == std::string_view::npos ? std::string_view() : headers.substr(eol + 2);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || !EqualsIgnoreCase(line.substr(0, colon), "Content-Disposition")) continue;
    disposition = true;
    out.name = HeaderParam(line.substr(colon + 1), "name").value_or("");
    out.filename = HeaderParam(line.substr(colon + 1), "filename").value_or("");
  }
  if (!disposition || out.name.empty())
    throw HttpError{400, fmt::format("multipart part {} has no Content-Disposition with a name", index)};
  out.content = part.substr(blank + 4);
  return out;
}

}  // namespace

std::vector<FormPart> ParseMultipart(std::string_view body, std::string_view content_type) {
  const auto boundary = HeaderParam(content_type, "boundary");
  if (!boundary || boundary->empty() || boundary->size() > 200)
    throw HttpError{400, "multipart/form-data without a boundary of 1..200 characters"};
  const std::string delimiter = "--" + *boundary;
  size_t at = body.find(delimiter);
  if (at == std::string_view::npos) throw HttpError{400, "multipart body without its boundary"};
  std::vector<FormPart> parts;
  while (true) {
    at += delimiter.size();
    if (body.substr(at, 2) == "--") return parts;  // the closing delimiter
    if (body.substr(at, 2) != "\r\n") throw HttpError{400, "multipart boundary not followed by CRLF"};
    at += 2;
    const auto next = body.find("\r\n" + delimiter, at);
    if (next == std::string_view::npos) throw HttpError{400, "multipart body without its closing boundary"};
    parts.push_back(ParsePart(body.substr(at, next - at), parts.size()));
    at = next + 2;
  }
}

bool IsSingleRecord(std::string_view body, std::string_view content_type) {
  const auto first = body.find_first_not_of(" \t\r\n");
  return first != std::string_view::npos && body[first] == '{' && !IsNdjson(content_type);
}

}  // namespace runnel::server
