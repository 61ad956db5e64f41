// Reading whole files: bytes as they are, and errors that name the file.
#include "runnel/core/file.hpp"

#include <gtest/gtest.h>

#include "../support/temp_dir.hpp"
#include "runnel/core/error.hpp"

namespace runnel {
namespace {

TEST(FileTest, ReadsEveryByte) {
  testing::TempDir dir("runnel-file");
  const std::string bytes("a\0b\r\n\xff", 6);
  testing::WriteFile(dir.path() / "f.bin", bytes);
  EXPECT_EQ(ReadFileBytes(dir.path() / "f.bin"), bytes);
}

TEST(FileTest, MissingFilesAreNamed) {
  try {
    ReadFileBytes("/nonexistent/model.h5", "the model file");
    ADD_FAILURE() << "must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_STREQ(e.what(), "/nonexistent/model.h5: no such file (the model file)");
  }
  EXPECT_THROW(ReadFileBytes("/nonexistent/x"), Error);
  testing::TempDir dir("runnel-file");
  try {
    ReadFileBytes(dir.path());
    ADD_FAILURE() << "a directory is no file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace runnel
