#include "api.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "api_error.h"
#include "kangaroo/core/plan_json.h"
#include "kangaroo/core/prepare.h"
#include "kangaroo/core/kernel.h"
#include "kangaroo/core/runmeta.h"
#include "kangaroo/data/uri.h"
#include "kangaroo/kernels/register.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace kangaroo::gateway {
namespace {

const KernelRegistry& registry() {
  static const KernelRegistry* r = [] {
    auto* reg = new KernelRegistry();
    register_default_kernels(*reg);
    return reg;
  }();
  return *r;
}

Reply json_reply(int status, const json& body) {
  Reply r;
  r.status = status;
  r.body = dump_json(body);
  return r;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else if (s[i] == '%') {
      throw ApiError(400, "bad_request", "malformed percent-encoding in the query string");
    } else {
      out += s[i];
    }
  }
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    const auto amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (part.empty()) continue;
    const auto eq = part.find('=');
    out[percent_decode(part.substr(0, eq))] = eq == std::string_view::npos ? "" : percent_decode(part.substr(eq + 1));
  }
  return out;
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  while (!path.empty()) {
    const auto slash = path.find('/');
    if (slash != 0) parts.emplace_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

bool valid_key(const std::string& k) {
  if (k.empty() || k.size() > 128) return false;
  return std::all_of(k.begin(), k.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == ':' || c == '-';
  });
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw ApiError(500, "internal", "cannot read '" + p.filename().string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

[[noreturn]] void job_not_found(const std::string& id) {
  throw ApiError(404, "not_found", "job '" + id + "' not found");
}

json issues_json(const PlanError& e) {
  json issues = json::array();
  for (const auto& i : e.issues()) {
    issues.push_back({{"stage", i.stage}, {"template", i.template_index}, {"path", i.path}, {"message", i.message}});
  }
  return issues;
}

std::string issues_message(const PlanError& e, const char* what) {
  std::string msg = std::string(what) + " is invalid: " + (e.issues().empty() ? e.what() : e.issues()[0].to_string());
  if (e.issues().size() > 1) msg += " (and " + std::to_string(e.issues().size() - 1) + " more issue(s))";
  return msg;
}

}  // namespace

Api::Api(ApiOptions opt, TokenTable tokens, DataRoots roots, JobStore& jobs, MetricRegistry& metrics)
    : opt_(std::move(opt)),
      tokens_(std::move(tokens)),
      roots_(std::move(roots)),
      jobs_(jobs),
      metrics_(metrics),
      jobs_gauge_(metrics.gauge("kangaroo_gateway_jobs", "Jobs known to the gateway by state", {"state"})),
      queue_gauge_(metrics.gauge("kangaroo_gateway_job_queue_length", "Jobs waiting for a worker slot")),
      submitted_(metrics.counter("kangaroo_gateway_jobs_submitted_total", "Jobs accepted (new submissions only)")) {}

Reply Api::error_reply(int status, const std::string& kind, const std::string& message) {
  return json_reply(status, {{"error", {{"kind", kind}, {"message", message}}}});
}

std::string Api::route_of(const std::string& target) {
  const auto parts = split_path(std::string_view(target).substr(0, target.find('?')));
  const std::size_t n = parts.size();
  if (n == 1 && (parts[0] == "healthz" || parts[0] == "metrics")) return "/" + parts[0];
  if (n < 2 || parts[0] != "v1") return "other";
  if (n == 2 && (parts[1] == "info" || parts[1] == "jobs")) return "/v1/" + parts[1];
  if (n == 3 && parts[1] == "datasets" && parts[2] == "metadata") return "/v1/datasets/metadata";
  if (parts[1] != "jobs") return "other";
  if (n == 3) return "/v1/jobs/{id}";
  if (n == 4 && (parts[3] == "cancel" || parts[3] == "events" || parts[3] == "results")) {
    return "/v1/jobs/{id}/" + parts[3];
  }
  if (n == 5 && parts[3] == "results") return "/v1/jobs/{id}/results/{name}";
  return "other";
}

Reply Api::handle(const Request& req) {
  try {
    return dispatch(req);
  } catch (const ApiError& e) {
    json err = {{"kind", e.kind()}, {"message", e.what()}};
    if (!e.issues().is_null()) err["issues"] = e.issues();
    return json_reply(e.status(), {{"error", err}});
  } catch (const std::exception& e) {
    return error_reply(500, "internal", std::string("internal error: ") + e.what());
  }
}

std::string Api::authenticate(const Request& req) const {
  const std::string auth = req.header("authorization");
  if (auth.empty()) throw ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)");
  auto tenant = tokens_.tenant_for(auth);
  if (!tenant) throw ApiError(401, "unauthorized", "unknown or malformed bearer token");
  return *tenant;
}

