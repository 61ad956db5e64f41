// ONNX models built in the test with the protobuf API: every supported operator
// against a hand computation, both initializer encodings, and clear errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <onnx/onnx-ml.pb.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "../support/error_message.hpp"
#include "../support/temp_dir.hpp"
#include "loaders.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/core/isolation.hpp"
#include "runnel/model/model.hpp"
#include "runnel/tensor/onnx_import.hpp"

namespace runnel::model {
namespace {

using ::testing::HasSubstr;

class OnnxBuilder {
 public:
  explicit OnnxBuilder(int64_t width) {
    model_.set_ir_version(7);
    model_.set_producer_name("runnel-test");
    model_.add_opset_import()->set_version(13);
    auto* input = model_.mutable_graph()->add_input();
    input->set_name("x");
    auto* tensor = input->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto_DataType_FLOAT);
    tensor->mutable_shape()->add_dim()->set_dim_param("batch");
    tensor->mutable_shape()->add_dim()->set_dim_value(width);
  }
  void Init(const std::string& name, std::vector<int64_t> dims, const std::vector<float>& values, bool raw = true) {
    auto* t = model_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto_DataType_FLOAT);
    for (auto d : dims) t->add_dims(d);
    if (raw) {
      t->set_raw_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
    } else {
      for (float v : values) t->add_float_data(v);
    }
  }
  void InitInt64(const std::string& name, const std::vector<int64_t>& values) {
    auto* t = model_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto_DataType_INT64);
    t->add_dims(static_cast<int64_t>(values.size()));
    for (auto v : values) t->add_int64_data(v);
  }
  onnx::NodeProto* Node(const std::string& op, std::vector<std::string> inputs, const std::string& output) {
    auto* n = model_.mutable_graph()->add_node();
    n->set_op_type(op);
    n->set_name(op + "_" + output);
    for (const auto& i : inputs) n->add_input(i);
    n->add_output(output);
    return n;
  }
  static void AttrF(onnx::NodeProto* n, const char* name, float v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto_AttributeType_FLOAT);
    a->set_f(v);
  }
  static void AttrI(onnx::NodeProto* n, const char* name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto_AttributeType_INT);
    a->set_i(v);
  }
  onnx::ValueInfoProto* Output(const std::string& name) {
    auto* output = model_.mutable_graph()->add_output();
    output->set_name(name);
    return output;
  }
  void Opset(int64_t version) { model_.mutable_opset_import(0)->set_version(version); }

  std::shared_ptr<const Model> Load() {
    std::string bytes;
    model_.SerializeToString(&bytes);
    runnel::testing::WriteFile(dir_ / "m.onnx", bytes);
    return LoadModel(dir_ / "m.onnx");
  }
  // LoadModel's refusal (an Error(Model)), "loaded" when it loads.
  std::string LoadError() {
    try {
      Load();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Model) << e.what();
      return e.what();
    }
    return "loaded";
  }
  // The dense fast path's refusal (LoadModel then tries the general runtime).
  std::string FastPathError() {
    try {
      LoadOnnx(model_.SerializeAsString(), "m.onnx");
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Model);
      return e.what();
    }
    ADD_FAILURE() << "the model loaded";
    return "";
  }

 private:
  onnx::ModelProto model_;
  runnel::testing::TempDir dir_{"runnel-onnx"};
};

std::vector<float> Predict(const std::shared_ptr<const Model>& model, const std::vector<float>& input, size_t rows) {
  ModelSession session(model);
  auto out = session.Predict(input, rows);
  return {out.begin(), out.end()};
}

