#include "runnel/pipeline/pipeline_config.hpp"

#include <fmt/format.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <set>

#include "runnel/core/duration.hpp"
#include "runnel/core/error.hpp"

namespace runnel::pipeline {
namespace {

class Reader {
 public:
  explicit Reader(std::filesystem::path file) : file_(std::move(file)) {}

  [[noreturn]] void Fail(const toml::node* node, const std::string& what) const {
    if (node != nullptr && node->source().begin.line > 0) {
      throw Error(ErrorCode::Config, fmt::format("{}:{}:{}: {}", file_.string(), node->source().begin.line,
                                                 node->source().begin.column, what));
    }
    throw Error(ErrorCode::Config, fmt::format("{}: {}", file_.string(), what));
  }

  const toml::table& Table(const toml::table& parent, std::string_view key, bool required) const {
    static const toml::table kEmpty;
    const toml::node* node = parent.get(key);
    if (node == nullptr) {
      if (required) Fail(nullptr, fmt::format("missing table [{}]", key));
      return kEmpty;
    }
    if (!node->is_table()) Fail(node, fmt::format("'{}' must be a table", key));
    return *node->as_table();
  }

  std::string String(const toml::table& t, std::string_view path, std::string_view key, bool required) const {
    const toml::node* node = t.get(key);
    if (node == nullptr) {
      if (required) Fail(nullptr, fmt::format("missing key '{}{}'", path, key));
      return {};
    }
    auto value = node->value<std::string>();
    if (!value || value->empty()) Fail(node, fmt::format("'{}{}' must be a non-empty string", path, key));
    return *value;
  }

  // An optional integer key within lo..hi (`unit`, when given, ends the message).
  std::optional<int64_t> Integer(const toml::table& t, std::string_view path, std::string_view key, int64_t lo,
                                 int64_t hi, std::string_view unit = "") const {
    const toml::node* node = t.get(key);
    if (node == nullptr) return std::nullopt;
    auto value = node->value<int64_t>();
    if (!value || *value < lo || *value > hi) {
      Fail(node, fmt::format("'{}{}' must be {}..{}{}{}", path, key, lo, hi, unit.empty() ? "" : " ", unit));
    }
    return value;
  }

  std::optional<bool> Boolean(const toml::table& t, std::string_view path, std::string_view key) const {
    const toml::node* node = t.get(key);
    if (node == nullptr) return std::nullopt;
    if (!node->is_boolean()) Fail(node, fmt::format("'{}{}' must be true or false", path, key));
    return node->value<bool>();
  }

  std::vector<std::string> Strings(const toml::table& t, std::string_view path, std::string_view key,
                                   bool required) const {
    const toml::node* node = t.get(key);
    std::vector<std::string> out;
    if (node == nullptr) {
      if (required) Fail(nullptr, fmt::format("missing key '{}{}'", path, key));
      return out;
    }
    const auto* array = node->as_array();
    if (array == nullptr) Fail(node, fmt::format("'{}{}' must be an array of strings", path, key));
    for (const auto& item : *array) {
      auto value = item.value<std::string>();
      if (!value || value->empty()) Fail(&item, fmt::format("'{}{}' must hold non-empty strings", path, key));
      out.push_back(*value);
    }
    return out;
  }

  std::vector<double> Numbers(const toml::table& t, std::string_view path, std::string_view key) const {
    const toml::node* node = t.get(key);
    std::vector<double> out;
    if (node == nullptr) return out;
    const auto* array = node->as_array();
    if (array == nullptr) Fail(node, fmt::format("'{}{}' must be an array of numbers", path, key));
    for (const auto& item : *array) {
      auto value = item.value<double>();
      if (!value) Fail(&item, fmt::format("'{}{}' must hold numbers", path, key));
      out.push_back(*value);
    }
    return out;
  }

  void AllowOnly(const toml::table& t, std::string_view path, std::initializer_list<std::string_view> keys) const {
    for (const auto& [key, node] : t) {
      if (std::find(keys.begin(), keys.end(), key.str()) == keys.end()) {
        Fail(&node, fmt::format("unknown key '{}{}'", path, key.str()));
      }
    }
  }

