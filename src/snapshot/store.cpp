// Versions of a pipeline's snapshots on disk: listing, publishing, reader locks, pruning.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "runnel/core/error.hpp"
#include "runnel/snapshot/snapshot.hpp"
#include "store_files.hpp"

namespace runnel::snapshot {

namespace fs = std::filesystem;

std::optional<int64_t> VersionOfFileName(std::string_view name) {
  constexpr std::string_view kSuffix = ".duckdb";
  if (name.size() <= 1 + kSuffix.size() || name.front() != 'v' || !name.ends_with(kSuffix)) return std::nullopt;
  const std::string_view digits = name.substr(1, name.size() - 1 - kSuffix.size());
  if (digits.empty() || digits.size() > 15 || digits.front() == '0') return std::nullopt;
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  int64_t version = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), version);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return version;
}

std::string FileNameOf(int64_t version) {
  return fmt::format("v{}.duckdb", version);
}

FileDescriptor::~FileDescriptor() {
  if (fd_ >= 0) ::close(fd_);
}

FileDescriptor OpenRegular(const fs::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT) throw Error(ErrorCode::NotFound, fmt::format("{}: no such file", path.string()));
    throw Error(ErrorCode::Io, fmt::format("{}: {}", path.string(), std::strerror(error)));
  }
  FileDescriptor file(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    throw Error(ErrorCode::Io, fmt::format("{}: not a regular file", path.string()));
  }
  return file;
}

void Flock(const FileDescriptor& file, int operation, const fs::path& path) {
  while (::flock(file.fd(), operation) != 0) {
    if (errno == EINTR) continue;
    throw Error(ErrorCode::Io, fmt::format("{}: lock: {}", path.string(), std::strerror(errno)));
  }
}

void SyncPath(const fs::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) throw Error(ErrorCode::Io, fmt::format("{}: {}", path.string(), std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0) throw Error(ErrorCode::Io, fmt::format("{}: fsync: {}", path.string(), std::strerror(error)));
}

void PublishFile(const fs::path& dir, const fs::path& temporary, const std::string& name) {
  if (::chmod(temporary.c_str(), 0640) != 0) {
    throw Error(ErrorCode::Io, fmt::format("{}: chmod: {}", temporary.string(), std::strerror(errno)));
  }
  SyncPath(temporary, O_RDONLY);
  // RENAME_NOREPLACE: a version, once published, is never replaced.
  if (::renameat2(AT_FDCWD, temporary.c_str(), AT_FDCWD, (dir / name).c_str(), RENAME_NOREPLACE) != 0) {
    throw Error(ErrorCode::Io, fmt::format("{}: publishing {}: {}", (dir / name).string(),
                                           temporary.filename().string(), std::strerror(errno)));
  }
  SyncPath(dir, O_RDONLY | O_DIRECTORY);
}

void MakeDirectory(const fs::path& dir) {
  std::error_code ec;
  const bool made = fs::create_directories(dir, ec);
  if (ec) throw Error(ErrorCode::Io, fmt::format("{}: {}", dir.string(), ec.message()));
  // Snapshots hold every client's requests: not for other local users.
  if (made) fs::permissions(dir, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec, ec);
  if (fs::symlink_status(dir).type() != fs::file_type::directory) {
    throw Error(ErrorCode::Io, fmt::format("{}: not a directory (a symbolic link is refused)", dir.string()));
  }
}

namespace {

// Whether another process holds a POSIX (fcntl) lock on the file: DuckDB locks the
// databases it opens that way, read-only ones with a read lock.
bool LockedByAnotherProcess(const FileDescriptor& file) {
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  if (::fcntl(file.fd(), F_GETLK, &probe) != 0) return true;  // cannot tell: keep it
  return probe.l_type != F_UNLCK;
}

}  // namespace

SnapshotStore::SnapshotStore(fs::path root, std::string pipeline)
    : dir_(std::move(root) / pipeline), pipeline_(std::move(pipeline)) {}

