#include "runnel/core/thread_name.hpp"

#include <pthread.h>

#include <array>

namespace runnel {

void NameThisThread(std::string_view name) {
  constexpr size_t kLinuxMax = 15;  // and the terminating NUL: 16 bytes
  const std::string cut(name.substr(0, kLinuxMax));
  ::pthread_setname_np(::pthread_self(), cut.c_str());
}

std::string ThisThreadName() {
  std::array<char, 16> name{};
  if (::pthread_getname_np(::pthread_self(), name.data(), name.size()) != 0) return "";
  return name.data();
}

}  // namespace runnel
