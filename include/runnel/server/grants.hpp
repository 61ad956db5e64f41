// Least privilege: the rights a serving process (`runnel run`: workers and the HTTP
// API) needs on a migrated database, as GRANT statements for a role that owns
// nothing and is no superuser. `runnel migrate` stays the owner's job.
#pragma once

#include <string>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::server {

// The GRANTs serving `config` needs, for `role` (quoted here): read the source table,
// insert into it (the API) and update only the written-back columns; read the
// recommendation catalogue; use Runnel's tables of the pipeline, the model registry,
// jobs, pauses and API keys; the sequences behind their serial columns. Reads the
// catalog to name those sequences. Throws Error(NotFound) when the pipeline is not
// migrated (run `runnel migrate` first), DatabaseError.
std::vector<std::string> GrantStatements(postgres::Connection& conn, const pipeline::PipelineConfig& config,
                                         const std::string& role);

// Creates the tables every serving process shares when missing (model registry, API
// keys), so that their grants can be given; runs the statements in one transaction.
void ApplyGrants(postgres::Connection& conn, const pipeline::PipelineConfig& config, const std::string& role);

}  // namespace runnel::server
