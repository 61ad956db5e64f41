// Parsing the untrusted bodies of API requests: JSON, and the records of a POST
// (one object, an array of objects, or NDJSON). Fuzzed by fuzz/request_body_fuzzer.cpp.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace runnel::server {

constexpr size_t kMaxRecordsPerRequest = 100000;

// Parses `text` as one JSON value. Throws HttpError(400) naming the byte offset
// (`offset_base` + position) of malformed JSON or of invalid UTF-8.
nlohmann::json ParseJson(std::string_view text, size_t offset_base = 0);

// Whether a body of this Content-Type is NDJSON (application/x-ndjson, application/jsonl).
bool IsNdjson(std::string_view content_type);

// The records of a body. NDJSON when `content_type` is application/x-ndjson or
// application/jsonl (blank lines skipped), otherwise JSON: an array gives its
// elements, anything else one record (form-encoded bodies too, as curl -d sends
// JSON; 415 when such a body is not JSON). Records are not checked to be objects.
// Throws HttpError: 400 malformed, 415, 422 no records, 413 more than kMaxRecordsPerRequest.
std::vector<nlohmann::json> ParseRecords(std::string_view body, std::string_view content_type);

// One part of a multipart/form-data body (RFC 7578).
struct FormPart {
  std::string name;          // from Content-Disposition
  std::string filename;      // empty when not a file
  std::string_view content;  // into the parsed body
};

// The parts of a multipart/form-data body whose Content-Type is `content_type`
// (which names the boundary). Throws HttpError(400) naming what is malformed: no
// boundary, a missing delimiter, a part without Content-Disposition or name.
std::vector<FormPart> ParseMultipart(std::string_view body, std::string_view content_type);

// Whether a POST body is one JSON object (the reply then has "id" and "result" too).
bool IsSingleRecord(std::string_view body, std::string_view content_type);

}  // namespace runnel::server
