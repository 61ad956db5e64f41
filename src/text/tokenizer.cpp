// Reading tokenizer.json and running its stages over one text: added tokens split out
// first, then normalizer, pre-tokenizer, model, truncation, post-processor.
#include "runnel/text/tokenizer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>

#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/core/unicode.hpp"
#include "tokenizer_parts.hpp"
#include "unicode_text.hpp"

namespace runnel::text {

namespace {

// Bounds on what a tokenizer.json may declare (and kMaxVocab).
constexpr uint64_t kMaxAddedTokens = 100'000;
constexpr size_t kMaxTokenChars = 1'000;      // an added token's content
constexpr size_t kMaxAddedChars = 1'000'000;  // all added tokens' contents together
// A text longer than this is refused rather than tokenized (it would be truncated to
// a few hundred tokens anyway).
constexpr size_t kMaxTextBytes = size_t{16} << 20;

}  // namespace

void JsonReader::Fail(std::string_view where, std::string_view what) const {
  throw Error(ErrorCode::Model, fmt::format("{}: {}: {}", source_, where, what));
}

const Json& JsonReader::Object(const Json& j, std::string_view where) const {
  if (!j.is_object()) Fail(where, "is not an object");
  return j;
}

const Json& JsonReader::Array(const Json& j, std::string_view where) const {
  if (!j.is_array()) Fail(where, "is not an array");
  return j;
}

const Json& JsonReader::Member(const Json& j, const char* key, std::string_view where, bool required) const {
  static const Json null_json;
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) Fail(where, fmt::format("has no '{}'", key));
    return null_json;
  }
  return *it;
}

std::string JsonReader::String(const Json& j, const char* key, std::string_view where) const {
  const Json& v = Member(j, key, where, true);
  if (!v.is_string()) Fail(fmt::format("{}.{}", where, key), "is not a string");
  return v.get<std::string>();
}

std::string JsonReader::StringOr(const Json& j, const char* key, std::string_view where, std::string fallback) const {
  if (Member(j, key, where, false).is_null()) return fallback;
  return String(j, key, where);
}

bool JsonReader::BoolOr(const Json& j, const char* key, std::string_view where, bool fallback) const {
  const Json& v = Member(j, key, where, false);
  if (v.is_null()) return fallback;
  if (!v.is_boolean()) Fail(fmt::format("{}.{}", where, key), "is not true or false");
  return v.get<bool>();
}

int64_t JsonReader::Id(const Json& j, std::string_view where) const {
  if (!j.is_number_integer() || j.get<int64_t>() < 0 || j.get<int64_t>() > INT32_MAX)
    Fail(where, "has an id that is not an integer from 0 to 2147483647");
  return j.get<int64_t>();
}

uint64_t JsonReader::Count(const Json& j, const char* key, std::string_view where, uint64_t fallback,
                           uint64_t max) const {
  const Json& v = Member(j, key, where, false);
  if (v.is_null()) return fallback;
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<uint64_t>() > max)
    Fail(fmt::format("{}.{}", where, key), fmt::format("is not an integer from 0 to {}", max));
  return v.get<uint64_t>();
}

std::optional<std::string> StageType(const JsonReader& reader, const Json& j, std::string_view where, int depth) {
  if (j.is_null()) return std::nullopt;
  reader.Object(j, where);
  if (depth > kMaxDepth) reader.Fail(where, fmt::format("sequences nest more than {} deep", kMaxDepth));
  return reader.String(j, "type", where);
}

Vocab ReadVocab(const JsonReader& reader, const Json& j, std::string_view where) {
  reader.Object(j, where);
  if (j.size() > kMaxVocab) reader.Fail(where, fmt::format("has more than {} tokens", kMaxVocab));
  Vocab vocab;
  vocab.reserve(j.size());
  for (const auto& [token, id] : j.items()) vocab.emplace(token, reader.Id(id, fmt::format("{}['{}']", where, token)));
  return vocab;
}

int64_t FindId(const Vocab& vocab, std::string_view token) {
  const auto it = vocab.find(token);
  return it == vocab.end() ? -1 : it->second;
}

