// Writes the seed corpus of every fuzz target into <dir>/<target>/: small valid inputs
// built here (no binary files live in the repository).
#include <hdf5.h>
#include <onnx/onnx-ml.pb.h>
#include <zip.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "../tests/support/keras_h5_file.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void Write(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

json Sequential() {
  json layers = json::array();
  layers.push_back({{"class_name", "InputLayer"}, {"config", {{"name", "in"}, {"batch_input_shape", {nullptr, 3}}}}});
  layers.push_back({{"class_name", "Dense"}, {"config", {{"name", "d1"}, {"units", 4}, {"activation", "relu"}}}});
  layers.push_back({{"class_name", "BatchNormalization"}, {"config", {{"name", "bn"}, {"epsilon", 0.001}}}});
  layers.push_back({{"class_name", "Dense"}, {"config", {{"name", "d2"}, {"units", 2}, {"activation", "softmax"}}}});
  return {{"class_name", "Sequential"}, {"config", {{"name", "seed"}, {"layers", layers}}}};
}

// A two-class ONNX TreeEnsembleClassifier: one split on feature 1, then ZipMap.
void OnnxTreeSeed(const fs::path& path) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(15);
  auto* ml = model.add_opset_import();
  ml->set_domain("ai.onnx.ml");
  ml->set_version(1);
  auto* graph = model.mutable_graph();
  auto* input = graph->add_input();
  input->set_name("X");
  auto* type = input->mutable_type()->mutable_tensor_type();
  type->set_elem_type(onnx::TensorProto_DataType_FLOAT);
  type->mutable_shape()->add_dim()->set_dim_param("N");
  type->mutable_shape()->add_dim()->set_dim_value(2);
  auto* node = graph->add_node();
  node->set_op_type("TreeEnsembleClassifier");
  node->set_domain("ai.onnx.ml");
  node->add_input("X");
  node->add_output("label");
  node->add_output("probabilities");
  auto attribute = [&](const char* name) {
    auto* a = node->add_attribute();
    a->set_name(name);
    return a;
  };
  auto ints = [&](const char* name, std::vector<int64_t> values) {
    auto* a = attribute(name);
    for (auto v : values) a->add_ints(v);
  };
  ints("nodes_treeids", {0, 0, 0});
  ints("nodes_nodeids", {0, 1, 2});
  ints("nodes_featureids", {1, 0, 0});
  ints("nodes_truenodeids", {1, 0, 0});
  ints("nodes_falsenodeids", {2, 0, 0});
  ints("nodes_missing_value_tracks_true", {1, 0, 0});
  auto* values = attribute("nodes_values");
  for (float v : {0.25f, 0.0f, 0.0f}) values->add_floats(v);
  auto* modes = attribute("nodes_modes");
  for (const char* m : {"BRANCH_LEQ", "LEAF", "LEAF"}) modes->add_strings(m);
  ints("class_treeids", {0, 0, 0, 0});
  ints("class_nodeids", {1, 1, 2, 2});
  ints("class_ids", {0, 1, 0, 1});
  auto* weights = attribute("class_weights");
  for (float v : {0.8f, 0.2f, 0.1f, 0.9f}) weights->add_floats(v);
  ints("classlabels_int64s", {3, 7});
  auto* zipmap = graph->add_node();
  zipmap->set_op_type("ZipMap");
  zipmap->set_domain("ai.onnx.ml");
  zipmap->add_input("probabilities");
  zipmap->add_output("output_probability");
  Write(path, model.SerializeAsString());
}

// A graph of ai.onnx.ml nodes (or of `domain`) over an input of `elem` [N, width]:
// each node (op, inputs, outputs, attributes) in order, the last node's first output
// the graph's.
struct MlNode {
  const char* op;
  std::vector<std::string> inputs, outputs;
  std::function<void(onnx::NodeProto&)> attributes;
  const char* domain = "ai.onnx.ml";
};

