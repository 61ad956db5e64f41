// The executor on hand-built graphs: every op kind, broadcasting, several inputs and
// outputs, fusion, and validation errors.
#include "runnel/model/graph.hpp"

#include <gtest/gtest.h>

#include "runnel/core/error.hpp"
#include "runnel/model/model.hpp"

namespace runnel::model {
namespace {

std::vector<float> Execute(Graph graph, const std::vector<float>& input, size_t rows) {
  auto model = std::make_shared<const Model>(std::move(graph), ModelInfo{ModelFormat::Onnx, "test", "test", ""});
  ModelSession session(model);
  auto out = session.Predict(input, rows);
  return {out.begin(), out.end()};
}

Node MakeNode(OpKind kind, std::vector<int> inputs, int output) {
  Node node;
  node.kind = kind;
  node.name = "n" + std::to_string(output);
  node.inputs = std::move(inputs);
  node.output = output;
  return node;
}

TEST(Graph, DenseThenBinaryWithConstants) {
  Graph g;
  int x = g.AddValue("x", 2);
  g.inputs = {x};
  int h = g.AddValue("h", 3);
  Node dense = MakeNode(OpKind::Dense, {x}, h);
  dense.in_width = 2;
  dense.out_width = 3;
  dense.weights = {1, 2, 3, 4, 5, 6};  // [2, 3]
  dense.bias = {0.5f, 0, -1};
  g.nodes.push_back(dense);
  int sub = g.AddValue("sub", 3);
  Node s = MakeNode(OpKind::Binary, {h}, sub);
  s.binary = BinaryOp::Sub;
  s.constant = {1, 1, 1};
  s.constant_first = true;  // 1 - h
  g.nodes.push_back(s);
  int div = g.AddValue("div", 3);
  Node d = MakeNode(OpKind::Binary, {sub}, div);
  d.binary = BinaryOp::Div;
  d.constant = {2};  // broadcast scalar
  g.nodes.push_back(d);
  g.outputs = {div};
  // x = [1, 1]: h = [1+4+0.5, 2+5, 3+6-1] = [5.5, 7, 8]; (1 - h) / 2
  auto out = Execute(g, {1, 1, 0, 0}, 2);
  EXPECT_EQ(out, (std::vector<float>{-2.25f, -3.0f, -3.5f, 0.25f, 0.5f, 1.0f}));
}

TEST(Graph, TwoInputsBinaryAffineConcatAndTwoOutputs) {
  Graph g;
  int a = g.AddValue("a", 2), b = g.AddValue("b", 1);
  g.inputs = {a, b};
  int mul = g.AddValue("mul", 2);
  Node m = MakeNode(OpKind::Binary, {a, b}, mul);  // b broadcasts
  m.binary = BinaryOp::Mul;
  g.nodes.push_back(m);
  int aff = g.AddValue("aff", 2);
  Node f = MakeNode(OpKind::Affine, {mul}, aff);
  f.scale = {2, 3};
  f.shift = {1, -1};
  g.nodes.push_back(f);
  int cat = g.AddValue("cat", 3);
  g.nodes.push_back(MakeNode(OpKind::Concat, {aff, b}, cat));
  int act = g.AddValue("act", 3);
  Node r = MakeNode(OpKind::Activate, {cat}, act);
  r.activation = {Activation::Relu};
  g.nodes.push_back(r);
  int id = g.AddValue("id", 1);
  g.nodes.push_back(MakeNode(OpKind::Identity, {b}, id));
  g.outputs = {act, id};
  // a = [1, -2], b = 3: mul = [3, -6]; aff = [7, -19]; cat = [7, -19, 3]; relu; id = 3
  auto out = Execute(g, {1, -2, 3}, 1);
  EXPECT_EQ(out, (std::vector<float>{7, 0, 3, 3}));
}

TEST(Graph, FusesMatMulBiasActivationChains) {
  Graph g;
  int x = g.AddValue("x", 2);
  g.inputs = {x};
  int mm = g.AddValue("mm", 2);
  Node dense = MakeNode(OpKind::Dense, {x}, mm);
  dense.in_width = dense.out_width = 2;
  dense.weights = {1, 0, 0, 1};
  g.nodes.push_back(dense);
  int add = g.AddValue("add", 2);
  Node bias = MakeNode(OpKind::Binary, {mm}, add);
  bias.constant = {-5, 5};
  g.nodes.push_back(bias);
  int relu = g.AddValue("relu", 2);
  Node r = MakeNode(OpKind::Activate, {add}, relu);
  r.activation = {Activation::Relu};
  g.nodes.push_back(r);
  g.outputs = {relu};
  Graph fused = g;
  fused.FuseDenseChains();
  ASSERT_EQ(fused.nodes.size(), 1u);
  EXPECT_EQ(fused.nodes[0].bias, (std::vector<float>{-5, 5}));
  EXPECT_EQ(fused.nodes[0].activation.kind, Activation::Relu);
  EXPECT_EQ(Execute(fused, {1, 1}, 1), Execute(g, {1, 1}, 1));
  EXPECT_EQ(Execute(fused, {1, 1}, 1), (std::vector<float>{0, 6}));
}

TEST(Graph, DoesNotFuseAValueUsedTwice) {
  Graph g;
  int x = g.AddValue("x", 1);
  g.inputs = {x};
  int mm = g.AddValue("mm", 1);
  Node dense = MakeNode(OpKind::Dense, {x}, mm);
  dense.in_width = dense.out_width = 1;
  dense.weights = {-1};
  g.nodes.push_back(dense);
  int relu = g.AddValue("relu", 1);
  Node r = MakeNode(OpKind::Activate, {mm}, relu);
  r.activation = {Activation::Relu};
  g.nodes.push_back(r);
  g.outputs = {relu, mm};
  g.FuseDenseChains();
  EXPECT_EQ(g.nodes.size(), 2u);
  EXPECT_EQ(Execute(g, {2}, 1), (std::vector<float>{0, -2}));
}

TEST(Graph, ValidationNamesTheProblem) {
  Graph g;
  int x = g.AddValue("x", 3);
  g.inputs = {x};
  int y = g.AddValue("y", 2);
  Node dense = MakeNode(OpKind::Dense, {x}, y);
  dense.name = "dense_bad";
  dense.in_width = 4;  // the input has 3
  dense.out_width = 2;
  dense.weights.resize(8);
  g.nodes.push_back(dense);
  g.outputs = {y};
  try {
    g.Validate("model.onnx");
    ADD_FAILURE() << "must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Model);
    EXPECT_NE(std::string(e.what()).find("model.onnx: node 'dense_bad'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("expects 4 inputs"), std::string::npos) << e.what();
  }
  g.nodes[0].in_width = 3;
  EXPECT_THROW(g.Validate("m"), Error) << "kernel size still wrong";
  g.nodes[0].weights.resize(6);
  EXPECT_NO_THROW(g.Validate("m"));
  g.outputs = {5};
  EXPECT_THROW(g.Validate("m"), Error);
}

TEST(Graph, SessionRejectsWrongInputSizeAndReusesBuffers) {
  Graph g;
  int x = g.AddValue("x", 2);
  g.inputs = {x};
  int y = g.AddValue("y", 2);
  g.nodes.push_back(MakeNode(OpKind::Identity, {x}, y));
  g.outputs = {y};
  auto model = std::make_shared<const Model>(std::move(g), ModelInfo{ModelFormat::Onnx, "m", "t", ""});
  ModelSession session(model);
  EXPECT_THROW(session.Predict(std::vector<float>{1, 2, 3}, 2), Error);
  auto big = session.Predict(std::vector<float>(200, 1.0f), 100);
  const float* first = big.data();
  auto small = session.Predict(std::vector<float>{4, 5}, 1);
  EXPECT_EQ(small.data(), first) << "no reallocation for a smaller batch";
  EXPECT_EQ(small[1], 5.0f);
}

}  // namespace
}  // namespace runnel::model
