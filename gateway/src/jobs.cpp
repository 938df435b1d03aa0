#include "jobs.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "api_error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace kangaroo::gateway {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string new_job_id() {
  static std::mutex mu;
  static std::random_device rd;
  std::lock_guard lock(mu);
  std::uniform_int_distribution<std::uint64_t> dist;
  char buf[24];
  std::snprintf(buf, sizeof buf, "j-%016llx", static_cast<unsigned long long>(dist(rd)));
  return buf;
}

// Write-then-rename, so readers never see a partial file. `durable` also
// fsyncs before the rename (only the request that acknowledges a job needs
// it: everything else is rebuilt from it after a crash).
void write_atomic(const fs::path& path, const std::string& text, bool durable = false) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw std::runtime_error("cannot write '" + tmp.string() + "'");
  }
  if (int fd = durable ? ::open(tmp.c_str(), O_RDONLY) : -1; fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw std::runtime_error("cannot move '" + tmp.string() + "' into place: " + ec.message());
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read '" + p.string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

JobState parse_state(const std::string& s) {
  for (auto st : {JobState::queued, JobState::running, JobState::succeeded, JobState::failed, JobState::cancelled}) {
    if (s == state_name(st)) return st;
  }
  throw std::runtime_error("unknown job state '" + s + "'");
}

json spec_to_json(const JobSpec& s) {
  json fields = json::object();
  for (const auto& [id, name] : s.fields) fields[std::to_string(id)] = name;
  json outputs = json::array();
  for (const auto& [f, v] : s.outputs) outputs.push_back({f, v});
  return {{"dataset_uri", s.dataset_uri}, {"dataset_path", s.dataset_path}, {"fields", fields},
          {"outputs", outputs}, {"all_outputs", s.all_outputs}, {"threads", s.threads},
          {"plan", s.plan_text}, {"runmeta", s.runmeta_text}, {"seed_jobs", s.seed_jobs}};
}

JobSpec spec_from_json(const json& j) {
  JobSpec s;
  s.dataset_uri = j.at("dataset_uri").get<std::string>();
  s.dataset_path = j.at("dataset_path").get<std::string>();
  for (const auto& [k, v] : j.at("fields").items()) s.fields[std::stoi(k)] = v.get<std::string>();
  for (const auto& o : j.at("outputs")) s.outputs.emplace_back(o.at(0).get<std::int32_t>(), o.at(1).get<std::int32_t>());
  s.all_outputs = j.at("all_outputs").get<bool>();
  s.threads = j.at("threads").get<int>();
  s.plan_text = j.at("plan").get<std::string>();
  if (const auto it = j.find("seed_jobs"); it != j.end()) s.seed_jobs = it->get<std::vector<std::string>>();
  s.runmeta_text = j.at("runmeta").get<std::string>();
  return s;
}

// "progress: D/T tasks" pieces of the worker's stderr (separated by \r or \n).
bool parse_progress(const std::string& piece, std::uint64_t& done, std::uint64_t& total) {
  unsigned long long d = 0, t = 0;
  if (std::sscanf(piece.c_str(), "progress: %llu/%llu tasks", &d, &t) != 2) return false;
  done = d;
  total = t;
  return true;
}

}  // namespace

const char* state_name(JobState s) {
  switch (s) {
    case JobState::queued: return "queued";
    case JobState::running: return "running";
    case JobState::succeeded: return "succeeded";
    case JobState::failed: return "failed";
    case JobState::cancelled: return "cancelled";
  }
  return "unknown";
}

bool is_terminal(JobState s) { return s == JobState::succeeded || s == JobState::failed || s == JobState::cancelled; }

std::string digest_hex(std::string_view data) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

json JobRecord::to_json() const {
  auto opt_time = [](double t) { return t > 0 ? json(t) : json(nullptr); };
  json err = nullptr;
  if (!error_kind.empty()) err = {{"kind", error_kind}, {"message", error_message}};
  return {{"id", id},
          {"state", state_name(state)},
          {"dataset", dataset},
          {"idempotency_key", idempotency_key.empty() ? json(nullptr) : json(idempotency_key)},
          {"created", created},
          {"started", opt_time(started)},
          {"finished", opt_time(finished)},
          {"progress", {{"done", done}, {"total", total}}},
          {"error", err},
          {"results", results}};
}

