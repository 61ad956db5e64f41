// Text operators: StringNormalizer (stop words out, Unicode case mapping by ICU, code
// point by code point; the `locale` attribute is not used), TfIdfVectorizer (n-gram
// counts over integer or string sequences, with skips; TF, IDF or TF-IDF weighting)
// and com.microsoft's Tokenizer (what scikit-learn text pipelines converted to ONNX
// use; RE2 regular expressions). Where the specification is open they do what ONNX
// Runtime does. A Tokenizer -> TfIdfVectorizer -> Normalizer -> LinearClassifier chain
// runs fused, sparse (FuseSparseText, at the end).
#include <absl/container/flat_hash_map.h>
#include <re2/re2.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <unordered_set>

#include "kernels.hpp"
#include "runnel/core/unicode.hpp"

namespace runnel::tensor {
namespace {

struct NormalizerState : NodeState {
  std::optional<CaseMapping> change;  // none: the case is kept
  bool case_sensitive = false;
  std::unordered_set<std::string> stopwords;  // lower-cased unless case-sensitive
};

std::shared_ptr<const NodeState> PrepareStringNormalizer(const Node& node) {
  auto s = std::make_shared<NormalizerState>();
  const std::string change = node.String("case_change_action", "NONE");
  if (change == "LOWER") {
    s->change = CaseMapping::kLower;
  } else if (change == "UPPER") {
    s->change = CaseMapping::kUpper;
  } else if (change != "NONE") {
    throw Error(ErrorCode::Model, fmt::format("case_change_action '{}' (NONE, LOWER or UPPER)", change));
  }
  s->case_sensitive = node.Int("is_case_sensitive", 0) != 0;
  for (const auto& w : node.StringList("stopwords")) {
    s->stopwords.insert(s->case_sensitive ? w : MapCase(w, CaseMapping::kLower));
  }
  return s;
}

// [C] or [1, C] strings: the stop words dropped, the rest case-mapped. Nothing left is
// one empty string ([1] or [1, 1]), as ONNX Runtime answers.
void StringNormalizer(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  if (x.type() != DataType::kString || x.rank() == 0 || x.rank() > 2 || (x.rank() == 2 && x.dim(0) != 1))
    throw Error(ErrorCode::Model,
                fmt::format("StringNormalizer takes strings of shape [C] or [1, C], not {}", ShapeText(x.shape())));
  const auto& s = node.State<NormalizerState>();
  std::vector<std::string> kept;
  for (const auto& word : x.strings()) {
    if (!Utf8Length(word)) throw Error(ErrorCode::Model, "StringNormalizer input is not valid UTF-8");
    const std::string key = s.case_sensitive ? word : MapCase(word, CaseMapping::kLower);
    if (!s.stopwords.contains(key)) kept.push_back(s.change ? MapCase(word, *s.change) : word);
  }
  if (kept.empty()) kept.emplace_back();
  const auto n = static_cast<int64_t>(kept.size());
  out[0] = Tensor(DataType::kString, x.rank() == 1 ? Shape{n} : Shape{1, n});
  out[0].strings() = std::move(kept);
}

enum class Weighting { kTf, kIdf, kTfIdf };

// The pool's items get small ids (a row's items are looked up once each); an n-gram is
// then the sequence of its items' ids: unigrams index a vector, bigrams one 64-bit
// key, longer n-grams a string of 4-byte ids.
struct TfIdfState : NodeState {
  Weighting weighting = Weighting::kTf;
  size_t min_n = 1, max_n = 1, max_skip = 0, output_size = 0;
  bool strings = false;
  std::vector<int64_t> indexes;  // per n-gram id: its output coordinate
  std::vector<float> weights;    // per output coordinate (ONNX Runtime's reading), or empty
  // Swiss tables: a row's every item and n-gram is looked up, most of them misses.
  absl::flat_hash_map<std::string, int32_t> string_items;  // pool item -> item id
  absl::flat_hash_map<int64_t, int32_t> int_items;
  std::vector<int64_t> unigrams;                    // per item id: its unigram's n-gram id, or -1
  absl::flat_hash_map<uint64_t, size_t> bigrams;    // (first << 32 | second) -> n-gram id
  absl::flat_hash_map<std::string, size_t> longer;  // the ids, 4 bytes each -> n-gram id

