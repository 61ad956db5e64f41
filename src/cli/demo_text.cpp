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

// A build script's CSV: a header, then rows of a fixed number of fields, the first an
// integer id.
using CsvRows = std::vector<std::vector<std::string>>;

CsvRows ReadWorkloadCsv(const std::filesystem::path& csv, size_t width) {
  std::ifstream in(csv);
  CsvReader reader(in, ',');
  std::vector<std::string> fields;
  reader.Next(fields);  // the header
  CsvRows rows;
  while (reader.Next(fields)) {
    if (fields.size() != width)
      throw Error(ErrorCode::Io, fmt::format("{}: line {} is malformed", csv.string(), reader.line()));
    (void)std::stoll(fields[0]);  // the id: a malformed one fails here, before any insert
    rows.push_back(fields);
  }
  return rows;
}

// The rows into `table`: field 0 into its bigint `id`, each (column, field) of
// `texts` into a text column; 1,000 rows a statement.
void InsertWorkloadRows(postgres::Connection& conn, const std::string& table,
                        const std::vector<std::pair<std::string, size_t>>& texts, const CsvRows& rows) {
  std::string columns = "id", arrays = "$1::bigint[]";
  for (size_t k = 0; k < texts.size(); ++k) {
    columns += ", " + postgres::QuoteIdentifier(texts[k].first);
    arrays += fmt::format(", ${}::text[]", k + 2);
  }
  const std::string sql =
      fmt::format("INSERT INTO {} ({}) SELECT * FROM unnest({})", postgres::QuoteIdentifier(table), columns, arrays);
  for (size_t start = 0; start < rows.size(); start += 1000) {
    const size_t end = std::min(rows.size(), start + 1000);
    std::vector<int64_t> ids;
    std::vector<std::vector<std::optional<std::string>>> values(texts.size());
    for (size_t i = start; i < end; ++i) {
      ids.push_back(std::stoll(rows[i][0]));
      for (size_t k = 0; k < texts.size(); ++k) values[k].emplace_back(rows[i][texts[k].second]);
    }
    postgres::Params params;
    params.AddArray(ids);
    for (const auto& column : values) params.AddArray(column);
    conn.Exec(sql, params);
  }
}

// tickets.csv as build_tickets.py writes it.
enum TicketField : size_t {
  kTicketSubject = 1,
  kTicketBody,
  kTicketQueue,
  kTicketPriority,
  kTicketSplit,
  kTicketFields
};

// How often the queue written back is the package's own section, over all tickets
// and over the test split; then three examples.
void PrintAgreement(postgres::Connection& conn, const CsvRows& tickets) {
  std::map<int64_t, const std::vector<std::string>*> by_id;
  for (const auto& t : tickets) by_id[std::stoll(t[0])] = &t;
  auto rows = conn.Exec("SELECT id, queue, subject FROM tickets ORDER BY id", postgres::Params());
  size_t test = 0, test_right = 0, right = 0;
  for (int i = 0; i < rows.rows(); ++i) {
    const auto it = by_id.find(rows.Get<int64_t>(i, "id"));
    if (it == by_id.end()) continue;
    const bool ok = rows.GetOptional<std::string>(i, "queue") == (*it->second)[kTicketQueue];
    const bool in_test = (*it->second)[kTicketSplit] == "test";  // the split the model never saw
    right += ok;
    test += in_test;
    test_right += ok && in_test;
  }
  fmt::print(
      "7. queue written back = the package's section: {:.1f}% of all tickets; {:.1f}% of the tickets the "
      "model never saw ({} of them)\n",
      100.0 * static_cast<double>(right) / std::max<double>(1, rows.rows()),
      100.0 * static_cast<double>(test_right) / std::max<double>(1, static_cast<double>(test)), test);
  for (int i = 0; i < std::min(rows.rows(), 3); ++i) {
    fmt::print("   ticket {} \"{}\" -> {}\n", rows.Get<int64_t>(i, "id"), rows.Get<std::string>(i, "subject"),
               rows.GetOptional<std::string>(i, "queue").value_or("(none)"));
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
  const auto tickets = ReadWorkloadCsv(dir / "tickets.csv", kTicketFields);
  const auto served = ServeWhile(config, model, url, args.workers, conn, [&] {
    InsertWorkloadRows(conn, "tickets",
                       {{"subject", kTicketSubject}, {"body", kTicketBody}, {"priority", kTicketPriority}}, tickets);
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

// reviews.csv as build_reviews.py writes it.
enum ReviewField : size_t { kReviewTitle = 1, kReviewBody, kReviewEmotion, kReviewSplit, kReviewFields };

// How often the emotion written back is the one the review was written with; then
// three examples.
void PrintEmotions(postgres::Connection& conn, const CsvRows& reviews) {
  std::map<int64_t, const std::vector<std::string>*> by_id;
  for (const auto& r : reviews) by_id[std::stoll(r[0])] = &r;
  auto rows = conn.Exec("SELECT id, emotion, title FROM reviews ORDER BY id", postgres::Params());
  size_t right = 0;
  for (int i = 0; i < rows.rows(); ++i) {
    const auto it = by_id.find(rows.Get<int64_t>(i, "id"));
    right += it != by_id.end() && rows.GetOptional<std::string>(i, "emotion") == (*it->second)[kReviewEmotion];
  }
  fmt::print("7. emotion written back = the one the review was written with: {:.1f}% of {} reviews\n",
             100.0 * static_cast<double>(right) / std::max<double>(1, rows.rows()), rows.rows());
  for (int i = 0; i < std::min(rows.rows(), 3); ++i) {
    fmt::print("   review {} \"{}\" -> {}\n", rows.Get<int64_t>(i, "id"), rows.Get<std::string>(i, "title"),
               rows.GetOptional<std::string>(i, "emotion").value_or("(none)"));
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
  const auto reviews = ReadWorkloadCsv(dir / "reviews.csv", kReviewFields);
  const auto served = ServeWhile(config, model, url, args.workers, conn, [&] {
    InsertWorkloadRows(conn, "reviews", {{"title", kReviewTitle}, {"body", kReviewBody}}, reviews);
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
