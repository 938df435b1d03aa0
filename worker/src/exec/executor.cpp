#include "kangaroo/exec/executor.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "kangaroo/core/plan_json.h"
#include "neighbors.h"

namespace kangaroo {

namespace {

enum class StageStatus : std::uint8_t { waiting, active, done, failed };

// How a task's block maps to the block an input is read at (DOM-1..4).
enum class BlockMode : std::uint8_t { task_block, fixed_block, listed };

struct InputPlan {
  std::int32_t step = 0;
  std::int16_t level = 0;
  std::int32_t field = 0;
  std::int32_t version = 0;
  BlockMode mode = BlockMode::task_block;
  std::int32_t fixed = 0;
  const std::vector<std::int32_t>* listed = nullptr;
};

struct TemplateInfo {
  const TaskTemplate* tmpl = nullptr;
  const KernelEntry* entry = nullptr;
  const StepMeta* step = nullptr;
  const LevelMeta* level = nullptr;
  std::int64_t task_count = 0;
  std::span<const IndexBox> covered;
  std::vector<InputPlan> inputs;
  std::vector<std::int32_t> halo_inputs;  // distinct, first-occurrence (NBR-2)
  bool resolved = false;
};

struct Task {
  std::int32_t stage = 0;
  std::int32_t tmpl = 0;
  std::int64_t index = 0;  // block position (chunk) or group (graph)
  std::int32_t block = 0;  // task block or group output block
  std::uint32_t pending = 0;
  // reads[0..n_inputs) are kernel inputs, [n_inputs..n_base) neighbor reads,
  // [n_base..) the kernel's extra reads.
  std::uint32_t n_inputs = 0;
  std::uint32_t n_base = 0;
  bool empty_group = false;
  std::vector<ConstBufferPtr> reads;
  std::vector<ChunkId> read_ids;
  std::vector<std::uint32_t> to_load;  // read slots to fetch from the dataset
  std::vector<NeighborSlot> neighbor_slots;
  std::vector<BufferPtr> outputs;
  std::exception_ptr error;
  std::uint64_t accounted = 0;  // footprint counted in live_task_bytes
  std::uint64_t reserve = 0;    // bytes admitted under the memory cap
  double ready_at = 0.0;        // when it became runnable (metrics: queue wait)
  std::vector<std::pair<std::uint32_t, SpillRecord>> unspill;  // read slots served by spill files
  std::vector<std::uint32_t> partial;  // read slots loaded only in the kernel's input window

  std::uint64_t footprint() const {
    return sizeof(Task) + reads.capacity() * sizeof(ConstBufferPtr) + read_ids.capacity() * sizeof(ChunkId) +
           to_load.capacity() * 4 + neighbor_slots.capacity() * sizeof(NeighborSlot) +
           unspill.capacity() * sizeof(std::pair<std::uint32_t, SpillRecord>) +
           outputs.capacity() * sizeof(BufferPtr);
  }
};

struct ProducerRef {
  std::int32_t stage = 0;
  std::int32_t tmpl = 0;
};

struct FieldKey {
  std::int32_t step;
  std::int16_t level;
  std::int32_t field;
  std::int32_t version;
  bool operator==(const FieldKey&) const = default;
};
struct FieldKeyHash {
  std::size_t operator()(const FieldKey& k) const noexcept {
    return ChunkIdHash{}(ChunkId{k.step, k.level, k.field, k.version, 0});
  }
};

struct ReadCount {
  std::uint32_t remaining = 0;
  bool run_owned = false;  // this run put the value into the store
};

// Approximate heap bytes of one unordered_map node holding (ChunkId, ReadCount).
constexpr std::uint64_t kCountNodeBytes = 64;
// Room an admission leaves for task records made before the next one.
constexpr std::uint64_t kMetadataHeadroom = 64 * 1024;
// Zero images from this size on are allocated on first dense access.
constexpr std::uint64_t kDeferredImageBytes = 1 << 20;

std::string where(const Plan& plan, int s, int t) {
  std::string w = "stage " + std::to_string(s) + " ('" + plan.stages[static_cast<std::size_t>(s)].name + "')";
  if (t >= 0) {
    w += " template " + std::to_string(t) + " ('" +
         plan.stages[static_cast<std::size_t>(s)].templates[static_cast<std::size_t>(t)].name + "')";
  }
  return w;
}

}  // namespace

struct Executor::Impl final : TaskHelpers {
  const PreparedPlan& prepared;
  const Plan& plan;
  const RunMeta& meta;
  Dataset* dataset;
  ChunkStore& store;
  ExecOptions opt;

  std::mutex mu;
  std::condition_variable cv;

  // Parts of one task's work offered to idle threads (TaskHelpers), under mu.
  struct HelpJob {
    const std::function<void(std::size_t)>* fn = nullptr;
    std::size_t parts = 0;
    std::size_t next = 0;  // first part nobody has taken
    std::size_t done = 0;
    std::exception_ptr error;
  };
  std::deque<HelpJob*> help;
  std::condition_variable help_cv;  // a part of some job finished

  struct StageState {
    std::int32_t remaining_after = 0;
    StageStatus status = StageStatus::waiting;
    std::int32_t cursor_tmpl = 0;
    std::int64_t cursor_index = 0;
    std::int64_t outstanding = 0;
    std::int64_t parked = 0;  // tasks of this stage waiting for a chunk
    bool expanded = false;
    std::uint64_t round = 0;  // activation_round when it was activated
    // Multi-rank: this rank ran all its tasks of the stage and waits for
    // rank 0's barrier (and the chunks it announces).
    bool local_done = false;
    bool barrier_known = false;
    std::uint64_t expected = 0;  // chunks of this stage addressed here
    std::uint64_t received = 0;
    std::vector<std::uint64_t> sent;  // chunks of this stage pushed per rank
  };
  std::vector<StageState> stages;
  std::vector<std::vector<TemplateInfo>> infos;
  std::vector<int> active;  // stages being expanded, most recently released first (activate)
  std::uint64_t activation_round = 0;  // one per finished stage
  std::deque<Task*> runnable;
  std::vector<std::unique_ptr<Task>> task_pool;
  std::vector<Task*> free_tasks;
  std::unordered_map<ChunkId, ReadCount, ChunkIdHash> counts;
  std::unordered_map<FieldKey, std::vector<ProducerRef>, FieldKeyHash> producers;
  std::unordered_set<std::uint64_t> retained_keys;
  std::vector<ChunkId> retained;
  NeighborIndex neighbor_index;
  enum class ReadKind : std::uint8_t { ready, load, wait };
  std::vector<ReadKind> read_kinds;

  std::size_t running = 0;
  std::size_t waiting = 0;
  std::uint64_t reserved = 0;  // bytes admitted for running tasks
  std::size_t idle_workers = 0;
  int threads = 1;  // executor threads of this run
  std::size_t stages_done = 0;
  std::uint64_t live_task_bytes = 0;
  std::exception_ptr first_error;
  RunStats stats;
  std::uint64_t done_tasks = 0;
  std::size_t window = 0;

  // Multi-rank state (OWN-1..4).
  RankLink* link = nullptr;
  int me = 0;
  int world = 1;
  std::size_t awaiting_barrier = 0;
  bool peer_failed = false;
  // Every task (on any rank) that reads a chunk the plan produces. When a
  // chunk is published, the readers still to run are those of unfinished
  // stages other than the producing task itself (a reduction round may
  // rewrite the identity it read, RED-9); with none left it is a result,
  // which goes to rank 0.
  struct ReaderRef {
    std::int32_t rank;
    std::int32_t stage;
    std::int32_t tmpl;
    std::int64_t index;
  };
  std::unordered_map<ChunkId, std::vector<ReaderRef>, ChunkIdHash> readers;
  static constexpr std::uint32_t kResultFlag = 0x80000000u;

  struct LinkEvents final : RankEvents {
    Impl* impl = nullptr;
    void on_chunk(int from, const ChunkId& id, ConstBufferPtr value, std::int32_t stage) override {
      impl->received_chunk(from, id, std::move(value), stage);
    }
    void on_stage_done(std::int32_t stage, std::uint64_t expected) override { impl->barrier(stage, expected); }
    void on_abort(const std::string& why) override { impl->aborted(why); }
  } link_events;

  Impl(const PreparedPlan& p, const RunMeta& m, Dataset* d, ChunkStore& s, ExecOptions o)
      : prepared(p), plan(p.plan), meta(m), dataset(d), store(s), opt(std::move(o)) {}

