// The dashboard's files (src/server/dashboard/), built into the binary by
// cmake/EmbedFiles.cmake: no CDN, nothing read from disk at run time.
#pragma once

#include <span>
#include <string_view>

namespace runnel::server {

struct DashboardAsset {
  std::string_view name;  // "index.html", "dashboard.js"
  std::string_view bytes;
};

std::span<const DashboardAsset> DashboardAssets();

}  // namespace runnel::server
