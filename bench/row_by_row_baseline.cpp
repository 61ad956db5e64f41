// The reference implementations' way, for comparison with `runnel run`: per request,
// fetch the row, predict it alone, update it, query its products — each statement its
// own round trip and transaction. Same features and model code as Runnel.
//
// usage: row_by_row_baseline CONNINFO PIPELINE.toml FIRST_KEY COUNT
// prints: {"requests": N, "seconds": S, "requests_per_second": R}
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>

#include "runnel/core/error.hpp"
#include "runnel/features/features.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/postgres/connection.hpp"

using namespace runnel;

int main(int argc, char** argv) {
  if (argc != 5) {
    fmt::print(stderr, "usage: {} CONNINFO PIPELINE FIRST_KEY COUNT\n", argv[0]);
    return 2;
  }
  try {
    auto config = pipeline::LoadPipelineConfig(argv[2]);
    auto model = model::LoadModel(*config.model_path);
    auto program = features::FeatureProgram::Compile(config.features, argv[2]);
    model::ModelSession session(model);
    auto conn = postgres::Connection::Open(argv[1]);
    const int64_t first = std::atoll(argv[3]), count = std::atoll(argv[4]);
    std::string select = "SELECT ";
    for (size_t i = 0; i < config.features.input_columns.size(); ++i) {
      select += (i ? ", " : "") + postgres::QuoteIdentifier(config.features.input_columns[i]) + "::float8";
    }
    select += fmt::format(" FROM {} WHERE {} = $1", postgres::QuoteIdentifier(config.table),
                          postgres::QuoteIdentifier(config.key_columns.front()));
    const std::string update =
        fmt::format("UPDATE {} SET risk_propensity = $2, financial_status = $3 WHERE {} = $1",
                    postgres::QuoteIdentifier(config.table), postgres::QuoteIdentifier(config.key_columns.front()));
    const std::string products =
        fmt::format("SELECT p.{} FROM {} r JOIN {} p ON ({}) WHERE r.{} = $1",
                    postgres::QuoteIdentifier(config.recommend->key_column), postgres::QuoteIdentifier(config.table),
                    postgres::QuoteIdentifier(config.recommend->table), config.recommend->where,
                    postgres::QuoteIdentifier(config.key_columns.front()));
    ColumnBatch batch;
    features::FeatureOutput out;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t key = first; key < first + count; ++key) {
      auto row = conn.Exec(select, postgres::Params().Add(key));
      batch.Reset(config.features.input_columns, 1);
      for (size_t c = 0; c < config.features.input_columns.size(); ++c) {
        if (!row.IsNull(0, static_cast<int>(c))) batch.Set(c, 0, row.Get<double>(0, static_cast<int>(c)));
      }
      program.Evaluate(batch, out);
      auto prediction = session.Predict(out.matrix, 1);
      conn.Exec(update, postgres::Params().Add(key).Add(static_cast<double>(prediction[0])).Add(out.derived[0][0]));
      conn.Exec(products, postgres::Params().Add(key));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("{{\"requests\": {}, \"seconds\": {:.3f}, \"requests_per_second\": {:.0f}}}\n", count, seconds,
               static_cast<double>(count) / seconds);
  } catch (const Error& e) {
    fmt::print(stderr, "row_by_row_baseline: {}\n", e.what());
    return 1;
  }
  return 0;
}
