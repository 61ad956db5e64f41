// libFuzzer target: CSV input through `runnel predict`'s scoring path, with a
// pipeline and a one-layer model built in code.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "runnel/core/error.hpp"
#include "runnel/pipeline/csv_scoring.hpp"

namespace {

std::shared_ptr<const runnel::model::Model> TinyModel() {
  runnel::model::Graph g;
  int x = g.AddValue("x", 2);
  g.inputs = {x};
  int y = g.AddValue("y", 1);
  runnel::model::Node dense;
  dense.kind = runnel::model::OpKind::Dense;
  dense.name = "dense";
  dense.inputs = {x};
  dense.output = y;
  dense.in_width = 2;
  dense.out_width = 1;
  dense.weights = {0.5f, -0.25f};
  dense.bias = {0.1f};
  g.nodes.push_back(dense);
  g.outputs = {y};
  return std::make_shared<const runnel::model::Model>(
      std::move(g), runnel::model::ModelInfo{runnel::model::ModelFormat::Onnx, "tiny", "fuzz", ""});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto model = TinyModel();
  runnel::pipeline::PipelineConfig config;
  config.file = "fuzz.toml";
  config.key_columns = {"id"};
  config.model_outputs = {"score"};
  config.features.input_columns = {"a", "b"};
  config.features.derived = {{"ratio", "a / b"}};
  config.features.features = {"ln(a)", "ratio"};
  config.output_columns = {"score", "ratio"};
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  std::ostringstream out;
  runnel::pipeline::CsvScoringOptions options;
  options.batch_size = 3;
  try {
    runnel::pipeline::ScoreCsv(config, model, in, out, options);
  } catch (const runnel::Error&) {
  }
  return 0;
}
