// Token models as Hugging Face's tokenizers runs them (models/wordpiece, bpe,
// wordlevel, unigram): each turns one pre-tokenized word into ids.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <queue>

#include "runnel/core/error.hpp"
#include "tokenizer_parts.hpp"
#include "unicode_text.hpp"

namespace runnel::text {

namespace {

// The largest vocabulary and merge list read (GPT-2's are 50,257 and 50,000).
constexpr uint64_t kMaxMerges = 4'000'000;

size_t VocabSize(const Vocab& vocab) {
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab) max_id = std::max(max_id, id);
  return static_cast<size_t>(max_id + 1);
}

int64_t RequireToken(const JsonReader& reader, const Vocab& vocab, const std::string& token, std::string_view where) {
  const int64_t id = FindId(vocab, token);
  if (id < 0) reader.Fail(where, fmt::format("'{}' is not in the vocabulary", token));
  return id;
}

// Greedy longest-match-first over the word's characters; a word with a part no piece
// matches, or longer than max_input_chars_per_word, is the unknown token.
class WordPiece final : public TokenModel {
 public:
  WordPiece(Vocab vocab, int64_t unk, std::string prefix, size_t max_chars)
      : vocab_(std::move(vocab)),
        unk_(unk),
        prefix_(std::move(prefix)),
        max_chars_(max_chars),
        size_(VocabSize(vocab_)) {
    for (const auto& [token, id] : vocab_) longest_ = std::max(longest_, token.size());
  }

  void Tokenize(std::u32string_view word, std::vector<int64_t>& ids) const override {
    if (word.size() > max_chars_) {
      ids.push_back(unk_);
      return;
    }
    // Byte offset of each character boundary.
    const std::string utf8 = EncodeUtf8(word);
    std::vector<size_t> bounds{0};
    for (size_t i = 0; i < utf8.size(); ++i) {
      if ((static_cast<uint8_t>(utf8[i]) & 0xC0) != 0x80 && i != 0) bounds.push_back(i);
    }
    bounds.push_back(utf8.size());
    const size_t first = ids.size();
    std::string piece;
    for (size_t start = 0; start + 1 < bounds.size();) {
      int64_t found = -1;
      // No piece is longer than the vocabulary's longest token: a long word costs its
      // length times that, not its length squared.
      const size_t room = longest_ + bounds[start] - (start > 0 ? std::min(prefix_.size(), longest_) : 0);
      const auto past = std::upper_bound(bounds.begin() + static_cast<std::ptrdiff_t>(start) + 1, bounds.end(), room);
      size_t end = std::max<size_t>(start + 1, static_cast<size_t>(past - bounds.begin()) - 1);
      for (; end > start; --end) {
        piece.clear();
        if (start > 0) piece = prefix_;
        piece.append(utf8, bounds[start], bounds[end] - bounds[start]);
        if ((found = FindId(vocab_, piece)) >= 0) break;
      }
      if (found < 0) {
        ids.resize(first);
        ids.push_back(unk_);
        return;
      }
      ids.push_back(found);
      start = end;
    }
  }

  size_t vocab_size() const override { return size_; }
  int64_t Find(std::string_view token) const override { return FindId(vocab_, token); }
  std::string Describe() const override {
    return fmt::format("WordPiece({} tokens, prefix '{}', words up to {} characters)", vocab_.size(), prefix_,
                       max_chars_);
  }

 private:
  Vocab vocab_;
  int64_t unk_;
  std::string prefix_;
  size_t max_chars_;
  size_t size_;
  size_t longest_ = 0;  // bytes of the longest token
};

class WordLevel final : public TokenModel {
 public:
  WordLevel(Vocab vocab, int64_t unk) : vocab_(std::move(vocab)), unk_(unk), size_(VocabSize(vocab_)) {}
  void Tokenize(std::u32string_view word, std::vector<int64_t>& ids) const override {
    const int64_t id = FindId(vocab_, EncodeUtf8(word));
    if (id >= 0) {
      ids.push_back(id);
    } else if (unk_ >= 0) {
      ids.push_back(unk_);
    }
  }
  size_t vocab_size() const override { return size_; }
  int64_t Find(std::string_view token) const override { return FindId(vocab_, token); }
  std::string Describe() const override { return fmt::format("WordLevel({} tokens)", vocab_.size()); }