json JobRecord::to_storage() const {
  json j = to_json();
  j["tenant"] = tenant;
  j["request_hash"] = request_hash;
  return j;
}

JobRecord JobRecord::from_storage(const json& j) {
  JobRecord r;
  r.id = j.at("id").get<std::string>();
  r.tenant = j.at("tenant").get<std::string>();
  if (const auto it = j.find("request_hash"); it != j.end() && it->is_string()) r.request_hash = it->get<std::string>();
  r.dataset = j.at("dataset").get<std::string>();
  r.state = parse_state(j.at("state").get<std::string>());
  if (!j.at("idempotency_key").is_null()) r.idempotency_key = j.at("idempotency_key").get<std::string>();
  r.created = j.at("created").get<double>();
  if (!j.at("started").is_null()) r.started = j.at("started").get<double>();
  if (!j.at("finished").is_null()) r.finished = j.at("finished").get<double>();
  r.done = j.at("progress").at("done").get<std::uint64_t>();
  r.total = j.at("progress").at("total").get<std::uint64_t>();
  if (!j.at("error").is_null()) {
    r.error_kind = j.at("error").at("kind").get<std::string>();
    r.error_message = j.at("error").at("message").get<std::string>();
  }
  if (const auto it = j.find("results"); it != j.end() && it->is_number_unsigned()) r.results = it->get<std::uint64_t>();
  return r;
}

JobStore::JobStore(JobStoreOptions opt) : opt_(std::move(opt)) {
  if (opt_.slots < 1) throw std::runtime_error("the local backend needs at least one worker slot");
  fs::create_directories(opt_.state_dir / "jobs");
  load_existing();
}

JobStore::~JobStore() { stop(); }

fs::path JobStore::job_dir(const std::string& id) const { return opt_.state_dir / "jobs" / id; }
fs::path JobStore::results_dir(const std::string& id) const { return job_dir(id) / "results"; }

void JobStore::persist(const JobRecord& rec) const { write_atomic(job_dir(rec.id) / "job.json", dump_json(rec.to_storage(), 1)); }

void JobStore::load_existing() {
  std::vector<JobRecord> requeue;
  for (const auto& entry : fs::directory_iterator(opt_.state_dir / "jobs")) {
    if (!entry.is_directory()) continue;
    const fs::path dir = entry.path();
    std::error_code ec;
    if (!fs::exists(dir / "request.json", ec)) {
      fs::remove_all(dir, ec);  // a submission that was never acknowledged
      continue;
    }
    JobRecord rec;
    try {
      if (fs::exists(dir / "job.json", ec)) {
        rec = JobRecord::from_storage(json::parse(read_text(dir / "job.json")));
      } else {
        // Acknowledged, but the record did not reach the disk: queued again.
        rec = JobRecord::from_storage(json::parse(read_text(dir / "request.json")).at("record"));
      }
    } catch (const std::exception& e) {
      throw std::runtime_error("job record '" + (dir / "job.json").string() + "' is unreadable: " + e.what() +
                               "; move that job folder aside to start");
    }
    if (!is_terminal(rec.state)) {
      for (const auto& f : fs::directory_iterator(dir)) {
        if (f.path().filename().string().rfind("results", 0) == 0) fs::remove_all(f.path(), ec);
      }
      rec.state = JobState::queued;
      rec.started = 0;
      rec.done = rec.total = 0;
      persist(rec);
      requeue.push_back(rec);
    }
    if (!rec.idempotency_key.empty()) by_key_[{rec.tenant, rec.idempotency_key}] = rec.id;
    jobs_[rec.id].rec = rec;
  }
  std::sort(requeue.begin(), requeue.end(), [](const auto& a, const auto& b) { return a.created < b.created; });
  for (const auto& r : requeue) queue_.push_back(r.id);
}

void JobStore::start() {
  std::lock_guard lock(mu_);
  stopping_ = false;
  for (int i = 0; i < opt_.slots; ++i) runners_.emplace_back([this] { runner(); });
}

void JobStore::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && runners_.empty()) return;
    stopping_ = true;
    for (auto& [id, e] : jobs_) {
      if (e.pid > 0) ::kill(-e.pid, SIGKILL);
    }
  }
  cv_.notify_all();
  for (auto& t : runners_) t.join();
  runners_.clear();
}

