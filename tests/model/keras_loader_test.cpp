// Keras legacy HDF5 files written in the test with libhdf5 (the layout Keras 2 uses:
// a model_config attribute, /model_weights/<layer> with weight_names): every
// supported layer against a hand computation, Functional graphs, and hostile files.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <zip.h>

#include <chrono>
#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "../support/keras_h5_file.hpp"
#include "../support/shared_fixtures.hpp"
#include "../support/temp_dir.hpp"
#include "runnel/core/error.hpp"
#include "runnel/model/model.hpp"

namespace runnel::model {
namespace {

using nlohmann::json;

// Writes the file and loads it, or returns the loader's error.
class KerasH5Writer : public runnel::testing::KerasH5File {
 public:
  using KerasH5File::KerasH5File;
  std::shared_ptr<const Model> Load() { return LoadModel(Write(dir_ / "model.h5")); }
  std::string LoadError() {
    try {
      Load();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Model) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "the model loaded";
    return "";
  }

 private:
  runnel::testing::TempDir dir_{"runnel-keras"};
};

json Layer(const std::string& cls, json config) {
  return {{"class_name", cls}, {"config", std::move(config)}};
}

json Sequential(std::vector<json> layers) {
  return {{"class_name", "Sequential"}, {"config", {{"name", "seq"}, {"layers", layers}}}};
}

json Input(const std::string& name, int width) {
  return Layer("InputLayer", {{"name", name}, {"batch_input_shape", {nullptr, width}}});
}

std::vector<float> Predict(const std::shared_ptr<const Model>& model, const std::vector<float>& input, size_t rows) {
  ModelSession session(model);
  auto out = session.Predict(input, rows);
  return {out.begin(), out.end()};
}

TEST(KerasH5, SequentialDenseActivationsDropoutFlatten) {
  KerasH5Writer w(Sequential({
      Input("in", 2),
      Layer("Dense", {{"name", "d1"}, {"units", 2}, {"activation", "relu"}, {"use_bias", true}}),
      Layer("Dropout", {{"name", "drop"}, {"rate", 0.5}}),
      Layer("Flatten", {{"name", "flat"}}),
      Layer("Dense", {{"name", "d2"}, {"units", 1}, {"activation", "sigmoid"}, {"use_bias", false}}),
      Layer("Activation", {{"name", "act"}, {"activation", "linear"}}),
  }));
  w.Weights("d1", {{"kernel:0", {{2, 2}, {1, -1, 2, -2}}}, {"bias:0", {{2}, {0, 1}}}});
  w.Weights("d2", {{"kernel:0", {{2, 1}, {1, 1}}}});
  // x = [1, 1]: d1 = relu([3, -3 + 1]) = [3, 0]; d2 = sigmoid(3)
  auto out = Predict(w.Load(), {1, 1}, 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_NEAR(out[0], 1.0 / (1.0 + std::exp(-3.0)), 1e-6);
}

TEST(KerasH5, ActivationLayersAndNames) {
  const std::pair<json, std::function<double(double)>> cases[] = {
      {Layer("Activation", {{"name", "a"}, {"activation", "tanh"}}), [](double x) { return std::tanh(x); }},
      {Layer("Activation", {{"name", "a"}, {"activation", "softplus"}}),
       [](double x) { return std::log1p(std::exp(x)); }},
      {Layer("Activation", {{"name", "a"}, {"activation", "swish"}}), [](double x) { return x / (1 + std::exp(-x)); }},
      {Layer("Activation", {{"name", "a"}, {"activation", "elu"}}),
       [](double x) { return x > 0 ? x : std::exp(x) - 1; }},
      {Layer("Activation", {{"name", "a"}, {"activation", "exponential"}}), [](double x) { return std::exp(x); }},
      {Layer("Activation", {{"name", "a"}, {"activation", "hard_sigmoid"}}),
       [](double x) { return std::clamp(0.2 * x + 0.5, 0.0, 1.0); }},
      {Layer("Activation", {{"name", "a"}, {"activation", "gelu"}}),
       [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }},
      {Layer("Activation", {{"name", "a"}, {"activation", "selu"}}),
       [](double x) { return 1.0507009873554805 * (x > 0 ? x : 1.6732632423543772 * (std::exp(x) - 1)); }},
      {Layer("LeakyReLU", {{"name", "a"}, {"alpha", 0.3}}), [](double x) { return x > 0 ? x : 0.3 * x; }},
      {Layer("ReLU", {{"name", "a"}}), [](double x) { return std::max(x, 0.0); }},
      {Layer("ELU", {{"name", "a"}, {"alpha", 0.5}}), [](double x) { return x > 0 ? x : 0.5 * (std::exp(x) - 1); }},
  };
  for (const auto& [layer, expected] : cases) {
    KerasH5Writer w(Sequential({Input("in", 2), layer}));
    auto out = Predict(w.Load(), {-0.7f, 1.3f}, 1);
    EXPECT_NEAR(out[0], expected(-0.7), 1e-6) << layer.dump();
    EXPECT_NEAR(out[1], expected(1.3), 1e-6) << layer.dump();
  }
  KerasH5Writer softmax(Sequential({Input("in", 3), Layer("Softmax", {{"name", "s"}})}));
  auto out = Predict(softmax.Load(), {1, 2, 3}, 1);
  EXPECT_NEAR(out[2], 0.66524096, 1e-6);
}

TEST(KerasH5, BatchNormalizationAndNormalization) {
  KerasH5Writer w(Sequential({
      Input("in", 2),
      Layer("BatchNormalization", {{"name", "bn"}, {"epsilon", 0.0}, {"axis", json::array({-1})}}),
      Layer("Normalization", {{"name", "norm"}, {"axis", -1}}),
  }));
  w.Weights("bn", {{"gamma:0", {{2}, {2, 1}}},
                   {"beta:0", {{2}, {1, 0}}},
                   {"moving_mean:0", {{2}, {1, 2}}},
                   {"moving_variance:0", {{2}, {4, 1}}}});
  w.Weights("norm", {{"mean:0", {{2}, {0, 1}}}, {"variance:0", {{2}, {4, 16}}}, {"count:0", {{}, {10}}}});
  // x = [3, 4]: bn = [(3-1)/2*2+1, (4-2)/1*1+0] = [3, 2]; norm = [(3-0)/2, (2-1)/4]
  auto out = Predict(w.Load(), {3, 4}, 1);
  EXPECT_NEAR(out[0], 1.5f, 1e-6);
  EXPECT_NEAR(out[1], 0.25f, 1e-6);
}

TEST(KerasH5, FunctionalGraphWithMergeLayers) {
  // Keras 2 inbound_nodes: [node, ...], node = [[layer, node_index, tensor_index, kwargs], ...]
  auto ref = [](const std::string& name) {
    return json::array({json::array({json::array({name, 0, 0, json::object()})})});
  };
  auto two = [](const std::string& a, const std::string& b) {
    return json::array({json::array({json::array({a, 0, 0, json::object()}), json::array({b, 0, 0, json::object()})})});
  };
  json layers = json::array();
  layers.push_back({{"class_name", "InputLayer"},
                    {"name", "a"},
                    {"config", {{"name", "a"}, {"batch_input_shape", {nullptr, 2}}}},
                    {"inbound_nodes", json::array()}});
  layers.push_back({{"class_name", "InputLayer"},
                    {"name", "b"},
                    {"config", {{"name", "b"}, {"batch_input_shape", {nullptr, 2}}}},
                    {"inbound_nodes", json::array()}});
  layers.push_back(
      {{"class_name", "Add"}, {"name", "sum"}, {"config", {{"name", "sum"}}}, {"inbound_nodes", two("a", "b")}});
  layers.push_back(
      {{"class_name", "Multiply"}, {"name", "prod"}, {"config", {{"name", "prod"}}}, {"inbound_nodes", two("a", "b")}});
  layers.push_back(
      {{"class_name", "Subtract"}, {"name", "diff"}, {"config", {{"name", "diff"}}}, {"inbound_nodes", two("a", "b")}});
  layers.push_back({{"class_name", "Concatenate"},
                    {"name", "cat"},
                    {"config", {{"name", "cat"}, {"axis", -1}}},
                    {"inbound_nodes", json::array({json::array({json::array({"sum", 0, 0, json::object()}),
                                                                json::array({"prod", 0, 0, json::object()}),
                                                                json::array({"diff", 0, 0, json::object()})})})}});
  layers.push_back({{"class_name", "Dense"},
                    {"name", "out"},
                    {"config", {{"name", "out"}, {"units", 1}, {"activation", "linear"}, {"use_bias", true}}},
                    {"inbound_nodes", ref("cat")}});
  json model = {{"class_name", "Functional"},
                {"config",
                 {{"name", "f"},
                  {"layers", layers},
                  {"input_layers", json::array({json::array({"a", 0, 0}), json::array({"b", 0, 0})})},
                  {"output_layers", json::array({json::array({"out", 0, 0})})}}}};
  KerasH5Writer w(model);
  w.Weights("out", {{"kernel:0", {{6, 1}, {1, 1, 1, 1, 1, 1}}}, {"bias:0", {{1}, {0.5f}}}});
  // a = [1, 2], b = [3, 4]: sum [4, 6], prod [3, 8], diff [-2, -2] -> 17 + 0.5
  auto out = Predict(w.Load(), {1, 2, 3, 4}, 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_NEAR(out[0], 17.5f, 1e-5);
}

TEST(KerasH5, FunctionalGraphInKeras3Syntax) {
  // Keras 3 writes inbound nodes as {"args": [...], "kwargs": {}} with tensors that
  // name their producing layer in keras_history, and single endpoints unnested.
  auto tensor = [](const std::string& layer) {
    return json{{"class_name", "__keras_tensor__"},
                {"config", {{"shape", {nullptr, 2}}, {"dtype", "float32"}, {"keras_history", {layer, 0, 0}}}}};
  };
  json layers = json::array();
  layers.push_back({{"module", "keras.layers"},
                    {"class_name", "InputLayer"},
                    {"name", "x"},
                    {"config", {{"name", "x"}, {"batch_shape", {nullptr, 2}}}},
                    {"inbound_nodes", json::array()}});
  layers.push_back(
      {{"module", "keras.layers"},
       {"class_name", "Dense"},
       {"name", "h"},
       {"config",
        {{"name", "h"},
         {"units", 2},
         {"use_bias", true},
         {"activation", {{"module", "keras.activations"}, {"class_name", "function"}, {"config", "relu"}}}}},
       {"inbound_nodes", json::array({{{"args", json::array({tensor("x")})}, {"kwargs", json::object()}}})}});
  layers.push_back({{"module", "keras.layers"},
                    {"class_name", "Concatenate"},
                    {"name", "cat"},
                    {"config", {{"name", "cat"}, {"axis", -1}}},
                    {"inbound_nodes", json::array({{{"args", json::array({json::array({tensor("x"), tensor("h")})})},
                                                    {"kwargs", json::object()}}})}});
  json model = {
      {"class_name", "Functional"},
      {"config", {{"name", "f"}, {"layers", layers}, {"input_layers", {"x", 0, 0}}, {"output_layers", {"cat", 0, 0}}}}};
  KerasH5Writer w(model);
  w.Weights("h", {{"kernel:0", {{2, 2}, {1, 0, 0, -1}}}, {"bias:0", {{2}, {0, 0}}}});
  // x = [3, 4]: h = relu([3, -4]) = [3, 0]; output [x, h]
  EXPECT_EQ(Predict(w.Load(), {3, 4}, 1), (std::vector<float>{3, 4, 3, 0}));
}

TEST(KerasH5, HostileFilesGiveClearErrors) {
  {
    KerasH5Writer w(
        Sequential({Input("in", 2), Layer("Dense", {{"name", "d"}, {"units", 3}, {"activation", "relu"}})}));
    w.Weights("d", {{"kernel:0", {{2, 2}, {1, 2, 3, 4}}}, {"bias:0", {{3}, {0, 0, 0}}}});
    auto error = w.LoadError();
    EXPECT_NE(error.find("layer 'd'"), std::string::npos) << error;
    EXPECT_NE(error.find("weight 'kernel' has shape [2, 2], expected [2, 3]"), std::string::npos) << error;
  }
  {
    KerasH5Writer w(Sequential({Input("in", 2), Layer("Dense", {{"name", "d"}, {"units", 1}})}));
    auto error = w.LoadError();  // no weights at all
    EXPECT_NE(error.find("weight 'kernel' is missing"), std::string::npos) << error;
  }
  {
    KerasH5Writer w(Sequential({Input("in", 2), Layer("Conv2D", {{"name", "conv"}})}));
    EXPECT_NE(w.LoadError().find("layer 'conv': layer class 'Conv2D' is not supported"), std::string::npos);
  }
  {
    KerasH5Writer w(Sequential({Input("in", 2), Layer("Activation", {{"name", "a"}, {"activation", "mish"}})}));
    EXPECT_NE(w.LoadError().find("activation 'mish' is not supported"), std::string::npos);
  }
  {
    KerasH5Writer w(json("not a model"));
    EXPECT_NE(w.LoadError().find("class_name"), std::string::npos);
  }
  {
    KerasH5Writer w(Sequential({Layer("InputLayer", {{"name", "in"}, {"batch_input_shape", {nullptr, -3}}})}));
    EXPECT_NE(w.LoadError().find("positive integers"), std::string::npos);
  }
  runnel::testing::TempDir dir;
  runnel::testing::WriteFile(dir / "trunc.h5", std::string("\x89HDF\r\n\x1a\n\0\0\0", 11));
  EXPECT_THROW(LoadModel(dir / "trunc.h5"), Error);
  runnel::testing::WriteFile(dir / "trunc.keras", std::string("PK\x03\x04garbage", 11));
  EXPECT_THROW(LoadModel(dir / "trunc.keras"), Error);
}

// Issue #14: a .keras whose weights inflate to far more than the archive is refused
// from the zip directory, before anything is allocated for them; so is a model over
// the configured maximum size.
std::string KerasZip(const std::filesystem::path& path, const std::string& weights) {
  int error = 0;
  zip_t* archive = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
  EXPECT_NE(archive, nullptr);
  const std::string metadata = R"({"keras_version": "3.0.0"})", config = "{}";
  for (const auto& [name, content] : {std::pair<const char*, const std::string*>{"metadata.json", &metadata},
                                      {"config.json", &config},
                                      {"model.weights.h5", &weights}}) {
    zip_source_t* src = zip_source_buffer(archive, content->data(), content->size(), 0);
    const auto index = zip_file_add(archive, name, src, ZIP_FL_OVERWRITE);
    zip_set_file_compression(archive, static_cast<zip_uint64_t>(index), ZIP_CM_DEFLATE, 9);
  }
  EXPECT_EQ(zip_close(archive), 0);
  return path.string();
}

// The process's peak resident memory since the last ResetPeakRss, in KiB (VmHWM), or
// -1 when the kernel does not let a process reset it (/proc/self/clear_refs).
int64_t PeakRssKib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmHWM:")) return std::stoll(line.substr(6));
  }
  return -1;
}

bool ResetPeakRss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return clear.good();
}

// HDF5 datasets may declare far more values than they store (compressed chunks of
// zeros, or nothing but a fill value): refused before the values are allocated.
TEST(KerasH5, DatasetsDeclaringMoreThanTheyStoreAreRefused) {
  const auto dense = [](int inputs) {
    return Sequential({Input("in", inputs), Layer("Dense", {{"name", "d"}, {"units", 2048}})});
  };
  {
    KerasH5Writer w(dense(4096));  // 32 MiB declared, nothing written
    w.Weights("d", {{"kernel:0", {{4096, 2048}, {}}}, {"bias:0", {{2048}, std::vector<float>(2048, 0.f)}}});
    const auto started = std::chrono::steady_clock::now();
    // (Parsing runs in a child process, isolation.hpp: its memory is not this one's, so
    // the time taken is what shows the values were never allocated and zeroed.)
    const auto error = w.LoadError();
    EXPECT_NE(error.find("weight '/model_weights/d/d/kernel:0' declares 33554432 bytes of values but stores 0"),
              std::string::npos)
        << error;
    EXPECT_NE(error.find("decompression bomb"), std::string::npos) << error;
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  }
  {
    KerasH5Writer w(dense(1024));  // 8 MiB of zeros, compressed to a few kilobytes
    w.Compress();
    w.Weights("d", {{"kernel:0", {{1024, 2048}, std::vector<float>(size_t{1024} * 2048, 0.f)}},
                    {"bias:0", {{2048}, std::vector<float>(2048, 0.f)}}});
    const auto error = w.LoadError();
    EXPECT_NE(error.find("weight '/model_weights/d/d/kernel:0' declares 8388608 bytes"), std::string::npos) << error;
  }
  // Compressed weights that are not a bomb load as any others.
  KerasH5Writer ok(Sequential({Input("in", 64), Layer("Dense", {{"name", "d"}, {"units", 64}})}));
  ok.Compress();
  std::vector<float> kernel(64 * 64);
  for (size_t i = 0; i < kernel.size(); ++i) kernel[i] = static_cast<float>((i * 7919) % 1000) / 1000.f;
  ok.Weights("d", {{"kernel:0", {{64, 64}, kernel}}, {"bias:0", {{64}, std::vector<float>(64, 0.5f)}}});
  const auto model = ok.Load();
  const auto out = Predict(model, std::vector<float>(64, 1.f), 1);
  float expected = 0.5f;
  for (size_t i = 0; i < 64; ++i) expected += kernel[i * 64];
  EXPECT_NEAR(out[0], expected, 1e-4);
}

TEST(KerasV3, ADecompressionBombIsRefusedBeforeInflating) {
  runnel::testing::TempDir dir("runnel-bomb");
  const auto bomb = KerasZip(dir / "bomb.keras", std::string(size_t{256} << 20, '\0'));  // 256 MiB of zeros
  ASSERT_LT(std::filesystem::file_size(bomb), size_t{2} << 20) << "a small file";
  const auto started = std::chrono::steady_clock::now();
  const bool measured = ResetPeakRss();
  const int64_t before = PeakRssKib();
  try {
    LoadModel(bomb);
    ADD_FAILURE() << "must refuse the bomb";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'model.weights.h5' inflates"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("decompression bomb"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(1)) << "refused without inflating";
  if (measured) {
    EXPECT_LT(PeakRssKib() - before, 64 << 10) << "KiB of peak memory growth (issue #14: under 64 MB)";
  }

  // Incompressible weights over the configured maximum.
  std::string noise(size_t{3} << 20, '\0');
  uint64_t x = 88172645463325252ULL;
  for (char& c : noise) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = static_cast<char>(x);
  }
  const auto big = KerasZip(dir / "big.keras", noise);
  ::setenv("RUNNEL_MAX_MODEL_BYTES", "2097152", 1);
  try {
    LoadModel(big);
    ADD_FAILURE() << "must refuse a model over RUNNEL_MAX_MODEL_BYTES";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("RUNNEL_MAX_MODEL_BYTES"), std::string::npos) << e.what();
  }
  ::unsetenv("RUNNEL_MAX_MODEL_BYTES");
}

TEST(KerasFixtures, InspectTheSharedModels) {
  RUNNEL_REQUIRE_SHARED();
  for (const char* file : {"deep_model.h5", "deep_model.keras"}) {
    auto model = LoadModel(runnel::testing::SharedDir() / "models/needs" / file);
    EXPECT_EQ(model->input_width(), 9u);
    EXPECT_EQ(model->output_width(), 1u);
    EXPECT_EQ(model->graph().MultiplyAdds(), 20881u) << file;
    EXPECT_EQ(model->info().producer, "Keras 2.15.0");
  }
  auto onnx = LoadModel(runnel::testing::SharedDir() / "models/needs/deep_model.onnx");
  EXPECT_EQ(onnx->graph().nodes.size(), 9u) << "MatMul+Add+Relu fused into 9 dense layers";
}

}  // namespace
}  // namespace runnel::model
