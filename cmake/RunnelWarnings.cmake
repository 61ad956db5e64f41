# Compile options shared by every Runnel target: warnings, optional -Werror and sanitizers.
add_library(runnel_options INTERFACE)
target_compile_options(runnel_options INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor)
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  # The locking contracts of include/runnel/core/mutex.hpp, checked (the fuzz build).
  target_compile_options(runnel_options INTERFACE -Wthread-safety)
endif()
if(RUNNEL_NATIVE)
  # Runnel is built where it runs (make demo, make test): use the host's vector units.
  target_compile_options(runnel_options INTERFACE -march=native)
endif()
# GCC and Clang note that passing a 64-byte vector (src/tensor/simd.hpp's V16) by value
# has another ABI where AVX-512 is off (an AVX2 host). Every Runnel object is built with
# the same flags and the functions that take them are internal, so the note is moot;
# under -Werror it stopped the build on AVX2-only machines.
target_compile_options(runnel_options INTERFACE -Wno-psabi)
if(RUNNEL_WERROR)
  target_compile_options(runnel_options INTERFACE -Werror)
endif()
if(RUNNEL_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "RUNNEL_FUZZ needs clang: configure with -DCMAKE_CXX_COMPILER=clang++")
  endif()
  target_compile_options(runnel_options INTERFACE -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  target_link_options(runnel_options INTERFACE -fsanitize=address,undefined)
endif()
if(RUNNEL_SANITIZE)
  target_compile_options(runnel_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                                                  -fno-sanitize-recover=undefined)
  target_link_options(runnel_options INTERFACE -fsanitize=address,undefined)
endif()
