// The tensor runtime: shapes and broadcasting, hostile files refused before anything
// is allocated for them, clear errors, and the ONNX backend tests (Debian's
// libonnx-testdata, whose expected outputs ONNX's reference implementation made).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <onnx/onnx-ml.pb.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <set>
#include <thread>

#include "../support/error_message.hpp"
#include "../support/random.hpp"
#include "kernels.hpp"
#include "runnel/tensor/conformance.hpp"
#include "runnel/tensor/graph.hpp"
#include "runnel/tensor/onnx_import.hpp"
#include "runnel/tensor/ops.hpp"
#include "runnel/tensor/tensor_files.hpp"
#include "vector_math.hpp"

namespace runnel::tensor {
namespace {

using runnel::testing::MessageOf;

TEST(TensorTest, BroadcastingFollowsNumPy) {
  EXPECT_EQ(BroadcastShapes({2, 3, 4}, {4}), (Shape{2, 3, 4}));
  EXPECT_EQ(BroadcastShapes({2, 1, 4}, {3, 1}), (Shape{2, 3, 4}));
  EXPECT_EQ(BroadcastShapes({}, {5}), (Shape{5}));
  EXPECT_EQ(BroadcastShapes({0, 1}, {1, 3}), (Shape{0, 3}));
  EXPECT_EQ(MessageOf([] { BroadcastShapes({2, 3}, {4}); }), "shapes [2, 3] and [4] do not broadcast");
  // Every element of a [2, 3] from a [3] and a [2, 1]: the flat index into each.
  std::vector<std::pair<size_t, size_t>> seen;
  const Shape out{2, 3};
  ForEachBroadcast(out, {BroadcastStrides({3}, out), BroadcastStrides({2, 1}, out)},
                   [&](size_t, const std::vector<size_t>& at) { seen.emplace_back(at[0], at[1]); });
  EXPECT_EQ(seen, (std::vector<std::pair<size_t, size_t>>{{0, 0}, {1, 0}, {2, 0}, {0, 1}, {1, 1}, {2, 1}}));
}

TEST(TensorTest, SizesAreBoundedBeforeAllocation) {
  EXPECT_EQ(ElementCount({}), 1u);
  EXPECT_EQ(ElementCount({3, 0, 5}), 0u);
  EXPECT_NE(MessageOf([] {
              ElementCount({0, int64_t{1} << 40, int64_t{1} << 40});
            }).find("more than"),
            std::string::npos)
      << "an empty tensor's other dimensions are bounded too: their products must not overflow";
  EXPECT_NE(MessageOf([] { ElementCount({1 << 20, 1 << 20}); }).find("more than"), std::string::npos);
  EXPECT_NE(MessageOf([] {
              ElementCount({int64_t{1} << 62, 4, 4});
            }).find("more than"),
            std::string::npos)
      << "no overflow of the product";
  EXPECT_NE(MessageOf([] { Tensor(DataType::kFloat, {2, -1}); }).find("negative"), std::string::npos);
  Tensor t(DataType::kInt64, {2, 3});
  EXPECT_EQ(MessageOf([&] { t.Reshape({4}); }), "cannot reshape 6 elements of shape [2, 3] to [4]");
}

onnx::TensorProto FloatProto(std::vector<int64_t> dims, std::vector<float> values) {
  onnx::TensorProto p;
  p.set_name("t");
  p.set_data_type(onnx::TensorProto_DataType_FLOAT);
  for (auto d : dims) p.add_dims(d);
  for (float v : values) p.add_float_data(v);
  return p;
}

// A float graph input `name` of g.
void AddFloatInput(onnx::GraphProto* g, const std::string& name) {
  auto* in = g->add_input();
  in->set_name(name);
  in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto_DataType_FLOAT);
}

// A float initializer `name` of g.
void AddInitializer(onnx::GraphProto* g, const std::string& name, std::vector<int64_t> dims,
                    std::vector<float> values) {
  auto* t = g->add_initializer();
  *t = FloatProto(std::move(dims), std::move(values));
  t->set_name(name);
}

// The graph of `m` (IR 8, opset 17) with its float input "x".
onnx::GraphProto* GraphOfX(onnx::ModelProto& m) {
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  AddFloatInput(g, "x");
  return g;
}

// A node `op` of graph g reading `inputs`, writing `output`.
onnx::NodeProto* AddNode(onnx::GraphProto* g, const std::string& op, const std::vector<std::string>& inputs,
                         const std::string& output) {
  auto* n = g->add_node();
  n->set_op_type(op);
  for (const auto& i : inputs) n->add_input(i);
  n->add_output(output);
  return n;
}

TEST(TensorTest, HostileTensorFilesAreRefusedNamingWhatIsWrong) {
  auto good = FloatProto({2}, {1.5f, -2});
  const auto t = LoadOnnxTensor(good.SerializeAsString(), "x.pb");
  EXPECT_EQ(t.shape(), (Shape{2}));
  EXPECT_EQ(t.data<float>()[1], -2.0f);
  // A shape of 2^40 elements with 8 bytes of data: refused, nothing allocated.
  auto huge = FloatProto({1 << 20, 1 << 20}, {1, 2});
  EXPECT_NE(MessageOf([&] { LoadOnnxTensor(huge.SerializeAsString(), "huge.pb"); }).find("huge.pb: tensor 't'"),
            std::string::npos);
  // 2^26 doubles claimed (512 MiB) with 16 bytes of data: refused before allocating.
  auto claims = FloatProto({1 << 13, 1 << 13}, {});
  claims.set_data_type(onnx::TensorProto_DataType_DOUBLE);
  claims.set_raw_data(std::string(16, '\0'));
  EXPECT_EQ(MessageOf([&] {
              ScopedTensorLimit budget(1 << 20);  // an allocation would throw another message
              LoadOnnxTensor(claims.SerializeAsString(), "claims.pb");
            }),
            "claims.pb: tensor 't' holds 16 bytes of raw data, its shape [8192, 8192] needs 536870912");
  auto short_raw = FloatProto({4}, {});
  short_raw.set_raw_data(std::string(12, '\0'));
  EXPECT_EQ(MessageOf([&] { LoadOnnxTensor(short_raw.SerializeAsString(), "raw.pb"); }),
            "raw.pb: tensor 't' holds 12 bytes of raw data, its shape [4] needs 16");
  auto fewer = FloatProto({3}, {1, 2});
  EXPECT_EQ(MessageOf([&] { LoadOnnxTensor(fewer.SerializeAsString(), "few.pb"); }),
            "few.pb: tensor 't' holds 2 values, its shape needs 3");
  auto half = FloatProto({1}, {1});
  half.set_data_type(onnx::TensorProto_DataType_FLOAT16);
  EXPECT_EQ(MessageOf([&] { LoadOnnxTensor(half.SerializeAsString(), "h.pb"); }),
            "unsupported: h.pb: tensor 't' has element type float16");
  EXPECT_EQ(MessageOf([] { LoadOnnxTensor("\xff\xff\xff", "junk.pb"); }),
            "junk.pb: not a valid ONNX tensor (protobuf parse failed)");
}

// A one-node model: y = op(x, ...).
std::string OneNodeModel(const std::string& op, int opset, int inputs, int elem = onnx::TensorProto_DataType_FLOAT) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(opset);
  auto* g = m.mutable_graph();
  auto* node = g->add_node();
  node->set_op_type(op);
  node->set_name("the_node");
  for (int i = 0; i < inputs; ++i) {
    const std::string name = "x" + std::to_string(i);
    node->add_input(name);
    auto* in = g->add_input();
    in->set_name(name);
    in->mutable_type()->mutable_tensor_type()->set_elem_type(elem);
  }
  node->add_output("y");
  g->add_output()->set_name("y");
  return m.SerializeAsString();
}

TEST(TensorTest, GraphsRunAndFailNamingTheNode) {
  auto add = LoadOnnxGraph(OneNodeModel("Add", 17, 2), "add.onnx");
  Session session(add);
  const std::vector<float> a{1, 2, 3, 4, 5, 6}, b{10, 20, 30};
  auto out = session.Run({Tensor::Of<float>(DataType::kFloat, {2, 3}, a), Tensor::Of<float>(DataType::kFloat, {3}, b)});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].shape(), (Shape{2, 3}));
  EXPECT_EQ(out[0].data<float>()[4], 25.0f);
  EXPECT_EQ(MessageOf([&] {
              session.Run({Tensor(DataType::kFloat, {2, 3}), Tensor(DataType::kFloat, {2})});
            }),
            "node 'the_node' (Add): shapes [2, 3] and [2] do not broadcast");
  EXPECT_EQ(MessageOf([&] {
              session.Run({Tensor(DataType::kInt64, {1}), Tensor(DataType::kFloat, {1})});
            }),
            "input 'x0' is int64, the model takes float");

  auto div = LoadOnnxGraph(OneNodeModel("Div", 17, 2, onnx::TensorProto_DataType_INT64), "div.onnx");
  Session integer(div);
  EXPECT_EQ(MessageOf([&] {
              integer.Run({Tensor(DataType::kInt64, {1}), Tensor(DataType::kInt64, {1})});
            }),
            "node 'the_node' (Div): integer division by zero");

  EXPECT_EQ(MessageOf([] { LoadOnnxGraph(OneNodeModel("Frobnicate", 17, 1), "f.onnx"); }),
            "unsupported: Frobnicate (opset 17): node 'the_node' (Frobnicate) of f.onnx");
  EXPECT_EQ(FindKernel("", "Mish", 17), nullptr) << "Mish exists from opset 18";
  EXPECT_NE(FindKernel("", "Mish", 18), nullptr);
}