  // The item id of element i of x, or -1 when the pool does not hold it.
  int32_t ItemOf(const Tensor& x, size_t i) const {
    if (strings) {
      const auto it = string_items.find(x.strings()[i]);
      return it == string_items.end() ? -1 : it->second;
    }
    const auto it = int_items.find(IntAt(x, i));
    return it == int_items.end() ? -1 : it->second;
  }
  int32_t ItemOf(std::string_view item) const {
    const auto it = string_items.find(absl::string_view(item.data(), item.size()));
    return it == string_items.end() ? -1 : it->second;
  }
  int32_t AddItem(const std::string& item) {
    return string_items.emplace(item, static_cast<int32_t>(string_items.size())).first->second;
  }
  int32_t AddItem(int64_t item) {
    return int_items.emplace(item, static_cast<int32_t>(int_items.size())).first->second;
  }
};

uint64_t BigramKey(int32_t first, int32_t second) {
  return static_cast<uint64_t>(static_cast<uint32_t>(first)) << 32 | static_cast<uint32_t>(second);
}

void AppendId(std::string& key, int32_t id) {
  key.append(reinterpret_cast<const char*>(&id), sizeof(id));
}

int64_t RequiredInt(const Node& node, std::string_view name) {
  const auto* a = node.Find(name);
  if (a == nullptr || a->kind != Attribute::Kind::kInt)
    throw Error(ErrorCode::Model, fmt::format("{} is required", name));
  return a->i;
}

// The pool's n-grams of the lengths [min_n, max_n] into the maps; n-grams of other
// lengths take ids too (they keep their place in ngram_indexes) but are never counted.
void AddPool(TfIdfState& s, const Node& node, const std::vector<int64_t>& counts) {
  const auto strings = node.StringList("pool_strings");
  const auto ints = node.IntList("pool_int64s");
  s.strings = !strings.empty();
  const size_t total = s.strings ? strings.size() : ints.size();
  if (total == 0) throw Error(ErrorCode::Model, "TfIdfVectorizer needs pool_strings or pool_int64s");
  size_t id = 0;
  std::vector<int32_t> items;
  for (size_t g = 0; g < counts.size(); ++g) {
    const size_t n = g + 1;
    const auto begin = static_cast<size_t>(counts[g]);
    const size_t end = g + 1 < counts.size() ? static_cast<size_t>(counts[g + 1]) : total;
    if (counts[g] < 0 || end < begin || end > total || (end - begin) % n != 0)
      throw Error(ErrorCode::Model, fmt::format("ngram_counts do not split the pool of {} into {}-grams", total, n));
    for (size_t at = begin; at < end; at += n, ++id) {
      if (n < s.min_n || n > s.max_n) continue;
      items.clear();
      for (size_t k = at; k < at + n; ++k) items.push_back(s.strings ? s.AddItem(strings[k]) : s.AddItem(ints[k]));
      bool added = false;
      if (n == 1) {
        if (s.unigrams.size() <= static_cast<size_t>(items[0]))
          s.unigrams.resize(static_cast<size_t>(items[0]) + 1, -1);
        added = s.unigrams[static_cast<size_t>(items[0])] < 0;
        if (added) s.unigrams[static_cast<size_t>(items[0])] = static_cast<int64_t>(id);
      } else if (n == 2) {
        added = s.bigrams.emplace(BigramKey(items[0], items[1]), id).second;
      } else {
        std::string key;
        for (const int32_t item : items) AppendId(key, item);
        added = s.longer.emplace(std::move(key), id).second;
      }
      if (!added) throw Error(ErrorCode::Model, fmt::format("the pool lists a {}-gram twice", n));
    }
  }
  s.unigrams.resize(s.strings ? s.string_items.size() : s.int_items.size(), -1);
  if (id > s.indexes.size())
    throw Error(ErrorCode::Model, fmt::format("{} n-grams in the pool, {} ngram_indexes", id, s.indexes.size()));
}

std::shared_ptr<const NodeState> PrepareTfIdf(const Node& node) {
  auto s = std::make_shared<TfIdfState>();
  const std::string mode = node.String("mode", "");
  if (mode == "TF") {
    s->weighting = Weighting::kTf;
  } else if (mode == "IDF") {
    s->weighting = Weighting::kIdf;
  } else if (mode == "TFIDF") {
    s->weighting = Weighting::kTfIdf;
  } else {
    throw Error(ErrorCode::Model, fmt::format("mode '{}' (TF, IDF or TFIDF)", mode));
  }
  const int64_t min_n = RequiredInt(node, "min_gram_length"), max_n = RequiredInt(node, "max_gram_length");
  const int64_t skip = RequiredInt(node, "max_skip_count");
  const auto counts = node.IntList("ngram_counts");
  if (min_n < 1 || max_n < min_n || static_cast<size_t>(max_n) > counts.size() || skip < 0 || skip > (1 << 20))
    throw Error(ErrorCode::Model, fmt::format("gram lengths {}..{} with {} ngram_counts and max_skip_count {}", min_n,
                                              max_n, counts.size(), skip));
  s->min_n = static_cast<size_t>(min_n);
  s->max_n = static_cast<size_t>(max_n);
  s->max_skip = static_cast<size_t>(skip);
  s->indexes = node.IntList("ngram_indexes");
  if (s->indexes.empty() || *std::min_element(s->indexes.begin(), s->indexes.end()) < 0 ||
      *std::max_element(s->indexes.begin(), s->indexes.end()) >= static_cast<int64_t>(kMaxElements))
    throw Error(ErrorCode::Model, "ngram_indexes must be non-empty output coordinates");
  s->output_size = static_cast<size_t>(*std::max_element(s->indexes.begin(), s->indexes.end())) + 1;
  s->weights = node.FloatList("weights");
  if (!s->weights.empty() && s->weights.size() != s->indexes.size())
    throw Error(ErrorCode::Model, fmt::format("{} weights for {} ngram_indexes", s->weights.size(), s->indexes.size()));
  AddPool(*s, node, counts);
  return s;
}

// The item ids of elements [begin, begin + len) of x, -1 for one the pool does not hold.
void ItemsOf(const TfIdfState& s, const Tensor& x, size_t begin, size_t len, std::vector<int32_t>& items) {
  items.resize(len);
  for (size_t i = 0; i < len; ++i) items[i] = s.ItemOf(x, begin + i);
}

// Adds the n-gram counts of one row, the item ids `items` (-1: in no n-gram), to
// `counts` (output_size floats): unigrams once each; longer n-grams for every skip
// distance 1..max_skip+1 (items that far apart). The coordinates counted are appended
// to `touched` (a row's few among many).
void CountRow(const TfIdfState& s, std::span<const int32_t> items, float* counts, std::vector<size_t>& touched) {
  auto count = [&](size_t ngram) {
    const auto at = static_cast<size_t>(s.indexes[ngram]);
    if (counts[at] == 0.0f) touched.push_back(at);
    counts[at] += 1.0f;
  };
  const size_t len = items.size();
  size_t start_n = s.min_n;
  if (start_n == 1) {
    for (const int32_t item : items) {
      if (item >= 0 && s.unigrams[static_cast<size_t>(item)] >= 0)
        count(static_cast<size_t>(s.unigrams[static_cast<size_t>(item)]));
    }
    if (++start_n > s.max_n) return;
  }
  // A distance past the row fits no n-gram of two or more: a max_skip_count of 2^20
  // costs nothing more than the row's length.
  std::string key;
  for (size_t distance = 1; distance <= std::min(s.max_skip + 1, len); ++distance) {
    for (size_t first = 0; first + distance * (start_n - 1) < len; ++first) {
      if (items[first] < 0) continue;
      key.clear();
      AppendId(key, items[first]);
      for (size_t n = 2, at = first + distance; n <= s.max_n && at < len; ++n, at += distance) {
        if (items[at] < 0) break;
        AppendId(key, items[at]);
        if (n < start_n) continue;
        if (n == 2) {
          const auto it = s.bigrams.find(BigramKey(items[first], items[at]));
          if (it != s.bigrams.end()) count(it->second);
        } else {
          const auto it = s.longer.find(key);
          if (it != s.longer.end()) count(it->second);
        }
      }
    }
  }
}

// The rows and length of TfIdfVectorizer's input: [C] one row, [N, C] N rows. Throws
// Error(Model) for another rank or an element type the pool does not hold.
std::pair<size_t, size_t> TfIdfRows(const TfIdfState& s, const Tensor& x) {
  const bool strings = x.type() == DataType::kString;
  if (x.rank() > 2 || strings != s.strings ||
      (!strings && x.type() != DataType::kInt64 && x.type() != DataType::kInt32))
    throw Error(ErrorCode::Model,
                fmt::format("TfIdfVectorizer of {} {} for a pool of {}", DataTypeName(static_cast<int>(x.type())),
                            ShapeText(x.shape()), s.strings ? "strings" : "integers"));
  const size_t rows = x.rank() == 2 ? static_cast<size_t>(x.dim(0)) : 1;
  const size_t len = x.rank() == 0 ? 1 : static_cast<size_t>(x.dim(x.rank() - 1));
  return {rows, len};
}

// Output coordinate i's value from its n-gram count (the others are 0 under every
// weighting). Past the weights (a sparse ngram_indexes) the weight is 1.
float Weighted(const TfIdfState& s, size_t i, float count) {
  const float w = i < s.weights.size() ? s.weights[i] : 1.0f;
  if (s.weighting == Weighting::kIdf) return w;
  if (s.weighting == Weighting::kTfIdf) return count * w;
  return count;
}

// [C] -> [output_size], [N, C] -> [N, output_size] (float).
void TfIdfVectorizer(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto& s = node.State<TfIdfState>();
  const auto [rows, len] = TfIdfRows(s, x);
  const auto size = static_cast<int64_t>(s.output_size);
  out[0] = Tensor(DataType::kFloat, x.rank() == 2 ? Shape{x.dim(0), size} : Shape{size});
  auto y = out[0].data<float>();
  std::vector<size_t> touched;
  std::vector<int32_t> items;
  for (size_t r = 0; r < rows; ++r) {
    float* row = y.data() + r * s.output_size;
    touched.clear();
    ItemsOf(s, x, r * len, len, items);
    CountRow(s, items, row, touched);
    for (const size_t i : touched) row[i] = Weighted(s, i, row[i]);
  }
}

// ---- com.microsoft Tokenizer ----

struct TokenizerState : NodeState {
  bool mark = false;  // a start (U+0002) and end (U+0003) token around each row's tokens
  std::string pad;
  size_t min_chars = 1;
  bool characters = false;                            // each code point is a token
  std::vector<std::unique_ptr<re2::RE2>> separators;  // split by each in turn
  std::unique_ptr<re2::RE2> expression;               // or: the tokens are its matches
};

std::unique_ptr<re2::RE2> CompileRegex(const std::string& pattern, std::string_view attribute) {
  re2::RE2::Options options;
  options.set_longest_match(true);  // as ONNX Runtime compiles them
  options.set_log_errors(false);
  auto re = std::make_unique<re2::RE2>(pattern, options);
  if (!re->ok())
    throw Error(ErrorCode::Model,
                fmt::format("{} '{}' is not a valid RE2 expression: {}", attribute, pattern, re->error()));
  return re;
}

std::shared_ptr<const NodeState> PrepareTokenizer(const Node& node) {
  auto s = std::make_shared<TokenizerState>();
  s->mark = RequiredInt(node, "mark") != 0;
  const auto* pad = node.Find("pad_value");
  if (pad == nullptr || pad->kind != Attribute::Kind::kString) throw Error(ErrorCode::Model, "pad_value is required");
  s->pad = pad->s;
  const int64_t min_chars = RequiredInt(node, "mincharnum");
  if (min_chars < 1) throw Error(ErrorCode::Model, fmt::format("mincharnum {} must be positive", min_chars));
  s->min_chars = static_cast<size_t>(min_chars);
  const auto* separators = node.Find("separators");
  if (separators != nullptr) {
    const auto list = node.StringList("separators");
    if (list.empty()) throw Error(ErrorCode::Model, "separators must not be empty");
    s->characters = list.size() == 1 && list[0].empty();
    if (!s->characters)
      for (const auto& sep : list) s->separators.push_back(CompileRegex(sep, "separator"));
  } else {
    const std::string expression = node.String("tokenexp", "");
    if (expression.empty()) throw Error(ErrorCode::Model, "either separators or a non-empty tokenexp is required");
    s->characters = expression == ".";
    if (!s->characters) s->expression = CompileRegex(expression, "tokenexp");
  }
  if (s->characters && s->min_chars > 1)
    throw Error(ErrorCode::Model, fmt::format("mincharnum {} is too large for tokens of one character", min_chars));
  return s;
}

using Tokens = std::vector<std::string_view>;
constexpr std::string_view kStartMark = "\x02", kEndMark = "\x03";

bool LongEnough(const TokenizerState& s, std::string_view token) {
  return Utf8Length(token).value_or(0) >= s.min_chars;
}

void CharacterTokens(std::string_view text, Tokens& row) {
  for (size_t at = 0; at < text.size();) {
    const size_t n = FirstCharBytes(text.substr(at));
    row.push_back(text.substr(at, n));
    at += n;
  }
}

// The pieces between the separator's matches, long enough ones only. An empty match
// skips one character (as ONNX Runtime does).
void SplitBy(const TokenizerState& s, const re2::RE2& separator, std::string_view text, Tokens& out) {
  size_t start = 0;
  re2::StringPiece match;
  while (start <= text.size() && separator.Match(re2::StringPiece(text.data(), text.size()), start, text.size(),
                                                 re2::RE2::UNANCHORED, &match, 1)) {
    const auto at = static_cast<size_t>(match.data() - text.data());
    const std::string_view token = text.substr(start, at - start);
    if (LongEnough(s, token)) out.push_back(token);
    start = match.empty() ? at + (at < text.size() ? FirstCharBytes(text.substr(at)) : 1) : at + match.size();
  }
  if (start < text.size() && LongEnough(s, text.substr(start))) out.push_back(text.substr(start));
}

// The expression's successive matches, long enough ones only; after a short one the
// search resumes one character past where it began.
void MatchTokens(const TokenizerState& s, std::string_view text, Tokens& row) {
  size_t start = 0;
  re2::StringPiece match;
  while (start <= text.size() && s.expression->Match(re2::StringPiece(text.data(), text.size()), start, text.size(),
                                                     re2::RE2::UNANCHORED, &match, 1)) {
    const auto at = static_cast<size_t>(match.data() - text.data());
    const std::string_view token(match.data(), match.size());
    if (LongEnough(s, token)) {
      row.push_back(token);
      start = at + token.size();
    } else {
      start = at + (at < text.size() ? FirstCharBytes(text.substr(at)) : 1);
    }
  }
}

Tokens TokenizeOne(const TokenizerState& s, std::string_view text) {
  if (!Utf8Length(text)) throw Error(ErrorCode::Model, "Tokenizer input is not valid UTF-8");
  Tokens row;
  if (s.characters) {
    CharacterTokens(text, row);
  } else if (s.expression) {
    MatchTokens(s, text, row);
  } else {
    row.push_back(text);
    for (const auto& separator : s.separators) {
      Tokens split;
      for (const auto piece : row) SplitBy(s, *separator, piece, split);
      row = std::move(split);
    }
  }
  return row;
}

// Each string's tokens (views into x), and the width T they are padded to: the longest
// row's, with the two marks, or 0 when every row is empty.
struct TokenizedRows {
  std::vector<Tokens> rows;
  size_t width = 0;
};

TokenizedRows TokenizeRows(const TokenizerState& s, const Tensor& x) {
  TokenizedRows t;
  size_t longest = 0;
  t.rows.reserve(x.size());
  for (const auto& text : x.strings()) {
    t.rows.push_back(TokenizeOne(s, text));
    longest = std::max(longest, t.rows.back().size());
  }
  t.width = longest == 0 ? 0 : longest + (s.mark ? 2 : 0);
  return t;
}

// [C] -> [C, T], [N, C] -> [N, C, T]: each string's tokens, framed by the start and
// end marks when `mark`, then padded to the longest row's T with pad_value.
void Tokenizer(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  if (x.type() != DataType::kString || x.rank() < 1 || x.rank() > 2)
    throw Error(ErrorCode::Model,
                fmt::format("Tokenizer takes strings of shape [C] or [N, C], not {}", ShapeText(x.shape())));
  const auto& s = node.State<TokenizerState>();
  const TokenizedRows tokens = TokenizeRows(s, x);
  Shape shape = x.shape();
  if (x.size() == 0) shape = x.rank() == 2 ? Shape{x.dim(0)} : Shape{};  // ONNX Runtime's [N, 0] and [0]
  const size_t width = tokens.width;
  shape.push_back(static_cast<int64_t>(width));
  out[0] = Tensor(DataType::kString, shape);
  auto& y = out[0].strings();
  size_t at = 0;
  for (const auto& row : tokens.rows) {
    if (width == 0) break;
    const size_t end = at + width;
    if (s.mark) y[at++] = kStartMark;
    for (const auto token : row) y[at++] = std::string(token);
    if (s.mark) y[at++] = kEndMark;
    while (at < end) y[at++] = s.pad;
  }
}

// ---- [Tokenizer ->] TfIdfVectorizer -> Normalizer -> LinearClassifier, fused ----
// scikit-learn's text classifiers converted to ONNX score a TF-IDF row (a few dozen
// n-grams among thousands of coordinates), normalized, by a linear model. As separate
// kernels every row is padded to the batch's longest as strings, then written, copied
// and scanned whole, thousands of floats three times over; fused, only a row's own
// tokens and n-grams are touched. The answers are the separate kernels' bit for bit
// (tests/tensor): the same items, values, divisor and sums, in the same order.

struct SparseTextState : NodeState {
  std::shared_ptr<const NodeState> tokenizer;      // a TokenizerState, when the chain starts with one
  std::shared_ptr<const NodeState> tfidf, linear;  // a TfIdfState, a LinearState
  Norm norm = Norm::kL2;
  int32_t start_item = -1, end_item = -1, pad_item = -1;  // the Tokenizer's marks and pad, as pool items

