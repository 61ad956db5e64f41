#include "unicode_text.hpp"

#include <fmt/format.h>
#include <unicode/brkiter.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>
#include <unicode/utext.h>
#include <unicode/utf8.h>

#include <cassert>
#include <memory>

#include "runnel/core/error.hpp"

namespace runnel::text {

std::u32string DecodeUtf8(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const auto n = static_cast<int32_t>(s.size());
  for (int32_t i = 0; i < n;) {
    UChar32 c = 0;
    U8_NEXT(p, i, n, c);
    out.push_back(c < 0 ? U'\uFFFD' : static_cast<char32_t>(c));
  }
  return out;
}

void AppendUtf8(std::u32string_view s, std::string& out) {
  for (const char32_t c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (c >> 12)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (c >> 18)));
      out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
}

std::vector<size_t> GraphemeBoundaries(std::string_view utf8) {
  std::vector<size_t> bounds{0};
  // Text without a byte of 0x80 or more nor a CR is one grapheme per byte (CR LF is
  // the only pair of ASCII characters UAX #29 keeps together).
  bool simple = true;
  for (const char c : utf8) simple = simple && static_cast<uint8_t>(c) < 0x80 && c != '\r';
  if (simple || utf8.empty()) {
    for (size_t i = 1; i <= utf8.size(); ++i) bounds.push_back(i);
    return bounds;
  }
  // Creating a break iterator loads ICU's rules: once per thread, then reused.
  thread_local std::unique_ptr<icu::BreakIterator> iterator;
  UErrorCode status = U_ZERO_ERROR;
  if (!iterator) iterator.reset(icu::BreakIterator::createCharacterInstance(icu::Locale::getRoot(), status));
  if (!iterator || U_FAILURE(status)) throw Error(ErrorCode::Io, "ICU's grapheme break rules cannot be loaded");
  UText* text = utext_openUTF8(nullptr, utf8.data(), static_cast<int64_t>(utf8.size()), &status);
  iterator->setText(text, status);
  if (U_FAILURE(status)) {
    utext_close(text);
    throw Error(ErrorCode::InvalidInput, fmt::format("a text cannot be split into graphemes: {}", u_errorName(status)));
  }
  iterator->first();
  for (int32_t at = iterator->next(); at != icu::BreakIterator::DONE; at = iterator->next())
    bounds.push_back(static_cast<size_t>(at));
  utext_close(text);
  if (bounds.back() != utf8.size()) bounds.push_back(utf8.size());
  return bounds;
}

std::string EncodeUtf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  AppendUtf8(s, out);
  return out;
}

namespace {

bool InCategory(char32_t c, uint32_t mask) {
  return (U_GET_GC_MASK(static_cast<UChar32>(c)) & mask) != 0;
}

}  // namespace

bool IsWhitespace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= '\t' && c <= '\r');
  return u_isUWhiteSpace(static_cast<UChar32>(c)) != 0;
}

bool IsOther(char32_t c) {
  return InCategory(c, U_GC_C_MASK);
}

bool IsPunctuation(char32_t c) {
  if (c < 0x80)
    return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
  return InCategory(c, U_GC_P_MASK);
}

bool IsMarkNonspacing(char32_t c) {
  return c >= 0x300 && InCategory(c, U_GC_MN_MASK);
}
bool IsLetter(char32_t c) {
  return InCategory(c, U_GC_L_MASK);
}
bool IsNumber(char32_t c) {
  return InCategory(c, U_GC_N_MASK);
}

bool IsAlphanumeric(char32_t c) {
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_ALPHABETIC) || InCategory(c, U_GC_N_MASK);
}

bool IsWordChar(char32_t c) {
  return InCategory(c, U_GC_L_MASK | U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK);
}

bool IsChineseChar(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

void AppendLowercase(char32_t c, std::u32string& out) {
  if (c < 0x80) {
    out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
    return;
  }
  UChar src[2];
  int32_t src_len = 0;
  U16_APPEND_UNSAFE(src, src_len, static_cast<UChar32>(c));
  UChar dst[8];
  UErrorCode status = U_ZERO_ERROR;
  // Alone, so no context-dependent rule (final sigma) applies; the root locale.
  const int32_t n = u_strToLower(dst, 8, src, src_len, "", &status);
  if (U_FAILURE(status) || n > 8) {
    out.push_back(c);
    return;
  }
  for (int32_t i = 0; i < n;) {
    UChar32 m = 0;
    U16_NEXT(dst, i, n, m);
    out.push_back(static_cast<char32_t>(m));
  }
}

std::u32string Normalize(std::u32string_view s, NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = nullptr;
  switch (form) {
    case NormalForm::kNfc: normalizer = icu::Normalizer2::getNFCInstance(status); break;
    case NormalForm::kNfd: normalizer = icu::Normalizer2::getNFDInstance(status); break;
    case NormalForm::kNfkc: normalizer = icu::Normalizer2::getNFKCInstance(status); break;
    case NormalForm::kNfkd: normalizer = icu::Normalizer2::getNFKDInstance(status); break;
  }
  if (U_FAILURE(status) || normalizer == nullptr)
    throw Error(ErrorCode::Io, "ICU's normalization data cannot be loaded");
  const auto source =
      icu::UnicodeString::fromUTF32(reinterpret_cast<const UChar32*>(s.data()), static_cast<int32_t>(s.size()));
  const icu::UnicodeString result = normalizer->normalize(source, status);
  if (U_FAILURE(status)) throw Error(ErrorCode::InvalidInput, "a text cannot be normalized");
  std::u32string out(static_cast<size_t>(result.countChar32()), U'\0');
  status = U_ZERO_ERROR;
  result.toUTF32(reinterpret_cast<UChar32*>(out.data()), static_cast<int32_t>(out.size()), status);
  assert(U_SUCCESS(status));
  return out;
}

}  // namespace runnel::text
