// Plan executor (§4, §8): expands stages into tasks, resolves reads, runs
// kernels on a small thread pool and publishes outputs.
//
// With a RankLink the executor is one rank of a job: it runs the tasks that
// OWN-3 places on it, pushes every chunk it publishes to the ranks whose
// tasks read it (results to rank 0), and treats a stage as done only when
// rank 0 says every rank finished it and this rank received all chunks of
// the stage addressed to it (see kangaroo/exec/rank_link.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "kangaroo/core/dataset.h"
#include "kangaroo/core/event_log.h"
#include "kangaroo/core/metrics.h"
#include "kangaroo/core/prepare.h"
#include "kangaroo/core/runmeta.h"
#include "kangaroo/exec/chunk_store.h"
#include "kangaroo/exec/rank_link.h"

namespace kangaroo {

// Which resident chunk a memory-capped run frees first (seed §5.4).
enum class EvictionPolicy : std::uint8_t {
  lru,   // least recently used
  cost,  // cheapest to bring back first: chunks the dataset or a spill file
         // already holds (a re-read) before ones that need a write, each
         // group least recently used first
};

struct ExecOptions {
  int threads = 0;                 // 0: one per hardware thread
  std::size_t max_active_tasks = 0;  // 0: 64 per thread; waiting tasks do not count (EXEC-8)
  EventLog* event_log = nullptr;   // null: logging off
  std::string run_id = "run";
  int rank = 0;
  int world_size = 1;
  // Multi-rank job: rank and world size come from the link. Null: one rank.
  RankLink* link = nullptr;
  // Memory-capped mode (seed §5-§6), 0 = off: the bytes this rank holds
  // (stored chunks, the inputs and outputs of running tasks, chunks queued
  // for other ranks, task records and consumer counts) stay under
  // `memory_cap`. A task starts only when its
  // inputs and outputs fit; otherwise resident chunks nobody is using are
  // evicted (dropped when the dataset can serve them again, else written to
  // the store's spill area), or the task waits for running ones. A task that
  // cannot fit even alone fails the run with the bytes it needs.
  std::uint64_t memory_cap = 0;
  // Bytes of memory_cap held back for what the executor does not account
  // itself: chunks other ranks have sent that wait in the transport (its
  // receive window). Chunks and tasks get memory_cap minus this.
  std::uint64_t memory_held_back = 0;
  EvictionPolicy eviction = EvictionPolicy::lru;
  // Live metrics (seed §8), null: off. Families are named kangaroo_worker_*.
  MetricRegistry* metrics = nullptr;
  // Chunks kept after the run besides the plan's sinks (outputs no task of
  // the plan reads). keep_all keeps every produced chunk.
  bool keep_all = false;
  std::function<bool(const ChunkId&)> keep;
  // Called from worker threads, at most every `progress_every` completions.
  std::function<void(std::uint64_t done, std::uint64_t total)> progress;
  std::uint64_t progress_every = 1000;
};

struct RunStats {
  std::uint64_t tasks_total = 0;
  std::uint64_t tasks_run = 0;      // kernels executed
  std::uint64_t tasks_empty = 0;    // graph groups with no inputs (RED-2)
  std::uint64_t stages_run = 0;
  double seconds = 0.0;
  std::size_t peak_active_tasks = 0;
  std::size_t peak_waiting_tasks = 0;
  // Scheduler-owned bytes: live task records, consumer counts and producer
  // index (not chunk payloads).
  std::uint64_t peak_metadata_bytes = 0;
  std::uint64_t peak_store_bytes = 0;
  // Memory accounting (all runs) and memory-capped mode.
  std::uint64_t peak_memory_bytes = 0;  // stored chunks + running tasks' reservations + queued sends + task metadata
  std::uint64_t evictions = 0;          // chunks freed under the cap
  std::uint64_t admission_waits = 0;    // times a task waited for memory
  std::uint64_t cache_hits = 0;         // reads served from the store
  std::uint64_t cache_misses = 0;       // reads loaded from the dataset or a spill file
  std::vector<ChunkId> produced;  // chunks retained after the run (sinks or kept)
};

class Executor {
 public:
  Executor(const PreparedPlan& plan, const RunMeta& runmeta, Dataset* dataset, ChunkStore& store,
           ExecOptions options);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Runs to completion; throws the first task or stage error (EXEC-9).
  RunStats run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Output visibility (LIFE-2): a store guarded by a run flag so nothing is
// readable while a run of the session is in flight.
class Session {
 public:
  explicit Session(std::shared_ptr<Dataset> dataset) : dataset_(std::move(dataset)) {}
  RunStats run(const PreparedPlan& plan, const RunMeta& runmeta, ExecOptions options);
  // Fails while a run is in flight (`output retrieval is not allowed while a
  // plan run is in progress`) and for unknown chunks (LIFE-4).
  ConstBufferPtr retrieve(const ChunkId& id) const;
  bool running() const { return running_.load(); }
  const ChunkStore& store() const { return store_; }
  // Where memory-capped runs spill (kept for the session so spilled results
  // stay retrievable).
  void set_spill_area(std::shared_ptr<SpillArea> area) { store_.set_spill_area(std::move(area)); }

 private:
  std::shared_ptr<Dataset> dataset_;
  ChunkStore store_;
  std::atomic<bool> running_{false};
  // Held shared by retrievals and exclusively while a run starts, so no
  // retrieval reads the store once a run is under way.
  mutable std::shared_mutex retrieval_mutex_;
};

}  // namespace kangaroo
