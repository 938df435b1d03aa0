// kangaroo-gateway: the HTTPS API server with the local job backend.
// Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM); 1 usage or start-up
// error (message on stderr says what to fix).
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "api.h"
#include "server.h"

namespace fs = std::filesystem;
using namespace kangaroo;
using namespace kangaroo::gateway;

namespace {

const char* kUsage =
    "usage: kangaroo-gateway --cert FILE --key FILE --tokens FILE --state-dir DIR --data-root DIR [--data-root DIR]...\n"
    "                        [--listen HOST:PORT] [--worker-bin PATH] [--workers N] [--queue N]\n"
    "                        [--threads N] [--max-body BYTES] [--read-timeout SECONDS] [--ranks N]\n"
    "                        [--mem-cap BYTES [--spill-dir DIR]] [--ready-file FILE]\n"
    "Serves the REST API of docs/api.md over HTTPS (TLS 1.2+) and runs jobs as kangaroo-worker\n"
    "processes on this host, --workers jobs at a time, each on --ranks ranks (default 1) with a\n"
    "per-rank memory cap of --mem-cap bytes (default none; capped jobs spill under --spill-dir,\n"
    "default <state-dir>/spill), with at most --queue jobs waiting. --listen defaults to 127.0.0.1:8443; port 0 picks a free port. Once listening, the\n"
    "URL is printed and written to --ready-file. Tokens file: one 'token tenant' per line.\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::uint64_t parse_u64(const std::string& flag, const std::string& v, std::uint64_t lo, std::uint64_t hi) {
  try {
    std::size_t used = 0;
    const auto n = std::stoull(v, &used);
    if (used == v.size() && n >= lo && n <= hi && v[0] != '-') return n;
  } catch (const std::exception&) {
  }
  throw UsageError(flag + " expects an integer in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got '" + v +
                   "'");
}

std::string default_worker_bin() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (const fs::path& c : {self.parent_path() / "kangaroo-worker", self.parent_path().parent_path() / "worker" /
                                                                            "kangaroo-worker"}) {
      if (::access(c.c_str(), X_OK) == 0) return c.string();
    }
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  ServerOptions server;
  JobStoreOptions store;
  ApiOptions api_opt;
  std::string tokens_file;
  std::vector<std::string> roots;
  std::uint64_t mem_cap = 0;
  try {
    for (std::size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= args.size()) throw UsageError(a + " needs a value");
        return args[++i];
      };
      if (a == "--help" || a == "-h") {
        std::cout << kUsage;
        return 0;
      } else if (a == "--listen") {
        const std::string v = value();
        const auto colon = v.rfind(':');
        if (colon == std::string::npos) throw UsageError("--listen expects HOST:PORT, got '" + v + "'");
        server.host = v.substr(0, colon);
        if (server.host.size() > 2 && server.host.front() == '[') server.host = server.host.substr(1, server.host.size() - 2);
        server.port = static_cast<unsigned short>(parse_u64("--listen port", v.substr(colon + 1), 0, 65535));
      } else if (a == "--cert") server.cert_file = value();
      else if (a == "--key") server.key_file = value();
      else if (a == "--tokens") tokens_file = value();
      else if (a == "--state-dir") store.state_dir = value();
      else if (a == "--data-root") roots.push_back(value());
      else if (a == "--worker-bin") store.worker_bin = value();
      else if (a == "--workers") store.slots = static_cast<int>(parse_u64(a, value(), 1, 1024));
      else if (a == "--queue") store.queue_cap = parse_u64(a, value(), 1, 1000000);
      else if (a == "--threads") server.threads = static_cast<int>(parse_u64(a, value(), 1, 256));
      else if (a == "--max-body") server.max_body = parse_u64(a, value(), 1024, 1ull << 34);
      else if (a == "--read-timeout") server.read_timeout = std::chrono::seconds(parse_u64(a, value(), 1, 3600));
      else if (a == "--mem-cap") mem_cap = parse_u64(a, value(), 0, ~0ull);
      else if (a == "--ranks") store.ranks = static_cast<int>(parse_u64(a, value(), 1, 1024));
      else if (a == "--spill-dir") store.spill_dir = value();
      else if (a == "--ready-file") server.ready_file = value();
      else throw UsageError("unexpected argument '" + a + "'");
    }
    if (server.cert_file.empty() || server.key_file.empty()) throw UsageError("--cert and --key are required");
    if (tokens_file.empty()) throw UsageError("--tokens is required");
    if (store.state_dir.empty()) throw UsageError("--state-dir is required");
    if (roots.empty()) throw UsageError("at least one --data-root is required");
  } catch (const UsageError& e) {
    std::cerr << "kangaroo-gateway: " << e.what() << "\n" << kUsage;
    return 1;
  }

  try {
    if (store.worker_bin.empty()) store.worker_bin = default_worker_bin();
    if (store.worker_bin.empty() || ::access(store.worker_bin.c_str(), X_OK) != 0) {
      throw std::runtime_error("worker binary '" + store.worker_bin +
                               "' is not executable; pass --worker-bin PATH to kangaroo-worker");
    }
    if (!store.spill_dir.empty() && mem_cap == 0) throw std::runtime_error("--spill-dir needs --mem-cap");
    store.mem_cap = mem_cap;
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    store.threads_per_job =
        static_cast<int>(std::max(1u, hw / static_cast<unsigned>(store.slots) / static_cast<unsigned>(store.ranks)));
    api_opt.workers = store.slots;
    api_opt.world_size = store.ranks;
    api_opt.max_body = server.max_body;
    MetricRegistry metrics;
    TokenTable tokens = TokenTable::load(tokens_file);
    DataRoots data_roots(roots);
    JobStore jobs(store);
    Api api(api_opt, std::move(tokens), std::move(data_roots), jobs, metrics);
    jobs.start();
    run_server(api, metrics, server);
    jobs.stop();
  } catch (const std::exception& e) {
    std::cerr << "kangaroo-gateway: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
