// The needs workload as the pipeline and snapshot tests set it up: its tables (without
// identity keys: tests insert their own ids) and a small linear Keras model.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>

#include "keras_h5_file.hpp"

namespace runnel::testing {

inline constexpr const char* kNeedsSchema = R"sql(
CREATE TABLE needs (id integer, age integer, gender integer, family_members integer, financial_education real,
                    risk_propensity real, income real, wealth real, income_investment integer,
                    accumulation_investment integer, financial_status real, client_id integer);
CREATE TABLE products (id_product integer, income integer, accumulation integer, risk real, description text);
INSERT INTO products VALUES (1, 0, 1, 0.55, 'balanced'), (2, 1, 0, 0.3, 'income'), (3, 1, 0, 0.12, 'fixed income'),
                            (4, 0, 1, 0.9, 'equity');
)sql";

// Writes a Keras model to `path`: risk = 0.1 * (sum of the 9 scaled features) + `bias`.
inline std::filesystem::path WriteLinearNeedsModel(const std::filesystem::path& path, float bias = 0.5f) {
  nlohmann::json layers = nlohmann::json::array();
  layers.push_back({{"class_name", "InputLayer"}, {"config", {{"name", "in"}, {"batch_input_shape", {nullptr, 9}}}}});
  layers.push_back({{"class_name", "Dense"}, {"config", {{"name", "d"}, {"units", 1}, {"activation", "linear"}}}});
  KerasH5File file({{"class_name", "Sequential"}, {"config", {{"name", "s"}, {"layers", layers}}}});
  file.Weights("d", {{"kernel:0", {{9, 1}, std::vector<float>(9, 0.1f)}}, {"bias:0", {{1}, {bias}}}});
  return file.Write(path);
}

}  // namespace runnel::testing