std::pair<JobRecord, bool> JobStore::submit(const std::string& tenant, const std::string& key,
                                            const std::string& request_hash, JobSpec spec) {
  std::unique_lock lock(mu_);
  if (!key.empty()) {
    if (auto it = by_key_.find({tenant, key}); it != by_key_.end()) {
      const JobRecord& prior = jobs_.at(it->second).rec;
      if (prior.request_hash != request_hash) {
        throw ApiError(409, "conflict",
                       "Idempotency-Key '" + key + "' was already used for a different request (job " + prior.id +
                           "); use a new key for a new job");
      }
      return {prior, false};
    }
  }
  if (queue_.size() >= opt_.queue_cap) {
    throw ApiError(503, "unavailable",
                   "the job queue is full (" + std::to_string(opt_.queue_cap) + " jobs waiting); retry later");
  }
  JobRecord rec;
  rec.id = new_job_id();
  rec.tenant = tenant;
  rec.idempotency_key = key;
  rec.request_hash = request_hash;
  rec.dataset = spec.dataset_uri;
  rec.created = now_seconds();
  const fs::path dir = job_dir(rec.id);
  fs::create_directories(dir);
  json request = spec_to_json(spec);
  request["record"] = rec.to_storage();
  write_atomic(dir / "request.json", dump_json(request), /*durable=*/true);  // acknowledged from here on
  persist(rec);
  jobs_[rec.id].rec = rec;
  if (!key.empty()) by_key_[{tenant, key}] = rec.id;
  queue_.push_back(rec.id);
  lock.unlock();
  cv_.notify_one();
  return {rec, true};
}

std::optional<JobRecord> JobStore::get(const std::string& tenant, const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.rec.tenant != tenant) return std::nullopt;
  return it->second.rec;
}

std::vector<JobRecord> JobStore::list(const std::string& tenant) const {
  std::vector<JobRecord> out;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, e] : jobs_) {
      if (e.rec.tenant == tenant) out.push_back(e.rec);
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.created > b.created; });
  return out;
}

std::optional<JobRecord> JobStore::cancel(const std::string& tenant, const std::string& id) {
  auto rec = cancel_locked(tenant, id);
  if (rec) notify(id);
  return rec;
}

std::optional<JobRecord> JobStore::cancel_locked(const std::string& tenant, const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.rec.tenant != tenant) return std::nullopt;
  Entry& e = it->second;
  if (is_terminal(e.rec.state)) return e.rec;
  if (e.rec.state == JobState::queued) {
    queue_.erase(std::remove(queue_.begin(), queue_.end(), id), queue_.end());
    e.rec.state = JobState::cancelled;
    e.rec.finished = now_seconds();
    e.rec.error_kind = "cancelled";
    e.rec.error_message = "cancelled by the client before it started";
    ++e.rec.seq;
    persist(e.rec);
    return e.rec;
  }
  e.cancel_requested = true;
  if (e.pid > 0) ::kill(-e.pid, SIGTERM);
  return e.rec;
}

void JobStore::set_listener(std::function<void(const std::string&)> fn) {
  std::lock_guard lock(listener_mu_);  // waits for a call in flight
  listener_ = std::move(fn);
}

void JobStore::notify(const std::string& id) const {
  std::lock_guard lock(listener_mu_);
  if (listener_) listener_(id);
}

std::map<JobState, std::size_t> JobStore::counts() const {
  std::map<JobState, std::size_t> c;
  std::lock_guard lock(mu_);
  for (const auto& [id, e] : jobs_) ++c[e.rec.state];
  return c;
}

std::size_t JobStore::queue_length() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

