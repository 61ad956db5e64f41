// Pre-tokenizers as Hugging Face's tokenizers runs them (pre_tokenizers/bert.rs,
// byte_level.rs, whitespace.rs, punctuation.rs, metaspace.rs, sequence.rs).
#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "tokenizer_parts.hpp"
#include "unicode_text.hpp"

namespace runnel::text {

namespace {

// Splits `text` into runs: `keep(c)` chars in runs, `isolate(c)` chars alone, the
// others (separators) dropped.
template <typename Keep, typename Isolate>
void SplitRuns(std::u32string_view text, Keep keep, Isolate isolate, std::vector<std::u32string>& out) {
  size_t start = 0;
  bool in_run = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    if (isolate(c)) {
      if (in_run) out.emplace_back(text.substr(start, i - start));
      out.emplace_back(1, c);
      in_run = false;
    } else if (keep(c)) {
      if (!in_run) start = i;
      in_run = true;
    } else {
      if (in_run) out.emplace_back(text.substr(start, i - start));
      in_run = false;
    }
  }
  if (in_run) out.emplace_back(text.substr(start));
}

// Applies `split` to every piece, in order.
template <typename Split>
void SplitEach(std::vector<std::u32string>& pieces, Split split) {
  std::vector<std::u32string> out;
  out.reserve(pieces.size() * 2);
  for (const auto& piece : pieces) split(piece, out);
  pieces = std::move(out);
}

bool IsNotWhitespace(char32_t c) {
  return !IsWhitespace(c);
}
bool Always(char32_t) {
  return true;
}
bool Never(char32_t) {
  return false;
}

// Runs of `keep` characters, each `isolate` character alone, the others dropped:
// BertPreTokenizer (split on spaces, punctuation alone), WhitespaceSplit, Punctuation.
class RunSplit final : public PreTokenizer {
 public:
  RunSplit(std::string name, bool (*keep)(char32_t), bool (*isolate)(char32_t))
      : name_(std::move(name)), keep_(keep), isolate_(isolate) {}
  void Split(std::vector<std::u32string>& pieces, bool /*at_start*/) const override {
    SplitEach(pieces, [this](const std::u32string& piece, std::vector<std::u32string>& out) {
      SplitRuns(piece, keep_, isolate_, out);
    });
  }
  std::string Describe() const override { return name_; }

 private:
  std::string name_;
  bool (*keep_)(char32_t);
  bool (*isolate_)(char32_t);
};

// \w+|[^\w\s]+
class WhitespacePreTokenizer final : public PreTokenizer {
 public:
  void Split(std::vector<std::u32string>& pieces, bool /*at_start*/) const override {
    SplitEach(pieces, [](const std::u32string& piece, std::vector<std::u32string>& out) {
      size_t i = 0;
      while (i < piece.size()) {
        const char32_t c = piece[i];
        if (IsWhitespace(c)) {
          ++i;
          continue;
        }
        const bool word = IsWordChar(c);
        size_t end = i + 1;
        while (end < piece.size() && !IsWhitespace(piece[end]) && IsWordChar(piece[end]) == word) ++end;
        out.emplace_back(piece.substr(i, end - i));
        i = end;
      }
    });
  }
  std::string Describe() const override { return "Whitespace"; }
};

// GPT-2's byte → character table (bytes_to_unicode): printable Latin-1 bytes stand for
// themselves, the others for 256, 257, ... in byte order.
const std::array<char32_t, 256>& ByteLevelTable() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[static_cast<size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}

  void Split(std::vector<std::u32string>& pieces, bool /*at_start*/) const override {
    SplitEach(pieces, [this](const std::u32string& piece, std::vector<std::u32string>& out) {
      std::u32string text = piece;
      if (add_prefix_space_ && (text.empty() || text[0] != U' ')) text.insert(0, 1, U' ');
      if (!use_regex_) {
        out.push_back(ToByteChars(text));
        return;
      }
      for (const auto& part : SplitGpt2(text)) out.push_back(ToByteChars(part));
    });
  }

  std::string Describe() const override {
    return fmt::format("ByteLevel(add_prefix_space={}, use_regex={})", add_prefix_space_, use_regex_);
  }

 private:
  static std::u32string ToByteChars(std::u32string_view text) {
    const std::string bytes = EncodeUtf8(text);
    std::u32string out(bytes.size(), U'\0');
    for (size_t i = 0; i < bytes.size(); ++i) out[i] = ByteLevelChar(static_cast<uint8_t>(bytes[i]));
    return out;
  }

  bool add_prefix_space_, use_regex_;
};

enum class Prepend { kAlways, kFirst, kNever };

// SentencePiece's spaces: each ' ' becomes the replacement (U+2581), which is put in
// front of the text (prepend), and the text is split before each replacement
// (MergedWithNext: "a▁▁b" → "a", "▁", "▁b").
class Metaspace final : public PreTokenizer {
 public:
  Metaspace(char32_t replacement, Prepend prepend, bool split)
      : replacement_(replacement), prepend_(prepend), split_(split) {}

