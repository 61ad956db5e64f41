// Round-trip latency of `POST /v1/pipelines/{p}/requests?wait=MS` at a steady rate:
// open loop (request i is due at start + i / rate, whatever happened before), latency
// measured from the due time, so a stall is charged to every request it delays
// (no coordinated omission). wrk cannot pace requests; this can.
//
//   http_wait_bench --port 8080 --rate 1000 --seconds 20 [--connections 32]
//                   [--pipeline needs] [--body FILE] [--token T]
// Prints one JSON line: rate, sent, ok (200), pending (202), errors, p50/p99/p999/max ms.
#include <httplib.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Args {
  int port = 8080;
  double rate = 1000;
  double seconds = 20;
  int connections = 32;
  std::string pipeline = "needs";
  // "{client}" becomes 1..100 in turn, so no client runs into its quota.
  std::string body =
      R"({"client_id":{client},"age":40,"gender":1,"family_members":2,"financial_education":0.5,"income":50,)"
      R"("wealth":100,"income_investment":1,"accumulation_investment":0})";
  std::string token;
};

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const auto at = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(at), v.end());
  return v[at];
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--port") {
      args.port = std::atoi(value.c_str());
    } else if (flag == "--rate") {
      args.rate = std::atof(value.c_str());
    } else if (flag == "--seconds") {
      args.seconds = std::atof(value.c_str());
    } else if (flag == "--connections") {
      args.connections = std::atoi(value.c_str());
    } else if (flag == "--pipeline") {
      args.pipeline = value;
    } else if (flag == "--token") {
      args.token = value;
    } else if (flag == "--body") {
      std::ifstream in(value);
      args.body.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } else {
      fmt::print(stderr, "unknown flag {}\n", flag);
      return 2;
    }
  }
  if (args.rate <= 0 || args.seconds <= 0 || args.connections < 1) {
    fmt::print(stderr, "--rate, --seconds and --connections must be positive\n");
    return 2;
  }
  const auto total = static_cast<int64_t>(args.rate * args.seconds);
  const std::string path = fmt::format("/v1/pipelines/{}/requests?wait=5000", args.pipeline);
  std::atomic<int64_t> next{0}, ok{0}, pending{0}, errors{0};
  std::mutex mutex;
  std::vector<double> latencies;
  const auto start = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
  std::vector<std::thread> threads;
  for (int c = 0; c < args.connections; ++c) {
    threads.emplace_back([&] {
      httplib::Client client("127.0.0.1", args.port);
      client.set_tcp_nodelay(true);
      client.set_keep_alive(true);
      client.set_read_timeout(10, 0);
      httplib::Headers headers;
      if (!args.token.empty()) headers.emplace("Authorization", "Bearer " + args.token);
      std::vector<double> mine;
      while (true) {
        const int64_t i = next.fetch_add(1);
        if (i >= total) break;
        const auto due = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                     std::chrono::duration<double>(static_cast<double>(i) / args.rate));
        std::this_thread::sleep_until(due);
        std::string body = args.body;
        if (auto at = body.find("{client}"); at != std::string::npos) body.replace(at, 8, std::to_string(i % 100 + 1));
        auto res = client.Post(path, headers, body, "application/json");
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - due).count();
        if (!res) {
          ++errors;
        } else if (res->status == 200) {
          ++ok;
          mine.push_back(ms);
        } else if (res->status == 202) {
          ++pending;
          mine.push_back(ms);
        } else {
          ++errors;
        }
      }
      std::lock_guard lock(mutex);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  const double p50 = Percentile(latencies, 0.50), p99 = Percentile(latencies, 0.99),
               p999 = Percentile(latencies, 0.999);
  const double max = latencies.empty() ? 0 : *std::max_element(latencies.begin(), latencies.end());
  fmt::print(
      "{{\"rate\": {}, \"sent\": {}, \"ok\": {}, \"pending\": {}, \"errors\": {}, \"p50_ms\": {:.2f}, "
      "\"p99_ms\": {:.2f}, \"p999_ms\": {:.2f}, \"max_ms\": {:.2f}}}\n",
      args.rate, total, ok.load(), pending.load(), errors.load(), p50, p99, p999, max);
  return errors.load() == 0 ? 0 : 1;
}
