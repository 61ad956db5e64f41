#include "runnel/model/graph.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "runnel/core/error.hpp"

namespace runnel::model {

const char* ActivationName(Activation kind) {
  switch (kind) {
    case Activation::Linear: return "linear";
    case Activation::Relu: return "relu";
    case Activation::Sigmoid: return "sigmoid";
    case Activation::Tanh: return "tanh";
    case Activation::Softmax: return "softmax";
    case Activation::Elu: return "elu";
    case Activation::Selu: return "selu";
    case Activation::Gelu: return "gelu";
    case Activation::GeluTanh: return "gelu_tanh";
    case Activation::Swish: return "swish";
    case Activation::Softplus: return "softplus";
    case Activation::LeakyRelu: return "leaky_relu";
    case Activation::HardSigmoid: return "hard_sigmoid";
    case Activation::Exponential: return "exponential";
    case Activation::Clip: return "clip";
  }
  return "?";
}

int Graph::AddValue(std::string name, size_t width) {
  value_widths.push_back(width);
  value_names.push_back(std::move(name));
  return static_cast<int>(value_widths.size() - 1);
}

size_t Graph::InputWidth() const {
  size_t total = 0;
  for (int id : inputs) total += value_widths.at(static_cast<size_t>(id));
  return total;
}

size_t Graph::OutputWidth() const {
  size_t total = 0;
  for (int id : outputs) total += value_widths.at(static_cast<size_t>(id));
  return total;
}

size_t Graph::ParameterCount() const {
  size_t total = 0;
  for (const auto& node : nodes) {
    total += node.weights.size() + node.bias.size() + node.constant.size() + node.scale.size() + node.shift.size();
  }
  return total;
}

size_t Graph::MultiplyAdds() const {
  size_t total = 0;
  for (const auto& node : nodes) {
    if (node.kind == OpKind::Dense) total += node.in_width * node.out_width;
  }
  return total;
}

void Graph::Validate(const std::string& context) const {
  auto fail = [&](const Node* node, const std::string& what) {
    throw Error(ErrorCode::Model, node ? fmt::format("{}: node '{}': {}", context, node->name, what)
                                       : fmt::format("{}: {}", context, what));
  };
  const size_t value_count = value_widths.size();
  if (value_names.size() != value_count) fail(nullptr, "value names and widths disagree");
  if (inputs.empty()) fail(nullptr, "the model has no input");
  if (outputs.empty()) fail(nullptr, "the model has no output");
  std::vector<bool> defined(value_count, false);
  auto check_id = [&](const Node* node, int id) {
    if (id < 0 || static_cast<size_t>(id) >= value_count) fail(node, fmt::format("value id {} out of range", id));
  };
  for (int id : inputs) {
    check_id(nullptr, id);
    if (value_widths[static_cast<size_t>(id)] == 0) fail(nullptr, "an input has width 0");
    defined[static_cast<size_t>(id)] = true;
  }
  for (const auto& node : nodes) {
    for (int id : node.inputs) {
      check_id(&node, id);
      if (!defined[static_cast<size_t>(id)]) {
        fail(&node, fmt::format("input '{}' is used before it is computed", value_names[static_cast<size_t>(id)]));
      }
    }
    check_id(&node, node.output);
    if (defined[static_cast<size_t>(node.output)]) {
      fail(&node, fmt::format("value '{}' is computed twice", value_names[static_cast<size_t>(node.output)]));
    }
    defined[static_cast<size_t>(node.output)] = true;
    const size_t out = value_widths[static_cast<size_t>(node.output)];
    auto in_width = [&](size_t i) { return value_widths[static_cast<size_t>(node.inputs.at(i))]; };
    if (out == 0) fail(&node, "output width 0");
    switch (node.kind) {
      case OpKind::Dense:
        if (node.inputs.size() != 1) fail(&node, "Dense takes one input");
        if (in_width(0) != node.in_width) {
          fail(&node, fmt::format("kernel expects {} inputs, the layer receives {}", node.in_width, in_width(0)));
        }
        if (node.out_width != out) fail(&node, "output width disagrees with the kernel");
        if (node.weights.size() != node.in_width * node.out_width) {
          fail(&node, fmt::format("kernel holds {} values, expected {} x {}", node.weights.size(), node.in_width,
                                  node.out_width));
        }
        if (!node.bias.empty() && node.bias.size() != node.out_width) {
          fail(&node, fmt::format("bias holds {} values, expected {}", node.bias.size(), node.out_width));
        }
        break;
      case OpKind::Binary:
        if (node.inputs.size() == 1) {
          if (node.constant.size() != 1 && node.constant.size() != out) {
            fail(&node, fmt::format("constant of {} values does not broadcast to width {}", node.constant.size(), out));
          }
          if (in_width(0) != out) fail(&node, "input and output widths differ");
        } else if (node.inputs.size() == 2) {
          const size_t a = in_width(0), b = in_width(1);
          if (!((a == out || a == 1) && (b == out || b == 1)) || std::max(a, b) != out) {
            fail(&node, fmt::format("operands of width {} and {} do not broadcast", a, b));
          }
        } else {
          fail(&node, "a binary operation takes two operands");
        }
        break;
      case OpKind::Affine:
        if (node.inputs.size() != 1 || in_width(0) != out) fail(&node, "Affine keeps the width of its one input");
        if (node.scale.size() != out || node.shift.size() != out) {
          fail(&node,
               fmt::format("scale/shift hold {}/{} values, expected {}", node.scale.size(), node.shift.size(), out));
        }
        break;
      case OpKind::Activate:
      case OpKind::Identity:
        if (node.inputs.size() != 1 || in_width(0) != out) fail(&node, "expects one input of the output's width");
        break;
      case OpKind::Concat: {
        size_t total = 0;
        for (size_t i = 0; i < node.inputs.size(); ++i) total += in_width(i);
        if (node.inputs.empty() || total != out) {
          fail(&node, fmt::format("inputs add up to width {}, output has {}", total, out));
        }
        break;
      }
    }
  }
  for (int id : outputs) {
    check_id(nullptr, id);
    if (!defined[static_cast<size_t>(id)]) {
      fail(nullptr, fmt::format("output '{}' is never computed", value_names[static_cast<size_t>(id)]));
    }
  }
}

void Graph::FuseDenseChains() {
  auto uses = [&](int value) {
    size_t count = 0;
    for (const auto& node : nodes)
      count += static_cast<size_t>(std::count(node.inputs.begin(), node.inputs.end(), value));
    for (int id : outputs) count += id == value ? 1 : 0;
    return count;
  };
  auto consumer = [&](int value) -> Node* {
    for (auto& node : nodes) {
      if (std::find(node.inputs.begin(), node.inputs.end(), value) != node.inputs.end()) return &node;
    }
    return nullptr;
  };
  bool changed = true;
  while (changed) {
    changed = false;
    for (auto& node : nodes) {
      if (node.kind != OpKind::Dense || node.activation.kind != Activation::Linear || uses(node.output) != 1) continue;
      Node* next = consumer(node.output);
      if (next == nullptr) continue;
      const bool bias_add = next->kind == OpKind::Binary && next->binary == BinaryOp::Add && next->inputs.size() == 1 &&
                            node.bias.empty() && next->constant.size() == node.out_width;
      const bool activation = next->kind == OpKind::Activate;
      if (!bias_add && !activation) continue;
      if (bias_add) node.bias = next->constant;
      if (activation) node.activation = next->activation;
      node.output = next->output;
      next->kind = OpKind::Identity;  // marked for removal below
      next->inputs.clear();
      next->output = -1;
      changed = true;
    }
    std::erase_if(nodes, [](const Node& n) { return n.kind == OpKind::Identity && n.output == -1; });
  }
}

}  // namespace runnel::model