// A one-node ai.onnx.ml model y = op(x) with x of element type `elem`; `set` adds the
// node's attributes.
std::string OneDomainNodeModel(const std::string& domain, const std::string& op, int elem, int opset,
                               const std::function<void(onnx::NodeProto&)>& set) {
  onnx::ModelProto m;
  m.ParseFromString(OneNodeModel(op, 17, 1, elem));
  auto* imported = m.add_opset_import();
  imported->set_domain(domain);
  imported->set_version(opset);
  auto* node = m.mutable_graph()->mutable_node(0);
  node->set_domain(domain);
  set(*node);
  return m.SerializeAsString();
}

std::string OneMlNodeModel(const std::string& op, int elem, int opset,
                           const std::function<void(onnx::NodeProto&)>& set) {
  return OneDomainNodeModel("ai.onnx.ml", op, elem, opset, set);
}

onnx::AttributeProto* AddAttribute(onnx::NodeProto& node, const std::string& name,
                                   onnx::AttributeProto_AttributeType type) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(type);
  return a;
}

Tensor Strings(std::vector<std::string> values) {
  Tensor t(DataType::kString, {static_cast<int64_t>(values.size())});
  t.strings() = std::move(values);
  return t;
}

// The expectations below are the operators' definitions in ONNX's ai.onnx.ml
// specification, worked by hand on small inputs (scikit-learn checks the operators
// it uses in tests/model/sklearn_pipeline_test.cpp).
TEST(TensorTest, MlLookupOperatorsFollowTheSpecification) {
  using A = onnx::AttributeProto;
  // LabelEncoder (opset 2): strings to integers, a default for unknown keys.
  auto encoder = LoadOnnxGraph(OneMlNodeModel("LabelEncoder", onnx::TensorProto_DataType_STRING, 2,
                                              [](auto& n) {
                                                auto* keys = AddAttribute(n, "keys_strings", A::STRINGS);
                                                keys->add_strings("cat");
                                                keys->add_strings("dog");
                                                auto* values = AddAttribute(n, "values_int64s", A::INTS);
                                                values->add_ints(7);
                                                values->add_ints(9);
                                                AddAttribute(n, "default_int64", A::INT)->set_i(-5);
                                              }),
                               "le.onnx");
  auto encoded = Session(encoder).Run({Strings({"dog", "emu", "cat"})});
  EXPECT_EQ(std::vector<int64_t>(encoded[0].data<int64_t>().begin(), encoded[0].data<int64_t>().end()),
            (std::vector<int64_t>{9, -5, 7}));

  // CategoryMapper: integers to their strings, the default string for others.
  auto mapper = LoadOnnxGraph(OneMlNodeModel("CategoryMapper", onnx::TensorProto_DataType_INT64, 1,
                                             [](auto& n) {
                                               auto* strings = AddAttribute(n, "cats_strings", A::STRINGS);
                                               strings->add_strings("low");
                                               strings->add_strings("high");
                                               auto* ints = AddAttribute(n, "cats_int64s", A::INTS);
                                               ints->add_ints(1);
                                               ints->add_ints(2);
                                               AddAttribute(n, "default_string", A::STRING)->set_s("other");
                                             }),
                              "cm.onnx");
  const std::vector<int64_t> codes{2, 3, 1};
  auto mapped = Session(mapper).Run({Tensor::Of<int64_t>(DataType::kInt64, {3}, codes)});
  EXPECT_EQ(mapped[0].strings(), (std::vector<std::string>{"high", "other", "low"}));

  // OneHotEncoder: unknown categories are zeros, or an error naming the element.
  auto one_hot = [](int zeros) {
    return LoadOnnxGraph(OneMlNodeModel("OneHotEncoder", onnx::TensorProto_DataType_INT64, 1,
                                        [zeros](auto& n) {
                                          auto* cats = AddAttribute(n, "cats_int64s", A::INTS);
                                          cats->add_ints(4);
                                          cats->add_ints(8);
                                          AddAttribute(n, "zeros", A::INT)->set_i(zeros);
                                        }),
                         "ohe.onnx");
  };
  const std::vector<int64_t> values{8, 5};
  auto hot = Session(one_hot(1)).Run({Tensor::Of<int64_t>(DataType::kInt64, {2}, values)});
  EXPECT_EQ(hot[0].shape(), (Shape{2, 2}));
  EXPECT_EQ(std::vector<float>(hot[0].data<float>().begin(), hot[0].data<float>().end()),
            (std::vector<float>{0, 1, 0, 0}));
  Session strict(one_hot(0));
  EXPECT_EQ(MessageOf([&] { strict.Run({Tensor::Of<int64_t>(DataType::kInt64, {2}, values)}); }),
            "node 'the_node' (OneHotEncoder): element 1 is not one of the 2 categories");

  // Binarizer: 1 above the threshold, 0 at or below it.
  auto binarizer = LoadOnnxGraph(OneMlNodeModel("Binarizer", onnx::TensorProto_DataType_FLOAT, 1,
                                                [](auto& n) { AddAttribute(n, "threshold", A::FLOAT)->set_f(0.5f); }),
                                 "bin.onnx");
  const std::vector<float> x{0.2f, 0.5f, 0.7f};
  auto bits = Session(binarizer).Run({Tensor::Of<float>(DataType::kFloat, {3}, x)});
  EXPECT_EQ(std::vector<float>(bits[0].data<float>().begin(), bits[0].data<float>().end()),
            (std::vector<float>{0, 0, 1}));
}

// StringNormalizer maps case code point by code point (Unicode's simple mapping, as
// ONNX Runtime does: "ß" stays one letter) and drops stop words case-insensitively.
TEST(TensorTest, StringNormalizerMapsUnicodeCase) {
  onnx::ModelProto m;
  m.ParseFromString(OneNodeModel("StringNormalizer", 17, 1, onnx::TensorProto_DataType_STRING));
  auto* node = m.mutable_graph()->mutable_node(0);
  auto* change = node->add_attribute();
  change->set_name("case_change_action");
  change->set_type(onnx::AttributeProto_AttributeType_STRING);
  change->set_s("UPPER");
  auto* stop = node->add_attribute();
  stop->set_name("stopwords");
  stop->set_type(onnx::AttributeProto_AttributeType_STRINGS);
  stop->add_strings("ÉTÉ");
  Session session(LoadOnnxGraph(m.SerializeAsString(), "sn.onnx"));
  const auto out = session.Run({Strings({"été", "straße", "çà", "Ωmega"})});
  EXPECT_EQ(out[0].strings(), (std::vector<std::string>{"STRAßE", "ÇÀ", "ΩMEGA"}));
}

// com.microsoft's Tokenizer against ONNX Runtime: the expected tokens below are
// what onnxruntime-node 1.20 answered for the same nodes and inputs (RE2 semantics:
// leftmost-longest matches, \w is ASCII; marks U+0002/U+0003 around a row's tokens,
// then the padding; an empty separator match skips a character).
std::string TokenizerModel(int64_t mark, const std::string& pad, int64_t min_chars, const std::string& expression,
                           const std::vector<std::string>& separators) {
  using A = onnx::AttributeProto;
  return OneDomainNodeModel("com.microsoft", "Tokenizer", onnx::TensorProto_DataType_STRING, 1, [&](auto& n) {
    AddAttribute(n, "mark", A::INT)->set_i(mark);
    AddAttribute(n, "pad_value", A::STRING)->set_s(pad);
    AddAttribute(n, "mincharnum", A::INT)->set_i(min_chars);
    if (!expression.empty()) AddAttribute(n, "tokenexp", A::STRING)->set_s(expression);
    if (!separators.empty()) {
      auto* list = AddAttribute(n, "separators", A::STRINGS);
      for (const auto& sep : separators) list->add_strings(sep);
    }
  });
}

