// Gateway logic without HTTP: tokens, data-root confinement, the job store
// with a stand-in worker, and the API's routing and tenant isolation
// (docs/api.md). The real server over TLS is exercised by tests/test_gateway.py.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "api.h"
#include "api_error.h"
#include "auth.h"
#include "data_roots.h"
#include "jobs.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace kangaroo::gateway {
namespace {

const char* kToken1 = "tok-aaaaaaaaaaaaaaaa";
const char* kToken2 = "tok-bbbbbbbbbbbbbbbb";

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/kgw-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// Stand-in for kangaroo-worker: reports progress and writes one result chunk,
// or fails / sleeps when the dataset path says so.
const char* kFakeWorker = R"(#!/usr/bin/python3
import json, os, sys, time
assert sys.argv[1:] == ["serve"], sys.argv
for line in sys.stdin:
    args = json.loads(line)
    out = args[args.index("--out") + 1]
    ds = args[args.index("--dataset") + 1]
    rc = 0
    if "fail" in ds:
        print("run failed: kernel exploded at stage 3", file=sys.stderr, flush=True)
        rc = 3
    elif "crash" in ds:
        os._exit(9)
    else:
        if "slow" in ds:
            sys.stderr.write("progress: 0/4 tasks\r"); sys.stderr.flush(); time.sleep(30)
        sys.stderr.write("progress: 1/2 tasks\rprogress: 2/2 tasks\n"); sys.stderr.flush()
        os.makedirs(out)
        open(os.path.join(out, "s0_l0_f2_v0_b0.npy"), "w").write("0123456789")
        json.dump({"chunks": [{"file": "s0_l0_f2_v0_b0.npy", "step": 0, "level": 0, "field": 2, "version": 0,
                               "block": 0, "dtype": "f64", "shape": [1], "bytes": 8}],
                   "tasks_total": 2, "seconds": 0.01}, open(os.path.join(out, "manifest.json"), "w"))
    print("\x1ekangaroo-serve-done %d" % rc, flush=True)
)";

json valid_plan() {
  return json::parse(R"({"schema": "kangaroo.plan/1", "stages": [{"name": "s", "plane": "chunk", "after": [],
    "templates": [{"name": "t", "plane": "chunk", "kernel": "field_expr",
      "domain": {"step": 0, "level": 0, "blocks": [0]},
      "inputs": [{"field": 1, "version": 0, "domain": null}],
      "outputs": [{"field": 2, "version": 0, "buffer": {"dtype": "f64", "shape": {"kind": "block", "components": 1},
                   "init": "uninitialized"}}],
      "deps": {"kind": "None", "width": 0, "faces": [true, true, true, true, true, true], "halo_inputs": []},
      "params": {"type": "FieldExprParams", "expression": "a", "variables": ["a"]},
      "covered_boxes_ref": -1, "graph_reduce": null}]}], "shared_covered_boxes": []})");
}

struct Fixture {
  TempDir tmp;
  fs::path data = tmp.path() / "data";
  fs::path state = tmp.path() / "state";
  fs::path worker = tmp.path() / "fake-worker";
  std::unique_ptr<JobStore> jobs;
  std::unique_ptr<Api> api;