Reply Api::dispatch(const Request& req) {
  const std::string& target = req.target;
  const auto q = target.find('?');
  const std::string path = target.substr(0, q);
  const std::string query = q == std::string::npos ? "" : target.substr(q + 1);
  const auto parts = split_path(path);
  const std::string& m = req.method;
  auto only = [&](const char* method) {
    if (m != method) throw ApiError(405, "bad_request", "method " + m + " is not allowed on " + path);
  };

  if (parts.size() == 1 && parts[0] == "healthz") {
    only("GET");
    return json_reply(200, {{"status", "ok"}});
  }
  if (parts.size() == 1 && parts[0] == "metrics") {
    only("GET");
    return metrics_reply();
  }
  if (parts.empty() || parts[0] != "v1") throw ApiError(404, "not_found", "no such endpoint: " + path);
  const std::string tenant = authenticate(req);
  const std::size_t n = parts.size();
  if (n == 2 && parts[1] == "info") {
    only("GET");
    return json_reply(200, {{"version", opt_.version},
                            {"workers", opt_.workers},
                            {"world_size", opt_.world_size},
                            {"data_roots", roots_.names()},
                            {"max_body", opt_.max_body}});
  }
  if (n == 3 && parts[1] == "datasets" && parts[2] == "metadata") {
    only("GET");
    return metadata(query);
  }
  if (n >= 2 && parts[1] == "jobs") {
    if (n == 2) {
      if (m == "POST") return submit(tenant, req);
      only("GET");
      json list = json::array();
      for (const auto& r : jobs_.list(tenant)) list.push_back(r.to_json());
      return json_reply(200, {{"jobs", list}});
    }
    const std::string& id = parts[2];
    if (n == 3) {
      only("GET");
      auto rec = jobs_.get(tenant, id);
      if (!rec) job_not_found(id);
      return json_reply(200, rec->to_json());
    }
    if (n == 4 && parts[3] == "cancel") {
      only("POST");
      auto rec = jobs_.cancel(tenant, id);
      if (!rec) job_not_found(id);
      return json_reply(200, rec->to_json());
    }
    if (n == 4 && parts[3] == "events") {
      only("GET");
      if (!jobs_.get(tenant, id)) job_not_found(id);
      Reply r;
      r.kind = Reply::Kind::events;
      r.content_type = "text/event-stream";
      r.job_id = id;
      r.tenant = tenant;
      return r;
    }
    if (n == 4 && parts[3] == "results") {
      only("GET");
      return results(tenant, id);
    }
    if (n == 5 && parts[3] == "results") {
      only("GET");
      return result_file(tenant, id, parts[4], req);
    }
  }
  throw ApiError(404, "not_found", "no such endpoint: " + path);
}

Reply Api::metrics_reply() {
  const auto counts = jobs_.counts();
  for (auto st : {JobState::queued, JobState::running, JobState::succeeded, JobState::failed, JobState::cancelled}) {
    auto it = counts.find(st);
    jobs_gauge_.with({state_name(st)}).set(it == counts.end() ? 0.0 : static_cast<double>(it->second));
  }
  queue_gauge_.series().set(static_cast<double>(jobs_.queue_length()));
  Reply r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = metrics_.render();
  return r;
}

Reply Api::metadata(const std::string& query) {
  const auto params = parse_query(query);
  auto it = params.find("uri");
  if (it == params.end() || it->second.empty()) {
    throw ApiError(400, "bad_request", "GET /v1/datasets/metadata needs ?uri=<dataset path under a data root>");
  }
  const fs::path path = roots_.resolve(it->second);
  std::error_code ec;
  const auto stamp = fs::last_write_time(path / "Header", ec);
  {
    std::lock_guard lock(meta_mu_);
    auto c = meta_cache_.find(path.string());
    if (c != meta_cache_.end() && !ec && c->second.first == stamp) {
      Reply r;
      r.body = c->second.second;
      return r;
    }
  }
  std::string text;
  try {
    auto ds = open_dataset_uri("amrex://" + path.string());
    text = ds->metadata_json(0);
  } catch (const std::exception& e) {
    throw ApiError(422, "dataset", "Failed to load dataset metadata for '" + it->second + "': " + e.what());
  }
  if (!ec) {
    std::lock_guard lock(meta_mu_);
    if (meta_cache_.size() > 256) meta_cache_.clear();
    meta_cache_[path.string()] = {stamp, text};
  }
  Reply r;
  r.body = std::move(text);
  return r;
}

