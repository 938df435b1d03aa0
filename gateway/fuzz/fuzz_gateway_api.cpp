// libFuzzer target for the gateway's request handling (Api::handle) and the
// tokens-file parser.
//
// Input: lines "METHOD", "TARGET", "AUTH" (0 none, 1 tenant a, 2 tenant b,
// else the line itself as the header value), "RANGE", "IDEMPOTENCY-KEY", then
// the body. Whatever arrives, handle() must return (never throw), with a
// status in 200..599, and every error reply must be the JSON error body of
// docs/api.md. The job store never starts runners, so accepted jobs only
// queue (bounded); the data root holds one unreadable "plotfile".
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "api.h"
#include "auth.h"
#include "data_roots.h"
#include "jobs.h"

namespace fs = std::filesystem;
using namespace kangaroo;
using namespace kangaroo::gateway;

namespace {

[[noreturn]] void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_gateway_api: %s\n%s\n", what, detail.c_str());
  std::abort();
}

struct World {
  fs::path root;
  MetricRegistry metrics;
  std::unique_ptr<JobStore> jobs;
  std::unique_ptr<Api> api;

  World() {
    char tmpl[] = "/tmp/kangaroo-fuzz-gw-XXXXXX";
    root = ::mkdtemp(tmpl);
    fs::create_directories(root / "data" / "plt");
    std::ofstream(root / "data" / "plt" / "Header") << "HyperCLaw-V1.1\n1\nx\n";
    JobStoreOptions o;
    o.state_dir = root / "state";
    o.worker_bin = "/bin/false";
    o.queue_cap = 4;
    jobs = std::make_unique<JobStore>(o);
    api = std::make_unique<Api>(ApiOptions{},
                                TokenTable::parse("tok-aaaaaaaaaaaaaaaa a\ntok-bbbbbbbbbbbbbbbb b\n", "fuzz"),
                                DataRoots({(root / "data").string()}), *jobs, metrics);
  }
};

std::string_view next_line(std::string_view& in) {
  const auto nl = in.find('\n');
  std::string_view line = in.substr(0, nl);
  in = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
  return line;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World world;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  try {
    (void)TokenTable::parse(in, "fuzz");
  } catch (const std::runtime_error&) {
  }
  Request req;
  req.method = std::string(next_line(in));
  req.target = std::string(next_line(in));
  const std::string_view auth = next_line(in);
  if (auth == "1") req.headers["authorization"] = "Bearer tok-aaaaaaaaaaaaaaaa";
  else if (auth == "2") req.headers["authorization"] = "Bearer tok-bbbbbbbbbbbbbbbb";
  else if (auth != "0") req.headers["authorization"] = std::string(auth);
  if (const auto range = next_line(in); !range.empty()) req.headers["range"] = std::string(range);
  if (const auto key = next_line(in); !key.empty()) req.headers["idempotency-key"] = std::string(key);
  req.body = std::string(in);

  const Reply r = world.api->handle(req);
  if (r.status < 200 || r.status > 599) finding("status out of range", std::to_string(r.status));
  if (r.status >= 400) {
    if (r.kind != Reply::Kind::buffer) finding("error reply is not a buffer", req.target);
    nlohmann::json body;
    try {
      body = nlohmann::json::parse(r.body);
    } catch (const std::exception& e) {
      finding("error body is not JSON", r.body);
    }
    if (!body.contains("error") || !body["error"].contains("kind") || !body["error"].contains("message")) {
      finding("error body lacks kind/message", r.body);
    }
  }
  return 0;
}
