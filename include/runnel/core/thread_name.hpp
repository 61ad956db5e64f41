// Names for the process's threads, as `top -H`, `ps -L`, perf and gdb show them: which
// thread is busy (an I/O thread, a pipeline's worker, the ingest) is then visible
// without a debugger.
//
// Thread safety: names the calling thread only.
#pragma once

#include <string>
#include <string_view>

namespace runnel {

// Names the calling thread. Linux keeps 15 bytes of a name; a longer one is cut there
// (its end is usually the distinguishing part, so callers put that first). Failure is
// ignored: a name is for people, not for the program.
void NameThisThread(std::string_view name);

// The calling thread's name ("" if it cannot be read).
std::string ThisThreadName();

}  // namespace runnel