TEST(TensorTest, TokenizerSplitsAsOnnxRuntimeDoes) {
  const std::vector<std::string> texts = {"Hello, wörld! 42 ab_c", "a  b,c, d", "",
                                          "İstanbul Ωμέγα 東京 🙂x"};
  auto run = [&](const std::string& model, Shape shape, const std::vector<std::string>& in) {
    Tensor x = Strings(in);
    x.Reshape(std::move(shape));
    auto out = Session(LoadOnnxGraph(model, "tok.onnx")).Run({x});
    return std::make_pair(out[0].shape(), out[0].strings());
  };
  auto [shape, tokens] = run(TokenizerModel(0, "#", 2, R"([\p{L}\p{N}_]+)", {}), {4}, texts);
  EXPECT_EQ(shape, (Shape{4, 4}));
  EXPECT_EQ(tokens, (std::vector<std::string>{"Hello", "wörld", "42", "ab_c", "#", "#", "#", "#", "#", "#", "#", "#",
                                              "İstanbul", "Ωμέγα", "東京", "#"}));
  std::tie(shape, tokens) =
      run(TokenizerModel(1, "<p>", 1, R"(\w+|[^\w\s])", {}), {2, 2}, {"one", "xxtwoxx", "a,b", "Ünïcode   spaces"});
  EXPECT_EQ(shape, (Shape{2, 2, 7}));
  EXPECT_EQ(tokens, (std::vector<std::string>{"\x02", "one",     "\x03", "<p>", "<p>",  "<p>",    "<p>",
                                              "\x02", "xxtwoxx", "\x03", "<p>", "<p>",  "<p>",    "<p>",
                                              "\x02", "a",       ",",    "b",   "\x03", "<p>",    "<p>",
                                              "\x02", "Ü",       "n",    "ï",   "code", "spaces", "\x03"}));
  std::tie(shape, tokens) = run(TokenizerModel(0, "", 1, "", {" ", ",\\s*"}), {4}, texts);
  EXPECT_EQ(shape, (Shape{4, 4}));
  EXPECT_EQ(tokens, (std::vector<std::string>{"Hello", "wörld!", "42", "ab_c", "a", "b", "c", "d", "", "", "", "",
                                              "İstanbul", "Ωμέγα", "東京", "🙂x"}));
  std::tie(shape, tokens) = run(TokenizerModel(1, "_", 1, "", {""}), {2, 2}, {"one", "xx", "a,b", "é 🙂"});
  EXPECT_EQ(shape, (Shape{2, 2, 5}));
  EXPECT_EQ(tokens, (std::vector<std::string>{"\x02", "o", "n", "e", "\x03", "\x02", "x", "x", "\x03", "_",
                                              "\x02", "a", ",", "b", "\x03", "\x02", "é", " ", "🙂", "\x03"}));
  // A separator matching the empty string eats every token: [N, C, 0].
  std::tie(shape, tokens) = run(TokenizerModel(0, "#", 1, "", {"x*"}), {2, 2}, {"one", "xxtwoxx", "a,b", "z"});
  EXPECT_EQ(shape, (Shape{2, 2, 0}));
}

TEST(TensorTest, TokenizerRefusesBadExpressionsAndInvalidUtf8) {
  EXPECT_THAT(
      MessageOf([] { LoadOnnxGraph(TokenizerModel(0, "#", 1, "[a-", {}), "tok.onnx"); }),
      ::testing::HasSubstr("tok.onnx: node 'the_node' (Tokenizer): tokenexp '[a-' is not a valid RE2 expression"));
  EXPECT_THAT(MessageOf([] { LoadOnnxGraph(TokenizerModel(0, "#", 2, "", {""}), "tok.onnx"); }),
              ::testing::HasSubstr("mincharnum 2 is too large for tokens of one character"));
  EXPECT_THAT(MessageOf([] { LoadOnnxGraph(TokenizerModel(0, "#", 1, "", {}), "tok.onnx"); }),
              ::testing::HasSubstr("either separators or a non-empty tokenexp is required"));
  auto graph = LoadOnnxGraph(TokenizerModel(0, "#", 1, "\\w+", {}), "tok.onnx");
  EXPECT_THAT(MessageOf([&] {
                Session(graph).Run({Strings({"ok", "bad \xff byte"})});
              }),
              ::testing::HasSubstr("Tokenizer input is not valid UTF-8"));
}

// A random text classifier as scikit-learn converts one: Tokenizer -> TfIdfVectorizer
// -> Normalizer -> LinearClassifier, its pool drawn from `words` (with the pad and the
// marks now and then), its labels and probabilities the graph's outputs, and the
// values named in `exposed` outputs too (which keeps the runtime from fusing over them).
std::string TextClassifierModel(std::mt19937_64& rng, const std::vector<std::string>& words,
                                const std::vector<std::string>& exposed) {
  using A = onnx::AttributeProto;
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  for (const char* domain : {"ai.onnx.ml", "com.microsoft"}) {
    auto* imported = m.add_opset_import();
    imported->set_domain(domain);
    imported->set_version(1);
  }
  auto* g = m.mutable_graph();
  auto add = [&](const std::string& op, const std::string& domain, const std::string& in,
                 std::vector<std::string> outs) {
    auto* node = g->add_node();
    node->set_op_type(op);
    node->set_domain(domain);
    node->add_input(in);
    for (const auto& out : outs) node->add_output(out);
    return node;
  };
  auto* input = g->add_input();
  input->set_name("text");
  input->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto_DataType_STRING);

  auto* tokenizer = add("Tokenizer", "com.microsoft", "text", {"tokens"});
  AddAttribute(*tokenizer, "mark", A::INT)->set_i(pick(0, 1));
  AddAttribute(*tokenizer, "pad_value", A::STRING)->set_s(pick(0, 1) ? "#" : words[0]);
  AddAttribute(*tokenizer, "mincharnum", A::INT)->set_i(1);
  AddAttribute(*tokenizer, "tokenexp", A::STRING)->set_s("[a-z#]+");

  // Unigrams, then bigrams (and trigrams): pool items from the words, the pad, a mark.
  std::vector<std::string> items = words;
  items.push_back("#");
  items.push_back("\x02");
  const int64_t max_n = pick(1, 3), min_n = pick(1, max_n);
  auto* tfidf = add("TfIdfVectorizer", "", "tokens", {"tfidf"});
  auto* pool = AddAttribute(*tfidf, "pool_strings", A::STRINGS);
  auto* counts = AddAttribute(*tfidf, "ngram_counts", A::INTS);
  auto* indexes = AddAttribute(*tfidf, "ngram_indexes", A::INTS);
  auto* weights = AddAttribute(*tfidf, "weights", A::FLOATS);
  std::set<std::vector<size_t>> grams;
  int64_t coordinate = 0;
  for (int64_t n = 1; n <= max_n; ++n) {
    counts->add_ints(pool->strings_size());
    for (int k = 0; k < 40; ++k) {
      std::vector<size_t> gram(static_cast<size_t>(n));
      for (auto& item : gram) item = static_cast<size_t>(pick(0, static_cast<int64_t>(items.size()) - 1));
      if (!grams.insert(gram).second) continue;
      for (const size_t item : gram) pool->add_strings(items[item]);
      indexes->add_ints(coordinate++);
      weights->add_floats(pick(0, 9) == 0 ? 0.0f : u(rng));
    }
  }
  const char* modes[] = {"TF", "IDF", "TFIDF"};
  AddAttribute(*tfidf, "mode", A::STRING)->set_s(modes[pick(0, 2)]);
  AddAttribute(*tfidf, "min_gram_length", A::INT)->set_i(min_n);
  AddAttribute(*tfidf, "max_gram_length", A::INT)->set_i(max_n);
  AddAttribute(*tfidf, "max_skip_count", A::INT)->set_i(pick(0, 2));

  const char* norms[] = {"MAX", "L1", "L2"};
  AddAttribute(*add("Normalizer", "ai.onnx.ml", "tfidf", {"normalized"}), "norm", A::STRING)->set_s(norms[pick(0, 2)]);

  auto* linear = add("LinearClassifier", "ai.onnx.ml", "normalized", {"label", "probabilities"});
  const int64_t classes = pick(2, 5);
  auto* coefficients = AddAttribute(*linear, "coefficients", A::FLOATS);
  for (int64_t i = 0; i < classes * coordinate; ++i) coefficients->add_floats(u(rng));
  auto* intercepts = AddAttribute(*linear, "intercepts", A::FLOATS);
  auto* labels = AddAttribute(*linear, "classlabels_strings", A::STRINGS);
  for (int64_t c = 0; c < classes; ++c) {
    intercepts->add_floats(u(rng));
    labels->add_strings("class" + std::to_string(c));
  }
  const char* transforms[] = {"NONE", "SOFTMAX", "LOGISTIC"};
  AddAttribute(*linear, "post_transform", A::STRING)->set_s(transforms[pick(0, 2)]);

  for (const char* out : {"label", "probabilities"}) g->add_output()->set_name(out);
  for (const auto& out : exposed) g->add_output()->set_name(out);
  return m.SerializeAsString();
}

