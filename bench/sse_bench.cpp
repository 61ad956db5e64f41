// Result subscriptions under load: N SSE subscribers, subscriber i following client i
// (GET /v1/pipelines/needs/events?client=i), while rows for clients 0..N-1 in turn are
// inserted by SQL at a steady rate (open loop, 100 batches a second). Each event's
// latency is the time from its result's commit (finished_at, same machine clock) to
// its arrival. At the end, every inserted request must have arrived exactly once.
//
//   sse_bench --port 8080 --db URL [--subscribers 1000] [--rate 10000] [--seconds 20]
// Prints one JSON line: subscribers, inserted, events, missing, duplicates, p50/p99/
// p999/max ms.
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace {

struct Args {
  int port = 8080;
  std::string db;
  int subscribers = 1000;
  double rate = 10000;
  double seconds = 20;
};

double NowEpoch() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// "2026-12-02T16:41:43.819515Z" as epoch seconds.
double ParseIso(const std::string& text) {
  std::tm tm{};
  if (strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) == nullptr) return 0;
  const auto dot = text.find('.');
  const double fraction = dot == std::string::npos ? 0 : std::atof(text.substr(dot).c_str());
  return static_cast<double>(timegm(&tm)) + fraction;
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const auto at = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(at), v.end());
  return v[at];
}

struct Subscriber {
  int fd = -1;
  std::string buffer;
  bool head = false;
  size_t received = 0;
};

int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::perror("connect");
    std::exit(1);
  }
  return fd;
}

class Reader {
 public:
  explicit Reader(size_t n) : subs_(n) {}
  std::vector<Subscriber>& subs() { return subs_; }

  // Reads what arrived; returns false when a subscriber's connection ended.
  bool Poll(int timeout_ms) {
    fds_.clear();
    for (const auto& s : subs_) fds_.push_back({s.fd, POLLIN, 0});
    if (::poll(fds_.data(), fds_.size(), timeout_ms) <= 0) return true;
    char buf[65536];
    for (size_t i = 0; i < subs_.size(); ++i) {
      if ((fds_[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t n = ::recv(subs_[i].fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      if (n <= 0) {
        fmt::print(stderr, "subscriber {} ended ({}) after {} bytes: {}\n", i, n == 0 ? "closed" : std::strerror(errno),
                   subs_[i].received, subs_[i].buffer.substr(0, 200));
        return false;
      }
      subs_[i].received += static_cast<size_t>(n);
      subs_[i].buffer.append(buf, static_cast<size_t>(n));
      Parse(subs_[i]);
    }
    return true;
  }

  size_t heads() const {
    return static_cast<size_t>(std::count_if(subs_.begin(), subs_.end(), [](const auto& s) { return s.head; }));
  }
  std::vector<double> latencies_ms;
  std::unordered_set<int64_t> seen;
  size_t events = 0, duplicates = 0;

 private:
  void Parse(Subscriber& s) {
    if (!s.head) {
      const auto end = s.buffer.find("\r\n\r\n");
      if (end == std::string::npos) return;
      s.head = s.buffer.starts_with("HTTP/1.1 200");
      s.buffer.erase(0, end + 4);
    }
    size_t end;
    size_t start = 0;
    while ((end = s.buffer.find("\n\n", start)) != std::string::npos) {
      const auto data = s.buffer.find("data: ", start);
      if (data != std::string::npos && data < end) Event(s.buffer.substr(data + 6, end - data - 6));
      start = end + 2;
    }
    s.buffer.erase(0, start);
  }

  void Event(const std::string& text) {
    const double now = NowEpoch();
    const auto data = nlohmann::json::parse(text);
    ++events;
    if (!seen.insert(data["id"].get<int64_t>()).second) ++duplicates;
    if (data["finished_at"].is_string()) latencies_ms.push_back((now - ParseIso(data["finished_at"])) * 1000.0);
  }

  std::vector<Subscriber> subs_;
  std::vector<pollfd> fds_;
};

}  // namespace

int main(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--port") args.port = std::atoi(value.c_str());
    if (flag == "--db") args.db = value;
    if (flag == "--subscribers") args.subscribers = std::atoi(value.c_str());
    if (flag == "--rate") args.rate = std::atof(value.c_str());
    if (flag == "--seconds") args.seconds = std::atof(value.c_str());
  }
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);

  Reader reader(static_cast<size_t>(args.subscribers));
  for (int i = 0; i < args.subscribers; ++i) {
    auto& s = reader.subs()[static_cast<size_t>(i)];
    s.fd = Connect(args.port);
    const std::string request =
        fmt::format("GET /v1/pipelines/needs/events?client={} HTTP/1.1\r\nHost: x\r\n\r\n", i);
    if (::send(s.fd, request.data(), request.size(), MSG_NOSIGNAL) < 0) return 1;
  }
  const auto setup_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (reader.heads() < reader.subs().size() && std::chrono::steady_clock::now() < setup_deadline) reader.Poll(20);
  if (reader.heads() < reader.subs().size()) {
    fmt::print(stderr, "only {} of {} subscriptions were accepted\n", reader.heads(), args.subscribers);
    return 1;
  }

  std::atomic<int64_t> inserted{0};
  std::atomic<bool> inserting{true};
  std::thread writer([&] {
    PGconn* conn = PQconnectdb(args.db.c_str());
    const auto per_tick = static_cast<int64_t>(args.rate / 100);
    const auto start = std::chrono::steady_clock::now();
    const auto ticks = static_cast<int64_t>(args.seconds * 100);
    for (int64_t tick = 0; tick < ticks; ++tick) {
      std::this_thread::sleep_until(start + std::chrono::milliseconds(10 * tick));
      const int64_t first = inserted.load();
      const std::string sql = fmt::format(
          "INSERT INTO needs (client_id, age, gender, family_members, financial_education, income, wealth, "
          "income_investment, accumulation_investment) SELECT g % {}, 40, 1, 2, 0.5, 50, 100, 1, 0 "
          "FROM generate_series({}, {}) g",
          args.subscribers, first, first + per_tick - 1);
      PGresult* r = PQexec(conn, sql.c_str());
      if (PQresultStatus(r) != PGRES_COMMAND_OK) fmt::print(stderr, "insert: {}", PQerrorMessage(conn));
      PQclear(r);
      inserted += per_tick;
    }
    PQfinish(conn);
    inserting = false;
  });
  while (inserting.load() || reader.seen.size() < static_cast<size_t>(inserted.load())) {
    if (!reader.Poll(20)) {
      fmt::print(stderr, "a subscription ended\n");
      break;
    }
    if (!inserting.load()) {
      static const auto drain_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
      if (std::chrono::steady_clock::now() > drain_deadline) break;
    }
  }
  writer.join();
  auto& lat = reader.latencies_ms;
  fmt::print(
      "{{\"subscribers\": {}, \"rate\": {}, \"inserted\": {}, \"events\": {}, \"missing\": {}, \"duplicates\": {}, "
      "\"p50_ms\": {:.1f}, \"p99_ms\": {:.1f}, \"p999_ms\": {:.1f}, \"max_ms\": {:.1f}}}\n",
      args.subscribers, args.rate, inserted.load(), reader.events,
      static_cast<int64_t>(inserted.load()) - static_cast<int64_t>(reader.seen.size()), reader.duplicates,
      Percentile(lat, 0.5), Percentile(lat, 0.99), Percentile(lat, 0.999),
      lat.empty() ? 0.0 : *std::max_element(lat.begin(), lat.end()));
  return 0;
}
