// The dashboard's JSON, computed from what the database returned: pure functions, tested
// without a database (tests/server/dashboard_unit_test.cpp); dashboard_resource.cpp
// runs the queries and serves them.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "runnel/server/samples.hpp"

namespace runnel::server {

// Per second: requests by status and latency quantiles (seconds; null without
// requests), [{"t", "done", "throttled", "failed", "p50", "p99"}].
nlohmann::json SeriesJson(const std::vector<Sample>& samples);

// Mean seconds per batch in each stage over the samples, [{"stage", "seconds_per_batch"}].
nlohmann::json StagesJson(const std::vector<Sample>& samples);

// How one output's values are distributed in the latest requests and in those before
// them: for numbers, counts over `bins` equal bins spanning both windows' values
// ("edges": bins + 1 bounds); for class labels, the count of each label (most frequent
// first). NULLs (nullopt) are counted apart ("missing"). Non-finite numbers are missing.
nlohmann::json NumericDistribution(const std::string& output, const std::vector<std::optional<double>>& latest,
                                   const std::vector<std::optional<double>>& previous, size_t bins = 20);
nlohmann::json LabelDistribution(const std::string& output, const std::vector<std::optional<std::string>>& latest,
                                 const std::vector<std::optional<std::string>>& previous, size_t max_labels = 20);

}  // namespace runnel::server