  Fixture() {
    write(data / "plt00000" / "Header", "HyperCLaw-V1.1\n");
    write(data / "slow_plt" / "Header", "x\n");
    write(data / "fail_plt" / "Header", "x\n");
    write(data / "crash_plt" / "Header", "x\n");
    write(worker, kFakeWorker);
    ::chmod(worker.c_str(), 0755);
    open();
  }
  void open() {
    api.reset();
    jobs.reset();
    metrics_ptr = std::make_unique<MetricRegistry>();
    JobStoreOptions o;
    o.state_dir = state;
    o.worker_bin = worker.string();
    jobs = std::make_unique<JobStore>(o);
    jobs->start();
    api = std::make_unique<Api>(ApiOptions{}, TokenTable::parse(std::string(kToken1) + " alice\n" + kToken2 + " bob\n", "t"),
                                DataRoots({data.string()}), *jobs, *metrics_ptr);
  }
  Reply call(const std::string& method, const std::string& target, const std::string& token = kToken1,
             const std::string& body = "", std::map<std::string, std::string> headers = {}) {
    Request r;
    r.method = method;
    r.target = target;
    r.body = body;
    r.headers = std::move(headers);
    if (!token.empty()) r.headers["authorization"] = "Bearer " + token;
    return api->handle(r);
  }
  json submit(const std::string& dataset, const std::string& key = "", int expect = 201) {
    json body = {{"plan", valid_plan()}, {"dataset", dataset}, {"fields", {{"1", "density"}}}};
    std::map<std::string, std::string> h;
    if (!key.empty()) h["idempotency-key"] = key;
    Reply r = call("POST", "/v1/jobs", kToken1, body.dump(), h);
    EXPECT_EQ(r.status, expect) << r.body;
    return json::parse(r.body);
  }
  json wait_terminal(const std::string& id) {
    for (int i = 0; i < 400; ++i) {
      json j = json::parse(call("GET", "/v1/jobs/" + id).body);
      const std::string s = j.value("state", "");
      if (s == "succeeded" || s == "failed" || s == "cancelled") return j;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    ADD_FAILURE() << "job " << id << " did not finish";
    return {};
  }
  std::unique_ptr<MetricRegistry> metrics_ptr;
};

TEST(TokenTable, ParsesAndRejects) {
  auto t = TokenTable::parse("# comment\nabcdefghijklmnop alice\n\nqrstuvwxyz012345 bob # trailing\n", "f");
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.tenant_for("Bearer abcdefghijklmnop").value_or(""), "alice");
  EXPECT_EQ(t.tenant_for("bearer qrstuvwxyz012345").value_or(""), "bob");
  EXPECT_FALSE(t.tenant_for("Basic abcdefghijklmnop"));
  EXPECT_FALSE(t.tenant_for("Bearer nope"));
  EXPECT_FALSE(t.tenant_for(""));
  EXPECT_THROW(TokenTable::parse("short alice\n", "f"), std::runtime_error);
  EXPECT_THROW(TokenTable::parse("abcdefghijklmnop\n", "f"), std::runtime_error);
  EXPECT_THROW(TokenTable::parse("abcdefghijklmnop a\nabcdefghijklmnop b\n", "f"), std::runtime_error);
  EXPECT_THROW(TokenTable::parse("# nothing\n", "f"), std::runtime_error);
}

TEST(DataRoots, ConfinesPaths) {
  TempDir tmp;
  write(tmp.path() / "root" / "plt" / "Header", "x");
  write(tmp.path() / "outside" / "secret" / "Header", "x");
  fs::create_directory_symlink(tmp.path() / "outside" / "secret", tmp.path() / "root" / "escape");
  DataRoots roots({(tmp.path() / "root").string()});
  const fs::path want = fs::canonical(tmp.path() / "root" / "plt");
  EXPECT_EQ(roots.resolve("plt"), want);
  EXPECT_EQ(roots.resolve("amrex://" + want.string()), want);
  EXPECT_EQ(roots.resolve(want.string()), want);
  auto status_of = [&](const std::string& uri) {
    try {
      roots.resolve(uri);
    } catch (const ApiError& e) {
      return e.status();
    }
    return 200;
  };
  EXPECT_EQ(status_of("../outside/secret"), 400);
  EXPECT_EQ(status_of("plt/../../outside/secret"), 400);
  EXPECT_EQ(status_of((tmp.path() / "outside" / "secret").string()), 400);
  EXPECT_EQ(status_of("escape"), 400);
  EXPECT_EQ(status_of("/etc"), 400);
  EXPECT_EQ(status_of("/nonexistent/elsewhere"), 400);
  EXPECT_EQ(status_of("missing"), 404);
  EXPECT_EQ(status_of((tmp.path() / "root" / "missing").string()), 404);
  EXPECT_EQ(status_of("memory://x"), 400);
  EXPECT_EQ(status_of(""), 400);
}

