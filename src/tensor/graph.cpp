#include "runnel/tensor/graph.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "kernels.hpp"

namespace runnel::tensor {

const Attribute* Node::Find(std::string_view key) const {
  auto it = attributes.find(key);
  return it == attributes.end() ? nullptr : &it->second;
}

float Node::Float(std::string_view key, float fallback) const {
  const auto* a = Find(key);
  return a != nullptr && a->kind == Attribute::Kind::kFloat ? a->f : fallback;
}

int64_t Node::Int(std::string_view key, int64_t fallback) const {
  const auto* a = Find(key);
  return a != nullptr && a->kind == Attribute::Kind::kInt ? a->i : fallback;
}

std::string Node::String(std::string_view key, std::string fallback) const {
  const auto* a = Find(key);
  return a != nullptr && a->kind == Attribute::Kind::kString ? a->s : fallback;
}

std::vector<int64_t> Node::IntList(std::string_view key) const {
  const auto* a = Find(key);
  return a != nullptr && a->kind == Attribute::Kind::kInts ? a->ints : std::vector<int64_t>{};
}

std::vector<float> Node::FloatList(std::string_view key) const {
  const auto* a = Find(key);
  return a != nullptr && a->kind == Attribute::Kind::kFloats ? a->floats : std::vector<float>{};
}

std::vector<std::string> Node::StringList(std::string_view key) const {
  const auto* a = Find(key);
  return a != nullptr && a->kind == Attribute::Kind::kStrings ? a->strings : std::vector<std::string>{};
}

std::string Node::Label() const {
  return name.empty() ? fmt::format("a {} node", op) : fmt::format("node '{}' ({})", name, op);
}

std::string ValueInfo::Text() const {
  if (!type) return "";
  std::string text = DataTypeName(static_cast<int>(*type));
  if (!has_shape) return text;
  std::vector<std::string> parts;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i]) {
      parts.push_back(std::to_string(*dims[i]));
    } else {
      // ONNX's inference names the dimensions it cannot know "unk__N": unknown too
      const bool named = i < symbols.size() && !symbols[i].empty() && !symbols[i].starts_with("unk__");
      parts.push_back(named ? symbols[i] : "?");
    }
  }
  return fmt::format("{} [{}]", text, fmt::join(parts, ", "));
}

int Graph::ValueId(const std::string& name) const {
  for (size_t i = 0; i < value_names.size(); ++i) {
    if (value_names[i] == name) return static_cast<int>(i);
  }
  return -1;
}

namespace {

size_t BytesOf(const Tensor& t) {
  if (t.type() != DataType::kString) return t.bytes().size();
  size_t n = 0;
  for (const auto& s : t.strings()) n += s.size() + sizeof(std::string);
  return n;
}

}  // namespace

Session::Session(std::shared_ptr<const Graph> graph, size_t max_bytes)
    : graph_(std::move(graph)),
      max_bytes_(max_bytes),
      values_(graph_->value_names.size()),
      set_(graph_->value_names.size(), false),
      released_after_(LastReaders(*graph_)),
      pool_(max_bytes) {}

std::vector<std::vector<int>> Session::LastReaders(const Graph& g) {
  constexpr size_t kNever = SIZE_MAX;
  std::vector<size_t> last(g.value_names.size(), kNever);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    for (int id : g.nodes[i].outputs) {
      if (id >= 0) last[static_cast<size_t>(id)] = i;  // unread: released after its producer
    }
    for (int id : g.nodes[i].inputs) {
      if (id >= 0 && !g.constants[id]) last[static_cast<size_t>(id)] = i;
    }
  }
  for (int id : g.outputs) last[static_cast<size_t>(id)] = kNever;
  std::vector<std::vector<int>> released(g.nodes.size());
  for (size_t id = 0; id < last.size(); ++id) {
    if (last[id] != kNever) released[last[id]].push_back(static_cast<int>(id));
  }
  return released;
}

Tensor Session::TakeValue(int id) {
  bytes_ -= BytesOf(values_[id]);
  set_[id] = false;
  Tensor value = std::move(values_[id]);
  values_[id] = Tensor();  // not a moved-from tensor that still states its count
  return value;
}

void Session::Release(int id) {
  pool_.Give(TakeValue(id).ReleaseBytes());
}

