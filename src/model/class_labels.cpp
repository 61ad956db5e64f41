#include "runnel/model/class_labels.hpp"

#include <fmt/format.h>

#include <charconv>
#include <nlohmann/json.hpp>
#include <set>

#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"

namespace runnel::model {

namespace {

[[noreturn]] void Fail(const std::string& source, std::string_view what) {
  throw Error(ErrorCode::Config, fmt::format("{}: {}", source, what));
}

std::vector<std::string> FromLines(std::string_view text, const std::string& source) {
  std::vector<std::string> labels;
  size_t blank_line = 0, line = 0;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view label = text.substr(start, end - start);
    if (label.ends_with('\r')) label.remove_suffix(1);
    ++line;
    start = end + 1;
    if (label.empty()) {
      if (blank_line == 0) blank_line = line;
      continue;
    }
    if (blank_line != 0) Fail(source, fmt::format("line {} is blank: every class needs a label", blank_line));
    if (labels.size() == kMaxClassLabels) Fail(source, fmt::format("more than {} labels", kMaxClassLabels));
    labels.emplace_back(label);
  }
  return labels;
}

// The labels of an id2label object: ids 0..k-1, each once.
std::vector<std::string> FromId2Label(const nlohmann::json& object, const std::string& source) {
  if (object.size() > kMaxClassLabels) Fail(source, fmt::format("more than {} labels", kMaxClassLabels));
  std::vector<std::string> labels(object.size());
  std::vector<bool> seen(object.size());
  for (const auto& [key, value] : object.items()) {
    size_t id = 0;
    const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
    if (ec != std::errc() || end != key.data() + key.size() || id >= labels.size() || seen[id])
      Fail(source, fmt::format("id2label: '{}' is not one of the ids 0 to {}, each once", key, labels.size() - 1));
    if (!value.is_string()) Fail(source, fmt::format("id2label['{}'] is not a string", key));
    labels[id] = value.get<std::string>();
    seen[id] = true;
  }
  return labels;
}

std::vector<std::string> FromConfigJson(std::string_view text, const std::string& source) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) Fail(source, "is not a JSON object");
  const auto it = j.find("id2label");
  if (it == j.end() || !it->is_object()) Fail(source, "has no id2label object");
  return FromId2Label(*it, source);
}

std::vector<std::string> Checked(std::vector<std::string> labels, const std::string& source) {
  if (labels.empty()) Fail(source, "holds no class label");
  std::set<std::string> unique;
  for (const auto& label : labels) {
    if (label.empty()) Fail(source, "a class label is empty");
    if (!unique.insert(label).second) Fail(source, fmt::format("class label '{}' appears twice", label));
  }
  return labels;
}

}  // namespace

std::vector<std::string> ParseClassLabels(std::string_view text, const std::string& source, bool json) {
  return Checked(json ? FromConfigJson(text, source) : FromLines(text, source), source);
}

std::vector<std::string> ParseId2Label(std::string_view text, const std::string& source) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) Fail(source, "is not a JSON object of id -> label");
  return Checked(FromId2Label(j, source), source);
}

std::vector<std::string> ReadClassLabels(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > kMaxLabelsFileBytes)
    Fail(path.string(), fmt::format("{} bytes: a labels file is at most {} bytes", size, kMaxLabelsFileBytes));
  return ParseClassLabels(ReadFileBytes(path, "the labels file"), path.string(), path.extension() == ".json");
}

}  // namespace runnel::model
