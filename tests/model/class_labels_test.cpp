// Class labels of a classifier's logits: a labels file or a config.json's id2label.
#include "runnel/model/class_labels.hpp"

#include <gtest/gtest.h>

#include "../support/error_message.hpp"

namespace runnel::model {
namespace {

using Labels = std::vector<std::string>;

TEST(ClassLabels, LinesAndId2Label) {
  EXPECT_EQ(ParseClassLabels("anger\r\njoy\nsad ness\n\n\n", "labels.txt", false),
            (Labels{"anger", "joy", "sad ness"}));
  EXPECT_EQ(ParseClassLabels(R"({"id2label": {"1": "joy", "0": "anger"}, "label2id": {}})", "config.json", true),
            (Labels{"anger", "joy"}));
}

TEST(ClassLabels, BadFilesNameTheFault) {
  const std::vector<std::tuple<std::string, bool, std::string>> cases = {
      {"", false, "f: holds no class label"},
      {"\n\n", false, "f: holds no class label"},
      {"a\n\nb\n", false, "f: line 2 is blank"},
      {"a\nb\na\n", false, "f: class label 'a' appears twice"},
      {"[1]", true, "f: is not a JSON object"},
      {"{\"labels\": []}", true, "f: has no id2label object"},
      {R"({"id2label": {"0": "a", "2": "b"}})", true, "f: id2label: '2' is not one of the ids 0 to 1, each once"},
      {R"({"id2label": {"0": "a", "00": "b"}})", true, "is not one of the ids"},
      {R"({"id2label": {"-1": "a"}})", true, "'-1' is not one of the ids"},
      {R"({"id2label": {"0": 5}})", true, "f: id2label['0'] is not a string"},
      {R"({"id2label": {"0": ""}})", true, "f: a class label is empty"},
  };
  for (const auto& [text, json, message] : cases) {
    const std::string got = testing::MessageOf([&] { ParseClassLabels(text, "f", json); });
    EXPECT_NE(got.find(message), std::string::npos) << text << " -> " << got;
  }
}

}  // namespace
}  // namespace runnel::model
