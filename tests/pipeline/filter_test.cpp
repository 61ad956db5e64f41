// The user filter language of batch jobs: what compiles to which SQL, and what is refused.
#include "runnel/pipeline/filter.hpp"

#include <gtest/gtest.h>

#include "runnel/core/error.hpp"

namespace runnel::pipeline {
namespace {

const std::map<std::string, std::string> kColumns = {{"age", "integer"}, {"name", "text"}, {"wealth", "real"}};

TEST(FilterTest, EmptyMeansEveryRow) {
  EXPECT_EQ(CompileFilter("", kColumns, 1).sql, "true");
  EXPECT_EQ(CompileFilter("   ", kColumns, 1).sql, "true");
}

TEST(FilterTest, ConditionsBecomeParameters) {
  auto f = CompileFilter("age >= 18 AND name = 'O''Brien' and wealth != -1.5e3", kColumns, 3);
  EXPECT_EQ(f.sql, "s.\"age\" >= $3::integer AND s.\"name\" = $4::text AND s.\"wealth\" <> $5::real");
  EXPECT_EQ(f.params, (std::vector<std::string>{"18", "O'Brien", "-1.5e3"}));
}

TEST(FilterTest, ResultFieldsAndNullTests) {
  EXPECT_EQ(CompileFilter("status is null", kColumns, 1).sql, "r.status IS NULL");
  EXPECT_EQ(CompileFilter("model_version IS NOT NULL and age<3", kColumns, 1).sql,
            "r.model_version IS NOT NULL AND s.\"age\" < $1::integer");
}

TEST(FilterTest, RefusesAnythingElseNamingTheOffset) {
  for (const char* bad : {"nope = 1", "age = ", "age == 1", "age = 1 or age = 2", "age = 1; drop table x", "age = abc",
                          "name = 'open", "age is maybe", "(age = 1)", "age = 1 and"}) {
    try {
      CompileFilter(bad, kColumns, 1);
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidInput);
      EXPECT_NE(std::string(e.what()).find("filter at offset"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace runnel::pipeline