std::vector<std::string> JobStore::worker_argv(const std::string& id, const JobSpec& spec) const {
  const fs::path dir = job_dir(id);
  std::vector<std::string> argv = {opt_.worker_bin, "run", "--plan", (dir / "plan.json").string(), "--dataset",
                                   spec.dataset_path, "--out", (dir / "results").string(), "--progress",
                                   "--run-id", id};
  if (!spec.runmeta_text.empty()) {
    argv.push_back("--runmeta");
    argv.push_back((dir / "runmeta.json").string());
  }
  for (const auto& [fid, name] : spec.fields) {
    argv.push_back("--field");
    argv.push_back(std::to_string(fid) + "=" + name);
  }
  for (const auto& [f, v] : spec.outputs) {
    argv.push_back("--output");
    argv.push_back(v < 0 ? std::to_string(f) : std::to_string(f) + ":" + std::to_string(v));
  }
  if (spec.all_outputs) argv.push_back("--all-outputs");
  for (const auto& seed : spec.seed_jobs) {
    argv.push_back("--seed");
    argv.push_back(results_dir(seed).string());
  }
  const int threads = spec.threads > 0 ? spec.threads : opt_.threads_per_job;
  if (threads > 0) {
    argv.push_back("--threads");
    argv.push_back(std::to_string(threads));
  }
  if (opt_.ranks > 1) {
    argv.push_back("--ranks");
    argv.push_back(std::to_string(opt_.ranks));
  }
  if (opt_.mem_cap > 0) {
    argv.push_back("--memory-cap");
    argv.push_back(std::to_string(opt_.mem_cap));
    argv.push_back("--spill-dir");
    argv.push_back(opt_.spill_dir.empty() ? (opt_.state_dir / "spill").string() : opt_.spill_dir);
  }
  return argv;
}

// One warm `kangaroo-worker serve` process per runner slot: jobs are sent as
// argument lines on its stdin, its stdout+stderr carry progress, messages and
// the completion marker. Cancelling a job kills the process; the next job
// starts a fresh one.
struct JobStore::WorkerProc {
  pid_t pid = -1;
  int in = -1;   // our end of its stdin
  int out = -1;  // our end of its stdout+stderr
  std::string pending;

  bool alive() const { return pid > 0; }
  void close_fds() {
    if (in >= 0) ::close(in);
    if (out >= 0) ::close(out);
    in = out = -1;
    pending.clear();
  }
  // Reaps the process; returns its wait status (0 when it was not running).
  int reap() {
    close_fds();
    int status = 0;
    if (pid > 0) {
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
    pid = -1;
    return status;
  }
};

namespace {

constexpr std::string_view kDoneMarker = "\x1ekangaroo-serve-done ";

// Starts `worker_bin serve` in its own process group; empty string on success.
std::string spawn_serve(const std::string& worker_bin, pid_t& pid, int& in, int& out) {
  int to_child[2] = {-1, -1}, from_child[2] = {-1, -1};
  if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) {
    const std::string err = std::string("pipe: ") + std::strerror(errno);
    for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) {
      if (fd >= 0) ::close(fd);
    }
    return err;
  }
  std::string bin = worker_bin, cmd = "serve";
  char* argv[] = {bin.data(), cmd.data(), nullptr};
  const pid_t parent = ::getpid();
  pid = ::fork();
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec. The worker dies with
    // the gateway, which re-runs unfinished jobs when it starts again.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(to_child[0], 0);
    ::dup2(from_child[1], 1);
    ::dup2(from_child[1], 2);
    ::execv(argv[0], argv);
    const char msg[] = "cannot execute the worker binary\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  if (pid < 0) {
    ::close(to_child[1]);
    ::close(from_child[0]);
    return std::string("fork: ") + std::strerror(errno);
  }
  ::setpgid(pid, pid);
  in = to_child[1];
  out = from_child[0];
  return {};
}

bool write_all(int fd, const std::string& text) {
  std::size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

void JobStore::runner() {
  WorkerProc proc;
  for (;;) {
    std::string id;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) break;
      id = queue_.front();
      queue_.pop_front();
    }
    run_job(id, proc);
  }
  if (proc.alive()) {
    ::kill(-proc.pid, SIGKILL);
    proc.reap();
  }
}

