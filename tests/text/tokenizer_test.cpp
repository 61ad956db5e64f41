// Hugging Face tokenizers (include/runnel/text/tokenizer.hpp) against the token ids a
// Python implementation of the reference algorithms gives for the same tokenizer.json
// and texts (tests/text/tokenizer_fixtures.py: Google's BERT tokenization, OpenAI's
// GPT-2 encoder, tokenizers' Unigram with SentencePiece's precompiled rules), against
// SentencePiece's own encoder, and hostile tokenizer files.
#include "runnel/text/tokenizer.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "../support/error_message.hpp"
#include "../support/python_fixtures.hpp"
#include "precompiled.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/core/unicode.hpp"
#include "tokenizer_parts.hpp"

namespace runnel::text {
namespace {

using Json = nlohmann::json;
using testing::PythonFixtures;

const PythonFixtures& Fixtures() {
  static PythonFixtures fixtures("../text/tokenizer_fixtures.py");
  return fixtures;
}

class TokenizerReference : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!Fixtures().Ready("python3-regex and python3-sentencepiece")) GTEST_SKIP();
    cases_ = Json::parse(ReadFileBytes(Fixtures() / "cases.json"));
  }
  Json cases_;
};

TEST_P(TokenizerReference, EveryTextGivesThePythonIds) {
  const std::string name = GetParam();
  const auto tokenizer = Tokenizer::Load(Fixtures() / (name + ".json"));
  ASSERT_GT(cases_.size(), 400u);
  // The second pass finds the words of the first in the tokenizer's word cache.
  for (const char* pass : {"first", "second"}) {
    size_t wrong = 0;
    for (const auto& c : cases_) {
      const std::string text = c["text"].get<std::string>();
      const auto expected = c[name].get<std::vector<int64_t>>();
      const auto ids = tokenizer->Encode(text);
      if (ids != expected && ++wrong <= 5) {
        ADD_FAILURE() << name << " (" << pass << " pass) on " << Json(text).dump() << "\n  got      "
                      << fmt::format("{}", fmt::join(ids, " ")) << "\n  expected "
                      << fmt::format("{}", fmt::join(expected, " "));
      }
    }
    EXPECT_EQ(wrong, 0u) << "of " << cases_.size() << " texts, " << pass << " pass";
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, TokenizerReference,
                         ::testing::Values("bert_uncased", "bert_cased", "bpe", "unigram", "unigram_bytes"));

TEST(Tokenizer, TheWordCacheIsBounded) {
  WordCache cache;
  std::vector<int64_t> ids{7};
  EXPECT_FALSE(cache.Find(U"word", ids));
  cache.Add(U"word", std::vector<int64_t>{1, 2});
  EXPECT_TRUE(cache.Find(U"word", ids));
  EXPECT_EQ(ids, (std::vector<int64_t>{7, 1, 2})) << "appended";
  cache.Add(std::u32string(WordCache::kMaxWordChars + 1, U'a'), std::vector<int64_t>{3});
  EXPECT_FALSE(cache.Find(std::u32string(WordCache::kMaxWordChars + 1, U'a'), ids)) << "too long to keep";
  cache.Add(std::u32string(WordCache::kMaxWordChars, U'a'), std::vector<int64_t>{3});
  EXPECT_TRUE(cache.Find(std::u32string(WordCache::kMaxWordChars, U'a'), ids));
  for (size_t i = 0; i < WordCache::kMaxWords + 100; ++i) {
    cache.Add(std::u32string(1, static_cast<char32_t>(0x4E00 + i)), std::vector<int64_t>{static_cast<int64_t>(i)});
  }
  EXPECT_EQ(cache.size(), WordCache::kMaxWords);
  EXPECT_TRUE(cache.Find(U"word", ids)) << "kept once full";
  EXPECT_FALSE(cache.Find(std::u32string(1, static_cast<char32_t>(0x4E00 + WordCache::kMaxWords + 50)), ids));
}

// The Unigram tokenizer.json as transformers converts a SentencePiece model gives the
// ids SentencePiece itself gives: all but ties between equally scored segmentations,
// which the two libraries break differently (":::" as ":" "::" or "::" ":").
TEST(Tokenizer, UnigramAgreesWithSentencePiece) {
  if (!Fixtures().Ready("python3-regex and python3-sentencepiece")) GTEST_SKIP();
  const Json cases = Json::parse(ReadFileBytes(Fixtures() / "cases.json"));
  const auto tokenizer = Tokenizer::Load(Fixtures() / "unigram.json");
  size_t compared = 0, same = 0;
  for (const auto& c : cases) {
    if (!c.contains("unigram_spm")) continue;
    ++compared;
    same += tokenizer->Encode(c["text"].get<std::string>()) == c["unigram_spm"].get<std::vector<int64_t>>();
  }
  ASSERT_GT(compared, 400u);
  EXPECT_GE(same * 100, compared * 99) << same << " of " << compared;
}

TEST_P(TokenizerReference, TruncationKeepsTheSpecialTokens) {
  const std::string name = GetParam();
  const auto tokenizer = Tokenizer::Load(Fixtures() / (name + ".json"));
  for (const auto& c : cases_) {
    const auto full = c[name].get<std::vector<int64_t>>();
    const auto ids = tokenizer->Encode(c["text"].get<std::string>(), 8);
    if (full.size() <= 8) {
      EXPECT_EQ(ids, full);
      continue;
    }
    ASSERT_EQ(ids.size(), 8u);
    EXPECT_TRUE(std::equal(ids.begin(), ids.end() - 1, full.begin()));  // the first 7, then the closing token
    EXPECT_EQ(ids.back(), full.back());
  }
}

TEST_P(TokenizerReference, FileTruncationCutsLeftOrRight) {
  const std::string name = GetParam();
  Json file = Json::parse(ReadFileBytes(Fixtures() / (name + ".json")));
  file["truncation"] = {{"max_length", 6}, {"strategy", "LongestFirst"}, {"stride", 0}, {"direction", "Left"}};
  const auto left = Tokenizer::Parse(file.dump(), "left.json");
  EXPECT_EQ(left->max_length(), 6u);
  for (const auto& c : cases_) {
    const auto full = c[name].get<std::vector<int64_t>>();
    if (full.size() <= 6) continue;
    const auto ids = left->Encode(c["text"].get<std::string>());
    const std::vector<int64_t> expected{full.front(),          full[full.size() - 5], full[full.size() - 4],
                                        full[full.size() - 3], full[full.size() - 2], full.back()};
    EXPECT_EQ(ids, expected);
  }
}

TEST(Tokenizer, PadIdsAndDescription) {
  if (!Fixtures().Ready("python3-regex and python3-sentencepiece")) GTEST_SKIP();
  EXPECT_EQ(Tokenizer::Load(Fixtures() / "bert_uncased.json")->pad_id(), 0);
  const auto bpe = Tokenizer::Load(Fixtures() / "bpe.json");
  EXPECT_EQ(bpe->pad_id(), 1);
  EXPECT_EQ(bpe->max_length(), 0u);
  const auto lines = bpe->Describe();
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_NE(lines[1].find("ByteLevel"), std::string::npos);
  EXPECT_NE(lines[2].find("600 merges"), std::string::npos);
}

// A minimal WordPiece tokenizer.json with `change` applied.
std::string SmallTokenizer(const std::function<void(Json&)>& change) {
  Json j = {{"version", "1.0"},
            {"normalizer", {{"type", "BertNormalizer"}, {"lowercase", true}}},
            {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
            {"post_processor", {{"type", "BertProcessing"}, {"sep", {"[SEP]", 3}}, {"cls", {"[CLS]", 2}}}},
            {"model",
             {{"type", "WordPiece"},
              {"unk_token", "[UNK]"},
              {"vocab", {{"[PAD]", 0}, {"[UNK]", 1}, {"[CLS]", 2}, {"[SEP]", 3}, {"un", 4}, {"##able", 5}}}}}};
  change(j);
  return j.dump();
}

TEST(Tokenizer, SmallWordPiece) {
  const auto t = Tokenizer::Parse(SmallTokenizer([](Json&) {}), "small.json");
  EXPECT_EQ(t->Encode("UNABLE un"), (std::vector<int64_t>{2, 4, 5, 4, 3}));
  EXPECT_EQ(t->Encode("unknown"), (std::vector<int64_t>{2, 1, 3}));
  EXPECT_EQ(t->Encode(""), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t->Encode("un un un", 3), (std::vector<int64_t>{2, 4, 3}));
  EXPECT_EQ(t->Encode("un un", 1), (std::vector<int64_t>{2, 3}));  // shorter than its special tokens
  EXPECT_EQ(t->vocab_size(), 6u);
}

// A hostile max_input_chars_per_word lets a 200,000-character word through: its pieces
// are searched no longer than the longest token (else 200,000² bytes of candidates).
TEST(Tokenizer, ALongWordCostsItsLengthTimesTheLongestToken) {
  const auto t = Tokenizer::Parse(SmallTokenizer([](Json& j) { j["model"]["max_input_chars_per_word"] = 1'000'000; }),
                                  "small.json");
  std::string word = "un";
  for (int i = 0; i < 50'000; ++i) word += "able";
  const auto ids = t->Encode(word);
  ASSERT_EQ(ids.size(), 50'003u);
  EXPECT_EQ(ids[1], 4);
  EXPECT_EQ(ids[2], 5);
  EXPECT_EQ(ids[50'001], 5);
}

// Added tokens: the longest at the leftmost position wins; a prefix of one is plain text.
TEST(Tokenizer, AddedTokensMatchLeftmostLongest) {
  const auto t = Tokenizer::Parse(SmallTokenizer([](Json& j) {
                                    j["added_tokens"] =
                                        Json::array({{{"id", 10}, {"content", "[X]"}, {"normalized", false}},
                                                     {{"id", 11}, {"content", "[XY]"}, {"normalized", false}},
                                                     {{"id", 12}, {"content", "Y]"}, {"normalized", false}}});
                                  }),
                                  "added.json");
  EXPECT_EQ(t->Encode("[XY][X]"), (std::vector<int64_t>{2, 11, 10, 3}));
  EXPECT_EQ(t->Encode("[X Y]un"), (std::vector<int64_t>{2, 1, 1, 12, 4, 3}));  // "[" "x" unknown, then Y] un
  std::string many = "[";
  for (int i = 0; i < 1002; ++i) many += "x";
  const std::string message = testing::MessageOf([&] {
    Tokenizer::Parse(
        SmallTokenizer([&](Json& j) {
          j["added_tokens"] = Json::array();
          for (int i = 0; i < 1001; ++i)
            j["added_tokens"].push_back({{"id", 20 + i}, {"content", fmt::format("{}{:04d}", many.substr(0, 996), i)}});
        }),
        "many.json");
  });
  EXPECT_NE(message.find("many.json: added_tokens[1000]: the added tokens have more than 1000000 characters"),
            std::string::npos)
      << message;
}

TEST(Tokenizer, TextThatIsNotUtf8OrTooLongIsRefused) {
  const auto t = Tokenizer::Parse(SmallTokenizer([](Json&) {}), "small.json");
  EXPECT_THROW(t->Encode("ab\xff"), Error);
  EXPECT_THROW(t->Encode(std::string(size_t{17} << 20, 'a')), Error);
}

struct HostileCase {
  const char* name;
  std::function<void(Json&)> change;
  const char* message;
};

TEST(Tokenizer, HostileFilesAreRefusedNamingTheField) {
  const std::vector<HostileCase> cases = {
      {"no model", [](Json& j) { j.erase("model"); }, "tokenizer: has no 'model'"},
      {"model type", [](Json& j) { j["model"]["type"] = "Lattice"; }, "model.type: 'Lattice' is not supported"},
      {"unigram piece",
       [](Json& j) {
         j["model"] = {{"type", "Unigram"}, {"vocab", Json::array({Json::array({"a", 0.0}), Json::array({"b"})})}};
       },
       "model.vocab[1]: is not [piece, score]"},
      {"unigram unk",
       [](Json& j) {
         j["model"] = {{"type", "Unigram"}, {"unk_id", 1}, {"vocab", Json::array({Json::array({"a", 0.0})})}};
       },
       "model.unk_id: 1 is not below the vocabulary's 1 pieces"},
      {"unigram empty",
       [](Json& j) {
         j["model"] = {{"type", "Unigram"}, {"vocab", Json::array()}};
       },
       "model.vocab: is empty"},
      {"vocab list", [](Json& j) { j["model"]["vocab"] = Json::array({"a"}); }, "model.vocab: is not an object"},
      {"negative id", [](Json& j) { j["model"]["vocab"]["x"] = -1; }, "model.vocab['x']: has an id that is not"},
      {"huge id", [](Json& j) { j["model"]["vocab"]["x"] = 1LL << 40; }, "has an id that is not"},
      {"unk missing", [](Json& j) { j["model"]["unk_token"] = "<?>"; }, "model.unk_token: '<?>' is not in the vocab"},
      {"max chars", [](Json& j) { j["model"]["max_input_chars_per_word"] = -5; }, "max_input_chars_per_word: is not"},
      {"normalizer",
       [](Json& j) {
         j["normalizer"] = {{"type", "Nmt"}};
       },
       "normalizer type 'Nmt'"},
      {"charsmap missing",
       [](Json& j) {
         j["normalizer"] = {{"type", "Precompiled"}};
       },
       "normalizer: has no 'precompiled_charsmap'"},
      {"charsmap not base64",
       [](Json& j) {
         j["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "a$b="}};
       },
       "normalizer.precompiled_charsmap: is not base64"},
      {"charsmap trie too long",
       [](Json& j) {
         j["normalizer"] = {{"type", "Precompiled"},
                            {"precompiled_charsmap", "AAEAAAAAAAA="}};  // 256 bytes said, 4 there
       },
       "normalizer.precompiled_charsmap: the trie of 256 bytes is longer than the 4 bytes after its size"},
      {"charsmap odd trie",
       [](Json& j) {
         j["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AgAAAAAA"}};
       },
       "a trie of 2 bytes is not a whole number of 4-byte units"},
      {"charsmap replacements",
       [](Json& j) {
         j["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "BAAAAAAAAAD/"}};  // then 0xFF
       },
       "the replacements are not UTF-8"},
      {"regex replace \\s",
       [](Json& j) {
         j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}};
       },
       "normalizer.pattern.Regex: '\\s+': \\s means ASCII only in RE2"},
      {"regex replace look-ahead",
       [](Json& j) {
         j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Regex", "a(?=b)"}}}, {"content", ""}};
       },
       "'a(?=b)' is not a regular expression RE2 runs"},
      {"replace pattern",
       [](Json& j) {
         j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Glob", "a*"}}}, {"content", ""}};
       },
       "normalizer.pattern: is neither a String nor a Regex pattern"},
      {"deep sequence",
       [](Json& j) {
         Json n = {{"type", "Lowercase"}};
         for (int i = 0; i < 20; ++i) n = {{"type", "Sequence"}, {"normalizers", Json::array({n})}};
         j["normalizer"] = n;
       },
       "nest more than 8 deep"},
      {"pre-tokenizer",
       [](Json& j) {
         j["pre_tokenizer"] = {{"type", "Split"}};
       },
       "pre-tokenizer type 'Split'"},
      {"metaspace replacement",
       [](Json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "__"}};
       },
       "pre_tokenizer.replacement: must be one character"},
      {"metaspace scheme",
       [](Json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}, {"prepend_scheme", "sometimes"}};
       },
       "pre_tokenizer.prepend_scheme: 'sometimes' is none of always, first, never"},
      {"metaspace first after a split",
       [](Json& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", Json::array({{{"type", "WhitespaceSplit"}},
                                                              {{"type", "Metaspace"}, {"prepend_scheme", "first"}}})}};
       },
       "pre_tokenizer.pretokenizers[1]: a Metaspace with prepend_scheme \"first\" is supported as the first"},
      {"template without sequence",
       [](Json& j) {
         j["post_processor"] = {{"type", "TemplateProcessing"},
                                {"single", Json::array({{{"SpecialToken", {{"id", "[CLS]"}}}}})},
                                {"special_tokens", {{"[CLS]", {{"id", "[CLS]"}, {"ids", {2}}}}}}};
       },
       "post_processor.single: has no Sequence piece"},
      {"template unknown special",
       [](Json& j) {
         j["post_processor"] = {{"type", "TemplateProcessing"},
                                {"single", Json::array({{{"SpecialToken", {{"id", "[X]"}}}}, {{"Sequence", {}}}})},
                                {"special_tokens", Json::object()}};
       },
       "special token '[X]' is not in special_tokens"},
      {"cls not a pair", [](Json& j) { j["post_processor"]["cls"] = "[CLS]"; }, "post_processor.cls: is not an array"},
      {"empty added",
       [](Json& j) {
         j["added_tokens"] = Json::array({{{"id", 1}, {"content", ""}}});
       },
       "added_tokens[0].content: must have 1 to 1000"},
      {"bpe unknown merge",
       [](Json& j) {
         j["model"] = {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}, {"merges", {"a c"}}};
       },
       "model.merges[0]: 'c' is not in the vocabulary"},
      {"bpe merged token missing",
       [](Json& j) {
         j["model"] = {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}, {"merges", {"a b"}}};
       },
       "model.merges[0]: 'ab' is not in the vocabulary"},
      {"bpe bad merge",
       [](Json& j) {
         j["model"] = {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", {"a  a"}}};
       },
       "is not two tokens separated by one space"},
      {"bpe dropout",
       [](Json& j) {
         j["model"] = {{"type", "BPE"}, {"dropout", 0.1}, {"vocab", {{"a", 0}}}, {"merges", Json::array()}};
       },
       "model.dropout: BPE dropout is for training"},
      {"truncation direction",
       [](Json& j) {
         j["truncation"] = {{"max_length", 5}, {"direction", "Up"}};
       },
       "truncation.direction: 'Up'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string message = testing::MessageOf([&] { Tokenizer::Parse(SmallTokenizer(c.change), "t.json"); });
    EXPECT_NE(message.find("t.json: "), std::string::npos) << message;
    EXPECT_NE(message.find(c.message), std::string::npos) << message;
  }
  EXPECT_NE(testing::MessageOf([] { Tokenizer::Parse("{\"model\": ", "t.json"); }).find("t.json: is not JSON"),
            std::string::npos);
}