TEST(OnnxLoader, GemmWithAllAttributes) {
  OnnxBuilder b(2);
  b.Init("W", {3, 2}, {1, 2, 3, 4, 5, 6}, /*raw=*/false);  // transB: [N=3, K=2]
  b.Init("C", {3}, {1, 1, 1});
  auto* gemm = b.Node("Gemm", {"x", "W", "C"}, "y");
  OnnxBuilder::AttrI(gemm, "transB", 1);
  OnnxBuilder::AttrF(gemm, "alpha", 2.0f);
  OnnxBuilder::AttrF(gemm, "beta", 0.5f);
  b.Output("y");
  // y = 2 * x·W^T + 0.5 * C with x = [1, 1]: W rows sum to 3, 7, 11
  EXPECT_EQ(Predict(b.Load(), {1, 1}, 1), (std::vector<float>{6.5f, 14.5f, 22.5f}));
}

TEST(OnnxLoader, MatMulAddReluFusesIntoOneDense) {
  OnnxBuilder b(2);
  b.Init("W", {2, 2}, {1, -1, 1, -1});
  b.Init("B", {2}, {0.5f, 0.5f});
  b.Node("MatMul", {"x", "W"}, "mm");
  b.Node("Add", {"mm", "B"}, "add");
  b.Node("Relu", {"add"}, "y");
  b.Output("y");
  auto model = b.Load();
  ASSERT_EQ(model->graph().nodes.size(), 1u);
  EXPECT_EQ(model->graph().nodes[0].activation.kind, Activation::Relu);
  EXPECT_EQ(Predict(model, {1, 2}, 1), (std::vector<float>{3.5f, 0.0f}));
}

TEST(OnnxLoader, ElementwiseOperatorsAndActivations) {
  OnnxBuilder b(2);
  b.Init("two", {1}, {2});
  b.Init("row", {1, 2}, {1, -1});
  b.Node("Sub", {"two", "x"}, "s");  // 2 - x
  b.Node("Mul", {"s", "row"}, "m");  // * [1, -1]
  b.Node("Div", {"m", "two"}, "d");  // / 2
  auto* leaky = b.Node("LeakyRelu", {"d"}, "l");
  OnnxBuilder::AttrF(leaky, "alpha", 0.1f);
  b.Node("Identity", {"l"}, "i");
  b.Node("Sigmoid", {"i"}, "sg");
  b.Node("Tanh", {"i"}, "th");
  OnnxBuilder::AttrI(b.Node("Concat", {"sg", "th", "i"}, "c"), "axis", -1);
  b.Node("Softmax", {"i"}, "sm");
  b.Output("c");
  b.Output("sm");
  // x = [0, 4]: s = [2, -2]; m = [2, 2]; d = [1, 1]; leaky = [1, 1]
  auto out = Predict(b.Load(), {0, 4}, 1);
  ASSERT_EQ(out.size(), 8u);
  EXPECT_NEAR(out[0], 0.7310586f, 1e-6);
  EXPECT_NEAR(out[2], 0.7615942f, 1e-6);
  EXPECT_EQ(out[4], 1.0f);
  EXPECT_NEAR(out[6], 0.5f, 1e-6);
  // x = [4, 0]: d = [-1, -1] -> leaky -0.1
  auto neg = Predict(b.Load(), {4, 0}, 1);
  EXPECT_NEAR(neg[4], -0.1f, 1e-6);
}

TEST(OnnxLoader, ShapeOpsCastClipAndBatchNorm) {
  OnnxBuilder b(3);
  b.InitInt64("shape", {-1, 3});
  b.Init("scale", {3}, {1, 2, 1});
  b.Init("bias", {3}, {0, 0, 1});
  b.Init("mean", {3}, {1, 1, 1});
  b.Init("var", {3}, {4, 4, 4});
  b.Init("lo", {}, {0});
  b.Init("hi", {}, {2});
  b.Node("Flatten", {"x"}, "f");
  b.Node("Reshape", {"f", "shape"}, "r");
  auto* cast = b.Node("Cast", {"r"}, "c");
  OnnxBuilder::AttrI(cast, "to", onnx::TensorProto_DataType_FLOAT);
  auto* bn = b.Node("BatchNormalization", {"c", "scale", "bias", "mean", "var"}, "bn");
  OnnxBuilder::AttrF(bn, "epsilon", 0.0f);
  b.Node("Clip", {"bn", "lo", "hi"}, "y");
  b.Output("y");
  // x = [5, 5, -9]: bn = (x - 1) / 2 * scale + bias = [2, 4, -4]; clip to [0, 2]
  EXPECT_EQ(Predict(b.Load(), {5, 5, -9}, 1), (std::vector<float>{2, 2, 0}));
}

