// Post-processors as Hugging Face's tokenizers runs them on a single sequence
// (processors/bert.rs, roberta.rs, template.rs, sequence.rs): the special tokens
// around the sequence's ids.
#include <fmt/format.h>

#include "tokenizer_parts.hpp"

namespace runnel::text {

namespace {

// Ids before and after the sequence.
class Wrap final : public PostProcessor {
 public:
  Wrap(std::string name, std::vector<int64_t> before, std::vector<int64_t> after)
      : name_(std::move(name)), before_(std::move(before)), after_(std::move(after)) {}

  void Process(std::vector<int64_t>& ids) const override {
    ids.insert(ids.begin(), before_.begin(), before_.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
  }
  size_t added_tokens() const override { return before_.size() + after_.size(); }
  std::string Describe() const override {
    return fmt::format("{}([{}] sequence [{}])", name_, fmt::join(before_, " "), fmt::join(after_, " "));
  }

 private:
  std::string name_;
  std::vector<int64_t> before_, after_;
};

class Sequence final : public PostProcessor {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PostProcessor>> steps) : steps_(std::move(steps)) {}
  void Process(std::vector<int64_t>& ids) const override {
    for (const auto& step : steps_) step->Process(ids);
  }
  size_t added_tokens() const override {
    size_t n = 0;
    for (const auto& step : steps_) n += step->added_tokens();
    return n;
  }
  std::string Describe() const override { return DescribeSequence(steps_); }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

// ["[SEP]", 102]
int64_t TokenPairId(const JsonReader& reader, const Json& j, const char* key, std::string_view where) {
  const std::string at = fmt::format("{}.{}", where, key);
  const Json& pair = reader.Array(reader.Member(j, key, where, true), at);
  if (pair.size() != 2 || !pair[0].is_string()) reader.Fail(at, "is not [token, id]");
  return reader.Id(pair[1], at);
}

// TemplateProcessing's `single` template: SpecialToken pieces (their ids from
// special_tokens) around one Sequence piece.
std::unique_ptr<PostProcessor> MakeTemplate(const JsonReader& reader, const Json& j, std::string_view where) {
  const std::string single = fmt::format("{}.single", where);
  const Json& pieces = reader.Array(reader.Member(j, "single", where, true), single);
  const Json& specials =
      reader.Object(reader.Member(j, "special_tokens", where, true), fmt::format("{}.special_tokens", where));
  std::vector<int64_t> before, after;
  bool sequence_seen = false;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const std::string at = fmt::format("{}[{}]", single, i);
    const Json& piece = reader.Object(pieces[i], at);
    if (piece.contains("Sequence")) {
      if (sequence_seen) reader.Fail(at, "a single-sequence template holds the sequence once");
      sequence_seen = true;
      continue;
    }
    const Json& special = reader.Object(reader.Member(piece, "SpecialToken", at, true), at + ".SpecialToken");
    const std::string name = reader.String(special, "id", at + ".SpecialToken");
    if (!specials.contains(name)) reader.Fail(at, fmt::format("special token '{}' is not in special_tokens", name));
    const std::string entry = fmt::format("{}.special_tokens.{}", where, name);
    const Json& ids =
        reader.Array(reader.Member(reader.Object(specials[name], entry), "ids", entry, true), entry + ".ids");
    for (const auto& id : ids) (sequence_seen ? after : before).push_back(reader.Id(id, entry + ".ids"));
  }
  if (!sequence_seen) reader.Fail(single, "has no Sequence piece");
  return std::make_unique<Wrap>("TemplateProcessing", std::move(before), std::move(after));
}

}  // namespace

std::unique_ptr<PostProcessor> MakePostProcessor(const JsonReader& reader, const Json& j, std::string_view where,
                                                 int depth) {
  const auto stage = StageType(reader, j, where, depth);
  if (!stage) return nullptr;
  const std::string& type = *stage;
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    std::vector<int64_t> before{TokenPairId(reader, j, "cls", where)};
    std::vector<int64_t> after{TokenPairId(reader, j, "sep", where)};
    return std::make_unique<Wrap>(type, std::move(before), std::move(after));
  }
  if (type == "TemplateProcessing") return MakeTemplate(reader, j, where);
  if (type == "ByteLevel") return nullptr;  // it trims offsets only
  if (type == "Sequence") {
    return std::make_unique<Sequence>(
        ReadSequence<PostProcessor>(reader, j, where, "processors", depth, MakePostProcessor));
  }
  reader.Fail(where, fmt::format("post-processor type '{}' is not supported", type));
}

}  // namespace runnel::text