 private:
  Vocab vocab_;
  int64_t unk_;
  size_t size_;
};

struct BpeOptions {
  int64_t unk = -1;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  std::string prefix, suffix;  // continuing_subword_prefix, end_of_word_suffix
};

// Byte-pair encoding: the word's characters (each as a vocabulary token), merged pair
// by pair, the pair of lowest merge rank first (leftmost on ties), as the Rust
// implementation's priority queue does: O(n log n) in the word's length.
class Bpe final : public TokenModel {
 public:
  struct Merge {
    uint32_t rank;
    int64_t id;
  };
  // Ids are below 2^31 (JsonReader::Id).
  static uint64_t Key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b); }

  Bpe(Vocab vocab, std::unordered_map<uint64_t, Merge> merges, BpeOptions options)
      : vocab_(std::move(vocab)), merges_(std::move(merges)), options_(std::move(options)), size_(VocabSize(vocab_)) {}

  void Tokenize(std::u32string_view word, std::vector<int64_t>& ids) const override {
    if (options_.ignore_merges) {
      if (const int64_t id = FindId(vocab_, EncodeUtf8(word)); id >= 0) {
        ids.push_back(id);
        return;
      }
    }
    std::vector<Symbol> symbols = InitialSymbols(word);
    MergeAll(symbols);
    for (const Symbol& s : symbols) {
      if (s.id != kRemoved) ids.push_back(s.id);
    }
  }

  size_t vocab_size() const override { return size_; }
  int64_t Find(std::string_view token) const override { return FindId(vocab_, token); }
  std::string Describe() const override {
    return fmt::format("BPE({} tokens, {} merges{})", vocab_.size(), merges_.size(),
                       options_.byte_fallback ? ", byte fallback" : "");
  }

 private:
  static constexpr int64_t kRemoved = -2;
  struct Symbol {
    int64_t id;
    size_t prev, next;  // SIZE_MAX: none
  };

  std::vector<Symbol> InitialSymbols(std::u32string_view word) const {
    std::vector<Symbol> symbols;
    std::string piece;
    bool last_unk = false;
    for (size_t i = 0; i < word.size(); ++i) {
      piece.clear();
      if (i > 0) piece = options_.prefix;
      AppendUtf8(word.substr(i, 1), piece);
      if (i + 1 == word.size()) piece += options_.suffix;
      if (const int64_t id = FindId(vocab_, piece); id >= 0) {
        symbols.push_back({id, 0, 0});
        last_unk = false;
      } else if (options_.byte_fallback && AppendByteTokens(word.substr(i, 1), symbols)) {
        last_unk = false;
      } else if (options_.unk >= 0) {
        if (!(options_.fuse_unk && last_unk)) symbols.push_back({options_.unk, 0, 0});
        last_unk = true;
      }  // else: a character outside the vocabulary is dropped, as the library does
    }
    for (size_t i = 0; i < symbols.size(); ++i) {
      symbols[i].prev = i == 0 ? SIZE_MAX : i - 1;
      symbols[i].next = i + 1 == symbols.size() ? SIZE_MAX : i + 1;
    }
    return symbols;
  }

  // <0xXX> tokens for each byte of `c`, when the vocabulary has them all.
  bool AppendByteTokens(std::u32string_view c, std::vector<Symbol>& symbols) const {
    const std::string bytes = EncodeUtf8(c);
    std::vector<Symbol> out;
    for (const char b : bytes) {
      const int64_t id = FindId(vocab_, fmt::format("<0x{:02X}>", static_cast<uint8_t>(b)));
      if (id < 0) return false;
      out.push_back({id, 0, 0});
    }
    symbols.insert(symbols.end(), out.begin(), out.end());
    return true;
  }

  const Merge* Find(const Symbol& a, const Symbol& b) const {
    const auto it = merges_.find(Key(a.id, b.id));
    return it == merges_.end() ? nullptr : &it->second;
  }

  struct Candidate {
    uint32_t rank;
    size_t pos;
    int64_t id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };

  void MergeAll(std::vector<Symbol>& symbols) const {
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
    auto push = [&](size_t pos) {
      if (pos == SIZE_MAX || symbols[pos].next == SIZE_MAX) return;
      if (const Merge* m = Find(symbols[pos], symbols[symbols[pos].next])) queue.push({m->rank, pos, m->id});
    };
    for (size_t i = 0; i + 1 < symbols.size(); ++i) push(i);
    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      Symbol& left = symbols[top.pos];
      if (left.id == kRemoved || left.next == SIZE_MAX) continue;
      const Merge* m = Find(left, symbols[left.next]);
      if (m == nullptr || m->rank != top.rank || m->id != top.id) continue;  // stale: a neighbour merged
      Symbol& right = symbols[left.next];
      left.id = m->id;
      left.next = right.next;
      right.id = kRemoved;
      if (left.next != SIZE_MAX) symbols[left.next].prev = top.pos;
      push(left.prev);
      push(top.pos);
    }
  }

  Vocab vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  BpeOptions options_;
  size_t size_;
};