TEST(OnnxLoader, ClipWithOldStyleAttributes) {
  OnnxBuilder b(2);
  b.Opset(6);  // Clip's bounds are attributes before opset 11
  auto* clip = b.Node("Clip", {"x"}, "y");
  OnnxBuilder::AttrF(clip, "min", -1);
  OnnxBuilder::AttrF(clip, "max", 1);
  b.Output("y");
  EXPECT_EQ(Predict(b.Load(), {-5, 0.5f}, 1), (std::vector<float>{-1, 0.5f}));
}

TEST(OnnxLoader, ErrorsNameTheNode) {
  {
    OnnxBuilder b(2);
    b.Init("W", {1, 1, 1}, {1});
    b.Node("Conv", {"x", "W"}, "y");
    b.Output("y");
    auto error = b.FastPathError();
    EXPECT_NE(error.find("node 'Conv_y'"), std::string::npos) << error;
    EXPECT_NE(error.find("operator 'Conv' is not supported"), std::string::npos) << error;
  }
  {
    OnnxBuilder b(2);
    b.Init("W", {2, 2}, {1, 2, 3});  // 3 values for a [2, 2] tensor
    b.Node("MatMul", {"x", "W"}, "y");
    b.Output("y");
    auto error = b.FastPathError();
    EXPECT_NE(error.find("initializer 'W' holds 12 bytes"), std::string::npos) << error;
  }
  {
    OnnxBuilder b(2);
    b.Init("W", {3, 2}, {1, 2, 3, 4, 5, 6});  // expects 3 inputs
    b.Node("MatMul", {"x", "W"}, "y");
    b.Output("y");
    auto error = b.FastPathError();
    EXPECT_NE(error.find("weight expects 3 inputs, the node receives 2"), std::string::npos) << error;
  }
  {
    OnnxBuilder b(4);
    b.InitInt64("shape", {-1, 2, 2});
    b.Node("Reshape", {"x", "shape"}, "y");
    b.Output("y");
    EXPECT_NE(b.FastPathError().find("Reshape to [-1, 2, 2] is not supported"), std::string::npos);
  }
  {
    OnnxBuilder b(2);
    b.Node("Relu", {"missing"}, "y");
    b.Output("y");
    EXPECT_NE(b.FastPathError().find("'missing' is not computed before this node"), std::string::npos);
  }
  {
    OnnxBuilder b(2);
    b.Node("Relu", {"x"}, "y");
    b.Output("nowhere");
    EXPECT_NE(b.FastPathError().find("graph output 'nowhere'"), std::string::npos);
  }
}

