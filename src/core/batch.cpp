#include "runnel/core/batch.hpp"

namespace runnel {

void ColumnBatch::Reset(const std::vector<std::string>& column_names, size_t row_count,
                        const std::vector<std::string>& text_column_names) {
  rows = row_count;
  names = column_names;
  values.resize(names.size());
  nulls.resize(names.size());
  for (size_t c = 0; c < names.size(); ++c) {
    values[c].assign(rows, 0.0);
    nulls[c].assign(rows, 1);
  }
  text_names = text_column_names;
  texts.resize(text_names.size());
  text_nulls.resize(text_names.size());
  for (size_t c = 0; c < text_names.size(); ++c) {
    texts[c].assign(rows, std::string());
    text_nulls[c].assign(rows, 1);
  }
}

std::optional<size_t> ColumnBatch::Find(std::string_view name) const {
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) return i;
  }
  return std::nullopt;
}

std::optional<size_t> ColumnBatch::FindText(std::string_view name) const {
  for (size_t i = 0; i < text_names.size(); ++i) {
    if (text_names[i] == name) return i;
  }
  return std::nullopt;
}

}  // namespace runnel