// The fused sparse text kernel against the separate kernels it replaces, on random
// classifiers and texts: the same labels, and the same probabilities bit for bit.
TEST(TensorTest, FusedTextClassifierAnswersAsTheSeparateKernels) {
  const uint64_t seed = runnel::testing::TestSeed();
  std::mt19937_64 rng(seed);
  const std::vector<std::string> words = {"ab", "cd", "ef", "gh", "ij", "kl"};
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (int round = 0; round < 40; ++round) {
    std::mt19937_64 model_rng(rng());
    const uint64_t model_seed = model_rng();
    auto model = [&](const std::vector<std::string>& exposed) {
      std::mt19937_64 same(model_seed);
      return LoadOnnxGraph(TextClassifierModel(same, words, exposed), "text.onnx");
    };
    const auto whole = model({}), after_tokens = model({"tokens"}), apart = model({"normalized"});
    ASSERT_EQ(whole->nodes.size(), 1u) << "Tokenizer, TfIdfVectorizer, Normalizer and LinearClassifier fused";
    ASSERT_EQ(after_tokens->nodes.size(), 2u) << "TfIdfVectorizer, Normalizer and LinearClassifier fused";
    ASSERT_EQ(apart->nodes.size(), 4u);
    for (const int64_t batch : {int64_t{0}, int64_t{1}, pick(2, 9)}) {
      std::vector<std::string> texts;
      for (int64_t r = 0; r < batch; ++r) {
        std::string text;
        for (int64_t w = pick(0, 12); w > 0; --w)
          text += (pick(0, 6) == 0 ? "# " : words[static_cast<size_t>(pick(0, 5))] + " ");
        texts.push_back(text);
      }
      const auto want = Session(apart).Run({Strings(texts)});
      for (const auto& graph : {whole, after_tokens}) {
        const auto got = Session(graph).Run({Strings(texts)});
        const std::string what = fmt::format("round {} batch {} ({} nodes)", round, batch, graph->nodes.size());
        ASSERT_EQ(got[0].strings(), want[0].strings()) << what;
        ASSERT_EQ(got[1].shape(), want[1].shape()) << what;
        ASSERT_EQ(std::memcmp(got[1].bytes().data(), want[1].bytes().data(), want[1].bytes().size()), 0) << what;
      }
    }
  }
}

// ONNX's Gelu (opset 20) against its definition in double, both forms.
TEST(TensorTest, GeluAnswersAsItsDefinition) {
  std::vector<float> xs{0.0f, -0.0f, 1.0f, -1.0f, 3.5f, -3.5f, 10.0f, -10.0f, 1e-8f, -40.0f};
  std::mt19937_64 rng(runnel::testing::TestSeed());
  std::uniform_real_distribution<float> value(-6.0f, 6.0f);
  for (int i = 0; i < 1000; ++i) xs.push_back(value(rng));
  const Tensor x = Tensor::Of<float>(DataType::kFloat, {static_cast<int64_t>(xs.size())}, xs);
  for (const std::string approximate : {"none", "tanh", ""}) {
    onnx::ModelProto m;
    m.ParseFromString(OneNodeModel("Gelu", 20, 1));
    if (!approximate.empty())
      AddAttribute(*m.mutable_graph()->mutable_node(0), "approximate", onnx::AttributeProto::STRING)
          ->set_s(approximate);
    const auto got = Session(LoadOnnxGraph(m.SerializeAsString(), "gelu.onnx")).Run({x})[0];
    for (size_t i = 0; i < xs.size(); ++i) {
      const double v = xs[i];
      const double want = approximate == "tanh"
                              ? 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)))
                              : 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
      ASSERT_NEAR(got.data<float>()[i], want, 2e-6 * (1 + std::abs(want))) << approximate << " at x = " << v;
    }
  }
  onnx::ModelProto m;
  m.ParseFromString(OneNodeModel("Gelu", 20, 1));
  AddAttribute(*m.mutable_graph()->mutable_node(0), "approximate", onnx::AttributeProto::STRING)->set_s("fast");
  EXPECT_EQ(MessageOf([&] { Session(LoadOnnxGraph(m.SerializeAsString(), "g.onnx")).Run({x}); }),
            "node 'the_node' (Gelu): Gelu's approximate must be \"none\" or \"tanh\", not \"fast\"");
  EXPECT_EQ(FindKernel("", "Gelu", 19), nullptr) << "Gelu exists from opset 20";
}

// The erf GELU as exporters write it out: y = Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5)
// (PyTorch's nn.GELU), or with `scale_first` y = Mul(Mul(x, 0.5), Add(Erf(...), 1))
// (Hugging Face's). `exposed`: the Erf's output is a graph output too.
std::string ErfGeluModel(bool scale_first, bool exposed) {
  onnx::ModelProto m;
  auto* g = GraphOfX(m);
  for (const auto& [name, v] :
       std::vector<std::pair<std::string, float>>{{"sqrt2", 1.4142135f}, {"one", 1.0f}, {"half", 0.5f}}) {
    AddInitializer(g, name, {}, {v});
  }
  if (scale_first) AddNode(g, "Mul", {"x", "half"}, "h");
  AddNode(g, "Div", {"x", "sqrt2"}, "d");
  AddNode(g, "Erf", {"d"}, "e");
  AddNode(g, "Add", {"one", "e"}, "a");
  if (scale_first) {
    AddNode(g, "Mul", {"h", "a"}, "y");
  } else {
    AddNode(g, "Mul", {"a", "x"}, "m");
    AddNode(g, "Mul", {"m", "half"}, "y");
  }
  g->add_output()->set_name("y");
  if (exposed) g->add_output()->set_name("e");
  return m.SerializeAsString();
}

// Fused at load into one node answering bit for bit as the nodes it replaces, unless a
// value inside is read from outside.
TEST(TensorTest, ErfGeluWrittenOutIsFusedAndAnswersTheSame) {
  std::mt19937_64 rng(runnel::testing::TestSeed());
  std::uniform_real_distribution<float> value(-6.0f, 6.0f);
  for (const bool scale_first : {false, true}) {
    const auto fused = LoadOnnxGraph(ErfGeluModel(scale_first, false), "gelu.onnx");
    const auto plain = LoadOnnxGraph(ErfGeluModel(scale_first, true), "gelu.onnx");
    ASSERT_EQ(fused->nodes.size(), 1u) << scale_first;
    EXPECT_EQ(fused->nodes[0].op, "Gelu(erf)");
    EXPECT_EQ(plain->nodes.size(), 5u) << "Erf's output is read outside: not fused";
    for (const Shape& shape : {Shape{}, Shape{7}, Shape{3, 67, 128}, Shape{0, 4}}) {
      Tensor x(DataType::kFloat, shape);
      for (float& v : x.data<float>()) v = value(rng);
      const auto got = Session(fused).Run({x})[0];
      const auto want = Session(plain).Run({x})[0];
      ASSERT_EQ(got.shape(), want.shape());
      ASSERT_EQ(got.size(), x.size());
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(got.data<float>()[i], want.data<float>()[i]) << scale_first << " at x = " << x.data<float>()[i];
        const double v = x.data<float>()[i];
        ASSERT_NEAR(got.data<float>()[i], 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))), 2e-6 * (1 + std::abs(v)));
      }
    }
  }
}

// x [.., k] · W [k, n] + b [n] as PyTorch exports a linear layer (MatMul, then Add with
// the bias first). `exposed`: the product is a graph output too; `weights_input`: W is
// a graph input, not an initializer. W and b are drawn from `rng`.
std::string LinearModel(std::mt19937_64& rng, int64_t k, int64_t n, bool exposed, bool weights_input) {
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  onnx::ModelProto m;
  auto* g = GraphOfX(m);
  std::vector<float> w(static_cast<size_t>(k * n)), b(static_cast<size_t>(n));
  for (float& v : w) v = value(rng);
  for (float& v : b) v = value(rng);
  if (!weights_input) AddInitializer(g, "W", {k, n}, w);
  AddInitializer(g, "b", {n}, b);
  if (weights_input) AddFloatInput(g, "W");
  AddNode(g, "MatMul", {"x", "W"}, "p");
  AddNode(g, "Add", {"b", "p"}, "y");
  g->add_output()->set_name("y");
  if (exposed) g->add_output()->set_name("p");
  return m.SerializeAsString();
}

