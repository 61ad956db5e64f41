// A request's status as stored in runnel_<name>_results.status and shown by the API.
#pragma once

#include <optional>
#include <string_view>

namespace runnel::pipeline {

enum class RequestStatus {
  kQueued,     // captured (or re-queued by `runnel retry`) and not served yet
  kDone,       // scored; outputs written back
  kThrottled,  // over its client's quota: not scored
  kFailed,     // not scored, or its write-back refused: error and sqlstate say why
  kGone,       // its row was deleted before it was served: nothing to score
  // Update capture: its row changed again (a newer request for it was queued) between
  // the claim and the write-back; the newer one is served instead, so this one's
  // outputs were not written. Set by the results statement, never by the worker.
  kSuperseded,
};

// "queued", "done", "throttled", "failed", "gone", "superseded": the stored spelling.
std::string_view RequestStatusName(RequestStatus status);
// The inverse of RequestStatusName; nullopt for anything else.
std::optional<RequestStatus> ParseRequestStatus(std::string_view name);

}  // namespace runnel::pipeline