// ONNX's own schema of each operator (libonnx) is checked at load, by both paths: an
// attribute the operator does not have (a typo would otherwise leave the default in
// force: a silently wrong answer), a missing required one, a wrong input count.
TEST(OnnxLoader, NodesAreCheckedAgainstOnnxsSchemas) {
  {
    OnnxBuilder b(2);
    OnnxBuilder::AttrF(b.Node("LeakyRelu", {"x"}, "y"), "alpah", 0.5f);
    b.Output("y");
    EXPECT_THAT(b.FastPathError(), HasSubstr("node 'LeakyRelu_y' (LeakyRelu of opset 13): Unrecognized attribute: "
                                             "alpah for operator LeakyRelu"));
    EXPECT_THAT(b.LoadError(), HasSubstr("Unrecognized attribute: alpah"));
  }
  {
    OnnxBuilder b(2);
    b.Node("Concat", {"x", "x"}, "y");
    b.Output("y");
    EXPECT_THAT(b.LoadError(), HasSubstr("node 'Concat_y' (Concat of opset 13): Required attribute 'axis' is missing"));
  }
  {
    OnnxBuilder b(2);
    b.Node("Add", {"x"}, "y");
    b.Output("y");
    EXPECT_THAT(b.LoadError(), HasSubstr("node 'Add_y' (Add of opset 13)"));
  }
  {  // a later opset than libonnx knows is left to the loaders: Relu is the same there
    OnnxBuilder b(2);
    b.Opset(18);
    b.Node("Relu", {"x"}, "y");
    b.Output("y");
    EXPECT_EQ(Predict(b.Load(), {-1, 2}, 1), (std::vector<float>{0, 2}));
  }
}

// ONNX's shape inference (libonnx, strict) and ONNX Runtime's check of input types run
// at load: types or shapes an operator cannot take are refused naming the node (before,
// the fast path added an int64 constant to floats, and a run on a zero row failed); a
// declared output shape that disagrees with the inferred one is not an error (ONNX
// Runtime warns); `model inspect` shows the shapes found, initializers too large to be
// read by inference included. A file that crashes libonnx 1.12's inference (a Gemm of
// opset 6 with a one-dimensional B, found by fuzz_tensor) is refused, and only the
// child process that ran inference dies.
TEST(OnnxLoader, ShapesAndTypesAreCheckedByOnnxsInference) {
  {
    OnnxBuilder b(2);
    b.InitInt64("k", {1, 2});
    b.Node("Add", {"x", "k"}, "y");
    b.Output("y");
    EXPECT_THAT(b.LoadError(), HasSubstr("node 'Add_y' (Add of opset 13): input 'x' is tensor(float) and input 'k' is "
                                         "tensor(int64): Add takes one type for both (T)"));
  }
  {
    OnnxBuilder b(3);
    b.Opset(6);
    b.Init("c", {1}, {0.0f});
    auto* gemm = b.Node("Gemm", {"x", "c", "c"}, "y");
    OnnxBuilder::AttrI(gemm, "broadcast", 1);
    b.Output("y");
    EXPECT_THAT(b.LoadError(), HasSubstr("m.onnx: ONNX's shape inference failed on this file (signal 11)"));
  }
  {
    OnnxBuilder b(2);
    b.Init("W", {3, 4}, std::vector<float>(12, 1.0f));
    b.InitInt64("shape", {-1, 2, 2, 1});
    b.Node("Reshape", {"x", "shape"}, "r");  // past the fast path
    b.Node("MatMul", {"r", "W"}, "y");
    b.Output("y");
    const std::string error = b.LoadError();
    EXPECT_THAT(error, HasSubstr("ONNX shape inference"));
    EXPECT_THAT(error, HasSubstr("MatMul_y"));
    EXPECT_THAT(error, ::testing::Not(HasSubstr("zero row")));
  }
  {
    OnnxBuilder b(1100);
    b.Init("B", {1100}, std::vector<float>(1100, 1.0f));  // given as an input while inferring
    b.InitInt64("shape", {-1, 11, 10, 10});
    b.Node("Add", {"x", "B"}, "a");
    b.Node("Reshape", {"a", "shape"}, "y");
    auto* out = b.Output("y");
    auto* dims = out->mutable_type()->mutable_tensor_type();
    dims->set_elem_type(onnx::TensorProto_DataType_FLOAT);
    dims->mutable_shape()->add_dim()->set_dim_value(7);  // declared wrong: ONNX Runtime warns and runs
    auto model = b.Load();
    std::vector<float> row(1100, 2.0f);
    EXPECT_EQ(Predict(model, row, 1), std::vector<float>(1100, 3.0f));
    const auto lines = model->Describe();
    EXPECT_THAT(lines, ::testing::Contains(::testing::AllOf(HasSubstr("Add_a"), HasSubstr("-> float [batch, 1100]"))));
    EXPECT_THAT(lines,
                ::testing::Contains(::testing::AllOf(HasSubstr("Reshape_y"), HasSubstr("-> float [?, 11, 10, 10]"))));
  }
}

