// libFuzzer target: ParseValidRecords, the On-Demand reading of a POST's records,
// differentially against the reference (ParseRecords, Validate, GroupRecords) on a
// table with a column of each kind. Besides not crashing: whenever the fast path
// answers, the reference takes the body too and gives the same groups, rows and
// values. The first byte picks the content type (JSON or NDJSON).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "../tests/support/records_reference.hpp"
#include "runnel/server/record_parser.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const runnel::server::RecordSchema schema = runnel::testing::ExampleSchema();
  if (size == 0) return 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const char* content_type = data[0] % 2 == 0 ? "application/json" : "application/x-ndjson";
  const auto fast = runnel::server::ParseValidRecords(body, content_type, schema);
  if (!fast) return 0;
  const auto reference = runnel::testing::ReferenceRecords(body, content_type, schema);
  if (!reference || !(*fast == *reference)) std::abort();
  return 0;
}