  void Split(std::vector<std::u32string>& pieces, bool at_start) const override {
    std::vector<std::u32string> out;
    out.reserve(pieces.size() * 2);
    for (size_t p = 0; p < pieces.size(); ++p) {
      std::u32string text = pieces[p];
      std::replace(text.begin(), text.end(), U' ', replacement_);
      const bool prepend = prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && at_start && p == 0);
      if (prepend && !text.empty() && text[0] != replacement_) text.insert(0, 1, replacement_);
      if (!split_) {
        out.push_back(std::move(text));
        continue;
      }
      size_t start = 0;
      for (size_t i = 1; i < text.size(); ++i) {
        if (text[i] != replacement_) continue;
        out.emplace_back(text.substr(start, i - start));
        start = i;
      }
      if (start < text.size()) out.emplace_back(text.substr(start));
    }
    pieces = std::move(out);
  }

  bool UsesStart() const override { return prepend_ == Prepend::kFirst; }
  std::string Describe() const override {
    static constexpr const char* kNames[] = {"always", "first", "never"};
    return fmt::format("Metaspace('{}', prepend {}{})", EncodeUtf8(std::u32string(1, replacement_)),
                       kNames[static_cast<int>(prepend_)], split_ ? "" : ", no split");
  }

 private:
  char32_t replacement_;
  Prepend prepend_;
  bool split_;
};

std::unique_ptr<PreTokenizer> MakeMetaspace(const JsonReader& reader, const Json& j, std::string_view where) {
  const std::u32string replacement = DecodeUtf8(reader.StringOr(j, "replacement", where, "\u2581"));
  if (replacement.size() != 1) reader.Fail(fmt::format("{}.replacement", where), "must be one character");
  // tokenizers ≤ 0.14 wrote add_prefix_space instead of prepend_scheme.
  const bool legacy = reader.BoolOr(j, "add_prefix_space", where, true);
  const std::string scheme = reader.StringOr(j, "prepend_scheme", where, legacy ? "always" : "never");
  Prepend prepend = Prepend::kAlways;
  if (scheme == "first") {
    prepend = Prepend::kFirst;
  } else if (scheme == "never") {
    prepend = Prepend::kNever;
  } else if (scheme != "always") {
    reader.Fail(fmt::format("{}.prepend_scheme", where), fmt::format("'{}' is none of always, first, never", scheme));
  }
  return std::make_unique<Metaspace>(replacement[0], prepend, reader.BoolOr(j, "split", where, true));
}

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void Split(std::vector<std::u32string>& pieces, bool at_start) const override {
    for (const auto& step : steps_) step->Split(pieces, at_start);
  }
  bool UsesStart() const override { return !steps_.empty() && steps_[0]->UsesStart(); }
  std::string Describe() const override { return DescribeSequence(steps_); }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

bool IsOtherSymbol(char32_t c) {
  return !IsWhitespace(c) && !IsLetter(c) && !IsNumber(c);
}

// The end of GPT-2's match at `i` (see SplitGpt2), alternatives tried in the regex's order.
size_t Gpt2MatchEnd(std::u32string_view t, size_t i) {
  const size_t n = t.size();
  if (t[i] == U'\'' && i + 1 < n) {
    const char32_t a = t[i + 1];
    if (a == U's' || a == U't' || a == U'm' || a == U'd') return i + 2;
    if (i + 2 < n) {
      const char32_t b = t[i + 2];
      if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) return i + 3;
    }
  }
  const size_t j = (t[i] == U' ' && i + 1 < n) ? i + 1 : i;  // " ?"
  for (bool (*cls)(char32_t) : {IsLetter, IsNumber, IsOtherSymbol}) {
    if (cls(t[j])) {
      size_t end = j + 1;
      while (end < n && cls(t[end])) ++end;
      return end;
    }
  }
  size_t end = i;
  while (end < n && IsWhitespace(t[end])) ++end;
  // \s+(?!\S): a run before a non-space leaves its last space to the next token.
  if (end < n && end - i >= 2) return end - 1;
  return end;
}

}  // namespace

char32_t ByteLevelChar(uint8_t b) {
  return ByteLevelTable()[b];
}

std::vector<std::u32string> SplitGpt2(std::u32string_view text) {
  std::vector<std::u32string> out;
  for (size_t i = 0; i < text.size();) {
    const size_t end = Gpt2MatchEnd(text, i);
    out.emplace_back(text.substr(i, end - i));
    i = end;
  }
  return out;
}

std::unique_ptr<PreTokenizer> MakePreTokenizer(const JsonReader& reader, const Json& j, std::string_view where,
                                               int depth) {
  const auto stage = StageType(reader, j, where, depth);
  if (!stage) return nullptr;
  const std::string& type = *stage;
  if (type == "BertPreTokenizer") return std::make_unique<RunSplit>(type, IsNotWhitespace, IsPunctuation);
  if (type == "Whitespace") return std::make_unique<WhitespacePreTokenizer>();
  if (type == "WhitespaceSplit") return std::make_unique<RunSplit>(type, IsNotWhitespace, Never);
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevel>(reader.BoolOr(j, "add_prefix_space", where, true),
                                       reader.BoolOr(j, "use_regex", where, true));
  }
  if (type == "Punctuation") {
    const std::string behavior = reader.StringOr(j, "behavior", where, "Isolated");
    if (behavior != "Isolated") {
      reader.Fail(fmt::format("{}.behavior", where), fmt::format("'{}' is not supported (Isolated is)", behavior));
    }
    return std::make_unique<RunSplit>("Punctuation(Isolated)", Always, IsPunctuation);
  }
  if (type == "Metaspace") return MakeMetaspace(reader, j, where);
  if (type == "Sequence") {
    auto steps = ReadSequence<PreTokenizer>(reader, j, where, "pretokenizers", depth, MakePreTokenizer);
    // Where a piece began in the text is not kept through a split: "first" is only
    // known before one.
    for (size_t i = 1; i < steps.size(); ++i) {
      if (steps[i]->UsesStart())
        reader.Fail(fmt::format("{}.pretokenizers[{}]", where, i),
                    "a Metaspace with prepend_scheme \"first\" is supported as the first pre-tokenizer only");
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  reader.Fail(where, fmt::format("pre-tokenizer type '{}' is not supported", type));
}

}  // namespace runnel::text