// A constant MatMul is packed at load and its bias Add folded in; the answers are the
// definition's (in double) within float rounding, fused or not.
TEST(TensorTest, PackedMatMulWithBiasAnswersAsTheDefinition) {
  const uint64_t seed = runnel::testing::TestSeed();
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> value(-2.0f, 2.0f);
  for (int round = 0; round < 12; ++round) {
    const int64_t k = 1 + static_cast<int64_t>(rng() % 70), n = 1 + static_cast<int64_t>(rng() % 40);
    const uint64_t model_seed = rng();
    auto load = [&](bool exposed, bool weights_input) {
      std::mt19937_64 same(model_seed);
      return LoadOnnxGraph(LinearModel(same, k, n, exposed, weights_input), "linear.onnx");
    };
    const auto fused = load(false, false), packed = load(true, false), plain = load(false, true);
    ASSERT_EQ(fused->nodes.size(), 1u);
    EXPECT_EQ(fused->nodes[0].op, "MatMul+Add");
    ASSERT_EQ(packed->nodes.size(), 2u) << "the product is an output: the Add stays";
    EXPECT_EQ(plain->nodes[0].op, "MatMul");
    EXPECT_EQ(plain->nodes[0].state, nullptr) << "W is an input: not packed";
    // The weights and bias as LinearModel drew them.
    std::mt19937_64 same(model_seed);
    std::uniform_real_distribution<float> drawn(-1.0f, 1.0f);
    Tensor w(DataType::kFloat, {k, n}), b(DataType::kFloat, {n});
    for (float& v : w.data<float>()) v = drawn(same);
    for (float& v : b.data<float>()) v = drawn(same);
    for (const Shape& shape : {Shape{k}, Shape{3, k}, Shape{2, 5, k}, Shape{0, k}}) {
      Tensor x(DataType::kFloat, shape);
      for (float& v : x.data<float>()) v = value(rng);
      const size_t rows = x.size() / static_cast<size_t>(k);
      std::vector<double> want(rows * static_cast<size_t>(n));
      for (size_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < n; ++j) {
          double sum = b.data<float>()[static_cast<size_t>(j)];
          for (int64_t p = 0; p < k; ++p)
            sum += static_cast<double>(x.data<float>()[r * static_cast<size_t>(k) + static_cast<size_t>(p)]) *
                   w.data<float>()[static_cast<size_t>(p * n + j)];
          want[r * static_cast<size_t>(n) + static_cast<size_t>(j)] = sum;
        }
      }
      Shape out_shape = shape;
      out_shape.back() = n;
      for (const auto& graph : {fused, packed}) {
        const auto got = Session(graph).Run({x});
        ASSERT_EQ(got[0].shape(), out_shape) << round;
        for (size_t i = 0; i < want.size(); ++i)
          ASSERT_NEAR(got[0].data<float>()[i], want[i], 1e-5 * (1 + std::abs(want[i]))) << round << " at " << i;
      }
      Tensor w_input = w;
      const auto got = Session(plain).Run({x, w_input});
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[0].data<float>()[i], want[i], 1e-5 * (1 + std::abs(want[i])));
    }
    // An input of the wrong width names the node, as the unfused MatMul does.
    Tensor wrong(DataType::kFloat, {2, k + 1});
    EXPECT_NE(MessageOf([&] { Session(fused).Run({wrong}); }).find("MatMul of [2, " + std::to_string(k + 1)),
              std::string::npos);
  }
}

TEST(TensorTest, MlOperatorsRefuseInconsistentAttributesNamingThem) {
  using A = onnx::AttributeProto;
  // LinearClassifier: 3 coefficients cannot be 2 classes (checked at load), nor 4 the 2
  // classes of a 3-feature input (at run).
  auto linear = [](std::vector<float> coefficients) {
    return OneMlNodeModel("LinearClassifier", onnx::TensorProto_DataType_FLOAT, 1, [&](auto& n) {
      auto* c = AddAttribute(n, "coefficients", A::FLOATS);
      for (float v : coefficients) c->add_floats(v);
      auto* labels = AddAttribute(n, "classlabels_ints", A::INTS);
      labels->add_ints(0);
      labels->add_ints(1);
      n.add_output("scores");
    });
  };
  EXPECT_EQ(MessageOf([&] {
              LoadOnnxGraph(linear({1, 2, 3}), "lc.onnx");
            }),
            "lc.onnx: node 'the_node' (LinearClassifier): 3 coefficients for 2 outputs");
  auto two_features = LoadOnnxGraph(linear({1, 2, 3, 4}), "lc.onnx");
  EXPECT_EQ(MessageOf([&] {
              Session(two_features).Run({Tensor(DataType::kFloat, {1, 3})});
            }),
            "node 'the_node' (LinearClassifier): 4 coefficients for 2 outputs of 3 features");
  // CategoryMapper: the two lists must pair up (checked at load).
  EXPECT_EQ(MessageOf([] {
              LoadOnnxGraph(
                  OneMlNodeModel("CategoryMapper", onnx::TensorProto_DataType_INT64, 1,
                                 [](auto& n) { AddAttribute(n, "cats_strings", A::STRINGS)->add_strings("a"); }),
                  "cm.onnx");
            }),
            "cm.onnx: node 'the_node' (CategoryMapper): 1 cats_strings for 0 cats_int64s");
  // ArrayFeatureExtractor: an index past the columns.
  onnx::ModelProto m;
  m.ParseFromString(OneNodeModel("ArrayFeatureExtractor", 17, 2));
  m.mutable_graph()->mutable_input(1)->mutable_type()->mutable_tensor_type()->set_elem_type(
      onnx::TensorProto_DataType_INT64);
  auto* ml = m.add_opset_import();
  ml->set_domain("ai.onnx.ml");
  ml->set_version(1);
  m.mutable_graph()->mutable_node(0)->set_domain("ai.onnx.ml");
  Session extract(LoadOnnxGraph(m.SerializeAsString(), "afe.onnx"));
  const std::vector<int64_t> index{3};
  EXPECT_EQ(MessageOf([&] {
              extract.Run({Tensor(DataType::kFloat, {2, 3}), Tensor::Of<int64_t>(DataType::kInt64, {1}, index)});
            }),
            "node 'the_node' (ArrayFeatureExtractor): index 3 is out of range for 3 columns");
}

std::string Npy(const std::string& header, const std::string& data) {
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  return out + header + data;
}

