// PMML: each model type and transformation on small documents whose answers are
// computed by hand here; the batch path against the row path; malformed input; and
// the seven shared wine models (plus the TensorFlow graph) on all 1599 rows, checked
// against independent reference computations read straight from their XML.
#include "runnel/model/pmml.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <map>
#include <pugixml.hpp>
#include <sstream>

#include "../support/shared_fixtures.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/model/model.hpp"

namespace runnel::model::pmml {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string Doc(const std::string& dictionary, const std::string& model) {
  return fmt::format(R"(<?xml version="1.0"?>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <Header><Application name="test" version="1"/></Header>
  <DataDictionary>{}</DataDictionary>
  {}
</PMML>)",
                     dictionary, model);
}

std::vector<double> Row(const PmmlModel& m, std::vector<double> in) {
  std::vector<double> out(m.output_names().size());
  m.ScoreRow(in, out);
  return out;
}

const std::string kXY = R"(<DataField name="x" optype="continuous" dataType="double"/>
  <DataField name="y" optype="continuous" dataType="double"/>)";
const std::string kClasses = R"(<DataField name="c" optype="categorical" dataType="string">
  <Value value="a"/><Value value="b"/><Value value="z"/></DataField>)";

TEST(PmmlTest, LinearRegressionWithExponentsCategoriesAndTargets) {
  auto m = PmmlModel::Load(Doc(kXY + R"(<DataField name="k" optype="categorical" dataType="string">
      <Value value="red"/><Value value="white"/></DataField><DataField name="t" optype="continuous"/>)",
                               R"(<RegressionModel functionName="regression">
    <MiningSchema><MiningField name="t" usageType="target"/><MiningField name="x"/><MiningField name="y"/>
      <MiningField name="k"/></MiningSchema>
    <Targets><Target field="t" rescaleFactor="2" rescaleConstant="1"/></Targets>
    <RegressionTable intercept="0.5">
      <NumericPredictor name="x" coefficient="3"/>
      <NumericPredictor name="y" exponent="2" coefficient="-1"/>
      <CategoricalPredictor name="k" value="white" coefficient="10"/>
      <PredictorTerm coefficient="0.25"><FieldRef field="x"/><FieldRef field="y"/></PredictorTerm>
    </RegressionTable></RegressionModel>)"),
                           "linear");
  EXPECT_EQ(m->output_names(), (std::vector<std::string>{"t"}));
  EXPECT_EQ(m->input_names(), (std::vector<std::string>{"x", "y", "k"}));
  // k = 1 is "white" (a non-numeric label's code is its position).
  const double y = 0.5 + 3 * 2 - 1 * 9 + 10 + 0.25 * 2 * 3;
  EXPECT_DOUBLE_EQ(Row(*m, {2, 3, 1})[0], 2 * y + 1);
  EXPECT_DOUBLE_EQ(Row(*m, {2, 3, 0})[0], 2 * (y - 10) + 1);
  EXPECT_TRUE(std::isnan(Row(*m, {kNaN, 3, 0})[0])) << "a missing input without replacement: no prediction";
}

TEST(PmmlTest, RegressionClassificationSoftmaxAndLogit) {
  auto softmax = PmmlModel::Load(Doc(kXY + kClasses, R"(<RegressionModel functionName="classification"
      normalizationMethod="softmax"><MiningSchema><MiningField name="c" usageType="target"/>
      <MiningField name="x"/></MiningSchema>
    <RegressionTable intercept="1" targetCategory="a"><NumericPredictor name="x" coefficient="2"/></RegressionTable>
    <RegressionTable intercept="0" targetCategory="b"><NumericPredictor name="x" coefficient="-1"/></RegressionTable>
    </RegressionModel>)"),
                                 "softmax");
  // "z" has no table: it scores 0.
  const double x = 0.5, ya = 1 + 2 * x, yb = -x, yz = 0;
  const double sum = std::exp(ya) + std::exp(yb) + std::exp(yz);
  auto out = Row(*softmax, {x});
  ASSERT_EQ(out.size(), 4u);
  EXPECT_NEAR(out[1], std::exp(ya) / sum, 1e-12);
  EXPECT_NEAR(out[2], std::exp(yb) / sum, 1e-12);
  EXPECT_NEAR(out[3], std::exp(yz) / sum, 1e-12);
  EXPECT_EQ(out[0], 0) << "a wins; its code is its position, 0";
  EXPECT_EQ(softmax->output_names()[1], "probability_a");

  auto logit = PmmlModel::Load(Doc(kXY + R"(<DataField name="c" optype="categorical"><Value value="1"/>
      <Value value="0"/></DataField>)",
                                   R"(<RegressionModel functionName="classification" normalizationMethod="logit">
    <MiningSchema><MiningField name="c" usageType="target"/><MiningField name="x"/></MiningSchema>
    <RegressionTable intercept="-1" targetCategory="1"><NumericPredictor name="x" coefficient="2"/></RegressionTable>
    <RegressionTable intercept="0" targetCategory="0"/></RegressionModel>)"),
                               "logit");
  out = Row(*logit, {2});
  const double p1 = 1 / (1 + std::exp(-(-1 + 4)));
  EXPECT_NEAR(out[1], p1, 1e-12);
  EXPECT_NEAR(out[2], 1 - p1, 1e-12);
  EXPECT_EQ(out[0], 1) << "numeric labels keep their value";
}

