#include "runnel/postgres/sqlstate.hpp"

namespace runnel::postgres {

FailureClass ClassifySqlState(std::string_view sqlstate) {
  if (sqlstate.size() != 5) return FailureClass::kSetup;
  const std::string_view cls = sqlstate.substr(0, 2);
  // 08 connection, 40 rollback (deadlock, serialization), 53 insufficient resources,
  // 57 operator intervention (shutdown, cancel), 58 system (I/O) errors.
  if (cls == "08" || cls == "40" || cls == "53" || cls == "57" || cls == "58") return FailureClass::kTransient;
  if (sqlstate == kLockNotAvailable) return FailureClass::kTransient;
  // 22 data exception, 23 integrity constraint, 44 WITH CHECK OPTION, P0 PL/pgSQL
  // RAISE and friends, 38/39 external routine exceptions (user functions, triggers).
  if (cls == "22" || cls == "23" || cls == "44" || cls == "P0" || cls == "38" || cls == "39") {
    return FailureClass::kRow;
  }
  return FailureClass::kSetup;
}

std::string_view FailureClassName(FailureClass failure) {
  switch (failure) {
    case FailureClass::kTransient: return "transient";
    case FailureClass::kRow: return "row";
    case FailureClass::kSetup: return "setup";
  }
  return "setup";
}

}  // namespace runnel::postgres
