// UTF-8 text helpers shared by the text features and the tensor runtime's text
// operators (ICU underneath).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace runnel {

enum class CaseMapping { kLower, kUpper };

// Each code point's simple case mapping (ICU's u_tolower / u_toupper, as ONNX Runtime
// maps character by character: "ß" stays one letter); malformed UTF-8 becomes U+FFFD.
std::string MapCase(std::string_view s, CaseMapping mapping);

// The number of code points of `s`, or nullopt when it is not well-formed UTF-8.
std::optional<size_t> Utf8Length(std::string_view s);

// The byte length of the UTF-8 sequence `s` starts with (1 for a stray byte).
// Precondition: !s.empty().
size_t FirstCharBytes(std::string_view s);

}  // namespace runnel
