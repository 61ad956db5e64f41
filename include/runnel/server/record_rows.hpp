// Validated records of one column set, each value as the text its column's input
// function reads (what COPY's text format and a cast from text take), or null. Built
// where a request is parsed (an HTTP handler, the JetStream ingest), read by
// RecordWriter. One buffer for all values: a record costs no allocation of its own.
//
// Thread safety: none; hand it over whole (the Ingestor moves it to its threads).
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace runnel::server {

class RecordRows {
 public:
  // `width`: values per record (the column set's size).
  explicit RecordRows(size_t width = 0) : width_(width) {}

  // The next value of the record being added, then EndRecord after its `width` values.
  void Add(std::string_view text) {
    spans_.push_back({text_.size(), static_cast<int64_t>(text.size())});
    text_.append(text);
  }
  void AddNull() { spans_.push_back({text_.size(), -1}); }
  void EndRecord() {
    ++rows_;
    assert(spans_.size() == rows_ * width_);
  }

  size_t width() const { return width_; }
  size_t rows() const { return rows_; }
  // Value `column` of record `row`; nullopt for null. Precondition: in range.
  std::optional<std::string_view> At(size_t row, size_t column) const {
    const Span& s = spans_[row * width_ + column];
    if (s.size < 0) return std::nullopt;
    return std::string_view(text_).substr(s.offset, static_cast<size_t>(s.size));
  }

  bool operator==(const RecordRows& other) const {
    if (width_ != other.width_ || rows_ != other.rows_) return false;
    for (size_t i = 0; i < spans_.size(); ++i) {
      if (At(i / width_, i % width_) != other.At(i / width_, i % width_)) return false;
    }
    return true;
  }

 private:
  struct Span {
    size_t offset;
    int64_t size;  // -1: null
  };
  size_t width_;
  size_t rows_ = 0;
  std::string text_;
  std::vector<Span> spans_;
};

}  // namespace runnel::server