TEST(TensorTest, NpyFilesAreReadAndHostileOnesRefused) {
  const auto t = LoadNpy(Npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }\n",
                             std::string("\x05\0\0\0\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff", 16)),
                         "a.npy");
  EXPECT_EQ(t.shape(), (Shape{2}));
  EXPECT_EQ(t.data<int64_t>()[0], 5);
  EXPECT_EQ(t.data<int64_t>()[1], -1);
  EXPECT_EQ(LoadNpy(SaveNpy(t), "b.npy").data<int64_t>()[1], -1);
  // A shape of 2^40 elements with 8 bytes of data allocates nothing.
  EXPECT_TRUE(MessageOf([] {
                LoadNpy(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1048576, 1048576), }", "12345678"),
                        "big.npy");
              }).starts_with("big.npy: shape [1048576, 1048576] holds more than 67108864 elements"));
  EXPECT_EQ(
      MessageOf([] { LoadNpy(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", "1234"), "s.npy"); }),
      "s.npy: holds 4 bytes of data, its shape [3] needs 12");
  EXPECT_EQ(MessageOf([] { LoadNpy(std::string("\x93NUMPY\x01\x00\xff\xff{'descr'", 16), "h.npy"); }),
            "h.npy: its header claims 65535 bytes, the file has 6 after the preamble");
  EXPECT_EQ(MessageOf([] { LoadNpy(Npy("{'descr': '<U5', 'fortran_order': False, 'shape': (1,), }", ""), "u.npy"); }),
            "unsupported: u.npy: element type '<U5' (float32/64, int8/32/64, uint8 and bool are read)");
  EXPECT_EQ(MessageOf([] { LoadNpy(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", ""), "n.npy"); }),
            "n.npy: shape '(-1,)' is not a tuple of sizes");
  EXPECT_EQ(MessageOf([] { LoadNpy(Npy("{'descr': '<f4', 'shape': (1,), }", "1234"), "f.npy"); }),
            "f.npy: the .npy header has no 'fortran_order'");
  EXPECT_EQ(MessageOf([] { LoadNpy("PK\x03\x04", "zip.npy"); }), "zip.npy: not a .npy file");
}

Tensor RandomFloats(std::mt19937_64& rng, Shape shape) {
  Tensor t(DataType::kFloat, std::move(shape));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& v : t.data<float>()) v = u(rng);
  return t;
}

// Runs the registered (optimized) kernel of `node` and `reference` on the same inputs;
// expects the same shape and values within float accumulation error.
void ExpectLikeReference(const Node& node, Kernel reference, const std::vector<const Tensor*>& in,
                         const std::string& what) {
  std::vector<Tensor> fast(1), ref(1);
  FindKernel("", node.op, 17)(node, in, fast);
  reference(node, in, ref);
  ASSERT_EQ(fast[0].shape(), ref[0].shape()) << what;
  for (size_t i = 0; i < ref[0].size(); ++i) {
    const float want = ref[0].data<float>()[i];
    ASSERT_NEAR(fast[0].data<float>()[i], want, 1e-4f + 1e-4f * std::abs(want)) << what << " element " << i;
  }
}

Attribute Ints(std::vector<int64_t> v) {
  Attribute a;
  a.kind = Attribute::Kind::kInts;
  a.ints = std::move(v);
  return a;
}

Attribute Int(int64_t v) {
  Attribute a;
  a.kind = Attribute::Kind::kInt;
  a.i = v;
  return a;
}

Attribute Float(float v) {
  Attribute a;
  a.kind = Attribute::Kind::kFloat;
  a.f = v;
  return a;
}

// The packed kernels (MatMul, Gemm, Conv as im2col) against the plain reference loops
// on random shapes and attributes.
TEST(TensorTest, FastKernelsMatchTheReferenceOnRandomShapes) {
  std::mt19937_64 rng(runnel::testing::TestSeed());
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (int round = 0; round < 60; ++round) {
    Node matmul;
    matmul.op = "MatMul";
    // k = 0 now and then: an empty sum, so the product (never zero-filled first) must be
    // 0; and k in several blocks (above 192, gemm.cpp) now and then.
    const int64_t k = round % 7 == 0 ? 0 : round % 7 == 3 ? pick(190, 520) : pick(1, 40);
    const int64_t m = pick(1, 20), n = pick(1, 40), batch = pick(1, 3);
    Shape as{m, k}, bs{k, n};
    switch (round % 4) {
      case 0: break;
      case 1: as.insert(as.begin(), {batch, 2}); break;  // B broadcast
      case 2:
        as.insert(as.begin(), batch);
        bs.insert(bs.begin(), batch);
        break;  // batched
      case 3:
        as = {k};
        bs.insert(bs.begin(), {batch});
        break;  // 1-D A
    }
    const Tensor a = RandomFloats(rng, as), b = RandomFloats(rng, bs);
    ExpectLikeReference(matmul, MatMulReference, {&a, &b}, fmt::format("MatMul {} x {}", ShapeText(as), ShapeText(bs)));

    Node gemm;
    gemm.op = "Gemm";
    const bool ta = pick(0, 1) == 1, tb = pick(0, 1) == 1;
    gemm.attributes["transA"] = Int(ta);
    gemm.attributes["transB"] = Int(tb);
    Attribute alpha;
    alpha.kind = Attribute::Kind::kFloat;
    alpha.f = 0.5f;
    gemm.attributes["alpha"] = alpha;
    const Tensor ga = RandomFloats(rng, ta ? Shape{k, m} : Shape{m, k});
    const Tensor gb = RandomFloats(rng, tb ? Shape{n, k} : Shape{k, n});
    const Tensor gc = RandomFloats(rng, pick(0, 1) == 1 ? Shape{n} : Shape{m, n});
    ExpectLikeReference(gemm, GemmReference, {&ga, &gb, &gc}, fmt::format("Gemm {} {} {}", m, k, n));

    Node conv;
    conv.op = "Conv";
    const bool two_d = round % 3 != 0;
    // Up to 14 filters a group: the 6-row blocks and their tails; stride 1 (gathered
    // from the padded image) or 2 (im2col); pads that differ per side.
    const int64_t group = pick(1, 2), cpg = pick(1, 4), fpg = pick(1, 14), kh = two_d ? pick(1, 3) : 1, kw = pick(1, 3),
                  h = two_d ? pick(kh * 2, 9) : 1, w = pick(kw * 2, 11);
    const int64_t stride = pick(1, 2), dilation = pick(1, 2), pad = pick(0, 1);
    const size_t spatial = two_d ? 2 : 1;
    std::vector<int64_t> pads(2 * spatial);
    for (auto& v : pads) v = pick(0, 2);
    pads[0] = pad;
    conv.attributes["group"] = Int(group);
    conv.attributes["strides"] = Ints(std::vector<int64_t>(spatial, stride));
    conv.attributes["dilations"] = Ints(std::vector<int64_t>(spatial, dilation));
    conv.attributes["pads"] = Ints(pads);
    Shape xs{pick(1, 2), group * cpg}, ws{group * fpg, cpg};
    if (two_d) {
      xs.push_back(h);
      ws.push_back(kh);
    }
    xs.push_back(w);
    ws.push_back(kw);
    const Tensor x = RandomFloats(rng, xs), wt = RandomFloats(rng, ws), bias = RandomFloats(rng, {group * fpg});
    const std::vector<int64_t> sizes = two_d ? std::vector<int64_t>{h, w} : std::vector<int64_t>{w},
                               kernel = two_d ? std::vector<int64_t>{kh, kw} : std::vector<int64_t>{kw};
    bool fits = true;
    for (size_t axis = 0; axis < spatial; ++axis)
      fits &= sizes[axis] + pads[axis] + pads[axis + spatial] >= dilation * (kernel[axis] - 1) + 1;
    if (!fits || (two_d ? h : w) + 2 * pad < dilation * (std::max(kh, kw) - 1) + 1) continue;  // a window does not fit
    for (const bool max : {true, false}) {
      Node pool;
      pool.op = max ? "MaxPool" : "AveragePool";
      pool.attributes["kernel_shape"] = Ints(two_d ? std::vector<int64_t>{kh, kw} : std::vector<int64_t>{kw});
      pool.attributes["strides"] = conv.attributes["strides"];
      pool.attributes["pads"] = Ints(std::vector<int64_t>(2 * spatial, std::min(pad, std::min(kh, kw) - 1)));
      pool.attributes["ceil_mode"] = Int(pick(0, 1));
      if (max) pool.attributes["dilations"] = conv.attributes["dilations"];  // AveragePool's: opset 19
      ExpectLikeReference(pool, max ? MaxPoolReference : AveragePoolReference, {&x},
                          fmt::format("{} {} kernel {}x{} stride {} dilation {}", pool.op, ShapeText(xs), kh, kw,
                                      stride, max ? dilation : 1));
    }
    if (two_d) {  // 2x2 windows two apart, the CNNs' pooling (HalvingInterior), every round
      for (const bool max : {true, false}) {
        Node pool;
        pool.op = max ? "MaxPool" : "AveragePool";
        pool.attributes["kernel_shape"] = Ints({2, 2});
        pool.attributes["strides"] = Ints({2, 2});
        pool.attributes["pads"] = Ints({pick(0, 1), pick(0, 1), pick(0, 1), pick(0, 1)});
        ExpectLikeReference(pool, max ? MaxPoolReference : AveragePoolReference, {&x},
                            fmt::format("{} {} kernel 2x2 stride 2", pool.op, ShapeText(xs)));
      }
    }
    ExpectLikeReference(conv, ConvReference, {&x, &wt, &bias},
                        fmt::format("Conv {} * {} group {} stride {} dilation {} pads {}", ShapeText(xs), ShapeText(ws),
                                    group, stride, dilation, fmt::join(pads, ",")));
  }
}

// The float BatchNormalization and LayerNormalization against their double references
// on random shapes: batch norms of rank 2 to 4, layer norms over any axis with scale
// and bias of the whole normalized shape or broadcast from its last axis, bias or none.
TEST(TensorTest, NormalizationsMatchTheReferenceOnRandomShapes) {
  const uint64_t seed = runnel::testing::TestSeed();
  std::mt19937_64 rng(seed);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (int round = 0; round < 60; ++round) {
    Node bn;
    bn.op = "BatchNormalization";
    bn.opset = 15;
    bn.attributes["epsilon"] = Float(round % 2 == 0 ? 1e-5f : 0.1f);
    Shape xs{pick(1, 3), pick(1, 9)};
    for (int64_t d = pick(0, 2); d > 0; --d) xs.push_back(pick(1, 13));
    const Tensor x = RandomFloats(rng, xs);
    const Shape cs{xs[1]};
    const Tensor scale = RandomFloats(rng, cs), bias = RandomFloats(rng, cs), mean = RandomFloats(rng, cs);
    Tensor var = RandomFloats(rng, cs);
    for (float& v : var.data<float>()) v = std::abs(v) + 0.01f;
    ExpectLikeReference(bn, BatchNormalizationReference, {&x, &scale, &bias, &mean, &var},
                        fmt::format("BatchNormalization {} (seed {})", ShapeText(xs), seed));

    Node ln;
    ln.op = "LayerNormalization";
    ln.opset = 17;
    Shape ls;
    for (int64_t d = pick(1, 4); d > 0; --d) ls.push_back(pick(1, round % 5 == 0 ? 70 : 9));
    const auto axis = static_cast<size_t>(pick(0, static_cast<int64_t>(ls.size()) - 1));
    ln.attributes["axis"] = Int(round % 2 == 0 ? static_cast<int64_t>(axis) : static_cast<int64_t>(axis - ls.size()));
    const Shape trailing(ls.begin() + static_cast<int64_t>(axis), ls.end());
    const Shape ps = round % 3 == 0 ? Shape{ls.back()} : trailing;
    const Tensor lx = RandomFloats(rng, ls), lscale = RandomFloats(rng, ps), lbias = RandomFloats(rng, ps);
    std::vector<const Tensor*> inputs{&lx, &lscale};
    if (round % 4 != 1) inputs.push_back(&lbias);
    ExpectLikeReference(
        ln, LayerNormalizationReference, inputs,
        fmt::format("LayerNormalization {} axis {} params {} (seed {})", ShapeText(ls), axis, ShapeText(ps), seed));
  }
}

// y = Relu(Conv(x, W, b)) with 3x3 filters, W and b drawn from `rng`; `exposed`: the
// Conv's output is a graph output too.
std::string ConvReluModel(std::mt19937_64& rng, int64_t channels, int64_t filters, bool exposed) {
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  onnx::ModelProto m;
  auto* g = GraphOfX(m);
  std::vector<float> w(static_cast<size_t>(filters * channels * 9)), b(static_cast<size_t>(filters));
  for (float& v : w) v = value(rng);
  for (float& v : b) v = value(rng);
  AddInitializer(g, "W", {filters, channels, 3, 3}, w);
  AddInitializer(g, "b", {filters}, b);
  auto* pads = AddAttribute(*AddNode(g, "Conv", {"x", "W", "b"}, "c"), "pads", onnx::AttributeProto::INTS);
  for (int i = 0; i < 4; ++i) pads->add_ints(1);
  AddNode(g, "Relu", {"c"}, "y");
  g->add_output()->set_name("y");
  if (exposed) g->add_output()->set_name("c");
  return m.SerializeAsString();
}

// x -> Neg -> Neg ... (`n` nodes) -> y; the first node's value "v1" is an output too.
std::string NegChainModel(int n) {
  onnx::ModelProto m;
  auto* g = GraphOfX(m);
  for (int i = 1; i <= n; ++i) AddNode(g, "Neg", {i == 1 ? "x" : fmt::format("v{}", i - 1)}, fmt::format("v{}", i));
  g->add_output()->set_name(fmt::format("v{}", n));
  g->add_output()->set_name("v1");
  return m.SerializeAsString();
}

// The memory plan: a value's buffer goes back to the session's pool once the last node
// reading it has run, so a chain of ten 256 KiB values holds three at a time (two
// links and the exposed first one: eleven would outgrow the 1.75 MiB budget);
// once a run has filled the pool, runs of the same or a smaller batch, their inputs
// made from it and their outputs given back, allocate no buffer.
TEST(TensorTest, TheMemoryPlanReleasesValuesAfterTheirLastReaderAndReusesBuffers) {
  std::mt19937_64 rng(runnel::testing::TestSeed());
  constexpr size_t kValueBytes = 64 * 1024 * sizeof(float);
  Session session(LoadOnnxGraph(NegChainModel(10), "chain.onnx"), 7 * kValueBytes);
  const auto run = [&](int64_t rows) {
    std::vector<Tensor> inputs;
    {
      const ScopedBufferPool pool(&session.buffers());
      inputs.push_back(RandomFloats(rng, {rows, 1024}));
    }
    const Tensor x = inputs[0];
    auto out = session.Run(std::move(inputs));
    ASSERT_EQ(out.size(), 2u);
    const std::span<const float> y = out[0].data<float>(), v1 = out[1].data<float>(), in = x.data<float>();
    ASSERT_EQ(y.size(), in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      ASSERT_EQ(y[i], in[i]) << i;  // ten negations
      ASSERT_EQ(v1[i], -in[i]) << i;
    }
    session.Recycle(std::move(out));
  };
  run(64);
  EXPECT_LE(session.peak_bytes(), 3 * kValueBytes) << "values not released after their last reader";
  const size_t misses = session.buffers().misses();
  EXPECT_GE(misses, 3u);
  run(64);
  run(48);
  run(64);
  EXPECT_EQ(session.buffers().misses(), misses) << "a run in steady state allocated";
  run(96);  // a larger batch needs larger buffers, once (they replace the smaller ones)
  const size_t larger = session.buffers().misses();
  EXPECT_GT(larger, misses);
  run(96);
  run(96);
  EXPECT_EQ(session.buffers().misses(), larger);
}

// Fused at load into the Conv (the Relu applied as it writes), answering bit for bit as
// the two nodes do; not when the Conv's output is read from outside.
TEST(TensorTest, ConvThenReluIsFusedAndAnswersTheSame) {
  const uint64_t seed = runnel::testing::TestSeed();
  for (int round = 0; round < 4; ++round) {
    const int64_t channels = 1 + round, filters = 3 + 5 * round;
    std::mt19937_64 a(seed + static_cast<uint64_t>(round)), b(seed + static_cast<uint64_t>(round));
    const auto fused = LoadOnnxGraph(ConvReluModel(a, channels, filters, false), "conv.onnx");
    const auto plain = LoadOnnxGraph(ConvReluModel(b, channels, filters, true), "conv.onnx");
    ASSERT_EQ(fused->nodes.size(), 1u);
    EXPECT_EQ(fused->nodes[0].op, "Conv+Relu");
    ASSERT_EQ(plain->nodes.size(), 2u) << "the Conv's output is read outside: not fused";
    std::mt19937_64 rng(seed ^ 0x5eed);
    const Tensor x = RandomFloats(rng, {2, channels, 7 + round, 9});
    const auto got = Session(fused).Run({x})[0];
    const auto want = Session(plain).Run({x})[0];
    ASSERT_EQ(got.shape(), want.shape());
    size_t zeros = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got.data<float>()[i], want.data<float>()[i]) << round << " at " << i;
      zeros += got.data<float>()[i] == 0.0f;
    }
    EXPECT_GT(zeros, 0u) << "some outputs were negative before the Relu";
  }
}

// 3x3 convolutions of 16 channels or more go to oneDNN at load (where it is faster than
// ours with the conversions counted), fused Relu or not, and answer as the reference
// does within float rounding (oneDNN sums in another order): images of several sizes
// (plans each) and batches (eight images at a time, then one by one), from two threads
// at once.
TEST(TensorTest, WideThreeByThreeConvsRunOnOneDnnLikeTheReference) {
  const uint64_t seed = runnel::testing::TestSeed();
  std::mt19937_64 rng(seed);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (int round = 0; round < 6; ++round) {
    const int64_t channels = pick(16, 40), filters = pick(1, 40);
    const bool exposed = round % 2 == 1;  // the Conv's output read outside: Relu not fused
    const auto graph = LoadOnnxGraph(ConvReluModel(rng, channels, filters, exposed), "conv.onnx");
    ASSERT_EQ(graph->nodes[0].op, exposed ? "Conv/oneDNN" : "Conv+Relu/oneDNN") << round;
    const Node& node = graph->nodes[0];
    const Tensor& wt = *graph->constants[static_cast<size_t>(node.inputs[1])];
    const Tensor& bias = *graph->constants[static_cast<size_t>(node.inputs[2])];
    Node reference;
    reference.op = "Conv";
    reference.attributes["pads"] = Ints({1, 1, 1, 1});
    struct Case {
      Tensor x, conv, relu;  // an input, and the reference's Conv and Conv + Relu of it
    };
    std::vector<Case> cases;
    for (int size = 0; size < 3; ++size) {
      // the last: batches of 8 images at a time and the rest one by one (smaller images)
      Tensor x = size < 2 ? RandomFloats(rng, {pick(1, 3), channels, pick(1, 20), pick(1, 20)})
                          : RandomFloats(rng, {pick(8, 19), channels, pick(1, 8), pick(1, 8)});
      std::vector<Tensor> conv(1);
      const Tensor* in[] = {&x, &wt, &bias};
      ConvReference(reference, in, conv);
      Tensor relu = conv[0];
      for (float& v : relu.data<float>()) v = std::max(v, 0.0f);
      cases.push_back({std::move(x), std::move(conv[0]), std::move(relu)});
    }
    auto check = [&](int thread) {
      Session session(graph);
      for (int pass = 0; pass < 2; ++pass) {
        for (const auto& c : cases) {
          const auto got = session.Run({c.x});
          ASSERT_EQ(got.size(), exposed ? 2u : 1u);
          for (size_t o = 0; o < got.size(); ++o) {
            const Tensor& y = got[o];
            const Tensor& want = o == 0 ? c.relu : c.conv;
            ASSERT_EQ(y.shape(), want.shape());
            for (size_t i = 0; i < y.size(); ++i) {
              const float g = y.data<float>()[i], w = want.data<float>()[i];
              ASSERT_NEAR(g, w, 1e-4f + 1e-4f * std::abs(w))
                  << "seed " << seed << " round " << round << " thread " << thread << " " << ShapeText(c.x.shape())
                  << " output " << o << " at " << i;
            }
          }
        }
      }
    };
    std::thread other(check, 1);
    check(0);
    other.join();
  }
}

// Binary elementwise kernels (inner runs over broadcast axes) against the plain index
// walk over every output element, on random shapes with broadcast axes anywhere.
TEST(TensorTest, BinaryKernelsMatchTheIndexWalkOnRandomBroadcasts) {
  std::mt19937_64 rng(runnel::testing::TestSeed());
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (int round = 0; round < 300; ++round) {
    Shape out;
    for (int64_t d = pick(0, 4); d > 0; --d) out.push_back(pick(1, 5));
    // Each operand: the output's trailing axes, some broadcast to 1, some leading ones dropped.
    auto operand = [&] {
      Shape s(out.begin() + pick(0, static_cast<int64_t>(out.size())), out.end());
      for (auto& d : s) d = pick(0, 2) == 0 ? 1 : d;
      return s;
    };
    Shape as = operand(), bs = operand();
    if (pick(0, 1) == 1) as = out;
    if (BroadcastShapes(as, bs) != out) continue;
    const Tensor a = RandomFloats(rng, as), b = RandomFloats(rng, bs);
    for (const char* op : {"Add", "Sub", "Div"}) {
      Node node;
      node.op = op;
      std::vector<Tensor> got(1);
      FindKernel("", op, 17)(node, std::vector<const Tensor*>{&a, &b}, got);
      ASSERT_EQ(got[0].shape(), out);
      ForEachBroadcast(out, {BroadcastStrides(as, out), BroadcastStrides(bs, out)},
                       [&](size_t n, const std::vector<size_t>& at) {
                         const float x = a.data<float>()[at[0]], y = b.data<float>()[at[1]];
                         const float want = op[0] == 'A' ? x + y : op[0] == 'S' ? x - y : x / y;
                         ASSERT_EQ(got[0].data<float>()[n], want)
                             << op << " " << ShapeText(as) << " and " << ShapeText(bs) << " element " << n;
                       });
    }
  }
}

// The vectorized array functions (libmvec; exp from SLEEF) against the scalar std:: ones: within a
// few ulp, special values (NaN, infinities, under- and overflow) alike.
TEST(TensorTest, VectorMathMatchesTheScalarFunctions) {
  std::mt19937_64 rng(runnel::testing::TestSeed());
  std::vector<float> x = {0.0f,
                          -0.0f,
                          1e-40f,
                          -1e-40f,
                          88.7f,
                          89.0f,
                          -87.0f,
                          -104.0f,
                          -10000.0f,
                          1e30f,
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN()};
  std::uniform_real_distribution<float> wide(-20.0f, 20.0f);
  for (int i = 0; i < 10'000; ++i) x.push_back(wide(rng));
  const std::vector<std::pair<void (*)(std::span<float>), float (*)(float)>> functions = {
      {ExpInPlace, [](float v) { return std::exp(v); }},
      {ErfInPlace, [](float v) { return std::erf(v); }},
      {TanhInPlace, [](float v) { return std::tanh(v); }}};
  for (size_t f = 0; f < functions.size(); ++f) {
    std::vector<float> got = x;
    functions[f].first(got);
    for (size_t i = 0; i < x.size(); ++i) {
      const float want = functions[f].second(x[i]);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got[i])) << "function " << f << " of " << x[i];
      } else if (std::isinf(want) || want == 0.0f) {
        EXPECT_EQ(got[i], want) << "function " << f << " of " << x[i];
      } else {
        EXPECT_NEAR(got[i], want, 4e-7f * std::abs(want) + 1e-38f) << "function " << f << " of " << x[i];
      }
    }
  }
}

