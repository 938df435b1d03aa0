// kangaroo-worker: validate and run plans in one process.
//
// Exit codes: 0 success; 1 usage or environment error (bad flags, unreadable
// files, output directory in the way); 2 invalid plan or run metadata; 3 the
// run failed while executing.
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include "kangaroo/core/event_log.h"
#include "kangaroo/core/npy.h"
#include "kangaroo/core/plan_json.h"
#include "kangaroo/core/prepare.h"
#include "kangaroo/data/amrex_plotfile.h"
#include "kangaroo/data/memory_dataset.h"
#include "kangaroo/data/overlay_dataset.h"
#include "kangaroo/data/uri.h"
#include "kangaroo/exec/executor.h"
#include "kangaroo/net/metrics_http.h"
#include "kangaroo/gpu/device.h"
#include "kangaroo/kernels/register.h"
#include "kangaroo/net/cluster.h"

namespace fs = std::filesystem;
using namespace kangaroo;

namespace {

constexpr std::uint64_t kMaxDocumentBytes = 1ull << 30;

const char* kUsage =
    "usage:\n"
    "  kangaroo-worker validate PLAN.json [--runmeta RUNMETA.json]\n"
    "  kangaroo-worker run --plan PLAN.json [--runmeta RUNMETA.json] --dataset URI --out DIR\n"
    "                      [--seed DIR]... [--field ID=NAME | --field ID=#COMP]...\n"
    "                      [--event-log PATH] [--threads N] [--window N]\n"
    "                      [--output FIELD[:VERSION]]... [--all-outputs] [--progress] [--run-id ID]\n"
    "                      [--ranks N | --rank R --world-size N --coordinator HOST:PORT]\n"
    "                      [--connect-timeout SECONDS] [--heartbeat-timeout SECONDS]\n"
    "                      [--metrics-listen HOST:PORT]\n"
    "                      [--memory-cap SIZE [--spill-dir DIR] [--spill-limit SIZE]\n"
    "                       [--eviction lru|cost]]\n"
    "  kangaroo-worker metadata --dataset URI [--runmeta-out FILE]\n"
    "  kangaroo-worker serve   (JSON argument arrays on stdin, one run per line)\n"
    "  kangaroo-worker kernels [--json]\n"
    "  kangaroo-worker devices\n"
    "\n"
    "run writes the plan's result chunks (outputs no task of the plan reads, plus any\n"
    "--output field) to DIR as s<step>_l<level>_f<field>_v<version>_b<block>.npy (.bin for\n"
    "opaque bytes) with manifest.json; DIR appears only when the run succeeded.\n"
    "--seed DIR loads such files into a memory:// dataset, or lays them over any other\n"
    "dataset (an earlier run's results read next to a plotfile's fields). --field registers dataset\n"
    "field ID as the variable NAME (or component COMP) of a plotfile. --runmeta may\n"
    "be left out for amrex:// datasets: the run metadata is synthesized from the plotfile.\n"
    "metadata prints the dataset's metadata as JSON; --runmeta-out also writes the\n"
    "synthesized RunMeta.\n"
    "\n"
    "Several ranks: --ranks N starts N-1 more ranks of this run as local processes.\n"
    "On separate hosts or pods, start the same command on every rank with --rank R\n"
    "--world-size N --coordinator HOST:PORT (rank 0 listens there; also from\n"
    "KANGAROO_RANK, KANGAROO_WORLD_SIZE, KANGAROO_COORDINATOR). Rank 0 writes the\n"
    "results; --event-log PATH becomes PATH.rank<R> on the other ranks. A rank that\n"
    "stays silent for --heartbeat-timeout seconds (default 60; 0: never) fails the job.\n"
    "\n"
    "--memory-cap SIZE (bytes, or with K/M/G suffixes, per rank) keeps the chunks a rank\n"
    "holds under SIZE: tasks wait for memory, and chunks nobody is using are dropped\n"
    "(dataset chunks) or spilled to files under --spill-dir (default $KANGAROO_SPILL_DIR,\n"
    "$TMPDIR or /tmp) with checksums; --spill-limit caps the bytes on disk.\n"
    "--metrics-listen HOST:PORT serves Prometheus metrics at /metrics while the run\n"
    "lasts; rank R listens on PORT+R (PORT 0: any free port, printed).\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string read_text(const std::string& path) {
  const auto bytes = read_file_bytes(path, kMaxDocumentBytes);
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

void print_plan_error(const PlanError& e, const std::string& what) {
  for (const auto& issue : e.issues()) std::cerr << what << ": " << issue.to_string() << "\n";
}

// Checks template domains against the RunMeta so `validate --runmeta` catches
// what a run would reject at expansion (ERR-15).
std::vector<PlanIssue> check_domains(const Plan& plan, const RunMeta& meta) {
  std::vector<PlanIssue> issues;
  for (std::size_t s = 0; s < plan.stages.size(); ++s) {
    for (std::size_t t = 0; t < plan.stages[s].templates.size(); ++t) {
      const auto& tm = plan.stages[s].templates[t];
      const std::string path = "/stages/" + std::to_string(s) + "/templates/" + std::to_string(t) + "/domain";
      const LevelMeta* lv = meta.find_level(tm.domain.step, tm.domain.level);
      if (lv == nullptr) {
        issues.push_back({path, static_cast<int>(s), static_cast<int>(t),
                          "domain (step " + std::to_string(tm.domain.step) + ", level " + std::to_string(tm.domain.level) +
                              ") is not in the run metadata (DATA-6)"});
        continue;
      }
      if (tm.plane == Plane::chunk && tm.domain.blocks) {
        for (auto b : *tm.domain.blocks) {
          if (b < 0 || static_cast<std::size_t>(b) >= lv->boxes.size()) {
            issues.push_back({path + "/blocks", static_cast<int>(s), static_cast<int>(t),
                              "block " + std::to_string(b) + " is out of range (level has " +
                                  std::to_string(lv->boxes.size()) + " blocks)"});
          }
        }
      }
    }
  }
  return issues;
}

int cmd_validate(const std::vector<std::string>& args) {
  std::string plan_path;
  std::string runmeta_path;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--runmeta" && i + 1 < args.size()) runmeta_path = args[++i];
    else if (!args[i].empty() && args[i][0] != '-' && plan_path.empty()) plan_path = args[i];
    else throw UsageError("validate: unexpected argument '" + args[i] + "'");
  }
  if (plan_path.empty()) throw UsageError("validate: missing PLAN.json");
  const std::string text = read_text(plan_path);
  KernelRegistry registry;
  register_default_kernels(registry);
  std::vector<PlanIssue> issues;
  std::optional<Plan> plan;
  try {
    plan = decode_plan(text);
    prepare_plan(*plan, registry);
  } catch (const PlanError& e) {
    issues.insert(issues.end(), e.issues().begin(), e.issues().end());
  }
  if (!runmeta_path.empty()) {
    try {
      const RunMeta meta = decode_runmeta(read_text(runmeta_path));
      if (plan) {
        auto more = check_domains(*plan, meta);
        issues.insert(issues.end(), more.begin(), more.end());
      }
    } catch (const PlanError& e) {
      for (const auto& i : e.issues()) std::cerr << runmeta_path << ": " << i.to_string() << "\n";
      if (issues.empty()) return 2;
    }
  }
  if (!issues.empty()) {
    for (const auto& i : issues) std::cerr << plan_path << ": " << i.to_string() << "\n";
    return 2;
  }
  std::size_t templates = 0;
  for (const auto& st : plan->stages) templates += st.templates.size();
  std::cout << plan_path << ": valid (" << plan->stages.size() << " stages, " << templates << " templates)\n";
  return 0;
}