  // ---- preparation -------------------------------------------------------

  [[noreturn]] void stage_fail(int s, int t, const std::string& msg) {
    fail(ErrorKind::invalid_plan, where(plan, s, t) + ": " + msg);
  }

  // EXEC-1, EXEC-3, RED-6, DOM-4/5 and domain resolution (ERR-15): checked
  // when a stage is expanded.
  void resolve_stage(int s) {
    const Stage& st = plan.stages[static_cast<std::size_t>(s)];
    auto& list = infos[static_cast<std::size_t>(s)];
    for (std::size_t t = 0; t < st.templates.size(); ++t) {
      TemplateInfo& info = list[t];
      if (info.resolved) continue;
      const TaskTemplate& tm = st.templates[t];
      const int ti = static_cast<int>(t);
      if (st.plane == Plane::mixed || tm.plane == Plane::mixed) stage_fail(s, ti, "unsupported execution plane");
      if (st.plane == Plane::chunk && tm.plane != Plane::chunk) stage_fail(s, ti, "chunk stage requires chunk templates");
      if (st.plane == Plane::graph && tm.plane != Plane::graph) stage_fail(s, ti, "graph stage requires graph templates");
      info.tmpl = &tm;
      info.entry = prepared.entries[static_cast<std::size_t>(s)][t];
      info.step = meta.find_step(tm.domain.step);
      if (info.step == nullptr) {
        stage_fail(s, ti, "domain step " + std::to_string(tm.domain.step) + " is not in the run metadata (DATA-6)");
      }
      if (tm.domain.level < 0 || static_cast<std::size_t>(tm.domain.level) >= info.step->levels.size()) {
        stage_fail(s, ti, "domain level " + std::to_string(tm.domain.level) + " is not in step " +
                              std::to_string(tm.domain.step) + " of the run metadata (DATA-6)");
      }
      info.level = &info.step->levels[static_cast<std::size_t>(tm.domain.level)];
      const auto nblocks = static_cast<std::int64_t>(info.level->boxes.size());
      if (tm.plane == Plane::chunk) {
        if (tm.outputs.empty()) stage_fail(s, ti, "templates must specify outputs");
        if (tm.domain.blocks) {
          for (auto b : *tm.domain.blocks) {
            if (b < 0 || b >= nblocks) {
              stage_fail(s, ti, "domain block " + std::to_string(b) + " is out of range for level " +
                                    std::to_string(tm.domain.level) + " with " + std::to_string(nblocks) + " blocks");
            }
          }
          info.task_count = static_cast<std::int64_t>(tm.domain.blocks->size());
        } else {
          info.task_count = nblocks;
        }
      } else {
        if (tm.deps.kind != DepKind::none) stage_fail(s, ti, "graph tasks do not support deps");
        if (tm.inputs.empty() || tm.outputs.empty()) stage_fail(s, ti, "graph templates must specify inputs and outputs");
        if (!tm.graph_reduce) stage_fail(s, ti, "graph template requires graph_reduce");
        info.task_count = tm.graph_reduce->group_count();
      }
      info.inputs.clear();
      for (const auto& in : tm.inputs) {
        InputPlan ip;
        ip.field = in.field;
        ip.version = in.version;
        ip.step = tm.domain.step;
        ip.level = static_cast<std::int16_t>(tm.domain.level);
        if (in.domain) {
          ip.step = in.domain->step;
          ip.level = static_cast<std::int16_t>(in.domain->level);
          if (meta.find_level(ip.step, ip.level) == nullptr) {
            stage_fail(s, ti, "input domain (step " + std::to_string(ip.step) + ", level " + std::to_string(ip.level) +
                                  ") is not in the run metadata (DATA-6)");
          }
          if (tm.plane == Plane::chunk && in.domain->blocks) {
            const auto& bl = *in.domain->blocks;
            if (bl.empty()) stage_fail(s, ti, "input domain blocks must be non-empty");
            if (bl.size() == 1) {
              ip.mode = BlockMode::fixed_block;
              ip.fixed = bl.front();
            } else {
              ip.mode = BlockMode::listed;
              ip.listed = &bl;
            }
          }
        }
        info.inputs.push_back(ip);
      }
      info.halo_inputs.clear();
      if (tm.deps.kind == DepKind::face_neighbors) {
        if (tm.inputs.empty()) stage_fail(s, ti, "FaceNeighbors dependencies require at least one input");
        for (auto h : tm.deps.halo_inputs) {
          if (h < 0 || static_cast<std::size_t>(h) >= tm.inputs.size()) {
            stage_fail(s, ti, "halo_inputs entry " + std::to_string(h) + " is out of range");
          }
          if (std::find(info.halo_inputs.begin(), info.halo_inputs.end(), h) == info.halo_inputs.end()) {
            info.halo_inputs.push_back(h);
          }
        }
        if (info.halo_inputs.empty()) info.halo_inputs.push_back(0);
      }
      info.covered = {};
      if (param_type_has_coverage(param_type_of(tm.params)) && tm.covered_boxes_ref >= 0) {
        info.covered = plan.shared_covered_boxes[static_cast<std::size_t>(tm.covered_boxes_ref)];
      }
      info.resolved = true;
    }
  }

  std::int32_t task_block(const TemplateInfo& info, std::int64_t index) const {
    const TaskTemplate& tm = *info.tmpl;
    if (tm.plane == Plane::graph) return tm.graph_reduce->output_block(index);
    return tm.domain.blocks ? (*tm.domain.blocks)[static_cast<std::size_t>(index)] : static_cast<std::int32_t>(index);
  }

  // OWN-3: a chunk task runs on the home rank of its first input chunk (or
  // of its first output without inputs), a graph task on its output's.
  int place(const TemplateInfo& info, std::int32_t block) const {
    if (world == 1) return 0;
    const TaskTemplate& tm = *info.tmpl;
    if (tm.plane == Plane::chunk && !info.inputs.empty()) {
      const InputPlan& ip = info.inputs.front();
      return home_rank(ip.step, ip.level, ip.mode == BlockMode::fixed_block ? ip.fixed : block, world);
    }
    return home_rank(tm.domain.step, tm.domain.level, block, world);
  }

  // Appends the chunk identities a task reads, in kernel order (RED-5),
  // then its neighbor reads. Returns false for an empty graph group.
  // Returns how many of the appended reads are template inputs and neighbor
  // reads; the extra reads of the kernel follow them.
  std::size_t task_reads(int s, int t, const TemplateInfo& info, std::int64_t index, std::int32_t block,
                         std::vector<ChunkId>& ids, std::vector<NeighborSlot>* slots) {
    const TaskTemplate& tm = *info.tmpl;
    if (tm.plane == Plane::graph) {
      const auto& g = *tm.graph_reduce;
      const auto [start, end] = g.group_range(index);
      for (const auto& ip : info.inputs) {
        for (std::int64_t p = start; p < end; ++p) {
          ids.push_back({ip.step, ip.level, ip.field, ip.version, g.input_block(p)});
        }
      }
    } else {
      chunk_task_reads(s, t, info, block, ids, slots);
    }
    const std::size_t base = ids.size();
    if (info.entry != nullptr && info.entry->extra_reads != nullptr && info.entry->implemented) {
      ExtraReadQuery q;
      q.runmeta = &meta;
      q.step = tm.domain.step;
      q.level = tm.domain.level;
      q.block = block;
      q.params = &tm.params;
      info.entry->extra_reads(q, ids);
    }
    return base;
  }

  void chunk_task_reads(int s, int t, const TemplateInfo& info, std::int32_t block, std::vector<ChunkId>& ids,
                        std::vector<NeighborSlot>* slots) {
    const TaskTemplate& tm = *info.tmpl;
    for (const auto& ip : info.inputs) {
      std::int32_t b = block;
      if (ip.mode == BlockMode::fixed_block) {
        b = ip.fixed;
      } else if (ip.mode == BlockMode::listed) {
        if (std::find(ip.listed->begin(), ip.listed->end(), block) == ip.listed->end()) {
          fail(ErrorKind::invalid_plan, where(plan, s, t) + " block " + std::to_string(block) +
                                            ": task block not in input domain blocks");
        }
      }
      ids.push_back({ip.step, ip.level, ip.field, ip.version, b});
    }
    if (tm.deps.kind == DepKind::face_neighbors && tm.deps.width > 0) {
      for (auto h : info.halo_inputs) {
        const InputPlan& ip = info.inputs[static_cast<std::size_t>(h)];
        const LevelMeta* lv = meta.find_level(ip.step, ip.level);
        for (int face = 0; face < 6; ++face) {
          if (!tm.deps.faces[static_cast<std::size_t>(face)]) continue;
          const auto& found = neighbor_index.collect(ip.step, ip.level, *lv, block, face, tm.deps.width);
          for (auto nb : found) {
            if (slots != nullptr) slots->push_back({h, face, nb});
            ids.push_back({ip.step, ip.level, ip.field, ip.version, nb});
          }
        }
      }
    }
  }

