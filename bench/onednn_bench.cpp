// The tensor runtime's own Conv kernel beside oneDNN's (Debian's libdnnl 2.6), one
// core, on the convolutions of bench/tensor_models.py's CNN: a 3x3 Conv with bias and
// Relu over [batch, C, H, H] float NCHW. Runnel: a one-node graph (Conv fused with its
// Relu, as a model's is) through tensor::Session, the input built once. oneDNN:
// convolution_forward with the same NCHW source and destination, its weights in the
// layout it prefers (reordered once, as a runtime would at load), the Relu as a
// post-op, and the same again with the blocked layout it prefers for source and
// destination too (what it is best at), and that again with the reorders from and to
// NCHW around each call a runtime keeping NCHW between nodes would pay.
// Then matrix products with a constant right-hand side, ours (gemm.hpp) against
// oneDNN's matmul, and a layer norm and a batch norm (the models beside the convs).
// XNNPACK (Debian's libxnnpack-dev, when found at build time) runs the same
// convolutions over NHWC, the only layout it takes (its weights packed at creation, as
// a runtime would at load, Relu as its output clamp), and the same products as its
// fully-connected operator; one thread (no thread pool).
// Prints "<kernel> conv<C>x<H>to<F> batch=<b> <images/s>", "<kernel> matmul<M>x<K>x<N>
// <products/s>" and "<kernel> layernorm|batchnorm batch=<b> <rows/s>";
// bench/onednn_bench.sh runs it.
// Usage: onednn_bench CONV.onnx... (made by tensor_models.py --convs)
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <sstream>
#ifdef RUNNEL_BENCH_XNNPACK
#include <xnnpack.h>

#include <limits>
#endif

#include "runnel/core/memory.hpp"
#include "runnel/tensor/gemm.hpp"
#include "runnel/tensor/graph.hpp"
#include "runnel/tensor/onnx_import.hpp"

