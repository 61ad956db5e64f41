// The API's pure parts, without sockets or a database: routing, request targets,
// the body parsers (records, multipart), and how pipelines share workers.
#include <gtest/gtest.h>

#include "runnel/server/event_hub.hpp"
#include "runnel/server/http_message.hpp"
#include "runnel/server/request_body.hpp"
#include "runnel/server/router.hpp"
#include "runnel/server/service.hpp"

namespace runnel::server {
namespace {

using nlohmann::json;

HttpRequest Request(std::string method, std::string_view target) {
  HttpRequest req;
  req.method = std::move(method);
  ParseTarget(target, req);
  return req;
}

int StatusOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const HttpError& e) {
    return e.status;
  }
  return 0;
}

TEST(RouterTest, MatchesSegmentsMethodsAndHead) {
  Router router;
  std::string seen;
  router.Add("GET", "/v1/pipelines/{p}/requests/{id}", [&](const HttpRequest&, HttpResponse& res, const PathParams& m) {
    seen = m[0] + "/" + m[1];
    Reply(res, 200, {{"ok", true}});
  });
  router.Add("POST", "/v1/pipelines/{p}/requests/{id}/retry",
             [](const HttpRequest&, HttpResponse&, const PathParams&) {});
  HttpResponse res;
  EXPECT_EQ(router.Dispatch(Request("GET", "/v1/pipelines/needs/requests/42"), res, nullptr),
            "/v1/pipelines/{p}/requests/{id}");
  EXPECT_EQ(seen, "needs/42");
  EXPECT_EQ(res.status, 200);
  HttpResponse head;
  router.Dispatch(Request("HEAD", "/v1/pipelines/needs/requests/42"), head, nullptr);
  EXPECT_EQ(head.status, 200);
  HttpResponse wrong;
  router.Dispatch(Request("DELETE", "/v1/pipelines/needs/requests/42"), wrong, nullptr);
  EXPECT_EQ(wrong.status, 405);
  ASSERT_EQ(wrong.headers.size(), 1u);
  EXPECT_EQ(wrong.headers[0], (std::pair<std::string, std::string>("Allow", "GET")));
  HttpResponse missing;
  EXPECT_EQ(router.Dispatch(Request("GET", "/v1/pipelines/needs/requests/"), missing, nullptr), "unmatched");
  EXPECT_EQ(missing.status, 404) << "an empty segment matches no {name}";
}

TEST(RouterTest, ExceptionsBecomeStatuses) {
  Router router;
  router.Add("GET", "/http", [](const HttpRequest&, HttpResponse&, const PathParams&) { throw HttpError{418, "tea"}; });
  router.Add("GET", "/input",
             [](const HttpRequest&, HttpResponse&, const PathParams&) { throw Error(ErrorCode::InvalidInput, "bad"); });
  router.Add("GET", "/bug",
             [](const HttpRequest&, HttpResponse&, const PathParams&) { throw std::runtime_error("boom"); });
  for (const auto& [path, status] :
       std::vector<std::pair<std::string, int>>{{"/http", 418}, {"/input", 422}, {"/bug", 500}}) {
    HttpResponse res;
    router.Dispatch(Request("GET", path), res, nullptr);
    EXPECT_EQ(res.status, status) << path;
    EXPECT_TRUE(json::parse(res.body).contains("error")) << res.body;
  }
}

// Several pipelines in one process: one route per pattern, the handler picked by the
// pipeline in the path; an unknown one is a 404 naming those served.
TEST(RouterTest, PipelineRoutesDispatchOnThePipelineName) {
  Router router;
  std::string seen;
  for (const std::string name : {"needs", "wine"}) {
    router.AddForPipeline(name, "GET", "/v1/pipelines/{p}/requests/{id}",
                          [&seen, name](const HttpRequest&, HttpResponse& res, const PathParams& m) {
                            seen = name + ":" + m[1];
                            Reply(res, 200, {{"ok", true}});
                          });
  }
  HttpResponse res;
  EXPECT_EQ(router.Dispatch(Request("GET", "/v1/pipelines/wine/requests/3"), res, nullptr),
            "/v1/pipelines/{p}/requests/{id}");
  EXPECT_EQ(seen, "wine:3");
  router.Dispatch(Request("GET", "/v1/pipelines/needs/requests/4"), res, nullptr);
  EXPECT_EQ(seen, "needs:4");
  HttpResponse unknown;
  router.Dispatch(Request("GET", "/v1/pipelines/other/requests/4"), unknown, nullptr);
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(json::parse(unknown.body)["error"], "unknown pipeline 'other' (this process serves: needs, wine)");
  HttpResponse wrong;
  router.Dispatch(Request("POST", "/v1/pipelines/needs/requests/4"), wrong, nullptr);
  EXPECT_EQ(wrong.status, 405) << "one route per pattern, however many pipelines";
}

