// A read-only view of an HDF5 file held in memory (libhdf5's core driver with a file
// image), with every handle owned by RAII and every shape and size checked before a
// read. Used by the Keras loaders.
#pragma once

#include <hdf5.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace runnel::model {

struct HidCloser {
  herr_t (*close)(hid_t) = nullptr;
};

// Owns one HDF5 identifier (file, group, dataset, attribute, dataspace, datatype or
// property list) and closes it with the matching H5?close.
class Hid {
 public:
  Hid() = default;
  Hid(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Hid() { Reset(); }
  Hid(Hid&& other) noexcept : id_(other.id_), close_(other.close_) { other.id_ = -1; }
  Hid& operator=(Hid&& other) noexcept {
    if (this != &other) {
      Reset();
      id_ = other.id_;
      close_ = other.close_;
      other.id_ = -1;
    }
    return *this;
  }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  void Reset() {
    if (id_ >= 0 && close_ != nullptr) close_(id_);
    id_ = -1;
  }
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

struct Tensor {
  std::vector<size_t> dims;
  std::vector<float> values;
};

class Hdf5File {
 public:
  // Opens the bytes as an HDF5 file. Throws Error(Model) naming `source`.
  Hdf5File(std::string_view bytes, std::string source);
  ~Hdf5File();
  Hdf5File(const Hdf5File&) = delete;
  Hdf5File& operator=(const Hdf5File&) = delete;

  // Whether every component of the slash-separated path exists.
  bool Exists(const std::string& path) const;
  // Names of the links directly under a group, sorted by name.
  std::vector<std::string> Children(const std::string& group) const;
  // A string attribute (scalar), or a list of strings (1-D), of the object at `path`.
  // Throws Error(Model) when missing or of another type.
  std::string StringAttribute(const std::string& path, const std::string& name) const;
  std::vector<std::string> StringListAttribute(const std::string& path, const std::string& name) const;
  bool HasAttribute(const std::string& path, const std::string& name) const;
  // A numeric dataset converted to float32. Throws Error(Model) naming the dataset for
  // a non-numeric type, a rank above 4, more than 2^26 elements, values declared more
  // than kMaxInflation times the bytes stored for them, or once the tensors read from
  // this file pass MaxModelBytes; all checked before allocating.
  Tensor ReadTensor(const std::string& path) const;

  const std::string& source() const { return source_; }

 private:
  Hid OpenObject(const std::string& path) const;
  std::vector<std::string> ReadStrings(const Hid& attribute, const std::string& what) const;
  void CheckStoredSize(const Hid& dataset, const std::string& path, size_t bytes) const;

  std::string source_;
  Hid file_;
  mutable size_t read_bytes_ = 0;  // values of the tensors read so far (MaxModelBytes)
};

}  // namespace runnel::model