void JobStore::run_job(const std::string& id, WorkerProc& proc) {
  JobSpec spec;
  std::string setup_error;
  try {
    const fs::path dir = job_dir(id);
    spec = spec_from_json(json::parse(read_text(dir / "request.json")));
    write_atomic(dir / "plan.json", spec.plan_text);
    if (!spec.runmeta_text.empty()) write_atomic(dir / "runmeta.json", spec.runmeta_text);
  } catch (const std::exception& e) {
    setup_error = std::string("job files are unreadable: ") + e.what();
  }
  std::string line;
  bool handoff_failed = false;
  if (setup_error.empty()) {
    json args = json::array();
    const auto argv = worker_argv(id, spec);
    for (std::size_t i = 1; i < argv.size(); ++i) args.push_back(argv[i]);
    line = dump_json(args) + "\n";
  }
  {
    std::lock_guard lock(mu_);
    Entry& e = jobs_.at(id);
    if (stopping_) return;
    if (setup_error.empty() && !proc.alive()) setup_error = spawn_serve(opt_.worker_bin, proc.pid, proc.in, proc.out);
    if (setup_error.empty() && !write_all(proc.in, line)) {
      setup_error = "cannot hand the job to the worker process";
      handoff_failed = true;
      ::kill(-proc.pid, SIGKILL);
    }
    if (!setup_error.empty()) {
      e.rec.state = JobState::failed;
      e.rec.finished = now_seconds();
      e.rec.error_kind = "internal";
      e.rec.error_message = setup_error;
      ++e.rec.seq;
      persist(e.rec);
    } else {
      e.pid = proc.pid;
      e.rec.state = JobState::running;
      e.rec.started = now_seconds();
      ++e.rec.seq;
      persist(e.rec);
    }
  }
  notify(id);
  if (!setup_error.empty()) {
    if (handoff_failed) proc.reap();
    return;
  }

  // Progress lines, the worker's messages and the completion marker.
  std::string messages;
  int rc = -1;
  char buf[4096];
  while (rc < 0) {
    const ssize_t n = ::read(proc.out, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    proc.pending.append(buf, static_cast<std::size_t>(n));
    std::size_t start = 0;
    for (std::size_t i = 0; i < proc.pending.size() && rc < 0; ++i) {
      if (proc.pending[i] != '\r' && proc.pending[i] != '\n') continue;
      const std::string piece = proc.pending.substr(start, i - start);
      start = i + 1;
      std::uint64_t d = 0, t = 0;
      if (piece.rfind(kDoneMarker, 0) == 0) {
        rc = std::atoi(piece.c_str() + kDoneMarker.size());
      } else if (parse_progress(piece, d, t)) {
        {
          std::lock_guard lock(mu_);
          Entry& e = jobs_.at(id);
          e.rec.done = d;
          e.rec.total = t;
          ++e.rec.seq;
        }
        notify(id);
      } else if (!piece.empty()) {
        messages += piece + "\n";
        if (messages.size() > 16384) messages.erase(0, messages.size() - 16384);
      }
    }
    proc.pending.erase(0, start);
  }
  {
    std::lock_guard lock(mu_);
    jobs_.at(id).pid = 0;
  }
  if (rc >= 0) {
    finish_job(id, true, rc, messages);
  } else {
    // The process ended mid-job: killed by a cancel, crashed, or shut down.
    const int status = proc.reap();
    if (WIFSIGNALED(status)) finish_job(id, false, WTERMSIG(status), messages);
    else finish_job(id, true, WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : 1, messages);
  }
  notify(id);
}

void JobStore::finish_job(const std::string& id, bool exited, int code, std::string messages) {
  std::lock_guard lock(mu_);
  Entry& e = jobs_.at(id);
  e.pid = 0;
  if (stopping_) return;  // shutting down: the job stays "running" on disk and is re-run
  e.rec.finished = now_seconds();
  ++e.rec.seq;
  if (e.cancel_requested) {
    e.rec.state = JobState::cancelled;
    e.rec.error_kind = "cancelled";
    e.rec.error_message = "cancelled by the client while running";
  } else if (exited && code == 0) {
    e.rec.state = JobState::succeeded;
    try {
      const json m = json::parse(read_text(results_dir(id) / "manifest.json"));
      e.rec.results = m.at("chunks").size();
    } catch (const std::exception& ex) {
      e.rec.state = JobState::failed;
      e.rec.error_kind = "internal";
      e.rec.error_message = std::string("the worker reported success but its manifest is unreadable: ") + ex.what();
    }
  } else {
    e.rec.state = JobState::failed;
    while (!messages.empty() && messages.back() == '\n') messages.pop_back();
    if (!exited) {
      e.rec.error_kind = "internal";
      e.rec.error_message = "worker terminated by signal " + std::to_string(code) +
                            (messages.empty() ? "" : ": " + messages);
    } else {
      e.rec.error_kind = code == 2 ? "validation" : code == 3 ? "run" : code == 1 ? "dataset" : "internal";
      e.rec.error_message = messages.empty() ? "worker exited with status " + std::to_string(code) : messages;
    }
  }
  persist(e.rec);
}

}  // namespace kangaroo::gateway