// A file is parsed once and ONNX's inference (a child process) runs once per load: a
// graph the dense path builds but inference refuses is refused, not tried again on the
// general runtime (which would fork again: for a file that hangs inference, twice the
// time before the error).
TEST(OnnxLoader, InferenceRunsOnceAndItsRefusalIsFinal) {
  OnnxBuilder b(2);
  b.Node("Relu", {"x"}, "y");
  auto* out = b.Output("y");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto_DataType_INT64);  // Relu gives float
  const uint64_t before = runnel::IsolatedChildrenForked();
  EXPECT_THAT(b.LoadError(), HasSubstr("m.onnx"));
  EXPECT_EQ(runnel::IsolatedChildrenForked() - before, 1u);
  out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto_DataType_FLOAT);
  const uint64_t good = runnel::IsolatedChildrenForked();
  EXPECT_EQ(Predict(b.Load(), {-1, 2}, 1), (std::vector<float>{0, 2}));
  EXPECT_EQ(runnel::IsolatedChildrenForked() - good, 1u);
}

TEST(OnnxLoader, GarbageIsRejected) {
  runnel::testing::TempDir dir;
  runnel::testing::WriteFile(dir / "junk.onnx", std::string("\x08\x96\x01this is not protobuf\xff\xff", 24));
  try {
    LoadModel(dir / "junk.onnx");
    ADD_FAILURE() << "must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Model);
    EXPECT_NE(std::string(e.what()).find("junk.onnx"), std::string::npos) << e.what();
  }
  EXPECT_THROW(LoadModel(dir / "does-not-exist.onnx"), Error);
}

// The ONNX backend's pytorch-converted tests (Debian's libonnx-testdata): models
// exported by PyTorch with its inputs and outputs. Empty when the package is absent
// (a failure when CI=true; the caller skips).
std::filesystem::path PytorchConverted() {
  const std::filesystem::path root = "/usr/share/libonnx-testdata/data/pytorch-converted";
  if (std::filesystem::exists(root)) return root;
  const char* ci = std::getenv("CI");
  if (ci != nullptr && std::string(ci) == "true")
    ADD_FAILURE() << root << " is missing: apt-get install libonnx-testdata";
  return {};
}

tensor::Tensor ReadTensor(const std::filesystem::path& file) {
  return tensor::LoadOnnxTensor(ReadFileBytes(file), file.string());
}

// Graphs the dense fast path refuses (rank 4 with Reshape/Transpose, integer inputs to
// an embedding, a 3-D softmax) are served by the general tensor runtime through the
// same row interface, and agree with what PyTorch computed for them (the
// pytorch-converted tests of Debian's libonnx-testdata: model, input and PyTorch's
// output). Rows are scored three batches at a time: the file fixes the batch.
TEST(OnnxLoader, GraphsPastTheFastPathRunOnTheGeneralRuntime) {
  const auto root = PytorchConverted();
  if (root.empty()) GTEST_SKIP() << "libonnx-testdata is missing (Debian package libonnx-testdata)";
  for (const char* test : {"test_PixelShuffle", "test_Embedding", "test_log_softmax_dim3"}) {
    SCOPED_TRACE(test);
    const auto dir = root / test;
    auto model = LoadModel(dir / "model.onnx");
    ASSERT_NE(model->tensor(), nullptr) << "the fast path would have served it";
    EXPECT_NE(model->info().producer.find("general tensor runtime"), std::string::npos);
    const auto input = ReadTensor(dir / "test_data_set_0" / "input_0.pb");
    const auto want = ReadTensor(dir / "test_data_set_0" / "output_0.pb");
    const size_t batch = static_cast<size_t>(input.dim(0));
    std::vector<float> rows;
    for (int copy = 0; copy < 3; ++copy) {
      for (size_t i = 0; i < input.size(); ++i) rows.push_back(static_cast<float>(tensor::ValueAt(input, i)));
    }
    ASSERT_EQ(rows.size(), 3 * batch * model->input_width());
    ModelSession session(model);
    const auto out = session.Predict(rows, 3 * batch);
    ASSERT_EQ(out.size(), 3 * want.size());
    for (size_t i = 0; i < out.size(); ++i) {
      const double w = tensor::ValueAt(want, i % want.size());
      ASSERT_NEAR(out[i], w, 1e-5 + 1e-5 * std::abs(w)) << "value " << i;
    }
  }
}

