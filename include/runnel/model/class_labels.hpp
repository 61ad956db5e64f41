// The class names of a classifier's logits, from a file beside the model: a labels
// file (one name per line) or a Hugging Face config.json (its id2label); or from the
// model's own metadata (an id2label entry).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace runnel::model {

// The metadata entry of an ONNX model that names its logits' classes (JSON id2label).
inline constexpr std::string_view kId2LabelMetadata = "id2label";

// The most classes read, and the largest labels file (a config.json holds more).
inline constexpr size_t kMaxClassLabels = 100'000;
inline constexpr size_t kMaxLabelsFileBytes = size_t{16} << 20;

// Reads `path` (*.json: id2label, ids 0..k-1 each once; else one label per line,
// "\r\n" allowed, trailing blank lines ignored). Throws Error(Io) when it cannot be
// read, Error(Config) naming the file and the line or id at fault: no labels, an
// empty or repeated label, missing ids.
std::vector<std::string> ReadClassLabels(const std::filesystem::path& path);
// The same from the file's text; `source` names it.
std::vector<std::string> ParseClassLabels(std::string_view text, const std::string& source, bool json);
// The labels of an id2label JSON object alone ({"0": "neg", "1": "pos"}), as a model's
// metadata holds them, checked as above.
std::vector<std::string> ParseId2Label(std::string_view text, const std::string& source);

}  // namespace runnel::model