Reply Api::submit(const std::string& tenant, const Request& req) {
  std::string key = req.header("idempotency-key");
  if (!key.empty() && !valid_key(key)) {
    throw ApiError(400, "bad_request", "Idempotency-Key must be 1-128 characters of [A-Za-z0-9._:-]");
  }
  json body;
  try {
    body = json::parse(req.body);
  } catch (const json::exception& e) {
    throw ApiError(400, "bad_request", std::string("request body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw ApiError(400, "bad_request", "request body must be a JSON object");
  for (const auto& [k, v] : body.items()) {
    static const char* kKnown[] = {"plan",        "dataset",   "runmeta",  "fields",
                                   "outputs",     "all_outputs", "resources", "seed_jobs"};
    if (std::find(std::begin(kKnown), std::end(kKnown), k) == std::end(kKnown)) {
      throw ApiError(400, "bad_request", "unknown member '" + k + "' in the job request");
    }
  }
  if (!body.contains("plan") || !body["plan"].is_object()) {
    throw ApiError(400, "bad_request", "'plan' (a plan document object) is required");
  }
  if (!body.contains("dataset") || !body["dataset"].is_string()) {
    throw ApiError(400, "bad_request", "'dataset' (a dataset path or URI string) is required");
  }
  JobSpec spec;
  spec.dataset_uri = body["dataset"].get<std::string>();
  spec.dataset_path = "amrex://" + roots_.resolve(spec.dataset_uri).string();
  spec.plan_text = dump_json(body["plan"]);
  try {
    (void)prepare_plan(decode_plan(spec.plan_text), registry());
  } catch (const PlanError& e) {
    throw ApiError(400, "validation", issues_message(e, "plan"), issues_json(e));
  } catch (const std::exception& e) {
    throw ApiError(400, "validation", std::string("plan is invalid: ") + e.what(), json::array());
  }
  if (body.contains("runmeta") && !body["runmeta"].is_null()) {
    if (!body["runmeta"].is_object()) throw ApiError(400, "bad_request", "'runmeta' must be an object");
    spec.runmeta_text = dump_json(body["runmeta"]);
    try {
      validate_runmeta(decode_runmeta(spec.runmeta_text));
    } catch (const PlanError& e) {
      throw ApiError(400, "validation", issues_message(e, "runmeta"), issues_json(e));
    } catch (const std::exception& e) {
      throw ApiError(400, "validation", std::string("runmeta is invalid: ") + e.what(), json::array());
    }
  }
  if (body.contains("fields")) {
    if (!body["fields"].is_object()) throw ApiError(400, "bad_request", "'fields' must map field IDs to variable names");
    for (const auto& [k, v] : body["fields"].items()) {
      std::size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(k, &used);
      } catch (const std::exception&) {
      }
      if (used != k.size() || id < 0 || id > 2147483647) {
        throw ApiError(400, "bad_request", "'fields' key '" + k + "' is not a field ID (a non-negative int32)");
      }
      if (!v.is_string() || v.get<std::string>().empty() || v.get<std::string>().find('=') != std::string::npos) {
        throw ApiError(400, "bad_request", "'fields' value for " + k + " must be a variable name or #COMPONENT");
      }
      spec.fields[static_cast<std::int32_t>(id)] = v.get<std::string>();
    }
  }
  if (body.contains("outputs")) {
    const json& o = body["outputs"];
    auto bad = [] { throw ApiError(400, "bad_request", "'outputs' must be a list of [field, version] pairs"); };
    if (!o.is_array()) bad();
    for (const auto& p : o) {
      if (!p.is_array() || p.size() != 2 || !p[0].is_number_integer() || !p[1].is_number_integer()) bad();
      const auto f = p[0].get<long long>(), v = p[1].get<long long>();
      if (f < 0 || f > 2147483647 || v < -1 || v > 2147483647) bad();
      spec.outputs.emplace_back(static_cast<std::int32_t>(f), static_cast<std::int32_t>(v));
    }
  }
  if (body.contains("all_outputs")) {
    if (!body["all_outputs"].is_boolean()) throw ApiError(400, "bad_request", "'all_outputs' must be a boolean");
    spec.all_outputs = body["all_outputs"].get<bool>();
  }
  if (body.contains("seed_jobs")) {
    // Fields persisted by earlier jobs of this tenant: their results are laid
    // over the dataset for this run (LOW-23 across jobs).
    const json& seeds = body["seed_jobs"];
    if (!seeds.is_array()) throw ApiError(400, "bad_request", "'seed_jobs' must be a list of job IDs");
    for (const auto& s : seeds) {
      if (!s.is_string()) throw ApiError(400, "bad_request", "'seed_jobs' must be a list of job IDs");
      const std::string sid = s.get<std::string>();
      auto rec = jobs_.get(tenant, sid);
      if (!rec) throw ApiError(404, "not_found", "seed job '" + sid + "' not found");
      if (rec->state != JobState::succeeded) {
        throw ApiError(409, "conflict", "seed job '" + sid + "' has no results: it is " + state_name(rec->state));
      }
      spec.seed_jobs.push_back(sid);
    }
  }
  if (body.contains("resources")) {
    const json& r = body["resources"];
    if (!r.is_object()) throw ApiError(400, "bad_request", "'resources' must be an object");
    if (r.contains("threads")) {
      if (!r["threads"].is_number_integer() || r["threads"].get<long long>() < 1 || r["threads"].get<long long>() > 1024) {
        throw ApiError(400, "bad_request", "'resources.threads' must be an integer in 1..1024");
      }
      spec.threads = r["threads"].get<int>();
    }
  }
  auto [rec, created] = jobs_.submit(tenant, key, digest_hex(req.body), std::move(spec));
  if (created) submitted_.series().add(1);
  Reply r = json_reply(created ? 201 : 200, rec.to_json());
  r.headers.emplace_back("Location", "/v1/jobs/" + rec.id);
  return r;
}

Reply Api::results(const std::string& tenant, const std::string& id) {
  auto rec = jobs_.get(tenant, id);
  if (!rec) job_not_found(id);
  if (rec->state != JobState::succeeded) {
    throw ApiError(409, "conflict", "job '" + id + "' has no results: it is " + state_name(rec->state));
  }
  const fs::path dir = jobs_.results_dir(id);
  json m = json::parse(read_file(dir / "manifest.json"));
  json chunks = json::array();
  for (auto c : m.at("chunks")) {
    const std::string file = c.at("file").get<std::string>();
    c.erase("file");
    c["name"] = file;
    std::error_code ec;
    c["file_bytes"] = fs::file_size(dir / file, ec);
    chunks.push_back(c);
  }
  json out = {{"chunks", chunks}};
  for (const char* key : {"tasks_total", "seconds"}) {
    if (const auto it = m.find(key); it != m.end()) out[key] = *it;
  }
  return json_reply(200, out);
}

Reply Api::result_file(const std::string& tenant, const std::string& id, const std::string& name,
                       const Request& req) {
  auto rec = jobs_.get(tenant, id);
  if (!rec) job_not_found(id);
  if (rec->state != JobState::succeeded) {
    throw ApiError(409, "conflict", "job '" + id + "' has no results: it is " + state_name(rec->state));
  }
  const fs::path dir = jobs_.results_dir(id);
  bool listed = false;
  const json m = json::parse(read_file(dir / "manifest.json"));
  for (const auto& c : m.at("chunks")) listed = listed || c.at("file").get<std::string>() == name;
  if (!listed) throw ApiError(404, "not_found", "job '" + id + "' has no result chunk '" + name + "'");
  std::error_code ec;
  const std::uint64_t size = fs::file_size(dir / name, ec);
  if (ec) throw ApiError(500, "internal", "result chunk '" + name + "' is missing on the server");
  Reply r;
  r.kind = Reply::Kind::file;
  r.content_type = "application/octet-stream";
  r.path = dir / name;
  r.total = size;
  r.offset = 0;
  r.length = size;
  r.headers.emplace_back("ETag", "\"" + id + "-" + name + "-" + std::to_string(size) + "\"");
  r.headers.emplace_back("Accept-Ranges", "bytes");
  const std::string range = req.header("range");
  if (!range.empty()) {
    unsigned long long a = 0, b = 0;
    char dash = 0;
    int got = 0;
    if (range.rfind("bytes=", 0) == 0) {
      const std::string spec = range.substr(6);
      if (std::sscanf(spec.c_str(), "%llu-%llu", &a, &b) == 2) got = 2;
      else if (std::sscanf(spec.c_str(), "%llu%c", &a, &dash) == 2 && dash == '-' && spec.back() == '-') got = 1;
    }
    if (got == 0 || (got == 2 && b < a)) throw ApiError(400, "bad_request", "unsupported Range '" + range + "'");
    if (a >= size) {
      Reply e = error_reply(416, "bad_request", "range starts at or after the end (" + std::to_string(size) + " bytes)");
      e.headers.emplace_back("Content-Range", "bytes */" + std::to_string(size));
      return e;
    }
    const std::uint64_t last = got == 2 ? std::min<std::uint64_t>(b, size - 1) : size - 1;
    r.status = 206;
    r.offset = a;
    r.length = last - a + 1;
    r.headers.emplace_back("Content-Range",
                           "bytes " + std::to_string(a) + "-" + std::to_string(last) + "/" + std::to_string(size));
  }
  return r;
}

}  // namespace kangaroo::gateway
