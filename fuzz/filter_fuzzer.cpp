// libFuzzer target: the filter language of batch jobs (pipeline/filter.hpp). Besides
// not crashing, every value must come out as a parameter: the SQL holds exactly one
// $n per parameter and never a quote the input brought.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "runnel/core/error.hpp"
#include "runnel/pipeline/filter.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::map<std::string, std::string> kColumns = {
      {"age", "integer"}, {"name", "text"}, {"wealth", "double precision"}, {"client_id", "bigint"}};
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto filter = runnel::pipeline::CompileFilter(text, kColumns, 1);
    size_t dollars = 0;
    for (char c : filter.sql) dollars += c == '$' ? 1 : 0;
    if (dollars != filter.params.size()) std::abort();
    if (filter.sql.find('\'') != std::string::npos || filter.sql.find(';') != std::string::npos) std::abort();
  } catch (const runnel::Error&) {
  }
  return 0;
}