TEST(PmmlTest, GeneralRegressionLinksAndMultinomial) {
  const std::string params = R"(<ParameterList><Parameter name="p0"/><Parameter name="p1"/><Parameter name="p2"/>
    </ParameterList><FactorList><Predictor name="f"/></FactorList><CovariateList><Predictor name="x"/></CovariateList>
    <PPMatrix><PPCell value="1" predictorName="x" parameterName="p1"/>
      <PPCell value="b" predictorName="f" parameterName="p2"/></PPMatrix>)";
  const std::string dict = kXY + R"(<DataField name="f" optype="categorical"><Value value="a"/><Value value="b"/>
    </DataField><DataField name="t" optype="continuous"/>)";
  auto log = PmmlModel::Load(Doc(dict, R"(<GeneralRegressionModel modelType="generalizedLinear"
      functionName="regression" linkFunction="log"><MiningSchema><MiningField name="t" usageType="target"/>
      <MiningField name="x"/><MiningField name="f"/></MiningSchema>)" +
                                           params + R"(<ParamMatrix><PCell parameterName="p0" beta="0.5"/>
      <PCell parameterName="p1" beta="0.25"/><PCell parameterName="p2" beta="-1"/></ParamMatrix>
      </GeneralRegressionModel>)"),
                             "glm");
  EXPECT_NEAR(Row(*log, {2, 1})[0], std::exp(0.5 + 0.25 * 2 - 1), 1e-12);
  EXPECT_NEAR(Row(*log, {2, 0})[0], std::exp(0.5 + 0.25 * 2), 1e-12);

  auto multi = PmmlModel::Load(Doc(dict + kClasses, R"(<GeneralRegressionModel modelType="multinomialLogistic"
      functionName="classification"><MiningSchema><MiningField name="c" usageType="target"/>
      <MiningField name="x"/><MiningField name="f"/></MiningSchema>)" +
                                                        params + R"(<ParamMatrix>
      <PCell parameterName="p0" targetCategory="a" beta="1"/><PCell parameterName="p1" targetCategory="a" beta="2"/>
      <PCell parameterName="p0" targetCategory="b" beta="-1"/><PCell parameterName="p2" targetCategory="b" beta="3"/>
      </ParamMatrix></GeneralRegressionModel>)"),
                               "multinomial");
  auto out = Row(*multi, {0.5, 1});
  const double ea = std::exp(1 + 2 * 0.5), eb = std::exp(-1 + 3), ez = 1;  // z: the reference
  EXPECT_NEAR(out[1], ea / (ea + eb + ez), 1e-12);
  EXPECT_NEAR(out[2], eb / (ea + eb + ez), 1e-12);
  EXPECT_NEAR(out[3], ez / (ea + eb + ez), 1e-12);
}

// A tree over x and a categorical k, whose strategies the tests vary.
std::string Tree(const std::string& attributes) {
  return Doc(kXY + kClasses + R"(<DataField name="k" optype="categorical"><Value value="r"/><Value value="w"/>
      <Value value="s"/></DataField>)",
             fmt::format(R"(<TreeModel functionName="classification" {}>
    <MiningSchema><MiningField name="c" usageType="target"/><MiningField name="x"/><MiningField name="y"/>
      <MiningField name="k"/></MiningSchema>
    <Node id="root" score="a" defaultChild="right"><True/>
      <ScoreDistribution value="a" recordCount="6"/><ScoreDistribution value="b" recordCount="4"/>
      <Node id="left" score="b"><SimplePredicate field="x" operator="lessThan" value="1"/>
        <ScoreDistribution value="b" recordCount="3"/><ScoreDistribution value="a" recordCount="1"/>
        <Node score="z"><CompoundPredicate booleanOperator="and">
          <SimplePredicate field="y" operator="greaterOrEqual" value="5"/>
          <SimpleSetPredicate field="k" booleanOperator="isIn"><Array type="string">r "s"</Array></SimpleSetPredicate>
        </CompoundPredicate><ScoreDistribution value="z" recordCount="1"/></Node>
      </Node>
      <Node id="right" score="a"><SimplePredicate field="x" operator="greaterOrEqual" value="1"/>
        <ScoreDistribution value="a" recordCount="5"/><ScoreDistribution value="b" recordCount="1"/></Node>
    </Node></TreeModel>)",
                         attributes));
}

