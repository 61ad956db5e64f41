# Compile options shared by every Runnel target: warnings, optional -Werror and sanitizers.
add_library(runnel_options INTERFACE)
target_compile_options(runnel_options INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor)
if(RUNNEL_NATIVE)
  # Runnel is built where it runs (make demo, make test): use the host's vector units.
  target_compile_options(runnel_options INTERFACE -march=native)
endif()
if(RUNNEL_WERROR)
  target_compile_options(runnel_options INTERFACE -Werror)
endif()
if(RUNNEL_SANITIZE)
  target_compile_options(runnel_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                                                  -fno-sanitize-recover=undefined)
  target_link_options(runnel_options INTERFACE -fsanitize=address,undefined)
endif()
