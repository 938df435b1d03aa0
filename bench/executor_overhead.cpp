// Executor overhead benchmark: a no-op kernel (registered here, not part of
// the default catalog) over three plan shapes. One workload per process so
// the peak RSS belongs to that workload. Prints one JSON object.
//
//   kangaroo-bench-overhead --workload wide|tree|chain [--tasks N] [--threads T]
//                           [--event-log PATH] [--repeat R]
#include <sys/resource.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "kangaroo/core/prepare.h"
#include "kangaroo/exec/executor.h"
#include "kangaroo/kernels/register.h"

using namespace kangaroo;

namespace {

// Per-call timestamps of the no-op kernel, one slot per call, so inter-call
// gaps on a thread give the executor's per-task cost.

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

thread_local std::int64_t t_last = 0;
thread_local std::vector<std::int64_t>* t_gaps = nullptr;
std::mutex g_gaps_mu;
std::vector<std::vector<std::int64_t>*> g_all_gaps;

void noop_kernel(KernelContext&) {
  const std::int64_t t = now_ns();
  if (t_gaps == nullptr) {
    t_gaps = new std::vector<std::int64_t>();
    t_gaps->reserve(1 << 20);
    std::lock_guard lock(g_gaps_mu);
    g_all_gaps.push_back(t_gaps);
  } else {
    t_gaps->push_back(t - t_last);
  }
  t_last = t;
}

long peak_rss_kib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

long current_rss_kib() {
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

OutputRef tiny_output(std::int32_t field) {
  OutputRef o;
  o.field = field;
  o.buffer.dtype = ScalarType::u8;
  o.buffer.shape = ShapeKind::fixed;
  o.buffer.extents = {1};
  return o;
}

TaskTemplate noop_template(const std::string& name, Plane plane) {
  TaskTemplate t;
  t.name = name;
  t.plane = plane;
  t.kernel = "bench_noop";
  return t;
}

RunMeta flat_runmeta(std::int64_t blocks) {
  RunMeta m;
  StepMeta s;
  LevelMeta l;
  l.boxes.reserve(static_cast<std::size_t>(blocks));
  for (std::int64_t b = 0; b < blocks; ++b) {
    IndexBox box;
    box.lo = {static_cast<std::int32_t>(b), 0, 0};
    box.hi = box.lo;
    l.boxes.push_back(box);
  }
  s.levels.push_back(std::move(l));
  m.steps.push_back(std::move(s));
  return m;
}

Plan wide_plan() {
  Plan p;
  Stage st;
  st.name = "wide";
  auto t = noop_template("noop", Plane::chunk);
  t.outputs.push_back(tiny_output(1));
  st.templates.push_back(t);
  p.stages.push_back(std::move(st));
  return p;
}

// Leaves, then rounds of fan-in-8 graph stages until one block remains.
Plan tree_plan(std::int64_t leaves, std::int64_t fan_in) {
  Plan p = wide_plan();
  std::int64_t n = leaves;
  std::int32_t field = 1;
  while (n > 1) {
    Stage st;
    st.name = "reduce" + std::to_string(field);
    st.plane = Plane::graph;
    st.after = {static_cast<std::int32_t>(p.stages.size() - 1)};
    auto t = noop_template("reduce", Plane::graph);
    FieldRef in;
    in.field = field;
    t.inputs.push_back(in);
    t.outputs.push_back(tiny_output(field + 1));
    GraphReduceSpec g;
    g.fan_in = fan_in;
    g.num_inputs = n;
    t.graph_reduce = g;
    st.templates.push_back(t);
    p.stages.push_back(std::move(st));
    n = (n + fan_in - 1) / fan_in;
    ++field;
  }
  return p;
}

Plan chain_plan(std::int64_t stages) {
  Plan p;
  for (std::int64_t i = 0; i < stages; ++i) {
    Stage st;
    st.name = "link" + std::to_string(i);
    auto t = noop_template("link", Plane::chunk);
    t.domain.blocks = std::vector<std::int32_t>{0};
    if (i > 0) {
      FieldRef in;
      in.field = static_cast<std::int32_t>(i);
      t.inputs.push_back(in);
      st.after = {static_cast<std::int32_t>(i - 1)};
    }
    t.outputs.push_back(tiny_output(static_cast<std::int32_t>(i + 1)));
    st.templates.push_back(t);
    p.stages.push_back(std::move(st));
  }
  return p;
}

double percentile(std::vector<std::int64_t>& v, double q) {
  if (v.empty()) return 0.0;
  const std::size_t k = std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]);
}

}  // namespace

