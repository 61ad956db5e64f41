// Keras HDF5 parsing in a child process: the graph comes back whole, and a crash there
// is an error naming the reader (the child itself: tests/core/isolation_test.cpp).
#include "isolation.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include "runnel/core/error.hpp"

namespace runnel::model {
namespace {

std::string ErrorOf(const std::function<LoadedGraph()>& parse) {
  try {
    ParseIsolated("bad.h5", parse);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Model);
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

TEST(Isolation, ReturnsTheGraphBuiltInTheChild) {
  auto loaded = ParseIsolated("ok.h5", [] {
    LoadedGraph g;
    g.info = {ModelFormat::KerasH5, "ok.h5", "Keras 2", ""};
    int x = g.graph.AddValue("x", 2);
    g.graph.inputs = {x};
    int y = g.graph.AddValue("y", 1);
    Node n;
    n.kind = OpKind::Dense;
    n.name = "d";
    n.inputs = {x};
    n.output = y;
    n.in_width = 2;
    n.out_width = 1;
    n.weights = {1.5f, -2};
    n.activation = {Activation::LeakyRelu, 0.25f};
    g.graph.nodes.push_back(n);
    g.graph.outputs = {y};
    return g;
  });
  EXPECT_EQ(loaded.info.producer, "Keras 2");
  ASSERT_EQ(loaded.graph.nodes.size(), 1u);
  EXPECT_EQ(loaded.graph.nodes[0].weights, (std::vector<float>{1.5f, -2}));
  EXPECT_TRUE(loaded.graph.nodes[0].bias.empty());
  EXPECT_EQ(loaded.graph.nodes[0].activation.alpha, 0.25f);
  EXPECT_EQ(loaded.graph.value_names[1], "y");
}

TEST(Isolation, ACrashIsAnError) {
  auto error = ErrorOf([]() -> LoadedGraph {
    ::raise(SIGSEGV);
    return {};
  });
  EXPECT_NE(error.find("bad.h5: the HDF5 reader failed on this file (signal 11)"), std::string::npos) << error;
}

}  // namespace
}  // namespace runnel::model
