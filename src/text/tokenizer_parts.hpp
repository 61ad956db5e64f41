// The stages of a tokenizer (see include/runnel/text/tokenizer.hpp), each built from its
// object in tokenizer.json. Pure functions of their input; immutable after building.
#pragma once

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runnel/core/mutex.hpp"

namespace runnel::text {

using Json = nlohmann::json;

// Reads tokenizer.json's fields, naming the file and the field in every error
// (Error(Model)).
class JsonReader {
 public:
  explicit JsonReader(std::string source) : source_(std::move(source)) {}
  [[noreturn]] void Fail(std::string_view where, std::string_view what) const;
  const Json& Object(const Json& j, std::string_view where) const;
  const Json& Array(const Json& j, std::string_view where) const;
  // A member; `required` members must be present and not null (else: null Json).
  const Json& Member(const Json& j, const char* key, std::string_view where, bool required) const;
  std::string String(const Json& j, const char* key, std::string_view where) const;
  std::string StringOr(const Json& j, const char* key, std::string_view where, std::string fallback) const;
  bool BoolOr(const Json& j, const char* key, std::string_view where, bool fallback) const;
  int64_t Id(const Json& j, std::string_view where) const;  // 0 .. 2^31-1
  uint64_t Count(const Json& j, const char* key, std::string_view where, uint64_t fallback, uint64_t max) const;
  const std::string& source() const { return source_; }

 private:
  std::string source_;
};

// Token string → id, looked up by string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, int64_t, StringHash, std::equal_to<>>;
Vocab ReadVocab(const JsonReader& reader, const Json& j, std::string_view where);
int64_t FindId(const Vocab& vocab, std::string_view token);  // -1 when absent

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void Apply(std::u32string& text) const = 0;
  virtual std::string Describe() const = 0;
};
// Null for a null `j`. Sequences at most kMaxDepth deep.
std::unique_ptr<Normalizer> MakeNormalizer(const JsonReader& reader, const Json& j, std::string_view where,
                                           int depth = 0);

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits each piece further (in place). `at_start`: pieces[0] begins where the
  // whole text begins (no added token before it).
  virtual void Split(std::vector<std::u32string>& pieces, bool at_start) const = 0;
  // Whether Split looks at `at_start` (Metaspace's prepend_scheme "first").
  virtual bool UsesStart() const { return false; }
  virtual std::string Describe() const = 0;
};
std::unique_ptr<PreTokenizer> MakePreTokenizer(const JsonReader& reader, const Json& j, std::string_view where,
                                               int depth = 0);

// GPT-2's pre-tokenizer split (the ByteLevel regex
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+), exposed for tests.
std::vector<std::u32string> SplitGpt2(std::u32string_view text);
// GPT-2's bytes → printable characters table: byte b as a code point.
char32_t ByteLevelChar(uint8_t b);

class TokenModel {
 public:
  virtual ~TokenModel() = default;
  // Appends the ids of one pre-tokenized word.
  virtual void Tokenize(std::u32string_view word, std::vector<int64_t>& ids) const = 0;
  virtual size_t vocab_size() const = 0;
  virtual int64_t Find(std::string_view token) const = 0;  // -1 when absent
  virtual std::string Describe() const = 0;
};
std::unique_ptr<TokenModel> MakeTokenModel(const JsonReader& reader, const Json& j);

// Words tokenized before and their ids, as Hugging Face's tokenizers keep them (its
// BPE's cache): words recur, and merging them again is most of a tokenizer's time.
// Bounded: up to kMaxWords words of up to kMaxWordChars characters; once full, no more
// are added (the library does the same). Thread safety: any thread.
class WordCache {
 public:
  static constexpr size_t kMaxWords = 10'000;
  static constexpr size_t kMaxWordChars = 64;

  // Appends the ids of `word` and returns true when it is kept here.
  bool Find(std::u32string_view word, std::vector<int64_t>& ids) const EXCLUDES(mutex_);
  // Keeps `word`'s ids unless it is too long or the cache is full.
  void Add(std::u32string_view word, std::span<const int64_t> ids) EXCLUDES(mutex_);
  size_t size() const EXCLUDES(mutex_);

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::u32string_view s) const { return std::hash<std::u32string_view>{}(s); }
  };
  mutable Mutex mutex_;
  std::unordered_map<std::u32string, std::vector<int64_t>, Hash, std::equal_to<>> words_ GUARDED_BY(mutex_);
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void Process(std::vector<int64_t>& ids) const = 0;
  virtual size_t added_tokens() const = 0;  // how many Process adds
  virtual std::string Describe() const = 0;
};
std::unique_ptr<PostProcessor> MakePostProcessor(const JsonReader& reader, const Json& j, std::string_view where,
                                                 int depth = 0);

inline constexpr int kMaxDepth = 8;
// The largest vocabulary read (the largest public ones have about 260,000 tokens).
inline constexpr uint64_t kMaxVocab = 4'000'000;

// A stage object's "type", after the checks every stage makes: an object, sequences at
// most kMaxDepth deep. nullopt for a null stage (there is none).
std::optional<std::string> StageType(const JsonReader& reader, const Json& j, std::string_view where, int depth);

// The stages of a "Sequence" stage: `make` (a Make* function) on each item of array
// `key`, null items (a stage that does nothing) dropped.
template <typename Stage, typename Make>
std::vector<std::unique_ptr<Stage>> ReadSequence(const JsonReader& reader, const Json& j, std::string_view where,
                                                 const char* key, int depth, Make make) {
  const std::string list = fmt::format("{}.{}", where, key);
  const Json& items = reader.Array(reader.Member(j, key, where, true), list);
  std::vector<std::unique_ptr<Stage>> steps;
  for (size_t i = 0; i < items.size(); ++i) {
    auto step = make(reader, items[i], fmt::format("{}[{}]", list, i), depth + 1);
    if (step) steps.push_back(std::move(step));
  }
  return steps;
}

template <typename Stage>
std::string DescribeSequence(const std::vector<std::unique_ptr<Stage>>& steps) {
  std::vector<std::string> names;
  for (const auto& step : steps) names.push_back(step->Describe());
  return fmt::format("Sequence[{}]", fmt::join(names, ", "));
}

}  // namespace runnel::text