namespace {

using runnel::tensor::DataType;
using runnel::tensor::Tensor;

// Calls per second of `run`, each `batch` images, for at least a second.
double ImagesPerSecond(size_t batch, const std::function<void()>& run) {
  run();  // warm up
  size_t done = 0;
  const auto start = std::chrono::steady_clock::now();
  double seconds = 0;
  while (seconds < 1.0) {
    run();
    done += batch;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return static_cast<double>(done) / seconds;
}

struct ConvShape {
  int64_t channels, size, filters;
};

// The conv's shape from its weight initializer [F, C, 3, 3] and input [N, C, H, H].
ConvShape ShapeOf(const runnel::tensor::Graph& graph) {
  const auto& x = graph.input_info.at(0);
  for (size_t id = 0; id < graph.constants.size(); ++id) {
    const auto& c = graph.constants[id];
    if (c && c->rank() == 4) return {c->dim(1), *x.dims.at(2), c->dim(0)};
  }
  throw std::runtime_error("no 4-D weight");
}

double Runnel(const std::shared_ptr<const runnel::tensor::Graph>& graph, const ConvShape& s, int64_t batch,
              const std::vector<float>& image) {
  runnel::tensor::Session session(graph);
  Tensor x = Tensor::Uninitialized(DataType::kFloat, {batch, s.channels, s.size, s.size});
  auto px = x.data<float>();
  std::copy_n(image.begin(), px.size(), px.begin());
  return ImagesPerSecond(static_cast<size_t>(batch), [&] {
    std::vector<Tensor> inputs{x};
    session.Recycle(session.Run(std::move(inputs)));
  });
}

// How the peer's convolution meets the NCHW tensors a runtime holds between nodes: its
// own layout with no conversion (its best case), or converted on the way in and out of
// every call (what it costs a runtime that keeps NCHW, as ours and ONNX's do).
enum class Layout { kNchw, kBlocked, kBlockedReordered };

double OneDnn(const ConvShape& s, int64_t batch, const std::vector<float>& image, Layout layout) {
  const bool blocked = layout != Layout::kNchw;
  using dnnl::memory;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const memory::dims src_dims{batch, s.channels, s.size, s.size}, w_dims{s.filters, s.channels, 3, 3},
      b_dims{s.filters}, dst_dims{batch, s.filters, s.size, s.size};
  const auto f32 = memory::data_type::f32;
  const auto io_tag = blocked ? memory::format_tag::any : memory::format_tag::nchw;
  const memory::desc src_md(src_dims, f32, io_tag), w_md(w_dims, f32, memory::format_tag::any),
      b_md(b_dims, f32, memory::format_tag::a), dst_md(dst_dims, f32, io_tag);
  dnnl::post_ops ops;
  ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);  // oneDNN 2.x
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  const dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                             src_md, w_md, b_md, dst_md, {1, 1}, {1, 1}, {1, 1});
  const dnnl::convolution_forward::primitive_desc pd(desc, attr, engine);
  std::vector<float> weights(static_cast<size_t>(s.filters * s.channels * 9), 0.01f), bias(s.filters, 0.1f);
  memory w_plain({w_dims, f32, memory::format_tag::oihw}, engine, weights.data());
  memory w_mem(pd.weights_desc(), engine);
  dnnl::reorder(w_plain, w_mem).execute(stream, w_plain, w_mem);
  memory b_mem(b_md, engine, bias.data());
  std::vector<float> src(image.begin(), image.begin() + batch * s.channels * s.size * s.size);
  memory src_plain({src_dims, f32, memory::format_tag::nchw}, engine, src.data());
  memory src_mem(pd.src_desc(), engine), dst_mem(pd.dst_desc(), engine);
  std::vector<float> out(static_cast<size_t>(batch * s.filters * s.size * s.size));
  memory dst_plain({dst_dims, f32, memory::format_tag::nchw}, engine, out.data());
  dnnl::reorder to_blocked(src_plain, src_mem), from_blocked(dst_mem, dst_plain);
  to_blocked.execute(stream, src_plain, src_mem);
  dnnl::convolution_forward conv(pd);
  const bool reorders = layout == Layout::kBlockedReordered;
  const double rate = ImagesPerSecond(static_cast<size_t>(batch), [&] {
    if (reorders) to_blocked.execute(stream, src_plain, src_mem);
    conv.execute(stream,
                 {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_BIAS, b_mem}, {DNNL_ARG_DST, dst_mem}});
    if (reorders) from_blocked.execute(stream, dst_mem, dst_plain);
    stream.wait();
  });
  fmt::print(stderr, "onednn {} conv{}x{}to{}: {}\n", blocked ? "blocked" : "nchw", s.channels, s.size, s.filters,
             pd.impl_info_str());
  return rate;
}

#ifdef RUNNEL_BENCH_XNNPACK
// Fails the bench when an XNNPACK call does not succeed.
void Check(xnn_status status, const char* what) {
  if (status != xnn_status_success) throw std::runtime_error(fmt::format("XNNPACK {}: status {}", what, int(status)));
}

// Deletes the operator on scope exit.
struct XnnOperator {
  xnn_operator_t op = nullptr;
  ~XnnOperator() {
    if (op != nullptr) xnn_delete_operator(op);
  }
};

// [n, c, hw] <-> [n, hw, c]: NCHW to NHWC (and back with c and hw swapped), in 8x8
// tiles (a plain loop writes a column of rows 4 KiB apart: the same few cache sets).
void SwapInnerAxes(const float* in, float* out, int64_t n, int64_t rows, int64_t cols) {
  constexpr int64_t kTile = 8;
  for (int64_t b = 0; b < n; ++b, in += rows * cols, out += rows * cols) {
    for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
      for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
        for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r) {
          for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c) out[c * rows + r] = in[r * cols + c];
        }
      }
    }
  }
}

