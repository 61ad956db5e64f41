#include "runnel/pipeline/pipeline_config.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include "../support/temp_dir.hpp"
#include "runnel/core/error.hpp"

namespace runnel::pipeline {
namespace {

using runnel::testing::TempDir;
using runnel::testing::WriteFile;

const char* kValid = R"(name = "t"
[source]
table = "t"
key = "id"
columns = ["a", "b"]
[model]
path = "m.onnx"
outputs = ["y"]
[[derived]]
name = "s"
expr = "a + b"
[features]
inputs = ["a", "s"]
[output]
columns = ["y", "s"]
)";

std::string ErrorFor(const std::string& text) {
  TempDir dir;
  WriteFile(dir / "p.toml", text);
  try {
    LoadPipelineConfig(dir / "p.toml");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "loaded:\n" << text;
  return "";
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  text.replace(text.find(from), from.size(), to);
  return text;
}

TEST(PipelineConfig, LoadsAndResolvesTheModelPath) {
  TempDir dir;
  WriteFile(dir / "p.toml", kValid);
  auto config = LoadPipelineConfig(dir / "p.toml");
  EXPECT_EQ(config.name, "t");
  EXPECT_EQ(config.key_columns, std::vector<std::string>{"id"});
  EXPECT_EQ(config.model_path, dir.path() / "m.onnx");
  EXPECT_EQ(config.features.derived.size(), 1u);
  EXPECT_EQ(config.output_columns, (std::vector<std::string>{"y", "s"}));
}

TEST(PipelineConfig, MissingValuesFailByDefaultOrReachTheModel) {
  TempDir dir;
  WriteFile(dir / "p.toml", kValid);
  EXPECT_FALSE(LoadPipelineConfig(dir / "p.toml").features.missing_as_nan);
  WriteFile(dir / "p.toml", Replace(kValid, "inputs = [\"a\", \"s\"]", "inputs = [\"a\", \"s\"]\nmissing = \"nan\""));
  EXPECT_TRUE(LoadPipelineConfig(dir / "p.toml").features.missing_as_nan);
  const auto error =
      ErrorFor(Replace(kValid, "inputs = [\"a\", \"s\"]", "inputs = [\"a\", \"s\"]\nmissing = \"zero\""));
  EXPECT_NE(error.find("'features.missing' is \"zero\""), std::string::npos) << error;
}

TEST(PipelineConfig, CaptureModeInBothSpellings) {
  TempDir dir;
  WriteFile(dir / "short.toml", std::string("capture = \"notify\"\n") + kValid);
  EXPECT_EQ(LoadPipelineConfig(dir / "short.toml").capture, CaptureMode::Notify);
  WriteFile(dir / "table.toml", std::string(kValid) + "[capture]\nmode = \"notify\"\nchannel = \"c\"\nmax_batch = 7\n");
  auto config = LoadPipelineConfig(dir / "table.toml");
  EXPECT_EQ(config.capture, CaptureMode::Notify);
  EXPECT_EQ(config.notify_channel, "c");
  EXPECT_EQ(config.max_batch, 7u);
  EXPECT_EQ(LoadPipelineConfig(dir / "short.toml").max_batch, 512u) << "the default";
  EXPECT_TRUE(config.synchronous_commit) << "the default";
  EXPECT_EQ(config.gather_ms, 0) << "the default: claim again at once";
  WriteFile(dir / "gather.toml", std::string(kValid) + "[capture]\ngather_ms = 3\n");
  EXPECT_EQ(LoadPipelineConfig(dir / "gather.toml").gather_ms, 3);
  WriteFile(dir / "async.toml", std::string(kValid) + "[capture]\nsynchronous_commit = false\n");
  EXPECT_FALSE(LoadPipelineConfig(dir / "async.toml").synchronous_commit);
  WriteFile(dir / "async_bad.toml", std::string(kValid) + "[capture]\nsynchronous_commit = \"off\"\n");
  try {
    LoadPipelineConfig(dir / "async_bad.toml");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'capture.synchronous_commit' must be true or false"), std::string::npos)
        << e.what();
  }
  WriteFile(dir / "bad.toml", std::string("capture = \"trigger\"\n") + kValid);
  EXPECT_THROW(LoadPipelineConfig(dir / "bad.toml"), Error);
}

TEST(PipelineConfig, SwitchesAreBooleansAndNamedWhenNot) {
  // Each file with its switch set to @.
  const std::string set_keys = Replace(kValid, "key = \"id\"", "key = \"id\"\nclients_set_keys = @");
  const std::string argmax = Replace(kValid, "outputs = [\"y\"]", "outputs = [\"y\"]\nclass_from_argmax = @");
  const std::string sync = std::string(kValid) + "[capture]\nsynchronous_commit = @\n";
  for (const auto& [text, key] :
       {std::pair{set_keys, "source.clients_set_keys"}, std::pair{argmax, "model.class_from_argmax"},
        std::pair{sync, "capture.synchronous_commit"}}) {
    TempDir dir;
    WriteFile(dir / "p.toml", Replace(text, "@", "true"));
    EXPECT_NO_THROW(LoadPipelineConfig(dir / "p.toml")) << key;
    for (const char* bad : {"1", "\"yes\""}) {
      const auto error = ErrorFor(Replace(text, "@", bad));
      EXPECT_NE(error.find(fmt::format("'{}' must be true or false", key)), std::string::npos) << bad << ": " << error;
    }
  }
  TempDir dir;
  WriteFile(dir / "p.toml", Replace(set_keys, "@", "true"));
  EXPECT_TRUE(LoadPipelineConfig(dir / "p.toml").clients_set_keys);
  EXPECT_FALSE(LoadPipelineConfig(dir / "p.toml").class_from_argmax) << "the default";
}

TEST(PipelineConfig, CapturedEventsAreInsertAndOptionallyUpdate) {
  TempDir dir;
  WriteFile(dir / "p.toml", std::string(kValid) + "[capture]\non = [\"insert\", \"update\"]\n");
  EXPECT_TRUE(LoadPipelineConfig(dir / "p.toml").capture_updates);
  WriteFile(dir / "p.toml", std::string(kValid) + "[capture]\non = [\"insert\"]\n");
  EXPECT_FALSE(LoadPipelineConfig(dir / "p.toml").capture_updates);
  auto error = ErrorFor(std::string(kValid) + "[capture]\non = [\"update\"]\n");
  EXPECT_NE(error.find("must include \"insert\""), std::string::npos) << error;
  error = ErrorFor(std::string(kValid) + "[capture]\non = [\"insert\", \"delete\"]\n");
  EXPECT_NE(error.find("lists \"delete\""), std::string::npos) << error;
  error = ErrorFor(std::string(kValid) + "[capture]\nmode = \"notify\"\non = [\"insert\", \"update\"]\n");
  EXPECT_NE(error.find("needs capture mode \"queue\""), std::string::npos) << error;
}

TEST(PipelineConfig, QuotaWindowIsOptionalAndNamedWhenWrong) {
  const std::string with_client = Replace(kValid, "key = \"id\"", "key = \"id\"\nclient = \"c\"");
  TempDir dir;
  WriteFile(dir / "p.toml", with_client + "[quota]\nmax_requests = 5\n");
  auto config = LoadPipelineConfig(dir / "p.toml");
  EXPECT_EQ(config.quota_max_requests, 5);
  EXPECT_EQ(config.quota_window.count(), 0) << "over all time";
  WriteFile(dir / "p.toml", with_client + "[quota]\nmax_requests = 5\nwindow = \"1h\"\n");
  EXPECT_EQ(LoadPipelineConfig(dir / "p.toml").quota_window, std::chrono::hours(1));
  WriteFile(dir / "p.toml", with_client + "[quota]\nmax_requests = 5\nwindow = \"1d\"\n");
  EXPECT_EQ(LoadPipelineConfig(dir / "p.toml").quota_window, std::chrono::hours(24));
  for (const char* bad : {"\"hourly\"", "\"0h\"", "\"1.5h\"", "3600"}) {
    const auto error = ErrorFor(with_client + "[quota]\nmax_requests = 5\nwindow = " + bad + "\n");
    EXPECT_NE(error.find("quota.window"), std::string::npos) << bad << ": " << error;
  }
}

TEST(PipelineConfig, SnapshotsDefaultBesideTheFileAndNameWhatIsWrong) {
  TempDir dir;
  WriteFile(dir / "p.toml", kValid);
  auto config = LoadPipelineConfig(dir / "p.toml");
  EXPECT_EQ(config.snapshots.dir, std::filesystem::absolute(dir / "p.toml").parent_path() / "snapshots");
  EXPECT_EQ(config.snapshots.every.count(), 0) << "on demand only";
  EXPECT_EQ(config.snapshots.keep, 3);
  EXPECT_EQ(config.snapshots.pace, 0.5);
  WriteFile(dir / "p.toml",
            std::string(kValid) +
                "[snapshots]\ndir = \"snaps\"\nevery = \"10m\"\nkeep = 5\npace = 1\nquery_timeout_ms = 500\n"
                "query_memory_mb = 64\nquery_max_rows = 20\n");
  config = LoadPipelineConfig(dir / "p.toml");
  EXPECT_EQ(config.snapshots.dir, std::filesystem::absolute(dir / "p.toml").parent_path() / "snaps");
  EXPECT_EQ(config.snapshots.every, std::chrono::minutes(10));
  EXPECT_EQ(config.snapshots.keep, 5);
  EXPECT_EQ(config.snapshots.pace, 1.0);
  EXPECT_EQ(config.snapshots.query_timeout, std::chrono::milliseconds(500));
  EXPECT_EQ(config.snapshots.query_memory_mb, 64);
  EXPECT_EQ(config.snapshots.query_max_rows, 20);
  WriteFile(dir / "p.toml", std::string(kValid) + "[snapshots]\ndir = \"/srv/snaps\"\n");
  EXPECT_EQ(LoadPipelineConfig(dir / "p.toml").snapshots.dir, "/srv/snaps");
  const std::pair<const char*, const char*> bad[] = {
      {"every = \"often\"", "snapshots.every"},
      {"every = \"0m\"", "snapshots.every"},
      {"keep = 0", "snapshots.keep"},
      {"pace = 0", "snapshots.pace"},
      {"pace = \"half\"", "snapshots.pace"},
      {"query_memory_mb = 1", "snapshots.query_memory_mb"},
      {"query_max_rows = -1", "snapshots.query_max_rows"},
      {"whenever = true", "whenever"},
  };
  for (const auto& [line, named] : bad) {
    const auto error = ErrorFor(std::string(kValid) + "[snapshots]\n" + line + "\n");
    EXPECT_NE(error.find(named), std::string::npos) << line << ": " << error;
  }
}

TEST(PipelineConfig, JetStreamNeedsServersStreamAndSubject) {
  TempDir dir;
  WriteFile(dir / "p.toml", kValid);
  EXPECT_FALSE(LoadPipelineConfig(dir / "p.toml").jetstream.has_value());
  const std::string minimal = std::string(kValid) +
                              "[jetstream]\nservers = [\"nats://a:4222\", \"nats://b:4222\"]\nstream = \"REQ\"\n"
                              "subject = \"req.t\"\n";
  WriteFile(dir / "p.toml", minimal);
  auto config = LoadPipelineConfig(dir / "p.toml");
  ASSERT_TRUE(config.jetstream.has_value());
  EXPECT_EQ(config.jetstream->servers.size(), 2u);
  EXPECT_EQ(config.jetstream->durable, "runnel-" + config.name);
  EXPECT_EQ(config.jetstream->dead_letter, "runnel." + config.name + ".dead");
  EXPECT_EQ(config.jetstream->batch, 2000);
  EXPECT_EQ(config.jetstream->threads, 1);
  EXPECT_EQ(config.jetstream->ack_wait, std::chrono::seconds(30));
  EXPECT_TRUE(config.jetstream->credentials.empty());
  WriteFile(dir / "p.toml", minimal +
                                "durable = \"d\"\ndead_letter = \"dl\"\nbatch = 50\nack_wait = \"2m\"\n"
                                "credentials = \"n.creds\"\nca_file = \"/etc/ca.pem\"\n");
  config = LoadPipelineConfig(dir / "p.toml");
  EXPECT_EQ(config.jetstream->durable, "d");
  EXPECT_EQ(config.jetstream->dead_letter, "dl");
  EXPECT_EQ(config.jetstream->batch, 50);
  EXPECT_EQ(config.jetstream->ack_wait, std::chrono::minutes(2));
  EXPECT_EQ(config.jetstream->credentials, std::filesystem::absolute(dir / "p.toml").parent_path() / "n.creds");
  EXPECT_EQ(config.jetstream->ca_file, "/etc/ca.pem");
  EXPECT_EQ(config.jetstream->mode, JetStreamMode::kTable);
  WriteFile(dir / "p.toml", minimal + "mode = \"direct\"\n");
  EXPECT_EQ(LoadPipelineConfig(dir / "p.toml").jetstream->mode, JetStreamMode::kDirect);
  const std::pair<std::string, const char*> bad[] = {
      {minimal + "mode = \"rows\"\n", "expected \"table\" or \"direct\""},
      {Replace(minimal, "[jetstream]", "[recommend]\ntable = \"p\"\nkey = \"id\"\nwhere = \"p.x < r.y\"\n[jetstream]") +
           "mode = \"direct\"\n",
       "[recommend], which joins a row's products, needs \"table\""},
      {std::string(kValid) + "[jetstream]\nstream = \"R\"\nsubject = \"s\"\n", "jetstream.servers"},
      {std::string(kValid) + "[jetstream]\nservers = []\nstream = \"R\"\nsubject = \"s\"\n", "at least one server"},
      {std::string(kValid) + "[jetstream]\nservers = [\"nats://a\"]\nsubject = \"s\"\n", "jetstream.stream"},
      {std::string(kValid) + "[jetstream]\nservers = [\"nats://a\"]\nstream = \"R\"\n", "jetstream.subject"},
      {minimal + "batch = 0\n", "jetstream.batch"},
      {minimal + "threads = 0\n", "jetstream.threads"},
      {minimal + "ack_wait = \"soon\"\n", "jetstream.ack_wait"},
      {minimal + "cert_file = \"c.pem\"\n", "go together"},
      {minimal + "queue = \"x\"\n", "jetstream.queue"},
  };
  for (const auto& [text, named] : bad) {
    const auto error = ErrorFor(text);
    EXPECT_NE(error.find(named), std::string::npos) << text << ": " << error;
  }
}

TEST(PipelineConfig, UpdateCaptureIsOptInAndRefusesALoop) {
  TempDir dir;
  WriteFile(dir / "p.toml", std::string(kValid) + "[capture]\non = [\"insert\", \"update\"]\n");
  auto config = LoadPipelineConfig(dir / "p.toml");
  EXPECT_TRUE(config.capture_updates);
  EXPECT_EQ(CaptureUpdateColumns(config), (std::vector<std::string>{"id", "a", "b"}));
  WriteFile(dir / "p.toml", kValid);
  EXPECT_FALSE(LoadPipelineConfig(dir / "p.toml").capture_updates) << "inserts only by default";
  EXPECT_NE(ErrorFor(std::string(kValid) + "[capture]\non = [\"insert\", \"delete\"]\n").find("\"delete\""),
            std::string::npos);
  EXPECT_NE(ErrorFor(std::string(kValid) + "[capture]\non = [\"update\"]\n").find("must include \"insert\""),
            std::string::npos);
  EXPECT_NE(ErrorFor(std::string(kValid) + "[capture]\nmode = \"notify\"\non = [\"insert\", \"update\"]\n")
                .find("needs capture mode \"queue\""),
            std::string::npos);
  // Writing back into a watched column would request a prediction per write-back.
  const std::string loop = Replace(Replace(kValid, "columns = [\"y\", \"s\"]", "columns = [\"a\", \"s\"]"),
                                   "outputs = [\"y\"]", "outputs = [\"a\"]");
  EXPECT_NE(ErrorFor(loop + "[write_back]\ncolumns = [\"a\"]\n[capture]\non = [\"insert\", \"update\"]\n")
                .find("write_back column 'a' is also an input"),
            std::string::npos);
}

TEST(PipelineConfig, ErrorsNameFileLineAndKey) {
  auto unknown = ErrorFor(Replace(kValid, "key = \"id\"", "key = \"id\"\nkee = 1"));
  EXPECT_NE(unknown.find("p.toml:5:"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("unknown key 'source.kee'"), std::string::npos) << unknown;
  EXPECT_NE(ErrorFor(Replace(kValid, "key = \"id\"\n", "")).find("missing key 'source.key'"), std::string::npos);
  EXPECT_NE(ErrorFor(Replace(kValid, "columns = [\"y\", \"s\"]", "columns = [\"y\", \"zz\"]"))
                .find("output column 'zz' is neither a model output nor a derived feature"),
            std::string::npos);
  EXPECT_NE(ErrorFor(Replace(kValid, "expr = \"a + b\"", "expr = \"a + \"")).find("derived feature 's'"),
            std::string::npos);
  EXPECT_NE(ErrorFor(Replace(kValid, "columns = [\"a\", \"b\"]", "columns = \"a\"")).find("must be an array"),
            std::string::npos);
  EXPECT_NE(ErrorFor("name = \n").find("p.toml:1:"), std::string::npos);
}

TEST(PipelineConfig, RangedIntegersAreReadAndRefusedNamingKeyAndRange) {
  TempDir dir;
  WriteFile(dir / "serving.toml",
            std::string(kValid) + "[serving]\nlock_timeout_ms = 50\nmax_attempts = 3\nevent_retention_s = 60\n");
  const auto config = LoadPipelineConfig(dir / "serving.toml");
  EXPECT_EQ(config.lock_timeout_ms, 50);
  EXPECT_EQ(config.max_attempts, 3);
  EXPECT_EQ(config.event_retention_s, 60);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"[capture]\nmax_batch = 0\n", "'capture.max_batch' must be 1..100000"},
      {"[capture]\ngather_ms = 1001\n", "'capture.gather_ms' must be 0..1000 milliseconds"},
      {"[capture]\ngather_ms = -1\n", "'capture.gather_ms' must be 0..1000 milliseconds"},
      {"[serving]\nlock_timeout_ms = 3600001\n", "'serving.lock_timeout_ms' must be 1..3600000 milliseconds"},
      {"[serving]\nmax_attempts = \"5\"\n", "'serving.max_attempts' must be 1..1000"},
      {"[serving]\nevent_retention_s = 0\n", "'serving.event_retention_s' must be 1..2678400 seconds"}};
  for (const auto& [toml, message] : bad) {
    const auto error = ErrorFor(std::string(kValid) + toml);
    EXPECT_NE(error.find(message), std::string::npos) << toml << ": " << error;
  }
}

TEST(PipelineConfig, TransformerFilesResolveBesideThePipelineFile) {
  TempDir dir;
  WriteFile(dir / "p.toml",
            Replace(kValid, "path = \"m.onnx\"",
                    "path = \"m.onnx\"\ntokenizer = \"tok/tokenizer.json\"\nmax_tokens = 64\nlabels_file = "
                    "\"/etc/labels.txt\""));
  const auto config = LoadPipelineConfig(dir / "p.toml");
  EXPECT_EQ(config.model_tokenizer, dir.path() / "tok/tokenizer.json");
  EXPECT_EQ(config.model_labels_file, std::filesystem::path("/etc/labels.txt"));
  EXPECT_EQ(config.model_max_tokens, 64u);
  const auto alone = ErrorFor(Replace(kValid, "path = \"m.onnx\"", "path = \"m.onnx\"\nmax_tokens = 64"));
  EXPECT_NE(alone.find("'model.max_tokens' needs 'model.tokenizer'"), std::string::npos) << alone;
  const auto zero =
      ErrorFor(Replace(kValid, "path = \"m.onnx\"", "path = \"m.onnx\"\ntokenizer = \"t.json\"\nmax_tokens = 0"));
  EXPECT_NE(zero.find("'model.max_tokens' must be 1..100000"), std::string::npos) << zero;
}

TEST(PipelineConfig, ModelInputsAndOutputsByNameAreReadAndCheckedForForm) {
  TempDir dir;
  const std::string bound = Replace(kValid, "outputs = [\"y\"]",
                                    "outputs = [\"y\", \"p\"]\ninputs = { numbers = [\"a\", \"s\"], extra = [\"a\"] }\n"
                                    "output_from = { y = \"label\", p = \"probabilities[12]\" }");
  WriteFile(dir / "p.toml", bound);
  const auto config = LoadPipelineConfig(dir / "p.toml");
  ASSERT_EQ(config.model_inputs.size(), 2u);
  for (const auto& binding : config.model_inputs) {
    const std::vector<std::string> want =
        binding.input == "numbers" ? std::vector<std::string>{"a", "s"} : std::vector<std::string>{"a"};
    EXPECT_EQ(binding.features, want) << binding.input;
  }
  ASSERT_EQ(config.model_output_from.size(), 2u);
  for (const auto& binding : config.model_output_from) {
    EXPECT_EQ(binding.output, binding.column == "y" ? "label" : "probabilities");
    EXPECT_EQ(binding.element, binding.column == "y" ? 0u : 12u);
  }

  for (const char* bad : {"p[x]", "p[1", "p[-1]", "[1]", "p[1]x", "p[]"}) {
    const auto error = ErrorFor(Replace(bound, "\"probabilities[12]\"", fmt::format("\"{}\"", bad)));
    EXPECT_NE(error.find(fmt::format("'model.output_from.p' = \"{}\"", bad)), std::string::npos) << error;
  }
  const auto partial = ErrorFor(Replace(bound, "y = \"label\", ", ""));
  EXPECT_NE(partial.find("'model.output_from' gives no source for 'y'"), std::string::npos) << partial;
  const auto stranger = ErrorFor(Replace(bound, "y = \"label\"", "y = \"label\", z = \"label\""));
  EXPECT_NE(stranger.find("'model.output_from' names 'z', which is not one of model.outputs"), std::string::npos)
      << stranger;
  const auto empty = ErrorFor(Replace(bound, "extra = [\"a\"]", "extra = []"));
  EXPECT_NE(empty.find("'model.inputs.extra' must name at least one feature"), std::string::npos) << empty;
  const auto argmax = ErrorFor(Replace(bound, "path = \"m.onnx\"", "path = \"m.onnx\"\nclass_from_argmax = true"));
  EXPECT_NE(argmax.find("'model.class_from_argmax' and 'model.output_from' exclude each other"), std::string::npos)
      << argmax;
}

}  // namespace
}  // namespace runnel::pipeline