int main(int argc, char** argv) {
  std::string workload = "wide";
  std::int64_t tasks = 100000;
  int threads = 0;
  int repeat = 3;
  std::string event_log;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(1);
      }
      return argv[++i];
    };
    if (a == "--workload") workload = next();
    else if (a == "--tasks") tasks = std::stoll(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--event-log") event_log = next();
    else if (a == "--repeat") repeat = std::stoi(next());
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 1;
    }
  }
  KernelRegistry registry;
  registry.add(make_kernel("bench_noop", ParamType::none, &noop_kernel, 0, 1));

  Plan plan;
  RunMeta meta;
  if (workload == "wide") {
    plan = wide_plan();
    meta = flat_runmeta(tasks);
  } else if (workload == "tree") {
    plan = tree_plan(tasks, 8);
    meta = flat_runmeta(tasks);
  } else if (workload == "chain") {
    plan = chain_plan(tasks);
    meta = flat_runmeta(1);
  } else {
    std::fprintf(stderr, "unknown workload %s (wide, tree, chain)\n", workload.c_str());
    return 1;
  }
  const PreparedPlan prepared = prepare_plan(std::move(plan), registry);
  const long rss_before = current_rss_kib();

  std::vector<double> seconds;
  RunStats last;
  for (int r = 0; r < repeat; ++r) {
    ChunkStore store;
    std::unique_ptr<EventLog> log;
    if (!event_log.empty()) {
      std::remove(event_log.c_str());
      log = EventLog::open(event_log, 0);
    }
    ExecOptions opt;
    opt.threads = threads;
    opt.event_log = log.get();
    {
      std::lock_guard lock(g_gaps_mu);
      for (auto* g : g_all_gaps) g->clear();
    }
    Executor exec(prepared, meta, nullptr, store, opt);
    last = exec.run();
    if (log) log->flush();
    seconds.push_back(last.seconds);
  }
  std::vector<std::int64_t> gaps;
  for (auto* g : g_all_gaps) gaps.insert(gaps.end(), g->begin(), g->end());
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  const double n = static_cast<double>(last.tasks_run + last.tasks_empty);
  std::printf(
      "{\"workload\":\"%s\",\"engine\":\"kangaroo\",\"event_log\":%s,\"threads\":%d,\"tasks\":%.0f,\"stages\":%llu,"
      "\"repeats\":%d,\"seconds_median\":%.6f,\"seconds_min\":%.6f,\"seconds_max\":%.6f,\"tasks_per_s\":%.1f,"
      "\"per_task_us\":%.3f,\"per_stage_us\":%.3f,\"gap_p50_us\":%.3f,\"gap_p99_us\":%.3f,"
      "\"peak_metadata_bytes\":%llu,\"metadata_bytes_per_task\":%.1f,\"peak_active_tasks\":%zu,"
      "\"peak_rss_kib\":%ld,\"rss_before_kib\":%ld}\n",
      workload.c_str(), event_log.empty() ? "false" : "true", threads, n,
      static_cast<unsigned long long>(last.stages_run), repeat, median, seconds.front(), seconds.back(), n / median,
      median / n * 1e6, median / static_cast<double>(std::max<std::uint64_t>(1, last.stages_run)) * 1e6,
      percentile(gaps, 0.5) / 1e3, percentile(gaps, 0.99) / 1e3,
      static_cast<unsigned long long>(last.peak_metadata_bytes),
      static_cast<double>(last.peak_metadata_bytes) / n, last.peak_active_tasks, peak_rss_kib(), rss_before);
  return 0;
}