// A merge as "a b" (tokenizers ≤ 0.19) or ["a", "b"].
std::pair<std::string, std::string> ReadMerge(const JsonReader& reader, const Json& item, std::string_view where) {
  if (item.is_string()) {
    const auto& s = item.get_ref<const std::string&>();
    const size_t space = s.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == s.size() ||
        s.find(' ', space + 1) != std::string::npos)
      reader.Fail(where, fmt::format("'{}' is not two tokens separated by one space", s));
    return {s.substr(0, space), s.substr(space + 1)};
  }
  if (item.is_array() && item.size() == 2 && item[0].is_string() && item[1].is_string())
    return {item[0].get<std::string>(), item[1].get<std::string>()};
  reader.Fail(where, "is neither \"a b\" nor [\"a\", \"b\"]");
}

int64_t OptionalToken(const JsonReader& reader, const Json& j, const Vocab& vocab, const char* key,
                      std::string_view where) {
  const Json& token = reader.Member(j, key, where, false);
  if (token.is_null()) return -1;
  return RequireToken(reader, vocab, reader.String(j, key, where), fmt::format("{}.{}", where, key));
}

std::unique_ptr<TokenModel> MakeBpe(const JsonReader& reader, const Json& j) {
  const std::string where = "model";
  const Json& dropout = reader.Member(j, "dropout", where, false);
  if (!dropout.is_null() && !(dropout.is_number() && dropout.get<double>() == 0.0))
    reader.Fail("model.dropout", "BPE dropout is for training; a served tokenizer must not use it");
  Vocab vocab = ReadVocab(reader, reader.Member(j, "vocab", where, true), "model.vocab");
  BpeOptions options;
  options.unk = OptionalToken(reader, j, vocab, "unk_token", where);
  options.fuse_unk = reader.BoolOr(j, "fuse_unk", where, false);
  options.byte_fallback = reader.BoolOr(j, "byte_fallback", where, false);
  options.ignore_merges = reader.BoolOr(j, "ignore_merges", where, false);
  options.prefix = reader.StringOr(j, "continuing_subword_prefix", where, "");
  options.suffix = reader.StringOr(j, "end_of_word_suffix", where, "");
  const Json& items = reader.Array(reader.Member(j, "merges", where, true), "model.merges");
  if (items.size() > kMaxMerges) reader.Fail("model.merges", fmt::format("more than {} merges", kMaxMerges));
  std::unordered_map<uint64_t, Bpe::Merge> merges;
  merges.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string at = fmt::format("model.merges[{}]", i);
    auto [a, b] = ReadMerge(reader, items[i], at);
    const int64_t a_id = RequireToken(reader, vocab, a, at);
    const int64_t b_id = RequireToken(reader, vocab, b, at);
    if (!options.prefix.empty() && b.starts_with(options.prefix)) b.erase(0, options.prefix.size());
    const int64_t id = RequireToken(reader, vocab, a + b, at);
    // A pair listed twice takes its last rank, as the library's map does.
    merges.insert_or_assign(Bpe::Key(a_id, b_id), Bpe::Merge{static_cast<uint32_t>(i), id});
  }
  return std::make_unique<Bpe>(std::move(vocab), std::move(merges), std::move(options));
}

// The pieces of a Unigram vocabulary in a byte trie: each node's children are one
// contiguous run of edges sorted by byte, built breadth first from the sorted pieces.
class PieceTrie {
 public:
  // `pieces`: (bytes, id), sorted by bytes, no two equal, none empty.
  explicit PieceTrie(const std::vector<std::pair<std::string_view, int32_t>>& pieces) {
    struct Pending {
      uint32_t node;
      size_t lo, hi, depth;
    };
    nodes_.push_back({});
    std::deque<Pending> queue{{0, 0, pieces.size(), 0}};
    while (!queue.empty()) {
      auto [node, lo, hi, depth] = queue.front();
      queue.pop_front();
      if (lo < hi && pieces[lo].first.size() == depth) nodes_[node].id = pieces[lo++].second;
      nodes_[node].first_edge = static_cast<uint32_t>(edges_.size());
      for (size_t i = lo; i < hi;) {
        const char label = pieces[i].first[depth];
        size_t end = i + 1;
        while (end < hi && pieces[end].first[depth] == label) ++end;
        const auto child = static_cast<uint32_t>(nodes_.size());
        nodes_.push_back({});
        edges_.push_back({static_cast<uint8_t>(label), child});
        queue.push_back({child, i, end, depth + 1});
        i = end;
      }
      nodes_[node].edge_count = static_cast<uint32_t>(edges_.size()) - nodes_[node].first_edge;
    }
  }

