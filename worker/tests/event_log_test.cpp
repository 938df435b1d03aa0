// JSON-Lines event log (§7, EVT-1..9): task events written by the executor and
// the writer's own line formats. Every line is parsed as JSON; nothing is
// checked by substring.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "exec_test_support.h"
#include "kangaroo/core/error.h"
#include "kangaroo/core/event_log.h"

namespace kangaroo {
namespace {

using namespace exec_testing;
using nlohmann::json;
namespace fs = std::filesystem;

double wall_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void fill_kernel(KernelContext& ctx) {
  for (auto& out : ctx.outputs) {
    double* d = out->elements<double>();
    const std::uint64_t n = out->descriptor().element_count();
    for (std::uint64_t p = 0; p < n; ++p) d[p] = ctx.block + 0.25 * static_cast<double>(p);
  }
}

void sum_kernel(KernelContext& ctx) {
  Buffer& out = *ctx.outputs[0];
  double* d = out.elements<double>();
  const std::uint64_t n = out.descriptor().element_count();
  for (std::uint64_t p = 0; p < n; ++p) d[p] = 0.0;
  for (const auto& in : ctx.inputs) {
    for (std::uint64_t p = 0; p < n; ++p) d[p] += in->element_as_double(p);
  }
}

void fail_on_one_kernel(KernelContext& ctx) {
  if (ctx.block == 1) fail(ErrorKind::kernel, "block one refuses");
  fill_kernel(ctx);
}

std::vector<json> read_lines(const fs::path& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      out.push_back(json::parse(line));
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a JSON line: " << line << " (" << e.what() << ")";
    }
  }
  return out;
}

std::size_t colons(const std::string& s) {
  std::size_t n = 0;
  for (char c : s) n += c == ':' ? 1 : 0;
  return n;
}

// Task-level events (id with exactly three colons) grouped by id.
std::map<std::string, std::vector<json>> task_events(const std::vector<json>& lines) {
  std::map<std::string, std::vector<json>> out;
  for (const auto& l : lines) {
    if (l.value("type", "") != "task") continue;
    const std::string id = l.value("id", "");
    if (colons(id) == 3) out[id].push_back(l);
  }
  return out;
}

class EventLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path() /
          ("kangaroo_evlog_" + std::string(info->name()) + "_" +
           std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(dir);
    path = dir / "events.jsonl";
    h.add("fill", fill_kernel);
    h.add("sum", sum_kernel);
    h.add("fail_on_one", fail_on_one_kernel);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  // Runs `plan` with a log at `path`; returns the parsed lines. Rethrows run
  // errors after the log is closed when `expect_failure` is false.
  std::vector<json> run_logged(Plan plan, const RunMeta& meta, const std::string& run_id, bool expect_failure,
                               int threads = 2) {
    std::unique_ptr<EventLog> log = EventLog::open(path.string(), 0);
    EXPECT_TRUE(log);
    ExecOptions opt = threads_opt(threads);
    opt.event_log = log.get();
    opt.run_id = run_id;
    before = wall_now();
    bool failed = false;
    try {
      h.run(std::move(plan), meta, opt);
    } catch (const std::exception& e) {
      failed = true;
      run_error = e.what();
    }
    after = wall_now();
    log.reset();  // closes and flushes
    EXPECT_EQ(failed, expect_failure) << run_error;
    return read_lines(path);
  }

  static void check_task_keys(const json& l) {
    for (const char* key : {"type", "id", "name", "kernel", "plane", "status", "stage", "template", "block", "step",
                            "level", "locality", "worker", "ts", "start", "end"}) {
      EXPECT_TRUE(l.contains(key)) << "missing key " << key << " in " << l.dump();
    }
    for (const char* key : {"id", "name", "kernel", "plane", "status", "worker"}) {
      EXPECT_TRUE(l[key].is_string()) << key << " in " << l.dump();
    }
    for (const char* key : {"stage", "template", "block", "step", "level", "locality"}) {
      EXPECT_TRUE(l[key].is_number_integer()) << key << " in " << l.dump();
    }
    for (const char* key : {"ts", "start", "end"}) EXPECT_TRUE(l[key].is_number()) << key << " in " << l.dump();
    const std::string status = l.value("status", "");
    EXPECT_TRUE(status == "start" || status == "end" || status == "error") << status;
    EXPECT_EQ(l.value("type", ""), "task");
  }

  // Keys plus timestamps inside the run's wall-clock window (EVT-3).
  void check_task_line(const json& l) {
    check_task_keys(l);
    const std::string status = l.value("status", "");
    const double start = l.value("start", 0.0);
    EXPECT_GE(start, before - 1.0) << l.dump();
    EXPECT_LE(start, after + 1.0) << l.dump();
    if (status != "start") {
      const double end = l.value("end", 0.0);
      EXPECT_GE(end, start) << l.dump();
      EXPECT_LE(end, after + 1.0) << l.dump();
    }
  }

  fs::path dir;
  fs::path path;
  Harness h;
  double before = 0.0, after = 0.0;
  std::string run_error;
};