TEST(ServiceTest, WorkersAreSharedByThePipelines) {
  EXPECT_EQ(WorkerShares(2, 1), (std::vector<size_t>{2}));
  EXPECT_EQ(WorkerShares(5, 2), (std::vector<size_t>{3, 2}));
  EXPECT_EQ(WorkerShares(6, 3), (std::vector<size_t>{2, 2, 2}));
  EXPECT_EQ(WorkerShares(0, 3), (std::vector<size_t>{0, 0, 0})) << "the API only";
  try {
    WorkerShares(2, 3);
    ADD_FAILURE() << "a pipeline without a worker is never served";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidInput);
    EXPECT_NE(std::string(e.what()).find("--workers 3"), std::string::npos) << e.what();
  }
}

TEST(RouterTest, LanesFollowTheRouteAndTheWaitParameter) {
  Route route;
  route.options.wait_on_query = true;
  EXPECT_EQ(route.LaneFor(Request("POST", "/x")), Lane::kHandler);
  EXPECT_EQ(route.LaneFor(Request("POST", "/x?wait=100")), Lane::kWait);
  route.options = {};
  route.options.lane = Lane::kInline;
  EXPECT_EQ(route.LaneFor(Request("GET", "/x?wait=1")), Lane::kInline);
}

TEST(HttpMessageTest, TargetsAreDecodedAndCheckedNamingThePlace) {
  auto req = Request("GET", "/v1/n%C3%A9eds/x?status=done&a+b=c%20d&flag&&x=");
  EXPECT_EQ(req.path,
            "/v1/n\xC3\xA9"
            "eds/x");
  ASSERT_EQ(req.query.size(), 4u);
  EXPECT_EQ(req.Query("a b"), "c d");
  EXPECT_EQ(req.Query("flag"), "");
  EXPECT_EQ(req.Query("x"), "");
  EXPECT_FALSE(req.Query("missing"));
  for (const char* bad : {"/a%ZZ", "/a%4", "/a%", "/a?x=%e9", "/a%ff", "/a?%ff=1"}) {
    EXPECT_EQ(StatusOf([&] { Request("GET", bad); }), 400) << bad;
  }
  try {
    Request("GET", "/a?status=d%C3one");
  } catch (const HttpError& e) {
    EXPECT_NE(e.message.find("query parameter 'status'"), std::string::npos) << e.message;
  }
}

