// PMML and TensorFlow-graph scoring on one core (Google Benchmark), for each model in
// ../shared/models/wine (skipped with a message when absent) at batch 1 and 1024:
//   BM_Runnel/<model>/<batch>     Runnel: compiled at load, scored over the batch
//   BM_Interpreted/<model>/<batch> the baseline: the same XML interpreted per row,
//                                  walking the parsed DOM and looking fields up by
//                                  name, as a straightforward evaluator does
// Rows are the 1599 wines of winequality_red.csv, cycled.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <pugixml.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "../tests/support/shared_paths.hpp"
#include "runnel/model/model.hpp"

namespace {

namespace fs = std::filesystem;
using runnel::model::Model;
using runnel::model::ModelSession;

const char* const kColumns[] = {
    "fixed acidity",        "volatile acidity", "citric acid", "residual sugar", "chlorides", "free sulfur dioxide",
    "total sulfur dioxide", "density",          "pH",          "sulphates",      "alcohol"};

const std::vector<std::vector<double>>& Wines() {
  static std::vector<std::vector<double>> rows = [] {
    std::vector<std::vector<double>> out;
    std::ifstream in(runnel::testing::SharedDir() / "data" / "wine" / "winequality_red.csv");
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      std::vector<double> v;
      std::stringstream s(line);
      for (std::string f; std::getline(s, f, ';');) v.push_back(std::stod(f));
      v.pop_back();  // quality
      out.push_back(v);
    }
    return out;
  }();
  return rows;
}

// ---- the baseline: a per-row DOM interpreter for what the wine files use ----

class Interpreter {
 public:
  explicit Interpreter(const std::string& path) { doc_.load_file(path.c_str()); }

  // Returns the predicted value (classification: the winning label, as a number).
  double Score(const std::map<std::string, double>& fields) const {
    std::map<std::string, double> probs;
    return Model(ModelElement(doc_.child("PMML")), fields, probs);
  }

 private:
  static pugi::xml_node ModelElement(pugi::xml_node parent) {
    for (pugi::xml_node n : parent.children()) {
      const std::string name = n.name();
      if (name.ends_with("Model") || name == "NeuralNetwork") return n;
    }
    return {};
  }

  static double Model(pugi::xml_node m, const std::map<std::string, double>& f, std::map<std::string, double>& probs) {
    const std::string kind = m.name();
    if (kind == "RegressionModel") {
      pugi::xml_node t = m.child("RegressionTable");
      double y = t.attribute("intercept").as_double();
      for (pugi::xml_node p : t.children("NumericPredictor"))
        y += p.attribute("coefficient").as_double() * f.at(p.attribute("name").as_string());
      return y;
    }
    if (kind == "GeneralRegressionModel") {
      std::map<std::string, std::string> field_of;
      for (pugi::xml_node c : m.child("PPMatrix").children("PPCell"))
        field_of[c.attribute("parameterName").as_string()] = c.attribute("predictorName").as_string();
      double y = 0;
      for (pugi::xml_node c : m.child("ParamMatrix").children("PCell")) {
        auto it = field_of.find(c.attribute("parameterName").as_string());
        y += c.attribute("beta").as_double() * (it == field_of.end() ? 1.0 : f.at(it->second));
      }
      return y;
    }
    if (kind == "TreeModel") {
      pugi::xml_node node = m.child("Node");
      while (true) {
        pugi::xml_node next;
        for (pugi::xml_node c : node.children("Node")) {
          pugi::xml_node p = c.child("SimplePredicate");
          const double x = f.at(p.attribute("field").as_string());
          const double v = p.attribute("value").as_double();
          const std::string op = p.attribute("operator").as_string();
          if ((op == "lessOrEqual" && x <= v) || (op == "greaterThan" && x > v)) {
            next = c;
            break;
          }
        }
        if (!next) break;
        node = next;
      }
      double total = 0;
      for (pugi::xml_node d : node.children("ScoreDistribution")) total += d.attribute("recordCount").as_double();
      for (pugi::xml_node d : node.children("ScoreDistribution"))
        probs[d.attribute("value").as_string()] += d.attribute("recordCount").as_double() / total;
      return node.attribute("score").as_double();
    }
    if (kind == "NeuralNetwork") {
      std::map<std::string, double> a;
      for (pugi::xml_node in : m.child("NeuralInputs").children("NeuralInput"))
        a[in.attribute("id").as_string()] =
            f.at(in.child("DerivedField").child("FieldRef").attribute("field").as_string());
      for (pugi::xml_node layer : m.children("NeuralLayer")) {
        const bool softmax = std::string(layer.attribute("normalizationMethod").as_string()) == "softmax";
        double sum = 0;
        std::vector<std::string> ids;
        for (pugi::xml_node n : layer.children("Neuron")) {
          double z = n.attribute("bias").as_double();
          for (pugi::xml_node c : n.children("Con"))
            z += a[c.attribute("from").as_string()] * c.attribute("weight").as_double();
          const std::string id = n.attribute("id").as_string();
          a[id] = softmax ? std::exp(z) : 1 / (1 + std::exp(-z));
          sum += a[id];
          ids.push_back(id);
        }
        if (softmax) {
          for (const auto& id : ids) a[id] /= sum;
        }
      }
      std::string best;
      double top = -1;
      for (pugi::xml_node o : m.child("NeuralOutputs").children("NeuralOutput")) {
        const double p = a[o.attribute("outputNeuron").as_string()];
        const std::string label = o.child("DerivedField").child("NormDiscrete").attribute("value").as_string();
        probs[label] = p;
        if (p > top) top = p, best = label;
      }
      return std::stod(best);
    }
    if (kind == "MiningModel") {  // average of classification trees
      size_t n = 0;
      for (pugi::xml_node s : m.child("Segmentation").children("Segment")) {
        Model(ModelElement(s), f, probs);
        ++n;
      }
      std::string best;
      double top = -1;
      for (auto& [label, p] : probs) {
        p /= static_cast<double>(n);
        if (p > top) top = p, best = label;
      }
      return std::stod(best);
    }
    return NAN;
  }