// XNNPACK's 3x3 stride-1 "same" convolution with bias and Relu over NHWC images;
// `transposes`: from and back to NCHW around every call.
double Xnnpack(const ConvShape& s, int64_t batch, const std::vector<float>& image, bool transposes) {
  std::vector<float> weights(static_cast<size_t>(s.filters * s.channels * 9), 0.01f), bias(s.filters, 0.1f);
  XnnOperator conv;
  Check(xnn_create_convolution2d_nhwc_f32(1, 1, 1, 1, 3, 3, 1, 1, 1, 1, 1, static_cast<size_t>(s.channels),
                                          static_cast<size_t>(s.filters), static_cast<size_t>(s.channels),
                                          static_cast<size_t>(s.filters), weights.data(), bias.data(), 0.0f,
                                          std::numeric_limits<float>::infinity(), 0, &conv.op),
        "create convolution");
  std::vector<float> src(image.begin(), image.begin() + batch * s.channels * s.size * s.size);
  std::vector<float> dst(static_cast<size_t>(batch * s.filters * s.size * s.size));
  Check(xnn_setup_convolution2d_nhwc_f32(conv.op, static_cast<size_t>(batch), static_cast<size_t>(s.size),
                                         static_cast<size_t>(s.size), src.data(), dst.data(), nullptr),
        "setup convolution");
  const int64_t hw = s.size * s.size;
  std::vector<float> nchw_in(src), nchw_out(dst.size());
  return ImagesPerSecond(static_cast<size_t>(batch), [&] {
    if (transposes) SwapInnerAxes(nchw_in.data(), src.data(), batch, s.channels, hw);
    Check(xnn_run_operator(conv.op, nullptr), "run");
    if (transposes) SwapInnerAxes(dst.data(), nchw_out.data(), batch, hw, s.filters);
  });
}

// XNNPACK's fully-connected operator: [m, k] x the constant [k, n] (given transposed,
// [n, k], as it takes it), products per second.
double XnnpackMatMul(int64_t m, int64_t k, int64_t n, const std::vector<float>& a, std::vector<float>& c) {
  std::vector<float> weights(static_cast<size_t>(n * k), 0.25f);
  XnnOperator fc;
  Check(xnn_create_fully_connected_nc_f32(static_cast<size_t>(k), static_cast<size_t>(n), static_cast<size_t>(k),
                                          static_cast<size_t>(n), weights.data(), nullptr,
                                          -std::numeric_limits<float>::infinity(),
                                          std::numeric_limits<float>::infinity(), 0, &fc.op),
        "create fully connected");
  Check(xnn_setup_fully_connected_nc_f32(fc.op, static_cast<size_t>(m), a.data(), c.data(), nullptr),
        "setup fully connected");
  return ImagesPerSecond(1, [&] { Check(xnn_run_operator(fc.op, nullptr), "run"); });
}
#endif

// [m, k] x [k, n] with a constant right-hand side (a MatMul or Dense layer's weights,
// packed once): Runnel's packed GEMM against oneDNN's matmul with the weights in the
// layout it prefers. Products per second.
void MatMuls() {
  struct Size {
    int64_t m, k, n;
  };
  // The transformer encoder's feed-forward at batch 16 (16 x 32 tokens), its attention
  // projections, and the needs MLP's widest layers at batch 256.
  for (const Size& z :
       {Size{512, 64, 256}, Size{512, 256, 64}, Size{512, 64, 64}, Size{256, 128, 256}, Size{256, 256, 128}}) {
    std::vector<float> a(static_cast<size_t>(z.m * z.k), 0.5f), b(static_cast<size_t>(z.k * z.n), 0.25f),
        c(static_cast<size_t>(z.m * z.n));
    const auto packed = runnel::tensor::PackMatrix(b.data(), static_cast<size_t>(z.k), static_cast<size_t>(z.n),
                                                   static_cast<size_t>(z.n), false);
    const double ours = ImagesPerSecond(1, [&] {
      runnel::tensor::MultiplyPacked(a.data(), static_cast<size_t>(z.k), static_cast<size_t>(z.m), packed, false,
                                     c.data(), static_cast<size_t>(z.n));
    });
    using dnnl::memory;
    dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    dnnl::stream stream(engine);
    const auto f32 = memory::data_type::f32;
    const memory::desc a_md({z.m, z.k}, f32, memory::format_tag::ab), b_any({z.k, z.n}, f32, memory::format_tag::any),
        c_md({z.m, z.n}, f32, memory::format_tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_any, c_md), engine);
    memory b_plain({{z.k, z.n}, f32, memory::format_tag::ab}, engine, b.data()), b_mem(pd.weights_desc(), engine);
    dnnl::reorder(b_plain, b_mem).execute(stream, b_plain, b_mem);
    memory a_mem(a_md, engine, a.data()), c_mem(c_md, engine, c.data());
    dnnl::matmul mm(pd);
    const double theirs = ImagesPerSecond(1, [&] {
      mm.execute(stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
      stream.wait();
    });
    fmt::print(stderr, "onednn matmul {}x{}x{}: {}\n", z.m, z.k, z.n, pd.impl_info_str());
    fmt::print("runnel matmul{}x{}x{} {:.0f}\nonednn matmul{}x{}x{} {:.0f}\n", z.m, z.k, z.n, ours, z.m, z.k, z.n,
               theirs);
#ifdef RUNNEL_BENCH_XNNPACK
    fmt::print("xnnpack matmul{}x{}x{} {:.0f}\n", z.m, z.k, z.n, XnnpackMatMul(z.m, z.k, z.n, a, c));
#endif
  }
}