std::pair<std::int32_t, std::int32_t> parse_output_selector(const std::string& s) {
  const auto colon = s.find(':');
  try {
    std::size_t used = 0;
    const int field = std::stoi(s.substr(0, colon), &used);
    if (used != (colon == std::string::npos ? s.size() : colon)) throw std::invalid_argument(s);
    int version = -1;
    if (colon != std::string::npos) version = std::stoi(s.substr(colon + 1));
    return {field, version};
  } catch (const std::exception&) {
    throw UsageError("--output expects FIELD or FIELD:VERSION, got '" + s + "'");
  }
}

struct FieldBinding {
  std::int32_t id = 0;
  std::string name;           // variable name, or empty when `component` is used
  std::int32_t component = -1;
};

// --field ID=NAME or --field ID=#COMP.
FieldBinding parse_field_binding(const std::string& s) {
  const auto eq = s.find('=');
  FieldBinding b;
  try {
    if (eq == std::string::npos || eq == 0 || eq + 1 >= s.size()) throw std::invalid_argument(s);
    std::size_t used = 0;
    const long long id = std::stoll(s.substr(0, eq), &used);
    if (used != eq || id < 0 || id > std::numeric_limits<std::int32_t>::max()) throw std::invalid_argument(s);
    b.id = static_cast<std::int32_t>(id);
    const std::string rest = s.substr(eq + 1);
    if (rest[0] == '#') {
      const long long c = std::stoll(rest.substr(1), &used);
      if (used + 1 != rest.size() || c < 0 || c > std::numeric_limits<std::int32_t>::max()) {
        throw std::invalid_argument(s);
      }
      b.component = static_cast<std::int32_t>(c);
    } else {
      b.name = rest;
    }
  } catch (const std::exception&) {
    throw UsageError("--field expects ID=NAME or ID=#COMPONENT (ID a non-negative integer), got '" + s + "'");
  }
  return b;
}

