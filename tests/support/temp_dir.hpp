// A directory under /tmp removed with everything in it when the object dies.
#pragma once

#include <filesystem>
#include <string>

namespace runnel::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "runnel-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  // Makes the directory world-traversable (an unprivileged server user must enter it).
  void OpenToAll() const;

 private:
  std::filesystem::path path_;
};

// Writes a whole file, throwing std::runtime_error on failure.
void WriteFile(const std::filesystem::path& path, const std::string& content);

}  // namespace runnel::testing
