// The dashboard's JSON from what the database returned (dashboard.hpp).
#include "dashboard.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

namespace runnel::server {

using nlohmann::json;

// Per second: requests by status, latency quantiles (seconds; null without requests).
json SeriesJson(const std::vector<Sample>& samples) {
  json series = json::array();
  for (const auto& s : samples) {
    auto quantile = [&](double q) {
      const auto v = Quantile(LatencyBounds(), s.latency, q);
      return v ? json(*v) : json(nullptr);
    };
    series.push_back({{"t", s.at},
                      {"done", s.done},
                      {"throttled", s.throttled},
                      {"failed", s.failed},
                      {"p50", quantile(0.5)},
                      {"p99", quantile(0.99)}});
  }
  return series;
}

// Mean seconds per batch in each stage over the samples.
json StagesJson(const std::vector<Sample>& samples) {
  Sample total;
  for (const auto& s : samples) total.Add(s);
  json stages = json::array();
  for (size_t k = 0; k < pipeline::kStageCount; ++k) {
    const double mean = total.batches > 0 ? total.stage_seconds[k] / static_cast<double>(total.batches) : 0.0;
    stages.push_back({{"stage", pipeline::kStageNames[k]}, {"seconds_per_batch", mean}});
  }
  return stages;
}

nlohmann::json NumericDistribution(const std::string& output, const std::vector<std::optional<double>>& latest,
                                   const std::vector<std::optional<double>>& previous, size_t bins) {
  bins = std::max<size_t>(bins, 1);
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto* window : {&latest, &previous}) {
    for (const auto& v : *window) {
      if (!v || !std::isfinite(*v)) continue;
      lo = std::min(lo, *v);
      hi = std::max(hi, *v);
    }
  }
  json edges = json::array();
  if (lo > hi) lo = hi = 0;  // no value at all
  const double width = hi > lo ? (hi - lo) / static_cast<double>(bins) : 1.0;
  for (size_t i = 0; i <= bins; ++i) edges.push_back(lo + width * static_cast<double>(i));
  auto count = [&](const std::vector<std::optional<double>>& values) {
    std::vector<int64_t> counts(bins, 0);
    int64_t missing = 0;
    for (const auto& v : values) {
      if (!v || !std::isfinite(*v)) {
        ++missing;
        continue;
      }
      const auto bin = static_cast<size_t>((*v - lo) / width);
      ++counts[std::min(bin, bins - 1)];  // the largest value closes the last bin
    }
    return json{{"counts", counts}, {"missing", missing}, {"total", values.size()}};
  };
  return {{"output", output},
          {"kind", "number"},
          {"edges", edges},
          {"latest", count(latest)},
          {"previous", count(previous)}};
}

nlohmann::json LabelDistribution(const std::string& output, const std::vector<std::optional<std::string>>& latest,
                                 const std::vector<std::optional<std::string>>& previous, size_t max_labels) {
  std::map<std::string, std::pair<int64_t, int64_t>> by_label;  // latest, previous
  int64_t missing[2] = {0, 0};
  for (const auto& v : latest) v ? ++by_label[*v].first : ++missing[0];
  for (const auto& v : previous) v ? ++by_label[*v].second : ++missing[1];
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> sorted(by_label.begin(), by_label.end());
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return a.second.first + a.second.second > b.second.first + b.second.second;
  });
  if (sorted.size() > max_labels) sorted.resize(max_labels);
  json labels = json::array(), latest_counts = json::array(), previous_counts = json::array();
  for (const auto& [label, counts] : sorted) {
    labels.push_back(label);
    latest_counts.push_back(counts.first);
    previous_counts.push_back(counts.second);
  }
  return {{"output", output},
          {"kind", "label"},
          {"labels", labels},
          {"latest", {{"counts", latest_counts}, {"missing", missing[0]}, {"total", latest.size()}}},
          {"previous", {{"counts", previous_counts}, {"missing", missing[1]}, {"total", previous.size()}}}};
}

}  // namespace runnel::server