// A row the graph cannot run (an embedding index out of range, a NaN for an integer
// input) gets no prediction (NaN, which the worker records as a failed row); the rows
// around it are served as PyTorch computed them.
TEST(OnnxLoader, ARowTheGeneralRuntimeCannotRunFailsAlone) {
  const auto root = PytorchConverted();
  if (root.empty()) GTEST_SKIP() << "libonnx-testdata is missing (Debian package libonnx-testdata)";
  const auto dir = root / "test_Embedding";
  auto model = LoadModel(dir / "model.onnx");
  const auto input = ReadTensor(dir / "test_data_set_0" / "input_0.pb");
  const auto want = ReadTensor(dir / "test_data_set_0" / "output_0.pb");
  ASSERT_EQ(model->input_width(), input.size());
  std::vector<float> good;
  for (size_t i = 0; i < input.size(); ++i) good.push_back(static_cast<float>(tensor::ValueAt(input, i)));
  std::vector<float> out_of_range = good, not_integer = good;
  out_of_range[1] = 99;
  not_integer[0] = NAN;
  std::vector<float> rows;
  for (const auto* row : {&good, &out_of_range, &not_integer, &good}) rows.insert(rows.end(), row->begin(), row->end());
  ModelSession session(model);
  const auto out = session.Predict(rows, 4);
  const size_t w = model->output_width();
  for (size_t r : {size_t{0}, size_t{3}}) {
    for (size_t c = 0; c < w; ++c) EXPECT_NEAR(out[r * w + c], tensor::ValueAt(want, c), 1e-6) << r << "," << c;
  }
  for (size_t r : {size_t{1}, size_t{2}}) {
    for (size_t c = 0; c < w; ++c) EXPECT_TRUE(std::isnan(out[r * w + c])) << r << "," << c;
  }
}

using runnel::testing::MessageOf;

// test_Conv2d with its weights moved to weights.bin beside the model, as ONNX's
// external data keeps them (each initializer: location, offset, length).
onnx::ModelProto WithExternalWeights(const std::filesystem::path& model, const std::filesystem::path& dir) {
  onnx::ModelProto m;
  const std::string bytes = ReadFileBytes(model);
  EXPECT_TRUE(m.ParseFromString(bytes));
  std::string blob;
  for (auto& init : *m.mutable_graph()->mutable_initializer()) {
    const auto t = tensor::LoadOnnxTensor(init.SerializeAsString(), init.name());
    const size_t offset = blob.size();
    blob.append(reinterpret_cast<const char*>(t.bytes().data()), t.bytes().size());
    init.clear_raw_data();
    init.clear_float_data();
    init.set_data_location(onnx::TensorProto_DataLocation_EXTERNAL);
    for (const auto& [key, value] :
         std::vector<std::pair<std::string, std::string>>{{"location", "weights.bin"},
                                                          {"offset", std::to_string(offset)},
                                                          {"length", std::to_string(t.bytes().size())}}) {
      auto* entry = init.add_external_data();
      entry->set_key(key);
      entry->set_value(value);
    }
  }
  std::ofstream(dir / "weights.bin", std::ios::binary) << blob;
  return m;
}