void MlSeed(const fs::path& path, int elem, int64_t width, const std::vector<MlNode>& nodes) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(15);
  auto* ml = model.add_opset_import();
  ml->set_domain("ai.onnx.ml");
  ml->set_version(2);
  auto* microsoft = model.add_opset_import();
  microsoft->set_domain("com.microsoft");
  microsoft->set_version(1);
  auto* graph = model.mutable_graph();
  auto* input = graph->add_input();
  input->set_name("X");
  auto* type = input->mutable_type()->mutable_tensor_type();
  type->set_elem_type(elem);
  type->mutable_shape()->add_dim()->set_dim_value(2);
  if (width > 0) type->mutable_shape()->add_dim()->set_dim_value(width);
  for (const auto& n : nodes) {
    auto* node = graph->add_node();
    node->set_op_type(n.op);
    node->set_domain(n.domain);
    for (const auto& i : n.inputs) node->add_input(i);
    for (const auto& o : n.outputs) node->add_output(o);
    n.attributes(*node);
  }
  graph->add_output()->set_name(nodes.back().outputs.front());
  Write(path, model.SerializeAsString());
}

onnx::AttributeProto* Attr(onnx::NodeProto& node, const char* name, onnx::AttributeProto_AttributeType type) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(type);
  return a;
}

void Floats(onnx::NodeProto& node, const char* name, std::vector<float> values) {
  auto* a = Attr(node, name, onnx::AttributeProto_AttributeType_FLOATS);
  for (float v : values) a->add_floats(v);
}

void Strings(onnx::NodeProto& node, const char* name, std::vector<std::string> values) {
  auto* a = Attr(node, name, onnx::AttributeProto_AttributeType_STRINGS);
  for (const auto& v : values) a->add_strings(v);
}

void Ints(onnx::NodeProto& node, const char* name, std::vector<int64_t> values) {
  auto* a = Attr(node, name, onnx::AttributeProto_AttributeType_INTS);
  for (auto v : values) a->add_ints(v);
}

// scikit-learn pipelines as skl2onnx writes them: imputer, scaler, logistic
// regression with string labels, ZipMap; and string categories encoded.
void MlSeeds(const fs::path& dir) {
  MlSeed(dir / "ml_logistic.onnx", onnx::TensorProto_DataType_FLOAT, 2,
         {{"Imputer",
           {"X"},
           {"imputed"},
           [](auto& n) {
             Floats(n, "imputed_value_floats", {0.5f, 1.5f});
             Attr(n, "replaced_value_float", onnx::AttributeProto_AttributeType_FLOAT)->set_f(NAN);
           }},
          {"Scaler",
           {"imputed"},
           {"scaled"},
           [](auto& n) {
             Floats(n, "offset", {0.5f, 1.0f});
             Floats(n, "scale", {2.0f, 0.5f});
           }},
          {"LinearClassifier",
           {"scaled"},
           {"label", "raw"},
           [](auto& n) {
             Floats(n, "coefficients", {1, -1, 0.5f, 2, -2, 0});
             Floats(n, "intercepts", {0.1f, 0.2f, -0.3f});
             Strings(n, "classlabels_strings", {"a", "b", "c"});
             Attr(n, "post_transform", onnx::AttributeProto_AttributeType_STRING)->set_s("LOGISTIC");
           }},
          {"Normalizer",
           {"raw"},
           {"probabilities"},
           [](auto& n) { Attr(n, "norm", onnx::AttributeProto_AttributeType_STRING)->set_s("L1"); }},
          {"ZipMap", {"probabilities"}, {"output_probability"}, [](auto& n) {
             Strings(n, "classlabels_strings", {"a", "b", "c"});
           }}});
  // A TF-IDF text classifier as skl2onnx writes one: lower case, tokens by a Unicode
  // expression, TF-IDF over uni- and bigrams, a linear classifier.
  MlSeed(dir / "ml_text.onnx", onnx::TensorProto_DataType_STRING, 0,
         {{"StringNormalizer",
           {"X"},
           {"lower"},
           [](auto& n) { Attr(n, "case_change_action", onnx::AttributeProto_AttributeType_STRING)->set_s("LOWER"); },
           ""},
          {"Tokenizer",
           {"lower"},
           {"tokens"},
           [](auto& n) {
             Attr(n, "mark", onnx::AttributeProto_AttributeType_INT)->set_i(0);
             Attr(n, "mincharnum", onnx::AttributeProto_AttributeType_INT)->set_i(2);
             Attr(n, "pad_value", onnx::AttributeProto_AttributeType_STRING)->set_s("#");
             Attr(n, "tokenexp", onnx::AttributeProto_AttributeType_STRING)->set_s("[\\p{L}\\p{N}_]+");
           },
           "com.microsoft"},
          {"TfIdfVectorizer",
           {"tokens"},
           {"tfidf"},
           [](auto& n) {
             Attr(n, "mode", onnx::AttributeProto_AttributeType_STRING)->set_s("TFIDF");
             Attr(n, "min_gram_length", onnx::AttributeProto_AttributeType_INT)->set_i(1);
             Attr(n, "max_gram_length", onnx::AttributeProto_AttributeType_INT)->set_i(2);
             Attr(n, "max_skip_count", onnx::AttributeProto_AttributeType_INT)->set_i(0);
             Ints(n, "ngram_counts", {0, 3});
             Ints(n, "ngram_indexes", {0, 1, 2, 3});
             Strings(n, "pool_strings", {"disk", "full", "login", "disk", "full"});
             Floats(n, "weights", {1.5f, 1.2f, 2.0f, 3.0f});
           },
           ""},
          {"LinearClassifier", {"tfidf"}, {"label", "scores"}, [](auto& n) {
             Floats(n, "coefficients", {1, 1, -1, 2, -1, -1, 1, -2});
             Floats(n, "intercepts", {0.1f, -0.1f});
             Strings(n, "classlabels_strings", {"storage", "access"});
             Attr(n, "multi_class", onnx::AttributeProto_AttributeType_INT)->set_i(1);
             Attr(n, "post_transform", onnx::AttributeProto_AttributeType_STRING)->set_s("SOFTMAX");
           }}});
  MlSeed(dir / "ml_categories.onnx", onnx::TensorProto_DataType_STRING, 0,
         {{"LabelEncoder",
           {"X"},
           {"codes"},
           [](auto& n) {
             Strings(n, "keys_strings", {"red", "green"});
             Ints(n, "values_int64s", {4, 9});
           }},
          {"OneHotEncoder",
           {"codes"},
           {"hot"},
           [](auto& n) {
             Ints(n, "cats_int64s", {4, 9, -1});
           }},
          {"FeatureVectorizer", {"hot"}, {"features"}, [](auto& n) { Ints(n, "inputdimensions", {3}); }},
          {"LinearRegressor", {"features"}, {"y"}, [](auto& n) {
             Floats(n, "coefficients", {1, 2, 3});
             Floats(n, "intercepts", {0.5f});
           }}});
}

