#include "runnel/core/csv.hpp"

#include <cctype>

namespace runnel {

bool CsvReader::Next(std::vector<std::string>& fields) {
  fields.clear();
  malformed_ = false;
  if (first_) {
    first_ = false;
    if (in_.peek() == 0xEF) {
      char bom[3];
      in_.read(bom, 3);
      if (!(in_.gcount() == 3 && bom[1] == '\xBB' && bom[2] == '\xBF')) {
        in_.clear();
        in_.seekg(0);
      }
    }
  }
  // The stream's buffer, read directly: istream::get builds a sentry per character.
  std::streambuf* buf = in_.rdbuf();
  if (buf == nullptr) return false;
  auto get = [&] {
    const int c = buf->sbumpc();
    if (c == EOF) in_.setstate(std::ios::eofbit);
    return c;
  };
  auto peek = [&] { return buf->sgetc(); };
  int c = get();
  if (c == EOF) return false;
  record_line_ = line_;
  std::string field;
  bool quoted = false;
  bool after_quote = false;  // inside a field that started with a quote and was closed
  for (;; c = get()) {
    if (quoted) {
      if (c == EOF) {
        malformed_ = true;
        fields.push_back(std::move(field));
        return true;
      }
      if (c == '"') {
        if (peek() == '"') {
          field += '"';
          get();
        } else {
          quoted = false;
          after_quote = true;
        }
      } else {
        if (c == '\n') ++line_;
        field += static_cast<char>(c);
      }
      continue;
    }
    if (c == EOF || c == '\n' || c == '\r') {
      if (c == '\r' && peek() == '\n') get();
      if (c != EOF) ++line_;
      fields.push_back(std::move(field));
      return true;
    }
    if (c == delimiter_) {
      fields.push_back(std::move(field));
      field.clear();
      after_quote = false;
      continue;
    }
    if (c == '"' && field.empty() && !after_quote) {
      quoted = true;
      continue;
    }
    field += static_cast<char>(c);
  }
}

void AppendCsvField(std::string& out, std::string_view field, char delimiter) {
  if (field.find_first_of(std::string{'"', '\n', '\r', delimiter}) == std::string_view::npos) {
    out += field;
    return;
  }
  out += '"';
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

std::string NormalizeColumnName(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == '_' || c == '-' || c == ' ' || c == '\t') continue;
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::vector<std::string> SplitAt(std::string_view text, char delimiter) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(delimiter, start);
    if (end == std::string_view::npos) end = text.size();
    out.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace runnel
