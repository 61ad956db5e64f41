// The one exception family every Runnel module throws for expected failures:
// bad user input, unreadable files, database errors, unusable models. Programmer
// errors are asserts, not exceptions. Callers that must not throw (hot loops over
// rows) record per-row failures as data instead, see features/ and pipeline/.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace runnel {

enum class ErrorCode {
  InvalidInput,  // a user's file, row, flag or request is malformed
  Io,            // a file or process could not be read, written or started
  Config,        // configuration (TOML, environment, flags) is wrong
  Database,      // PostgreSQL reported an error or the connection failed
  Model,         // a model file is malformed or uses something unsupported
  NotFound,      // a named thing (binary, table, model, request) does not exist
  Unavailable,   // a resource is busy or a service is not running
};

std::string_view ErrorCodeName(ErrorCode code);

// Thread safety: immutable after construction.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}

  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// Prefixes the message of an Error with context ("reading pipeline.toml: ...")
// while keeping its code. Use when rethrowing across a module boundary.
[[noreturn]] void RethrowWithContext(const Error& error, std::string_view context);

}  // namespace runnel