// A model of opset 13 (IR 7) whose graph takes one float input "x" of shape `dims`
// (a negative dimension: the symbolic "N"); returns its graph.
onnx::GraphProto* FloatInputModel(onnx::ModelProto& model, const std::vector<int64_t>& dims) {
  model.set_ir_version(7);
  model.add_opset_import()->set_version(13);
  auto* graph = model.mutable_graph();
  auto* input = graph->add_input();
  input->set_name("x");
  auto* type = input->mutable_type()->mutable_tensor_type();
  type->set_elem_type(onnx::TensorProto_DataType_FLOAT);
  for (int64_t d : dims) {
    if (d < 0) {
      type->mutable_shape()->add_dim()->set_dim_param("N");
    } else {
      type->mutable_shape()->add_dim()->set_dim_value(d);
    }
  }
  return graph;
}

void OnnxSeed(const fs::path& path) {
  onnx::ModelProto model;
  auto* graph = FloatInputModel(model, {-1, 3});
  auto init = [&](const char* name, std::vector<int64_t> dims, std::vector<float> values) {
    auto* t = graph->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto_DataType_FLOAT);
    for (auto d : dims) t->add_dims(d);
    t->set_raw_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  };
  init("W", {3, 2}, {1, 2, 3, 4, 5, 6});
  init("B", {2}, {0.5f, -0.5f});
  auto node = [&](const char* op, std::vector<std::string> in, const char* out) {
    auto* n = graph->add_node();
    n->set_op_type(op);
    n->set_name(out);
    for (auto& i : in) n->add_input(i);
    n->add_output(out);
    return n;
  };
  node("MatMul", {"x", "W"}, "mm");
  node("Add", {"mm", "B"}, "add");
  node("Relu", {"add"}, "relu");
  node("Sigmoid", {"relu"}, "y");
  graph->add_output()->set_name("y");
  std::string bytes;
  model.SerializeToString(&bytes);
  Write(path, bytes);
}

