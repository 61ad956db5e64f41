// Convolutions through oneDNN (Debian's libdnnl) where `make bench-onednn` shows it
// faster than our own kernel even when paying the conversions a runtime that keeps
// NCHW between nodes pays: a 3x3 convolution, stride 1, pads 1, one group, at least 16
// input channels (1.3-1.6x ours with the reorders counted; with 3 input channels,
// the first layer of a CNN, ours is faster and stays). Each image of a batch is
// reordered from NCHW into the blocked layout oneDNN picks, convolved (bias and Relu
// in the same primitive) and reordered back, eight images at a time and the rest one by
// one; the primitives for each image size are made on first use and kept on the node.
#include <fmt/format.h>

#include <map>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <utility>

#include "kernels.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/mutex.hpp"

// libgomp's, which libdnnl runs its parallel regions on: one thread per calling thread
// (a Session runs one intra-op thread; workers are the parallelism).
extern "C" void omp_set_num_threads(int threads);

namespace runnel::tensor {
namespace {

// The node's attributes fit the one shape oneDNN is used for.
bool ThreeByThreeSame(const Node& node) {
  auto all_are = [&](const char* name, int64_t value, size_t count) {
    const auto list = node.IntList(name);
    if (list.empty()) return true;
    if (list.size() != count) return false;
    for (int64_t v : list)
      if (v != value) return false;
    return true;
  };
  const std::string pad = node.String("auto_pad", "NOTSET");
  return node.Int("group", 1) == 1 && (pad == "NOTSET" || pad.empty()) && all_are("strides", 1, 2) &&
         all_are("dilations", 1, 2) && all_are("kernel_shape", 3, 2) && !node.IntList("pads").empty() &&
         all_are("pads", 1, 4);
}

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One image size's primitives for `images` images at a time: [images, C, H, W] into the
// blocked layout, the convolution with its weights (and bias) in the layouts it chose,
// and back.
// Made with scratchpad_mode::user: each run brings its scratchpad (a primitive's own
// would be shared by the threads running it at once: wrong answers, seen in the test).
struct Plan {
  int64_t images = 1;
  dnnl::memory::desc plain_src, plain_dst, src, dst;
  dnnl::memory::desc conv_scratch, to_scratch, from_scratch;
  dnnl::reorder to_blocked, from_blocked;
  dnnl::convolution_forward conv;
  dnnl::memory weights, bias;
};

// What the node keeps: its constant weights and bias, and plans per image size.
class OneDnnConv : public NodeState {
 public:
  OneDnnConv(std::shared_ptr<const Tensor> weights, std::shared_ptr<const Tensor> bias, bool relu)
      : weights_(std::move(weights)), bias_(std::move(bias)), relu_(relu) {}

  int64_t channels() const { return weights_->dim(1); }
  int64_t filters() const { return weights_->dim(0); }
  bool relu() const { return relu_; }

  // The plan for `images` h x w images at a time, made on first use; null when oneDNN
  // cannot make one or this node already holds kMaxPlans (then our kernel runs).
  // Thread safety: any number of calls at once; a plan is never changed or freed while
  // the node lives.
  const Plan* PlanFor(int64_t images, int64_t h, int64_t w) const EXCLUDES(mu_) {
    MutexLock lock(mu_);
    const auto key = std::tuple{images, h, w};
    if (const auto it = plans_.find(key); it != plans_.end()) return it->second.get();
    if (plans_.size() >= kMaxPlans) return nullptr;
    std::unique_ptr<Plan> plan;
    try {
      plan = Make(images, h, w);
    } catch (const dnnl::error&) {
      plan = nullptr;  // remembered: not tried again for this size
    }
    return plans_.emplace(key, std::move(plan)).first->second.get();
  }

 private:
  static constexpr size_t kMaxPlans = 32;  // two per image size (a model's are few)