TEST(Metrics, RendersExposition) {
  MetricRegistry m;
  m.counter("x_total", "X things", {"route"}).with({"/a\"b"}).add(2);
  m.histogram("d_seconds", "D", {0.1, 1.0}).series().observe(0.5);
  const std::string text = m.render();
  EXPECT_NE(text.find("# TYPE x_total counter\nx_total{route=\"/a\\\"b\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"0.10000000000000001\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"+Inf\"} 1\nd_seconds_sum 0.5\nd_seconds_count 1\n"), std::string::npos)
      << text;
  EXPECT_THROW(m.counter("x_total", "again"), std::invalid_argument);
  EXPECT_THROW(m.counter("bad name", "b"), std::invalid_argument);
}

TEST(Api, AuthAndTenantIsolation) {
  Fixture f;
  EXPECT_EQ(f.call("GET", "/healthz", "").status, 200);
  EXPECT_EQ(f.call("GET", "/v1/jobs", "").status, 401);
  EXPECT_EQ(f.call("GET", "/v1/jobs", "wrong-token-xxxxxxxx").status, 401);
  const json job = f.submit("plt00000");
  const std::string id = job.at("id");
  const Reply mine = f.call("GET", "/v1/jobs/" + id);
  EXPECT_EQ(mine.status, 200);
  for (const char* suffix : {"", "/cancel", "/events", "/results", "/results/s0_l0_f2_v0_b0.npy"}) {
    const std::string method = std::string(suffix) == "/cancel" ? "POST" : "GET";
    const Reply other = f.call(method, "/v1/jobs/" + id + suffix, kToken2);
    EXPECT_EQ(other.status, 404) << suffix;
    const Reply none = f.call(method, "/v1/jobs/j-0000000000000000" + std::string(suffix), kToken2);
    EXPECT_EQ(json::parse(other.body)["error"]["kind"], json::parse(none.body)["error"]["kind"]);
    EXPECT_EQ(other.body.find("alice"), std::string::npos);
    EXPECT_EQ(other.body.find("plt00000"), std::string::npos);
  }
  EXPECT_TRUE(json::parse(f.call("GET", "/v1/jobs", kToken2).body)["jobs"].empty());
  EXPECT_EQ(json::parse(f.call("GET", "/v1/jobs").body)["jobs"].size(), 1u);
  f.wait_terminal(id);
}

TEST(Api, RunsJobAndServesRanges) {
  Fixture f;
  const json job = f.submit("plt00000");
  const json done = f.wait_terminal(job.at("id"));
  ASSERT_EQ(done.at("state"), "succeeded") << done.dump();
  EXPECT_EQ(done.at("progress").at("done"), 2);
  EXPECT_EQ(done.at("results"), 1);
  const std::string base = "/v1/jobs/" + done.at("id").get<std::string>() + "/results";
  const json manifest = json::parse(f.call("GET", base).body);
  ASSERT_EQ(manifest.at("chunks").size(), 1u);
  EXPECT_EQ(manifest.at("chunks")[0].at("name"), "s0_l0_f2_v0_b0.npy");
  EXPECT_EQ(manifest.at("chunks")[0].at("file_bytes"), 10);
  Reply whole = f.call("GET", base + "/s0_l0_f2_v0_b0.npy");
  EXPECT_EQ(whole.kind, Reply::Kind::file);
  EXPECT_EQ(whole.length, 10u);
  Reply part = f.call("GET", base + "/s0_l0_f2_v0_b0.npy", kToken1, "", {{"range", "bytes=4-"}});
  EXPECT_EQ(part.status, 206);
  EXPECT_EQ(part.offset, 4u);
  EXPECT_EQ(part.length, 6u);
  Reply mid = f.call("GET", base + "/s0_l0_f2_v0_b0.npy", kToken1, "", {{"range", "bytes=2-3"}});
  EXPECT_EQ(mid.length, 2u);
  EXPECT_EQ(f.call("GET", base + "/s0_l0_f2_v0_b0.npy", kToken1, "", {{"range", "bytes=10-"}}).status, 416);
  EXPECT_EQ(f.call("GET", base + "/manifest.json").status, 404);
  EXPECT_EQ(f.call("GET", base + "/..").status, 404);
}

