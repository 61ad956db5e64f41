// Writes Keras 2 legacy HDF5 model files (model_config attribute, /model_weights/<layer>
// with weight_names) for tests and fuzz seeds.
#pragma once

#include <hdf5.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace runnel::testing {

class KerasH5File {
 public:
  using Shape = std::vector<hsize_t>;
  using Weight = std::pair<std::string, std::pair<Shape, std::vector<float>>>;  // name, (shape, values)

  explicit KerasH5File(nlohmann::json model_config) : config_(std::move(model_config)) {}

  void Weights(const std::string& layer, std::vector<Weight> weights) {
    layers_.emplace_back(layer, std::move(weights));
  }
  // Stores the weights gzip-compressed in chunks (a tensor of zeros then takes
  // almost no room: the decompression bomb tests). A weight given no values is
  // declared and never written.
  void Compress() { compress_ = true; }
  // Writes the file (replacing it) and returns its path.
  std::filesystem::path Write(const std::filesystem::path& path) const;

 private:
  nlohmann::json config_;
  bool compress_ = false;
  std::vector<std::pair<std::string, std::vector<Weight>>> layers_;
};

}  // namespace runnel::testing