// RunMeta synthesized from the dataset's own metadata (COORD-4, API-13);
// only plotfile datasets carry enough geometry.
RunMeta synthesize_dataset_runmeta(const Dataset& dataset) {
  const auto reader = amrex_dataset_reader(dataset);
  if (!reader) {
    fail(ErrorKind::invalid_argument, "cannot synthesize run metadata for a " + std::string(dataset.kind()) +
                                          " dataset (" + dataset.uri() + "); pass --runmeta");
  }
  return synthesize_runmeta(*reader);
}

// An integer flag value of at least `min` (0 or 1).
int parse_count(const std::string& flag, const std::string& v, int min) {
  try {
    std::size_t used = 0;
    const int n = std::stoi(v, &used);
    if (used != v.size() || n < min) throw std::invalid_argument(v);
    return n;
  } catch (const std::exception&) {
    throw UsageError(flag + " expects a " + (min > 0 ? "positive" : "non-negative") + " integer, got '" + v + "'");
  }
}
int parse_positive(const std::string& flag, const std::string& v) { return parse_count(flag, v, 1); }
int parse_rank(const std::string& flag, const std::string& v) { return parse_count(flag, v, 0); }

// Child ranks of a local multi-rank run (--ranks N).
class LocalRanks {
 public:
  ~LocalRanks() { stop(); }

  // Starts ranks 1..world-1 of this command; they join rank 0 at `port`.
  void start(const std::vector<std::string>& run_args, int world, int port) {
    for (int r = 1; r < world; ++r) {
      std::vector<std::string> argv = {"kangaroo-worker", "run"};
      argv.insert(argv.end(), run_args.begin(), run_args.end());
      for (const std::string& x : {std::string("--rank"), std::to_string(r), std::string("--world-size"),
                                   std::to_string(world), std::string("--coordinator"),
                                   "127.0.0.1:" + std::to_string(port)}) {
        argv.push_back(x);
      }
      const pid_t parent = ::getpid();
      const pid_t pid = ::fork();
      if (pid < 0) fail(ErrorKind::io, "cannot start rank " + std::to_string(r) + ": fork failed");
      if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(1);
        ::dup2(2, 1);  // stdout may carry a launcher protocol (serve)
        std::FILE* null_in = std::freopen("/dev/null", "r", stdin);
        (void)null_in;
        std::vector<char*> cargv;
        for (auto& a : argv) cargv.push_back(a.data());
        cargv.push_back(nullptr);
        ::execv("/proc/self/exe", cargv.data());
        std::perror("kangaroo-worker: cannot start a rank");
        ::_exit(127);
      }
      children_.push_back({r, pid});
    }
  }

  // Throws when a child rank already exited (it cannot join any more).
  void check() {
    for (auto& c : children_) {
      if (c.pid <= 0) continue;
      int status = 0;
      if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
        c.pid = -1;
        fail(ErrorKind::io, "rank " + std::to_string(c.rank) + " exited (" + describe(status) +
                                ") before joining the job; its messages are above");
      }
    }
  }

  // Waits for every child; returns the first failure, if any.
  std::string wait_all(double timeout_s) {
    std::string failure;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
    for (auto& c : children_) {
      if (c.pid <= 0) continue;
      int status = 0;
      pid_t got = 0;
      while ((got = ::waitpid(c.pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (got == 0) {
        ::kill(c.pid, SIGKILL);
        ::waitpid(c.pid, &status, 0);
      }
      c.pid = -1;
      if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) && failure.empty()) {
        failure = "rank " + std::to_string(c.rank) + " " + describe(status);
      }
    }
    return failure;
  }

  void stop() {
    for (auto& c : children_) {
      if (c.pid > 0) ::kill(c.pid, SIGKILL);
    }
    wait_all(5.0);
  }

 private:
  static std::string describe(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("was killed by signal ") + ::strsignal(WTERMSIG(status));
    return "ended";
  }
  struct Child {
    int rank;
    pid_t pid;
  };
  std::vector<Child> children_;
};

