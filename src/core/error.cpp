#include "runnel/core/error.hpp"

#include <fmt/format.h>

namespace runnel {

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidInput: return "invalid input";
    case ErrorCode::Io: return "i/o error";
    case ErrorCode::Config: return "configuration error";
    case ErrorCode::Database: return "database error";
    case ErrorCode::Model: return "model error";
    case ErrorCode::NotFound: return "not found";
    case ErrorCode::Unavailable: return "unavailable";
  }
  return "error";
}

void RethrowWithContext(const Error& error, std::string_view context) {
  throw Error(error.code(), fmt::format("{}: {}", context, error.what()));
}

}  // namespace runnel