// EVT-3, EVT-4
TEST_F(EventLogTest, EveryTaskLogsOneStartAndOneEnd) {
  const RunMeta meta = line_meta(6);
  GraphReduceSpec g;
  g.fan_in = 3;
  g.num_inputs = 3;
  g.output_blocks = {5};
  Plan plan = plan_of(
      {stage("make", Plane::chunk,
             {chunk_template("first", "fill", domain(0, 0, std::vector<std::int32_t>{0, 1, 2}), {},
                             {output(10, fixed_spec({2}))}),
              chunk_template("second", "fill", domain(0, 0, std::vector<std::int32_t>{4}), {}, {output(11, fixed_spec({1}))})}),
       stage("fold", Plane::graph,
             {graph_template("fold", "sum", domain(0, 0), {input(10)}, {output(12, fixed_spec({2}))}, g)}, {0})});
  const auto lines = run_logged(std::move(plan), meta, "r7", false);
  const auto tasks = task_events(lines);
  std::vector<std::string> ids;
  for (const auto& [id, evs] : tasks) ids.push_back(id);
  EXPECT_EQ(ids, (std::vector<std::string>{"r7:0:0:0", "r7:0:0:1", "r7:0:0:2", "r7:0:1:4", "r7:1:0:5"}));
  for (const auto& [id, evs] : tasks) {
    int starts = 0, ends = 0, errors = 0;
    double start_ts = 0.0, end_ts = 0.0;
    for (const auto& e : evs) {
      check_task_line(e);
      const std::string status = e.value("status", "");
      if (status == "start") {
        ++starts;
        start_ts = e.value("start", 0.0);
      } else if (status == "end") {
        ++ends;
        end_ts = e.value("end", 0.0);
      } else {
        ++errors;
      }
    }
    EXPECT_EQ(starts, 1) << id;
    EXPECT_EQ(ends, 1) << id;
    EXPECT_EQ(errors, 0) << id;
    EXPECT_LE(start_ts, end_ts) << id;
  }
  const json& graph_start = tasks.at("r7:1:0:5").front();
  EXPECT_EQ(graph_start.value("plane", ""), "graph");
  EXPECT_EQ(graph_start.value("kernel", ""), "sum");
  EXPECT_EQ(graph_start.value("block", -1), 5);
  EXPECT_EQ(graph_start.value("stage", -1), 1);
  const json& chunk_start = tasks.at("r7:0:1:4").front();
  EXPECT_EQ(chunk_start.value("plane", ""), "chunk");
  EXPECT_EQ(chunk_start.value("kernel", ""), "fill");
  EXPECT_EQ(chunk_start.value("template", -1), 1);
  EXPECT_EQ(chunk_start.value("block", -1), 4);
  EXPECT_EQ(chunk_start.value("locality", -1), 0);
}

TEST_F(EventLogTest, FailingTaskLogsErrorAsItsTerminalEvent) {
  const RunMeta meta = line_meta(3);
  const auto lines = run_logged(
      plan_of({stage("s", Plane::chunk,
                     {chunk_template("t", "fail_on_one", domain(0, 0), {}, {output(10, fixed_spec({1}))})})}),
      meta, "bad", true, 1);
  EXPECT_NE(run_error.find("block one refuses"), std::string::npos) << run_error;
  const auto tasks = task_events(lines);
  ASSERT_TRUE(tasks.count("bad:0:0:1")) << "no events for the failing task";
  std::map<std::string, int> statuses;
  for (const auto& e : tasks.at("bad:0:0:1")) {
    check_task_line(e);
    ++statuses[e.value("status", "")];
  }
  EXPECT_EQ(statuses["start"], 1);
  EXPECT_EQ(statuses["error"], 1);
  EXPECT_EQ(statuses["end"], 0);
  // Every task that started has exactly one terminal event.
  for (const auto& [id, evs] : tasks) {
    int starts = 0, terminals = 0;
    for (const auto& e : evs) (e.value("status", "") == "start" ? starts : terminals) += 1;
    EXPECT_EQ(starts, 1) << id;
    EXPECT_EQ(terminals, 1) << id;
  }
}

