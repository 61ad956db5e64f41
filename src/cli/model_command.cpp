// `runnel model inspect` and `runnel predict`: offline use of models and pipelines.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include "commands.hpp"
#include "runnel/core/csv.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/model/class_labels.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/csv_scoring.hpp"
#include "runnel/pipeline/model_provider.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/registry/registry.hpp"
#include "runnel/tensor/conformance.hpp"
#include "runnel/tensor/graph.hpp"
#include "runnel/tensor/onnx_import.hpp"
#include "runnel/tensor/tensor_files.hpp"

namespace runnel::cli {
namespace {

// One line per test (pass / FAIL / unsupported, and why), then the counts. Exit 1
// when a test failed: a wrong answer, never just an operator not implemented.
int RunConformance(const std::vector<std::string>& roots, bool quiet) {
  size_t counts[3] = {0, 0, 0};
  for (const auto& root : roots) {
    for (const auto& dir : tensor::FindConformanceTests(root)) {
      const auto r = tensor::RunConformanceTest(dir);
      ++counts[static_cast<size_t>(r.verdict)];
      if (quiet && r.verdict != tensor::Verdict::kFail) continue;
      fmt::print("{:<12} {}{}\n", tensor::VerdictName(r.verdict), r.test, r.detail.empty() ? "" : ": " + r.detail);
    }
  }
  const size_t total = counts[0] + counts[1] + counts[2];
  fmt::print("{} test(s): {} pass, {} fail, {} unsupported\n", total, counts[0], counts[1], counts[2]);
  return counts[static_cast<size_t>(tensor::Verdict::kFail)] > 0 ? 1 : 0;
}

struct RunArgs {
  std::string model, output_dir;
  std::vector<std::string> inputs;  // NAME=FILE, or FILE for a model of one input
  bool npy = false;
};

// The graph's inputs in order, each read from the file `args` names for it.
std::vector<tensor::Tensor> ReadRunInputs(const tensor::Graph& graph, const RunArgs& args) {
  std::map<std::string, std::string> files;
  for (const auto& arg : args.inputs) {
    const size_t eq = arg.find('=');
    std::string name = eq == std::string::npos ? "" : arg.substr(0, eq);
    if (name.empty() && graph.inputs.size() == 1) name = graph.input_info[0].name;
    if (!files.emplace(name, eq == std::string::npos ? arg : arg.substr(eq + 1)).second)
      throw Error(ErrorCode::InvalidInput, fmt::format("--input {} is given twice", name));
  }
  std::vector<std::string> names;
  for (const auto& info : graph.input_info) names.push_back(info.name);
  std::vector<tensor::Tensor> inputs;
  for (const auto& name : names) {
    auto it = files.find(name);
    if (it == files.end())
      throw Error(ErrorCode::InvalidInput, fmt::format("the model's input '{}' is not given (--input {}=FILE; its "
                                                       "inputs: {})",
                                                       name, name, fmt::join(names, ", ")));
    inputs.push_back(tensor::LoadTensorFile(it->second));
    files.erase(it);
  }
  if (!files.empty())
    throw Error(ErrorCode::InvalidInput, fmt::format("the model has no input '{}' (its inputs: {})",
                                                     files.begin()->first, fmt::join(names, ", ")));
  return inputs;
}

// A value name as a file name: only letters, digits, '.', '-' and '_' (a hostile
// model's output named "../x" stays in the output directory).
std::string FileNameOf(const std::string& name) {
  std::string out;
  for (char c : name) out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ? c : '_';
  return out.empty() ? "output" : out;
}

// `runnel model run`: one run of an ONNX graph through the tensor runtime, inputs and
// outputs as tensor files.
int RunModel(const RunArgs& args) {
  const std::filesystem::path model(args.model);
  auto graph = tensor::LoadOnnxGraph(ReadFileBytes(model, "the model file"), args.model,
                                     model.has_parent_path() ? model.parent_path() : std::filesystem::path("."));
  auto inputs = ReadRunInputs(*graph, args);
  tensor::Session session(graph);
  const auto outputs = session.Run(std::move(inputs));
  std::filesystem::create_directories(args.output_dir);
  for (size_t i = 0; i < outputs.size(); ++i) {
    const std::string& name = graph->output_info[i].name;
    const auto path = std::filesystem::path(args.output_dir) / (FileNameOf(name) + (args.npy ? ".npy" : ".pb"));
    const std::string bytes = args.npy ? tensor::SaveNpy(outputs[i]) : tensor::SaveOnnxTensor(outputs[i], name);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
    if (!out.flush()) throw Error(ErrorCode::Io, fmt::format("cannot write {}", path.string()));
    fmt::print("{}: {} {}\n", path.string(), tensor::DataTypeName(static_cast<int>(outputs[i].type())),
               tensor::ShapeText(outputs[i].shape()));
  }
  return 0;
}

// --tokenizer and --labels-file: what a transformer text classifier is loaded with.
struct ModelFiles {
  std::string tokenizer, labels_file;

