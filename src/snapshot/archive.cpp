// Parquet archives of a snapshot's requests, partitioned hive-style.
#include <fmt/format.h>

#include <algorithm>

#include "duckdb.hpp"
#include "runnel/core/error.hpp"
#include "runnel/snapshot/snapshot.hpp"

namespace runnel::snapshot {

namespace fs = std::filesystem;

ArchiveOutcome Archive(const Reader& reader, const fs::path& out, ArchiveBy by) {
  std::error_code ec;
  const auto status = fs::symlink_status(out, ec);
  if (status.type() == fs::file_type::symlink) {
    throw Error(ErrorCode::InvalidInput, fmt::format("{}: a symbolic link; give a directory", out.string()));
  }
  if (fs::exists(status) && (!fs::is_directory(status) || !fs::is_empty(out, ec))) {
    throw Error(ErrorCode::InvalidInput, fmt::format("{}: exists and is not an empty directory", out.string()));
  }
  // Read-only: the archive reads the snapshot; only the COPY writes, to `out`.
  duck::Database db(reader.info().path.string(),
                    {{"access_mode", "READ_ONLY"}, {"autoinstall_known_extensions", "false"}, {"threads", "2"}});
  duck::Connection conn(db);
  const std::string partition = by == ArchiveBy::Day ? "day" : "model_version";
  const std::string select =
      by == ArchiveBy::Day ? "SELECT *, CAST(finished_at AS DATE) AS day FROM requests" : "SELECT * FROM requests";
  const std::string rows =
      conn.Scalar(fmt::format("COPY ({}) TO {} (FORMAT parquet, PARTITION_BY ({}), OVERWRITE_OR_IGNORE)", select,
                              duck::Literal(out.string()), partition),
                  fmt::format("archive to {}", out.string()));
  ArchiveOutcome outcome;
  outcome.dir = out;
  outcome.rows = rows.empty() ? 0 : std::stoll(rows);
  if (fs::exists(out)) {
    for (const auto& entry : fs::recursive_directory_iterator(out)) {
      if (entry.is_regular_file() && entry.path().extension() == ".parquet") outcome.files.push_back(entry.path());
    }
  }
  std::sort(outcome.files.begin(), outcome.files.end());
  return outcome;
}

}  // namespace runnel::snapshot