std::vector<SnapshotInfo> SnapshotStore::List() const {
  std::vector<SnapshotInfo> versions;
  std::error_code ec;
  if (fs::symlink_status(dir_, ec).type() != fs::file_type::directory) return versions;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    auto version = VersionOfFileName(entry.path().filename().string());
    if (!version || entry.symlink_status().type() != fs::file_type::regular) continue;
    struct stat st {};
    if (::lstat(entry.path().c_str(), &st) != 0) continue;  // pruned meanwhile
    SnapshotInfo info;
    info.version = *version;
    info.path = entry.path();
    info.bytes = st.st_size;
    info.created = std::chrono::system_clock::time_point(std::chrono::seconds(st.st_mtim.tv_sec) +
                                                         std::chrono::nanoseconds(st.st_mtim.tv_nsec));
    versions.push_back(std::move(info));
  }
  if (ec) throw Error(ErrorCode::Io, fmt::format("{}: {}", dir_.string(), ec.message()));
  std::sort(versions.begin(), versions.end(), [](const auto& a, const auto& b) { return a.version < b.version; });
  return versions;
}

Reader::Reader(Reader&& other) noexcept : fd_(other.fd_), info_(std::move(other.info_)) {
  other.fd_ = -1;
}

Reader::~Reader() {
  if (fd_ >= 0) ::close(fd_);  // releases the shared lock
}

Reader SnapshotStore::Open(std::optional<int64_t> version) const {
  // A version pruned between the listing and the lock is looked up again.
  for (int attempt = 0; attempt < 5; ++attempt) {
    const auto versions = List();
    const SnapshotInfo* chosen = nullptr;
    for (const auto& info : versions) {
      if (!version || info.version == *version) chosen = &info;
    }
    if (chosen == nullptr) {
      if (version) {
        throw Error(ErrorCode::NotFound,
                    fmt::format("pipeline {} has no snapshot version {} in {}", pipeline_, *version, dir_.string()));
      }
      throw Error(ErrorCode::NotFound,
                  fmt::format("pipeline {} has no snapshot in {} (runnel snapshot create)", pipeline_, dir_.string()));
    }
    FileDescriptor file = [&] {
      try {
        return OpenRegular(chosen->path, O_RDONLY);
      } catch (const Error& e) {
        if (e.code() != ErrorCode::NotFound) throw;
        return FileDescriptor(-1);
      }
    }();
    if (file.fd() < 0) continue;
    Flock(file, LOCK_SH, chosen->path);
    struct stat st {};
    if (::fstat(file.fd(), &st) != 0 || st.st_nlink == 0) continue;  // removed before we held it
    return Reader(file.Release(), *chosen);
  }
  throw Error(ErrorCode::Unavailable, fmt::format("{}: versions kept changing while opening one", dir_.string()));
}

std::vector<int64_t> SnapshotStore::Prune(int keep) const {
  std::vector<int64_t> removed;
  const auto versions = List();
  const size_t kept = static_cast<size_t>(std::max(keep, 1));
  if (versions.size() <= kept) return removed;
  for (size_t i = 0; i + kept < versions.size(); ++i) {
    const auto& info = versions[i];
    try {
      FileDescriptor file = OpenRegular(info.path, O_RDONLY);
      if (::flock(file.fd(), LOCK_EX | LOCK_NB) != 0 || LockedByAnotherProcess(file)) {
        spdlog::info("snapshot {} v{}: kept, a reader has it open", pipeline_, info.version);
        continue;
      }
      if (::unlink(info.path.c_str()) != 0 && errno != ENOENT) {
        throw Error(ErrorCode::Io, fmt::format("{}: {}", info.path.string(), std::strerror(errno)));
      }
      removed.push_back(info.version);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::NotFound) throw;
    }
  }
  return removed;
}

}  // namespace runnel::snapshot