 private:
  std::filesystem::path file_;
};

constexpr size_t kMaxKeyColumns = 4;

// [source] key: one column name, or an array of 1 to kMaxKeyColumns distinct names.
std::vector<std::string> KeyColumns(const Reader& reader, const toml::table& source) {
  const toml::node* node = source.get("key");
  if (node != nullptr && node->is_array()) {
    auto columns = reader.Strings(source, "source.", "key", true);
    if (columns.empty() || columns.size() > kMaxKeyColumns)
      reader.Fail(node, fmt::format("'source.key' must name 1 to {} columns", kMaxKeyColumns));
    for (size_t i = 0; i < columns.size(); ++i) {
      if (std::find(columns.begin(), columns.begin() + static_cast<std::ptrdiff_t>(i), columns[i]) !=
          columns.begin() + static_cast<std::ptrdiff_t>(i))
        reader.Fail(node, fmt::format("'source.key' names column '{}' twice", columns[i]));
    }
    return columns;
  }
  return {reader.String(source, "source.", "key", true)};
}

}  // namespace

namespace {

// [snapshots] dir, every, keep and the query limits. `dir` is relative to the file.
void ReadSnapshots(const Reader& reader, const toml::table& root, const std::filesystem::path& file,
                   PipelineConfig& config) {
  auto& snapshots = config.snapshots;
  const std::filesystem::path beside = std::filesystem::absolute(file).parent_path();
  snapshots.dir = beside / "snapshots";
  if (root.get("snapshots") == nullptr) return;
  const auto& table = reader.Table(root, "snapshots", true);
  reader.AllowOnly(table, "snapshots.",
                   {"dir", "every", "keep", "pace", "query_timeout_ms", "query_memory_mb", "query_max_rows"});
  if (auto dir = reader.String(table, "snapshots.", "dir", false); !dir.empty()) {
    const std::filesystem::path p(dir);
    snapshots.dir = p.is_absolute() ? p : beside / p;
  }
  if (auto every = reader.String(table, "snapshots.", "every", false); !every.empty()) {
    auto seconds = ParseDuration(every);
    if (!seconds || seconds->count() < 1) {
      reader.Fail(table.get("every"),
                  fmt::format("'snapshots.every' is \"{}\": expected a whole number and a unit, e.g. \"10m\"", every));
    }
    snapshots.every = *seconds;
  }
  if (auto keep = reader.Integer(table, "snapshots.", "keep", 1, 1000)) snapshots.keep = static_cast<int>(*keep);
  if (const toml::node* pace = table.get("pace")) {
    const auto share = pace->value<double>();
    if (!share || !(*share >= 0.05 && *share <= 1.0)) {
      reader.Fail(pace, "'snapshots.pace' must be a number from 0.05 to 1 (the share of the time a copy works)");
    }
    snapshots.pace = *share;
  }
  if (auto timeout = reader.Integer(table, "snapshots.", "query_timeout_ms", 1, 3600000, "milliseconds"))
    snapshots.query_timeout = std::chrono::milliseconds(*timeout);
  if (auto memory = reader.Integer(table, "snapshots.", "query_memory_mb", 16, 1 << 20, "MiB"))
    snapshots.query_memory_mb = *memory;
  if (auto rows = reader.Integer(table, "snapshots.", "query_max_rows", 1, 10000000)) snapshots.query_max_rows = *rows;
}

// [jetstream]: servers, stream and subject are required; files are relative to the
// pipeline file.
void ReadJetStream(const Reader& reader, const toml::table& root, const std::filesystem::path& file,
                   PipelineConfig& config) {
  if (root.get("jetstream") == nullptr) return;
  const auto& table = reader.Table(root, "jetstream", true);
  reader.AllowOnly(table, "jetstream.",
                   {"mode", "servers", "stream", "subject", "durable", "dead_letter", "results", "batch", "threads",
                    "ack_wait", "credentials", "ca_file", "cert_file", "key_file"});
  JetStreamConfig js;
  if (auto mode = reader.String(table, "jetstream.", "mode", false); mode == "direct") {
    js.mode = JetStreamMode::kDirect;
    if (config.recommend)
      reader.Fail(table.get("mode"),
                  "'jetstream.mode' \"direct\" scores records without making rows: [recommend], which joins a row's "
                  "products, needs \"table\"");
  } else if (!mode.empty() && mode != "table") {
    reader.Fail(table.get("mode"), fmt::format("'jetstream.mode' is \"{}\": expected \"table\" or \"direct\"", mode));
  }
  js.servers = reader.Strings(table, "jetstream.", "servers", true);
  if (js.servers.empty()) reader.Fail(table.get("servers"), "'jetstream.servers' must name at least one server");
  js.stream = reader.String(table, "jetstream.", "stream", true);
  js.subject = reader.String(table, "jetstream.", "subject", true);
  js.durable = reader.String(table, "jetstream.", "durable", false);
  if (js.durable.empty()) js.durable = "runnel-" + config.name;
  js.dead_letter = reader.String(table, "jetstream.", "dead_letter", false);
  if (js.dead_letter.empty()) js.dead_letter = "runnel." + config.name + ".dead";
  js.results = reader.String(table, "jetstream.", "results", false);
  if (auto batch = reader.Integer(table, "jetstream.", "batch", 1, 100000, "messages")) js.batch = *batch;
  if (auto threads = reader.Integer(table, "jetstream.", "threads", 1, 64)) js.threads = *threads;
  if (auto wait = reader.String(table, "jetstream.", "ack_wait", false); !wait.empty()) {
    auto seconds = ParseDuration(wait);
    if (!seconds || seconds->count() < 1)
      reader.Fail(
          table.get("ack_wait"),
          fmt::format("'jetstream.ack_wait' is \"{}\": expected a whole number and a unit, e.g. \"30s\"", wait));
    js.ack_wait = *seconds;
  }
  const std::filesystem::path beside = std::filesystem::absolute(file).parent_path();
  for (auto [key, path] : {std::pair{"credentials", &js.credentials}, std::pair{"ca_file", &js.ca_file},
                           std::pair{"cert_file", &js.cert_file}, std::pair{"key_file", &js.key_file}}) {
    if (auto value = reader.String(table, "jetstream.", key, false); !value.empty()) {
      const std::filesystem::path p(value);
      *path = p.is_absolute() ? p : beside / p;
    }
  }
  if (js.cert_file.empty() != js.key_file.empty())
    reader.Fail(table.get(js.cert_file.empty() ? "key_file" : "cert_file"),
                "'jetstream.cert_file' and 'jetstream.key_file' go together (a client certificate and its key)");
  config.jetstream = std::move(js);
}

// [model] tokenizer, max_tokens, labels_file: what a transformer text classifier needs
// besides its ONNX file (paths relative to the pipeline file).
void ReadModelFiles(const Reader& reader, const toml::table& model, const std::filesystem::path& file,
                    PipelineConfig& config) {
  const auto beside = [&](const std::string& path) -> std::optional<std::filesystem::path> {
    if (path.empty()) return std::nullopt;
    const std::filesystem::path p(path);
    return p.is_absolute() ? p : std::filesystem::absolute(file).parent_path() / p;
  };
  config.model_tokenizer = beside(reader.String(model, "model.", "tokenizer", false));
  config.model_labels_file = beside(reader.String(model, "model.", "labels_file", false));
  if (auto max = reader.Integer(model, "model.", "max_tokens", 1, 100000)) {
    if (!config.model_tokenizer) reader.Fail(model.get("max_tokens"), "'model.max_tokens' needs 'model.tokenizer'");
    config.model_max_tokens = static_cast<size_t>(*max);
  }
}

// [model] inputs and output_from (ModelInputBinding, ModelOutputBinding): inline
// tables naming the model's inputs and outputs. Whether the model has them is the
// OutputPlan's check, when the model is known.
void ReadModelBindings(const Reader& reader, const toml::table& model, PipelineConfig& config) {
  const toml::table& inputs = reader.Table(model, "inputs", false);
  for (const auto& [name, node] : inputs) {
    const std::string key(name.str());
    ModelInputBinding binding{key, reader.Strings(inputs, "model.inputs.", key, true)};
    if (binding.features.empty())
      reader.Fail(&node, fmt::format("'model.inputs.{}' must name at least one feature", key));
    config.model_inputs.push_back(std::move(binding));
  }
  const toml::table& outputs = reader.Table(model, "output_from", false);
  for (const auto& [name, node] : outputs) {
    const std::string column(name.str());
    if (std::find(config.model_outputs.begin(), config.model_outputs.end(), column) == config.model_outputs.end())
      reader.Fail(&node, fmt::format("'model.output_from' names '{}', which is not one of model.outputs", column));
    const std::string text = reader.String(outputs, "model.output_from.", column, true);
    try {
      config.model_output_from.push_back(ParseOutputReference(column, text));
    } catch (const Error& e) {
      reader.Fail(&node, e.what());
    }
  }
  if (!config.model_output_from.empty() && config.model_output_from.size() != config.model_outputs.size()) {
    for (const auto& column : config.model_outputs) {
      const auto& from = config.model_output_from;
      if (std::none_of(from.begin(), from.end(), [&](const ModelOutputBinding& b) { return b.column == column; }))
        reader.Fail(&outputs, fmt::format("'model.output_from' gives no source for '{}' (of model.outputs): with "
                                          "output_from, every model output is taken by name",
                                          column));
    }
  }
  if (!config.model_output_from.empty() && config.class_from_argmax)
    reader.Fail(model.get("class_from_argmax"), "'model.class_from_argmax' and 'model.output_from' exclude each other");
}

}  // namespace

ModelOutputBinding ParseOutputReference(std::string column, std::string_view text) {
  ModelOutputBinding binding{std::move(column), std::string(text), 0};
  const auto open = text.find('[');
  if (open != std::string_view::npos) {
    const std::string_view index = text.substr(open + 1);
    size_t element = 0;
    const auto [end, ec] = std::from_chars(index.data(), index.data() + index.size(), element);
    if (ec != std::errc() || end == index.data() || std::string_view(end, index.data() + index.size() - end) != "]")
      throw Error(ErrorCode::Config, fmt::format("'model.output_from.{}' = \"{}\": write \"name\" or \"name[index]\", "
                                                 "the index a whole number from 0",
                                                 binding.column, text));
    binding.output = std::string(text.substr(0, open));
    binding.element = element;
  }
  if (binding.output.empty())
    throw Error(ErrorCode::Config,
                fmt::format("'model.output_from.{}' = \"{}\" names no model output", binding.column, text));
  return binding;
}

namespace {

toml::table ParseFile(const std::filesystem::path& file) {
  try {
    return toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    if (src.begin.line == 0) throw Error(ErrorCode::Io, fmt::format("{}: {}", file.string(), e.description()));
    throw Error(ErrorCode::Config,
                fmt::format("{}:{}:{}: {}", file.string(), src.begin.line, src.begin.column, e.description()));
  }
}

// name: what the pipeline's tables and the API are named by.
std::string ReadName(const Reader& reader, const toml::table& root) {
  std::string n = reader.String(root, "", "name", true);
  const bool identifier =
      n.size() <= 40 && (std::islower(static_cast<unsigned char>(n[0])) || n[0] == '_') &&
      std::all_of(n.begin(), n.end(), [](unsigned char c) { return std::islower(c) || std::isdigit(c) || c == '_'; });
  if (!identifier) reader.Fail(root.get("name"), "'name' must be a lower-case SQL identifier of at most 40 characters");
  return n;
}

void ReadSource(const Reader& reader, const toml::table& source, PipelineConfig& config) {
  reader.AllowOnly(source, "source.", {"table", "key", "client", "columns", "text_columns", "clients_set_keys"});
  config.table = reader.String(source, "source.", "table", false);
  config.key_columns = KeyColumns(reader, source);
  config.client_column = reader.String(source, "source.", "client", false);
  config.features.input_columns = reader.Strings(source, "source.", "columns", false);
  config.features.text_columns = reader.Strings(source, "source.", "text_columns", false);
  if (config.features.input_columns.empty() && config.features.text_columns.empty())
    reader.Fail(&source, "'source.columns' (numeric inputs) or 'source.text_columns' is required");
  if (auto set_keys = reader.Boolean(source, "source.", "clients_set_keys")) config.clients_set_keys = *set_keys;
}

void ReadModel(const Reader& reader, const toml::table& model, const std::filesystem::path& file,
               PipelineConfig& config) {
  reader.AllowOnly(model, "model.",
                   {"path", "outputs", "labels", "name", "type_column", "class_from_argmax", "tokenizer", "max_tokens",
                    "labels_file", "inputs", "output_from"});
  if (auto argmax = reader.Boolean(model, "model.", "class_from_argmax")) config.class_from_argmax = *argmax;
  config.model_name = reader.String(model, "model.", "name", false);
  config.model_type_column = reader.String(model, "model.", "type_column", false);
  if (!config.model_type_column.empty() && config.model_name.empty())
    reader.Fail(model.get("type_column"),
                "'model.type_column' needs 'model.name': typed models come from the registry");
  if (auto path = reader.String(model, "model.", "path", false); !path.empty()) {
    std::filesystem::path p(path);
    config.model_path = p.is_absolute() ? p : std::filesystem::absolute(file).parent_path() / p;
  }
  ReadModelFiles(reader, model, file, config);
  config.model_outputs = reader.Strings(model, "model.", "outputs", true);
  ReadModelBindings(reader, model, config);
  config.label_outputs = reader.Strings(model, "model.", "labels", false);
  for (const auto& label : config.label_outputs) {
    if (std::find(config.model_outputs.begin(), config.model_outputs.end(), label) == config.model_outputs.end())
      reader.Fail(model.get("labels"),
                  fmt::format("'model.labels' names '{}', which is not one of model.outputs", label));
    if (std::count(config.label_outputs.begin(), config.label_outputs.end(), label) > 1)
      reader.Fail(model.get("labels"), fmt::format("'model.labels' names '{}' twice", label));
  }
}

// [[derived]]: named expressions over the inputs.
void ReadDerived(const Reader& reader, const toml::table& root, PipelineConfig& config) {
  const toml::node* derived = root.get("derived");
  if (derived == nullptr) return;
  const auto* array = derived->as_array();
  if (array == nullptr) reader.Fail(derived, "'derived' must be an array of tables ([[derived]])");
  for (const auto& item : *array) {
    const auto* table = item.as_table();
    if (table == nullptr) reader.Fail(&item, "each [[derived]] must be a table");
    reader.AllowOnly(*table, "derived.", {"name", "expr"});
    config.features.derived.push_back(
        {reader.String(*table, "derived.", "name", true), reader.String(*table, "derived.", "expr", true)});
  }
}

void ReadFeatures(const Reader& reader, const toml::table& features, PipelineConfig& config) {
  reader.AllowOnly(features, "features.", {"inputs", "text", "means", "scales", "missing"});
  config.features.features = reader.Strings(features, "features.", "inputs", false);
  config.features.text_features = reader.Strings(features, "features.", "text", false);
  if (config.features.features.empty() && config.features.text_features.empty())
    reader.Fail(&features, "'features.inputs' or 'features.text' is required");
  if (!config.features.text_features.empty() && config.features.text_columns.empty())
    reader.Fail(features.get("text"), "'features.text' reads text columns: list them in 'source.text_columns'");
  if (const auto missing = reader.String(features, "features.", "missing", false); !missing.empty()) {
    if (missing != "fail" && missing != "nan")
      reader.Fail(features.get("missing"), fmt::format("'features.missing' is \"{}\": expected \"fail\" (a NULL "
                                                       "input fails the row, the default) or \"nan\" (it reaches "
                                                       "the model as a missing value)",
                                                       missing));
    config.features.missing_as_nan = missing == "nan";
  }
  config.features.means = reader.Numbers(features, "features.", "means");
  config.features.scales = reader.Numbers(features, "features.", "scales");
}

void ReadQuota(const Reader& reader, const toml::table& root, PipelineConfig& config) {
  const toml::node* node = root.get("quota");
  if (node == nullptr) return;
  const auto& quota = reader.Table(root, "quota", true);
  reader.AllowOnly(quota, "quota.", {"max_requests", "window"});
  auto max = quota.get("max_requests") ? quota.get("max_requests")->value<int64_t>() : std::nullopt;
  if (!max || *max < 0) reader.Fail(node, "'quota.max_requests' must be a non-negative integer");
  if (config.client_column.empty()) reader.Fail(node, "[quota] needs 'source.client', the column to count by");
  config.quota_max_requests = *max;
  if (auto window = reader.String(quota, "quota.", "window", false); !window.empty()) {
    auto seconds = ParseDuration(window);
    if (!seconds) {
      reader.Fail(quota.get("window"),
                  fmt::format("'quota.window' is \"{}\": expected a whole number and a unit, e.g. \"1h\" or "
                              "\"1d\" (leave it out to count over all time)",
                              window));
    }
    config.quota_window = *seconds;
  }
}

// [capture] on: "insert" always, "update" to re-score changed rows.
bool ReadCaptureEvents(const Reader& reader, const toml::table& capture) {
  const auto events = reader.Strings(capture, "capture.", "on", true);
  for (const auto& event : events) {
    if (event != "insert" && event != "update") {
      reader.Fail(capture.get("on"),
                  fmt::format("'capture.on' lists \"{}\": the events are \"insert\" and \"update\"", event));
    }
  }
  if (std::find(events.begin(), events.end(), "insert") == events.end())
    reader.Fail(capture.get("on"), "'capture.on' must include \"insert\": new rows are always requests");
  return std::find(events.begin(), events.end(), "update") != events.end();
}

// capture = "notify" | "queue" (the short form), or a [capture] table.
void ReadCapture(const Reader& reader, const toml::table& root, PipelineConfig& config) {
  const toml::node* node = root.get("capture");
  if (node == nullptr) return;
  if (node->is_string()) {
    const std::string mode = *node->value<std::string>();
    if (mode != "notify" && mode != "queue") reader.Fail(node, "'capture' must be \"queue\" or \"notify\"");
    config.capture = mode == "notify" ? CaptureMode::Notify : CaptureMode::Queue;
    return;
  }
  const auto& capture = reader.Table(root, "capture", true);
  reader.AllowOnly(capture, "capture.", {"mode", "channel", "max_batch", "gather_ms", "synchronous_commit", "on"});
  const std::string mode = reader.String(capture, "capture.", "mode", false);
  if (mode == "notify") {
    config.capture = CaptureMode::Notify;
  } else if (!mode.empty() && mode != "queue") {
    reader.Fail(capture.get("mode"), "'capture.mode' must be \"queue\" or \"notify\"");
  }
  if (auto channel = reader.String(capture, "capture.", "channel", false); !channel.empty())
    config.notify_channel = channel;
  if (auto batch = reader.Integer(capture, "capture.", "max_batch", 1, 100000))
    config.max_batch = static_cast<size_t>(*batch);
  if (auto gather = reader.Integer(capture, "capture.", "gather_ms", 0, 1000, "milliseconds"))
    config.gather_ms = *gather;
  if (capture.get("on") != nullptr) config.capture_updates = ReadCaptureEvents(reader, capture);
  if (auto sync = reader.Boolean(capture, "capture.", "synchronous_commit")) config.synchronous_commit = *sync;
}

// [serving], [write_back] and [recommend]: each optional.
void ReadServing(const Reader& reader, const toml::table& root, PipelineConfig& config) {
  if (root.get("serving") != nullptr) {
    const auto& serving = reader.Table(root, "serving", true);
    reader.AllowOnly(serving, "serving.", {"lock_timeout_ms", "max_attempts", "event_retention_s"});
    if (auto timeout = reader.Integer(serving, "serving.", "lock_timeout_ms", 1, 3600000, "milliseconds"))
      config.lock_timeout_ms = *timeout;
    if (auto attempts = reader.Integer(serving, "serving.", "max_attempts", 1, 1000))
      config.max_attempts = static_cast<int32_t>(*attempts);
    if (auto retention = reader.Integer(serving, "serving.", "event_retention_s", 1, 31 * 86400, "seconds"))
      config.event_retention_s = *retention;
  }
  if (root.get("write_back") != nullptr) {
    const auto& write_back = reader.Table(root, "write_back", true);
    reader.AllowOnly(write_back, "write_back.", {"columns"});
    config.write_back = reader.Strings(write_back, "write_back.", "columns", true);
  }
  if (root.get("recommend") != nullptr) {
    const auto& recommend = reader.Table(root, "recommend", true);
    reader.AllowOnly(recommend, "recommend.", {"table", "key", "where"});
    config.recommend = RecommendConfig{reader.String(recommend, "recommend.", "table", true),
                                       reader.String(recommend, "recommend.", "key", true),
                                       reader.String(recommend, "recommend.", "where", true)};
  }
}

// Every output is a model output or a derived feature; names are unique; what is
// written back is an output.
void CheckOutputs(const Reader& reader, const toml::table& output, const PipelineConfig& config) {
  std::set<std::string> known(config.model_outputs.begin(), config.model_outputs.end());
  if (known.size() != config.model_outputs.size()) reader.Fail(nullptr, "model.outputs repeats a name");
  for (const auto& d : config.features.derived) known.insert(d.name);
  std::set<std::string> seen;
  for (const auto& column : config.output_columns) {
    if (!known.contains(column)) {
      reader.Fail(output.get("columns"),
                  fmt::format("output column '{}' is neither a model output nor a derived feature", column));
    }
    if (!seen.insert(column).second)
      reader.Fail(output.get("columns"), fmt::format("output column '{}' is listed twice", column));
  }
  for (const auto& column : config.write_back) {
    if (std::find(config.output_columns.begin(), config.output_columns.end(), column) == config.output_columns.end()) {
      reader.Fail(nullptr, fmt::format("write_back column '{}' is not one of [output].columns", column));
    }
  }
}

// Update capture needs the queue, and the write-back must not change what it watches:
// each write-back would request a new prediction.
void CheckCaptureUpdates(const Reader& reader, const PipelineConfig& config) {
  if (!config.capture_updates) return;
  if (config.capture == CaptureMode::Notify)
    reader.Fail(nullptr, "'capture.on' = [\"insert\", \"update\"] needs capture mode \"queue\"");
  for (const auto& column : CaptureUpdateColumns(config)) {
    if (std::find(config.write_back.begin(), config.write_back.end(), column) != config.write_back.end()) {
      reader.Fail(nullptr, fmt::format("write_back column '{}' is also an input of the model, and updates are "
                                       "captured: each write-back would request a new prediction",
                                       column));
    }
  }
}

}  // namespace

PipelineConfig LoadPipelineConfig(const std::filesystem::path& file) {
  PipelineConfig config;
  config.file = file;
  const toml::table root = ParseFile(file);
  Reader reader(file);
  reader.AllowOnly(root, "",
                   {"name", "source", "model", "derived", "features", "output", "quota", "capture", "serving",
                    "write_back", "recommend", "snapshots", "jetstream"});
  config.name = ReadName(reader, root);
  ReadSource(reader, reader.Table(root, "source", true), config);
  ReadModel(reader, reader.Table(root, "model", true), file, config);
  ReadDerived(reader, root, config);
  ReadFeatures(reader, reader.Table(root, "features", true), config);
  const auto& output = reader.Table(root, "output", true);
  reader.AllowOnly(output, "output.", {"columns"});
  config.output_columns = reader.Strings(output, "output.", "columns", true);
  ReadQuota(reader, root, config);
  ReadCapture(reader, root, config);
  ReadServing(reader, root, config);
  CheckOutputs(reader, output, config);
  CheckCaptureUpdates(reader, config);
  ReadSnapshots(reader, root, file, config);
  ReadJetStream(reader, root, file, config);
  // Compile once here so expression errors surface when the file is loaded.
  features::FeatureProgram::Compile(config.features, file.string());
  return config;
}

bool IsLabelOutput(const PipelineConfig& config, std::string_view column) {
  return std::find(config.label_outputs.begin(), config.label_outputs.end(), column) != config.label_outputs.end();
}

std::vector<std::string> CaptureUpdateColumns(const PipelineConfig& config) {
  std::vector<std::string> columns = config.key_columns;
  for (const auto& c : config.features.input_columns) {
    if (std::find(columns.begin(), columns.end(), c) == columns.end()) columns.push_back(c);
  }
  for (const auto& c : config.features.text_columns) {
    if (std::find(columns.begin(), columns.end(), c) == columns.end()) columns.push_back(c);
  }
  if (!config.model_type_column.empty() &&
      std::find(columns.begin(), columns.end(), config.model_type_column) == columns.end()) {
    columns.push_back(config.model_type_column);
  }
  return columns;
}

}  // namespace runnel::pipeline
