// Minimal CSV reading and writing (RFC 4180 quoting, any one-byte delimiter, a UTF-8
// byte-order mark is skipped). Streaming: one record at a time.
#pragma once

#include <istream>
#include <string>
#include <string_view>
#include <vector>

namespace runnel {

class CsvReader {
 public:
  CsvReader(std::istream& in, char delimiter) : in_(in), delimiter_(delimiter) {}

  // Reads the next record into `fields`; false at end of input. An unterminated quote
  // yields the rest of the input as the last field and sets malformed().
  bool Next(std::vector<std::string>& fields);
  // 1-based line number where the last record started.
  size_t line() const { return record_line_; }
  bool malformed() const { return malformed_; }

 private:
  std::istream& in_;
  char delimiter_;
  size_t line_ = 1;
  size_t record_line_ = 0;
  bool first_ = true;
  bool malformed_ = false;
};

// Appends one field, quoted when it holds the delimiter, a quote or a line break.
void AppendCsvField(std::string& out, std::string_view field, char delimiter);

// Splits `text` at every `delimiter`, without quoting: "a,,b" -> {"a", "", "b"},
// "" -> {""}. For lists written on a command line or in a URL path.
std::vector<std::string> SplitAt(std::string_view text, char delimiter);

// Header matching used by `runnel predict`: lower case without '_', '-' and spaces, so
// "FamilyMembers", "family_members" and "Family Members" are the same column.
std::string NormalizeColumnName(std::string_view name);

}  // namespace runnel
