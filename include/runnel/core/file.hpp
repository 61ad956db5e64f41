// Reading a whole file (a model, a schema) into memory.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace runnel {

// The file's bytes. Throws Error(Io) "<path>: cannot open <what>" when it cannot be
// opened ("<path>: cannot open" when `what` is empty) and "<path>: read error" when a
// read fails.
std::string ReadFileBytes(const std::filesystem::path& path, std::string_view what = {});

}  // namespace runnel