  void AddOptions(CLI::App* command) {
    command->add_option("--tokenizer", tokenizer, "Hugging Face tokenizer.json of the model's token inputs")
        ->check(CLI::ExistingFile);
    command->add_option("--labels-file", labels_file, "Class labels of the model's logits (labels.txt or config.json)")
        ->check(CLI::ExistingFile);
  }
  model::LoadOptions Options() const {
    model::LoadOptions options;
    if (!tokenizer.empty()) options.tokens.tokenizer = text::Tokenizer::Load(tokenizer);
    if (!labels_file.empty()) options.logit_labels = model::ReadClassLabels(labels_file);
    return options;
  }
};

// `runnel model push`: a file this process cannot load is refused before it reaches
// the registry; with --wait, the serving processes' verdict is the exit status.
struct PushArgs {
  std::string db, name, file, description, data_type;
  int wait_s = 0;
  ModelFiles files;
};

int PushModel(CliContext& ctx, const PushArgs& args, bool has_data_type) {
  const std::string bytes = ReadFileBytes(args.file);
  registry::PushRequest request;
  request.name = args.name;
  request.bytes = bytes;  // a view
  request.description = args.description;
  if (has_data_type) request.data_type = args.data_type;
  model::LoadModel(args.file, args.files.Options());
  auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args.db));
  registry::MigrateRegistry(conn);
  auto added = registry::Push(conn, request);
  const std::string what = fmt::format("{} v{}", added.name, added.version);
  if (args.wait_s <= 0) {
    fmt::print("pushed {} ({} bytes){}; serving processes validate and swap to it\n", what, added.size,
               added.data_type ? " for data type " + *added.data_type : "");
    return 0;
  }
  const auto verdict = registry::AwaitVerdict(conn, added, std::chrono::seconds(args.wait_s));
  if (verdict.status == registry::ModelStatus::kRejected) {
    throw Error(ErrorCode::Model,
                fmt::format("{} was rejected by the serving processes: {}", what, verdict.error.value_or("?")));
  }
  if (verdict.status == registry::ModelStatus::kPending) {
    throw Error(ErrorCode::Unavailable, fmt::format("{} is pushed but no serving process judged it within {} s (is "
                                                    "`runnel run` serving a pipeline that uses it?)",
                                                    what, args.wait_s));
  }
  fmt::print("pushed {} ({} bytes): {}\n", what, verdict.size, registry::ModelStatusName(verdict.status));
  return 0;
}

// `runnel model list`: each name's versions; the current version of a (name, data
// type) is its newest ready one.
int ListModels(CliContext& ctx, const std::string& db, const std::string& only) {
  auto conn = postgres::Connection::Open(DatabaseUrl(ctx, db));
  registry::MigrateRegistry(conn);
  auto names = only.empty() ? registry::Names(conn) : std::vector<std::string>{only};
  fmt::print("  {:<16} {:<5} {:<12} {:<10} {:<18} {}\n", "NAME", "VER", "STATUS", "DATA TYPE", "FORMAT", "DESCRIPTION");
  for (const auto& name : names) {
    std::set<std::optional<std::string>> current_found;
    for (const auto& v : registry::Versions(conn, name)) {
      const bool current = v.status == registry::ModelStatus::kReady && current_found.insert(v.data_type).second;
      fmt::print("{} {:<16} v{:<4} {:<12} {:<10} {:<18} {}{}\n", current ? "*" : " ", v.name, v.version,
                 registry::ModelStatusName(v.status), v.data_type.value_or("-"), v.format.empty() ? "-" : v.format,
                 v.description, v.error ? " (" + *v.error + ")" : "");
    }
  }
  fmt::print("(* the version serving)\n");
  return 0;
}

