#include "keras_h5_file.hpp"

#include <algorithm>
#include <stdexcept>

namespace runnel::testing {
namespace {

void StringListAttr(hid_t object, const char* name, const std::vector<std::string>& values, bool scalar) {
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, H5T_VARIABLE);
  hsize_t n = values.size();
  hid_t space = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr);
  hid_t attr = H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  std::vector<const char*> pointers;
  for (const auto& v : values) pointers.push_back(v.c_str());
  H5Awrite(attr, type, pointers.data());
  H5Aclose(attr);
  H5Sclose(space);
  H5Tclose(type);
}

}  // namespace

std::filesystem::path KerasH5File::Write(const std::filesystem::path& path) const {
  hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (file < 0) throw std::runtime_error("cannot create " + path.string());
  StringListAttr(file, "model_config", {config_.dump()}, true);
  StringListAttr(file, "keras_version", {"2.15.0"}, true);
  hid_t root = H5Gcreate2(file, "model_weights", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  for (const auto& [layer, weights] : layers_) {
    hid_t group = H5Gcreate2(root, layer.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    std::vector<std::string> names;
    for (const auto& [name, tensor] : weights) {
      const std::string full = layer + "/" + name;
      names.push_back(full);
      hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
      H5Pset_create_intermediate_group(lcpl, 1);
      hid_t space = H5Screate_simple(static_cast<int>(tensor.first.size()), tensor.first.data(), nullptr);
      hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
      if (compress_) {
        std::vector<hsize_t> chunk = tensor.first;
        for (auto& d : chunk) d = std::min<hsize_t>(std::max<hsize_t>(d, 1), 1024);
        H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
        H5Pset_deflate(dcpl, 9);
      }
      hid_t dataset = H5Dcreate2(group, full.c_str(), H5T_IEEE_F32LE, space, lcpl, dcpl, H5P_DEFAULT);
      if (!tensor.second.empty()) {
        H5Dwrite(dataset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, tensor.second.data());
      }
      H5Dclose(dataset);
      H5Pclose(dcpl);
      H5Sclose(space);
      H5Pclose(lcpl);
    }
    StringListAttr(group, "weight_names", names, false);
    H5Gclose(group);
  }
  H5Gclose(root);
  H5Fclose(file);
  return path;
}

}  // namespace runnel::testing
