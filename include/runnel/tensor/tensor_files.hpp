// Tensors in files, for `runnel model run`: NumPy's .npy format (version 1.0 to 3.0,
// little-endian or one-byte elements, C order) and serialized onnx.TensorProto (.pb,
// as the ONNX backend tests store their inputs and outputs). Files are hostile: the
// header is bounded and the data checked against the shape before allocating.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "runnel/tensor/tensor.hpp"

namespace runnel::tensor {

// Parses a .npy file. Throws Error(Model) naming `source` for a malformed file,
// UnsupportedError for an element type Tensor lacks (strings, float16, big-endian).
Tensor LoadNpy(std::string_view bytes, const std::string& source);
// `t` as a .npy file (format 1.0). Throws UnsupportedError for string tensors.
std::string SaveNpy(const Tensor& t);

// `t` as a serialized onnx.TensorProto named `name`.
std::string SaveOnnxTensor(const Tensor& t, const std::string& name);

// Reads a tensor file by its extension: .npy, else an onnx.TensorProto.
Tensor LoadTensorFile(const std::filesystem::path& path);

}  // namespace runnel::tensor