// EVT-4 / EXEC-9: a task that fails before its kernel (a read that cannot be
// satisfied) is still a task of the run and still gets its terminal event.
TEST_F(EventLogTest, TaskFailingOnAMissingInputLogsError) {
  const RunMeta meta = line_meta(2);
  const auto lines = run_logged(
      plan_of({stage("s", Plane::chunk,
                     {chunk_template("t", "sum", domain(0, 0, std::vector<std::int32_t>{1}), {input(99)},
                                     {output(10, like_input_spec(0))})})}),
      meta, "miss", true, 1);
  const auto tasks = task_events(lines);
  ASSERT_TRUE(tasks.count("miss:0:0:1")) << "the failed task left no event";
  bool error_seen = false;
  for (const auto& e : tasks.at("miss:0:0:1")) error_seen = error_seen || e.value("status", "") == "error";
  EXPECT_TRUE(error_seen);
}

// EVT-9: logging never changes results.
TEST_F(EventLogTest, LoggingDoesNotChangeResults) {
  const RunMeta meta = line_meta(5);
  auto plan = [] {
    return plan_of({stage("s", Plane::chunk, {chunk_template("t", "fill", domain(0, 0), {}, {output(10, fixed_spec({3}))})})});
  };
  (void)run_logged(plan(), meta, "a", false);
  std::vector<std::vector<double>> logged;
  for (std::int32_t b = 0; b < 5; ++b) logged.push_back(h.values(cid(0, 0, 10, 0, b)));
  h.reset_session();
  h.run(plan(), meta, threads_opt(2));
  for (std::int32_t b = 0; b < 5; ++b) EXPECT_EQ(h.values(cid(0, 0, 10, 0, b)), logged[static_cast<std::size_t>(b)]);
}

TEST_F(EventLogTest, UnopenableLogIsDisabledWithoutFailing) {
  const fs::path bad = dir / "no_such_directory" / "deeper" / "events.jsonl";
  std::unique_ptr<EventLog> log;
  EXPECT_NO_THROW(log = EventLog::open(bad.string(), 0));
  EXPECT_FALSE(log);
  EXPECT_FALSE(fs::exists(bad));
  // A run configured from that (null) log succeeds.
  ExecOptions opt = threads_opt(1);
  opt.event_log = log.get();
  EXPECT_NO_THROW(h.run(plan_of({stage("s", Plane::chunk,
                                       {chunk_template("t", "fill", domain(0, 0), {}, {output(10, fixed_spec({1}))})})}),
                        line_meta(2), opt));
  EXPECT_EQ(h.values(cid(0, 0, 10, 0, 1)), (std::vector<double>{1.0}));
}

// EVT-1
TEST_F(EventLogTest, EmptyPathDisablesLogging) { EXPECT_EQ(EventLog::open("", 0), nullptr); }

TEST_F(EventLogTest, FilesAreAppendedToOneEventPerLine) {
  for (int round = 0; round < 2; ++round) {
    auto log = EventLog::open(path.string(), 0);
    ASSERT_TRUE(log);
    log->phase("decode", "runtime", "end", 10.0, 11.5);
  }
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  for (const auto& l : lines) EXPECT_EQ(l.value("type", ""), "phase");
}

// EVT-2
TEST(EventLogPath, RankFilesAreSiblingsNamedByLocality) {
  EXPECT_EQ(EventLog::path_for_rank("/logs/run/events.jsonl", 0), "/logs/run/events.jsonl");
  EXPECT_EQ(EventLog::path_for_rank("/logs/run/events.jsonl", 1), "/logs/run/events.locality1.jsonl");
  EXPECT_EQ(EventLog::path_for_rank("/logs/run/events.jsonl", 12), "/logs/run/events.locality12.jsonl");
  EXPECT_EQ(EventLog::path_for_rank("/logs/run/events", 3), "/logs/run/events.locality3");
  EXPECT_EQ(EventLog::path_for_rank("events.log", 2), "events.locality2.log");
  EXPECT_EQ(EventLog::path_for_rank("a.b/trace.json", 4), "a.b/trace.locality4.json");
}

