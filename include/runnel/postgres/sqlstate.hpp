// One SQLSTATE policy for every caller that must decide what a database error means:
// the serving workers (retry the batch, fail the rows, or pause) and the HTTP API
// (503, 422 or 500). PostgreSQL's error classes, Appendix A of its manual.
#pragma once

#include <string_view>

namespace runnel::postgres {

enum class FailureClass {
  kTransient,  // retrying later succeeds: lost connection, deadlock, serialization
               // failure, lock timeout, resources, shutdown, cancel
  kRow,        // about the data of some rows: data exceptions (22), integrity
               // constraints (23), errors raised by user code (P0, 38, 39, 44)
  kSetup,      // about the database's objects or rights (undefined table or column,
               // permission denied, changed types): retrying repeats it until fixed
};

// Classifies a five-character SQLSTATE. Unknown classes are kSetup: stopping to
// look is safer than failing rows or retrying in a loop.
FailureClass ClassifySqlState(std::string_view sqlstate);

// "transient", "row" or "setup": for logs and metrics labels.
std::string_view FailureClassName(FailureClass failure);

// The SQLSTATE of a lock_timeout expiring (lock_not_available): transient for a
// batch, but the worker first looks for the rows another transaction holds.
inline constexpr std::string_view kLockNotAvailable = "55P03";
// insufficient_privilege: also "must be owner of" a table a migration alters.
inline constexpr std::string_view kInsufficientPrivilege = "42501";
// unique_violation: the worker's results insert meeting a key served before.
inline constexpr std::string_view kUniqueViolation = "23505";

}  // namespace runnel::postgres
