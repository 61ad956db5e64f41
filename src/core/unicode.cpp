#include "runnel/core/unicode.hpp"

#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <algorithm>

namespace runnel {

std::string MapCase(std::string_view s, CaseMapping mapping) {
  const bool lower = mapping == CaseMapping::kLower;
  std::string out;
  out.reserve(s.size());
  const auto n = static_cast<int32_t>(s.size());
  for (int32_t i = 0; i < n;) {
    const auto byte = static_cast<unsigned char>(s[static_cast<size_t>(i)]);
    if (byte < 0x80) {  // ASCII: most text, mapped without ICU
      out += static_cast<char>(lower ? (byte >= 'A' && byte <= 'Z' ? byte + 32 : byte)
                                     : (byte >= 'a' && byte <= 'z' ? byte - 32 : byte));
      ++i;
      continue;
    }
    UChar32 c = 0;
    U8_NEXT(s.data(), i, n, c);
    if (c < 0) c = 0xFFFD;  // malformed UTF-8
    c = lower ? u_tolower(c) : u_toupper(c);
    char buffer[U8_MAX_LENGTH];
    int32_t length = 0;
    U8_APPEND_UNSAFE(buffer, length, c);  // c is a valid code point: at most 4 bytes
    out.append(buffer, static_cast<size_t>(length));
  }
  return out;
}

std::optional<size_t> Utf8Length(std::string_view s) {
  size_t chars = 0;
  for (int32_t i = 0, n = static_cast<int32_t>(s.size()); i < n; ++chars) {
    UChar32 c = 0;
    U8_NEXT(s.data(), i, n, c);
    if (c < 0) return std::nullopt;
  }
  return chars;
}

size_t FirstCharBytes(std::string_view s) {
  int32_t i = 0;
  UChar32 c = 0;
  U8_NEXT(s.data(), i, static_cast<int32_t>(std::min<size_t>(s.size(), 4)), c);
  return std::max<size_t>(1, static_cast<size_t>(i));
}

}  // namespace runnel