void SetExternal(onnx::ModelProto& m, const std::string& key, const std::string& value) {
  for (auto& entry : *m.mutable_graph()->mutable_initializer(0)->mutable_external_data()) {
    if (entry.key() == key) entry.set_value(value);
  }
}

std::string LoadError(const onnx::ModelProto& m, const std::filesystem::path& path) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << m.SerializeAsString();
  try {
    LoadModel(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "loaded";
}

// ONNX external data (weights in a file beside the model, as large PyTorch exports
// keep them) is read, and gives what PyTorch computed; a location outside the model's
// directory (a "..", an absolute path, a symlink out) or a range the file does not
// hold is refused naming the initializer, and a model that comes as bytes (the
// registry) may have none.
TEST(OnnxLoader, ExternalDataIsReadFromInsideTheModelsDirectoryOnly) {
  const auto root = PytorchConverted();
  if (root.empty()) GTEST_SKIP() << "libonnx-testdata is missing (Debian package libonnx-testdata)";
  const auto test = root / "test_Conv2d";
  testing::TempDir tmp("runnel-external");
  auto m = WithExternalWeights(test / "model.onnx", tmp.path());
  ASSERT_EQ(LoadError(m, tmp / "model.onnx"), "loaded");
  auto model = LoadModel(tmp / "model.onnx");
  const auto input = ReadTensor(test / "test_data_set_0" / "input_0.pb");
  const auto want = ReadTensor(test / "test_data_set_0" / "output_0.pb");
  std::vector<float> rows;
  for (size_t i = 0; i < input.size(); ++i) rows.push_back(static_cast<float>(tensor::ValueAt(input, i)));
  ModelSession session(model);
  const auto out = session.Predict(rows, static_cast<size_t>(input.dim(0)));
  ASSERT_EQ(out.size(), want.size());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], tensor::ValueAt(want, i), 1e-5) << "value " << i;

  const std::string bytes = ReadFileBytes(tmp / "model.onnx");
  EXPECT_NE(MessageOf([&] { LoadModelFromBytes(bytes, "registry.onnx", "v1"); }).find("has no directory"),
            std::string::npos);
  std::filesystem::create_directories(tmp / "sub");
  std::ofstream(tmp / "sub" / "secret.bin") << std::string(4096, 'x');
  std::filesystem::create_symlink("/etc/passwd", tmp / "link.bin");
  for (const char* location : {"../weights.bin", "/etc/passwd", "sub/../../weights.bin"}) {
    auto bad = m;
    SetExternal(bad, "location", location);
    EXPECT_NE(LoadError(bad, tmp / "bad.onnx").find("is not a file name inside the model's directory"),
              std::string::npos)
        << location;
  }
  auto link = m;
  SetExternal(link, "location", "link.bin");
  EXPECT_NE(LoadError(link, tmp / "bad.onnx").find("external data 'link.bin' is not a file inside"), std::string::npos);
  auto missing = m;
  SetExternal(missing, "location", "nowhere.bin");
  EXPECT_NE(LoadError(missing, tmp / "bad.onnx").find("is not a file inside"), std::string::npos);
  auto longer = m;
  SetExternal(longer, "length", "1000000000");
  EXPECT_NE(LoadError(longer, tmp / "bad.onnx").find("external data of 1000000000 bytes"), std::string::npos);
  auto past = m;
  SetExternal(past, "offset", "99999999");
  EXPECT_NE(LoadError(past, tmp / "bad.onnx").find("external data at offset 99999999"), std::string::npos);
  auto nonsense = m;
  SetExternal(nonsense, "offset", "-5");
  EXPECT_NE(LoadError(nonsense, tmp / "bad.onnx").find("is not a number"), std::string::npos);
}

}  // namespace
}  // namespace runnel::model