namespace {

struct AddedToken {
  std::u32string content;
  int64_t id = 0;
  bool single_word = false, lstrip = false, rstrip = false;
};

// A run of plain text, or one added token (id >= 0).
struct Segment {
  std::u32string text;
  int64_t id = -1;
};

// Added tokens in a trie (one hash map of edges), matched leftmost-longest as the
// library does: a position costs at most the longest token's length.
class AddedTokens {
 public:
  void Add(AddedToken token) {
    uint32_t node = 0;
    for (const char32_t c : token.content) {
      const auto [it, added] = edges_.try_emplace(Edge(node, c), static_cast<uint32_t>(ends_.size()));
      if (added) ends_.push_back(-1);
      node = it->second;
    }
    if (ends_[node] < 0) ends_[node] = static_cast<int64_t>(tokens_.size());  // the first of equal contents
    tokens_.push_back(std::move(token));
  }
  bool empty() const { return tokens_.empty(); }

  std::vector<Segment> Split(std::u32string text) const {
    std::vector<Segment> out;
    if (tokens_.empty()) {
      out.push_back({std::move(text)});
      return out;
    }
    size_t plain = 0;
    for (size_t i = 0; i < text.size();) {
      const AddedToken* token = LongestAt(text, i);
      if (token == nullptr) {
        ++i;
        continue;
      }
      size_t start = i, end = i + token->content.size();
      if (token->single_word && !IsSingleWord(text, start, end)) {
        i = end;  // the match is dropped, its text stays plain
        continue;
      }
      if (token->lstrip)
        while (start > plain && IsWhitespace(text[start - 1])) --start;
      if (token->rstrip)
        while (end < text.size() && IsWhitespace(text[end])) ++end;
      if (start > plain) out.push_back({text.substr(plain, start - plain)});
      out.push_back({{}, token->id});
      plain = i = end;
    }
    if (plain < text.size()) out.push_back({text.substr(plain)});
    return out;
  }

 private:
  // Code points are below 2^21.
  static uint64_t Edge(uint32_t node, char32_t c) { return (static_cast<uint64_t>(node) << 21) | c; }

  const AddedToken* LongestAt(std::u32string_view text, size_t i) const {
    const AddedToken* best = nullptr;
    uint32_t node = 0;
    for (size_t j = i; j < text.size(); ++j) {
      const auto it = edges_.find(Edge(node, text[j] & 0x1FFFFF));
      if (it == edges_.end()) break;
      node = it->second;
      if (ends_[node] >= 0) best = &tokens_[static_cast<size_t>(ends_[node])];
    }
    return best;
  }
  static bool IsSingleWord(std::u32string_view text, size_t start, size_t end) {
    return (start == 0 || !IsAlphanumeric(text[start - 1])) && (end == text.size() || !IsAlphanumeric(text[end]));
  }

  std::vector<AddedToken> tokens_;
  std::unordered_map<uint64_t, uint32_t> edges_;  // (node, code point) -> node
  std::vector<int64_t> ends_{-1};                 // per node: the token ending there, or -1
};

}  // namespace

struct Tokenizer::Impl {
  std::string source;
  AddedTokens raw_added, normalized_added;  // matched before / after normalizing
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<TokenModel> model;
  std::unique_ptr<PostProcessor> post_processor;
  size_t max_length = 0;
  bool truncate_left = false;
  int64_t pad_id = 0;
  size_t vocab_size = 0;
  mutable WordCache word_cache;  // what `model` made of words seen before

  // Returns each added token's content and id (the pad token may be among them).
  std::vector<std::pair<std::string, int64_t>> ReadAddedTokens(const JsonReader& reader, const Json& j);
  void ReadTruncation(const JsonReader& reader, const Json& j);
  void ReadPadding(const JsonReader& reader, const Json& j, const std::vector<std::pair<std::string, int64_t>>& added);
  // Appends the ids of a plain segment (normalized, pre-tokenized, modelled);
  // `at_start`: the segment begins the text.
  void EncodeSegment(std::u32string text, std::vector<int64_t>& ids, size_t limit, bool at_start) const;
  void EncodeWords(std::u32string text, std::vector<int64_t>& ids, size_t limit, bool at_start) const;
};

