#include "runnel/features/features.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "runnel/core/error.hpp"

namespace runnel::features {
namespace {

ColumnBatch Batch(const std::vector<std::string>& names, const std::vector<std::vector<double>>& rows) {
  ColumnBatch batch;
  batch.Reset(names, rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t c = 0; c < names.size(); ++c) {
      if (!std::isnan(rows[r][c])) batch.Set(c, r, rows[r][c]);  // NaN here means NULL
    }
  }
  return batch;
}

std::string CompileError(const FeatureSpec& spec) {
  try {
    FeatureProgram::Compile(spec, "p.toml");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidInput);
    return e.what();
  }
  ADD_FAILURE() << "compiled";
  return "";
}

TEST(Features, ArithmeticPrecedenceAndFunctions) {
  FeatureSpec spec;
  spec.input_columns = {"a", "b"};
  spec.derived = {{"d", "a * 2 + b / 4 - -1"}};
  spec.features = {
      "d",          "(a + b) * 2",    "ln(a)",        "log10(b)",      "exp(0)",          "pow(a, 3)",    "sqrt(b)",
      "abs(a - b)", "min(a, b, 0.5)", "max(a, b, 9)", "clip(b, 0, 3)", "box_cox(b, 0.5)", "box_cox(b, 0)"};
  auto program = FeatureProgram::Compile(spec, "p.toml");
  EXPECT_EQ(program.width(), 13u);
  FeatureOutput out;
  program.Evaluate(Batch({"a", "b"}, {{2, 4}}), out);
  ASSERT_FALSE(out.Failed(0)) << out.errors[0];
  const std::vector<double> expected = {
      2 * 2 + 1 + 1, 12, std::log(2.0), std::log10(4.0), 1, 8, 2, 2, 0.5, 9, 3, (std::sqrt(4.0) - 1) / 0.5,
      std::log(4.0)};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(out.matrix[i], expected[i], 1e-6) << spec.features[i];
  EXPECT_DOUBLE_EQ(out.derived[0][0], 6.0);
  EXPECT_EQ(program.DerivedIndex("d"), 0u);
  EXPECT_FALSE(program.DerivedIndex("nope").has_value());
}

TEST(Features, OneHotAndScaling) {
  FeatureSpec spec;
  spec.input_columns = {"code", "x"};
  spec.features = {"one_hot(code, 3)", "x"};
  spec.means = {0, 0, 0, 10};
  spec.scales = {1, 1, 0.5, 2};
  auto program = FeatureProgram::Compile(spec, "p.toml");
  EXPECT_EQ(program.width(), 4u);
  FeatureOutput out;
  program.Evaluate(Batch({"code", "x"}, {{2, 14}, {0, 10}, {3, 1}, {1.5, 1}}), out);
  EXPECT_EQ(std::vector<float>(out.matrix.begin(), out.matrix.begin() + 8),
            (std::vector<float>{0, 0, 2, 2, 1, 0, 0, 0}));
  EXPECT_NE(out.errors[2].find("category 3 is outside 0..2"), std::string::npos) << out.errors[2];
  EXPECT_TRUE(out.Failed(3)) << "1.5 is not a category";
}

TEST(Features, InvalidRowsFailAloneWithTheReason) {
  FeatureSpec spec;
  spec.input_columns = {"edu", "wealth", "d"};
  spec.derived = {{"financial_status", "edu * ln(wealth)"}};
  spec.features = {"financial_status", "1 / d", "sqrt(d - 5)"};
  auto program = FeatureProgram::Compile(spec, "p.toml");
  FeatureOutput out;
  program.Evaluate(Batch({"edu", "wealth", "d"},
                         {{0.5, 100, 9}, {0.5, -3, 9}, {0.5, NAN, 9}, {0.5, 100, 0}, {0.5, 100, 1}, {0.5, 1e308, 9}}),
                   out);
  EXPECT_FALSE(out.Failed(0)) << out.errors[0];
  EXPECT_NEAR(out.derived[0][0], 0.5 * std::log(100.0), 1e-12);
  EXPECT_EQ(out.errors[1], "feature 'financial_status': ln of non-positive value -3 in ln(wealth)");
  EXPECT_EQ(out.errors[2], "column 'wealth' is NULL");
  EXPECT_EQ(out.errors[3], "feature '1 / d': division by zero in 1 / d");
  EXPECT_EQ(out.errors[4], "feature 'sqrt(d - 5)': sqrt of negative value -4 in sqrt(d - 5)");
  EXPECT_FALSE(out.Failed(5)) << "a huge but finite input is fine: " << out.errors[5];
  ColumnBatch inf = Batch({"edu", "wealth", "d"}, {{0.5, INFINITY, 9}});
  program.Evaluate(inf, out);
  EXPECT_EQ(out.errors[0], "column 'wealth' is not a finite number (inf)");
}

