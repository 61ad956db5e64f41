#include "hdf5_file.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "runnel/core/error.hpp"
#include "runnel/model/model.hpp"

namespace runnel::model {

// libhdf5 (Debian builds it without thread safety) is serialised behind one lock, and
// its error stack printing is turned off: we report errors ourselves.
std::mutex& Hdf5Mutex() {
  static std::mutex mutex;
  return mutex;
}

namespace {

constexpr size_t kMaxElements = size_t{1} << 26;  // 256 MiB of float32 per tensor
constexpr size_t kMaxRank = 4;

void SilenceHdf5() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

}  // namespace

Hdf5File::Hdf5File(std::string_view bytes, std::string source) : source_(std::move(source)) {
  SilenceHdf5();
  std::lock_guard lock(Hdf5Mutex());
  Hid fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.valid() || H5Pset_fapl_core(fapl.get(), 1 << 16, /*backing_store=*/0) < 0 ||
      H5Pset_file_image(fapl.get(), const_cast<char*>(bytes.data()), bytes.size()) < 0) {
    throw Error(ErrorCode::Model, fmt::format("{}: cannot set up an HDF5 reader", source_));
  }
  // The name must not be a real file: the core driver would read that instead.
  const std::string image_name = "runnel-memory-image:" + source_;
  file_ = Hid(H5Fopen(image_name.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
  if (!file_.valid()) throw Error(ErrorCode::Model, fmt::format("{}: not a readable HDF5 file", source_));
}

Hdf5File::~Hdf5File() {
  std::lock_guard lock(Hdf5Mutex());
  file_ = Hid();
}

bool Hdf5File::Exists(const std::string& path) const {
  std::lock_guard lock(Hdf5Mutex());
  std::string prefix;
  size_t start = path.starts_with('/') ? 1 : 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (end == start) return false;  // empty component
    prefix += "/" + path.substr(start, end - start);
    if (H5Lexists(file_.get(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    start = end + 1;
  }
  return true;
}

Hid Hdf5File::OpenObject(const std::string& path) const {
  Hid object(H5Oopen(file_.get(), path.c_str(), H5P_DEFAULT), H5Oclose);
  if (!object.valid()) throw Error(ErrorCode::Model, fmt::format("{}: '{}' is missing", source_, path));
  return object;
}

std::vector<std::string> Hdf5File::Children(const std::string& group) const {
  if (!Exists(group)) return {};
  std::lock_guard lock(Hdf5Mutex());
  Hid g(H5Gopen2(file_.get(), group.c_str(), H5P_DEFAULT), H5Gclose);
  if (!g.valid()) throw Error(ErrorCode::Model, fmt::format("{}: '{}' is not a group", source_, group));
  H5G_info_t info;
  if (H5Gget_info(g.get(), &info) < 0)
    throw Error(ErrorCode::Model, fmt::format("{}: cannot list '{}'", source_, group));
  if (info.nlinks > 100000) throw Error(ErrorCode::Model, fmt::format("{}: '{}' has too many entries", source_, group));
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t length = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (length < 0 || length > 4096)
      throw Error(ErrorCode::Model, fmt::format("{}: bad link name in '{}'", source_, group));
    std::string name(static_cast<size_t>(length) + 1, '\0');
    H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
    name.resize(static_cast<size_t>(length));
    names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names;
}

bool Hdf5File::HasAttribute(const std::string& path, const std::string& name) const {
  if (!Exists(path) && path != "/") return false;
  std::lock_guard lock(Hdf5Mutex());
  return H5Aexists_by_name(file_.get(), path.c_str(), name.c_str(), H5P_DEFAULT) > 0;
}

std::vector<std::string> Hdf5File::ReadStrings(const Hid& attribute, const std::string& what) const {
  Hid type(H5Aget_type(attribute.get()), H5Tclose);
  Hid space(H5Aget_space(attribute.get()), H5Sclose);
  if (!type.valid() || !space.valid() || H5Tget_class(type.get()) != H5T_STRING) {
    throw Error(ErrorCode::Model, fmt::format("{}: {} is not a string attribute", source_, what));
  }
  const int rank = H5Sget_simple_extent_ndims(space.get());
  hssize_t count = H5Sget_simple_extent_npoints(space.get());
  if (rank < 0 || rank > 1 || count < 0 || count > 1000000) {
    throw Error(ErrorCode::Model, fmt::format("{}: {} has an unexpected shape", source_, what));
  }
  const auto n = static_cast<size_t>(count);
  std::vector<std::string> out;
  if (H5Tis_variable_str(type.get()) > 0) {
    Hid memtype(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(memtype.get(), H5T_VARIABLE);
    H5Tset_cset(memtype.get(), H5Tget_cset(type.get()));
    std::vector<char*> pointers(n, nullptr);
    if (H5Aread(attribute.get(), memtype.get(), pointers.data()) < 0) {
      throw Error(ErrorCode::Model, fmt::format("{}: cannot read {}", source_, what));
    }
    for (char* p : pointers) out.emplace_back(p != nullptr ? p : "");
    H5Dvlen_reclaim(memtype.get(), space.get(), H5P_DEFAULT, pointers.data());
  } else {
    const size_t size = H5Tget_size(type.get());
    if (size == 0 || size > (size_t{1} << 24) || n * size > (size_t{1} << 26)) {
      throw Error(ErrorCode::Model, fmt::format("{}: {} is too large", source_, what));
    }
    std::vector<char> buffer(n * size);
    if (H5Aread(attribute.get(), type.get(), buffer.data()) < 0) {
      throw Error(ErrorCode::Model, fmt::format("{}: cannot read {}", source_, what));
    }
    for (size_t i = 0; i < n; ++i) {
      const char* start = buffer.data() + i * size;
      out.emplace_back(start, strnlen(start, size));
    }
  }
  return out;
}

std::string Hdf5File::StringAttribute(const std::string& path, const std::string& name) const {
  auto values = StringListAttribute(path, name);
  if (values.size() != 1) {
    throw Error(ErrorCode::Model,
                fmt::format("{}: attribute '{}' of '{}' is not a single string", source_, name, path));
  }
  return values.front();
}

std::vector<std::string> Hdf5File::StringListAttribute(const std::string& path, const std::string& name) const {
  if (!HasAttribute(path, name)) {
    throw Error(ErrorCode::Model, fmt::format("{}: attribute '{}' of '{}' is missing", source_, name, path));
  }
  std::lock_guard lock(Hdf5Mutex());
  Hid attribute(H5Aopen_by_name(file_.get(), path.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attribute.valid()) {
    throw Error(ErrorCode::Model, fmt::format("{}: cannot open attribute '{}' of '{}'", source_, name, path));
  }
  return ReadStrings(attribute, fmt::format("attribute '{}' of '{}'", name, path));
}

// Before allocating what a dataset declares: its values must be in the file, at most
// kMaxInflation times the bytes stored for them (compressed chunks, or nothing but a
// fill value, could otherwise declare gigabytes in a few bytes), and all tensors read
// from one file together stay within MaxModelBytes.
void Hdf5File::CheckStoredSize(const Hid& dataset, const std::string& path, size_t bytes) const {
  constexpr size_t kSmall = 64 << 10;  // below this a ratio means nothing (headers, fill values)
  const hsize_t stored = H5Dget_storage_size(dataset.get());
  if (bytes > kSmall && bytes / std::max<hsize_t>(stored, 1) > kMaxInflation) {
    throw Error(ErrorCode::Model,
                fmt::format("{}: weight '{}' declares {} bytes of values but stores {}: more than {}x, refused as a "
                            "decompression bomb",
                            source_, path, bytes, stored, kMaxInflation));
  }
  read_bytes_ += bytes;
  if (const size_t max = MaxModelBytes(); read_bytes_ > max) {
    throw Error(ErrorCode::Model, fmt::format("{}: the weights up to '{}' take {} bytes, more than the {} a model may "
                                              "(RUNNEL_MAX_MODEL_BYTES)",
                                              source_, path, read_bytes_, max));
  }
}

Tensor Hdf5File::ReadTensor(const std::string& path) const {
  if (!Exists(path)) throw Error(ErrorCode::Model, fmt::format("{}: weight '{}' is missing", source_, path));
  std::lock_guard lock(Hdf5Mutex());
  Hid dataset(H5Dopen2(file_.get(), path.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset.valid()) throw Error(ErrorCode::Model, fmt::format("{}: '{}' is not a dataset", source_, path));
  Hid type(H5Dget_type(dataset.get()), H5Tclose);
  Hid space(H5Dget_space(dataset.get()), H5Sclose);
  if (!type.valid() || !space.valid())
    throw Error(ErrorCode::Model, fmt::format("{}: cannot inspect '{}'", source_, path));
  const H5T_class_t type_class = H5Tget_class(type.get());
  if (type_class != H5T_FLOAT && type_class != H5T_INTEGER) {
    throw Error(ErrorCode::Model, fmt::format("{}: weight '{}' is not numeric", source_, path));
  }
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0 || static_cast<size_t>(rank) > kMaxRank) {
    throw Error(ErrorCode::Model,
                fmt::format("{}: weight '{}' has rank {} (at most {})", source_, path, rank, kMaxRank));
  }
  hsize_t dims[kMaxRank] = {};
  if (H5Sget_simple_extent_dims(space.get(), dims, nullptr) < 0) {
    throw Error(ErrorCode::Model, fmt::format("{}: cannot read the shape of '{}'", source_, path));
  }
  Tensor tensor;
  size_t total = 1;
  for (int i = 0; i < rank; ++i) {
    if (dims[i] > kMaxElements || total * dims[i] > kMaxElements) {
      throw Error(ErrorCode::Model, fmt::format("{}: weight '{}' is too large", source_, path));
    }
    total *= dims[i];
    tensor.dims.push_back(dims[i]);
  }
  CheckStoredSize(dataset, path, total * sizeof(float));
  tensor.values.resize(total);
  if (total > 0 && H5Dread(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, tensor.values.data()) < 0) {
    throw Error(ErrorCode::Model, fmt::format("{}: cannot read the values of '{}'", source_, path));
  }
  return tensor;
}

}  // namespace runnel::model