std::vector<std::pair<std::string, int64_t>> Tokenizer::Impl::ReadAddedTokens(const JsonReader& reader, const Json& j) {
  std::vector<std::pair<std::string, int64_t>> names;
  size_t added_chars = 0;
  const Json& list = reader.Member(j, "added_tokens", "tokenizer", false);
  if (!list.is_null()) {
    reader.Array(list, "added_tokens");
    if (list.size() > kMaxAddedTokens) reader.Fail("added_tokens", fmt::format("more than {}", kMaxAddedTokens));
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string at = fmt::format("added_tokens[{}]", i);
      reader.Object(list[i], at);
      AddedToken token;
      const std::string content = reader.String(list[i], "content", at);
      token.content = DecodeUtf8(content);
      if (token.content.empty() || token.content.size() > kMaxTokenChars)
        reader.Fail(at + ".content", fmt::format("must have 1 to {} characters", kMaxTokenChars));
      if ((added_chars += token.content.size()) > kMaxAddedChars)
        reader.Fail(at, fmt::format("the added tokens have more than {} characters together", kMaxAddedChars));
      token.id = reader.Id(reader.Member(list[i], "id", at, true), at + ".id");
      token.single_word = reader.BoolOr(list[i], "single_word", at, false);
      token.lstrip = reader.BoolOr(list[i], "lstrip", at, false);
      token.rstrip = reader.BoolOr(list[i], "rstrip", at, false);
      const bool special = reader.BoolOr(list[i], "special", at, false);
      vocab_size = std::max(vocab_size, static_cast<size_t>(token.id) + 1);
      names.emplace_back(content, token.id);
      if (reader.BoolOr(list[i], "normalized", at, !special) && normalizer) {
        normalizer->Apply(token.content);
        if (token.content.empty()) continue;  // normalized away: it can never match
        normalized_added.Add(std::move(token));
      } else {
        raw_added.Add(std::move(token));
      }
    }
  }
  return names;
}

void Tokenizer::Impl::ReadTruncation(const JsonReader& reader, const Json& j) {
  const Json& t = reader.Member(j, "truncation", "tokenizer", false);
  if (t.is_null()) return;
  reader.Object(t, "truncation");
  max_length = reader.Count(t, "max_length", "truncation", 0, 1'000'000);
  const std::string direction = reader.StringOr(t, "direction", "truncation", "Right");
  if (direction != "Right" && direction != "Left")
    reader.Fail("truncation.direction", fmt::format("'{}' is neither Right nor Left", direction));
  truncate_left = direction == "Left";
}

void Tokenizer::Impl::ReadPadding(const JsonReader& reader, const Json& j,
                                  const std::vector<std::pair<std::string, int64_t>>& added) {
  const Json& p = reader.Member(j, "padding", "tokenizer", false);
  if (!p.is_null()) {
    reader.Object(p, "padding");
    if (p.contains("pad_id")) {
      pad_id = reader.Id(p["pad_id"], "padding.pad_id");
      return;
    }
  }
  for (const char* name : {"[PAD]", "<pad>"}) {
    for (const auto& [content, id] : added) {
      if (content == name) {
        pad_id = id;
        return;
      }
    }
    if (const int64_t id = model->Find(name); id >= 0) {
      pad_id = id;
      return;
    }
  }
}

bool WordCache::Find(std::u32string_view word, std::vector<int64_t>& ids) const {
  MutexLock lock(mutex_);
  const auto it = words_.find(word);
  if (it == words_.end()) return false;
  ids.insert(ids.end(), it->second.begin(), it->second.end());
  return true;
}

void WordCache::Add(std::u32string_view word, std::span<const int64_t> ids) {
  if (word.size() > kMaxWordChars) return;
  MutexLock lock(mutex_);
  if (words_.size() < kMaxWords) words_.emplace(std::u32string(word), std::vector<int64_t>(ids.begin(), ids.end()));
}

size_t WordCache::size() const {
  MutexLock lock(mutex_);
  return words_.size();
}

void Tokenizer::Impl::EncodeWords(std::u32string text, std::vector<int64_t>& ids, size_t limit, bool at_start) const {
  std::vector<std::u32string> words;
  words.push_back(std::move(text));
  if (pre_tokenizer) pre_tokenizer->Split(words, at_start);
  for (const auto& word : words) {
    if (ids.size() >= limit) return;
    if (word.empty() || word_cache.Find(word, ids)) continue;
    const size_t first = ids.size();
    model->Tokenize(word, ids);
    word_cache.Add(word, std::span(ids).subspan(first));
  }
}

