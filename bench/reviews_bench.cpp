// The reviews transformer (examples/reviews) on one core: texts/s from text to logits
// through ModelSession — the Hugging Face tokenizer, padding, the encoder — at batch 1
// and 32, each for at least a second; and the tokenizer alone. Run by
// bench/reviews_bench.sh beside ONNX Runtime (bench/reviews_ort.mjs, which is given
// the ids already tokenized), printing "<runtime> reviews batch=<b> <texts/s>".
// Usage: reviews_bench DIR (build_reviews.py's output)
#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "runnel/core/csv.hpp"
#include "runnel/core/memory.hpp"
#include "runnel/model/model.hpp"

namespace {

std::vector<std::string> ReadTexts(const std::filesystem::path& csv) {
  std::ifstream in(csv);
  runnel::CsvReader reader(in, ',');
  std::vector<std::string> fields, texts;
  reader.Next(fields);  // id, title, body, emotion, split
  while (reader.Next(fields)) texts.push_back(fields[1] + ". " + fields[2]);
  return texts;
}

// Calls `run(at, n)` over the texts in steps of n for at least a second: texts/s.
template <typename Run>
double Rate(size_t texts, size_t n, Run run) {
  size_t done = 0, at = 0;
  const auto start = std::chrono::steady_clock::now();
  double seconds = 0;
  while (seconds < 1.0) {
    if (at + n > texts) at = 0;
    run(at, n);
    at += n;
    done += n;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return static_cast<double>(done) / seconds;
}

}  // namespace

int main(int argc, char** argv) {
  runnel::KeepFreedMemoryForReuse();  // as the runnel binary does
  if (argc != 2) {
    fmt::print(stderr, "usage: reviews_bench DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  const auto texts = ReadTexts(dir / "reviews.csv");
  runnel::model::LoadOptions options;
  options.tokens.tokenizer = runnel::text::Tokenizer::Load(dir / "tokenizer.json");
  auto model = runnel::model::LoadModel(dir / "reviews_model.onnx", options);
  runnel::model::ModelSession session(model);
  float sink = 0;
  for (const size_t batch : {1, 32}) {
    const double rate = Rate(texts.size(), batch, [&](size_t at, size_t n) {
      sink += session.Predict({}, n, std::span(texts).subspan(at, n))[0];
    });
    fmt::print("runnel reviews batch={} {:.0f}{}\n", batch, rate, sink == 12345.678f ? " " : "");
  }
  size_t tokens = 0;
  const double rate = Rate(texts.size(), 64, [&](size_t at, size_t n) {
    for (size_t i = at; i < at + n; ++i) tokens += options.tokens.tokenizer->Encode(texts[i], 128).size();
  });
  fmt::print("runnel tokenizer-only {:.0f} ({} tokens)\n", rate, tokens);
  return 0;
}
