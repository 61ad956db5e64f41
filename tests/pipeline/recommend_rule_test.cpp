// The recommendation rule Runnel evaluates itself: which rules it takes, SQL's
// three-valued logic, and — against a real PostgreSQL — the same answers as SQL for
// random rules over every column type of the subset and awkward values.
#include "runnel/pipeline/recommend_rule.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cctype>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "../support/pg_environment.hpp"
#include "../support/random.hpp"

namespace runnel::pipeline {
namespace {

constexpr double kNull = std::numeric_limits<double>::quiet_NaN();  // placeholder; nulls are flagged

// Evaluates `rule` for one product and one request given as name -> value (nullopt: NULL).
bool Match(const RecommendRule& rule, const std::map<std::string, std::optional<double>>& p,
           const std::map<std::string, std::optional<double>>& r) {
  auto side = [](const std::vector<std::string>& names, const std::map<std::string, std::optional<double>>& values,
                 std::vector<double>& v, std::vector<uint8_t>& n) {
    for (const auto& name : names) {
      const auto& value = values.at(name);
      v.push_back(value.value_or(kNull));
      n.push_back(value ? 0 : 1);
    }
  };
  std::vector<double> pv, rv;
  std::vector<uint8_t> pn, rn;
  side(rule.product_columns(), p, pv, pn);
  side(rule.request_columns(), r, rv, rn);
  return rule.Matches({pv.data(), pn.data()}, {rv.data(), rn.data()});
}

RecommendRule MustParse(const std::string& text) {
  std::string why;
  auto rule = RecommendRule::Parse(text, &why);
  if (!rule) ADD_FAILURE() << text << ": " << why;
  return rule ? std::move(*rule) : std::move(*RecommendRule::Parse("true"));
}

TEST(RecommendRuleTest, TakesTheNeedsRuleAndNamesItsColumns) {
  auto rule = MustParse(
      "(p.income = r.income_investment OR p.accumulation = r.accumulation_investment) AND p.risk <= r.risk_propensity");
  EXPECT_EQ(rule.product_columns(), (std::vector<std::string>{"income", "accumulation", "risk"}));
  EXPECT_EQ(rule.request_columns(),
            (std::vector<std::string>{"income_investment", "accumulation_investment", "risk_propensity"}));
  const std::map<std::string, std::optional<double>> product = {{"income", 1}, {"accumulation", 0}, {"risk", 0.25}};
  EXPECT_TRUE(
      Match(rule, product, {{"income_investment", 1}, {"accumulation_investment", 1}, {"risk_propensity", 0.3}}));
  EXPECT_FALSE(
      Match(rule, product, {{"income_investment", 0}, {"accumulation_investment", 1}, {"risk_propensity", 0.3}}));
  EXPECT_FALSE(
      Match(rule, product, {{"income_investment", 1}, {"accumulation_investment", 1}, {"risk_propensity", 0.2}}));
}

TEST(RecommendRuleTest, FoldsUnquotedNamesAndKeepsQuotedOnes) {
  auto rule = MustParse(R"(P.RISK < 1 aNd p."Risk" >= r."a""b" or NOT r.x IS NOT NULL)");
  EXPECT_EQ(rule.product_columns(), (std::vector<std::string>{"risk", "Risk"}));
  EXPECT_EQ(rule.request_columns(), (std::vector<std::string>{"a\"b", "x"}));
}

TEST(RecommendRuleTest, LeavesEverythingElseToPostgres) {
  for (const char* text : {
           "p.risk <= r.risk_propensity + 0.1",  // arithmetic
           "abs(p.risk) < 1",                    // a function
           "p.risk::real < 1",                   // a cast
           "q.risk < 1",                         // another relation
           "risk < 1",                           // unqualified
           "1 = 1",                              // two literals: numeric comparison
           "p.name = 'x'",                       // text
           "p.id IN (1, 2)",                     // IN
           "p.risk BETWEEN 0 AND 1",             // BETWEEN
           "p.risk < (SELECT 1)",                // a subquery
           "p.risk < 1 -- comment",              // a comment
           "p.income = 3.00000000000000001",     // a decimal a double cannot tell from 3
           "p.income = 9007199254740993",        // an integer past 2^53
           "p.risk < 1e400",                     // out of double range
           "p.risk <=> 1",                       // another operator
           "p.risk<-1",                          // PostgreSQL reads "<-" as one operator
           "(p.risk) < 1",                       // a parenthesised operand
           "p.risk IS NULL IS NULL",             //
           "",                                   // empty
           "(p.risk < 1",                        // unbalanced
           "p.risk < 1)",                        //
           "p.\"\" < 1",                         // empty quoted name
           "p.and < 1",                          // a keyword as a name
       }) {
    std::string why;
    EXPECT_FALSE(RecommendRule::Parse(text, &why)) << text;
    EXPECT_FALSE(why.empty()) << text;
  }
  std::string deep(150, '(');
  deep += "p.a < 1" + std::string(150, ')');
  EXPECT_FALSE(RecommendRule::Parse(deep));
  std::string wide = "p.a < 1";
  for (int i = 0; i < 600; ++i) wide += " AND p.a < 1";
  EXPECT_FALSE(RecommendRule::Parse(wide)) << "more than 1,000 terms";
}

TEST(RecommendRuleTest, ThreeValuedLogicAsInSql) {
  const std::map<std::string, std::optional<double>> p = {{"a", std::nullopt}, {"b", 1}};
  const std::map<std::string, std::optional<double>> r = {};
  EXPECT_FALSE(Match(MustParse("p.a = 1"), p, r));
  EXPECT_FALSE(Match(MustParse("NOT p.a = 1"), p, r)) << "NOT NULL is NULL";
  EXPECT_TRUE(Match(MustParse("p.a = 1 OR p.b = 1"), p, r));
  EXPECT_FALSE(Match(MustParse("NOT (p.a = 1 AND p.b = 1)"), p, r)) << "NULL AND TRUE is NULL";
  EXPECT_TRUE(Match(MustParse("NOT (p.a = 1 AND p.b = 2)"), p, r)) << "NULL AND FALSE is FALSE";
  EXPECT_FALSE(Match(MustParse("NOT (p.a = 1 OR p.b = 2)"), p, r)) << "NULL OR FALSE is NULL";
  EXPECT_TRUE(Match(MustParse("p.a IS NULL AND p.b IS NOT NULL"), p, r));
  EXPECT_TRUE(Match(MustParse("TRUE"), p, r));
  EXPECT_FALSE(Match(MustParse("false OR FALSE"), p, r));
}

TEST(RecommendRuleTest, NaNIsEqualToItselfAndAboveEverything) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::map<std::string, std::optional<double>> p = {{"a", nan}, {"b", nan}, {"z", -0.0}};
  EXPECT_TRUE(Match(MustParse("p.a = p.b"), p, {}));
  EXPECT_TRUE(Match(MustParse("p.a > 1e308"), p, {}));
  EXPECT_FALSE(Match(MustParse("p.a < 1e308"), p, {}));
  EXPECT_TRUE(Match(MustParse("p.z = 0 AND p.z >= -0.0"), p, {}));
  EXPECT_TRUE(Match(MustParse("p.z <> -1.5e0 AND p.z > -.5"), p, {}));
}

// Random rules of the subset over random rows of every type it takes, evaluated by
// Runnel and by PostgreSQL: the same (request, product) pairs must match.
class RecommendRuleAgainstPostgresTest : public runnel::testing::PostgresTest {};

TEST_F(RecommendRuleAgainstPostgresTest, RandomRulesMatchWhatSqlMatches) {
  auto conn = Connect();
  const std::vector<std::pair<std::string, std::string>> columns = {
      {"s", "smallint"}, {"i", "integer"}, {"b", "bigint"}, {"f", "real"}, {"d", "double precision"}};
  std::string definition = "id integer";
  for (const auto& [name, type] : columns) definition += ", " + name + " " + type;
  conn.Exec(fmt::format("CREATE TABLE p ({0}); CREATE TABLE r ({0})", definition));
  std::mt19937_64 rng(runnel::testing::TestSeed());
  // Values where int/real/double meet: 2^24 + 1 is not a real, 0.1 differs as real and double.
  const std::vector<std::string> integers = {
      "NULL", "0", "1", "-1", "2", "3", "16777217", "-2147483648", "9007199254740991"};
  const std::vector<std::string> smallints = {"NULL", "0", "1", "-1", "2", "3", "-32768", "32767"};
  const std::vector<std::string> floats = {"NULL", "0",     "-0",         "1",     "-1",         "0.1",
                                           "0.5",  "2.5",   "16777217",   "'NaN'", "'Infinity'", "'-Infinity'",
                                           "3",    "1e-40", "0.30000001", "0.3"};
  auto pick = [&](const std::vector<std::string>& from) {
    return from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(rng)];
  };
  for (const char* table : {"p", "r"}) {
    for (int id = 1; id <= 30; ++id) {
      std::string values = std::to_string(id);
      for (const auto& [name, type] : columns) {
        values += ", " + pick(type == "real" || type == "double precision" ? floats
                              : type == "smallint"                         ? smallints
                              : type == "bigint"                           ? integers
                                                 : std::vector<std::string>(integers.begin(), integers.end() - 1));
      }
      conn.Exec(fmt::format("INSERT INTO {} VALUES ({})", table, values));
    }
  }
  // Each table's rows as doubles, in id order, read in their own binary types.
  auto read = [&](const char* table) {
    std::map<int64_t, std::map<std::string, std::optional<double>>> rows;
    auto result = conn.Exec(fmt::format("SELECT id, s, i, b, f, d FROM {} ORDER BY id", table), postgres::Params());
    for (int row = 0; row < result.rows(); ++row) {
      auto& values = rows[result.Get<int64_t>(row, 0)];
      for (size_t c = 0; c < columns.size(); ++c)
        values[columns[c].first] = result.GetOptional<double>(row, int(c) + 1);
    }
    return rows;
  };
  const auto products = read("p"), requests = read("r");