void Tokenizer::Impl::EncodeSegment(std::u32string text, std::vector<int64_t>& ids, size_t limit, bool at_start) const {
  if (normalizer) normalizer->Apply(text);
  auto parts = normalized_added.Split(std::move(text));
  for (size_t i = 0; i < parts.size(); ++i) {
    if (ids.size() >= limit) return;
    if (parts[i].id >= 0) {
      ids.push_back(parts[i].id);
    } else {
      EncodeWords(std::move(parts[i].text), ids, limit, at_start && i == 0);
    }
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::shared_ptr<const Tokenizer> Tokenizer::Load(const std::filesystem::path& file) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(file, ec);
  if (!ec && size > kMaxFileBytes)
    throw Error(ErrorCode::Model,
                fmt::format("{}: {} bytes: a tokenizer.json is at most {} bytes", file.string(), size, kMaxFileBytes));
  return Parse(ReadFileBytes(file, "tokenizer"), file.string());
}

std::shared_ptr<const Tokenizer> Tokenizer::Parse(std::string_view json, const std::string& source) {
  if (json.size() > kMaxFileBytes)
    throw Error(ErrorCode::Model, fmt::format("{}: a tokenizer.json is at most {} bytes", source, kMaxFileBytes));
  Json j = Json::parse(json, nullptr, false);
  if (j.is_discarded()) throw Error(ErrorCode::Model, fmt::format("{}: is not JSON", source));
  const JsonReader reader(source);
  reader.Object(j, "tokenizer");
  auto impl = std::make_unique<Impl>();
  impl->source = source;
  impl->normalizer = MakeNormalizer(reader, reader.Member(j, "normalizer", "tokenizer", false), "normalizer");
  impl->pre_tokenizer =
      MakePreTokenizer(reader, reader.Member(j, "pre_tokenizer", "tokenizer", false), "pre_tokenizer");
  impl->model = MakeTokenModel(reader, reader.Member(j, "model", "tokenizer", true));
  impl->vocab_size = impl->model->vocab_size();
  impl->post_processor =
      MakePostProcessor(reader, reader.Member(j, "post_processor", "tokenizer", false), "post_processor");
  impl->ReadTruncation(reader, j);
  impl->ReadPadding(reader, j, impl->ReadAddedTokens(reader, j));
  return std::shared_ptr<const Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int64_t> Tokenizer::Encode(std::string_view text, size_t max_length) const {
  if (text.size() > kMaxTextBytes)
    throw Error(ErrorCode::InvalidInput, fmt::format("a text of {} bytes is longer than the tokenizer takes ({} bytes)",
                                                     text.size(), kMaxTextBytes));
  if (!Utf8Length(text)) throw Error(ErrorCode::InvalidInput, "the text is not valid UTF-8");
  const Impl& impl = *impl_;
  if (max_length == 0) max_length = impl.max_length;
  const size_t added = impl.post_processor ? impl.post_processor->added_tokens() : 0;
  const size_t body = max_length == 0 ? SIZE_MAX : (max_length > added ? max_length - added : 0);
  // Cut right, the words past the limit need not be tokenized at all.
  const size_t limit = impl.truncate_left ? SIZE_MAX : body;
  std::vector<int64_t> ids;
  auto segments = impl.raw_added.Split(DecodeUtf8(text));
  for (size_t i = 0; i < segments.size(); ++i) {
    if (ids.size() >= limit) break;
    if (segments[i].id >= 0) {
      ids.push_back(segments[i].id);
    } else {
      impl.EncodeSegment(std::move(segments[i].text), ids, limit, i == 0);
    }
  }
  if (ids.size() > body) {
    if (impl.truncate_left) {
      ids.erase(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(body));
    } else {
      ids.resize(body);
    }
  }
  if (impl.post_processor) impl.post_processor->Process(ids);
  return ids;
}

int64_t Tokenizer::pad_id() const {
  return impl_->pad_id;
}
size_t Tokenizer::max_length() const {
  return impl_->max_length;
}
size_t Tokenizer::vocab_size() const {
  return impl_->vocab_size;
}
const std::string& Tokenizer::source() const {
  return impl_->source;
}

std::vector<std::string> Tokenizer::Describe() const {
  const Impl& impl = *impl_;
  std::vector<std::string> lines;
  lines.push_back(fmt::format("normalizer      {}", impl.normalizer ? impl.normalizer->Describe() : "none"));
  lines.push_back(fmt::format("pre-tokenizer   {}", impl.pre_tokenizer ? impl.pre_tokenizer->Describe() : "none"));
  lines.push_back(fmt::format("model           {}", impl.model->Describe()));
  lines.push_back(fmt::format("post-processor  {}", impl.post_processor ? impl.post_processor->Describe() : "none"));
  lines.push_back(fmt::format("truncation      {}",
                              impl.max_length == 0 ? std::string("none") : fmt::format("{} tokens", impl.max_length)));
  lines.push_back(fmt::format("padding id      {}", impl.pad_id));
  return lines;
}

}  // namespace runnel::text
