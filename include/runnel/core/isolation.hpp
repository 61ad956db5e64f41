// Running a library we cannot harden on untrusted input (libhdf5 1.10 has memory errors
// and endless loops on corrupt files; libonnx 1.12's shape inference crashes on
// malformed graphs) in a forked child process: the child does the work and sends its
// result back as bytes; a crash, a hang past the deadline or a failure there becomes
// one Error in the parent, naming the file.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

namespace runnel {

struct IsolatedCall {
  std::string source;  // the file, named first in every error
  std::string what;    // what runs in the child, for errors: "the HDF5 reader"
  // Held while forking, when set: a lock the child's work takes, so that no child
  // inherits it held by a thread of the parent that does not exist in the child.
  std::mutex* fork_lock = nullptr;
};

// Runs `work` in a child process forked from this one (it sees this process's memory as
// it was at the fork) and returns the bytes it returned. An Error thrown by `work` is
// thrown again here with its code and message; another exception becomes Error(Model)
// naming `call.source`. A child that dies (a signal, an exit) is Error(Model) "<source>:
// <what> failed on this file (signal 11): the file is corrupt". A child that does not
// answer within $RUNNEL_MODEL_LOAD_TIMEOUT_MS (default 60000) is killed and tried again,
// three times in all (a child forked from a multithreaded process can, rarely, inherit
// a lock held by another thread), then Error(Model) "<source>: <what> took longer than
// N ms, 3 times". Throws Error(Io) when no pipe or process can be made.
// Thread safety: may be called from several threads at once.
std::string RunIsolated(const IsolatedCall& call, const std::function<std::string()>& work);

// How many child processes RunIsolated has forked in this process so far (each try
// counts). Thread safety: any thread.
uint64_t IsolatedChildrenForked();

}  // namespace runnel