  // Calls found(length, id) for each piece that begins `text`, shortest first.
  template <typename Found>
  void PrefixesOf(std::string_view text, Found found) const {
    uint32_t node = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      const Node& n = nodes_[node];
      const auto begin = edges_.begin() + n.first_edge;
      const auto end = begin + n.edge_count;
      const auto label = static_cast<uint8_t>(text[i]);
      const auto it = std::lower_bound(begin, end, label, [](const Edge& e, uint8_t b) { return e.label < b; });
      if (it == end || it->label != label) return;
      node = it->child;
      if (nodes_[node].id >= 0) found(i + 1, nodes_[node].id);
    }
  }

 private:
  struct Node {
    int32_t id = -1;
    uint32_t first_edge = 0, edge_count = 0;
  };
  struct Edge {
    uint8_t label;
    uint32_t child;
  };
  std::vector<Node> nodes_;
  std::vector<Edge> edges_;
};

// SentencePiece's unigram language model as tokenizers runs it (encode_optimized):
// the segmentation of the word's bytes into pieces of highest total score (Viterbi),
// a character no piece starts with costing the lowest score less 10 as the unknown
// piece; adjacent unknown pieces fused into one; a piece the vocabulary lacks (a fused
// run) as its <0xXX> byte pieces (byte_fallback) or the unknown id.
class Unigram final : public TokenModel {
 public:
  Unigram(std::vector<std::pair<std::string, double>> pieces, int64_t unk, bool byte_fallback)
      : pieces_(std::move(pieces)), unk_(unk), byte_fallback_(byte_fallback), trie_(SortedPieces()) {
    for (const auto& [piece, score] : pieces_) min_score_ = std::min(min_score_, score);
  }

  void Tokenize(std::u32string_view word, std::vector<int64_t>& ids) const override {
    const std::string text = EncodeUtf8(word);
    for (const auto& piece : BestPieces(text)) AppendIds(piece, ids);
  }

  size_t vocab_size() const override { return pieces_.size(); }
  int64_t Find(std::string_view token) const override { return FindId(ids_, token); }
  std::string Describe() const override {
    return fmt::format("Unigram({} pieces{})", pieces_.size(), byte_fallback_ ? ", byte fallback" : "");
  }

 private:
  static constexpr double kUnkPenalty = 10.0;

  // Unique pieces to their last id (as the library's map keeps), sorted for the trie.
  std::vector<std::pair<std::string_view, int32_t>> SortedPieces() {
    ids_.reserve(pieces_.size());
    for (size_t i = 0; i < pieces_.size(); ++i) ids_.insert_or_assign(pieces_[i].first, static_cast<int64_t>(i));
    std::vector<std::pair<std::string_view, int32_t>> sorted;
    sorted.reserve(ids_.size());
    for (const auto& [piece, id] : ids_) {
      if (!piece.empty()) sorted.emplace_back(piece, static_cast<int32_t>(id));
    }
    std::sort(sorted.begin(), sorted.end());
    return sorted;
  }

  struct Best {
    double score = 0;
    int64_t id = -1;
    size_t start = SIZE_MAX;  // SIZE_MAX: no path ends here yet
  };

  // The pieces (as byte ranges of `text`) of the best path, unknown runs fused.
  std::vector<std::string_view> BestPieces(std::string_view text) const {
    std::vector<Best> best(text.size() + 1);
    best[0].start = 0;
    for (size_t start = 0; start < text.size();) {
      const double here = best[start].score;
      const size_t char_len = Utf8Length(static_cast<uint8_t>(text[start]), text.size() - start);
      bool single = false;
      trie_.PrefixesOf(text.substr(start), [&](size_t length, int32_t id) {
        Offer(best[start + length], here + pieces_[static_cast<size_t>(id)].second, id, start);
        single = single || length == char_len;
      });
      if (!single) {
        Best& target = best[start + char_len];
        const double score = here + min_score_ - kUnkPenalty;
        if (unk_ < 0 && (target.start == SIZE_MAX || score > target.score))
          throw Error(ErrorCode::InvalidInput,
                      fmt::format("'{}' is in no piece of the Unigram vocabulary and it has no unk_id",
                                  text.substr(start, char_len)));
        if (unk_ >= 0) Offer(target, score, unk_, start);
      }
      start += char_len;
    }
    std::vector<std::string_view> pieces;
    size_t fused_start = SIZE_MAX, fused_end = 0;
    for (size_t end = text.size(); end > 0;) {
      const Best& node = best[end];
      if (node.id == unk_) {
        if (fused_start == SIZE_MAX) fused_end = end;
        fused_start = node.start;
      } else {
        if (fused_start != SIZE_MAX) pieces.push_back(text.substr(fused_start, fused_end - fused_start));
        fused_start = SIZE_MAX;
        pieces.push_back(text.substr(node.start, end - node.start));
      }
      end = node.start;
    }
    if (fused_start != SIZE_MAX) pieces.push_back(text.substr(fused_start, fused_end - fused_start));
    std::reverse(pieces.begin(), pieces.end());
    return pieces;
  }

