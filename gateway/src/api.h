// Routing and semantics of the REST API (docs/api.md), free of any HTTP or TLS
// library so it can be tested directly. The server turns Beast requests into
// `Request`s and writes `Reply`s back.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "auth.h"
#include "data_roots.h"
#include "jobs.h"
#include "kangaroo/core/metrics.h"

namespace kangaroo::gateway {

struct Request {
  std::string method;  // upper case
  std::string target;  // path and query, as received
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct Reply {
  enum class Kind { buffer, file, events };
  Kind kind = Kind::buffer;
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // file: bytes [offset, offset + length) of `path` (total = file size)
  std::filesystem::path path;
  std::uint64_t offset = 0, length = 0, total = 0;
  // events: the job whose events to stream, for `tenant`
  std::string job_id, tenant;
};

struct ApiOptions {
  std::string version = "0.1.0";
  int workers = 1;
  int world_size = 1;  // ranks per job: the SDK lowers reductions for it (LOW-6/7)
  std::uint64_t max_body = 64ull << 20;
};

class Api {
 public:
  Api(ApiOptions opt, TokenTable tokens, DataRoots roots, JobStore& jobs, MetricRegistry& metrics);
  // Never throws: every failure becomes an error reply.
  Reply handle(const Request& req);
  // Route label for metrics ("/v1/jobs/{id}" style); unknown paths -> "other".
  static std::string route_of(const std::string& target);
  JobStore& jobs() { return jobs_; }
  // Error body of docs/api.md.
  static Reply error_reply(int status, const std::string& kind, const std::string& message);

 private:
  Reply dispatch(const Request& req);
  std::string authenticate(const Request& req) const;
  Reply metrics_reply();
  Reply metadata(const std::string& query);
  Reply submit(const std::string& tenant, const Request& req);
  Reply results(const std::string& tenant, const std::string& id);
  Reply result_file(const std::string& tenant, const std::string& id, const std::string& name, const Request& req);

  ApiOptions opt_;
  TokenTable tokens_;
  DataRoots roots_;
  JobStore& jobs_;
  MetricRegistry& metrics_;
  MetricFamily& jobs_gauge_;
  MetricFamily& queue_gauge_;
  MetricFamily& submitted_;
  std::mutex meta_mu_;
  std::map<std::string, std::pair<std::filesystem::file_time_type, std::string>> meta_cache_;
};

}  // namespace kangaroo::gateway
