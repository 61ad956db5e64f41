// Files in a directory that another (less privileged) user controls, handled so that
// a symbolic link, a hard link or a swapped entry planted there cannot redirect a
// write, chown, chmod or read by root to a file elsewhere: every operation is relative
// to a directory descriptor opened with O_NOFOLLOW, files are written to a new
// temporary file (O_CREAT|O_EXCL|O_NOFOLLOW), owned and moded through its descriptor,
// then renamed over the name (which replaces a planted link itself, never its target),
// and reads refuse anything but a regular file.
//
// Thread safety: a SafeDir may be used from one thread at a time. Errors: Error(Io)
// naming the path and the reason.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace runnel {

struct FileOwner {
  uid_t uid = 0;
  gid_t gid = 0;
};

class SafeDir {
 public:
  // Opens `path`, which must be a directory and not a symbolic link.
  static SafeDir Open(const std::filesystem::path& path);
  // Opens the entry `name` of this directory, which must be a directory, not a link.
  SafeDir Sub(std::string_view name) const;
  ~SafeDir();
  SafeDir(SafeDir&& other) noexcept;
  SafeDir& operator=(SafeDir&&) = delete;
  SafeDir(const SafeDir&) = delete;

  // Replaces the file `name` with `content` (mode, and owner when given), atomically.
  void Write(std::string_view name, std::string_view content, mode_t mode,
             const std::optional<FileOwner>& owner = std::nullopt) const;
  // The contents of the regular file `name` (at most `max_bytes`); nullopt when there is
  // no such entry. Throws Error(Io) when it is a link or anything but a regular file.
  std::optional<std::string> Read(std::string_view name, size_t max_bytes = 1 << 20) const;
  // Owner and mode of an existing entry, without following it; no-op when absent.
  void ChownEntry(std::string_view name, const FileOwner& owner) const;
  // Owner and mode of the directory itself.
  void Chown(const FileOwner& owner) const;
  void Chmod(mode_t mode) const;
  uid_t owner_uid() const;
  mode_t mode() const;
  const std::filesystem::path& path() const { return path_; }

 private:
  SafeDir(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::filesystem::path path_;
};

}  // namespace runnel