// SIZE: bytes, or a number with K, M, G or T (powers of 1024; KiB etc. too).
std::uint64_t parse_size(const std::string& flag, const std::string& v) {
  try {
    std::size_t used = 0;
    const double n = std::stod(v, &used);
    std::string unit = v.substr(used);
    if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
    if (unit.size() == 2 && (unit[1] == 'i' || unit[1] == 'I')) unit.pop_back();
    double mult = 1;
    if (unit.empty()) mult = 1;
    else if (unit == "K" || unit == "k") mult = 1024.0;
    else if (unit == "M" || unit == "m") mult = 1024.0 * 1024;
    else if (unit == "G" || unit == "g") mult = 1024.0 * 1024 * 1024;
    else if (unit == "T" || unit == "t") mult = 1024.0 * 1024 * 1024 * 1024;
    else throw std::invalid_argument(v);
    const double bytes = n * mult;
    if (!(bytes >= 1) || bytes > 1e18) throw std::invalid_argument(v);
    return static_cast<std::uint64_t>(bytes);
  } catch (const std::exception&) {
    throw UsageError(flag + " expects a size such as 512M, 2G or a byte count, got '" + v + "'");
  }
}

// This process's resident high-water mark (VmHWM). getrusage's ru_maxrss is
// not used: Linux carries it across exec, so it would include the RSS of the
// process that started us.
std::uint64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  }
  return 0;
}