// The lane reductions against plain loops: sums within a float's rounding of the sum
// of magnitudes, maxima exact, NaNs passed over as the plain loop does.
TEST(TensorTest, LaneReductionsMatchPlainLoops) {
  const uint64_t seed = runnel::testing::TestSeed();
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> value(-50.0f, 50.0f);
  for (size_t n = 1; n < 200; n += 1 + n / 8) {
    std::vector<float> x(n);
    for (float& v : x) v = value(rng);
    double plain = 0, magnitude = 0, deviation = 0;
    float max = x[0];
    for (const float v : x) {
      plain += v;
      magnitude += std::abs(v);
      max = v > max ? v : max;
    }
    const double mean = plain / static_cast<double>(n);
    for (const float v : x) deviation += (v - mean) * (v - mean);
    EXPECT_NEAR(SumLanes<float>(x.data(), n), plain, 1e-6 * magnitude + 1e-6) << n;
    EXPECT_NEAR(SumLanes<double>(x.data(), n), plain, 1e-12 * magnitude) << n;
    EXPECT_NEAR(SquaredDeviationLanes<double>(x.data(), n, mean), deviation, 1e-12 * deviation + 1e-12) << n;
    EXPECT_EQ(MaxLanes(x.data(), n), max) << n;
    x[n / 2] = std::numeric_limits<float>::quiet_NaN();
    if (n > 1) {
      EXPECT_FALSE(std::isnan(MaxLanes(x.data(), n))) << n;
    }
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(MaxLanes(&nan, 1)));
}

