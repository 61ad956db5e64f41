// SentencePiece's compiled normalization rules (a tokenizer.json "Precompiled"
// normalizer, as transformers converts T5, XLM-R, ALBERT or mBART tokenizers): a
// darts-clone double-array trie from UTF-8 sequences to replacement strings.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace runnel::text {

class PrecompiledCharsmap {
 public:
  // `blob`: a little-endian u32 trie size in bytes, the trie's 32-bit units, then the
  // NUL-separated replacements. Throws Error(Model) naming `where` when the sizes do
  // not add up or the replacements are not UTF-8; a unit pointing outside the trie is
  // found while searching and ends the search (no rule), never read.
  PrecompiledCharsmap(std::string_view blob, std::string_view where);

  // The replacement of the shortest prefix of `chunk` that has a rule (tokenizers
  // replaces the whole chunk with it), or nullopt.
  std::optional<std::string_view> Transform(std::string_view chunk) const;

  // The text with each extended grapheme cluster shorter than 6 bytes replaced as a
  // whole when it has a rule, else each of its characters that has one, as Hugging
  // Face's tokenizers does. Precondition: `utf8` is well-formed UTF-8.
  std::string Normalize(std::string_view utf8) const;

  size_t units() const { return units_.size(); }

 private:
  std::vector<uint32_t> units_;
  std::string replacements_;
};

// Standard base64 (RFC 4648, padding optional); nullopt when `text` is not base64.
std::optional<std::string> DecodeBase64(std::string_view text);

}  // namespace runnel::text