  const TfIdfState& TfIdf() const { return static_cast<const TfIdfState&>(*tfidf); }
  const LinearState& Linear() const { return static_cast<const LinearState&>(*linear); }
};

// Scratch of one fused run, reused row after row.
struct SparseRow {
  std::vector<float> counts;  // output_size zeros, left zero
  std::vector<size_t> touched;
  std::vector<int32_t> items;
  std::vector<float> values;
  std::vector<uint32_t> coords;
};

// The item ids the Tokenizer's output row would hold: the marks around the tokens, then
// the pad up to `width` (left out when the pool lacks it: trailing items in no n-gram
// count nothing).
void TokenItems(const SparseTextState& fused, const Tokens& tokens, size_t width, std::vector<int32_t>& items) {
  const auto& tokenizer = static_cast<const TokenizerState&>(*fused.tokenizer);
  items.clear();
  if (width == 0) return;
  if (tokenizer.mark) items.push_back(fused.start_item);
  for (const auto token : tokens) items.push_back(fused.TfIdf().ItemOf(token));
  if (tokenizer.mark) items.push_back(fused.end_item);
  if (fused.pad_item >= 0) items.resize(width, fused.pad_item);
}

// One row's normalized TF-IDF values, from its item ids, added into its scores `acc`.
void ScoreRow(const SparseTextState& fused, SparseRow& row, float* acc) {
  const TfIdfState& s = fused.TfIdf();
  row.touched.clear();
  CountRow(s, row.items, row.counts.data(), row.touched);
  std::sort(row.touched.begin(), row.touched.end());  // the dense kernels' order
  row.values.clear();
  row.coords.clear();
  for (const size_t i : row.touched) {
    row.values.push_back(Weighted(s, i, row.counts[i]));
    row.coords.push_back(static_cast<uint32_t>(i));
    row.counts[i] = 0.0f;
  }
  const float d = SparseDivisor(fused.norm, row.values, row.coords, s.output_size);
  for (size_t k = 0; k < row.values.size(); ++k) {
    const float v = d != 0 ? row.values[k] / d : row.values[k];
    if (v != 0.0f) fused.Linear().Accumulate(row.coords[k], v, acc);
  }
}

// The scores of the rows of x (TfIdfVectorizer's input), row by row through `score`.
template <typename Score>
void ScoreTfIdfInput(const SparseTextState& fused, const Tensor& x, SparseRow& row, Score score) {
  const auto [rows, len] = TfIdfRows(fused.TfIdf(), x);
  for (size_t r = 0; r < rows; ++r) {
    ItemsOf(fused.TfIdf(), x, r * len, len, row.items);
    score(r);
  }
}

// The scores of the texts x (the Tokenizer's input: [N] strings, one row each).
template <typename Score>
void ScoreTexts(const SparseTextState& fused, const Tensor& x, SparseRow& row, Score score) {
  if (x.type() != DataType::kString || x.rank() != 1)
    throw Error(ErrorCode::Model, fmt::format("the Tokenizer feeding TfIdfVectorizer takes [N] strings, not {} {}",
                                              DataTypeName(static_cast<int>(x.type())), ShapeText(x.shape())));
  const TokenizedRows tokens = TokenizeRows(static_cast<const TokenizerState&>(*fused.tokenizer), x);
  for (size_t r = 0; r < tokens.rows.size(); ++r) {
    TokenItems(fused, tokens.rows[r], tokens.width, row.items);
    score(r);
  }
  if (tokens.rows.empty()) {  // [0] strings tokenize to [0]: TfIdfVectorizer's one row of nothing
    row.items.clear();
    score(0);
  }
}

void SparseTextClassifier(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto& fused = node.State<SparseTextState>();
  const LinearState& linear = fused.Linear();
  const size_t rows = fused.tokenizer ? std::max<size_t>(x.size(), 1) : TfIdfRows(fused.TfIdf(), x).first;
  std::vector<float> scores(rows * linear.targets);
  SparseRow row;
  row.counts.resize(linear.cols);
  auto score = [&](size_t r) {
    float* acc = scores.data() + r * linear.targets;
    std::copy(linear.intercepts.begin(), linear.intercepts.end(), acc);
    ScoreRow(fused, row, acc);
  };
  if (fused.tokenizer) {
    ScoreTexts(fused, x, row, score);
  } else {
    ScoreTfIdfInput(fused, x, row, score);
  }
  ClassifierOutputs(node, linear.targets, scores, rows, out);
}

// The node that computes value `id`, or -1.
int Writer(const Graph& g, int id) {
  for (size_t n = 0; n < g.nodes.size(); ++n) {
    const auto& outputs = g.nodes[n].outputs;
    if (std::find(outputs.begin(), outputs.end(), id) != outputs.end()) return static_cast<int>(n);
  }
  return -1;
}

bool Is(const Node& node, std::string_view domain, std::string_view op) {
  return node.domain == domain && node.op == op;
}

// The fused node for nodes t -> n -> l, or nullopt when they do not fit together (the
// kernels then run apart, and fail as they would).
std::optional<Node> Fuse(const Node& t, const Node& n, const Node& l) {
  if (!t.state || !l.state || t.inputs.size() != 1 || n.inputs.size() != 1 || n.inputs[0] != t.outputs[0] ||
      l.inputs.size() != 1 || l.inputs[0] != n.outputs[0])
    return std::nullopt;
  auto state = std::make_shared<SparseTextState>();
  state->tfidf = t.state;
  state->linear = l.state;
  try {
    state->norm = NormOf(n);
  } catch (const UnsupportedError&) {
    return std::nullopt;
  }
  if (t.State<TfIdfState>().output_size != l.State<LinearState>().cols) return std::nullopt;
  Node f = l;
  f.op = "TfIdfVectorizer+Normalizer+LinearClassifier";
  f.inputs = t.inputs;
  for (const auto* part : {&t, &n}) f.attributes.insert(part->attributes.begin(), part->attributes.end());
  f.kernel = SparseTextClassifier;
  f.state = std::move(state);
  return f;
}

// Folds the Tokenizer `k` (whose tokens only `f` reads) into the fused node `f`, when
// its tokens are what f's pool holds: strings.
bool FuseTokenizer(const Node& k, Node& f) {
  const TfIdfState& tfidf = f.State<SparseTextState>().TfIdf();
  if (!k.state || k.inputs.size() != 1 || !tfidf.strings) return false;
  auto state = std::make_shared<SparseTextState>(f.State<SparseTextState>());
  state->tokenizer = k.state;
  state->start_item = tfidf.ItemOf(kStartMark);
  state->end_item = tfidf.ItemOf(kEndMark);
  state->pad_item = tfidf.ItemOf(k.State<TokenizerState>().pad);
  f.op = "Tokenizer+" + f.op;
  f.inputs = k.inputs;
  f.attributes.insert(k.attributes.begin(), k.attributes.end());
  f.state = std::move(state);
  return true;
}

// Fuses the first chain found. Readers come after writers: k < i < n < l; the fused
// node takes l's place.
bool FuseOneSparseText(Graph& g) {
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!Is(g.nodes[i], "", "TfIdfVectorizer")) continue;
    const int n = SoleReader(g, g.nodes[i].outputs[0]);
    if (n < 0 || !Is(g.nodes[n], "ai.onnx.ml", "Normalizer")) continue;
    const int l = SoleReader(g, g.nodes[n].outputs[0]);
    if (l < 0 || !Is(g.nodes[l], "ai.onnx.ml", "LinearClassifier")) continue;
    auto fused = Fuse(g.nodes[i], g.nodes[n], g.nodes[l]);
    if (!fused) continue;
    const int k = Writer(g, g.nodes[i].inputs[0]);
    const bool tokenizer = k >= 0 && Is(g.nodes[k], "com.microsoft", "Tokenizer") &&
                           SoleReader(g, g.nodes[k].outputs[0]) == static_cast<int>(i) &&
                           FuseTokenizer(g.nodes[k], *fused);
    g.nodes[l] = std::move(*fused);
    g.nodes.erase(g.nodes.begin() + n);
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
    if (tokenizer) g.nodes.erase(g.nodes.begin() + k);
    return true;
  }
  return false;
}

}  // namespace

void FuseSparseText(Graph& g) {
  while (FuseOneSparseText(g)) {
  }
}

void AddTextKernels(std::vector<KernelEntry>& t) {
  t.push_back({"StringNormalizer", 10, StringNormalizer, "", PrepareStringNormalizer});
  t.push_back({"TfIdfVectorizer", 9, TfIdfVectorizer, "", PrepareTfIdf});
  t.push_back({"Tokenizer", 1, Tokenizer, "com.microsoft", PrepareTokenizer});
}

}  // namespace runnel::tensor
