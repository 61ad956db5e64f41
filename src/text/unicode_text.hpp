// Code-point level Unicode for the tokenizers: the character classes Hugging Face's
// tokenizers test (Rust's char methods and the unicode_categories crate), answered by
// ICU. Text is held as UTF-32 between the tokenizer's stages.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace runnel::text {

// `s` as code points. Precondition: s is well-formed UTF-8 (checked by the caller).
std::u32string DecodeUtf8(std::string_view s);
void AppendUtf8(std::u32string_view s, std::string& out);
std::string EncodeUtf8(std::u32string_view s);

bool IsWhitespace(char32_t c);      // the White_Space property (Rust's char::is_whitespace)
bool IsOther(char32_t c);           // general category C* (Cc, Cf, Cs, Co, Cn)
bool IsPunctuation(char32_t c);     // ASCII punctuation or general category P* (BERT's split)
bool IsMarkNonspacing(char32_t c);  // Mn
bool IsLetter(char32_t c);          // L*
bool IsNumber(char32_t c);          // N*
bool IsAlphanumeric(char32_t c);    // Alphabetic or Numeric (Rust's char::is_alphanumeric)
bool IsWordChar(char32_t c);        // a regex \w: L*, M*, Nd, Pc
bool IsChineseChar(char32_t c);     // the CJK blocks BERT surrounds with spaces

// Appends c's full lowercase mapping, taken alone (Rust's char::to_lowercase: "İ" →
// "i̇", a final sigma is σ).
void AppendLowercase(char32_t c, std::u32string& out);

// Byte offsets of the extended grapheme cluster boundaries of `utf8` (UAX #29), 0 and
// utf8.size() included. Precondition: well-formed UTF-8.
std::vector<size_t> GraphemeBoundaries(std::string_view utf8);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
std::u32string Normalize(std::u32string_view s, NormalForm form);

}  // namespace runnel::text
