// SentencePiece's precompiled charsmap, read as the spm_precompiled crate and
// SentencePiece's normalizer.cc read it (darts-clone's unit layout).
#include "precompiled.hpp"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <cstring>

#include "runnel/core/error.hpp"
#include "runnel/core/unicode.hpp"
#include "unicode_text.hpp"

namespace runnel::text {

namespace {

// darts-clone's 32-bit unit: a leaf flag, a value, a label and an offset to the
// children.
bool HasLeaf(uint32_t unit) {
  return ((unit >> 8) & 1) == 1;
}
uint32_t Value(uint32_t unit) {
  return unit & ((1u << 31) - 1);
}
uint32_t Label(uint32_t unit) {
  return unit & ((1u << 31) | 0xFF);
}
size_t Offset(uint32_t unit) {
  return static_cast<size_t>((unit >> 10) << ((unit & (1u << 9)) >> 6));
}

size_t Utf8CharLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  return 4;
}

}  // namespace

std::optional<std::string> DecodeBase64(std::string_view text) {
  std::string padded(text);
  while (padded.size() % 4 != 0) padded.push_back('=');
  if (padded.size() > static_cast<size_t>(INT32_MAX)) return std::nullopt;
  std::string out(padded.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(padded.data()), static_cast<int>(padded.size()));
  if (n < 0) return std::nullopt;
  // EVP_DecodeBlock counts the bytes the padding stands for.
  size_t pad = 0;
  while (pad < 2 && pad < padded.size() && padded[padded.size() - 1 - pad] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

PrecompiledCharsmap::PrecompiledCharsmap(std::string_view blob, std::string_view where) {
  auto fail = [&](std::string_view what) { throw Error(ErrorCode::Model, fmt::format("{}: {}", where, what)); };
  if (blob.size() < 4) fail("the charsmap has no trie size");
  uint32_t trie_bytes = 0;
  for (int i = 3; i >= 0; --i) trie_bytes = (trie_bytes << 8) | static_cast<uint8_t>(blob[static_cast<size_t>(i)]);
  if (trie_bytes % 4 != 0) fail(fmt::format("a trie of {} bytes is not a whole number of 4-byte units", trie_bytes));
  if (trie_bytes == 0) fail("the trie is empty");
  if (trie_bytes > blob.size() - 4)
    fail(fmt::format("the trie of {} bytes is longer than the {} bytes after its size", trie_bytes, blob.size() - 4));
  units_.resize(trie_bytes / 4);
  for (size_t i = 0; i < units_.size(); ++i) {
    const auto* p = reinterpret_cast<const uint8_t*>(blob.data() + 4 + i * 4);
    units_[i] = uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
  }
  replacements_ = std::string(blob.substr(4 + trie_bytes));
  if (!Utf8Length(replacements_)) fail("the replacements are not UTF-8");
}

std::optional<std::string_view> PrecompiledCharsmap::Transform(std::string_view chunk) const {
  size_t pos = Offset(units_[0]);
  for (const char ch : chunk) {
    const auto c = static_cast<uint8_t>(ch);
    if (c == 0) break;
    pos ^= c;
    if (pos >= units_.size()) break;
    const uint32_t unit = units_[pos];
    if (Label(unit) != c) break;
    pos ^= Offset(unit);
    if (!HasLeaf(unit)) continue;
    if (pos >= units_.size()) break;
    const size_t start = Value(units_[pos]);
    if (start >= replacements_.size()) break;
    const size_t end = replacements_.find('\0', start);
    const std::string_view found =
        std::string_view(replacements_).substr(start, end == std::string::npos ? std::string::npos : end - start);
    // A value inside a character would cut it: no rule, rather than broken text.
    if (!Utf8Length(found)) return std::nullopt;
    return found;
  }
  return std::nullopt;
}

std::string PrecompiledCharsmap::Normalize(std::string_view utf8) const {
  std::string out;
  out.reserve(utf8.size());
  const std::vector<size_t> bounds = GraphemeBoundaries(utf8);
  for (size_t g = 0; g + 1 < bounds.size(); ++g) {
    const std::string_view grapheme = utf8.substr(bounds[g], bounds[g + 1] - bounds[g]);
    if (grapheme.size() < 6) {
      if (const auto whole = Transform(grapheme)) {
        out += *whole;
        continue;
      }
    }
    for (size_t i = 0; i < grapheme.size();) {
      const size_t n = std::min(Utf8CharLength(static_cast<uint8_t>(grapheme[i])), grapheme.size() - i);
      const std::string_view c = grapheme.substr(i, n);
      const auto norm = Transform(c);
      out += norm ? *norm : c;
      i += n;
    }
  }
  return out;
}

}  // namespace runnel::text