// For models that take missing values: NULL is NaN all the way to the model, and
// only what is missing is let through.
TEST(Features, MissingAsNanLetsNullsReachTheModelAndStillFailsInvalidValues) {
  FeatureSpec spec;
  spec.input_columns = {"edu", "wealth", "d"};
  spec.derived = {{"financial_status", "edu * ln(wealth)"}};
  spec.features = {"financial_status", "d", "1 / d"};
  spec.missing_as_nan = true;
  auto program = FeatureProgram::Compile(spec, "p.toml");
  FeatureOutput out;
  program.Evaluate(
      Batch({"edu", "wealth", "d"}, {{0.5, 100, 2}, {0.5, NAN, 2}, {0.5, 100, NAN}, {0.5, -3, 2}, {0.5, 100, 0}}), out);
  EXPECT_FALSE(out.Failed(0)) << out.errors[0];
  EXPECT_FLOAT_EQ(out.matrix[1], 2.0f);
  EXPECT_FALSE(out.Failed(1)) << "NULL wealth is missing: " << out.errors[1];
  EXPECT_TRUE(std::isnan(out.matrix[3 * 1 + 0])) << "ln(missing) is missing";
  EXPECT_FLOAT_EQ(out.matrix[3 * 1 + 1], 2.0f);
  EXPECT_FALSE(out.Failed(2)) << out.errors[2];
  EXPECT_TRUE(std::isnan(out.matrix[3 * 2 + 1]));
  EXPECT_TRUE(std::isnan(out.matrix[3 * 2 + 2])) << "1 / missing is missing";
  EXPECT_EQ(out.errors[3], "feature 'financial_status': ln of non-positive value -3 in ln(wealth)");
  EXPECT_EQ(out.errors[4], "feature '1 / d': division by zero in 1 / d");
  ColumnBatch inf = Batch({"edu", "wealth", "d"}, {{0.5, INFINITY, 2}});
  program.Evaluate(inf, out);
  EXPECT_EQ(out.errors[0], "column 'wealth' is not a finite number (inf)") << "infinity is not missing";
}