TEST(Api, SeedJobsPassEarlierResultsToTheWorker) {
  Fixture f;
  const std::string first = f.wait_terminal(f.submit("plt00000").at("id")).at("id");
  json body = {{"plan", valid_plan()}, {"dataset", "plt00000"}, {"seed_jobs", {first}}};
  const Reply ok = f.call("POST", "/v1/jobs", kToken1, body.dump());
  EXPECT_EQ(ok.status, 201) << ok.body;
  const json done = f.wait_terminal(json::parse(ok.body).at("id"));
  EXPECT_EQ(done.at("state"), "succeeded") << done.dump();
  // The stand-in worker echoes its --seed folders into the job's messages
  // only on failure; check the request instead.
  const fs::path req = f.state / "jobs" / done.at("id").get<std::string>() / "request.json";
  EXPECT_EQ(json::parse(std::ifstream(req)).at("seed_jobs"), json::array({first}));
  body["seed_jobs"] = {"j-0000000000000000"};
  EXPECT_EQ(f.call("POST", "/v1/jobs", kToken1, body.dump()).status, 404);
  EXPECT_EQ(f.call("POST", "/v1/jobs", kToken2, json({{"plan", valid_plan()}, {"dataset", "plt00000"},
                                                      {"seed_jobs", {first}}}).dump()).status, 404);
  body["seed_jobs"] = "x";
  EXPECT_EQ(f.call("POST", "/v1/jobs", kToken1, body.dump()).status, 400);
}

TEST(Api, FailedJobCarriesWorkerMessage) {
  Fixture f;
  const json done = f.wait_terminal(f.submit("fail_plt").at("id"));
  EXPECT_EQ(done.at("state"), "failed");
  EXPECT_EQ(done.at("error").at("kind"), "run");
  EXPECT_NE(done.at("error").at("message").get<std::string>().find("kernel exploded at stage 3"), std::string::npos);
  EXPECT_EQ(f.call("GET", "/v1/jobs/" + done.at("id").get<std::string>() + "/results").status, 409);
}

TEST(Api, WorkerCrashFailsJobAndNextJobRuns) {
  Fixture f;
  const json crashed = f.wait_terminal(f.submit("crash_plt").at("id"));
  EXPECT_EQ(crashed.at("state"), "failed");
  EXPECT_EQ(crashed.at("error").at("kind"), "internal");  // exit status 9: not a worker error code
  const json next = f.wait_terminal(f.submit("plt00000").at("id"));
  EXPECT_EQ(next.at("state"), "succeeded") << next.dump();
}

