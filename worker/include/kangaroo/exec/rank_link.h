// What the executor needs from the other ranks of a job (seed §4, OWN-1..4).
//
// Chunks move by producer push: a rank that publishes a chunk sends it to
// every rank whose tasks read it (computed from the plan, which every rank
// holds), and result chunks to rank 0. Stage barriers are driven by rank 0:
// each rank reports a stage as locally done together with how many chunks of
// that stage it sent to each rank; rank 0 answers, once every rank reported,
// with the number of chunks each rank must have received before it may treat
// the stage as done. This makes the barrier independent of message ordering
// between different pairs of ranks.
//
// The implementation (kangaroo/net/cluster.h) keeps sockets and UCX out of
// the runtime.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/chunk_id.h"

namespace kangaroo {

// Delivered from the link's own thread, never while the link holds a lock
// the caller could be waiting for.
class RankEvents {
 public:
  virtual ~RankEvents() = default;
  virtual void on_chunk(int from, const ChunkId& id, ConstBufferPtr value, std::int32_t stage) = 0;
  // Every rank finished `stage`; `expected` chunks of it are addressed here.
  virtual void on_stage_done(std::int32_t stage, std::uint64_t expected) = 0;
  // The job failed elsewhere (a task error on another rank, or a rank gone).
  virtual void on_abort(const std::string& why) = 0;
};

// Per-peer traffic, for metrics.
struct PeerTraffic {
  std::uint64_t chunks_sent = 0, bytes_sent = 0;
  std::uint64_t chunks_received = 0, bytes_received = 0;
  double send_seconds = 0.0;  // post to completion, summed over chunks
};

class RankLink {
 public:
  virtual ~RankLink() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Starts delivering events (those that arrived earlier are replayed);
  // nullptr stops delivery.
  virtual void attach(RankEvents* events) = 0;
  // Queues a chunk for `peer`; never blocks. The buffer is kept alive until
  // the send completes.
  virtual void push(int peer, const ChunkId& id, ConstBufferPtr value, std::int32_t stage) = 0;
  // This rank has run all its tasks of `stage`; `sent[r]` chunks of the
  // stage were pushed to rank r.
  virtual void stage_done_locally(std::int32_t stage, std::vector<std::uint64_t> sent) = 0;
  // A task failed here; the other ranks are told to stop.
  virtual void report_error(const std::string& what) = 0;
  // Final barrier after the last stage: returns once every rank finished and
  // all this rank's sends completed; throws Error when the job was aborted.
  // `counters` (same length on every rank) come back summed over all ranks
  // on rank 0 and unchanged elsewhere.
  virtual std::vector<std::uint64_t> finish_run(std::vector<std::uint64_t> counters) = 0;
  virtual std::vector<PeerTraffic> traffic() const = 0;
  // Payload bytes pushed and not yet sent (held for the memory cap).
  virtual std::uint64_t bytes_queued() const = 0;
  virtual std::string description() const = 0;
};

}  // namespace kangaroo
