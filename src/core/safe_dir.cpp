#include "runnel/core/safe_dir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "runnel/core/error.hpp"

namespace runnel {
namespace {

[[noreturn]] void Fail(const std::filesystem::path& path, std::string_view what) {
  throw Error(ErrorCode::Io, fmt::format("{}: {}: {}", path.string(), what, std::strerror(errno)));
}

// Closes a descriptor on scope exit.
struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& other) noexcept : fd(other.fd) { other.fd = -1; }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string TempName(std::string_view name) {
  std::random_device random;
  return fmt::format(".{}.runnel-{:08x}{:08x}", name, random(), random());
}

// Opens the entry `name` of the directory `dir` (path `path`) for `what` ("read",
// "chown") without following a link; fd -1 when there is no such entry. Throws
// Error(Io) unless it is a regular file with no other link: a second link to the inode
// may be a file of someone else's, linked in here.
Fd OpenOwnFile(int dir, const std::filesystem::path& path, std::string_view what) {
  Fd file{::openat(dir, path.filename().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)};
  if (file.fd < 0) {
    if (errno == ENOENT) return file;
    if (errno == ELOOP) {
      throw Error(ErrorCode::Io, fmt::format("{} is a symbolic link: refusing to {} it", path.string(), what));
    }
    Fail(path, "cannot open");
  }
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) Fail(path, "cannot stat");
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
    throw Error(ErrorCode::Io, fmt::format("{} is not a regular file of its own (links: {}): refusing to {} it",
                                           path.string(), st.st_nlink, what));
  }
  return file;
}

// Opens `name` relative to `dir` (AT_FDCWD: the working directory), which must be a
// directory and not a link; `path` names it in messages.
int OpenDirectory(int dir, const char* name, const std::filesystem::path& path) {
  const int fd = ::openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP || errno == ENOTDIR) {
      throw Error(ErrorCode::Io,
                  fmt::format("{} is a symbolic link or not a directory: refusing to use it", path.string()));
    }
    Fail(path, "cannot open the directory");
  }
  return fd;
}

}  // namespace

SafeDir SafeDir::Open(const std::filesystem::path& path) {
  return SafeDir(OpenDirectory(AT_FDCWD, path.c_str(), path), path);
}

SafeDir SafeDir::Sub(std::string_view name) const {
  const auto path = path_ / name;
  return SafeDir(OpenDirectory(fd_, std::string(name).c_str(), path), path);
}

SafeDir::~SafeDir() {
  if (fd_ >= 0) ::close(fd_);
}

SafeDir::SafeDir(SafeDir&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) {
  other.fd_ = -1;
}

void SafeDir::Write(std::string_view name, std::string_view content, mode_t mode,
                    const std::optional<FileOwner>& owner) const {
  const auto path = path_ / name;
  const std::string temp = TempName(name);
  Fd file{::openat(fd_, temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)};
  if (file.fd < 0) Fail(path, "cannot create a temporary file beside it");
  auto discard = [&](std::string_view what) {
    const int saved = errno;
    ::unlinkat(fd_, temp.c_str(), 0);
    errno = saved;
    Fail(path, what);
  };
  for (size_t written = 0; written < content.size();) {
    const ssize_t n = ::write(file.fd, content.data() + written, content.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      discard("cannot write");
    }
    written += static_cast<size_t>(n);
  }
  if (owner && ::fchown(file.fd, owner->uid, owner->gid) != 0) discard("cannot hand it to its owner");
  if (::fchmod(file.fd, mode) != 0) discard("cannot set its mode");
  if (::fsync(file.fd) != 0) discard("cannot flush");
  if (::renameat(fd_, temp.c_str(), fd_, std::string(name).c_str()) != 0) discard("cannot replace");
}

std::optional<std::string> SafeDir::Read(std::string_view name, size_t max_bytes) const {
  const auto path = path_ / name;
  const Fd file = OpenOwnFile(fd_, path, "read");
  if (file.fd < 0) return std::nullopt;
  std::string content;
  char buffer[65536];
  while (content.size() < max_bytes) {
    const ssize_t n = ::read(file.fd, buffer, std::min(sizeof(buffer), max_bytes - content.size()));
    if (n < 0) {
      if (errno == EINTR) continue;
      Fail(path, "cannot read");
    }
    if (n == 0) break;
    content.append(buffer, static_cast<size_t>(n));
  }
  return content;
}

void SafeDir::ChownEntry(std::string_view name, const FileOwner& owner) const {
  const auto path = path_ / name;
  const Fd file = OpenOwnFile(fd_, path, "chown");
  if (file.fd < 0) return;
  if (::fchown(file.fd, owner.uid, owner.gid) != 0) Fail(path, "cannot hand it to its owner");
}

void SafeDir::Chown(const FileOwner& owner) const {
  if (::fchown(fd_, owner.uid, owner.gid) != 0) Fail(path_, "cannot hand the directory to its owner");
}

void SafeDir::Chmod(mode_t mode) const {
  if (::fchmod(fd_, mode) != 0) Fail(path_, "cannot set the directory's mode");
}

uid_t SafeDir::owner_uid() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) Fail(path_, "cannot stat");
  return st.st_uid;
}

mode_t SafeDir::mode() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) Fail(path_, "cannot stat");
  return st.st_mode & 07777;
}

}  // namespace runnel