// `runnel model inspect`: format, widths, parameters, layers, tokenizer.
int InspectModel(const std::string& file, const ModelFiles& files) {
  const auto options = files.Options();
  auto m = model::LoadModel(file, options);
  fmt::print("file:        {}\nformat:      {}\nproducer:    {}\n", file, model::ModelFormatName(m->info().format),
             m->info().producer);
  fmt::print("inputs:      {} values{} per row\noutputs:     {} values per row\n", m->input_width(),
             m->text_width() > 0 ? fmt::format(" and {} text(s)", m->text_width()) : "", m->output_width());
  if (m->is_graph()) {
    fmt::print("parameters:  {}\nmultiply-adds per row: {}\n", m->graph().ParameterCount(), m->graph().MultiplyAdds());
  }
  fmt::print("{}:\n", m->is_graph() ? "layers" : "model");
  for (const auto& line : m->Describe()) fmt::print("  {}\n", line);
  if (options.tokens.tokenizer) {
    fmt::print("tokenizer:   {}\n", options.tokens.tokenizer->source());
    for (const auto& line : options.tokens.tokenizer->Describe()) fmt::print("  {}\n", line);
  }
  return 0;
}

struct PredictArgs {
  std::string pipeline, model, input, output, columns, delimiter = ",";
};

// `runnel predict`: progress every 100,000 rows on stderr; exit 1 when every row
// failed (some failed rows are data; all of them failing is a failed job).
int Predict(const PredictArgs& args) {
  auto config = pipeline::LoadPipelineConfig(args.pipeline);
  auto m = pipeline::LoadFileModel(config, args.model);
  pipeline::CsvScoringOptions options;
  options.delimiter = ParseDelimiter(args.delimiter);
  if (!args.columns.empty()) options.columns = SplitAt(args.columns, ',');
  options.input_name = args.input;
  std::ifstream file_in;
  std::istream* in = &std::cin;
  if (args.input != "-") {
    file_in.open(args.input, std::ios::binary);
    if (!file_in) throw Error(ErrorCode::Io, fmt::format("{}: cannot open the input", args.input));
    in = &file_in;
  }
  std::ofstream file_out;
  std::ostream* out = &std::cout;
  if (!args.output.empty() && args.output != "-") {
    file_out.open(args.output, std::ios::binary | std::ios::trunc);
    if (!file_out) throw Error(ErrorCode::Io, fmt::format("{}: cannot create the output", args.output));
    out = &file_out;
  }
  const bool tty = ::isatty(2) != 0;
  size_t next_report = 100000;
  auto summary = pipeline::ScoreCsv(config, m, *in, *out, options, [&](const auto& s) {
    if (s.rows < next_report) return;
    fmt::print(stderr, "{}scored {} rows ({} failed)", tty ? "\r" : "", s.rows, s.failed);
    if (!tty) fmt::print(stderr, "\n");
    next_report += 100000;
  });
  fmt::print(stderr, "{}scored {} rows, {} failed\n", tty && summary.rows >= 100000 ? "\n" : "", summary.rows,
             summary.failed);
  if (summary.rows > 0 && summary.failed == summary.rows) {
    fmt::print(stderr, "every row failed: see the error column\n");
    return 1;
  }
  return 0;
}

constexpr const char* kDbHelp = "libpq connection string (default: RUNNEL_DB_URL, else the embedded database)";

void AddConformanceCommand(CLI::App& model, std::vector<Command>& commands) {
  struct ConformanceArgs {
    std::vector<std::string> dirs;
    bool quiet = false;
  };
  auto args = std::make_shared<ConformanceArgs>();
  auto* conformance = model.add_subcommand(
      "conformance", "Run ONNX backend test directories (model.onnx + test_data_set_*) through the tensor runtime");
  conformance->add_option("dirs", args->dirs, "Test directories, or directories holding them")
      ->required()
      ->check(CLI::ExistingDirectory);
  conformance->add_flag("--quiet", args->quiet, "Print failures and the summary only");
  commands.push_back({conformance, [args](CliContext&) { return RunConformance(args->dirs, args->quiet); }});
}

void AddModelRunCommand(CLI::App& model, std::vector<Command>& commands) {
  auto args = std::make_shared<RunArgs>();
  auto* run = model.add_subcommand("run", "Run an ONNX model once on tensor files (.pb TensorProto or .npy)");
  run->add_option("--model", args->model, "ONNX model file")->required()->check(CLI::ExistingFile);
  run->add_option("--input", args->inputs, "NAME=FILE for each model input (FILE alone for a model of one input)")
      ->required();
  run->add_option("--output-dir", args->output_dir, "Directory for the outputs, one file per output")->required();
  run->add_flag("--npy", args->npy, "Write outputs as .npy (default: ONNX TensorProto .pb)");
  commands.push_back({run, [args](CliContext&) { return RunModel(*args); }});
}