TEST(Api, RejectsBadSubmissions) {
  Fixture f;
  auto post = [&](const std::string& body) { return f.call("POST", "/v1/jobs", kToken1, body); };
  EXPECT_EQ(post("{not json").status, 400);
  EXPECT_EQ(post("[]").status, 400);
  EXPECT_EQ(post(json({{"dataset", "plt00000"}}).dump()).status, 400);
  EXPECT_EQ(post(json({{"plan", valid_plan()}, {"dataset", "../etc"}}).dump()).status, 400);
  EXPECT_EQ(post(json({{"plan", valid_plan()}, {"dataset", "nope"}}).dump()).status, 404);
  EXPECT_EQ(post(json({{"plan", valid_plan()}, {"dataset", "plt00000"}, {"surprise", 1}}).dump()).status, 400);
  EXPECT_EQ(post(json({{"plan", valid_plan()}, {"dataset", "plt00000"}, {"fields", {{"x", "a"}}}}).dump()).status, 400);
  json bad = valid_plan();
  bad["stages"][0]["templates"][0]["kernel"] = "no_such_kernel";
  const Reply r = post(json({{"plan", bad}, {"dataset", "plt00000"}}).dump());
  EXPECT_EQ(r.status, 400);
  const json err = json::parse(r.body).at("error");
  EXPECT_EQ(err.at("kind"), "validation");
  ASSERT_FALSE(err.at("issues").empty());
  EXPECT_EQ(err.at("issues")[0].at("stage"), 0);
  EXPECT_NE(err.at("message").get<std::string>().find("stage 0"), std::string::npos) << err.dump();
  EXPECT_EQ(f.call("DELETE", "/v1/jobs").status, 405);
  EXPECT_EQ(f.call("GET", "/v2/jobs").status, 404);
  // Bytes that are not UTF-8 end up in the message: replaced, never a throw.
  const Reply odd = f.call("GET", "/v1/jobs/\xf5\xf5x");
  EXPECT_EQ(odd.status, 404);
  EXPECT_TRUE(json::accept(odd.body)) << odd.body;
  EXPECT_EQ(f.call("GET", "/v1/datasets/metadata").status, 400);
  EXPECT_EQ(f.call("GET", "/v1/datasets/metadata?uri=%2E%2E%2Fx").status, 400);
  EXPECT_EQ(f.call("GET", "/v1/datasets/metadata?uri=%zz").status, 400);
}

TEST(Api, IdempotencyKeyReturnsSameJob) {
  Fixture f;
  const json a = f.submit("plt00000", "key-1");
  const json b = f.submit("plt00000", "key-1", 200);
  EXPECT_EQ(a.at("id"), b.at("id"));
  EXPECT_NE(f.submit("plt00000", "key-2").at("id"), a.at("id"));
  json other = {{"plan", valid_plan()}, {"dataset", "slow_plt"}};
  EXPECT_EQ(f.call("POST", "/v1/jobs", kToken1, other.dump(), {{"idempotency-key", "key-1"}}).status, 409);
  EXPECT_EQ(f.call("POST", "/v1/jobs", kToken1, other.dump(), {{"idempotency-key", "bad key!"}}).status, 400);
  f.wait_terminal(a.at("id"));
}

TEST(JobStore, CancelAndRestartKeepRecords) {
  Fixture f;
  const json slow = f.submit("slow_plt", "k-slow");
  const std::string id = slow.at("id");
  for (int i = 0; i < 200 && f.jobs->get("alice", id)->state != JobState::running; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // A gateway stopped mid-job keeps it as accepted work and re-runs it.
  f.jobs->stop();
  f.open();
  auto rec = f.jobs->get("alice", id);
  ASSERT_TRUE(rec);
  EXPECT_TRUE(rec->state == JobState::queued || rec->state == JobState::running);
  EXPECT_EQ(json::parse(f.call("POST", "/v1/jobs", kToken1,
                               json({{"plan", valid_plan()}, {"dataset", "slow_plt"}, {"fields", {{"1", "density"}}}}).dump(),
                               {{"idempotency-key", "k-slow"}}).body).at("id"), id);
  for (int i = 0; i < 200 && f.jobs->get("alice", id)->state != JobState::running; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const Reply c = f.call("POST", "/v1/jobs/" + id + "/cancel");
  EXPECT_EQ(c.status, 200);
  const json done = f.wait_terminal(id);
  EXPECT_EQ(done.at("state"), "cancelled");
  EXPECT_EQ(json::parse(f.call("POST", "/v1/jobs/" + id + "/cancel").body).at("state"), "cancelled");
}

TEST(Api, MetricsExposeJobsAndQueue) {
  Fixture f;
  f.wait_terminal(f.submit("plt00000").at("id"));
  const Reply m = f.call("GET", "/metrics", "");
  EXPECT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("kangaroo_gateway_jobs{state=\"succeeded\"} 1"), std::string::npos) << m.body;
  EXPECT_NE(m.body.find("kangaroo_gateway_jobs_submitted_total 1"), std::string::npos) << m.body;
}

}  // namespace
}  // namespace kangaroo::gateway
