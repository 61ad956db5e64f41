// Parsing untrusted files with a library we cannot harden (libhdf5 1.10 has memory
// errors and endless loops on corrupt files) happens in a forked child process
// (core/isolation.hpp): the child parses and streams the resulting graph back; a crash,
// a hang past the deadline or a failure there becomes one Error(Model) naming the file
// in the parent.
#pragma once

#include <functional>
#include <string>

#include "loaders.hpp"

namespace runnel::model {

// Runs `parse` in a child process (RunIsolated) and returns its graph. Errors thrown by
// `parse` keep their message. The deadline is $RUNNEL_MODEL_LOAD_TIMEOUT_MS (default
// 60000).
// Thread safety: may be called from several threads; HDF5 use is serialised by the
// library lock, which is held across fork() so no child inherits it taken.
LoadedGraph ParseIsolated(const std::string& source, const std::function<LoadedGraph()>& parse);

}  // namespace runnel::model