void AddRegistryCommands(CLI::App& model, std::vector<Command>& commands) {
  auto push_args = std::make_shared<PushArgs>();
  auto* push = model.add_subcommand("push", "Add a model version to the registry: every serving process swaps to it");
  push->add_option("--name", push_args->name, "Registry name (a pipeline's [model].name)")->required();
  push->add_option("--file", push_args->file, "Model file (.h5, .keras, .onnx, .pmml, .pb)")
      ->required()
      ->check(CLI::ExistingFile);
  push_args->files.AddOptions(push);  // to check a transformer here as the pipeline will load it
  push->add_option("--description", push_args->description, "Free text shown by GET /v1/models");
  push->add_option("--data-type", push_args->data_type, "Serve records of this data type (keyed pipelines)");
  push->add_option("--db", push_args->db, kDbHelp);
  push->add_flag("--wait{60}", push_args->wait_s,
                 "Wait (--wait=SECONDS, default 60) for the serving processes' verdict: exit 1 with the reason "
                 "when they reject the version or none answers in time");
  commands.push_back({push, [push_args, push](CliContext& ctx) {
                        return PushModel(ctx, *push_args, push->count("--data-type") > 0);
                      }});

  struct NameArgs {
    std::string db, name, data_type;
  };
  auto list_args = std::make_shared<NameArgs>();
  auto* list = model.add_subcommand("list", "List a registry model's versions with their status");
  list->add_option("--name", list_args->name, "Registry name (default: every model)");
  list->add_option("--db", list_args->db, kDbHelp);
  commands.push_back({list, [list_args](CliContext& ctx) { return ListModels(ctx, list_args->db, list_args->name); }});

  auto back_args = std::make_shared<NameArgs>();
  auto* rollback = model.add_subcommand("rollback", "Return a registry model to its previous good version");
  rollback->add_option("--name", back_args->name, "Registry name")->required();
  rollback->add_option("--data-type", back_args->data_type, "The data type's model (keyed pipelines)");
  rollback->add_option("--db", back_args->db, kDbHelp);
  commands.push_back({rollback, [back_args, rollback](CliContext& ctx) {
                        auto conn = postgres::Connection::Open(DatabaseUrl(ctx, back_args->db));
                        registry::MigrateRegistry(conn);
                        std::optional<std::string> type;
                        if (rollback->count("--data-type") > 0) type = back_args->data_type;
                        auto current = registry::Rollback(conn, back_args->name, type);
                        fmt::print("{} is back at v{}\n", current.name, current.version);
                        return 0;
                      }});
}

void AddInspectCommand(CLI::App& model, std::vector<Command>& commands) {
  auto* inspect = model.add_subcommand("inspect", "Show a model's format, layers, shapes and parameter count");
  auto file = std::make_shared<std::string>();
  auto files = std::make_shared<ModelFiles>();
  inspect->add_option("FILE", *file, "Keras .h5/.keras, ONNX, PMML, TensorFlow .pb or XGBoost .json file")->required();
  files->AddOptions(inspect);
  commands.push_back({inspect, [file, files](CliContext&) { return InspectModel(*file, *files); }});
}

void AddPredictCommand(CLI::App& root, std::vector<Command>& commands) {
  auto* predict = root.add_subcommand("predict", "Score a CSV file with a pipeline's features and a model");
  auto args = std::make_shared<PredictArgs>();
  predict->add_option("--pipeline", args->pipeline, "Pipeline TOML file")->required()->check(CLI::ExistingFile);
  predict->add_option("--model", args->model, "Model file (default: the pipeline's [model].path)");
  predict->add_option("--input", args->input, "Input CSV ('-' for standard input)")->required();
  predict->add_option("--output", args->output, "Output CSV ('-' or omitted: standard output)");
  predict->add_option("--columns", args->columns, "Column names of a headerless input, comma-separated");
  predict->add_option("--delimiter", args->delimiter, "Input field delimiter (default ','; 'tab' for tabs)");
  commands.push_back({predict, [args](CliContext&) { return Predict(*args); }});
}

}  // namespace

void AddModelCommands(CLI::App& root, std::vector<Command>& commands) {
  auto* model = root.add_subcommand("model", "Inspect model files; push, list and roll back registry versions");
  model->require_subcommand(1);
  AddConformanceCommand(*model, commands);
  AddModelRunCommand(*model, commands);
  AddRegistryCommands(*model, commands);
  AddInspectCommand(*model, commands);
  AddPredictCommand(root, commands);
}

}  // namespace runnel::cli
