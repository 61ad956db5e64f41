// A columnar batch of input rows: what sources (CSV, PostgreSQL, HTTP) hand to
// features/ and model/. One std::vector per column, numeric and text columns apart;
// NULLs are a separate mask.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace runnel {

struct ColumnBatch {
  size_t rows = 0;
  std::vector<std::string> names;
  std::vector<std::vector<double>> values;  // values[column][row]
  std::vector<std::vector<uint8_t>> nulls;  // nulls[column][row] != 0: NULL
  std::vector<std::string> text_names;
  std::vector<std::vector<std::string>> texts;   // texts[column][row]
  std::vector<std::vector<uint8_t>> text_nulls;  // text_nulls[column][row] != 0: NULL

  // Resets to `rows` rows of the given columns, all NULL. Keeps capacity.
  void Reset(const std::vector<std::string>& column_names, size_t row_count,
             const std::vector<std::string>& text_column_names = {});
  std::optional<size_t> Find(std::string_view name) const;
  std::optional<size_t> FindText(std::string_view name) const;
  void Set(size_t column, size_t row, double value) {
    values[column][row] = value;
    nulls[column][row] = 0;
  }
};

}  // namespace runnel