TEST(HttpMessageTest, Utf8ValidationRefusesOverlongSurrogatesAndTruncation) {
  EXPECT_FALSE(InvalidUtf8At("plain \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_EQ(InvalidUtf8At("ab\xC0\xAF"), 2u);         // overlong '/'
  EXPECT_EQ(InvalidUtf8At("\xED\xA0\x80"), 0u);       // a surrogate
  EXPECT_EQ(InvalidUtf8At("x\xF4\x90\x80\x80"), 1u);  // past U+10FFFF
  EXPECT_EQ(InvalidUtf8At("xy\xE2\x82"), 2u);         // truncated
  EXPECT_EQ(InvalidUtf8At("\x80"), 0u);               // a lone continuation byte
}

TEST(HttpMessageTest, HeadersAreFoundCaseInsensitively) {
  HttpRequest req;
  req.headers = {{"content-TYPE", "application/json"}};
  EXPECT_EQ(req.HeaderOr("Content-Type"), "application/json");
  EXPECT_FALSE(req.Header("Content-Length"));
}

TEST(RequestBodyTest, RecordsFromObjectsArraysAndNdjson) {
  EXPECT_EQ(ParseRecords(R"({"a": 1})", "application/json").size(), 1u);
  EXPECT_EQ(ParseRecords(R"([{"a": 1}, {"a": 2}])", "application/json").size(), 2u);
  EXPECT_EQ(ParseRecords("{\"a\": 1}\n\n  \r\n{\"a\": 2}\n", "application/x-ndjson").size(), 2u);
  EXPECT_EQ(ParseRecords(R"([{"a": 1}])", "application/x-www-form-urlencoded").size(), 1u) << "curl -d's JSON";
  EXPECT_EQ(StatusOf([] { ParseRecords("a=1&b=2", "application/x-www-form-urlencoded"); }), 415);
  EXPECT_EQ(StatusOf([] { ParseRecords("[]", "application/json"); }), 422);
  EXPECT_EQ(StatusOf([] { ParseRecords("\n\n", "application/x-ndjson"); }), 422);
  EXPECT_EQ(StatusOf([] { ParseRecords("", "application/json"); }), 400);
  EXPECT_EQ(StatusOf([] { ParseRecords(R"({"a": 39e7777})", "application/json"); }), 400) << "found by the fuzzer";
  try {
    ParseRecords("{\"a\": 1}\n{\"b\": \xC3\x28}", "application/x-ndjson");
    ADD_FAILURE();
  } catch (const HttpError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.details["offset"], 15) << e.message;  // the line's offset plus the byte's
  }
  std::string many;
  for (size_t i = 0; i <= kMaxRecordsPerRequest; ++i) many += "{}\n";
  EXPECT_EQ(StatusOf([&] { ParseRecords(many, "application/x-ndjson"); }), 413);
  EXPECT_TRUE(IsSingleRecord(" \n{\"a\": 1}", "application/json"));
  EXPECT_FALSE(IsSingleRecord("[{}]", "application/json"));
  EXPECT_FALSE(IsSingleRecord("{}", "application/x-ndjson"));
}

TEST(RequestBodyTest, MultipartPartsAndMalformedBodies) {
  const std::string type = "multipart/form-data; boundary=XyZ";
  const std::string body =
      "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.h5\"\r\n"
      "Content-Type: application/octet-stream\r\n\r\nbytes\r\n--XyZ\r\n"
      "content-disposition: form-data; name=description\r\n\r\nwhite wine\r\n--XyZ--\r\n";
  auto parts = ParseMultipart(body, type);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].name, "file");
  EXPECT_EQ(parts[0].filename, "m.h5");
  EXPECT_EQ(parts[0].content, "bytes");
  EXPECT_EQ(parts[1].name, "description");
  EXPECT_EQ(parts[1].content, "white wine");
  for (const auto& [bad_type, bad_body] : std::vector<std::pair<std::string, std::string>>{
           {"multipart/form-data", body},
           {type, "no boundary here"},
           {type, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated"},
           {type, "--XyZ\r\nX: y\r\n\r\nno disposition\r\n--XyZ--"},
           {type, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nno blank line\r\n--XyZ--"},
           {type, "--XyZjunk"}}) {
    EXPECT_EQ(StatusOf([&] { ParseMultipart(bad_body, bad_type); }), 400) << bad_body;
  }
}

}  // namespace
}  // namespace runnel::server

namespace runnel::server {
namespace {

TEST(EventPositionTest, IdsRoundTripAndOrderAndMalformedOnesAreRefused) {
  const EventPosition pos{1042, 17, 3};
  EXPECT_EQ(pos.ToString(), "1042-17-3");
  EXPECT_EQ(EventPosition::Parse("1042-17-3"), pos);
  EXPECT_LT((EventPosition{1042, 17, 3}), (EventPosition{1042, 18, 1}));
  EXPECT_LT((EventPosition{1042, 17, 3}), (EventPosition{1043, 1, 1}));
  EXPECT_EQ(EventPosition::Parse("18446744073709551615-9223372036854775807-1")->txid, 18446744073709551615ull);
  for (const char* bad :
       {"", "1-2", "1-2-3-4", "1--2-3", "-1-2-3", "1-2-x", "1-2-3 ", "a-b-c", "1-2-", "18446744073709551616-1-1"}) {
    EXPECT_FALSE(EventPosition::Parse(bad)) << bad;
  }
}

}  // namespace
}  // namespace runnel::server
