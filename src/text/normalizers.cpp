// Normalizers as Hugging Face's tokenizers runs them (normalizers/bert.rs, strip.rs,
// unicode.rs, replace.rs, prepend.rs, precompiled.rs, utils.rs).
#include <fmt/format.h>
#include <re2/re2.h>

#include "precompiled.hpp"
#include "tokenizer_parts.hpp"
#include "unicode_text.hpp"

namespace runnel::text {

namespace {

void Lowercase(std::u32string& text) {
  std::u32string out;
  out.reserve(text.size());
  for (const char32_t c : text) AppendLowercase(c, out);
  text = std::move(out);
}

void RemoveNonspacingMarks(std::u32string& text) {
  std::erase_if(text, IsMarkNonspacing);
}

class BertNormalizer final : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool chinese, bool strip_accents, bool lowercase)
      : clean_text_(clean_text), chinese_(chinese), strip_accents_(strip_accents), lowercase_(lowercase) {}

  void Apply(std::u32string& text) const override {
    if (clean_text_) CleanText(text);
    if (chinese_) SpaceChineseChars(text);
    if (strip_accents_) {
      text = Normalize(text, NormalForm::kNfd);
      RemoveNonspacingMarks(text);
    }
    if (lowercase_) Lowercase(text);
  }

  std::string Describe() const override {
    return fmt::format("BertNormalizer(clean_text={}, handle_chinese_chars={}, strip_accents={}, lowercase={})",
                       clean_text_, chinese_, strip_accents_, lowercase_);
  }

 private:
  // Drops NUL, U+FFFD and the characters of categories C* but \t, \n, \r; then every
  // space becomes ' '.
  static void CleanText(std::u32string& text) {
    std::u32string out;
    out.reserve(text.size());
    for (const char32_t c : text) {
      const bool control = c != '\t' && c != '\n' && c != '\r' && IsOther(c);
      if (c == 0 || c == 0xFFFD || control) continue;  // \v, \f and U+0085 too: they are Cc
      out.push_back(IsWhitespace(c) ? U' ' : c);
    }
    text = std::move(out);
  }

  static void SpaceChineseChars(std::u32string& text) {
    std::u32string out;
    out.reserve(text.size());
    for (const char32_t c : text) {
      if (IsChineseChar(c)) {
        out.push_back(U' ');
        out.push_back(c);
        out.push_back(U' ');
      } else {
        out.push_back(c);
      }
    }
    text = std::move(out);
  }

  bool clean_text_, chinese_, strip_accents_, lowercase_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void Apply(std::u32string& text) const override { Lowercase(text); }
  std::string Describe() const override { return "Lowercase"; }
};

class StripAccents final : public Normalizer {
 public:
  void Apply(std::u32string& text) const override { RemoveNonspacingMarks(text); }
  std::string Describe() const override { return "StripAccents"; }
};

class UnicodeNormalizer final : public Normalizer {
 public:
  UnicodeNormalizer(NormalForm form, std::string name) : form_(form), name_(std::move(name)) {}
  void Apply(std::u32string& text) const override { text = Normalize(text, form_); }
  std::string Describe() const override { return name_; }

 private:
  NormalForm form_;
  std::string name_;
};

class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void Apply(std::u32string& text) const override {
    size_t begin = 0, end = text.size();
    if (left_)
      while (begin < end && IsWhitespace(text[begin])) ++begin;
    if (right_)
      while (end > begin && IsWhitespace(text[end - 1])) --end;
    text = text.substr(begin, end - begin);
  }
  std::string Describe() const override { return fmt::format("Strip(left={}, right={})", left_, right_); }

 private:
  bool left_, right_;
};

class Replace final : public Normalizer {
 public:
  Replace(std::u32string pattern, std::u32string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Apply(std::u32string& text) const override {
    std::u32string out;
    size_t at = 0;
    for (size_t hit; (hit = text.find(pattern_, at)) != std::u32string::npos; at = hit + pattern_.size()) {
      out.append(text, at, hit - at);
      out += content_;
    }
    out.append(text, at);
    text = std::move(out);
  }
  std::string Describe() const override {
    return fmt::format("Replace('{}' -> '{}')", EncodeUtf8(pattern_), EncodeUtf8(content_));
  }

 private:
  std::u32string pattern_, content_;
};

// A Regex pattern, run by RE2 (tokenizers runs Oniguruma: the patterns both read alike
// are accepted, see MakeReplace).
class RegexReplace final : public Normalizer {
 public:
  RegexReplace(std::unique_ptr<re2::RE2> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Apply(std::u32string& text) const override {
    std::string utf8 = EncodeUtf8(text);
    std::string out;
    re2::StringPiece match;
    size_t at = 0, search = 0;
    while (search <= utf8.size() && pattern_->Match(utf8, search, utf8.size(), re2::RE2::UNANCHORED, &match, 1)) {
      const auto start = static_cast<size_t>(match.data() - utf8.data());
      out.append(utf8, at, start - at);
      out += content_;
      at = start + match.size();
      // An empty match moves one character on (the character is kept).
      search = match.empty() ? NextChar(utf8, at) : at;
      if (match.empty() && at < utf8.size()) {
        out.append(utf8, at, search - at);
        at = search;
      }
    }
    out.append(utf8, std::min(at, utf8.size()));
    text = DecodeUtf8(out);
  }
  std::string Describe() const override { return fmt::format("Replace(/{}/ -> '{}')", pattern_->pattern(), content_); }

 private:
  static size_t NextChar(const std::string& s, size_t i) {
    if (i >= s.size()) return s.size() + 1;
    ++i;
    while (i < s.size() && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) ++i;
    return i;
  }
  std::unique_ptr<re2::RE2> pattern_;
  std::string content_;
};

class PrecompiledNormalizer final : public Normalizer {
 public:
  explicit PrecompiledNormalizer(PrecompiledCharsmap charsmap) : charsmap_(std::move(charsmap)) {}
  void Apply(std::u32string& text) const override { text = DecodeUtf8(charsmap_.Normalize(EncodeUtf8(text))); }
  std::string Describe() const override { return fmt::format("Precompiled({} trie units)", charsmap_.units()); }

