// /v1/keys: API keys for admins (api_keys.hpp). The secret is in the creation's answer
// only; listings show its first characters.
#include <fmt/format.h>

#include "api.hpp"
#include "runnel/core/duration.hpp"
#include "runnel/server/api_keys.hpp"
#include "runnel/server/request_body.hpp"

namespace runnel::server {

using nlohmann::json;

namespace {

// {"scope": "read|submit|admin", "client": "...", "expires_in": "30d", "note": "..."};
// scope is required.
KeySpec ParseKeySpec(std::string_view body_text) {
  const json body =
      body_text.find_first_not_of(" \t\r\n") == std::string_view::npos ? json::object() : ParseJson(body_text, 0);
  if (!body.is_object()) throw HttpError{422, "the body must be a JSON object {\"scope\": \"submit\", ...}"};
  KeySpec spec;
  json errors = json::array();
  auto error = [&errors](const std::string& field, const std::string& message) {
    errors.push_back({{"field", field}, {"error", message}});
  };
  if (!body.contains("scope")) error("scope", "is required: read, submit or admin");
  for (const auto& [field, value] : body.items()) {
    if (field == "scope") {
      auto scope = value.is_string() ? ParseScope(value.get<std::string>()) : std::nullopt;
      if (!scope) error(field, "must be read, submit or admin");
      spec.scope = scope.value_or(Scope::kRead);
    } else if (field == "client") {
      if (!value.is_null() && (!value.is_string() || value.get<std::string>().empty())) {
        error(field, "must be a non-empty string or null");
      } else if (value.is_string()) {
        spec.client = value.get<std::string>();
      }
    } else if (field == "expires_in") {
      spec.lifetime = value.is_string() ? ParseDuration(value.get<std::string>()) : std::nullopt;
      if (!value.is_null() && !spec.lifetime) error(field, "must be a duration such as \"3600s\", \"12h\" or \"90d\"");
    } else if (field == "note") {
      if (!value.is_string()) error(field, "must be a string");
      if (value.is_string()) spec.note = value.get<std::string>();
    } else {
      error(field, "unknown field: scope, client, expires_in or note");
    }
  }
  if (!errors.empty()) throw HttpError{422, "invalid key", {{"errors", errors}}};
  return spec;
}

class KeysResource {
 public:
  explicit KeysResource(Api& api) : api_(api) {}

  void List(const HttpRequest&, HttpResponse& res, const PathParams&) {
    json keys = json::array();
    for (const auto& key : api_.pool.Run([](postgres::Connection& conn) { return ListKeys(conn); })) {
      keys.push_back(key.ToJson());
    }
    Reply(res, 200, {{"keys", keys}});
  }

  void Create(const HttpRequest& req, HttpResponse& res, const PathParams&) {
    const KeySpec spec = ParseKeySpec(req.body);
    auto created = api_.pool.Run([&](postgres::Connection& conn) { return CreateKey(conn, spec); });
    json body = created.info.ToJson();
    body["key"] = created.secret;
    Reply(res, 201, body);
  }

  void Revoke(const HttpRequest&, HttpResponse& res, const PathParams& m) {
    const int64_t id = IdParam(m[0], "key id");
    if (!api_.pool.Run([&](postgres::Connection& conn) { return RevokeKey(conn, id); })) {
      throw HttpError{404, fmt::format("no unrevoked key {}", id)};
    }
    Reply(res, 200, {{"id", id}, {"revoked", true}});
  }

 private:
  Api& api_;
};

}  // namespace

void AddKeyRoutes(Router& router, Api& any) {
  auto resource = std::make_shared<KeysResource>(any);
  router.Add("GET", "/v1/keys", Bind(resource, &KeysResource::List));
  router.Add("POST", "/v1/keys", Bind(resource, &KeysResource::Create));
  router.Add("DELETE", "/v1/keys/{id}", Bind(resource, &KeysResource::Revoke));
}

}  // namespace runnel::server
