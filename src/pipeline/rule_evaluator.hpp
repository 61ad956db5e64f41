// The recommendation rule evaluated by the worker itself (recommend_rule.hpp) when it
// is inside the subset, every r column it reads is one the worker knows per request
// (an input or a written-back output, of the subset's types), and the catalogue, read
// each batch, is small and of the subset's types; otherwise PostgreSQL evaluates it
// per request. Not thread-safe: one per worker.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "runnel/core/batch.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/recommend_rule.hpp"
#include "runnel/pipeline/request_status.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::pipeline {

class RuleEvaluator {
 public:
  static constexpr int64_t kSmallCatalogue = 1000;

  // Decides whether the worker can evaluate [recommend].where (nullopt when not, the
  // reason logged at debug). `write_back_output[i]`: the output column written to
  // write_back[i]. Throws DatabaseError.
  static std::optional<RuleEvaluator> Prepare(postgres::Connection& conn, const PipelineConfig& config,
                                              const std::vector<size_t>& write_back_output);

  // Recommends for the batch's done requests: fills keys() (product keys, request
  // after request) and each request's 1-based [from, to] slice of it. Returns false
  // (nothing filled) when the catalogue as it is now is not for Runnel (too large, a
  // column outside the subset, a NULL key, a bigint past 2^53): PostgreSQL then
  // evaluates the rule for this batch. `inputs` holds the batch's input columns.
  // Throws DatabaseError.
  bool Recommend(postgres::Connection& conn, const std::vector<std::optional<RequestStatus>>& status,
                 const std::vector<std::vector<std::optional<double>>>& outputs, const ColumnBatch& inputs);

  const std::vector<int64_t>& keys() const { return recommended_keys_; }
  const std::vector<int64_t>& from() const { return recommended_from_; }
  const std::vector<int64_t>& to() const { return recommended_to_; }

 private:
  struct RequestColumn {
    int input = -1;   // index into input_columns, or
    int output = -1;  // index into output_columns: the value written back
    RuleColumnKind kind = RuleColumnKind::kFloat8;
  };
  RuleEvaluator(RecommendRule rule, std::vector<RequestColumn> request, std::string catalogue_sql)
      : rule_(std::move(rule)), request_(std::move(request)), catalogue_sql_(std::move(catalogue_sql)) {}
  // Reads the catalogue into the buffers; false when it is not for Runnel.
  bool ReadCatalogue(postgres::Connection& conn);

  RecommendRule rule_;
  std::vector<RequestColumn> request_;
  std::string catalogue_sql_;
  std::vector<int64_t> catalogue_keys_, recommended_keys_, recommended_from_, recommended_to_;
  std::vector<double> catalogue_values_, request_values_;
  std::vector<uint8_t> catalogue_nulls_, request_nulls_;
};

}  // namespace runnel::pipeline
