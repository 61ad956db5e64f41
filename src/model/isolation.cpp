#include "isolation.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>

#include "runnel/core/error.hpp"

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

void WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

int DeadlineMs() {
  if (const char* env = std::getenv("RUNNEL_MODEL_LOAD_TIMEOUT_MS"); env != nullptr && std::atoi(env) > 0) {
    return std::atoi(env);
  }
  return 60000;
}

}  // namespace

namespace {

// One parse in a child process; nullopt when it timed out (the child is killed).
std::optional<LoadedGraph> ParseInChild(const std::string& source, const std::function<LoadedGraph()>& parse) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw Error(ErrorCode::Io, fmt::format("{}: cannot create a pipe", source));
  pid_t pid;
  {
    std::lock_guard lock(Hdf5Mutex());
    pid = ::fork();
  }
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw Error(ErrorCode::Io, fmt::format("{}: cannot fork the model reader", source));
  }
  if (pid == 0) {
    // Never outlive the parent: an orphan would hold its pipes (and a test runner's)
    // open. The parent may already be gone.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() == 1) ::_exit(1);
    ::close(fds[0]);
    std::string message;
    try {
      message = Encode(parse());
    } catch (const Error& e) {
      Writer w;
      w.Pod<char>('E');
      w.Pod(static_cast<int>(e.code()));
      w.Str(e.what());
      message = std::move(w.bytes());
    } catch (const std::exception& e) {
      Writer w;
      w.Pod<char>('E');
      w.Pod(static_cast<int>(ErrorCode::Model));
      w.Str(fmt::format("{}: {}", source, e.what()));
      message = std::move(w.bytes());
    }
    WriteAll(fds[1], message);
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string data;
  bool timed_out = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(DeadlineMs());
  char buffer[1 << 16];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      timed_out = true;
      break;
    }
    ssize_t n = ::read(fds[0], buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    data.append(buffer, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) return std::nullopt;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || data.empty()) {
    throw Error(ErrorCode::Model,
                fmt::format("{}: the HDF5 reader failed on this file ({}): the file is corrupt", source,
                            WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                                                : fmt::format("exit status {}", WEXITSTATUS(status))));
  }
  if (data[0] == 'E') {
    Reader r(data);
    r.Pod<char>();
    auto code = static_cast<ErrorCode>(r.Pod<int>());
    throw Error(code, r.Str());
  }
  return Decode(data);
}

}  // namespace

LoadedGraph ParseIsolated(const std::string& source, const std::function<LoadedGraph()>& parse) {
  // A child forked from a multithreaded process can, rarely, inherit a lock another
  // thread held (seen with the sanitizers' allocator while other threads allocate
  // busily: twice in a row once, in CI) and hang on a good file: a hang is tried again,
  // kAttempts times in all, before the file is called corrupt.
  constexpr int kAttempts = 3;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    if (auto graph = ParseInChild(source, parse)) return std::move(*graph);
    if (attempt < kAttempts)
      spdlog::warn("{}: the HDF5 reader did not answer within {} ms; trying again", source, DeadlineMs());
  }
  throw Error(ErrorCode::Model, fmt::format("{}: reading the file took longer than {} ms, {} times (a corrupt HDF5 "
                                            "file?)",
                                            source, DeadlineMs(), kAttempts));
}

}  // namespace runnel::model