  void build_indexes() {
    const std::size_t n = plan.stages.size();
    stages.assign(n, {});
    infos.resize(n);
    for (std::size_t s = 0; s < n; ++s) {
      stages[s].remaining_after = static_cast<std::int32_t>(plan.stages[s].after.size());
      infos[s].resize(plan.stages[s].templates.size());
    }
    // Producer index (EXEC-7) and consumer counts over the whole DAG.
    std::vector<ChunkId> ids;
    for (std::size_t s = 0; s < n; ++s) {
      const Stage& st = plan.stages[s];
      for (std::size_t t = 0; t < st.templates.size(); ++t) {
        const TaskTemplate& tm = st.templates[t];
        for (const auto& o : tm.outputs) {
          producers[FieldKey{tm.domain.step, static_cast<std::int16_t>(tm.domain.level), o.field, o.version}].push_back(
              {static_cast<std::int32_t>(s), static_cast<std::int32_t>(t)});
        }
        // A template that cannot resolve fails when its stage is expanded;
        // it contributes no reads here.
        if (t == 0) resolve_stage_quiet(static_cast<int>(s));
        const TemplateInfo& probe = infos[s][t];
        if (!probe.resolved) continue;
        for (std::int64_t i = 0; i < probe.task_count; ++i) {
          ids.clear();
          const std::int32_t block = task_block(probe, i);
          const int owner = place(probe, block);
          if (owner == me) ++stats.tasks_total;
          try {
            task_reads(static_cast<int>(s), static_cast<int>(t), probe, i, block, ids, nullptr);
          } catch (const Error&) {
            continue;  // reported when the task runs
          }
          if (owner == me) {
            for (const auto& id : ids) ++counts[id].remaining;
          }
          if (world > 1) {
            for (const auto& id : ids) {
              if (!plan_produces(id, false)) continue;
              auto& rs = readers[id];
              const ReaderRef ref{owner, static_cast<std::int32_t>(s), static_cast<std::int32_t>(t), i};
              if (rs.empty() || rs.back().stage != ref.stage || rs.back().tmpl != ref.tmpl || rs.back().index != i) {
                rs.push_back(ref);
              }
            }
          }
        }
      }
    }
  }

  void resolve_stage_quiet(int s) {
    try {
      resolve_stage(s);
    } catch (const Error&) {
      // Left unresolved; the error is raised again when the stage starts.
    }
  }

  bool may_produce(const ChunkId& id) const { return plan_produces(id, true); }

  // EXEC-7; `pending_only` skips templates whose stage already finished.
  bool plan_produces(const ChunkId& id, bool pending_only) const {
    auto it = producers.find(FieldKey{id.step, id.level, id.field, id.version});
    if (it == producers.end()) return false;
    for (const auto& p : it->second) {
      const auto status = stages[static_cast<std::size_t>(p.stage)].status;
      if (pending_only && (status == StageStatus::done || status == StageStatus::failed)) continue;
      const TaskTemplate& tm = plan.stages[static_cast<std::size_t>(p.stage)].templates[static_cast<std::size_t>(p.tmpl)];
      if (tm.plane == Plane::graph) {
        if (!tm.graph_reduce) continue;
        const auto& g = *tm.graph_reduce;
        if (!g.output_blocks.empty()) {
          if (std::find(g.output_blocks.begin(), g.output_blocks.end(), id.block) != g.output_blocks.end()) return true;
        } else if (id.block >= g.output_base && id.block < g.output_base + g.group_count()) {
          return true;
        }
      } else if (tm.domain.blocks) {
        if (std::find(tm.domain.blocks->begin(), tm.domain.blocks->end(), id.block) != tm.domain.blocks->end()) return true;
      } else {
        const LevelMeta* lv = meta.find_level(tm.domain.step, tm.domain.level);
        if (lv != nullptr && id.block >= 0 && static_cast<std::size_t>(id.block) < lv->boxes.size()) return true;
      }
    }
    return false;
  }

  // ---- scheduling (called with `mu` held) --------------------------------

