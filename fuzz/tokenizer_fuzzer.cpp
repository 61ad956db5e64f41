// libFuzzer target: Hugging Face tokenizer.json files and the tokenizers they make. The
// input is a tokenizer.json, then (after a NUL byte, when there is one) a text; a file
// that loads encodes that text, fixed hostile texts and the file itself. The input is
// also read as a class labels file, both as lines and as a config.json.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runnel/core/error.hpp"
#include "runnel/model/class_labels.hpp"
#include "runnel/text/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string json = input.substr(0, nul);
  const std::string text = nul == std::string::npos ? std::string() : input.substr(nul + 1);
  try {
    const auto tokenizer = runnel::text::Tokenizer::Parse(json, "fuzz.json");
    for (const std::string& t : {text, json, std::string("İstanbul [CLS] <mask>  ΣΑΣ 😀 \t x"), std::string()}) {
      for (const size_t max_length : {size_t{0}, size_t{1}, size_t{5}}) {
        try {
          (void)tokenizer->Encode(t, max_length);
        } catch (const runnel::Error&) {
        }
      }
    }
    (void)tokenizer->Describe();
  } catch (const runnel::Error&) {
  }
  for (const bool as_json : {false, true}) {
    try {
      (void)runnel::model::ParseClassLabels(input, "fuzz", as_json);
    } catch (const runnel::Error&) {
    }
  }
  return 0;
}
