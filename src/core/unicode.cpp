#include "runnel/core/unicode.hpp"

#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <algorithm>

namespace runnel {

std::string MapCase(std::string_view s, CaseMapping mapping) {
  const icu::UnicodeString in =
      icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  icu::UnicodeString mapped;
  for (int32_t i = 0; i < in.length(); i = in.moveIndex32(i, 1)) {
    const UChar32 c = in.char32At(i);
    mapped.append(mapping == CaseMapping::kLower ? u_tolower(c) : u_toupper(c));
  }
  std::string out;
  mapped.toUTF8String(out);
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
