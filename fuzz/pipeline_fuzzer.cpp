// libFuzzer target: pipeline TOML files through LoadPipelineConfig.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "runnel/core/error.hpp"
#include "runnel/pipeline/pipeline_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/runnel-fuzz-pipeline-" + std::to_string(::getpid()) + ".toml";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    runnel::pipeline::LoadPipelineConfig(path);
  } catch (const runnel::Error&) {
  }
  return 0;
}