TEST(PmmlTest, TreePredicatesDistributionsAndStrategies) {
  auto t = PmmlModel::Load(Tree(""), "tree");
  auto out = Row(*t, {2, 0, 0});  // right
  EXPECT_EQ(out[0], 0);           // a
  EXPECT_NEAR(out[1], 5.0 / 6, 1e-12);
  EXPECT_NEAR(out[2], 1.0 / 6, 1e-12);
  EXPECT_EQ(out[3], 0);
  out = Row(*t, {0, 6, 2});  // left, then y >= 5 and k in {r, s}: z
  EXPECT_EQ(out[0], 2);
  EXPECT_EQ(out[3], 1);
  out = Row(*t, {0, 6, 1});  // left; k = w is not in the set; left is a leaf for this row? no child true
  EXPECT_TRUE(std::isnan(out[0])) << "noTrueChildStrategy returnNullPrediction (the default)";
  auto last = PmmlModel::Load(Tree(R"(noTrueChildStrategy="returnLastPrediction")"), "tree");
  out = Row(*last, {0, 6, 1});
  EXPECT_EQ(out[0], 1) << "left's own score, b";
  EXPECT_NEAR(out[2], 0.75, 1e-12);

  // x missing at the root's children: the strategies.
  EXPECT_TRUE(std::isnan(Row(*t, {kNaN, 0, 0})[0])) << "none: unknown is false, no child is true";
  auto lastp = PmmlModel::Load(Tree(R"(missingValueStrategy="lastPrediction")"), "tree");
  EXPECT_EQ(Row(*lastp, {kNaN, 0, 0})[0], 0) << "the root's score";
  auto nullp = PmmlModel::Load(
      Tree(R"(missingValueStrategy="nullPrediction" noTrueChildStrategy="returnLastPrediction")"), "tree");
  EXPECT_TRUE(std::isnan(Row(*nullp, {kNaN, 0, 0})[0]));
  auto def = PmmlModel::Load(Tree(R"(missingValueStrategy="defaultChild")"), "tree");
  out = Row(*def, {kNaN, 0, 0});
  EXPECT_EQ(out[0], 0) << "the default child, right";
  EXPECT_NEAR(out[1], 5.0 / 6, 1e-12);
}

TEST(PmmlTest, NeuralNetworkAgainstHandComputation) {
  auto m = PmmlModel::Load(Doc(kXY + kClasses, R"(<NeuralNetwork functionName="classification"
      activationFunction="tanh"><MiningSchema><MiningField name="c" usageType="target"/><MiningField name="x"/>
      <MiningField name="y"/></MiningSchema>
    <NeuralInputs>
      <NeuralInput id="i1"><DerivedField><NormContinuous field="x"><LinearNorm orig="0" norm="-1"/>
        <LinearNorm orig="10" norm="1"/></NormContinuous></DerivedField></NeuralInput>
      <NeuralInput id="i2"><DerivedField><FieldRef field="y"/></DerivedField></NeuralInput>
    </NeuralInputs>
    <NeuralLayer><Neuron id="h1" bias="0.1"><Con from="i1" weight="0.5"/><Con from="i2" weight="-0.3"/></Neuron>
      <Neuron id="h2" bias="-0.2"><Con from="i1" weight="1"/><Con from="i2" weight="0.7"/></Neuron></NeuralLayer>
    <NeuralLayer activationFunction="identity" normalizationMethod="softmax">
      <Neuron id="o1" bias="0"><Con from="h1" weight="1"/><Con from="h2" weight="-1"/></Neuron>
      <Neuron id="o2" bias="0.5"><Con from="h1" weight="2"/></Neuron>
      <Neuron id="o3" bias="0"><Con from="h2" weight="0.5"/></Neuron></NeuralLayer>
    <NeuralOutputs>
      <NeuralOutput outputNeuron="o1"><DerivedField><NormDiscrete field="c" value="a"/></DerivedField></NeuralOutput>
      <NeuralOutput outputNeuron="o2"><DerivedField><NormDiscrete field="c" value="b"/></DerivedField></NeuralOutput>
      <NeuralOutput outputNeuron="o3"><DerivedField><NormDiscrete field="c" value="z"/></DerivedField></NeuralOutput>
    </NeuralOutputs></NeuralNetwork>)"),
                           "nn");
  const double i1 = -1 + 2 * 7.5 / 10, i2 = 0.25;
  const double h1 = std::tanh(0.1 + 0.5 * i1 - 0.3 * i2), h2 = std::tanh(-0.2 + i1 + 0.7 * i2);
  const double o1 = h1 - h2, o2 = 0.5 + 2 * h1, o3 = 0.5 * h2;
  const double sum = std::exp(o1) + std::exp(o2) + std::exp(o3);
  auto out = Row(*m, {7.5, 0.25});
  EXPECT_NEAR(out[1], std::exp(o1) / sum, 1e-12);
  EXPECT_NEAR(out[2], std::exp(o2) / sum, 1e-12);
  EXPECT_NEAR(out[3], std::exp(o3) / sum, 1e-12);
}