const char* env_or_null(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

int cmd_run(const std::vector<std::string>& args) {
  std::string plan_path, runmeta_path, dataset_uri, out_dir, event_log, run_id = "run";
  std::vector<std::string> seeds;
  std::vector<FieldBinding> bindings;
  std::vector<std::pair<std::int32_t, std::int32_t>> selectors;
  bool all_outputs = false;
  bool progress = false;
  ExecOptions opt;
  int local_ranks = 0;
  ClusterOptions cluster;
  bool joined_flags = false;
  std::vector<std::string> child_args;  // what local child ranks run with
  std::string spill_dir;
  std::uint64_t spill_limit = 0;
  std::string metrics_listen;
  if (const char* v = env_or_null("KANGAROO_RANK")) cluster.rank = parse_rank("KANGAROO_RANK", v), joined_flags = true;
  if (const char* v = env_or_null("KANGAROO_WORLD_SIZE")) cluster.world_size = parse_positive("KANGAROO_WORLD_SIZE", v);
  if (const char* v = env_or_null("KANGAROO_COORDINATOR")) cluster.coordinator = v;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError(a + " needs a value");
      return args[++i];
    };
    if (a == "--plan") plan_path = value();
    else if (a == "--runmeta") runmeta_path = value();
    else if (a == "--dataset") dataset_uri = value();
    else if (a == "--out") out_dir = value();
    else if (a == "--seed") seeds.push_back(value());
    else if (a == "--field") bindings.push_back(parse_field_binding(value()));
    else if (a == "--event-log") event_log = value();
    else if (a == "--threads") opt.threads = parse_positive(a, value());
    else if (a == "--window") opt.max_active_tasks = static_cast<std::size_t>(parse_positive(a, value()));
    else if (a == "--output") selectors.push_back(parse_output_selector(value()));
    else if (a == "--all-outputs") all_outputs = true;
    else if (a == "--progress") progress = true;
    else if (a == "--run-id") run_id = value();
    else if (a == "--ranks") {
      local_ranks = parse_positive(a, value());
      continue;
    } else if (a == "--rank") cluster.rank = parse_rank(a, value()), joined_flags = true;
    else if (a == "--world-size") cluster.world_size = parse_positive(a, value());
    else if (a == "--coordinator") cluster.coordinator = value();
    else if (a == "--connect-timeout") cluster.connect_timeout_s = parse_positive(a, value());
    else if (a == "--heartbeat-timeout") cluster.heartbeat_timeout_s = parse_rank(a, value());
    else if (a == "--memory-cap") opt.memory_cap = parse_size(a, value());
    else if (a == "--spill-dir") spill_dir = value();
    else if (a == "--metrics-listen") metrics_listen = value();
    else if (a == "--spill-limit") spill_limit = parse_size(a, value());
    else if (a == "--eviction") {
      const std::string p = value();
      if (p == "lru") opt.eviction = EvictionPolicy::lru;
      else if (p == "cost") opt.eviction = EvictionPolicy::cost;
      else throw UsageError("--eviction expects lru or cost, got '" + p + "'");
    }
    else throw UsageError("run: unexpected argument '" + a + "'");
  }
  // Local child ranks run the same command without the topology flags.
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--ranks" || args[i] == "--rank" || args[i] == "--world-size" || args[i] == "--coordinator") {
      ++i;
      continue;
    }
    child_args.push_back(args[i]);
  }
  if (local_ranks > 0 && (joined_flags || cluster.world_size > 1)) {
    throw UsageError("--ranks starts a local job; it cannot be combined with --rank/--world-size");
  }
  if (local_ranks > 0) cluster.world_size = local_ranks;
  if (cluster.rank >= cluster.world_size) {
    throw UsageError("--rank " + std::to_string(cluster.rank) + " is outside --world-size " +
                     std::to_string(cluster.world_size));
  }
  if (cluster.world_size > 1 && local_ranks == 0 && cluster.coordinator.empty()) {
    throw UsageError("--world-size " + std::to_string(cluster.world_size) +
                     " needs --coordinator HOST:PORT (where rank 0 listens)");
  }
  const bool writes_results = cluster.rank == 0;
  if (opt.memory_cap == 0 && (!spill_dir.empty() || spill_limit > 0)) {
    throw UsageError("--spill-dir and --spill-limit need --memory-cap");
  }
  if (opt.memory_cap > 0 && spill_dir.empty()) {
    const char* d = env_or_null("KANGAROO_SPILL_DIR");
    if (d == nullptr) d = env_or_null("TMPDIR");
    spill_dir = d != nullptr ? d : "/tmp";
  }
  opt.rank = cluster.rank;
  opt.world_size = cluster.world_size;
  if (plan_path.empty() || dataset_uri.empty() || out_dir.empty()) {
    throw UsageError("run: --plan, --dataset and --out are required");
  }
  std::error_code ec;
  if (writes_results && fs::exists(out_dir, ec) && !(fs::is_directory(out_dir, ec) && fs::is_empty(out_dir, ec))) {
    throw UsageError("output directory '" + out_dir + "' already exists and is not empty; choose a new --out");
  }

  KernelRegistry registry;
  register_default_kernels(registry);
  PreparedPlan prepared;
  try {
    prepared = prepare_plan(decode_plan(read_text(plan_path)), registry);
  } catch (const PlanError& e) {
    print_plan_error(e, plan_path);
    return 2;
  }

  std::shared_ptr<Dataset> dataset = open_dataset_uri(dataset_uri);
  if (!seeds.empty()) {
    // A memory dataset takes the chunks itself; any other backend gets them
    // laid over it, so a plan can read an earlier run's results next to the
    // backend's own fields.
    auto* mem = dynamic_cast<MemoryDataset*>(dataset.get());
    std::shared_ptr<OverlayDataset> overlay;
    if (mem == nullptr) overlay = std::make_shared<OverlayDataset>(dataset);
    for (const auto& dir : seeds) {
      const auto n = mem != nullptr ? mem->seed_from_directory(dir) : overlay->seed_from_directory(dir);
      std::cerr << "seeded " << n << " chunk(s) from " << dir << "\n";
    }
    if (overlay) dataset = overlay;
  }
  if (!bindings.empty() && dataset->kind() == "memory") {
    throw UsageError("--field needs a dataset with named fields; memory:// chunks are addressed by field ID");
  }
  for (const auto& b : bindings) {
    if (b.component >= 0) dataset->register_field_component(b.id, b.component);
    else dataset->register_field(b.id, b.name);
  }

  RunMeta meta;
  try {
    if (!runmeta_path.empty()) meta = decode_runmeta(read_text(runmeta_path));
    else if (amrex_dataset_reader(*dataset)) meta = synthesize_dataset_runmeta(*dataset);
    else throw UsageError("run: --runmeta is required for a " + std::string(dataset->kind()) + " dataset");
  } catch (const PlanError& e) {
    print_plan_error(e, runmeta_path.empty() ? dataset_uri : runmeta_path);
    return 2;
  }

  if (!event_log.empty() && cluster.rank > 0) event_log += ".rank" + std::to_string(cluster.rank);
  auto log = EventLog::open(event_log, opt.rank);
  opt.event_log = log.get();
  opt.run_id = run_id;
  opt.keep_all = all_outputs;
  if (!selectors.empty()) {
    opt.keep = [selectors](const ChunkId& id) {
      return std::any_of(selectors.begin(), selectors.end(),
                         [&](const auto& s) { return s.first == id.field && (s.second < 0 || s.second == id.version); });
    };
  }
  if (progress) {
    opt.progress = [](std::uint64_t done, std::uint64_t total) {
      std::fprintf(stderr, "\rprogress: %llu/%llu tasks", static_cast<unsigned long long>(done),
                   static_cast<unsigned long long>(total));
      if (done == total) std::fputc('\n', stderr);
    };
  }

  // Joins the other ranks (after this rank validated everything, so a bad
  // plan fails before any rank waits for another).
  LocalRanks children;
  std::unique_ptr<RankLink> link;
  // Chunks received ahead of the executor wait in the transport, where the
  // executor does not see them: an eighth of the cap is their window, held
  // back from what chunks and tasks get.
  if (opt.memory_cap > 0) {
    cluster.receive_window = std::min(cluster.receive_window, std::max<std::uint64_t>(1 << 20, opt.memory_cap / 8));
    if (cluster.world_size > 1) opt.memory_held_back = effective_receive_window(cluster.receive_window);
  }
  const std::string who = cluster.world_size > 1 ? "rank " + std::to_string(cluster.rank) + ": " : "";
  if (cluster.world_size > 1) {
    try {
      if (local_ranks > 1) {
        const auto [fd, port] = listen_tcp("127.0.0.1:0");
        cluster.listen_fd = fd;
        children.start(child_args, local_ranks, port);
        cluster.while_waiting = [&children] { children.check(); };
        struct Closer {
          int fd;
          ~Closer() { ::close(fd); }
        } closer{fd};
        link = join_cluster(cluster);
      } else {
        link = join_cluster(cluster);
      }
    } catch (const Error& e) {
      std::cerr << who << "cannot start the job: " << e.what() << "\n";
      return 3;
    }
    opt.link = link.get();
    if (cluster.rank == 0) std::cerr << "joined " << link->description() << "\n";
  }

  Session session(dataset);
  std::shared_ptr<SpillArea> spill;
  if (opt.memory_cap > 0) {
    try {
      spill = std::make_shared<SpillArea>(spill_dir, spill_limit);
    } catch (const Error& e) {
      std::cerr << who << "error: " << e.what() << "\n";
      return 1;
    }
    session.set_spill_area(spill);
  }
  // Per-rank metrics endpoint (seed §8).
  MetricRegistry metric_registry;
  std::unique_ptr<MetricsServer> metrics_server;
  if (!metrics_listen.empty()) {
    const auto colon = metrics_listen.rfind(':');
    int port = 0;
    try {
      port = colon == std::string::npos ? -1 : std::stoi(metrics_listen.substr(colon + 1));
    } catch (const std::exception&) {
      port = -1;
    }
    if (port < 0 || port > 65535) throw UsageError("--metrics-listen expects HOST:PORT, got '" + metrics_listen + "'");
    const std::string where =
        metrics_listen.substr(0, colon) + ":" + std::to_string(port == 0 ? 0 : port + cluster.rank);
    opt.metrics = &metric_registry;
    auto& peer_bytes = metric_registry.counter("kangaroo_worker_peer_bytes_total", "Chunk bytes exchanged with each rank.",
                                        {"peer", "direction"});
    auto& peer_chunks = metric_registry.counter("kangaroo_worker_peer_chunks_total", "Chunks exchanged with each rank.",
                                         {"peer", "direction"});
    auto& peer_secs = metric_registry.counter("kangaroo_worker_peer_send_seconds_total",
                                       "Time sends to each rank took from post to completion.", {"peer"});
    auto& spill_bytes = metric_registry.counter("kangaroo_worker_spill_bytes_total", "Bytes written to and read from spill files.",
                                         {"direction"});
    auto& spill_live = metric_registry.gauge("kangaroo_worker_spill_bytes", "Bytes in spill files now.");
    metric_registry.gauge("kangaroo_worker_rank", "This process's rank (value) in a job of world_size ranks.", {"world_size"})
        .with({std::to_string(cluster.world_size)})
        .set(cluster.rank);
    // Counters mirror totals kept by the link and the spill area.
    auto mirror = [](MetricSeries& series, double total) {
      if (total > series.value()) series.add(total - series.value());
    };
    RankLink* link_ptr = link.get();
    SpillArea* spill_ptr = spill.get();
    auto refresh = [=, &peer_bytes, &peer_chunks, &peer_secs, &spill_bytes, &spill_live] {
      if (link_ptr != nullptr) {
        const auto traffic = link_ptr->traffic();
        for (std::size_t p = 0; p < traffic.size(); ++p) {
          if (static_cast<int>(p) == cluster.rank) continue;
          const std::string peer = std::to_string(p);
          mirror(peer_bytes.with({peer, "sent"}), static_cast<double>(traffic[p].bytes_sent));
          mirror(peer_bytes.with({peer, "received"}), static_cast<double>(traffic[p].bytes_received));
          mirror(peer_chunks.with({peer, "sent"}), static_cast<double>(traffic[p].chunks_sent));
          mirror(peer_chunks.with({peer, "received"}), static_cast<double>(traffic[p].chunks_received));
          mirror(peer_secs.with({peer}), traffic[p].send_seconds);
        }
      }
      if (spill_ptr != nullptr) {
        const SpillStats ss = spill_ptr->stats();
        mirror(spill_bytes.with({"written"}), static_cast<double>(ss.bytes_written));
        mirror(spill_bytes.with({"read"}), static_cast<double>(ss.bytes_read));
        spill_live.series().set(static_cast<double>(ss.bytes_live));
      }
    };
    try {
      metrics_server = std::make_unique<MetricsServer>(where, metric_registry, refresh);
    } catch (const Error& e) {
      std::cerr << who << "error: " << e.what() << "\n";
      return 1;
    }
    std::cerr << who << "metrics on http://" << metrics_listen.substr(0, colon) << ":" << metrics_server->port()
              << "/metrics\n";
  }

  RunStats stats;
  const double t0 = EventLog::now();
  if (log) log->phase("execute", "runtime", "start", t0, 0.0);
  try {
    stats = session.run(prepared, meta, opt);
  } catch (const Error& e) {
    if (log) log->phase("execute", "runtime", "error", t0, EventLog::now());
    std::cerr << who << "run failed: " << e.what() << "\n";
    metrics_server.reset();
    link.reset();
    if (local_ranks > 1) children.wait_all(10.0);
    return 3;
  }
  if (log) log->phase("execute", "runtime", "end", t0, EventLog::now());
  metrics_server.reset();
  link.reset();
  if (local_ranks > 1) {
    const std::string failure = children.wait_all(30.0);
    if (!failure.empty()) {
      std::cerr << "run failed: " << failure << " after the job finished\n";
      return 3;
    }
  }
  std::string memory_note;
  nlohmann::json memory = {{"peak_bytes", stats.peak_memory_bytes},
                           {"peak_rss_bytes", peak_rss_bytes()},
                           {"cache_hits", stats.cache_hits},
                           {"cache_misses", stats.cache_misses}};
  if (opt.memory_cap > 0) {
    const SpillStats ss = spill->stats();
    memory["cap_bytes"] = opt.memory_cap;
    memory["evictions"] = stats.evictions;
    memory["admission_waits"] = stats.admission_waits;
    memory["spill_bytes_written"] = ss.bytes_written;
    memory["spill_bytes_read"] = ss.bytes_read;
    memory["spill_peak_bytes"] = ss.peak_bytes_live;
    memory_note = "; peak memory " + std::to_string(stats.peak_memory_bytes) + " of cap " +
                  std::to_string(opt.memory_cap) + " bytes, " + std::to_string(stats.evictions) + " eviction(s), " +
                  std::to_string(ss.bytes_written) + " bytes spilled, " + std::to_string(ss.bytes_read) + " read back";
  }
  if (!writes_results) {
    std::cerr << who << "run ok: " << stats.tasks_run << " task(s) in " << stats.seconds << " s" << memory_note << "\n";
    return 0;
  }

  // Outputs become visible only as a whole: write into a staging directory
  // and rename it into place (LIFE-2).
  std::vector<ChunkId> produced = stats.produced;
  std::sort(produced.begin(), produced.end(), [](const ChunkId& a, const ChunkId& b) {
    return std::tie(a.step, a.level, a.field, a.version, a.block) < std::tie(b.step, b.level, b.field, b.version, b.block);
  });
  const fs::path out(out_dir);
  const fs::path staging = out.string() + ".partial-" + std::to_string(::getpid());
  fs::remove_all(staging, ec);
  fs::create_directories(staging);
  nlohmann::json chunks = nlohmann::json::array();
  for (const auto& id : produced) {
    ConstBufferPtr buf = session.retrieve(id);
    const bool opaque = buf->scalar() == ScalarType::opaque;
    const std::string file = id.to_string() + (opaque ? ".bin" : ".npy");
    if (opaque) {
      write_file_atomic((staging / file).string(), buf->bytes());
    } else {
      write_npy_file_atomic((staging / file).string(), *buf);
    }
    const auto& d = buf->descriptor();
    std::vector<std::uint64_t> shape(d.extents.begin(), d.extents.begin() + d.rank);
    chunks.push_back({{"file", file},
                      {"step", id.step},
                      {"level", id.level},
                      {"field", id.field},
                      {"version", id.version},
                      {"block", id.block},
                      {"dtype", scalar_name(d.scalar)},
                      {"shape", shape},
                      {"bytes", buf->byte_size()}});
  }
  nlohmann::json manifest = {{"schema", "kangaroo.manifest/1"},
                             {"run_id", run_id},
                             {"dataset", dataset_uri},
                             {"tasks_total", stats.tasks_total},
                             {"tasks_run", stats.tasks_run},
                             {"stages_run", stats.stages_run},
                             {"ranks", cluster.world_size},
                             {"memory", memory},
                             {"seconds", stats.seconds},
                             {"chunks", chunks}};
  const std::string text = manifest.dump(2) + "\n";
  write_file_atomic((staging / "manifest.json").string(),
                    std::span(reinterpret_cast<const std::byte*>(text.data()), text.size()));
  if (fs::exists(out, ec)) fs::remove(out, ec);  // empty directory checked above
  fs::rename(staging, out, ec);
  if (ec) {
    std::cerr << "cannot move results into '" << out_dir << "': " << ec.message() << " (they are in " << staging.string()
              << ")\n";
    return 1;
  }
  std::cerr << "run ok: " << stats.tasks_run << " task(s), " << stats.stages_run << " stage(s), " << produced.size()
            << " chunk(s) written to " << out_dir << " in " << stats.seconds << " s" << memory_note << "\n";
  return 0;
}