 private:
  PrecompiledCharsmap charsmap_;
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::u32string prefix) : prefix_(std::move(prefix)) {}
  void Apply(std::u32string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }
  std::string Describe() const override { return fmt::format("Prepend('{}')", EncodeUtf8(prefix_)); }

 private:
  std::u32string prefix_;
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void Apply(std::u32string& text) const override {
    for (const auto& step : steps_) step->Apply(text);
  }
  std::string Describe() const override { return DescribeSequence(steps_); }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

std::unique_ptr<Normalizer> MakeBert(const JsonReader& reader, const Json& j, std::string_view where) {
  const bool lowercase = reader.BoolOr(j, "lowercase", where, true);
  // strip_accents null: as lowercase (BERT's uncased models strip, cased keep).
  const bool strip = reader.BoolOr(j, "strip_accents", where, lowercase);
  return std::make_unique<BertNormalizer>(reader.BoolOr(j, "clean_text", where, true),
                                          reader.BoolOr(j, "handle_chinese_chars", where, true), strip, lowercase);
}

// RE2's \s \w \d \b are ASCII-only where Oniguruma's are Unicode's: a pattern using
// them would silently match otherwise, so it is refused.
std::unique_ptr<re2::RE2> CompileHfRegex(const JsonReader& reader, const std::string& pattern, std::string_view where) {
  for (size_t i = 0; i + 1 < pattern.size(); ++i) {
    if (pattern[i] != '\\') continue;
    if (std::string_view("sSwWdDbB").find(pattern[i + 1]) != std::string_view::npos)
      reader.Fail(where, fmt::format("'{}': \\{} means ASCII only in RE2 and Unicode in the tokenizers library; "
                                     "write the class out (e.g. \\p{{L}}, [\\t\\n ])",
                                     pattern, pattern[i + 1]));
    ++i;
  }
  re2::RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(int64_t{8} << 20);
  auto re = std::make_unique<re2::RE2>(pattern, options);
  if (!re->ok())
    reader.Fail(where, fmt::format("'{}' is not a regular expression RE2 runs (look-arounds and back-references are "
                                   "not): {}",
                                   pattern, re->error()));
  return re;
}

std::unique_ptr<Normalizer> MakeReplace(const JsonReader& reader, const Json& j, std::string_view where) {
  const std::string at = fmt::format("{}.pattern", where);
  const Json& pattern = reader.Object(reader.Member(j, "pattern", where, true), at);
  if (pattern.contains("Regex")) {
    auto re = CompileHfRegex(reader, reader.String(pattern, "Regex", at), at + ".Regex");
    return std::make_unique<RegexReplace>(std::move(re), reader.String(j, "content", where));
  }
  if (!pattern.contains("String")) reader.Fail(at, "is neither a String nor a Regex pattern");
  const std::string from = reader.String(pattern, "String", at);
  if (from.empty()) reader.Fail(fmt::format("{}.pattern.String", where), "is empty");
  return std::make_unique<Replace>(DecodeUtf8(from), DecodeUtf8(reader.String(j, "content", where)));
}

}  // namespace

std::unique_ptr<Normalizer> MakeNormalizer(const JsonReader& reader, const Json& j, std::string_view where, int depth) {
  const auto stage = StageType(reader, j, where, depth);
  if (!stage) return nullptr;
  const std::string& type = *stage;
  if (type == "BertNormalizer") return MakeBert(reader, j, where);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfc, type);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfd, type);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkc, type);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkd, type);
  if (type == "Strip") {
    return std::make_unique<Strip>(reader.BoolOr(j, "strip_left", where, true),
                                   reader.BoolOr(j, "strip_right", where, true));
  }
  if (type == "Replace") return MakeReplace(reader, j, where);
  if (type == "Precompiled") {
    const std::string at = fmt::format("{}.precompiled_charsmap", where);
    const auto blob = DecodeBase64(reader.String(j, "precompiled_charsmap", where));
    if (!blob) reader.Fail(at, "is not base64");
    // An empty charsmap (a model without rules) changes nothing.
    if (blob->empty()) return nullptr;
    return std::make_unique<PrecompiledNormalizer>(
        PrecompiledCharsmap(*blob, fmt::format("{}: {}", reader.source(), at)));
  }
  if (type == "Prepend") return std::make_unique<Prepend>(DecodeUtf8(reader.String(j, "prepend", where)));
  if (type == "Sequence") {
    return std::make_unique<Sequence>(ReadSequence<Normalizer>(reader, j, where, "normalizers", depth, MakeNormalizer));
  }
  reader.Fail(where, fmt::format("normalizer type '{}' is not supported", type));
}

}  // namespace runnel::text