  std::unique_ptr<Plan> Make(int64_t images, int64_t h, int64_t w) const {
    using dnnl::memory;
    const auto f32 = memory::data_type::f32;
    const memory::dims src_dims{images, channels(), h, w}, w_dims{filters(), channels(), 3, 3},
        dst_dims{images, filters(), h, w};
    const memory::desc src_any(src_dims, f32, memory::format_tag::any), w_any(w_dims, f32, memory::format_tag::any),
        dst_any(dst_dims, f32, memory::format_tag::any), b_md({filters()}, f32, memory::format_tag::a);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (relu_) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
      attr.set_post_ops(ops);
    }
    const dnnl::convolution_forward::desc desc =
        bias_ ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                                src_any, w_any, b_md, dst_any, {1, 1}, {1, 1}, {1, 1})
              : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                                src_any, w_any, dst_any, {1, 1}, {1, 1}, {1, 1});
    const dnnl::convolution_forward::primitive_desc pd(desc, attr, Engine());
    auto plan = std::make_unique<Plan>();
    plan->images = images;
    plan->plain_src = memory::desc(src_dims, f32, memory::format_tag::nchw);
    plan->plain_dst = memory::desc(dst_dims, f32, memory::format_tag::nchw);
    plan->src = pd.src_desc();
    plan->dst = pd.dst_desc();
    dnnl::primitive_attr reorder_attr;
    reorder_attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::reorder::primitive_desc to_pd(Engine(), plan->plain_src, Engine(), plan->src, reorder_attr),
        from_pd(Engine(), plan->dst, Engine(), plan->plain_dst, reorder_attr);
    plan->to_blocked = dnnl::reorder(to_pd);
    plan->from_blocked = dnnl::reorder(from_pd);
    plan->conv = dnnl::convolution_forward(pd);
    plan->conv_scratch = pd.scratchpad_desc();
    plan->to_scratch = to_pd.scratchpad_desc();
    plan->from_scratch = from_pd.scratchpad_desc();
    dnnl::stream stream(Engine());
    // The user's weights are read once into the layout the primitive chose (copied:
    // the constant stays the graph's).
    memory plain_w({w_dims, f32, memory::format_tag::oihw}, Engine(),
                   const_cast<float*>(weights_->data<float>().data()));
    plan->weights = memory(pd.weights_desc(), Engine());
    dnnl::reorder(plain_w, plan->weights).execute(stream, plain_w, plan->weights);
    if (bias_) {
      plan->bias = memory(b_md, Engine());
      const auto b = bias_->data<float>();
      std::copy(b.begin(), b.end(), static_cast<float*>(plan->bias.get_data_handle()));
    }
    stream.wait();
    return plan;
  }

  const std::shared_ptr<const Tensor> weights_, bias_;
  const bool relu_;
  mutable Mutex mu_;
  mutable std::map<std::tuple<int64_t, int64_t, int64_t>, std::unique_ptr<Plan>> plans_ GUARDED_BY(mu_);
};

// A run's scratch memory for `md`, from the thread's pool (none when it needs none).
struct Scratch {
  explicit Scratch(const dnnl::memory::desc& md) : floats(md.get_size() / sizeof(float) + 16) {
    memory = dnnl::memory(md, Engine(), floats.data());
  }
  ScratchFloats floats;
  dnnl::memory memory;
};

// Runs `plan` `times` times over consecutive images of x from `first` on, into out,
// through blocked scratch images.
void RunPlan(const Plan& plan, const Tensor& x, int64_t first, int64_t times, Tensor& out) {
  dnnl::stream stream(Engine());
  Scratch src(plan.src), dst(plan.dst), conv_scratch(plan.conv_scratch), to_scratch(plan.to_scratch),
      from_scratch(plan.from_scratch);
  const size_t in_floats = static_cast<size_t>(plan.images * x.dim(1) * x.dim(2) * x.dim(3));
  const size_t out_floats = static_cast<size_t>(plan.images * out.dim(1) * out.dim(2) * out.dim(3));
  const float* px = x.data<float>().data() + static_cast<size_t>(first) * (in_floats / plan.images);
  float* py = out.data<float>().data() + static_cast<size_t>(first) * (out_floats / plan.images);
  std::unordered_map<int, dnnl::memory> conv_args{{DNNL_ARG_SRC, src.memory},
                                                  {DNNL_ARG_WEIGHTS, plan.weights},
                                                  {DNNL_ARG_DST, dst.memory},
                                                  {DNNL_ARG_SCRATCHPAD, conv_scratch.memory}};
  if (plan.bias) conv_args.emplace(DNNL_ARG_BIAS, plan.bias);
  for (int64_t t = 0; t < times; ++t) {
    dnnl::memory images(plan.plain_src, Engine(), const_cast<float*>(px + static_cast<size_t>(t) * in_floats));
    dnnl::memory results(plan.plain_dst, Engine(), py + static_cast<size_t>(t) * out_floats);
    plan.to_blocked.execute(
        stream, {{DNNL_ARG_FROM, images}, {DNNL_ARG_TO, src.memory}, {DNNL_ARG_SCRATCHPAD, to_scratch.memory}});
    plan.conv.execute(stream, conv_args);
    plan.from_blocked.execute(
        stream, {{DNNL_ARG_FROM, dst.memory}, {DNNL_ARG_TO, results}, {DNNL_ARG_SCRATCHPAD, from_scratch.memory}});
  }
  stream.wait();
}

