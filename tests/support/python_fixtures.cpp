#include "python_fixtures.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "shared_paths.hpp"

namespace runnel::testing {

std::vector<std::vector<float>> ReadCsv(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<std::vector<float>> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<float> row;
    std::stringstream fields(line);
    std::string field;
    while (std::getline(fields, field, ',')) row.push_back(std::strtof(field.c_str(), nullptr));  // "nan" too
    rows.push_back(row);
  }
  return rows;
}

PythonFixtures::PythonFixtures(const std::string& script, const std::string& arguments) : dir_("runnel-fixtures") {
  const std::string command = fmt::format("/usr/bin/python3 {}/tests/model/{} {} {}", RUNNEL_SOURCE_DIR, script,
                                          dir_.path().string(), arguments);
  const int status = std::system(command.c_str());
  made_ = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  missing_ = WIFEXITED(status) && WEXITSTATUS(status) == 77;
}

bool PythonFixtures::Ready(const std::string& packages) const {
  if (missing_ && !InCi()) {
    std::cout << "[  SKIPPED ] " << packages << " not installed (scripts/install-deps.sh test installs it)\n";
    return false;
  }
  EXPECT_TRUE(made_) << "the fixture script failed (CI needs " << packages << ")";
  return made_;
}

}  // namespace runnel::testing