  void record_error(std::exception_ptr e, bool from_peer = false) {
    if (first_error) return;
    first_error = e;
    if (link != nullptr && !from_peer) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        link->report_error(x.what());
      }
    }
  }

  // This rank ran its share of stage `s`; without other ranks that finishes
  // the stage, otherwise rank 0's barrier does (barrier()).
  void stage_locally_done(int s) {
    StageState& st = stages[static_cast<std::size_t>(s)];
    if (link == nullptr) {
      finish_stage(s);
      return;
    }
    st.local_done = true;
    ++awaiting_barrier;
    local_done_at[static_cast<std::size_t>(s)] = clock_now();
    link->stage_done_locally(s, st.sent);
    check_barrier(s);
  }

  void check_barrier(int s) {
    StageState& st = stages[static_cast<std::size_t>(s)];
    if (!st.local_done || !st.barrier_known || st.received < st.expected || st.status != StageStatus::active) return;
    --awaiting_barrier;
    if (ins.sync_wait != nullptr) ins.sync_wait->add(clock_now() - local_done_at[static_cast<std::size_t>(s)]);
    finish_stage(s);
  }

  // ---- events from the other ranks (link thread) -------------------------

  void received_chunk(int from, const ChunkId& id, ConstBufferPtr value, std::int32_t tag) {
    std::lock_guard lk(mu);
    const bool flagged_result = (static_cast<std::uint32_t>(tag) & kResultFlag) != 0;
    const std::int32_t stage = static_cast<std::int32_t>(static_cast<std::uint32_t>(tag) & ~kResultFlag);
    if (stage < 0 || static_cast<std::size_t>(stage) >= stages.size()) {
      record_error(std::make_exception_ptr(Error(ErrorKind::internal, "rank " + std::to_string(from) + " sent chunk " +
                                                                          id.to_string() + " for unknown stage " +
                                                                          std::to_string(stage))));
      cv.notify_all();
      return;
    }
    ++stages[static_cast<std::size_t>(stage)].received;
    auto it = counts.find(id);
    const bool local_reader = it != counts.end() && it->second.remaining > 0;
    const bool result = me == 0 && (flagged_result || keep(id));
    if (local_reader || result) {
      if (local_reader) it->second.run_owned = true;
      if (result) note_retained(id);
      publish(id, std::move(value));
    }
    check_barrier(stage);
    update_peaks();
    cv.notify_all();
  }

  void barrier(std::int32_t stage, std::uint64_t expected) {
    std::lock_guard lk(mu);
    if (stage < 0 || static_cast<std::size_t>(stage) >= stages.size()) return;
    StageState& st = stages[static_cast<std::size_t>(stage)];
    st.barrier_known = true;
    st.expected = expected;
    check_barrier(stage);
    cv.notify_all();
  }

  void aborted(const std::string& why) {
    std::lock_guard lk(mu);
    peer_failed = true;
    record_error(std::make_exception_ptr(Error(ErrorKind::io, why)), true);
    cv.notify_all();
  }

  // Stores a value and resumes the tasks that waited for it.
  void publish(const ChunkId& id, ConstBufferPtr value) {
    auto woken = store.put(id, std::move(value));
    const ConstBufferPtr v = store.find(id);
    for (const auto& w : woken) {
      Task* wt = static_cast<Task*>(w.task);
      wt->reads[w.slot] = v;
      if (--wt->pending == 0) {
        --waiting;
        --stages[static_cast<std::size_t>(wt->stage)].parked;
        if (ins.queue_wait != nullptr) wt->ready_at = clock_now();
        runnable.push_back(wt);
      }
    }
  }

  // Multi-rank: sends a chunk this rank published to the other ranks that
  // read it, and a result to rank 0. Returns whether it is a result.
  bool push_remote(const Task& producer, const ChunkId& id, const ConstBufferPtr& value) {
    const int stage = producer.stage;
    targets.assign(static_cast<std::size_t>(world), false);
    bool any_reader = false;
    if (auto rit = readers.find(id); rit != readers.end()) {
      for (const ReaderRef& r : rit->second) {
        const auto status = stages[static_cast<std::size_t>(r.stage)].status;
        if (status == StageStatus::done || status == StageStatus::failed) continue;
        if (r.stage == producer.stage && r.tmpl == producer.tmpl && r.index == producer.index) continue;
        any_reader = true;
        targets[static_cast<std::size_t>(r.rank)] = true;
      }
    }
    const bool result = !any_reader || keep(id);
    if (!any_reader) targets[0] = true;
    StageState& st = stages[static_cast<std::size_t>(stage)];
    for (int r = 0; r < world; ++r) {
      if (r == me || !targets[static_cast<std::size_t>(r)]) continue;
      const bool flag = result && (r == 0);
      link->push(r, id, value, static_cast<std::int32_t>(static_cast<std::uint32_t>(stage) | (flag ? kResultFlag : 0u)));
      ++st.sent[static_cast<std::size_t>(r)];
    }
    if (result && me != 0 && !targets[0]) {
      link->push(0, id, value, static_cast<std::int32_t>(static_cast<std::uint32_t>(stage) | kResultFlag));
      ++st.sent[0];
    }
    return result;
  }
  std::vector<bool> targets;

  // ---- metrics (seed §8) -------------------------------------------------

  struct Instruments {
    MetricSeries* done_ok = nullptr;
    MetricSeries* done_empty = nullptr;
    MetricSeries* done_failed = nullptr;
    MetricSeries* running = nullptr;
    MetricSeries* runnable = nullptr;
    MetricSeries* waiting = nullptr;
    MetricFamily* task_seconds = nullptr;
    MetricSeries* queue_wait = nullptr;
    MetricSeries* mem_store = nullptr;
    MetricSeries* mem_reserved = nullptr;
    MetricSeries* mem_queued = nullptr;
    MetricSeries* mem_metadata = nullptr;
    MetricSeries* mem_cap = nullptr;
    MetricSeries* cache_hits = nullptr;
    MetricSeries* cache_misses = nullptr;
    MetricSeries* evictions = nullptr;
    MetricSeries* sync_wait = nullptr;
    MetricSeries* stream_in = nullptr;
    MetricSeries* stream_out = nullptr;
    MetricSeries* stages = nullptr;
  } ins;
  std::vector<double> local_done_at;  // per stage, for barrier wait time

  static double clock_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }

  void init_metrics() {
    MetricRegistry* r = opt.metrics;
    if (r == nullptr) return;
    auto& done = r->counter("kangaroo_worker_tasks_completed_total", "Tasks this rank finished, by outcome.", {"state"});
    ins.done_ok = &done.with({"ok"});
    ins.done_empty = &done.with({"empty"});
    ins.done_failed = &done.with({"failed"});
    auto& now = r->gauge("kangaroo_worker_tasks", "Tasks of the current run on this rank, by state.", {"state"});
    ins.running = &now.with({"running"});
    ins.runnable = &now.with({"runnable"});
    ins.waiting = &now.with({"waiting"});
    ins.task_seconds = &r->histogram("kangaroo_worker_task_seconds", "Kernel time per task.",
                                   exponential_buckets(1e-5, 4, 12), {"kernel"});
    ins.queue_wait = &r->histogram("kangaroo_worker_queue_wait_seconds",
                                 "Time from a task becoming runnable to its start.", exponential_buckets(1e-5, 4, 12))
                        .series();
    auto& mem = r->gauge("kangaroo_worker_memory_bytes", "Chunk memory this rank holds, by kind.", {"kind"});
    ins.mem_store = &mem.with({"stored_chunks"});
    ins.mem_reserved = &mem.with({"running_tasks"});
    ins.mem_queued = &mem.with({"queued_sends"});
    ins.mem_metadata = &mem.with({"task_metadata"});
    ins.mem_cap = &r->gauge("kangaroo_worker_memory_cap_bytes", "Memory cap of this rank (0: none).").series();
    ins.mem_cap->set(static_cast<double>(opt.memory_cap));
    ins.cache_hits = &r->counter("kangaroo_worker_cache_hits_total", "Chunk reads served from memory.").series();
    ins.cache_misses =
        &r->counter("kangaroo_worker_cache_misses_total", "Chunk reads loaded from the dataset or a spill file.").series();
    ins.evictions = &r->counter("kangaroo_worker_evictions_total", "Chunks freed to stay under the memory cap.").series();
    ins.sync_wait = &r->counter("kangaroo_worker_sync_wait_seconds_total",
                              "Time this rank waited at stage barriers for the other ranks.")
                       .series();
    auto& stream = r->counter("kangaroo_worker_stream_bytes_total",
                              "Chunk bytes loaded into tasks (in) and published by them (out).", {"direction"});
    ins.stream_in = &stream.with({"in"});
    ins.stream_out = &stream.with({"out"});
    ins.stages = &r->counter("kangaroo_worker_stages_completed_total", "Stages finished (all ranks).").series();
  }

  void update_gauges() {
    if (ins.running == nullptr) return;
    ins.running->set(static_cast<double>(running));
    ins.runnable->set(static_cast<double>(runnable.size()));
    ins.waiting->set(static_cast<double>(waiting));
    ins.mem_store->set(static_cast<double>(store.bytes_in_use()));
    ins.mem_reserved->set(static_cast<double>(reserved));
    ins.mem_queued->set(static_cast<double>(link_bytes()));
    ins.mem_metadata->set(static_cast<double>(metadata_bytes()));
  }

  void activate(int s) {
    StageState& st = stages[static_cast<std::size_t>(s)];
    st.status = StageStatus::active;
    try {
      resolve_stage(s);
    } catch (...) {
      st.status = StageStatus::failed;
      record_error(std::current_exception());
      return;
    }
    // Depth first: stages a finished stage released go before the stages
    // active until then, so a reduction consumes its partials (and frees
    // them) before further producers allocate theirs; peak memory follows
    // one level of a plan, not all of them. Stages released together keep
    // their plan order. Scheduling order only: results do not depend on it.
    st.round = activation_round;
    auto at = std::find_if(active.begin(), active.end(),
                           [&](int a) { return stages[static_cast<std::size_t>(a)].round < activation_round; });
    const auto pos = at - active.begin();
    active.push_back(s);
    std::rotate(active.begin() + pos, active.end() - 1, active.end());
    if (opt.event_log != nullptr) {
      const double now = EventLog::now();
      opt.event_log->phase("stage:" + plan.stages[static_cast<std::size_t>(s)].name, "stage", "start", now, 0.0);
    }
  }

  void finish_stage(int s) {
    StageState& st = stages[static_cast<std::size_t>(s)];
    st.status = StageStatus::done;
    if (ins.stages != nullptr) ins.stages->add(1);
    ++stages_done;
    ++stats.stages_run;
    if (opt.event_log != nullptr) {
      const double now = EventLog::now();
      opt.event_log->phase("stage:" + plan.stages[static_cast<std::size_t>(s)].name, "stage", "end", now, now);
    }
    ++activation_round;
    for (int d : prepared.dependents[static_cast<std::size_t>(s)]) {
      if (--stages[static_cast<std::size_t>(d)].remaining_after == 0 && !first_error) activate(d);
    }
  }

  Task* new_task() {
    Task* t;
    if (!free_tasks.empty()) {
      t = free_tasks.back();
      free_tasks.pop_back();
    } else {
      task_pool.push_back(std::make_unique<Task>());
      t = task_pool.back().get();
    }
    return t;
  }

  void account(Task* t) {
    const std::uint64_t f = t->footprint();
    live_task_bytes = live_task_bytes + f - t->accounted;
    t->accounted = f;
  }

  void recycle(Task* t) {
    live_task_bytes -= t->accounted;
    t->accounted = 0;
    t->reads.clear();
    t->read_ids.clear();
    t->to_load.clear();
    t->neighbor_slots.clear();
    t->outputs.clear();
    t->unspill.clear();
    t->partial.clear();
    t->reserve = 0;
    t->error = nullptr;
    t->pending = 0;
    t->empty_group = false;
    free_tasks.push_back(t);
  }

  void update_peaks() {
    stats.peak_memory_bytes = std::max(stats.peak_memory_bytes, memory_in_use());
    update_gauges();
    const std::uint64_t meta_bytes = live_task_bytes + counts.size() * kCountNodeBytes;
    stats.peak_metadata_bytes = std::max(stats.peak_metadata_bytes, meta_bytes);
    stats.peak_active_tasks = std::max(stats.peak_active_tasks, running + runnable.size());
    stats.peak_waiting_tasks = std::max(stats.peak_waiting_tasks, waiting);
  }

  // Expands the next task of an active stage; nullptr when none can be made.
  // A stage whose tasks keep parking yields to the other active stages, so
  // producers listed later still run (EXEC-8) and parked tasks stay near the
  // window size instead of growing with the plan.
  Task* expand_one() {
    bool allow_over_cap = false;
    for (std::size_t a = 0;; ) {
      if (a >= active.size()) {
        if (allow_over_cap || active.empty()) return nullptr;
        // Every stage is over its parking cap: expanding further is the
        // only way to reach a producer, so lift the cap for one pass.
        allow_over_cap = true;
        a = 0;
        if (!any_runnable_elsewhere()) continue;
        return nullptr;
      }
      const int s = active[a];
      StageState& st = stages[static_cast<std::size_t>(s)];
      if (!allow_over_cap && st.parked >= parked_cap()) {
        ++a;
        continue;
      }
      auto& list = infos[static_cast<std::size_t>(s)];
      while (st.cursor_tmpl < static_cast<std::int32_t>(list.size()) &&
             st.cursor_index >= list[static_cast<std::size_t>(st.cursor_tmpl)].task_count) {
        ++st.cursor_tmpl;
        st.cursor_index = 0;
      }
      if (st.cursor_tmpl >= static_cast<std::int32_t>(list.size())) {
        st.expanded = true;
        active.erase(active.begin() + static_cast<std::ptrdiff_t>(a));
        if (st.outstanding == 0) stage_locally_done(s);
        continue;
      }
      const int t = st.cursor_tmpl;
      const TemplateInfo& info = list[static_cast<std::size_t>(t)];
      const std::int64_t index = st.cursor_index++;
      const std::int32_t block = task_block(info, index);
      if (world > 1 && place(info, block) != me) continue;  // another rank's task (OWN-3)
      Task* task = new_task();
      task->stage = s;
      task->tmpl = t;
      task->index = index;
      task->block = block;
      ++st.outstanding;
      std::size_t base = 0;
      try {
        base = task_reads(s, t, info, index, task->block, task->read_ids, &task->neighbor_slots);
      } catch (...) {
        task->error = std::current_exception();
        account(task);
        return task;
      }
      task->n_base = static_cast<std::uint32_t>(base);
      task->n_inputs = static_cast<std::uint32_t>(base - task->neighbor_slots.size());
      if (info.tmpl->plane == Plane::graph) {
        const auto [b, e] = info.tmpl->graph_reduce->group_range(index);
        task->empty_group = b >= e;
      }
      task->reads.resize(task->read_ids.size());
      // Classify every read first so a task that cannot run never leaves a
      // waiter behind (EXEC-6).
      read_kinds.assign(task->read_ids.size(), ReadKind::ready);
      for (std::uint32_t r = 0; r < task->read_ids.size() && !task->error; ++r) {
        const ChunkId& id = task->read_ids[r];
        if (ConstBufferPtr v = store.find(id)) {
          task->reads[r] = std::move(v);
          ++stats.cache_hits;
          if (ins.cache_hits != nullptr) ins.cache_hits->add(1);
        } else if (auto rec = store.spilled(id)) {
          read_kinds[r] = ReadKind::load;
          task->unspill.emplace_back(r, std::move(*rec));
        } else if (dataset != nullptr && dataset->has_chunk(id)) {
          read_kinds[r] = ReadKind::load;
        } else if (may_produce(id)) {
          read_kinds[r] = ReadKind::wait;
        } else {
          task->error = std::make_exception_ptr(Error(
              ErrorKind::not_found, where(plan, s, t) + " block " + std::to_string(task->block) +
                                        ": chunk is not available from run dataset or planned outputs: " + id.to_string()));
        }
      }
      if (!task->error) {
        for (std::uint32_t r = 0; r < task->read_ids.size(); ++r) {
          if (read_kinds[r] == ReadKind::load) {
            task->to_load.push_back(r);
            ++stats.cache_misses;
            if (ins.cache_misses != nullptr) ins.cache_misses->add(1);
          } else if (read_kinds[r] == ReadKind::wait) {
            store.wait(task->read_ids[r], {task, r});
            ++task->pending;
          }
        }
      }
      account(task);
      if (task->pending > 0 && !task->error) {
        ++waiting;
        ++st.parked;
        update_peaks();
        ++a;  // parked; look for runnable work in the next stage (EXEC-8)
        continue;
      }
      if (ins.queue_wait != nullptr) task->ready_at = clock_now();
      return task;
    }
  }

  std::int64_t parked_cap() const { return static_cast<std::int64_t>(std::max<std::size_t>(64, 16 * window)); }

  // Work exists that does not need more expansion: running tasks will
  // publish chunks and wake parked ones.
  bool any_runnable_elsewhere() const { return running > 0 || !runnable.empty(); }

  Task* next_task() {
    if (first_error) return nullptr;
    Task* t = nullptr;
    if (!runnable.empty()) {
      t = runnable.front();
      runnable.pop_front();
    } else {
      if (running >= window) return nullptr;
      t = expand_one();
    }
    if (t != nullptr && opt.memory_cap > 0 && !admit(t)) {
      runnable.push_front(t);
      return nullptr;
    }
    return t;
  }

  // ---- memory-capped mode (seed §5-§6) ------------------------------------

  static const SpillRecord* unspilled(const Task& t, std::uint32_t slot) {
    for (const auto& [r, rec] : t.unspill) {
      if (r == slot) return &rec;
    }
    return nullptr;
  }

  std::uint64_t link_bytes() const { return link != nullptr ? link->bytes_queued() : 0; }
  // Everything the cap covers: stored chunks, running tasks' loads and
  // outputs, chunks queued for other ranks, and the scheduler's task records
  // and consumer counts.
  std::uint64_t metadata_bytes() const { return live_task_bytes + counts.size() * kCountNodeBytes; }
  std::uint64_t memory_in_use() const { return store.bytes_in_use() + reserved + link_bytes() + metadata_bytes(); }

  // Bytes of read slot `r` once loaded: resident size, spill record or the
  // dataset's estimate.
  std::uint64_t read_bytes(const Task& t, std::uint32_t r) const {
    if (r < t.reads.size() && t.reads[r]) return t.reads[r]->allocated_bytes();
    if (const SpillRecord* rec = unspilled(t, r)) return rec->nbytes;
    return dataset != nullptr ? dataset->estimate_chunk_bytes(t.read_ids[r]) : 0;
  }

  // What a task adds while it runs: the reads it loads and its outputs.
  std::uint64_t task_bytes(const Task& t) const {
    const TemplateInfo& info = infos[static_cast<std::size_t>(t.stage)][static_cast<std::size_t>(t.tmpl)];
    const TaskTemplate& tm = *info.tmpl;
    std::uint64_t sum = 0;
    for (std::uint32_t r : t.to_load) sum += read_bytes(t, r);
    for (const auto& out : tm.outputs) {
      const BufferSpec& spec = out.buffer;
      const std::uint64_t width = spec.dtype == ScalarType::opaque ? 1 : scalar_width(spec.dtype);
      switch (spec.shape) {
        case ShapeKind::fixed: {
          std::uint64_t n = width;
          for (auto e : spec.extents) n *= e;
          sum += n;
          break;
        }
        case ShapeKind::block: {
          if (t.block < 0 || static_cast<std::size_t>(t.block) >= info.level->boxes.size()) break;
          const IndexBox& box = info.level->boxes[static_cast<std::size_t>(t.block)];
          sum += static_cast<std::uint64_t>(box.extent(0)) * static_cast<std::uint64_t>(box.extent(1)) *
                 static_cast<std::uint64_t>(box.extent(2)) * static_cast<std::uint64_t>(std::max<std::int64_t>(1, spec.components)) *
                 width;
          break;
        }
        case ShapeKind::like_input:
          if (spec.input_index >= 0 && static_cast<std::uint64_t>(spec.input_index) < t.n_inputs) {
            sum += read_bytes(t, static_cast<std::uint32_t>(spec.input_index));
          }
          break;
        case ShapeKind::dynamic:
          if (spec.bound == BoundKind::literal) {
            sum += spec.literal * width;
          } else {
            for (std::uint32_t r = 0; r < t.n_inputs; ++r) sum += read_bytes(t, r);
          }
          break;
      }
    }
    return sum;
  }

  // Frees at least `need` bytes of resident chunks nobody uses, in policy
  // order. A failed spill write fails the run; the chunk stays in memory.
  void make_room(std::uint64_t need) {
    auto cands = store.eviction_candidates();
    if (opt.eviction == EvictionPolicy::cost) {
      std::sort(cands.begin(), cands.end(), [](const EvictionCandidate& a, const EvictionCandidate& b) {
        return std::tie(b.clean, a.last_use) < std::tie(a.clean, b.last_use);
      });
    } else {
      std::sort(cands.begin(), cands.end(),
                [](const EvictionCandidate& a, const EvictionCandidate& b) { return a.last_use < b.last_use; });
    }
    std::uint64_t freed = 0;
    for (const auto& c : cands) {
      if (freed >= need) break;
      try {
        freed += store.evict(c.id);
        ++stats.evictions;
        if (ins.evictions != nullptr) ins.evictions->add(1);
      } catch (...) {
        record_error(std::current_exception());
        return;
      }
    }
  }

  // Admission control: reserves the task's bytes, evicting to make room.
  // False: wait for running tasks (or queued sends) to release memory.
  bool admit(Task* t) {
    if (t->error || t->empty_group) return true;
    const std::uint64_t cap = opt.memory_cap - std::min(opt.memory_cap, opt.memory_held_back);
    const std::string cap_text =
        "memory cap of " + std::to_string(opt.memory_cap) + " bytes" +
        (opt.memory_held_back == 0 ? std::string()
                                   : " (" + std::to_string(opt.memory_cap - cap) +
                                         " of them held for chunks received from other ranks)");
    const std::uint64_t need = task_bytes(*t);
    const std::string what = where(plan, t->stage, t->tmpl) + " block " + std::to_string(t->block);
    if (need > cap) {
      t->error = std::make_exception_ptr(Error(
          ErrorKind::invalid_argument, what + " needs about " + std::to_string(need) +
                                           " bytes for the chunks it loads and the outputs it writes, more than the " +
                                           cap_text + " leaves; raise the cap above that (plus room for the chunks "
                                           "it reads from memory)"));
      return true;
    }
    // Task records keep being made between admissions (expansion, parked
    // tasks); leave room for them so the accounted total stays under the cap.
    const std::uint64_t want = std::min(cap, need + kMetadataHeadroom);
    if (memory_in_use() + want > cap) make_room(memory_in_use() + want - cap);
    if (first_error) return true;
    if (memory_in_use() + want > cap) {
      if (running == 0 && link_bytes() == 0) {
        t->error = std::make_exception_ptr(Error(
            ErrorKind::invalid_argument,
            cap_text + " is too small: " + what + " needs " + std::to_string(need) +
                " bytes while " + std::to_string(store.bytes_in_use()) + " bytes of chunks stay in memory (read by " +
                std::to_string(waiting) + " waiting task(s), or with no spill directory to go to) and the scheduler's " +
                "task records take " + std::to_string(metadata_bytes()) + " bytes; raise the cap"));
        return true;
      }
      ++stats.admission_waits;
      return false;
    }
    t->reserve = need;
    reserved += need;
    stats.peak_memory_bytes = std::max(stats.peak_memory_bytes, memory_in_use());
    return true;
  }

  bool finished() const {
    if (first_error) return running == 0;
    return stages_done == plan.stages.size();
  }

  // Nothing runs, nothing can run, yet the plan is not finished: every
  // parked task waits for a chunk no remaining producer will publish.
  void fail_stalled() {
    if (running != 0 || !runnable.empty() || !active.empty() || awaiting_barrier > 0 || finished()) return;
    if (waiting > 0) {
      record_error(std::make_exception_ptr(Error(
          ErrorKind::not_found, "chunk is not available from run dataset or planned outputs: " +
                                    std::to_string(waiting) + " task(s) wait for chunks that no remaining producer publishes")));
    } else if (stages_done < plan.stages.size()) {
      record_error(std::make_exception_ptr(Error(ErrorKind::internal, "executor stalled with unfinished stages")));
    }
  }

  void complete(Task* t, int worker) {
    StageState& st = stages[static_cast<std::size_t>(t->stage)];
    reserved -= t->reserve;
    t->reserve = 0;
    account(t);  // outputs were allocated while running
    update_peaks();
    if (t->error) {
      record_error(t->error);
      st.status = StageStatus::failed;
      if (ins.done_failed != nullptr) ins.done_failed->add(1);
    } else {
      // Inputs are released before outputs are published so a group that
      // writes the identity it read (RED-9) keeps its new value.
      for (std::uint32_t r = 0; r < t->read_ids.size(); ++r) {
        const ChunkId& id = t->read_ids[r];
        auto it = counts.find(id);
        if (it == counts.end()) continue;
        ReadCount& c = it->second;
        const bool was_loaded = std::find(t->to_load.begin(), t->to_load.end(), r) != t->to_load.end();
        if (c.remaining > 0) --c.remaining;
        if (c.remaining == 0) {
          if (c.run_owned && !keep(id)) store.erase(id);
          counts.erase(it);
        } else if (was_loaded && !store.contains(id) &&
                   std::find(t->partial.begin(), t->partial.end(), r) == t->partial.end()) {
          // Cache a dataset chunk (or one read back from its spill file) for
          // its remaining readers (EXEC-6 (2)).
          c.run_owned = true;
          store.cache(id, t->reads[r], unspilled(*t, r) == nullptr);
        }
      }
      const TaskTemplate& tm =
          plan.stages[static_cast<std::size_t>(t->stage)].templates[static_cast<std::size_t>(t->tmpl)];
      for (std::size_t o = 0; o < t->outputs.size(); ++o) {
        const ChunkId id{tm.domain.step, static_cast<std::int16_t>(tm.domain.level), tm.outputs[o].field,
                         tm.outputs[o].version, t->block};
        ConstBufferPtr value = std::move(t->outputs[o]);
        auto it = counts.find(id);
        const bool local_reader = it != counts.end() && it->second.remaining > 0;
        bool result = !local_reader;  // one rank: nothing in the plan reads it later
        if (link != nullptr) result = push_remote(*t, id, value);
        if (local_reader) {
          it->second.run_owned = true;
          if (keep(id)) note_retained(id);
        } else if (result && me == 0) {
          note_retained(id);
        } else if (link != nullptr) {
          continue;  // only other ranks read it (or rank 0 keeps the result)
        }
        publish(id, std::move(value));
      }
      if (t->empty_group) ++stats.tasks_empty;
      else ++stats.tasks_run;
      if (ins.done_ok != nullptr) (t->empty_group ? ins.done_empty : ins.done_ok)->add(1);
    }
    (void)worker;
    --st.outstanding;
    ++done_tasks;
    if (opt.progress && (done_tasks % opt.progress_every == 0 || done_tasks == stats.tasks_total)) {
      opt.progress(done_tasks, stats.tasks_total);
    }
    const bool stage_done = st.expanded && st.outstanding == 0 && st.status == StageStatus::active && !st.local_done;
    const int stage = t->stage;
    recycle(t);
    if (stage_done) stage_locally_done(stage);
    update_peaks();
  }

  bool keep(const ChunkId& id) const { return opt.keep_all || (opt.keep && opt.keep(id)); }

  void note_retained(const ChunkId& id) {
    const std::uint64_t key = ChunkIdHash{}(id);
    // Hash collisions only cost a duplicate check against the list.
    if (retained_keys.insert(key).second ||
        std::find(retained.begin(), retained.end(), id) == retained.end()) {
      retained.push_back(id);
    }
  }

  // ---- task execution (no lock held) -------------------------------------

  BufferPtr allocate_output(const TemplateInfo& info, const Task& t, std::size_t o) {
    const TaskTemplate& tm = *info.tmpl;
    const BufferSpec& spec = tm.outputs[o].buffer;
    auto unresolved = [&](const std::string& why) -> BufferPtr {
      fail(ErrorKind::kernel, "unable to resolve output Buffer Specification for output " + std::to_string(o) +
                                  " of kernel " + tm.kernel + ": " + why);
    };
    switch (spec.shape) {
      case ShapeKind::fixed: {
        if (spec.dtype == ScalarType::opaque) return Buffer::allocate(Descriptor::opaque_bytes(spec.extents.at(0)), spec.init);
        const Descriptor desc = Descriptor::c_order(spec.dtype, spec.extents);
        // A large zero image starts as an empty compact image: it reads as
        // zero and takes its full storage on the first dense access, so a
        // kernel that publishes a compact image of its own instead (slices,
        // projections) never maps the full-size one.
        if (spec.init == InitPolicy::zero && desc.rank == 2 && desc.required_bytes() >= kDeferredImageBytes) {
          return Buffer::allocate_compact_image(desc, NonzeroRect{});
        }
        return Buffer::allocate(desc, spec.init);
      }
      case ShapeKind::block: {
        if (t.block < 0 || static_cast<std::size_t>(t.block) >= info.level->boxes.size()) {
          return unresolved("block " + std::to_string(t.block) + " is not a block of the level");
        }
        const IndexBox& box = info.level->boxes[static_cast<std::size_t>(t.block)];
        std::vector<std::uint64_t> ext = {static_cast<std::uint64_t>(box.extent(0)), static_cast<std::uint64_t>(box.extent(1)),
                                          static_cast<std::uint64_t>(box.extent(2))};
        if (spec.components != 1) ext.push_back(static_cast<std::uint64_t>(spec.components));
        return Buffer::allocate(Descriptor::c_order(spec.dtype, ext), spec.init);
      }
      case ShapeKind::like_input: {
        if (spec.input_index < 0 || static_cast<std::uint64_t>(spec.input_index) >= t.n_inputs) {
          return unresolved("like_input index " + std::to_string(spec.input_index) + " is outside the task's inputs");
        }
        const Descriptor& in = t.reads[static_cast<std::size_t>(spec.input_index)]->descriptor();
        if (in.scalar == ScalarType::opaque) return unresolved("like_input refers to an opaque input");
        return Buffer::allocate(Descriptor::c_order(spec.dtype, std::span(in.extents.data(), in.rank)), spec.init);
      }
      case ShapeKind::dynamic: {
        std::optional<std::uint64_t> cap;
        switch (spec.bound) {
          case BoundKind::literal: cap = spec.literal; break;
          case BoundKind::like_input: {
            if (spec.bound_input < 0 || static_cast<std::uint64_t>(spec.bound_input) >= t.n_inputs) break;
            const Buffer& in = *t.reads[static_cast<std::size_t>(spec.bound_input)];
            cap = in.allocated_bytes() / in.descriptor().width();
            break;
          }
          case BoundKind::backend_chunk:
          case BoundKind::amr_subbox_pack: {
            if (info.entry->bound == nullptr) break;
            std::vector<std::uint64_t> sizes;
            for (std::uint32_t r = 0; r < t.n_inputs; ++r) sizes.push_back(t.reads[r] ? t.reads[r]->byte_size() : 0);
            BoundQuery q;
            q.dtype = spec.dtype;
            q.runmeta = &meta;
            q.dataset = dataset;
            // Chunks this task already resolved (inputs, extra reads) answer
            // first, so bounds also work for fields produced by the plan.
            q.estimate_bytes = [this, &t](const ChunkId& id) -> std::uint64_t {
              for (std::size_t r = 0; r < t.read_ids.size(); ++r) {
                if (t.read_ids[r] == id && t.reads[r]) return t.reads[r]->byte_size();
              }
              return dataset != nullptr ? dataset->estimate_chunk_bytes(id) : 0;
            };
            q.step = tm.domain.step;
            q.level = tm.domain.level;
            q.block = t.block;
            q.output_index = static_cast<int>(o);
            q.input_bytes = sizes;
            q.params = &tm.params;
            cap = info.entry->bound(q);
            break;
          }
        }
        if (!cap) return unresolved("the dynamic upper bound cannot be evaluated");
        return Buffer::allocate_dynamic(spec.dtype, *cap, spec.init);
      }
    }
    return unresolved("unknown shape");
  }

  void finalize_output(const TaskTemplate& tm, const BufferPtr& allocated, BufferPtr& out) {
    if (!out) fail(ErrorKind::kernel, "kernel " + tm.kernel + " left an output unset");
    if (allocated->is_dynamic()) {
      if (out != allocated) fail(ErrorKind::kernel, "kernel " + tm.kernel + " replaced a dynamic output");
      if (!out->is_committed()) fail(ErrorKind::kernel, "dynamic kernel output was not committed: " + tm.kernel);
      return;
    }
    const Descriptor& a = allocated->descriptor();
    const Descriptor& b = out->descriptor();
    if (a.scalar != b.scalar || a.rank != b.rank || a.extents != b.extents) {
      fail(ErrorKind::kernel, "kernel " + tm.kernel + " changed an output from " + a.to_string() + " to " + b.to_string() +
                                  " (ALLOC-8)");
    }
    b.validate(out->byte_size());
  }

  void execute(Task* t, int worker) {
    if (t->empty_group) return;
    const TemplateInfo& info = infos[static_cast<std::size_t>(t->stage)][static_cast<std::size_t>(t->tmpl)];
    const TaskTemplate& tm = *info.tmpl;
    EventLog* log = opt.event_log;
    TaskEvent ev;
    if (log != nullptr) {
      ev.run = opt.run_id;
      ev.stage = t->stage;
      ev.template_index = t->tmpl;
      ev.block = t->block;
      ev.name = tm.name;
      ev.kernel = tm.kernel;
      ev.plane = plane_name(tm.plane);
      ev.step = tm.domain.step;
      ev.level = tm.domain.level;
      ev.worker = worker;
      ev.status = "start";
      ev.start = EventLog::now();
      log->task(ev);
    }
    if (t->error) {
      // Failed while resolving its reads: still one start and one terminal
      // event per task (EVT-4).
      if (log != nullptr) {
        ev.status = "error";
        ev.end = EventLog::now();
        log->task(ev);
      }
      return;
    }
    try {
      if (!info.entry->implemented) {
        fail(ErrorKind::unsupported, "kernel " + tm.kernel + " is not implemented in this build");
      }
      for (std::uint32_t r : t->to_load) {
        ConstBufferPtr v;
        std::optional<IndexBox> cells;
        if (r < t->n_inputs && tm.plane == Plane::chunk && info.entry->input_window != nullptr) {
          InputWindowQuery q;
          q.runmeta = &meta;
          q.level = info.level;
          q.step = tm.domain.step;
          q.level_index = tm.domain.level;
          q.block = t->block;
          q.input = r;
          q.params = &tm.params;
          // Only a read of the task's own block at its own level has that box.
          const ChunkId& rid = t->read_ids[r];
          if (rid.step == tm.domain.step && rid.level == tm.domain.level && rid.block == t->block) {
            cells = info.entry->input_window(q);
          }
        }
        if (const SpillRecord* rec = unspilled(*t, r)) {
          v = store.spill_area()->read(*rec);
        } else if (cells) {
          v = dataset->get_chunk_window(t->read_ids[r], *cells);
          t->partial.push_back(r);
        } else {
          v = dataset->get_chunk(t->read_ids[r]);
        }
        if (!v) {
          fail(ErrorKind::not_found, "chunk is not available from run dataset or planned outputs: " + t->read_ids[r].to_string());
        }
        t->reads[r] = std::move(v);
      }
      t->outputs.resize(tm.outputs.size());
      std::vector<BufferPtr> allocated(tm.outputs.size());
      for (std::size_t o = 0; o < tm.outputs.size(); ++o) {
        allocated[o] = allocate_output(info, *t, o);
        t->outputs[o] = allocated[o];
      }
      std::vector<NeighborCollection> neighbors;
      if (!t->neighbor_slots.empty() || (tm.deps.kind == DepKind::face_neighbors)) {
        neighbors = assemble_neighbors(info.halo_inputs, tm.deps, t->neighbor_slots,
                                       std::span(t->reads).subspan(t->n_inputs, t->n_base - t->n_inputs));
      }
      KernelContext ctx;
      ctx.kernel = tm.kernel;
      ctx.runmeta = &meta;
      ctx.level_meta = info.level;
      ctx.step = tm.domain.step;
      ctx.level = tm.domain.level;
      ctx.block = t->block;
      ctx.inputs = std::span<const ConstBufferPtr>(t->reads.data(), t->n_inputs);
      ctx.neighbors = neighbors;
      ctx.outputs = t->outputs;
      ctx.params = &tm.params;
      ctx.covered = info.covered;
      ctx.dataset = dataset;
      ctx.extra_ids = std::span<const ChunkId>(t->read_ids).subspan(t->n_base);
      ctx.extra_chunks = std::span<const ConstBufferPtr>(t->reads).subspan(t->n_base);
      ctx.helpers = this;
      const double k0 = ins.task_seconds != nullptr ? clock_now() : 0.0;
      info.entry->fn(ctx);
      for (std::size_t o = 0; o < tm.outputs.size(); ++o) finalize_output(tm, allocated[o], t->outputs[o]);
      if (ins.task_seconds != nullptr) {
        ins.task_seconds->with({tm.kernel}).observe(clock_now() - k0);
        std::uint64_t in = 0, out = 0;
        for (std::uint32_t r : t->to_load) in += t->reads[r] ? t->reads[r]->byte_size() : 0;
        for (const auto& o : t->outputs) out += o ? o->byte_size() : 0;
        ins.stream_in->add(static_cast<double>(in));
        ins.stream_out->add(static_cast<double>(out));
      }
    } catch (const Error& e) {
      t->error = std::make_exception_ptr(
          Error(e.kind(), where(plan, t->stage, t->tmpl) + " block " + std::to_string(t->block) + ": " + e.what()));
    } catch (const std::exception& e) {
      t->error = std::make_exception_ptr(Error(ErrorKind::internal, where(plan, t->stage, t->tmpl) + " block " +
                                                                        std::to_string(t->block) + ": " + e.what()));
    }
    if (log != nullptr) {
      ev.status = t->error ? "error" : "end";
      ev.end = EventLog::now();
      log->task(ev);
    }
  }

  // Runs one part of a job (mu held on entry and exit).
  void run_part(std::unique_lock<std::mutex>& lk, HelpJob& job) {
    const std::size_t part = job.next++;
    if (job.next == job.parts) help.erase(std::find(help.begin(), help.end(), &job));
    lk.unlock();
    std::exception_ptr error;
    try {
      (*job.fn)(part);
    } catch (...) {
      error = std::current_exception();
    }
    lk.lock();
    if (error && !job.error) job.error = error;
    if (++job.done == job.parts) help_cv.notify_all();
  }

  void run(std::size_t parts, const std::function<void(std::size_t)>& fn) override {
    // Posted even when no thread is idle yet: one that frees up (or starts)
    // takes a part before its next task; parts nobody took run here.
    HelpJob job;
    job.fn = &fn;
    job.parts = parts;
    std::unique_lock lk(mu);
    if (threads > 1) {
      help.push_back(&job);
      if (idle_workers > 0) cv.notify_all();
    } else {
      job.next = parts;  // nobody to help: run every part here
      lk.unlock();
      for (std::size_t p = 0; p < parts; ++p) fn(p);
      return;
    }
    while (job.next < job.parts) run_part(lk, job);
    help_cv.wait(lk, [&] { return job.done == job.parts; });
    if (job.error) std::rethrow_exception(job.error);
  }

  void worker_loop(int worker) {
    std::unique_lock lk(mu);
    for (;;) {
      if (!help.empty()) {
        run_part(lk, *help.front());
        continue;
      }
      Task* t = next_task();
      if (t != nullptr) {
        ++running;
        update_peaks();
        if (ins.queue_wait != nullptr && t->ready_at > 0) ins.queue_wait->observe(clock_now() - t->ready_at);
        lk.unlock();
        execute(t, worker);
        lk.lock();
        --running;
        complete(t, worker);
        if (idle_workers > 0 && (!runnable.empty() || !active.empty() || finished())) cv.notify_all();
        continue;
      }
      fail_stalled();
      if (finished()) {
        cv.notify_all();
        return;
      }
      ++idle_workers;
      if (opt.memory_cap > 0 && link != nullptr) {
        cv.wait_for(lk, std::chrono::milliseconds(20));  // queued sends release memory without a wakeup
      } else {
        cv.wait(lk);
      }
      --idle_workers;
    }
  }

  RunStats run() {
    const auto t0 = std::chrono::steady_clock::now();
    threads = opt.threads > 0 ? opt.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    window = opt.max_active_tasks > 0 ? opt.max_active_tasks : static_cast<std::size_t>(threads);
    window = std::max<std::size_t>(window, 1);
    link = opt.link;
    if (link != nullptr) {
      me = link->rank();
      world = link->world_size();
    } else if (opt.world_size != 1) {
      fail(ErrorKind::invalid_argument, "world size " + std::to_string(opt.world_size) +
                                            " needs a rank link (join the job's other ranks first)");
    }
    init_metrics();
    build_indexes();
    local_done_at.assign(plan.stages.size(), 0.0);
    {
      std::lock_guard lk(mu);
      for (auto& st : stages) st.sent.assign(static_cast<std::size_t>(world), 0);
      for (int s : prepared.topo_order) {
        if (stages[static_cast<std::size_t>(s)].remaining_after == 0) activate(s);
      }
      update_peaks();
    }
    struct Detach {
      RankLink* link;
      ~Detach() {
        if (link != nullptr) link->attach(nullptr);
      }
    } detach{link};
    if (link != nullptr) {
      link_events.impl = this;
      link->attach(&link_events);  // replays chunks that arrived before this rank started
    }
    std::vector<std::thread> pool;
    for (int w = 1; w < threads; ++w) pool.emplace_back([this, w] { worker_loop(w); });
    worker_loop(0);
    for (auto& th : pool) th.join();
    if (link != nullptr) link->attach(nullptr);
    // Parked tasks of a failed run never resume; their waiters must not
    // outlive this executor in a store that later runs reuse.
    store.clear_waiters();
    if (first_error) std::rethrow_exception(first_error);
    if (link != nullptr) {
      const auto totals = link->finish_run({stats.tasks_total, stats.tasks_run, stats.tasks_empty});
      stats.tasks_total = totals.at(0);
      stats.tasks_run = totals.at(1);
      stats.tasks_empty = totals.at(2);
    }
    stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    stats.peak_store_bytes = store.peak_bytes();
    stats.produced = retained;
    return stats;
  }
};