TEST(Features, CompileErrorsNameFeatureAndPosition) {
  FeatureSpec spec;
  spec.input_columns = {"wealth"};
  spec.derived = {{"fs", "ln(welth)"}};
  spec.features = {"fs"};
  auto unknown = CompileError(spec);
  EXPECT_NE(unknown.find("p.toml: derived feature 'fs': unknown name 'welth'"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("position 4"), std::string::npos) << unknown;

  spec.derived = {{"fs", "ln(wealth"}};
  EXPECT_NE(CompileError(spec).find("expected ')'"), std::string::npos);
  spec.derived = {{"fs", "frob(wealth)"}};
  EXPECT_NE(CompileError(spec).find("unknown function 'frob'"), std::string::npos);
  spec.derived = {{"fs", "pow(wealth)"}};
  EXPECT_NE(CompileError(spec).find("pow takes 2 argument(s), got 1"), std::string::npos);
  spec.derived = {{"fs", "wealth +"}};
  EXPECT_NE(CompileError(spec).find("unexpected end"), std::string::npos);
  spec.derived = {{"fs", "2 * one_hot(wealth, 2)"}};
  EXPECT_NE(CompileError(spec).find("one_hot(...) must be a whole feature"), std::string::npos);
  spec.derived = {{"wealth", "1"}};
  EXPECT_NE(CompileError(spec).find("reuses a name"), std::string::npos);
  spec.derived = {};
  spec.features = {"wealth"};
  spec.means = {1, 2};
  spec.scales = {1, 2};
  EXPECT_NE(CompileError(spec).find("2 means and 2 scales, the features have 1 columns"), std::string::npos);
  spec.means = {1};
  spec.scales = {0};
  EXPECT_NE(CompileError(spec).find("not usable"), std::string::npos);
  spec.means = spec.scales = {};
  spec.features = {std::string(300, '(') + "wealth" + std::string(300, ')')};
  EXPECT_NE(CompileError(spec).find("nested too deeply"), std::string::npos);
  // Operator chains nest too, and each node keeps its text: both are bounded.
  std::string chain = "wealth";
  for (int i = 0; i < 1200; ++i) chain += "+wealth";
  spec.features = {chain};
  EXPECT_NE(CompileError(spec).find("more than 1000 operations in one expression"), std::string::npos);
  spec.features = {std::string(20000, ' ') + "wealth"};
  EXPECT_NE(CompileError(spec).find("expression longer than 10000 characters"), std::string::npos);
}

// Text features: SQL's NULL rules (|| propagates, concat skips, coalesce picks), case
// mapped per Unicode code point, quotes doubled inside literals.
TEST(TextFeatures, ConcatenateMapCaseAndFollowSqlNullRules) {
  FeatureSpec spec;
  spec.text_columns = {"subject", "body"};
  spec.text_features = {"lower(subject || ' ' || body)", "concat(upper(subject), '|', body)",
                        "coalesce(body, subject, 'none')", "trim('  it''s ' || coalesce(body, ''))"};
  const auto program = FeatureProgram::Compile(spec, "p.toml");
  EXPECT_EQ(program.width(), 0u);
  EXPECT_EQ(program.text_width(), 4u);
  ColumnBatch batch;
  batch.Reset({}, 3, {"subject", "body"});
  auto set = [&](size_t c, size_t r, const char* v) {
    batch.texts[c][r] = v;
    batch.text_nulls[c][r] = 0;
  };
  set(0, 0, "Disk FULL on İzmir");
  set(1, 0, "Straße ÉTÉ");
  set(0, 1, "Login");  // body NULL
  // row 2: both NULL
  FeatureOutput out;
  program.Evaluate(batch, out);
  ASSERT_EQ(out.texts.size(), 12u);
  EXPECT_EQ(out.texts[0], "disk full on izmir straße été");  // simple case mapping: İ -> i
  EXPECT_EQ(out.texts[1], "DISK FULL ON İZMIR|Straße ÉTÉ");
  EXPECT_EQ(out.texts[2], "Straße ÉTÉ");
  EXPECT_EQ(out.texts[3], "it's Straße ÉTÉ");
  EXPECT_FALSE(out.Failed(0));
  // Row 1: `subject || ' ' || body` is NULL, so the row fails naming that feature.
  EXPECT_EQ(out.errors[1], "text feature 'lower(subject || ' ' || body)' is NULL");
  EXPECT_EQ(out.texts[4 + 1], "LOGIN|");
  EXPECT_EQ(out.texts[4 + 2], "Login");
  EXPECT_TRUE(out.Failed(2));
}

TEST(TextFeatures, CompileErrorsNameFeatureAndPosition) {
  FeatureSpec spec;
  spec.text_columns = {"subject"};
  spec.text_features = {"lower(subjet)"};
  EXPECT_EQ(CompileError(spec),
            "p.toml: text feature 1: 'subjet' is not a text column ([source] text_columns) at position 7 in "
            "'lower(subjet)'");
  spec.text_features = {"subject || 'open"};
  EXPECT_NE(CompileError(spec).find("unterminated string literal"), std::string::npos);
  spec.text_features = {"reverse(subject)"};
  EXPECT_NE(CompileError(spec).find("unknown text function 'reverse'"), std::string::npos);
  spec.text_features = {"lower(subject, subject)"};
  EXPECT_NE(CompileError(spec).find("expected ')'"), std::string::npos);
  spec.text_features = {"subject +"};
  EXPECT_NE(CompileError(spec).find("unexpected '+'"), std::string::npos);
  std::string nested = "subject";
  for (int i = 0; i < 250; ++i) nested = "lower(" + nested + ")";
  spec.text_features = {nested};
  EXPECT_NE(CompileError(spec).find("nested too deeply"), std::string::npos);
  std::string chain = "subject";
  for (int i = 0; i < 300; ++i) chain += " || subject";
  spec.text_features = {chain};
  EXPECT_NE(CompileError(spec).find("more than 200 terms joined by ||"), std::string::npos);
  spec.text_features = {"subject"};
  spec.input_columns = {"subject"};
  EXPECT_NE(CompileError(spec).find("text column 'subject' is listed twice"), std::string::npos);
}

TEST(Features, DerivedFeaturesMayUseEarlierOnes) {
  FeatureSpec spec;
  spec.input_columns = {"x"};
  spec.derived = {{"double", "x * 2"}, {"quad", "double * 2"}};
  spec.features = {"quad"};
  auto program = FeatureProgram::Compile(spec, "p.toml");
  FeatureOutput out;
  program.Evaluate(Batch({"x"}, {{3}}), out);
  EXPECT_EQ(out.matrix[0], 12.0f);
  spec.derived = {{"quad", "double * 2"}, {"double", "x * 2"}};
  EXPECT_NE(CompileError(spec).find("unknown name 'double'"), std::string::npos);
}

}  // namespace
}  // namespace runnel::features