// A one-input graph whose output has its input's shape through tensor::Session, `batch`
// rows of `row_shape` from `data`.
double RunnelGraph(const std::string& path, std::vector<int64_t> row_shape, int64_t batch,
                   const std::vector<float>& data) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  runnel::tensor::Session session(runnel::tensor::LoadOnnxGraph(bytes.str(), path));
  row_shape.insert(row_shape.begin(), batch);
  Tensor x = Tensor::Uninitialized(DataType::kFloat, row_shape);
  auto px = x.data<float>();
  std::copy_n(data.begin(), px.size(), px.begin());
  // Each run's output is the next one's input (same shape; normalized values stay
  // bounded): no copy of the input per run, as oneDNN's side makes none.
  std::vector<Tensor> values{std::move(x)};
  return ImagesPerSecond(static_cast<size_t>(batch), [&] { values = session.Run(std::move(values)); });
}

// oneDNN's layer normalization over the last axis of [batch, 32, 64] (statistics
// computed, scale and shift), and its inference batch normalization over [batch, 16,
// 32, 32] NCHW (given statistics, scale and shift).
double OneDnnNorm(bool layer, int64_t batch, const std::vector<float>& data) {
  using dnnl::memory;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const auto f32 = memory::data_type::f32;
  const memory::dims dims = layer ? memory::dims{batch, 32, 64} : memory::dims{batch, 16, 32, 32};
  const memory::desc md(dims, f32, layer ? memory::format_tag::abc : memory::format_tag::nchw);
  const int64_t channels = layer ? 64 : 16;
  std::vector<float> src(data.begin(), data.begin() + batch * (layer ? 32 * 64 : 16 * 32 * 32));
  std::vector<float> dst(src.size()), scale(static_cast<size_t>(channels), 1.1f),
      shift(static_cast<size_t>(channels), 0.1f), mean(static_cast<size_t>(channels), 0.05f),
      variance(static_cast<size_t>(channels), 1.5f);
  const memory::desc c_md({channels}, f32, memory::format_tag::a);
  memory src_mem(md, engine, src.data()), dst_mem(md, engine, dst.data()), scale_mem(c_md, engine, scale.data()),
      shift_mem(c_md, engine, shift.data()), mean_mem(c_md, engine, mean.data()),
      var_mem(c_md, engine, variance.data());
  const auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
  std::function<void()> run;
  std::string impl;
  if (layer) {
    const dnnl::layer_normalization_forward::primitive_desc pd({dnnl::prop_kind::forward_inference, md, 1e-5f, flags},
                                                               engine);
    impl = pd.impl_info_str();
    run = [=, prim = dnnl::layer_normalization_forward(pd)]() mutable {
      prim.execute(
          stream,
          {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_DST, dst_mem}, {DNNL_ARG_SCALE, scale_mem}, {DNNL_ARG_SHIFT, shift_mem}});
      stream.wait();
    };
  } else {
    const dnnl::batch_normalization_forward::primitive_desc pd(
        {dnnl::prop_kind::forward_inference, md, 1e-5f, flags | dnnl::normalization_flags::use_global_stats}, engine);
    impl = pd.impl_info_str();
    run = [=, prim = dnnl::batch_normalization_forward(pd)]() mutable {
      prim.execute(stream, {{DNNL_ARG_SRC, src_mem},
                            {DNNL_ARG_DST, dst_mem},
                            {DNNL_ARG_SCALE, scale_mem},
                            {DNNL_ARG_SHIFT, shift_mem},
                            {DNNL_ARG_MEAN, mean_mem},
                            {DNNL_ARG_VARIANCE, var_mem}});
      stream.wait();
    };
  }
  fmt::print(stderr, "onednn {}: {}\n", layer ? "layernorm" : "batchnorm", impl);
  return ImagesPerSecond(static_cast<size_t>(batch), run);
}