TEST_F(EventLogTest, RankLogsGoToTheirSiblingFile) {
  {
    auto log = EventLog::open(path.string(), 2);
    ASSERT_TRUE(log);
    TaskEvent e;
    e.run = "r";
    e.status = "start";
    e.start = 5.0;
    log->task(e);
  }
  EXPECT_FALSE(fs::exists(path));
  const fs::path sibling = dir / "events.locality2.jsonl";
  ASSERT_TRUE(fs::exists(sibling));
  const auto lines = read_lines(sibling);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].value("locality", -1), 2);
}

// EVT-4, EVT-5 straight from the writer.
TEST_F(EventLogTest, TaskAndSubSpanLineFormats) {
  {
    auto log = EventLog::open(path.string(), 0);
    ASSERT_TRUE(log);
    TaskEvent e;
    e.run = "run9";
    e.stage = 1;
    e.template_index = 2;
    e.block = 3;
    e.name = "tmpl \"quoted\"\nname\\x";
    e.kernel = "k";
    e.plane = "chunk";
    e.status = "end";
    e.step = 4;
    e.level = 5;
    e.worker = 6;
    e.start = 1700000000.25;
    e.end = 1700000001.5;
    log->task(e);
    e.phase = "kernel";
    log->task(e);
  }
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  const json& task = lines[0];
  check_task_keys(task);
  EXPECT_EQ(task.value("id", ""), "run9:1:2:3");
  EXPECT_EQ(task.value("name", ""), "tmpl \"quoted\"\nname\\x");
  EXPECT_EQ(task.value("stage", -1), 1);
  EXPECT_EQ(task.value("template", -1), 2);
  EXPECT_EQ(task.value("block", -1), 3);
  EXPECT_EQ(task.value("step", -1), 4);
  EXPECT_EQ(task.value("level", -1), 5);
  EXPECT_TRUE(task["worker"].is_string());
  EXPECT_NEAR(task.value("start", 0.0), 1700000000.25, 1e-6);
  EXPECT_NEAR(task.value("end", 0.0), 1700000001.5, 1e-6);
  const json& span = lines[1];
  EXPECT_EQ(span.value("id", ""), "run9:1:2:3:kernel");
  EXPECT_EQ(span.value("name", ""), "tmpl \"quoted\"\nname\\x/kernel");
  EXPECT_EQ(colons(span.value("id", "")), 4u);
}

TEST_F(EventLogTest, PhaseAndDataflowLineFormats) {
  {
    auto log = EventLog::open(path.string(), 0);
    ASSERT_TRUE(log);
    log->phase("execute", "runtime", "end", 100.5, 101.75);
    DataflowEvent d;
    d.op = "get";
    d.mode = "local";
    d.status = "end";
    d.step = 1;
    d.level = 2;
    d.field = 1000;
    d.version = 3;
    d.block = 4;
    d.target_locality = 0;
    d.worker = 1;
    d.bytes = 4096;
    d.start = 200.0;
    d.end = 200.5;
    log->dataflow(d);
  }
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  const json& p = lines[0];
  for (const char* key : {"type", "name", "category", "status", "locality", "worker", "ts", "start", "end"}) {
    EXPECT_TRUE(p.contains(key)) << key;
  }
  EXPECT_EQ(p.value("type", ""), "phase");
  EXPECT_EQ(p.value("name", ""), "execute");
  EXPECT_NEAR(p.value("start", 0.0), 100.5, 1e-9);
  EXPECT_NEAR(p.value("end", 0.0), 101.75, 1e-9);
  const json& d = lines[1];
  for (const char* key : {"type", "op", "mode", "status", "step", "level", "field", "version", "block", "locality",
                          "target_locality", "worker", "bytes", "elapsed", "ts", "start", "end"}) {
    EXPECT_TRUE(d.contains(key)) << key;
  }
  EXPECT_EQ(d.value("type", ""), "dataflow");
  EXPECT_EQ(d.value("field", -1), 1000);
  EXPECT_EQ(d.value("bytes", 0), 4096);
  EXPECT_NEAR(d.value("elapsed", 0.0), 0.5, 1e-9);
}

TEST(EventLogClock, NowIsSecondsSinceTheUnixEpoch) {
  const double a = wall_now();
  const double n = EventLog::now();
  const double b = wall_now();
  EXPECT_GE(n, a - 1e-5);
  EXPECT_LE(n, b + 1e-5);
}

}  // namespace
}  // namespace kangaroo
