// Process-wide allocator policy for serving. Models allocate their values per run; with
// glibc's defaults every large value is a fresh mmap (a page fault per 4 KiB, zeroed
// by the kernel) and every free returns it: a transformer's run spent a third of its
// time there (docs/performance.md). Call once, early, from the process's main.
#pragma once

namespace runnel {

// Large allocations come from the heap (up to 32 MiB each) and up to 64 MiB of freed
// memory per allocation arena (glibc has one per thread at most) is kept for reuse
// instead of being returned to the system. Call before starting threads.
void KeepFreedMemoryForReuse();

}  // namespace runnel
