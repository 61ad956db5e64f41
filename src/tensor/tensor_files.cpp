#include "runnel/tensor/tensor_files.hpp"

#include <fmt/format.h>

#include <fmt/ranges.h>

#include <cstring>

#include "runnel/core/file.hpp"
#include "runnel/tensor/onnx_import.hpp"

namespace runnel::tensor {
namespace {

constexpr std::string_view kMagic = "\x93NUMPY";
constexpr size_t kMaxHeader = 1 << 16;  // NumPy's own readers refuse more than 10,000

[[noreturn]] void Fail(const std::string& source, const std::string& what) {
  throw Error(ErrorCode::Model, fmt::format("{}: {}", source, what));
}

// NumPy's descr for each element type ('|' for one-byte types: no byte order).
struct Descr {
  DataType type;
  std::string_view descr;
};
constexpr Descr kDescrs[] = {
    {DataType::kFloat, "<f4"}, {DataType::kDouble, "<f8"}, {DataType::kInt64, "<i8"}, {DataType::kInt32, "<i4"},
    {DataType::kInt8, "|i1"},  {DataType::kUint8, "|u1"},  {DataType::kBool, "|b1"},
};

DataType TypeOfDescr(const std::string& descr, const std::string& source) {
  for (const auto& d : kDescrs) {
    if (descr == d.descr) return d.type;
  }
  // '<' and '=' are this machine's order; one-byte types may be written with either.
  std::string normalized = descr;
  if (!normalized.empty() && (normalized[0] == '=' || normalized[0] == '<' || normalized[0] == '|')) {
    for (const auto& d : kDescrs) {
      if (normalized.substr(1) == d.descr.substr(1)) return d.type;
    }
  }
  throw UnsupportedError(
      fmt::format("{}: element type '{}' (float32/64, int8/32/64, uint8 and bool are read)", source, descr));
}

// "2, 3" or "4," or "" (a scalar).
Shape ShapeOf(std::string_view text, const std::string& source) {
  Shape shape;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty() && comma == std::string_view::npos) break;  // after the trailing comma
    if (item.empty() || item.size() > 18 || item.find_first_not_of("0123456789") != std::string_view::npos)
      Fail(source, fmt::format("shape '({})' is not a tuple of sizes", text));
    shape.push_back(std::stoll(std::string(item)));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return shape;
}

// The text after `'key':` and any spaces, or Fail.
std::string_view ValueOf(std::string_view header, std::string_view key, const std::string& source) {
  const std::string quoted = fmt::format("'{}':", key);
  const size_t at = header.find(quoted);
  if (at == std::string_view::npos) Fail(source, fmt::format("the .npy header has no '{}'", key));
  std::string_view rest = header.substr(at + quoted.size());
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  return rest;
}

// The text from `rest`'s first character (which must be `open`) to `close`.
std::string_view Delimited(std::string_view rest, char open, char close, std::string_view key,
                           const std::string& source) {
  const size_t end = rest.find(close, 1);
  if (rest.empty() || rest.front() != open || end == std::string_view::npos)
    Fail(source, fmt::format("the .npy header's '{}' is malformed", key));
  return rest.substr(1, end - 1);
}

struct Header {
  std::string descr;
  std::string_view shape;
  bool fortran = false;
};

// The header dictionary: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
Header ParseHeader(std::string_view text, const std::string& source) {
  Header h;
  h.descr = std::string(Delimited(ValueOf(text, "descr", source), '\'', '\'', "descr", source));
  h.fortran = ValueOf(text, "fortran_order", source).starts_with("True");
  h.shape = Delimited(ValueOf(text, "shape", source), '(', ')', "shape", source);
  return h;
}

}  // namespace

Tensor LoadNpy(std::string_view bytes, const std::string& source) {
  if (!bytes.starts_with(kMagic) || bytes.size() < 10) Fail(source, "not a .npy file");
  const auto major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8;
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) Fail(source, "truncated .npy header");
    for (int i = 3; i >= 0; --i) header_len = header_len << 8 | static_cast<uint8_t>(bytes[8 + i]);
    offset = 12;
  } else {
    throw UnsupportedError(fmt::format("{}: .npy format version {}", source, major));
  }
  if (header_len > kMaxHeader || header_len > bytes.size() - offset)
    Fail(source, fmt::format("its header claims {} bytes, the file has {} after the preamble", header_len,
                             bytes.size() - offset));
  const Header header = ParseHeader(bytes.substr(offset, header_len), source);
  const DataType type = TypeOfDescr(header.descr, source);
  Shape shape = ShapeOf(header.shape, source);
  if (header.fortran && shape.size() > 1) throw UnsupportedError(fmt::format("{}: Fortran-ordered arrays", source));
  size_t count = 0;
  try {
    count = ElementCount(shape);
  } catch (const Error& e) {
    Fail(source, e.what());
  }
  const std::string_view data = bytes.substr(offset + header_len);
  if (data.size() != count * ElementSize(type))
    Fail(source, fmt::format("holds {} bytes of data, its shape {} needs {}", data.size(), ShapeText(shape),
                             count * ElementSize(type)));
  Tensor t(type, std::move(shape));
  if (!data.empty()) std::memcpy(t.bytes().data(), data.data(), data.size());
  if (type == DataType::kBool) {
    for (auto& b : t.bytes()) b = b == std::byte{0} ? std::byte{0} : std::byte{1};
  }
  return t;
}

std::string SaveNpy(const Tensor& t) {
  std::string_view descr;
  for (const auto& d : kDescrs) {
    if (d.type == t.type()) descr = d.descr;
  }
  if (descr.empty()) throw UnsupportedError("a .npy file of strings");
  std::string shape = fmt::format("{}", fmt::join(t.shape(), ", "));
  if (t.rank() == 1) shape += ",";  // (4,): a tuple of one
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, shape);
  // Padded with spaces and a newline so that the data starts at a multiple of 64.
  const size_t total = (10 + header.size() + 1 + 63) / 64 * 64;
  header.append(total - 10 - header.size() - 1, ' ');
  header.push_back('\n');
  std::string out(kMagic);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char*>(t.bytes().data()), t.bytes().size());
  return out;
}

Tensor LoadTensorFile(const std::filesystem::path& path) {
  const std::string bytes = ReadFileBytes(path, "the tensor file");
  if (path.extension() == ".npy") return LoadNpy(bytes, path.string());
  return LoadOnnxTensor(bytes, path.string());
}

}  // namespace runnel::tensor