Executor::Executor(const PreparedPlan& plan, const RunMeta& runmeta, Dataset* dataset, ChunkStore& store,
                   ExecOptions options)
    : impl_(std::make_unique<Impl>(plan, runmeta, dataset, store, std::move(options))) {}

Executor::~Executor() = default;

RunStats Executor::run() { return impl_->run(); }

RunStats Session::run(const PreparedPlan& plan, const RunMeta& runmeta, ExecOptions options) {
  {
    std::unique_lock lock(retrieval_mutex_);  // waits for retrievals in progress
    if (running_.load()) fail(ErrorKind::invalid_argument, "runtime run is already in progress");
    running_.store(true);
  }
  struct Reset {
    std::atomic<bool>& flag;
    ~Reset() { flag.store(false); }
  } reset{running_};
  // A failed run's outputs must not become retrievable (LIFE-5): remember
  // what the store held and put it back on failure.
  std::vector<std::pair<ChunkId, ConstBufferPtr>> before;
  before.reserve(store_.size());
  store_.for_each([&](const ChunkId& id, const ConstBufferPtr& v) { before.emplace_back(id, v); });
  try {
    Executor exec(plan, runmeta, dataset_.get(), store_, std::move(options));
    return exec.run();
  } catch (...) {
    auto area = store_.spill_area_shared();
    store_ = ChunkStore();
    store_.set_spill_area(std::move(area));
    for (auto& [id, v] : before) store_.put(id, std::move(v));
    throw;
  }
}

ConstBufferPtr Session::retrieve(const ChunkId& id) const {
  std::shared_lock lock(retrieval_mutex_);
  if (running_.load()) fail(ErrorKind::invalid_argument, "output retrieval is not allowed while a plan run is in progress");
  if (ConstBufferPtr v = store_.load(id)) return v;  // resident or spilled
  if (dataset_ && dataset_->has_chunk(id)) return dataset_->get_chunk(id);
  fail(ErrorKind::not_found, "chunk is not available from retained outputs or dataset: " + id.to_string());
}

}  // namespace kangaroo
