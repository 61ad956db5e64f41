#include "isolation.hpp"

#include <cstring>
#include <mutex>

#include "runnel/core/error.hpp"
#include "runnel/core/isolation.hpp"

namespace runnel::model {

std::mutex& Hdf5Mutex();  // hdf5_file.cpp: held while forking so the child gets it free

namespace {

// ---- a private wire format between parent and child (same binary, same machine) ----

class Writer {
 public:
  template <typename T>
  void Pod(const T& value) {
    out_.append(reinterpret_cast<const char*>(&value), sizeof(T));
  }
  void Str(const std::string& s) {
    Pod<uint64_t>(s.size());
    out_ += s;
  }
  template <typename T>
  void Vec(const std::vector<T>& v) {
    Pod<uint64_t>(v.size());
    if (!v.empty()) out_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  std::string& bytes() { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(const std::string& in) : in_(in) {}
  template <typename T>
  T Pod() {
    Need(sizeof(T));
    T value;
    std::memcpy(&value, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::string Str() {
    auto n = Pod<uint64_t>();
    Need(n);
    std::string s = in_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  template <typename T>
  std::vector<T> Vec() {
    auto n = Pod<uint64_t>();
    if (n > (in_.size() - pos_) / sizeof(T))
      throw Error(ErrorCode::Model, "truncated model data from the reader process");
    std::vector<T> v(n);
    if (n > 0) std::memcpy(v.data(), in_.data() + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
    return v;
  }

 private:
  void Need(uint64_t n) {
    if (n > in_.size() - pos_) throw Error(ErrorCode::Model, "truncated model data from the reader process");
  }
  const std::string& in_;
  size_t pos_ = 0;
};

std::string Encode(const LoadedGraph& loaded) {
  Writer w;
  w.Pod<char>('G');
  w.Pod(static_cast<int>(loaded.info.format));
  w.Str(loaded.info.source);
  w.Str(loaded.info.producer);
  const Graph& g = loaded.graph;
  w.Vec(g.inputs);
  w.Vec(g.outputs);
  w.Vec(g.value_widths);
  w.Pod<uint64_t>(g.value_names.size());
  for (const auto& name : g.value_names) w.Str(name);
  w.Pod<uint64_t>(g.nodes.size());
  for (const auto& n : g.nodes) {
    w.Pod(n.kind);
    w.Str(n.name);
    w.Vec(n.inputs);
    w.Pod(n.output);
    w.Pod(n.activation);
    w.Pod<uint64_t>(n.in_width);
    w.Pod<uint64_t>(n.out_width);
    w.Vec(n.weights);
    w.Vec(n.bias);
    w.Pod(n.binary);
    w.Vec(n.constant);
    w.Pod(n.constant_first);
    w.Vec(n.scale);
    w.Vec(n.shift);
  }
  return std::move(w.bytes());
}

LoadedGraph Decode(const std::string& bytes) {
  Reader r(bytes);
  LoadedGraph loaded;
  if (r.Pod<char>() != 'G') throw Error(ErrorCode::Model, "bad model data from the reader process");
  loaded.info.format = static_cast<ModelFormat>(r.Pod<int>());
  loaded.info.source = r.Str();
  loaded.info.producer = r.Str();
  Graph& g = loaded.graph;
  g.inputs = r.Vec<int>();
  g.outputs = r.Vec<int>();
  g.value_widths = r.Vec<size_t>();
  auto names = r.Pod<uint64_t>();
  for (uint64_t i = 0; i < names; ++i) g.value_names.push_back(r.Str());
  auto nodes = r.Pod<uint64_t>();
  for (uint64_t i = 0; i < nodes; ++i) {
    Node n;
    n.kind = r.Pod<OpKind>();
    n.name = r.Str();
    n.inputs = r.Vec<int>();
    n.output = r.Pod<int>();
    n.activation = r.Pod<ActivationSpec>();
    n.in_width = r.Pod<uint64_t>();
    n.out_width = r.Pod<uint64_t>();
    n.weights = r.Vec<float>();
    n.bias = r.Vec<float>();
    n.binary = r.Pod<BinaryOp>();
    n.constant = r.Vec<float>();
    n.constant_first = r.Pod<bool>();
    n.scale = r.Vec<float>();
    n.shift = r.Vec<float>();
    g.nodes.push_back(std::move(n));
  }
  return loaded;
}

}  // namespace

LoadedGraph ParseIsolated(const std::string& source, const std::function<LoadedGraph()>& parse) {
  const IsolatedCall call{source, "the HDF5 reader", &Hdf5Mutex()};
  return Decode(RunIsolated(call, [&] { return Encode(parse()); }));
}

}  // namespace runnel::model