// Images go kChunk at a time (fewer calls into oneDNN per image), the rest one by one.
constexpr int64_t kChunk = 8;

// How a batch runs on oneDNN: `chunks` runs of kChunk images, then `singles` images one
// by one, each part with its plan (null where the part is empty, or where oneDNN has no
// plan: then the batch does not run on oneDNN).
struct BatchPlans {
  const Plan* chunk = nullptr;
  int64_t chunks = 0;
  const Plan* single = nullptr;
  int64_t singles = 0;

  bool Runs() const { return chunks + singles > 0 && (singles == 0 || single != nullptr); }
};

BatchPlans PlansFor(const OneDnnConv& state, int64_t batch, int64_t h, int64_t w) {
  BatchPlans plans;
  if (batch >= kChunk) plans.chunk = state.PlanFor(kChunk, h, w);
  plans.chunks = plans.chunk != nullptr ? batch / kChunk : 0;
  plans.singles = batch - plans.chunks * kChunk;
  if (plans.singles > 0) plans.single = state.PlanFor(1, h, w);
  return plans;
}

// The kernel of a Conv (or Conv+Relu) given to oneDNN: inputs of another shape than
// the weights expect, or of an image size it has no plan for, go to our kernel.
void ConvOneDnnKernel(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const auto& state = node.State<OneDnnConv>();
  const Tensor& x = Required(node, in, 0);
  omp_set_num_threads(1);  // before any oneDNN call: making a plan reorders the weights
  BatchPlans plans;
  if (x.type() == DataType::kFloat && x.rank() == 4 && x.dim(1) == state.channels() && x.dim(0) > 0 && x.dim(2) > 0 &&
      x.dim(3) > 0) {
    plans = PlansFor(state, x.dim(0), x.dim(2), x.dim(3));
  }
  if (!plans.Runs()) return ConvFloat(node, in, out, state.relu());
  out[0] = Tensor::Uninitialized(DataType::kFloat, {x.dim(0), state.filters(), x.dim(2), x.dim(3)});
  try {
    if (plans.chunks > 0) RunPlan(*plans.chunk, x, 0, plans.chunks, out[0]);
    if (plans.singles > 0) RunPlan(*plans.single, x, plans.chunks * kChunk, plans.singles, out[0]);
  } catch (const dnnl::error& e) {  // one of our error family, as every kernel's
    throw Error(ErrorCode::Model, fmt::format("{}: oneDNN: {}", node.Label(), e.what()));
  }
}

}  // namespace

void UseOneDnnConvs(Graph& g) {
  for (Node& node : g.nodes) {
    if (!node.domain.empty() || (node.op != "Conv" && node.op != "Conv+Relu") || node.inputs.size() < 2 ||
        node.outputs.size() != 1 || !ThreeByThreeSame(node))
      continue;
    auto constant = [&](size_t i) -> std::shared_ptr<const Tensor> {
      if (i >= node.inputs.size() || node.inputs[i] < 0) return nullptr;
      return g.constants[static_cast<size_t>(node.inputs[i])];
    };
    const auto weights = constant(1), bias = constant(2);
    if (!weights || weights->type() != DataType::kFloat || weights->rank() != 4 || weights->dim(1) < 16 ||
        weights->dim(0) < 1 || weights->dim(2) != 3 || weights->dim(3) != 3)
      continue;
    const bool has_bias = node.inputs.size() > 2 && node.inputs[2] >= 0;
    if (has_bias && (!bias || bias->type() != DataType::kFloat || bias->rank() != 1 || bias->dim(0) != weights->dim(0)))
      continue;
    node.state = std::make_shared<OneDnnConv>(weights, has_bias ? bias : nullptr, node.op == "Conv+Relu");
    node.kernel = ConvOneDnnKernel;
    node.op += "/oneDNN";
  }
}

}  // namespace runnel::tensor