// tokenizers' own example: the best total score wins, unknown characters fuse.
TEST(Tokenizer, UnigramTakesTheBestSegmentation) {
  const Json pieces = Json::array({Json::array({"<unk>", 0.0}), Json::array({"a", 0.0}), Json::array({"b", 0.0}),
                                   Json::array({"c", 0.0}), Json::array({"d", 0.0}), Json::array({"cd", 1.0}),
                                   Json::array({"ab", 2.0}), Json::array({"abc", 5.0}), Json::array({"abcd", 10.0})});
  Json j = {{"model", {{"type", "Unigram"}, {"unk_id", 0}, {"vocab", pieces}}}};
  const auto t = Tokenizer::Parse(j.dump(), "unigram.json");
  EXPECT_EQ(t->Encode("abcdacdxx"), (std::vector<int64_t>{8, 1, 5, 0}));  // abcd a cd xx
  EXPECT_EQ(t->Encode("xé😀a"), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(t->vocab_size(), 9u);
  j["model"].erase("unk_id");
  const auto strict = Tokenizer::Parse(j.dump(), "strict.json");
  EXPECT_EQ(strict->Encode("abcd"), (std::vector<int64_t>{8}));
  EXPECT_NE(testing::MessageOf([&] { strict->Encode("abx"); }).find("'x' is in no piece"), std::string::npos);
  EXPECT_NE(testing::MessageOf([] {
              Tokenizer::Parse(R"({"model": {"type": "Unigram", "vocab": [["a", 1e999]]}})", "inf.json");
            }).find("inf.json: is not JSON"),  // 1e999 overflows: refused before a score is read
            std::string::npos);
}

// Metaspace: spaces become ▁, split before each; prepend always, or only where the
// text begins (not after an added token); a regex Replace collapses runs of spaces.
TEST(Tokenizer, MetaspaceSplitsBeforeEachMark) {
  const Json pieces =
      Json::array({Json::array({"<unk>", 0.0}), Json::array({"\u2581Hey", -1.0}), Json::array({"\u2581", -2.0}),
                   Json::array({"\u2581friend!", -1.0}), Json::array({"Hey", -1.0}), Json::array({"<s>", 0.0})});
  Json j = {{"normalizer", nullptr},
            {"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}}},
            {"added_tokens", Json::array({{{"id", 5}, {"content", "<s>"}, {"special", true}}})},
            {"model", {{"type", "Unigram"}, {"unk_id", 0}, {"vocab", pieces}}}};
  const auto always = Tokenizer::Parse(j.dump(), "always.json");
  EXPECT_EQ(always->Encode("Hey   friend!"), (std::vector<int64_t>{1, 2, 2, 3}));
  EXPECT_EQ(always->Encode("<s>Hey"), (std::vector<int64_t>{5, 1}));
  j["pre_tokenizer"]["prepend_scheme"] = "first";
  const auto first = Tokenizer::Parse(j.dump(), "first.json");
  EXPECT_EQ(first->Encode("Hey friend!"), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(first->Encode("<s>Hey"), (std::vector<int64_t>{5, 4}));
  j["pre_tokenizer"]["prepend_scheme"] = "never";
  EXPECT_EQ(Tokenizer::Parse(j.dump(), "never.json")->Encode("Hey"), (std::vector<int64_t>{4}));
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"add_prefix_space", true}};  // tokenizers <= 0.14
  j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}};
  EXPECT_EQ(Tokenizer::Parse(j.dump(), "legacy.json")->Encode("Hey   friend!"), (std::vector<int64_t>{1, 3}));
}