// A 3x3 convolution of 16 channels with Relu: the shape the tensor runtime hands to
// oneDNN (tensor/onednn_conv.cpp).
void ConvSeed(const fs::path& path) {
  constexpr int64_t kChannels = 16;
  onnx::ModelProto model;
  auto* graph = FloatInputModel(model, {1, kChannels, 5, 5});
  auto init = [&](const char* name, std::vector<int64_t> dims, float step) {
    auto* t = graph->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto_DataType_FLOAT);
    int64_t n = 1;
    for (auto d : dims) {
      t->add_dims(d);
      n *= d;
    }
    for (int64_t i = 0; i < n; ++i) t->add_float_data(static_cast<float>(i % 7) * step - 0.1f);
  };
  init("W", {kChannels, kChannels, 3, 3}, 0.03f);
  init("B", {kChannels}, 0.05f);
  auto* conv = graph->add_node();
  conv->set_op_type("Conv");
  conv->set_name("conv");
  for (const char* i : {"x", "W", "B"}) conv->add_input(i);
  conv->add_output("c");
  Ints(*conv, "kernel_shape", {3, 3});
  Ints(*conv, "pads", {1, 1, 1, 1});
  auto* relu = graph->add_node();
  relu->set_op_type("Relu");
  relu->set_name("y");
  relu->add_input("c");
  relu->add_output("y");
  graph->add_output()->set_name("y");
  Write(path, model.SerializeAsString());
}

