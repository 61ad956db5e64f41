// File helpers of the snapshot store (store.cpp), shared with the writer (export.cpp).
#pragma once

#include <filesystem>
#include <string>

namespace runnel::snapshot {

// An owned file descriptor (closed on destruction, which drops its flock).
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FileDescriptor& operator=(FileDescriptor&&) = delete;
  FileDescriptor(const FileDescriptor&) = delete;
  ~FileDescriptor();
  int fd() const { return fd_; }
  int Release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// Opens `path` (never through a symbolic link; flags as open(2), O_CREAT makes it
// 0640) and checks it is a regular file. Throws Error(NotFound) / Error(Io).
FileDescriptor OpenRegular(const std::filesystem::path& path, int flags);
// flock(2), retried on EINTR; throws Error(Io).
void Flock(const FileDescriptor& file, int operation, const std::filesystem::path& path);
// Makes `dir` and its parents; refuses a symbolic link in its place.
void MakeDirectory(const std::filesystem::path& dir);
// fsyncs `temporary`, renames it to dir/name without replacing anything, fsyncs dir.
void PublishFile(const std::filesystem::path& dir, const std::filesystem::path& temporary, const std::string& name);
// "v<version>.duckdb"
std::string FileNameOf(int64_t version);

}  // namespace runnel::snapshot