  pugi::xml_document doc_;
};

const std::vector<std::string>& kFiles = runnel::testing::kWineModelFiles;

void BM_Runnel(benchmark::State& state, const std::string& file) {
  const fs::path path = runnel::testing::SharedDir() / "models" / "wine" / file;
  if (!fs::exists(path)) {
    state.SkipWithError("../shared/models/wine is missing");
    return;
  }
  auto model = runnel::model::LoadModel(path);
  const auto batch = static_cast<size_t>(state.range(0));
  const auto& wines = Wines();
  // The model's columns, by name for PMML, all eleven in order for the graph.
  std::vector<size_t> columns;
  if (model->input_names().empty()) {
    for (size_t c = 0; c < 11; ++c) columns.push_back(c);
  } else {
    for (const auto& name : model->input_names()) {
      for (size_t c = 0; c < 11; ++c) {
        if (name == kColumns[c]) columns.push_back(c);
      }
    }
  }
  std::vector<float> input;
  for (size_t r = 0; r < batch; ++r) {
    for (size_t c : columns) input.push_back(static_cast<float>(wines[r % wines.size()][c]));
  }
  ModelSession session(model);
  for (auto _ : state) benchmark::DoNotOptimize(session.Predict(input, batch).data());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

void BM_Interpreted(benchmark::State& state, const std::string& file) {
  const fs::path path = runnel::testing::SharedDir() / "models" / "wine" / file;
  if (!fs::exists(path)) {
    state.SkipWithError("../shared/models/wine is missing");
    return;
  }
  Interpreter interpreter(path.string());
  const auto batch = static_cast<size_t>(state.range(0));
  const auto& wines = Wines();
  std::vector<std::map<std::string, double>> rows;
  for (size_t r = 0; r < batch; ++r) {
    std::map<std::string, double> f;
    for (size_t c = 0; c < 11; ++c) f[kColumns[c]] = wines[r % wines.size()][c];
    rows.push_back(std::move(f));
  }
  for (auto _ : state) {
    for (const auto& row : rows) benchmark::DoNotOptimize(interpreter.Score(row));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

const bool kRegistered = [] {
  for (const auto& file : kFiles) {
    const std::string name = file.substr(0, file.find('.'));
    benchmark::RegisterBenchmark(("BM_Runnel/" + name).c_str(), BM_Runnel, file)->Arg(1)->Arg(1024);
    if (file.ends_with(".pmml"))
      benchmark::RegisterBenchmark(("BM_Interpreted/" + name).c_str(), BM_Interpreted, file)->Arg(1)->Arg(1024);
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