// A charsmap with one rule, "A" -> "a" (a darts-clone trie of 66 units written by hand):
// the rule applies to "A" alone and to a grapheme that begins with it.
TEST(Tokenizer, PrecompiledRulesReplaceGraphemes) {
  const PrecompiledCharsmap charsmap(
      *DecodeBase64("CAEAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABBBQAAAAAAgGEA"),
      "one rule");
  EXPECT_EQ(charsmap.Normalize("ABA x"), "aBa x");
  EXPECT_EQ(charsmap.Normalize("A\u0301B"), "aB");  // the grapheme A + acute is shorter than 6 bytes
  EXPECT_EQ(charsmap.Normalize("\r\nA"), "\r\na");
  EXPECT_EQ(charsmap.Transform("AB").value_or("-"), "a");
  EXPECT_FALSE(charsmap.Transform("BA").has_value());
  EXPECT_EQ(DecodeBase64("YWI").value_or("-"), "ab");  // padding optional
  EXPECT_FALSE(DecodeBase64("a$b=").has_value());
}

// A charsmap is read as hostile: whatever its units say, normalizing reads nothing
// outside it (under ASan) and gives UTF-8.
TEST(Tokenizer, RandomCharsmapsNeverReadOutside) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  std::mt19937 random(seed);
  const std::vector<std::string> texts = {"hello world", "Café ﬁ e\u0301 😀👍🏽", "\r\n\t ΑΘΗΝΑ 東京", ""};
  for (int round = 0; round < 300; ++round) {
    const size_t units = 1 + random() % 63;
    std::string blob(4, '\0');
    blob[0] = static_cast<char>(units * 4);
    for (size_t i = 0; i < units * 4; ++i) blob.push_back(static_cast<char>(random()));
    const std::string replacements("x\0é\0\0ab\0", 9);
    blob += replacements.substr(0, random() % (replacements.size() + 1));
    try {
      const PrecompiledCharsmap charsmap(blob, "random");
      for (const auto& text : texts) {
        const std::string out = charsmap.Normalize(text);
        EXPECT_TRUE(Utf8Length(out).has_value());
      }
    } catch (const Error&) {
      // a blob whose sizes do not add up
    }
  }
}

TEST(Tokenizer, ByteLevelBpeWithoutMergesIsBytes) {
  Json vocab = Json::object();
  // Every byte's character, as GPT-2's table writes them: printable ASCII is itself.
  for (int c = '!'; c <= '~'; ++c) vocab[std::string(1, static_cast<char>(c))] = c;
  vocab["\xC4\xA0"] = 300;  // Ġ: the space byte
  vocab["ab"] = 301;
  const Json j = {{"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", true}}},
                  {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b"}}}}};
  const auto t = Tokenizer::Parse(j.dump(), "bytes.json");
  // " ab" with the prefix space: Ġ a b -> Ġ ab.
  EXPECT_EQ(t->Encode("ab"), (std::vector<int64_t>{300, 301}));
  EXPECT_EQ(t->Encode("ab b"), (std::vector<int64_t>{300, 301, 300, 'b'}));
}

}  // namespace
}  // namespace runnel::text