void Session::Keep(int id, Tensor value, const Node& node) {
  bytes_ -= BytesOf(values_[id]);
  bytes_ += BytesOf(value);
  pool_.Give(values_[id].ReleaseBytes());
  values_[id] = std::move(value);
  set_[id] = true;
  peak_ = std::max(peak_, bytes_);
  if (bytes_ > max_bytes_) {
    throw Error(ErrorCode::Model, fmt::format("{}: the model's values outgrow {} bytes", node.Label(), max_bytes_));
  }
}

std::vector<Tensor> Session::Run(std::vector<Tensor> inputs) {
  const Graph& g = *graph_;
  if (inputs.size() != g.inputs.size()) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("the model takes {} input(s), {} given", g.inputs.size(), inputs.size()));
  }
  const ScopedBufferPool pool(&pool_);
  for (size_t id = 0; id < values_.size(); ++id) {
    if (set_[id]) Release(static_cast<int>(id));  // the last run's outputs and unread inputs
  }
  peak_ = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto& info = g.input_info[i];
    if (info.type && *info.type != inputs[i].type()) {
      throw Error(ErrorCode::InvalidInput, fmt::format("input '{}' is {}, the model takes {}", info.name,
                                                       DataTypeName(static_cast<int>(inputs[i].type())),
                                                       DataTypeName(static_cast<int>(*info.type))));
    }
    bytes_ += BytesOf(inputs[i]);
    values_[g.inputs[i]] = std::move(inputs[i]);
    set_[g.inputs[i]] = true;
  }
  peak_ = bytes_;
  std::vector<const Tensor*> in;
  std::vector<Tensor> out;
  const ScopedTensorLimit limit(max_bytes_);
  for (const Node& node : g.nodes) {
    in.clear();
    for (int id : node.inputs) {
      if (id < 0) {
        in.push_back(nullptr);
      } else if (g.constants[id]) {
        in.push_back(g.constants[id].get());
      } else if (set_[id]) {
        in.push_back(&values_[id]);
      } else {
        throw Error(ErrorCode::Model,
                    fmt::format("{}: input '{}' is not computed before it", node.Label(), g.value_names[id]));
      }
    }
    out.assign(node.outputs.size(), Tensor());
    try {
      node.kernel(node, in, out);
    } catch (const UnsupportedError&) {
      throw;
    } catch (const Error& e) {
      throw Error(ErrorCode::Model, fmt::format("{}: {}", node.Label(), e.what()));
    }
    for (size_t k = 0; k < node.outputs.size(); ++k) {
      if (node.outputs[k] >= 0) Keep(node.outputs[k], std::move(out[k]), node);
    }
    for (int id : released_after_[static_cast<size_t>(&node - g.nodes.data())]) Release(id);
  }
  std::vector<Tensor> result;
  for (size_t o = 0; o < g.outputs.size(); ++o) {
    const int id = g.outputs[o];
    const auto earlier = std::find(g.outputs.begin(), g.outputs.begin() + static_cast<ptrdiff_t>(o), id);
    if (g.constants[id]) {
      result.push_back(*g.constants[id]);
    } else if (earlier != g.outputs.begin() + static_cast<ptrdiff_t>(o)) {
      result.push_back(result[static_cast<size_t>(earlier - g.outputs.begin())]);  // the same value twice
    } else if (set_[id]) {
      result.push_back(TakeValue(id));
    } else {
      throw Error(ErrorCode::Model, fmt::format("output '{}' is computed by no node", g.value_names[id]));
    }
  }
  return result;
}

void Session::Recycle(std::vector<Tensor> outputs) {
  for (auto& t : outputs) pool_.Give(t.ReleaseBytes());
}

int SoleReader(const Graph& g, int id) {
  if (std::find(g.outputs.begin(), g.outputs.end(), id) != g.outputs.end()) return -1;
  int reader = -1;
  for (size_t n = 0; n < g.nodes.size(); ++n) {
    const auto& inputs = g.nodes[n].inputs;
    const auto uses = std::count(inputs.begin(), inputs.end(), id);
    if (uses == 0) continue;
    if (uses > 1 || reader >= 0) return -1;
    reader = static_cast<int>(n);
  }
  return reader;
}

bool Unread(const Graph& g, int id) {
  if (std::find(g.outputs.begin(), g.outputs.end(), id) != g.outputs.end()) return false;
  return std::none_of(g.nodes.begin(), g.nodes.end(), [id](const Node& node) {
    return std::find(node.inputs.begin(), node.inputs.end(), id) != node.inputs.end();
  });
}

}  // namespace runnel::tensor