std::string Segment(const std::string& id, const std::string& predicate, double weight, double value) {
  return fmt::format(R"(<Segment id="{}" weight="{}">{}<RegressionModel functionName="regression">
    <MiningSchema><MiningField name="x"/></MiningSchema><RegressionTable intercept="{}">
    <NumericPredictor name="x" coefficient="1"/></RegressionTable></RegressionModel></Segment>)",
                     id, weight, predicate, value);
}

TEST(PmmlTest, MiningModelCombinations) {
  auto mining = [&](const std::string& method) {
    return PmmlModel::Load(
        Doc(kXY + R"(<DataField name="t" optype="continuous"/>)",
            fmt::format(R"(<MiningModel functionName="regression"><MiningSchema>
      <MiningField name="t" usageType="target"/><MiningField name="x"/></MiningSchema>
      <Segmentation multipleModelMethod="{}">{}{}{}</Segmentation></MiningModel>)",
                        method, Segment("1", "<True/>", 1, 1), Segment("2", "<False/>", 5, 100),
                        Segment("3", R"(<SimplePredicate field="x" operator="lessThan" value="10"/>)", 3, 5))),
        method);
  };
  // x = 2: segments 1 (x + 1 = 3) and 3 (x + 5 = 7) apply; 2 never does.
  EXPECT_DOUBLE_EQ(Row(*mining("average"), {2})[0], 5);
  EXPECT_DOUBLE_EQ(Row(*mining("weightedAverage"), {2})[0], (1 * 3 + 3 * 7) / 4.0);
  EXPECT_DOUBLE_EQ(Row(*mining("sum"), {2})[0], 10);
  EXPECT_DOUBLE_EQ(Row(*mining("max"), {2})[0], 7);
  EXPECT_DOUBLE_EQ(Row(*mining("median"), {2})[0], 5);
  EXPECT_DOUBLE_EQ(Row(*mining("selectFirst"), {2})[0], 3);
  EXPECT_DOUBLE_EQ(Row(*mining("average"), {20})[0], 21) << "x = 20: only segment 1";

  // majorityVote over three constant classifiers.
  auto vote = PmmlModel::Load(Doc(kXY + kClasses, R"(<MiningModel functionName="classification"><MiningSchema>
      <MiningField name="c" usageType="target"/><MiningField name="x"/></MiningSchema>
      <Segmentation multipleModelMethod="majorityVote">
      <Segment><True/><TreeModel functionName="classification"><MiningSchema><MiningField name="x"/></MiningSchema>
        <Node score="b"><True/></Node></TreeModel></Segment>
      <Segment><True/><TreeModel functionName="classification"><MiningSchema><MiningField name="x"/></MiningSchema>
        <Node score="a"><True/></Node></TreeModel></Segment>
      <Segment><True/><TreeModel functionName="classification"><MiningSchema><MiningField name="x"/></MiningSchema>
        <Node score="b"><True/></Node></TreeModel></Segment>
      </Segmentation></MiningModel>)"),
                              "vote");
  auto out = Row(*vote, {0});
  EXPECT_EQ(out[0], 1);
  EXPECT_NEAR(out[1], 1.0 / 3, 1e-12);
  EXPECT_NEAR(out[2], 2.0 / 3, 1e-12);

  // modelChain: the first segment's output feeds the second.
  auto chain = PmmlModel::Load(Doc(kXY + R"(<DataField name="t" optype="continuous"/>)", R"(<MiningModel
      functionName="regression"><MiningSchema><MiningField name="t" usageType="target"/><MiningField name="x"/>
      </MiningSchema><Segmentation multipleModelMethod="modelChain">
      <Segment><True/><RegressionModel functionName="regression"><MiningSchema><MiningField name="x"/></MiningSchema>
        <Output><OutputField name="first" feature="predictedValue"/></Output>
        <RegressionTable intercept="1"><NumericPredictor name="x" coefficient="2"/></RegressionTable>
      </RegressionModel></Segment>
      <Segment><True/><RegressionModel functionName="regression"><MiningSchema><MiningField name="first"/>
        </MiningSchema><RegressionTable intercept="0"><NumericPredictor name="first" coefficient="10"/>
        </RegressionTable></RegressionModel></Segment>
      </Segmentation></MiningModel>)"),
                               "chain");
  EXPECT_DOUBLE_EQ(Row(*chain, {3})[0], 70);
}