// The normalizations of layernorm.onnx and batchnorm.onnx (tensor_models.py --convs)
// in `dir`, ours then oneDNN's, at batch 1, 16 and 256 (rows: sequences or images).
void Norms(const std::filesystem::path& dir) {
  std::vector<float> data(static_cast<size_t>(256 * 16 * 32 * 32));
  std::mt19937 rng(20261205);
  std::normal_distribution<float> normal;
  for (float& v : data) v = normal(rng);
  for (int64_t batch : {1, 16, 256}) {
    fmt::print("runnel layernorm batch={} {:.0f}\n", batch,
               RunnelGraph((dir / "layernorm.onnx").string(), {32, 64}, batch, data));
    fmt::print("onednn layernorm batch={} {:.0f}\n", batch, OneDnnNorm(true, batch, data));
    fmt::print("runnel batchnorm batch={} {:.0f}\n", batch,
               RunnelGraph((dir / "batchnorm.onnx").string(), {16, 32, 32}, batch, data));
    fmt::print("onednn batchnorm batch={} {:.0f}\n", batch, OneDnnNorm(false, batch, data));
  }
}

}  // namespace

int main(int argc, char** argv) {
  runnel::KeepFreedMemoryForReuse();  // as the runnel binary does
#ifdef RUNNEL_BENCH_XNNPACK
  Check(xnn_initialize(nullptr), "initialize");
#endif
  if (argc < 2) {
    fmt::print(stderr, "usage: onednn_bench CONV.onnx...\n");
    return 2;
  }
  MatMuls();
  Norms(std::filesystem::path(argv[1]).parent_path());
  for (int m = 1; m < argc; ++m) {
    std::ifstream in(argv[m], std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    const auto graph = runnel::tensor::LoadOnnxGraph(bytes.str(), argv[m]);
    const ConvShape s = ShapeOf(*graph);
    const std::string name = fmt::format("conv{}x{}to{}", s.channels, s.size, s.filters);
    std::vector<float> image(static_cast<size_t>(256 * s.channels * s.size * s.size));
    std::mt19937 rng(20261205);
    std::normal_distribution<float> normal;
    for (float& v : image) v = normal(rng);
    for (int64_t batch : {1, 16, 256}) {
      fmt::print("runnel {} batch={} {:.0f}\n", name, batch, Runnel(graph, s, batch, image));
      fmt::print("onednn-nchw {} batch={} {:.0f}\n", name, batch, OneDnn(s, batch, image, Layout::kNchw));
      fmt::print("onednn-blocked {} batch={} {:.0f}\n", name, batch, OneDnn(s, batch, image, Layout::kBlocked));
      fmt::print("onednn-blocked+reorders {} batch={} {:.0f}\n", name, batch,
                 OneDnn(s, batch, image, Layout::kBlockedReordered));
#ifdef RUNNEL_BENCH_XNNPACK
      fmt::print("xnnpack-nhwc {} batch={} {:.0f}\n", name, batch, Xnnpack(s, batch, image, false));
      fmt::print("xnnpack-nhwc+transposes {} batch={} {:.0f}\n", name, batch, Xnnpack(s, batch, image, true));
#endif
    }
  }
  return 0;
}