// A hostile attribute: an output_shape with fewer values than the spatial axes was read
// before its start (ConvTranspose); now a clear error naming the node.
TEST(TensorTest, ConvTransposeRefusesAShortOutputShape) {
  onnx::ModelProto m;
  m.ParseFromString(OneNodeModel("ConvTranspose", 17, 2));
  auto* a = m.mutable_graph()->mutable_node(0)->add_attribute();
  a->set_name("output_shape");
  a->set_type(onnx::AttributeProto_AttributeType_INTS);
  a->add_ints(5);
  Session session(LoadOnnxGraph(m.SerializeAsString(), "ct.onnx"));
  EXPECT_EQ(MessageOf([&] {
              session.Run({Tensor(DataType::kFloat, {1, 1, 3, 3}), Tensor(DataType::kFloat, {1, 1, 2, 2})});
            }),
            "node 'the_node' (ConvTranspose): ConvTranspose's output_shape has fewer values than spatial axes");
}

TEST(TensorTest, ValuesMayNotOutgrowTheSessionBudget) {
  // Expand a scalar to a shape given as input: the budget stops it, naming the node.
  auto graph = LoadOnnxGraph(OneNodeModel("Expand", 13, 2, onnx::TensorProto_DataType_INT64), "expand.onnx");
  Session session(graph, 1 << 20);
  const std::vector<int64_t> shape{1024, 1024};
  EXPECT_EQ(MessageOf([&] {
              session.Run({Tensor(DataType::kInt64, {}), Tensor::Of<int64_t>(DataType::kInt64, {2}, shape)});
            }),
            "node 'the_node' (Expand): a tensor of shape [1024, 1024] (8388608 bytes) exceeds the memory budget of "
            "1048576 bytes")
      << "refused before it is allocated";
  const std::vector<int64_t> small{64, 1024};  // 512 KiB each: two of them outgrow the budget together
  Session other(LoadOnnxGraph(OneNodeModel("Expand", 13, 2, onnx::TensorProto_DataType_INT64), "expand.onnx"),
                700 << 10);
  EXPECT_NO_THROW(other.Run({Tensor(DataType::kInt64, {}), Tensor::Of<int64_t>(DataType::kInt64, {2}, small)}));
}

TEST(TensorTest, ComparisonAllowsTheBackendTolerances) {
  const std::vector<float> want{1.0f, NAN, 100.0f}, close{1.0005f, NAN, 100.05f}, far{1.01f, NAN, 100.0f};
  const auto w = Tensor::Of<float>(DataType::kFloat, {3}, want);
  EXPECT_EQ(CompareTensors(Tensor::Of<float>(DataType::kFloat, {3}, close), w, 1e-3, 1e-7), "");
  EXPECT_EQ(CompareTensors(Tensor::Of<float>(DataType::kFloat, {3}, far), w, 1e-3, 1e-7),
            "element 0 is 1.0099999904632568, expected 1");
  EXPECT_EQ(CompareTensors(Tensor(DataType::kFloat, {1, 3}), w, 1e-3, 1e-7), "shape [1, 3], expected [3]");
}

// ONNX's backend tests as Debian ships them: every test passes or is refused as
// unsupported at load, never a wrong answer; the pass counts only grow.
TEST(TensorTest, OnnxBackendTestsPassOrAreRefused) {
  const std::filesystem::path root = "/usr/share/libonnx-testdata/data";
  if (!std::filesystem::exists(root)) {
    const char* ci = std::getenv("CI");
    if (ci != nullptr && std::string(ci) == "true") FAIL() << root << " is missing: apt-get install libonnx-testdata";
    GTEST_SKIP() << root << " is missing (Debian package libonnx-testdata): the backend tests were not run";
  }
  const std::vector<std::pair<std::string, size_t>> floors = {
      {"node", 640}, {"pytorch-converted", 82}, {"pytorch-operator", 35}, {"simple", 13}};
  for (const auto& [suite, floor] : floors) {
    size_t pass = 0;
    for (const auto& dir : FindConformanceTests(root / suite)) {
      const auto r = RunConformanceTest(dir);
      EXPECT_NE(r.verdict, Verdict::kFail) << suite << "/" << r.test << ": " << r.detail;
      if (r.verdict == Verdict::kPass) ++pass;
    }
    EXPECT_GE(pass, floor) << suite;
    std::printf("%s: %zu pass\n", suite.c_str(), pass);
  }
}

}  // namespace
}  // namespace runnel::tensor