TEST(PmmlTest, TransformationsAndMissingValueTreatment) {
  auto m = PmmlModel::Load(Doc(kXY + R"(<DataField name="t" optype="continuous"/>
      <DataField name="g" optype="categorical"><Value value="lo"/><Value value="hi"/></DataField>)",
                               R"(<RegressionModel functionName="regression">
    <MiningSchema><MiningField name="t" usageType="target"/>
      <MiningField name="x" missingValueReplacement="4"/><MiningField name="y"/><MiningField name="g"/></MiningSchema>
    <LocalTransformations>
      <DerivedField name="bin" optype="continuous"><Discretize field="x" defaultValue="-1">
        <DiscretizeBin binValue="10"><Interval closure="closedOpen" leftMargin="0" rightMargin="5"/></DiscretizeBin>
        <DiscretizeBin binValue="20"><Interval closure="closedClosed" leftMargin="5" rightMargin="9"/></DiscretizeBin>
      </Discretize></DerivedField>
      <DerivedField name="mapped" optype="continuous"><MapValues outputColumn="out" defaultValue="0">
        <FieldColumnPair field="g" column="in"/><InlineTable><row><in>hi</in><out>100</out></row></InlineTable>
      </MapValues></DerivedField>
      <DerivedField name="ratio" optype="continuous"><Apply function="if">
        <Apply function="greaterThan"><FieldRef field="y"/><Constant>0</Constant></Apply>
        <Apply function="/"><FieldRef field="x"/><FieldRef field="y"/></Apply>
        <Constant>-7</Constant></Apply></DerivedField>
      <DerivedField name="ny" optype="continuous"><FieldRef field="y" mapMissingTo="3"/></DerivedField>
    </LocalTransformations>
    <RegressionTable intercept="0"><NumericPredictor name="bin" coefficient="1"/>
      <NumericPredictor name="mapped" coefficient="1"/><NumericPredictor name="ratio" coefficient="1"/>
      <NumericPredictor name="ny" coefficient="1000"/></RegressionTable></RegressionModel>)"),
                           "transforms");
  // x = 5 -> bin 20; g = hi (code 1) -> 100; y = 2 -> ratio 2.5; ny = 2.
  EXPECT_DOUBLE_EQ(Row(*m, {5, 2, 1})[0], 20 + 100 + 2.5 + 2000);
  // x missing -> 4 (bin 10, ratio 4 / 2); g = lo -> 0.
  EXPECT_DOUBLE_EQ(Row(*m, {kNaN, 2, 0})[0], 10 + 0 + 2 + 2000);
  // y = -1 -> ratio -7; x = 12 -> no bin, -1.
  EXPECT_DOUBLE_EQ(Row(*m, {12, -1, 0})[0], -1 + 0 - 7 - 1000);
}

