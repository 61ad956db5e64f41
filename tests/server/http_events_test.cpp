// Issue #13, result subscriptions: Server-Sent Events of served requests to 1,000
// subscribers (most filtered by client), exactly once and in order across forced
// reconnects with Last-Event-ID; heartbeats; the NOTIFY channel for SQL clients.
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "http_api_fixture.hpp"
#include "runnel/core/csv.hpp"

namespace runnel::server {
namespace {

using nlohmann::json;
using postgres::Params;
using test::Eventually;
using test::HttpApiTest;
using test::RaiseFileLimit;
using Clock = std::chrono::steady_clock;

// One SSE subscription over a raw socket; frames are parsed as they arrive.
struct SseClient {
  int fd = -1;
  std::string buffer;
  std::vector<int64_t> keys;       // request ids received, in order
  std::vector<EventPosition> ids;  // their event ids
  std::vector<std::string> statuses;
  int heartbeats = 0;
  bool head_ok = false;
  bool closed = false;

  SseClient(int port, const std::string& query, const std::optional<std::string>& last_event_id) {
    fd = test::ConnectLoopback(port);
    if (fd < 0) closed = true;
    std::string request =
        fmt::format("GET /v1/pipelines/needs/events{} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n", query);
    if (last_event_id) request += fmt::format("Last-Event-ID: {}\r\n", *last_event_id);
    request += "\r\n";
    if (!closed && ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size()))
      closed = true;
  }
  ~SseClient() { Close(); }
  SseClient(const SseClient&) = delete;
  SseClient& operator=(const SseClient&) = delete;

  void Close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
    closed = true;
  }

  void Read() {
    char buf[65536];
    const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
      Close();
      return;
    }
    if (n > 0) buffer.append(buf, static_cast<size_t>(n));
    Parse();
  }

  void Parse() {
    if (!head_ok) {
      const auto end = buffer.find("\r\n\r\n");
      if (end == std::string::npos) return;
      head_ok = buffer.starts_with("HTTP/1.1 200") && buffer.find("text/event-stream") < end;
      buffer.erase(0, end + 4);
    }
    size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      Frame(buffer.substr(0, end));
      buffer.erase(0, end + 2);
    }
  }

  void Frame(const std::string& frame) {
    std::optional<EventPosition> id;
    for (const auto& line : SplitLines(frame)) {
      if (line == ":") ++heartbeats;
      if (line.starts_with("id: ")) id = EventPosition::Parse(line.substr(4));
      if (line.starts_with("data: ")) {
        const auto data = json::parse(line.substr(6));
        keys.push_back(data["id"].get<int64_t>());
        statuses.push_back(data["status"].is_null() ? "null" : data["status"].get<std::string>());
        ids.push_back(id.value_or(EventPosition{}));
      }
    }
  }

  static std::vector<std::string> SplitLines(const std::string& text) {
    std::vector<std::string> lines;
    size_t start = 0;
    while (start <= text.size()) {
      const auto end = text.find('\n', start);
      lines.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
      if (end == std::string::npos) break;
      start = end + 1;
    }
    return lines;
  }
};

