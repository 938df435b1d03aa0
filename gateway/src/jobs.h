// Local job backend: accepted jobs are records in a state directory and run as
// `kangaroo-worker run` processes on this host, a bounded number at a time.
//
// State directory layout (one folder per job):
//   jobs/<id>/request.json  the accepted request and its first record, written
//                           and fsynced before the job is acknowledged, so a
//                           restarted gateway knows every accepted job
//   jobs/<id>/job.json      the current record (state, times, progress, error)
//   jobs/<id>/plan.json     plan (and runmeta.json) for the worker, from request.json
//   jobs/<id>/results/      worker output, present only once the run succeeded
// Jobs found queued or running at start-up are queued again: a run only makes
// its results visible as a whole, so re-running is safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace kangaroo::gateway {

enum class JobState { queued, running, succeeded, failed, cancelled };
const char* state_name(JobState s);
bool is_terminal(JobState s);

struct JobSpec {
  std::string dataset_uri;             // as the client wrote it
  std::string dataset_path;            // resolved inside a data root
  std::string plan_text;               // validated plan document
  std::string runmeta_text;            // empty: synthesized by the worker
  std::map<std::int32_t, std::string> fields;  // field id -> NAME or #COMP
  std::vector<std::pair<std::int32_t, std::int32_t>> outputs;  // (field, version; -1 any)
  bool all_outputs = false;
  int threads = 0;                     // 0: the backend's default
  std::vector<std::string> seed_jobs;  // earlier jobs whose results the plan reads
};

struct JobRecord {
  std::string id, tenant, idempotency_key, request_hash, dataset;
  JobState state = JobState::queued;
  double created = 0, started = 0, finished = 0;  // Unix seconds; 0 = not yet
  std::uint64_t done = 0, total = 0;
  std::string error_kind, error_message;
  std::uint64_t results = 0;
  std::uint64_t seq = 0;  // bumps on every change (event streams watch it)

  nlohmann::json to_json() const;                  // the API's job record
  nlohmann::json to_storage() const;               // job.json
  static JobRecord from_storage(const nlohmann::json& j);
};

struct JobStoreOptions {
  std::filesystem::path state_dir;
  std::string worker_bin;
  int slots = 1;             // jobs running at once
  std::size_t queue_cap = 64;  // queued jobs before 503
  int threads_per_job = 0;   // default --threads of each worker rank (0: worker default)
  int ranks = 1;             // worker ranks per job (local processes joined over UCX)
  std::uint64_t mem_cap = 0;  // per-rank memory cap of jobs (0: none)
  std::string spill_dir;     // where capped jobs spill (default: <state_dir>/spill)
};

class JobStore {
 public:
  explicit JobStore(JobStoreOptions opt);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  void start();  // launches the runner threads
  void stop();   // stops runners; running workers are killed, records stay "running"

  // Accepts a job (201) or returns the earlier one for the same tenant and
  // idempotency key (second = false). ApiError 409 when the key was used for a
  // different request, 503 when the queue is full.
  std::pair<JobRecord, bool> submit(const std::string& tenant, const std::string& idempotency_key,
                                    const std::string& request_hash, JobSpec spec);
  std::optional<JobRecord> get(const std::string& tenant, const std::string& id) const;
  std::vector<JobRecord> list(const std::string& tenant) const;
  std::optional<JobRecord> cancel(const std::string& tenant, const std::string& id);
  std::filesystem::path results_dir(const std::string& id) const;
  std::map<JobState, std::size_t> counts() const;
  std::size_t queue_length() const;
  // Called (outside the store's lock, from any thread) with the job's id after
  // every change of a job record: event streams wake on it instead of polling.
  void set_listener(std::function<void(const std::string&)> fn);

 private:
  struct Entry {
    JobRecord rec;
    int pid = 0;
    bool cancel_requested = false;
  };
  std::filesystem::path job_dir(const std::string& id) const;
  void persist(const JobRecord& rec) const;
  void load_existing();
  void notify(const std::string& id) const;
  std::optional<JobRecord> cancel_locked(const std::string& tenant, const std::string& id);
  struct WorkerProc;
  void finish_job(const std::string& id, bool exited, int code, std::string messages);
  void runner();
  void run_job(const std::string& id, WorkerProc& proc);
  std::vector<std::string> worker_argv(const std::string& id, const JobSpec& spec) const;

  JobStoreOptions opt_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Entry> jobs_;
  std::map<std::pair<std::string, std::string>, std::string> by_key_;  // (tenant, key) -> id
  std::deque<std::string> queue_;
  std::vector<std::thread> runners_;
  bool stopping_ = false;
  mutable std::mutex listener_mu_;  // never taken together with mu_
  std::function<void(const std::string&)> listener_;
};

// Stable 64-bit FNV-1a digest as hex (idempotency request comparison).
std::string digest_hex(std::string_view data);

}  // namespace kangaroo::gateway