int cmd_metadata(const std::vector<std::string>& args) {
  std::string dataset_uri, runmeta_out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--dataset" && i + 1 < args.size()) dataset_uri = args[++i];
    else if (a == "--runmeta-out" && i + 1 < args.size()) runmeta_out = args[++i];
    else throw UsageError("metadata: unexpected argument '" + a + "'");
  }
  if (dataset_uri.empty()) throw UsageError("metadata: --dataset is required");
  std::string text;
  std::optional<RunMeta> meta;
  try {
    auto dataset = open_dataset_uri(dataset_uri);
    text = dataset->metadata_json(0);
    if (!runmeta_out.empty()) meta = synthesize_dataset_runmeta(*dataset);
  } catch (const Error& e) {
    // META-3: metadata failures carry the URI.
    std::cerr << "error: Failed to load dataset metadata for '" << dataset_uri << "': " << e.what() << "\n";
    return 1;
  }
  if (meta) {
    const std::string doc = encode_runmeta(*meta) + "\n";
    write_file_atomic(runmeta_out, std::span(reinterpret_cast<const std::byte*>(doc.data()), doc.size()));
  }
  std::cout << text << "\n";
  return 0;
}

int cmd_kernels(const std::vector<std::string>& args) {
  const bool as_json = !args.empty() && args[0] == "--json";
  KernelRegistry registry;
  register_default_kernels(registry);
  nlohmann::json list = nlohmann::json::array();
  for (const auto* d : registry.list()) {
    const KernelEntry& e = registry.find(d->name);
    if (as_json) {
      list.push_back({{"name", d->name},
                      {"n_inputs", d->n_inputs},
                      {"n_outputs", d->n_outputs},
                      {"needs_neighbors", d->needs_neighbors},
                      {"params", param_type_name(e.param_type)},
                      {"implemented", e.implemented}});
    } else {
      std::cout << d->name << "\t" << param_type_name(e.param_type) << (e.implemented ? "" : "\t(not implemented in this build)")
                << "\n";
    }
  }
  if (as_json) std::cout << list.dump(2) << "\n";
  return 0;
}

