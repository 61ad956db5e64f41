#include "runnel/core/file.hpp"

#include <fmt/format.h>

#include <fstream>
#include <iterator>

#include "runnel/core/error.hpp"

namespace runnel {

std::string ReadFileBytes(const std::filesystem::path& path, std::string_view what) {
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