TEST(PmmlTest, MalformedAndUnsupportedInputNamesElementAndLine) {
  auto message = [](const std::string& text) {
    try {
      PmmlModel::Load(text, "bad.pmml");
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Model);
      return std::string(e.what());
    }
    ADD_FAILURE() << "accepted: " << text;
    return std::string();
  };
  EXPECT_NE(message("<PMML version=\"4.3\"><DataDictionary>").find("bad.pmml:1: malformed XML"), std::string::npos);
  EXPECT_NE(message(Doc(kXY, "<ClusteringModel functionName=\"clustering\"/>")).find("<ClusteringModel>: unsupported"),
            std::string::npos);
  const std::string unknown = message(Doc(kXY, R"(<RegressionModel functionName="regression">
      <MiningSchema><MiningField name="nope"/></MiningSchema></RegressionModel>)"));
  EXPECT_NE(unknown.find("bad.pmml:7: <MiningField>: unknown field 'nope'"), std::string::npos) << unknown;
  EXPECT_NE(message(Doc(kXY, R"(<RegressionModel functionName="regression"><MiningSchema>
      <MiningField name="x"/></MiningSchema><RegressionTable intercept="one"/></RegressionModel>)"))
                .find("'intercept' = 'one' is not a number"),
            std::string::npos);
  EXPECT_NE(message(Doc(kXY, R"(<TreeModel functionName="regression"><MiningSchema><MiningField name="x"/>
      </MiningSchema><Node><True/><Node><SimplePredicate field="x" operator="around" value="1"/></Node></Node>
      </TreeModel>)"))
                .find("unknown operator 'around'"),
            std::string::npos);
  EXPECT_NE(message("<PMML version=\"3.2\"/>").find("version '3.2'"), std::string::npos);
  // Deep nesting is refused, not a stack overflow.
  std::string deep = "<Node><True/>";
  for (int i = 0; i < 2000; ++i) deep += R"(<Node><SimplePredicate field="x" operator="lessThan" value="1"/>)";
  for (int i = 0; i < 2000; ++i) deep += "</Node>";
  deep += "</Node>";
  EXPECT_NE(message(Doc(kXY, R"(<TreeModel functionName="regression"><MiningSchema><MiningField name="x"/>
      </MiningSchema>)" + deep + "</TreeModel>"))
                .find("deeper than 400 levels"),
            std::string::npos);
}

// ---- the shared wine models ----

struct Wine {
  std::vector<std::vector<double>> rows;  // 11 measurements
  std::vector<int> quality;
};

const char* const kWineColumns[] = {
    "fixed acidity",        "volatile acidity", "citric acid", "residual sugar", "chlorides", "free sulfur dioxide",
    "total sulfur dioxide", "density",          "pH",          "sulphates",      "alcohol"};

Wine ReadWine(const std::string& path) {
  Wine w;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<double> values;
    std::stringstream fields(line);
    std::string f;
    while (std::getline(fields, f, ';')) values.push_back(std::stod(f));
    w.quality.push_back(static_cast<int>(values.back()));
    values.pop_back();
    w.rows.push_back(values);
  }
  return w;
}

// The model's inputs from a wine row, by name.
std::vector<double> Inputs(const PmmlModel& m, const std::vector<double>& row) {
  std::vector<double> in;
  for (const auto& name : m.input_names()) {
    for (size_t c = 0; c < 11; ++c) {
      if (name == kWineColumns[c]) in.push_back(row[c]);
    }
  }
  return in;
}

TEST(PmmlWineTest, EverySharedModelScoresEveryRowSanely) {
  RUNNEL_REQUIRE_SHARED();
  const std::string dir = (runnel::testing::SharedDir() / "models/wine").string();
  const Wine wine = ReadWine((runnel::testing::SharedDir() / "data/wine/winequality_red.csv").string());
  ASSERT_EQ(wine.rows.size(), 1599u);
  const std::map<std::string, double> max_rmse = {{"winequalityLinearRegression.pmml", 0.7},
                                                  {"winequalityGeneralizedLinearRegressionGaussian.pmml", 0.7},
                                                  {"winequalityGeneralizedLinearRegressionGamma.pmml", 0.75},
                                                  {"winequalityDesisionTreeRegression.pmml", 0.65},
                                                  {"winequalityDecisionTreeClassification.pmml", 0.8},
                                                  {"winequalityRandonForrestClassification.pmml", 0.8},
                                                  {"winequalityMultilayerPerceptron.pmml", 0.85}};
  for (const auto& [file, limit] : max_rmse) {
    SCOPED_TRACE(file);
    auto m = PmmlModel::Load(ReadFileBytes(dir + "/" + file), file);
    const size_t width = m->input_names().size();
    const size_t out = m->output_names().size();
    std::vector<float> input;
    for (const auto& row : wine.rows) {
      for (double v : Inputs(*m, row)) input.push_back(static_cast<float>(v));
    }
    ASSERT_EQ(input.size(), wine.rows.size() * width) << "every input field is a wine column";
    std::vector<float> batch(wine.rows.size() * out);
    m->Score(input, wine.rows.size(), batch);
    double squared = 0;
    for (size_t r = 0; r < wine.rows.size(); ++r) {
      // The batch path equals the row path.
      std::vector<double> row_in(input.begin() + static_cast<std::ptrdiff_t>(r * width),
                                 input.begin() + static_cast<std::ptrdiff_t>((r + 1) * width));
      std::vector<double> single(out);
      m->ScoreRow(row_in, single);
      for (size_t o = 0; o < out; ++o) ASSERT_NEAR(batch[r * out + o], single[o], 1e-6) << "row " << r;
      ASSERT_FALSE(std::isnan(batch[r * out])) << "row " << r;
      squared += std::pow(batch[r * out] - wine.quality[r], 2);
      if (m->classification()) {
        double sum = 0;
        for (size_t c = 1; c < out; ++c) sum += batch[r * out + c];
        ASSERT_NEAR(sum, 1.0, 1e-5) << "row " << r;
      }
    }
    const double rmse = std::sqrt(squared / static_cast<double>(wine.rows.size()));
    EXPECT_LT(rmse, limit);
    EXPECT_GT(rmse, 0.3) << "suspiciously good: is the label leaking?";
  }
}

// Linear models recomputed here from their XML: intercept/beta plus coefficient x value.
TEST(PmmlWineTest, LinearModelsMatchTheirCoefficients) {
  RUNNEL_REQUIRE_SHARED();
  const Wine wine = ReadWine((runnel::testing::SharedDir() / "data/wine/winequality_red.csv").string());
  for (const std::string file :
       {"winequalityLinearRegression.pmml", "winequalityGeneralizedLinearRegressionGaussian.pmml",
        "winequalityGeneralizedLinearRegressionGamma.pmml"}) {
    SCOPED_TRACE(file);
    const std::string text = ReadFileBytes((runnel::testing::SharedDir() / "models/wine" / file).string());
    pugi::xml_document xml;
    ASSERT_TRUE(xml.load_string(text.c_str()));
    double intercept = 0;
    std::map<std::string, double> coefficient;  // field -> coefficient
    auto root = xml.child("PMML");
    if (auto table = root.child("RegressionModel").child("RegressionTable")) {
      intercept = table.attribute("intercept").as_double();
      for (auto p : table.children("NumericPredictor"))
        coefficient[p.attribute("name").as_string()] = p.attribute("coefficient").as_double();
    } else {
      auto glm = root.child("GeneralRegressionModel");
      ASSERT_STREQ(glm.attribute("linkFunction").as_string(), "identity");
      std::map<std::string, std::string> field_of;  // parameter -> predictor
      for (auto c : glm.child("PPMatrix").children("PPCell"))
        field_of[c.attribute("parameterName").as_string()] = c.attribute("predictorName").as_string();
      for (auto c : glm.child("ParamMatrix").children("PCell")) {
        const std::string param = c.attribute("parameterName").as_string();
        if (field_of.contains(param)) {
          coefficient[field_of[param]] = c.attribute("beta").as_double();
        } else {
          intercept = c.attribute("beta").as_double();
        }
      }
    }
    auto m = PmmlModel::Load(text, file);
    for (size_t r : {size_t{0}, size_t{1}, size_t{500}, size_t{1598}}) {
      double expected = intercept;
      for (size_t c = 0; c < 11; ++c) {
        if (coefficient.contains(kWineColumns[c]))
          expected += coefficient[kWineColumns[c]] * static_cast<double>(static_cast<float>(wine.rows[r][c]));
      }
      std::vector<double> out(1);
      m->ScoreRow(Inputs(*m, wine.rows[r]), out);
      EXPECT_NEAR(out[0], expected, 1e-9) << "row " << r;
    }
  }
}

// Trees walked here straight from the XML: the first child whose SimplePredicate holds.
TEST(PmmlWineTest, TreePathsMatchAWalkOfTheXml) {
  RUNNEL_REQUIRE_SHARED();
  const Wine wine = ReadWine((runnel::testing::SharedDir() / "data/wine/winequality_red.csv").string());
  for (const std::string file :
       {"winequalityDecisionTreeClassification.pmml", "winequalityDesisionTreeRegression.pmml"}) {
    SCOPED_TRACE(file);
    const std::string text = ReadFileBytes((runnel::testing::SharedDir() / "models/wine" / file).string());
    pugi::xml_document xml;
    ASSERT_TRUE(xml.load_string(text.c_str()));
    auto m = PmmlModel::Load(text, file);
    for (size_t r : {size_t{0}, size_t{7}, size_t{99}, size_t{800}, size_t{1234}}) {
      auto node = xml.child("PMML").child("TreeModel").child("Node");
      while (true) {
        pugi::xml_node next;
        for (auto child : node.children("Node")) {
          auto p = child.child("SimplePredicate");
          const std::string field = p.attribute("field").as_string();
          const std::string op = p.attribute("operator").as_string();
          double x = 0;
          for (size_t c = 0; c < 11; ++c) {
            if (field == kWineColumns[c]) x = static_cast<float>(wine.rows[r][c]);
          }
          const double v = static_cast<float>(p.attribute("value").as_double());
          if ((op == "lessOrEqual" && x <= v) || (op == "greaterThan" && x > v)) {
            next = child;
            break;
          }
        }
        if (!next) break;
        node = next;
      }
      std::vector<double> out(m->output_names().size());
      m->ScoreRow(Inputs(*m, wine.rows[r]), out);
      EXPECT_DOUBLE_EQ(out[0], node.attribute("score").as_double()) << "row " << r;
    }
  }
}

// The MLP recomputed layer by layer from its XML (logistic hidden layers, softmax out).
TEST(PmmlWineTest, MultilayerPerceptronMatchesAReferenceOfItsLayers) {
  RUNNEL_REQUIRE_SHARED();
  const Wine wine = ReadWine((runnel::testing::SharedDir() / "data/wine/winequality_red.csv").string());
  const std::string text =
      ReadFileBytes((runnel::testing::SharedDir() / "models/wine/winequalityMultilayerPerceptron.pmml").string());
  pugi::xml_document xml;
  ASSERT_TRUE(xml.load_string(text.c_str()));
  auto nn = xml.child("PMML").child("NeuralNetwork");
  auto m = PmmlModel::Load(text, "mlp");
  for (size_t r : {size_t{0}, size_t{42}, size_t{1000}}) {
    std::map<std::string, double> a;
    for (auto in : nn.child("NeuralInputs").children("NeuralInput")) {
      const std::string field = in.child("DerivedField").child("FieldRef").attribute("field").as_string();
      for (size_t c = 0; c < 11; ++c) {
        if (field == kWineColumns[c]) a[in.attribute("id").as_string()] = static_cast<float>(wine.rows[r][c]);
      }
    }
    std::vector<std::string> last;
    for (auto layer : nn.children("NeuralLayer")) {
      const bool softmax = std::string(layer.attribute("normalizationMethod").as_string()) == "softmax";
      last.clear();
      double sum = 0;
      for (auto neuron : layer.children("Neuron")) {
        double z = neuron.attribute("bias").as_double();
        for (auto con : neuron.children("Con"))
          z += a[con.attribute("from").as_string()] * con.attribute("weight").as_double();
        const std::string id = neuron.attribute("id").as_string();
        a[id] = softmax ? std::exp(z) : 1 / (1 + std::exp(-z));
        sum += a[id];
        last.push_back(id);
      }
      if (softmax) {
        for (const auto& id : last) a[id] /= sum;
      }
    }
    std::vector<double> out(m->output_names().size());
    m->ScoreRow(Inputs(*m, wine.rows[r]), out);
    size_t k = 1;
    for (auto o : nn.child("NeuralOutputs").children("NeuralOutput")) {
      EXPECT_NEAR(out[k++], a[o.attribute("outputNeuron").as_string()], 1e-9) << "row " << r;
    }
  }
}

TEST(PmmlWineTest, TensorFlowGraphLoadsAndPredictsTheClass) {
  RUNNEL_REQUIRE_SHARED();
  auto m = LoadModel((runnel::testing::SharedDir() / "models/wine/optimized_WineQuality.pb").string());
  EXPECT_EQ(m->info().format, ModelFormat::TfGraph);
  EXPECT_EQ(m->input_width(), 11u);
  EXPECT_EQ(m->output_width(), 9u);
  const Wine wine = ReadWine((runnel::testing::SharedDir() / "data/wine/winequality_red.csv").string());
  ModelSession session(m);
  std::vector<float> input;
  for (const auto& row : wine.rows) {
    for (double v : row) input.push_back(static_cast<float>(v));
  }
  auto out = session.Predict(input, wine.rows.size());
  size_t correct = 0;
  for (size_t r = 0; r < wine.rows.size(); ++r) {
    const float* s = out.data() + r * 9;
    for (size_t k = 0; k < 9; ++k) ASSERT_TRUE(s[k] >= 0 && s[k] <= 1) << "sigmoid outputs";
    correct += static_cast<size_t>(std::max_element(s, s + 9) - s) == static_cast<size_t>(wine.quality[r]);
  }
  EXPECT_GT(static_cast<double>(correct) / static_cast<double>(wine.rows.size()), 0.5);
}

}  // namespace
}  // namespace runnel::model::pmml
