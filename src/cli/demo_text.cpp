// `runnel demo --workload tickets|reviews`: text in, a label out. tickets: TF-IDF +
// logistic regression trained on this machine's package descriptions
// (examples/tickets, docs/tickets.md); reviews: a transformer with its Hugging Face
// tokenizer scoring the emotion of reviews (examples/reviews, docs/reviews.md).
#include <fmt/format.h>

#include <fstream>
#include <map>

#include "demo.hpp"
#include "runnel/core/csv.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/core/process.hpp"
#include "runnel/pipeline/model_provider.hpp"
#include "runnel/pipeline/schema.hpp"

namespace runnel::cli {

namespace {

struct Ticket {
  int64_t id = 0;
  std::string subject, body, section, priority;
  bool test = false;  // in the split the model never saw
};

// tickets.csv as build_tickets.py writes it: id, subject, body, queue (the package's
// section), priority, split.
std::vector<Ticket> ReadTickets(const std::filesystem::path& csv) {
  std::ifstream in(csv);
  CsvReader reader(in, ',');
  std::vector<std::string> fields;
  reader.Next(fields);  // the header
  std::vector<Ticket> tickets;
  while (reader.Next(fields)) {
    if (fields.size() != 6)
      throw Error(ErrorCode::Io, fmt::format("{}: line {} is malformed", csv.string(), reader.line()));
    tickets.push_back({std::stoll(fields[0]), fields[1], fields[2], fields[3], fields[4], fields[5] == "test"});
  }
  return tickets;
}

// The tickets into the table, 1,000 a statement.
void InsertTickets(postgres::Connection& conn, const std::vector<Ticket>& tickets) {
  for (size_t start = 0; start < tickets.size(); start += 1000) {
    std::vector<int64_t> ids;
    std::vector<std::optional<std::string>> subjects, bodies, priorities;
    for (size_t i = start; i < std::min(tickets.size(), start + 1000); ++i) {
      ids.push_back(tickets[i].id);
      subjects.emplace_back(tickets[i].subject);
      bodies.emplace_back(tickets[i].body);
      priorities.emplace_back(tickets[i].priority);
    }
    conn.Exec(
        "INSERT INTO tickets (id, subject, body, priority) SELECT * FROM unnest($1::bigint[], $2::text[], "
        "$3::text[], $4::text[])",
        postgres::Params().AddArray(ids).AddArray(subjects).AddArray(bodies).AddArray(priorities));
  }
}

// How often the queue written back is the package's own section, over all tickets
// and over the test split; then three examples.
void PrintAgreement(postgres::Connection& conn, const std::vector<Ticket>& tickets) {
  std::map<int64_t, const Ticket*> by_id;
  for (const auto& t : tickets) by_id[t.id] = &t;
  auto rows = conn.Exec("SELECT id, queue, subject FROM tickets ORDER BY id", postgres::Params());
  size_t test = 0, test_right = 0, right = 0;
  for (int i = 0; i < rows.rows(); ++i) {
    const auto it = by_id.find(rows.Get<int64_t>(i, 0));
    if (it == by_id.end()) continue;
    const bool ok = rows.GetOptional<std::string>(i, 1) == it->second->section;
    right += ok;
    test += it->second->test;
    test_right += ok && it->second->test;
  }
  fmt::print(
      "7. queue written back = the package's section: {:.1f}% of all tickets; {:.1f}% of the tickets the "
      "model never saw ({} of them)\n",
      100.0 * static_cast<double>(right) / std::max<double>(1, rows.rows()),
      100.0 * static_cast<double>(test_right) / std::max<double>(1, static_cast<double>(test)), test);
  for (int i = 0; i < std::min(rows.rows(), 3); ++i) {
    fmt::print("   ticket {} \"{}\" -> {}\n", rows.Get<int64_t>(i, 0), rows.Get<std::string>(i, 2),
               rows.GetOptional<std::string>(i, 1).value_or("(none)"));
  }
}

}  // namespace

int TicketsDemo(const DemoArgs& args, CliContext& ctx) {
  std::filesystem::path home;
  const std::string url = FreshDemoDatabase(ctx, &home);
  const std::filesystem::path dir = home / "demo-tickets";
  RunBuildScript("tickets/build_tickets.py", dir, "python3-sklearn and python3-onnx");
  const std::string file = args.pipeline.empty() ? (dir / "pipeline.toml").string() : args.pipeline;
  auto config = pipeline::LoadPipelineConfig(file);
  if (!config.model_path) throw Error(ErrorCode::InvalidInput, fmt::format("{} names no model", file));
  auto model = pipeline::LoadFileModel(config, "");
  auto conn = postgres::Connection::Open(url);
  conn.Exec(ReadFileBytes(kExamples / "tickets/schema.sql", "the tickets schema"));
  for (const auto& line : pipeline::Migrate(conn, config)) fmt::print("3. migrate: {}\n", line);
  fmt::print("4. serving {} ({}), {} workers\n", model->info().version, model->info().producer, args.workers);
  const auto tickets = ReadTickets(dir / "tickets.csv");
  const auto served = ServeWhile(config, model, url, args.workers, conn, [&] {
    InsertTickets(conn, tickets);
    fmt::print("5. inserted {} tickets (subject, body)\n", tickets.size());
    return static_cast<int64_t>(tickets.size());
  });
  const auto& s = served.summary;
  fmt::print("6. routed {} tickets in {:.2f} s from the first insert ({:.0f} tickets/s): {} done, {} failed\n",
             s.done + s.failed, served.seconds, static_cast<double>(s.done + s.failed) / served.seconds, s.done,
             s.failed);
  PrintAgreement(conn, tickets);
  fmt::print("explore: psql \"{}\"  (tables tickets, runnel_tickets_results); the REST flow: docs/tickets.md\n", url);
  return 0;
}

namespace {

struct Review {
  int64_t id = 0;
  std::string title, body, emotion;
};

// reviews.csv as build_reviews.py writes it: id, title, body, emotion, split.
std::vector<Review> ReadReviews(const std::filesystem::path& csv) {
  std::ifstream in(csv);
  CsvReader reader(in, ',');
  std::vector<std::string> fields;
  reader.Next(fields);  // the header
  std::vector<Review> reviews;
  while (reader.Next(fields)) {
    if (fields.size() != 5)
      throw Error(ErrorCode::Io, fmt::format("{}: line {} is malformed", csv.string(), reader.line()));
    reviews.push_back({std::stoll(fields[0]), fields[1], fields[2], fields[3]});
  }
  return reviews;
}

void InsertReviews(postgres::Connection& conn, const std::vector<Review>& reviews) {
  for (size_t start = 0; start < reviews.size(); start += 1000) {
    std::vector<int64_t> ids;
    std::vector<std::optional<std::string>> titles, bodies;
    for (size_t i = start; i < std::min(reviews.size(), start + 1000); ++i) {
      ids.push_back(reviews[i].id);
      titles.emplace_back(reviews[i].title);
      bodies.emplace_back(reviews[i].body);
    }
    conn.Exec("INSERT INTO reviews (id, title, body) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])",
              postgres::Params().AddArray(ids).AddArray(titles).AddArray(bodies));
  }
}

// How often the emotion written back is the one the review was written with; then
// three examples.
void PrintEmotions(postgres::Connection& conn, const std::vector<Review>& reviews) {
  std::map<int64_t, const Review*> by_id;
  for (const auto& r : reviews) by_id[r.id] = &r;
  auto rows = conn.Exec("SELECT id, emotion, title FROM reviews ORDER BY id", postgres::Params());
  size_t right = 0;
  for (int i = 0; i < rows.rows(); ++i) {
    const auto it = by_id.find(rows.Get<int64_t>(i, 0));
    right += it != by_id.end() && rows.GetOptional<std::string>(i, 1) == it->second->emotion;
  }
  fmt::print("7. emotion written back = the one the review was written with: {:.1f}% of {} reviews\n",
             100.0 * static_cast<double>(right) / std::max<double>(1, rows.rows()), rows.rows());
  for (int i = 0; i < std::min(rows.rows(), 3); ++i) {
    fmt::print("   review {} \"{}\" -> {}\n", rows.Get<int64_t>(i, 0), rows.Get<std::string>(i, 2),
               rows.GetOptional<std::string>(i, 1).value_or("(none)"));
  }
}

}  // namespace

int ReviewsDemo(const DemoArgs& args, CliContext& ctx) {
  std::filesystem::path home;
  const std::string url = FreshDemoDatabase(ctx, &home);
  const std::filesystem::path dir = home / "demo-reviews";
  // Two short epochs: about half a minute of PyTorch training on two cores.
  RunBuildScript("reviews/build_reviews.py", dir, "python3-torch, python3-onnx and python3-regex",
                 {"--epochs", "2", "--reviews", "900"});
  const std::string file = args.pipeline.empty() ? (dir / "pipeline.toml").string() : args.pipeline;
  auto config = pipeline::LoadPipelineConfig(file);
  auto model = pipeline::LoadFileModel(config, "");
  auto conn = postgres::Connection::Open(url);
  conn.Exec(ReadFileBytes(kExamples / "reviews/schema.sql", "the reviews schema"));
  for (const auto& line : pipeline::Migrate(conn, config)) fmt::print("3. migrate: {}\n", line);
  fmt::print("4. serving {} ({}) with {}, {} workers\n", model->info().version, model->info().producer,
             config.model_tokenizer ? config.model_tokenizer->filename().string() : "no tokenizer", args.workers);
  const auto reviews = ReadReviews(dir / "reviews.csv");
  const auto served = ServeWhile(config, model, url, args.workers, conn, [&] {
    InsertReviews(conn, reviews);
    fmt::print("5. inserted {} reviews (title, body)\n", reviews.size());
    return static_cast<int64_t>(reviews.size());
  });
  const auto& s = served.summary;
  fmt::print("6. scored {} reviews in {:.2f} s from the first insert ({:.0f} reviews/s): {} done, {} failed\n",
             s.done + s.failed, served.seconds, static_cast<double>(s.done + s.failed) / served.seconds, s.done,
             s.failed);
  PrintEmotions(conn, reviews);
  fmt::print("explore: psql \"{}\"  (tables reviews, runnel_reviews_results); serving a real model: docs/reviews.md\n",
             url);
  return 0;
}

}  // namespace runnel::cli