  static void Offer(Best& target, double score, int64_t id, size_t start) {
    if (target.start == SIZE_MAX || score > target.score) target = {score, id, start};
  }

  static size_t Utf8Length(uint8_t lead, size_t left) {
    const size_t n = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : 4;
    return std::min(n, left);
  }

  void AppendIds(std::string_view piece, std::vector<int64_t>& ids) const {
    if (const int64_t id = FindId(ids_, piece); id >= 0) {
      ids.push_back(id);
      return;
    }
    if (byte_fallback_) {
      const size_t first = ids.size();
      for (const char b : piece) {
        const int64_t id = FindId(ids_, fmt::format("<0x{:02X}>", static_cast<uint8_t>(b)));
        if (id < 0) break;
        ids.push_back(id);
      }
      if (ids.size() - first == piece.size()) return;
      ids.resize(first);
    }
    ids.push_back(unk_);
  }

  std::vector<std::pair<std::string, double>> pieces_;
  Vocab ids_;
  int64_t unk_;
  bool byte_fallback_;
  double min_score_ = INFINITY;
  PieceTrie trie_;
};

std::unique_ptr<TokenModel> MakeUnigram(const JsonReader& reader, const Json& j) {
  const Json& list = reader.Array(reader.Member(j, "vocab", "model", true), "model.vocab");
  if (list.empty()) reader.Fail("model.vocab", "is empty");
  if (list.size() > kMaxVocab) reader.Fail("model.vocab", fmt::format("has more than {} pieces", kMaxVocab));
  std::vector<std::pair<std::string, double>> pieces;
  pieces.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& item = list[i];
    if (!item.is_array() || item.size() != 2 || !item[0].is_string() || !item[1].is_number())
      reader.Fail(fmt::format("model.vocab[{}]", i), "is not [piece, score]");
    const double score = item[1].get<double>();
    if (!std::isfinite(score)) reader.Fail(fmt::format("model.vocab[{}]", i), "has a score that is not finite");
    pieces.emplace_back(item[0].get<std::string>(), score);
  }
  int64_t unk = -1;
  if (const Json& id = reader.Member(j, "unk_id", "model", false); !id.is_null()) {
    unk = reader.Id(id, "model.unk_id");
    if (static_cast<size_t>(unk) >= pieces.size())
      reader.Fail("model.unk_id", fmt::format("{} is not below the vocabulary's {} pieces", unk, pieces.size()));
  }
  return std::make_unique<Unigram>(std::move(pieces), unk, reader.BoolOr(j, "byte_fallback", "model", false));
}

}  // namespace

std::unique_ptr<TokenModel> MakeTokenModel(const JsonReader& reader, const Json& j) {
  reader.Object(j, "model");
  const std::string type = reader.StringOr(j, "type", "model", j.contains("merges") ? "BPE" : "");
  if (type == "BPE") return MakeBpe(reader, j);
  if (type == "WordPiece") {
    Vocab vocab = ReadVocab(reader, reader.Member(j, "vocab", "model", true), "model.vocab");
    const int64_t unk =
        RequireToken(reader, vocab, reader.StringOr(j, "unk_token", "model", "[UNK]"), "model.unk_token");
    return std::make_unique<WordPiece>(std::move(vocab), unk,
                                       reader.StringOr(j, "continuing_subword_prefix", "model", "##"),
                                       reader.Count(j, "max_input_chars_per_word", "model", 100, 1'000'000));
  }
  if (type == "WordLevel") {
    Vocab vocab = ReadVocab(reader, reader.Member(j, "vocab", "model", true), "model.vocab");
    const int64_t unk = OptionalToken(reader, j, vocab, "unk_token", "model");
    return std::make_unique<WordLevel>(std::move(vocab), unk);
  }
  if (type == "Unigram") return MakeUnigram(reader, j);
  reader.Fail("model.type", fmt::format("'{}' is not supported (WordPiece, BPE, WordLevel and Unigram are)", type));
}

}  // namespace runnel::text