void KerasV3Seed(const fs::path& dir, const fs::path& path) {
  const fs::path weights = dir / "model.weights.h5";
  hid_t file = H5Fcreate(weights.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  auto dataset = [&](const char* name, std::vector<hsize_t> dims, std::vector<float> values) {
    hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    hid_t d = H5Dcreate2(file, name, H5T_IEEE_F32LE, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
    H5Dclose(d);
    H5Sclose(space);
  };
  dataset("/layers/dense/vars/0", {3, 4}, std::vector<float>(12, 0.25f));
  dataset("/layers/dense/vars/1", {4}, {0, 1, 2, 3});
  dataset("/layers/batch_normalization/vars/0", {4}, {1, 1, 1, 1});
  dataset("/layers/batch_normalization/vars/1", {4}, {0, 0, 0, 0});
  dataset("/layers/batch_normalization/vars/2", {4}, {0, 0, 0, 0});
  dataset("/layers/batch_normalization/vars/3", {4}, {1, 1, 1, 1});
  dataset("/layers/dense_1/vars/0", {4, 2}, std::vector<float>(8, -0.5f));
  dataset("/layers/dense_1/vars/1", {2}, {0, 0});
  H5Pclose(lcpl);
  H5Fclose(file);
  int error = 0;
  zip_t* archive = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
  const std::string config = Sequential().dump();
  const std::string metadata = R"({"keras_version": "3.3.3"})";
  const std::string weight_bytes = ReadAll(weights);
  for (const auto& [name, content] : {std::pair{"config.json", &config}, std::pair{"metadata.json", &metadata},
                                      std::pair{"model.weights.h5", &weight_bytes}}) {
    zip_source_t* src = zip_source_buffer(archive, content->data(), content->size(), 0);
    zip_file_add(archive, name, src, ZIP_FL_OVERWRITE);
  }
  zip_close(archive);
  fs::remove(weights);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const fs::path dir = argv[1];
  fs::create_directories(dir);
  OnnxSeed(dir / "onnx/mlp.onnx");
  MlSeeds(dir / "onnx");
  OnnxTreeSeed(dir / "onnx/trees.onnx");  // the tensor runtime's tree kernels
  ConvSeed(dir / "onnx/conv16.onnx");
  // A NumPy file (format 1.0) of two float32 rows: `runnel model run`'s input.
  const std::string npy_header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1), }\n";
  Write(dir / "onnx/rows.npy", std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(npy_header.size()) + '\0' +
                                   npy_header + std::string("\0\0\x80\x3f\0\0\0\x40", 8));
  fs::create_directories(dir / "trees");
  OnnxTreeSeed(dir / "trees/classifier.onnx");

  runnel::testing::KerasH5File h5(Sequential());
  h5.Weights("d1", {{"kernel:0", {{3, 4}, std::vector<float>(12, 0.25f)}}, {"bias:0", {{4}, {0, 1, 2, 3}}}});
  h5.Weights("bn", {{"gamma:0", {{4}, {1, 1, 1, 1}}},
                    {"beta:0", {{4}, {0, 0, 0, 0}}},
                    {"moving_mean:0", {{4}, {0, 0, 0, 0}}},
                    {"moving_variance:0", {{4}, {1, 1, 1, 1}}}});
  h5.Weights("d2", {{"kernel:0", {{4, 2}, std::vector<float>(8, -0.5f)}}, {"bias:0", {{2}, {0, 0}}}});
  fs::create_directories(dir / "keras_h5");
  h5.Write(dir / "keras_h5/mlp.h5");

  fs::create_directories(dir / "keras_v3");
  KerasV3Seed(dir / "keras_v3", dir / "keras_v3/mlp.keras");

  // GraphDef { node { name: "x" op: "Placeholder" } }, encoded by hand.
  Write(dir / "tf_graph/placeholder", std::string("\x0a\x10\x0a\x01x\x12\x0bPlaceholder", 18));
  Write(dir / "pmml/tree",
        "<PMML version=\"4.3\"><DataDictionary><DataField name=\"x\" optype=\"continuous\"/>"
        "<DataField name=\"c\" optype=\"categorical\"><Value value=\"a\"/><Value value=\"b\"/></DataField>"
        "</DataDictionary><TreeModel functionName=\"classification\" missingValueStrategy=\"lastPrediction\">"
        "<MiningSchema><MiningField name=\"c\" usageType=\"target\"/><MiningField name=\"x\"/></MiningSchema>"
        "<Node score=\"a\"><True/><ScoreDistribution value=\"a\" recordCount=\"2\"/>"
        "<Node score=\"b\"><SimplePredicate field=\"x\" operator=\"lessOrEqual\" value=\"1\"/></Node>"
        "<Node score=\"a\"><SimplePredicate field=\"x\" operator=\"greaterThan\" value=\"1\"/></Node>"
        "</Node></TreeModel></PMML>");
  Write(dir / "pmml/regression",
        "<PMML version=\"4.4\"><DataDictionary><DataField name=\"x\" optype=\"continuous\"/>"
        "<DataField name=\"y\" optype=\"continuous\"/></DataDictionary>"
        "<TransformationDictionary><DerivedField name=\"d\"><Apply function=\"+\"><FieldRef field=\"x\"/>"
        "<Constant>2</Constant></Apply></DerivedField></TransformationDictionary>"
        "<RegressionModel functionName=\"regression\"><MiningSchema><MiningField name=\"y\" usageType=\"target\"/>"
        "<MiningField name=\"x\" missingValueReplacement=\"1\"/></MiningSchema>"
        "<RegressionTable intercept=\"1\"><NumericPredictor name=\"d\" coefficient=\"2\"/></RegressionTable>"
        "</RegressionModel></PMML>");
  // A two-tree binary:logistic model over 2 features, as XGBoost 1.7 writes it.
  Write(dir / "trees/xgboost.json",
        R"({"learner":{"learner_model_param":{"base_score":"5E-1","num_class":"0","num_feature":"2",)"
        R"("num_target":"1"},"objective":{"name":"binary:logistic"},"gradient_booster":{"name":"gbtree",)"
        R"("model":{"tree_info":[0,0],"trees":[{"left_children":[1,-1,-1],"right_children":[2,-1,-1],)"
        R"("split_indices":[0,0,0],"split_conditions":[0.5,-0.4,0.3],"default_left":[1,0,0],"split_type":[0,0,0]},)"
        R"({"left_children":[1,3,-1,-1,-1],"right_children":[2,4,-1,-1,-1],"split_indices":[1,0,0,0,0],)"
        R"("split_conditions":[1.5,-1,0.2,-0.1,0.1],"default_left":[0,1,0,0,0]}]}}},"version":[1,7,4]})");
  // The first byte picks the parser (request_body_fuzzer.cpp): 0 target, 1 JSON,
  // 2 NDJSON, 3 form, 4 multipart with boundary "b".
  Write(dir / "request_body/target",
        std::string(1, '\x00') + std::string("/v1/pipelines/n%C3%A9eds/requests?status=done&a+b=%20&flag"));
  Write(dir / "request_body/json",
        std::string(1, '\x01') + std::string("[{\"age\": 40, \"name\": \"\\u00e9\"}, {\"x\": [1.5e3, null, true]}]"));
  Write(dir / "request_body/ndjson", std::string(1, '\x02') + std::string("{\"a\": 1}\n\n{\"a\": 2}\r\n"));
  Write(dir / "request_body/form", std::string(1, '\x03') + std::string("age=40&gender=1"));
  Write(dir / "request_body/multipart",
        std::string(1, '\x04') +
            std::string("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m\"\r\n\r\nxy\r\n--b--"));
  // The first byte picks the content type (record_parser_fuzzer.cpp): even JSON, odd
  // NDJSON; the table is tests/support/records_reference.hpp's ExampleSchema.
  Write(dir / "record_parser/array",
        std::string(1, '\x00') + std::string("[{\"client\": 1, \"note\": \"a\\tb\", \"amount\": 12.5, \"flag\": true},"
                                             " {\"flag\": null, \"client\": 40.0}, {\"client\": 2, \"doc\": \"s\"}]"));
  Write(dir / "record_parser/object",
        std::string(1, '\x00') + std::string("{\"at\": \"2026-12-06\", \"client\": -7, \"label\": \"\\u00e9\"}"));
  Write(dir / "record_parser/ndjson",
        std::string(1, '\x01') +
            std::string("{\"client\": 1, \"amount\": 1e2}\n\r\n {\"amount\": -0.5, \"client\": 2} \n"));
  Write(dir / "filter/simple", "age >= 18 and name = 'O''Brien'");
  Write(dir / "filter/nulls", "status is null AND wealth IS NOT NULL and client_id != -3.5e2");
  Write(
      dir / "recommend_rule/needs",
      "(p.income = r.income_investment OR p.accumulation = r.accumulation_investment) AND p.risk <= r.risk_propensity");
  Write(dir / "recommend_rule/logic", "NOT (p.\"Risk\" IS NULL OR r.x <> -1.5e-3) and TRUE or p.a != .5");
  Write(dir / "features/simple", "a * 2 + b\nln(a)\nbox_cox(c, 0.3)");
  Write(dir / "features/functions", "min(a, b, c)\nclip(a, 0, 1)\npow(b, 2) / sqrt(c)\none_hot(a, 3)");
  Write(dir / "features/text", "t:lower(s || ' ' || t)\nconcat(upper(s), '|', t)\ncoalesce(t, s, 'it''s')\ntrim(s)");
  Write(
      dir / "pipeline/minimal.toml",
      "name = \"t\"\n[source]\ntable = \"t\"\nkey = \"id\"\ncolumns = [\"a\", \"b\"]\n"
      "[model]\npath = \"m.onnx\"\noutputs = [\"y\"]\n[[derived]]\nname = \"s\"\nexpr = \"a + b\"\n"
      "[features]\ninputs = [\"a\", \"ln(s)\"]\nmeans = [1, 2]\nscales = [3, 4]\n[output]\ncolumns = [\"y\", \"s\"]\n");
  Write(dir / "pipeline/text.toml",
        "name = \"t\"\n[source]\ntable = \"t\"\nkey = \"id\"\ntext_columns = [\"s\", \"b\"]\n"
        "[model]\npath = \"m.onnx\"\noutputs = [\"q\", \"p\"]\nlabels = [\"q\"]\n"
        "[features]\ntext = [\"lower(s || ' ' || coalesce(b, ''))\"]\n[output]\ncolumns = [\"q\", \"p\"]\n"
        "[write_back]\ncolumns = [\"q\"]\n");
  Write(dir / "pipeline/ports.toml",
        "name = \"t\"\n[source]\ntable = \"t\"\nkey = \"id\"\ncolumns = [\"a\", \"b\", \"c\"]\n"
        "[model]\npath = \"m.onnx\"\noutputs = [\"y\", \"p\"]\n"
        "inputs = { numbers = [\"a\", \"b\"], kind = [\"c\"] }\n"
        "output_from = { y = \"label\", p = \"probabilities[1]\" }\n"
        "[features]\ninputs = [\"a\", \"b\", \"c\"]\n[output]\ncolumns = [\"y\", \"p\"]\n");
  Write(dir / "pipeline/jetstream.toml",
        "name = \"t\"\n[source]\ntable = \"t\"\nkey = \"id\"\nclient = \"c\"\ncolumns = [\"a\"]\n"
        "[model]\npath = \"m.onnx\"\noutputs = [\"y\"]\n[features]\ninputs = [\"a\"]\n[output]\ncolumns = [\"y\"]\n"
        "[quota]\nmax_requests = 5\n[jetstream]\nmode = \"direct\"\nservers = [\"nats://a:4222\"]\nstream = \"R\"\n"
        "subject = \"r.t\"\nresults = \"res\"\nbatch = 10\nack_wait = \"5s\"\n");
  // Hugging Face tokenizers: WordPiece as BERT's, byte-level BPE as RoBERTa's (small
  // vocabularies), each followed by a NUL and a text.
  Write(
      dir / "tokenizer/wordpiece.json",
      std::string(R"({"normalizer":{"type":"BertNormalizer","lowercase":true},)"
                  R"("pre_tokenizer":{"type":"BertPreTokenizer"},)"
                  R"("post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"[CLS]"}},)"
                  R"({"Sequence":{"id":"A"}},{"SpecialToken":{"id":"[SEP]"}}],"special_tokens":{)"
                  R"("[CLS]":{"id":"[CLS]","ids":[2]},"[SEP]":{"id":"[SEP]","ids":[3]}}},)"
                  R"("added_tokens":[{"id":4,"content":"[MASK]","special":true,"normalized":false,"lstrip":true}],)"
                  R"("truncation":{"max_length":8,"direction":"Left"},)"
                  R"("model":{"type":"WordPiece","unk_token":"[UNK]","max_input_chars_per_word":12,)"
                  R"("vocab":{"[PAD]":0,"[UNK]":1,"[CLS]":2,"[SEP]":3,"[MASK]":4,"un":5,"##able":6,"a":7,"##b":8}}})") +
          std::string(1, '\0') + "Unable [MASK] ab Ünable");
  Write(dir / "tokenizer/bpe.json",
        std::string(
            R"({"normalizer":{"type":"Sequence","normalizers":[{"type":"NFKC"},{"type":"Strip"}]},)"
            R"("pre_tokenizer":{"type":"ByteLevel","add_prefix_space":true},)"
            R"("post_processor":{"type":"RobertaProcessing","sep":["</s>",2],"cls":["<s>",0]},)"
            R"("added_tokens":[{"id":0,"content":"<s>","special":true},{"id":5,"content":"<mask>","lstrip":true}],)"
            R"("model":{"type":"BPE","unk_token":"<unk>","vocab":{"<s>":0,"<pad>":1,"</s>":2,"<unk>":3,)"
            R"("a":4,"<mask>":5,"b":6,"ab":7,"Ġ":8,"Ġab":9},"merges":["a b",["Ġ","ab"]]}})") +
            std::string(1, '\0') + "ab ab <mask> ba's  x");
  // SentencePiece Unigram as transformers converts it: a precompiled charsmap (one rule:
  // "A" -> "a"), a regex Replace, Metaspace, byte fallback.
  Write(dir / "tokenizer/unigram.json",
        std::string(R"({"normalizer":{"type":"Sequence","normalizers":[{"type":"Precompiled","precompiled_charsmap":")"
                    "CAEAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABBBQAAAAAAgGEA"
                    R"("},{"type":"Replace","pattern":{"Regex":" {2,}"},"content":"\u2581"}]},)"
                    R"("pre_tokenizer":{"type":"Metaspace","replacement":"\u2581","prepend_scheme":"first"},)"
                    R"("added_tokens":[{"id":0,"content":"<unk>","special":true}],)"
                    R"("model":{"type":"Unigram","unk_id":0,"byte_fallback":true,"vocab":[["<unk>",0],)"
                    R"(["\u2581a",-1],["a",-2],["b",-2.5],["ab",-3],["<0xC3>",-9],["<0xA9>",-9]]}})") +
            std::string(1, '\0') + "AB  ab é x");
  Write(dir / "csv/basic", "id,a,b\n1,2,3\n2,-1,0\n3,,4\n\"4\",\"5\",x\n5,1\n");
  Write(dir / "csv/bom", "\xEF\xBB\xBFID,A,B\r\n1,1e3,2.5\r\n");
  return 0;
}
