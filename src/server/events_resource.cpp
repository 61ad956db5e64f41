// GET /v1/pipelines/{p}/events[?client=...]: Server-Sent Events of served requests,
// resumable with Last-Event-ID (see event_hub.hpp).
#include <fmt/format.h>

#include "api.hpp"
#include "runnel/server/event_hub.hpp"

namespace runnel::server {

namespace {

// Hands the transport's sink to the hub once the head is written.
class EventStream : public ResponseStream {
 public:
  EventStream(EventHub& hub, std::optional<std::string> client, std::optional<EventPosition> after)
      : hub_(hub), client_(std::move(client)), after_(after) {}

  void Start(std::shared_ptr<StreamSink> sink) override {
    // EventSource reconnects after `retry` ms, sending the last id it saw.
    if (!sink->Write("retry: 1000\n: subscribed\n\n") || !hub_.Subscribe(sink, client_, after_)) sink->Close();
  }

 private:
  EventHub& hub_;
  std::optional<std::string> client_;
  std::optional<EventPosition> after_;
};

class EventsResource {
 public:
  explicit EventsResource(Api& api) : api_(api) {}

  void Subscribe(const HttpRequest& req, HttpResponse& res, const PathParams&) {
    EventHub* hub = api_.ctx.events;
    if (hub == nullptr) throw HttpError{404, "result events are not served by this process"};
    std::optional<std::string> client;
    if (auto value = req.Query("client")) {
      if (api_.config.client_column.empty())
        throw HttpError{422, fmt::format("pipeline '{}' has no client column to filter on", api_.config.name)};
      client = std::string(*value);
      api_.CheckOwnClient(req, *client);
    }
    if (auto own = api_.ReadableClient(req)) client = std::move(own);
    std::optional<EventPosition> after;
    const auto last = req.Header("Last-Event-ID") ? req.Header("Last-Event-ID") : req.Query("after");
    if (last && !last->empty()) {
      after = EventPosition::Parse(*last);
      if (!after) throw HttpError{422, fmt::format("Last-Event-ID '{}' is not an event id (TXID-ID-N)", *last)};
    }
    if (hub->subscribers() >= hub->max_subscribers()) {
      res.SetHeader("Retry-After", "1");
      throw HttpError{503, fmt::format("{} subscribers already: retry later", hub->max_subscribers())};
    }
    res.status = 200;
    res.content_type = "text/event-stream";
    res.stream = std::make_shared<EventStream>(*hub, std::move(client), after);
  }

 private:
  Api& api_;
};

}  // namespace

void AddEventRoutes(Router& router, Api& api) {
  auto resource = std::make_shared<EventsResource>(api);
  router.AddForPipeline(api.config.name, "GET", "/v1/pipelines/{p}/events", Bind(resource, &EventsResource::Subscribe),
                        RouteOptions::For(Scope::kRead));
}

}  // namespace runnel::server