int cmd_devices() {
  const DeviceStatus s = probe_devices();
  std::cout << "cuda build: " << (s.built_with_cuda ? "yes" : "no") << "\ndevices: " << s.device_count << "\n"
            << s.detail << "\n";
  return 0;
}

// Runs one command with the exit-code mapping of the header comment.
int dispatch(const std::string& cmd, const std::vector<std::string>& args) {
  try {
    if (cmd == "validate") return cmd_validate(args);
    if (cmd == "run") return cmd_run(args);
    if (cmd == "metadata") return cmd_metadata(args);
    if (cmd == "kernels") return cmd_kernels(args);
    if (cmd == "devices") return cmd_devices();
    throw UsageError("unknown command '" + cmd + "'");
  } catch (const UsageError& e) {
    std::cerr << "error: " << e.what() << "\n" << kUsage;
    return 1;
  } catch (const PlanError& e) {
    print_plan_error(e, "plan");
    return 2;
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

// serve: a warm worker for a job launcher. Reads one JSON array of arguments
// per line on stdin (["run", "--plan", ...]), runs it as that command would,
// then writes "\x1ekangaroo-serve-done <exit code>" on its own line to stdout.
// Ends at end of input. Saves process start-up per job; a launcher that wants
// to stop a job kills the process and starts another.
int cmd_serve() {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    int rc = 1;
    std::vector<std::string> args;
    try {
      const auto doc = nlohmann::json::parse(line);
      if (!doc.is_array() || doc.empty()) throw std::invalid_argument("expected a non-empty JSON array");
      for (const auto& a : doc) args.push_back(a.get<std::string>());
    } catch (const std::exception& e) {
      std::cerr << "error: serve: bad request line: " << e.what() << "\n";
      args.clear();
    }
    if (!args.empty()) {
      const std::string cmd = args[0];
      args.erase(args.begin());
      rc = cmd == "serve" ? (std::cerr << "error: serve cannot nest\n", 1) : dispatch(cmd, args);
    }
    std::cerr.flush();
    ::malloc_trim(0);  // give the job's memory back before idling
    std::cout << "\x1ekangaroo-serve-done " << rc << std::endl;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? 1 : 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  if (cmd == "serve") return cmd_serve();
  return dispatch(cmd, args);
}
