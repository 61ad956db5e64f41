#include "runnel/core/file.hpp"

#include <fmt/format.h>

#include <fstream>
#include <iterator>

#include "runnel/core/error.hpp"

namespace runnel {

std::string ReadFileBytes(const std::filesystem::path& path, std::string_view what) {
  const std::string subject = what.empty() ? std::string() : fmt::format(" ({})", what);
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (status.type() == std::filesystem::file_type::not_found) {
    throw Error(ErrorCode::NotFound, fmt::format("{}: no such file{}", path.string(), subject));
  }
  if (status.type() == std::filesystem::file_type::directory) {
    throw Error(ErrorCode::InvalidInput, fmt::format("{}: is a directory, not a file{}", path.string(), subject));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorCode::Io, what.empty() ? fmt::format("{}: cannot open", path.string())
                                            : fmt::format("{}: cannot open {}", path.string(), what));
  }
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(ErrorCode::Io, fmt::format("{}: read error", path.string()));
  return bytes;
}

}  // namespace runnel