// Reads every open client until `done` or the deadline.
bool PumpUntil(std::vector<std::unique_ptr<SseClient>>& clients, const std::function<bool()>& done,
               std::chrono::milliseconds within) {
  const auto deadline = Clock::now() + within;
  std::vector<pollfd> fds;
  while (Clock::now() < deadline) {
    if (done()) return true;
    fds.clear();
    for (auto& c : clients) {
      if (!c->closed) fds.push_back({c->fd, POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
    for (auto& c : clients) {
      if (!c->closed) c->Read();
    }
  }
  return done();
}

class HttpEventsTest : public HttpApiTest {
 protected:
  // `n` requests for clients 0..99 in turn, inserted by SQL in statements of 500.
  void InsertForClients(int n) {
    for (int done = 0; done < n; done += 500) {
      conn_->Exec(fmt::format("INSERT INTO needs (client_id, age, gender, family_members, financial_education, "
                              "income, wealth, income_investment, accumulation_investment) SELECT g % 100, 40, 1, 2, "
                              "0.5, 50, 100, 1, 0 FROM generate_series({}, {}) g",
                              inserted_, inserted_ + std::min(500, n - done) - 1),
                  Params());
      inserted_ += std::min(500, n - done);
    }
  }
  std::vector<int64_t> KeysWhere(const std::string& condition) {
    auto r = conn_->Exec(fmt::format("SELECT id FROM needs WHERE {} ORDER BY id", condition), Params());
    std::vector<int64_t> keys;
    for (int i = 0; i < r.rows(); ++i) keys.push_back(r.Get<int64_t>(i, 0));
    return keys;
  }
  int inserted_ = 0;
};

// Every key exactly once, event ids strictly increasing.
void ExpectExactlyOnceInOrder(const SseClient& c, const std::vector<int64_t>& want, const std::string& who) {
  std::vector<int64_t> got = c.keys;
  for (size_t i = 1; i < c.ids.size(); ++i) {
    ASSERT_LT(c.ids[i - 1], c.ids[i]) << who << " event " << i;
  }
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, want) << who << ": " << c.keys.size() << " events for " << want.size() << " requests";
}

TEST_F(HttpEventsTest, AThousandSubscribersGetEachServedRequestOnceInOrderAcrossReconnects) {
  RaiseFileLimit();
  events_.heartbeat = std::chrono::milliseconds(300);
  Start(Config());
  constexpr int kAll = 10, kFiltered = 990, kRequests = 5000, kReconnected = 5;
  std::vector<std::unique_ptr<SseClient>> clients;
  for (int i = 0; i < kAll; ++i) clients.push_back(std::make_unique<SseClient>(port_, "", std::nullopt));
  for (int i = 0; i < kFiltered; ++i)
    clients.push_back(std::make_unique<SseClient>(port_, fmt::format("?client={}", 3 + i % 2), std::nullopt));
  ASSERT_TRUE(PumpUntil(
      clients, [&] { return std::all_of(clients.begin(), clients.end(), [](const auto& c) { return c->head_ok; }); },
      std::chrono::seconds(30)))
      << "every subscriber gets its stream";
  ASSERT_TRUE(Eventually([&] { return service_->events()->subscribers() == kAll + kFiltered; }));
  const auto metrics = client_->Get("/metrics")->body;
  EXPECT_NE(metrics.find("runnel_event_subscribers{pipeline=\"needs\"} 1000\n"), std::string::npos) << metrics;

  InsertForClients(kRequests / 2);
  ASSERT_TRUE(PumpUntil(
      clients, [&] { return clients[0]->keys.size() >= kRequests / 4; }, std::chrono::seconds(60)));
  // Forced reconnects: five unfiltered subscribers drop their connection mid-stream
  // and come back with the last id they saw while more requests are served.
  std::vector<std::string> resume;
  for (int i = 0; i < kReconnected; ++i) {
    clients[i]->Close();
    resume.push_back(clients[i]->ids.empty() ? "" : clients[i]->ids.back().ToString());
  }
  InsertForClients(kRequests / 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (int i = 0; i < kReconnected; ++i) {
    auto again = std::make_unique<SseClient>(port_, "", resume[i]);
    again->keys = clients[i]->keys;
    again->ids = clients[i]->ids;
    clients[i] = std::move(again);
  }
  const auto all = KeysWhere("true");
  ASSERT_EQ(all.size(), static_cast<size_t>(kRequests));
  const auto client3 = KeysWhere("client_id = 3"), client4 = KeysWhere("client_id = 4");
  const bool complete = PumpUntil(
      clients,
      [&] {
        for (int i = 0; i < kAll; ++i) {
          if (clients[i]->keys.size() < all.size()) return false;
        }
        for (int i = kAll; i < kAll + kFiltered; ++i) {
          if (clients[i]->keys.size() < (i % 2 == 0 ? client3 : client4).size()) return false;
        }
        return true;
      },
      std::chrono::seconds(120));
  EXPECT_TRUE(complete) << "first subscriber has " << clients[0]->keys.size() << " of " << all.size();
  PumpUntil(
      clients, [] { return false; }, std::chrono::seconds(1));  // nothing more may come
  for (int i = 0; i < kAll; ++i) ExpectExactlyOnceInOrder(*clients[i], all, fmt::format("subscriber {}", i));
  for (int i = kAll; i < kAll + kFiltered; i += 97) {
    ExpectExactlyOnceInOrder(*clients[i], i % 2 == 0 ? client3 : client4, fmt::format("filtered subscriber {}", i));
  }
  for (const auto& s : clients[kAll]->statuses) EXPECT_EQ(s, "done");
  EXPECT_GT(clients[kAll]->heartbeats, 0) << "heartbeats every 300 ms";
}

// While nobody subscribes, the pump moves its head at most every 100 ms, not per
// batch. A subscriber that comes mid-stream still gets every request served after it
// came, exactly once (and at most the last 100 ms or so of those before it).
TEST_F(HttpEventsTest, ASubscriberWhoComesMidStreamMissesNothingServedAfterIt) {
  Start(Config());
  InsertForClients(3000);  // served while nobody listens
  ASSERT_TRUE(Eventually([&] { return Count("SELECT count(*) FROM runnel_needs_results") == 3000; }));
  std::vector<std::unique_ptr<SseClient>> clients;
  // Batches keep committing while it subscribes: rows in statements of 20, for 1 s.
  std::atomic<bool> stop_inserting{false};
  std::thread inserter([&] {
    auto conn = postgres::Connection::Open(conninfo());
    for (int i = 0; i < 100 && !stop_inserting; ++i) {
      conn.Exec(
          "INSERT INTO needs (client_id, age, gender, family_members, financial_education, income, wealth, "
          "income_investment, accumulation_investment) SELECT 5, 40, 1, 2, 0.5, 50, 100, 1, 0 FROM "
          "generate_series(1, 20)",
          Params());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  clients.push_back(std::make_unique<SseClient>(port_, "", std::nullopt));
  ASSERT_TRUE(PumpUntil(
      clients, [&] { return clients[0]->head_ok; }, std::chrono::seconds(10)));
  ASSERT_TRUE(Eventually([&] { return service_->events()->subscribers() == 1; }));
  // Requests inserted from now on are certainly served after it subscribed.
  const int64_t first_after = Count("SELECT coalesce(max(id), 0) FROM needs") + 1;
  inserter.join();
  InsertForClients(500);
  const auto after = KeysWhere(fmt::format("id >= {}", first_after));
  ASSERT_TRUE(PumpUntil(
      clients,
      [&] {
        return std::count_if(clients[0]->keys.begin(), clients[0]->keys.end(),
                             [&](int64_t k) { return k >= first_after; }) >= static_cast<int64_t>(after.size());
      },
      std::chrono::seconds(60)))
      << "got " << clients[0]->keys.size() << " events";
  PumpUntil(
      clients, [] { return false; }, std::chrono::milliseconds(500));  // nothing more may come
  std::vector<int64_t> got_after;
  for (int64_t k : clients[0]->keys) {
    if (k >= first_after) got_after.push_back(k);
  }
  std::sort(got_after.begin(), got_after.end());
  EXPECT_EQ(got_after, after) << "each request served after it subscribed, once";
  std::set<int64_t> distinct(clients[0]->keys.begin(), clients[0]->keys.end());
  EXPECT_EQ(distinct.size(), clients[0]->keys.size()) << "no event twice";
  EXPECT_LT(clients[0]->keys.size(), after.size() + 1000) << "not the backlog served before it came";
  for (size_t i = 1; i < clients[0]->ids.size(); ++i) ASSERT_LT(clients[0]->ids[i - 1], clients[0]->ids[i]);
}

TEST_F(HttpEventsTest, ServedKeysAreNotifiedOnThePipelinesChannelAndBadIdsAreRefused) {
  Start(Config());
  auto listener = Connect();
  listener.Exec("LISTEN runnel_needs_served");
  InsertForClients(1200);  // a batch's keys may span several payloads
  std::set<int64_t> notified;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (notified.size() < 1200 && Clock::now() < deadline) {
    for (const auto& n : listener.WaitForNotifications(std::chrono::milliseconds(100))) {
      EXPECT_LE(n.payload.size(), 8000u);
      for (const auto& key : SplitAt(n.payload, ',')) notified.insert(std::stoll(key));
    }
  }
  const auto all = KeysWhere("true");
  EXPECT_EQ(std::vector<int64_t>(notified.begin(), notified.end()), all);
  // Events past their retention are pruned (the job runner does it once a minute).
  auto config = Config();
  config.event_retention_s = 60;
  // One events row per served batch; a worker may have served all 1,200 in one.
  const auto events = Count("SELECT count(*) FROM runnel_needs_events");
  ASSERT_GE(events, 1);
  conn_->Exec(
      "UPDATE runnel_needs_events SET created_at = now() - interval '61 seconds' WHERE id = (SELECT min(id) "
      "FROM runnel_needs_events)",
      Params());
  EXPECT_EQ(pipeline::PruneEvents(*conn_, config), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_events"), events - 1);
  auto bad = client_->Get("/v1/pipelines/needs/events", {{"Last-Event-ID", "12-x"}});
  EXPECT_EQ(bad->status, 422) << bad->body;
  EXPECT_EQ(client_->Get("/v1/pipelines/other/events")->status, 404);
}

}  // namespace
}  // namespace runnel::server