  const std::vector<std::string> literals = {"0",   "1",        "-1",  "0.1", "0.5",  "2.5",
                                             "1e1", "16777217", "3.0", ".5",  "-0.0", "0.3"};
  const std::vector<std::string> ops = {"=", "<>", "!=", "<", "<=", ">", ">="};
  std::function<std::string(int)> rule = [&](int depth) -> std::string {
    auto operand = [&](bool allow_literal) {
      const int kind = std::uniform_int_distribution<int>(0, allow_literal ? 2 : 1)(rng);
      if (kind == 2) return pick(literals);
      return std::string(kind == 0 ? "p." : "r.") + columns[std::uniform_int_distribution<size_t>(0, 4)(rng)].first;
    };
    const int choice = std::uniform_int_distribution<int>(0, depth > 0 ? 9 : 5)(rng);
    switch (choice) {
      case 0: return operand(false) + (std::bernoulli_distribution(0.5)(rng) ? " IS NULL" : " IS NOT NULL");
      case 1: return std::bernoulli_distribution(0.5)(rng) ? "TRUE" : "FALSE";
      case 6: return "NOT " + rule(depth - 1);
      case 7: return "(" + rule(depth - 1) + ")";
      case 8: return "(" + rule(depth - 1) + " AND " + rule(depth - 1) + ")";
      case 9: return "(" + rule(depth - 1) + " OR " + rule(depth - 1) + ")";
      default: {
        const bool literal_left = std::bernoulli_distribution(0.2)(rng);
        const std::string lhs = literal_left ? pick(literals) : operand(true);
        const std::string rhs =
            operand(!(lhs[0] == '-' || std::isdigit(static_cast<unsigned char>(lhs[0])) || lhs[0] == '.'));
        return lhs + " " + pick(ops) + " " + rhs;
      }
    }
  };
  for (int round = 0; round < 300; ++round) {
    const std::string text = rule(3);
    std::string why;
    auto parsed = RecommendRule::Parse(text, &why);
    ASSERT_TRUE(parsed) << text << ": " << why;
    std::set<std::pair<int64_t, int64_t>> expected, actual;
    auto sql = conn.Exec(fmt::format("SELECT r.id, p.id FROM r, p WHERE {}", text), postgres::Params());
    for (int row = 0; row < sql.rows(); ++row) expected.emplace(sql.Get<int64_t>(row, 0), sql.Get<int64_t>(row, 1));
    for (const auto& [request_id, request] : requests) {
      for (const auto& [product_id, product] : products) {
        if (Match(*parsed, product, request)) actual.emplace(request_id, product_id);
      }
    }
    ASSERT_EQ(actual, expected) << text;
  }
}

}  // namespace
}  // namespace runnel::pipeline
