// Joining the ranks of one job (seed §4.1, issue: multi-rank execution).
//
// Rank 0 is the coordinator: it listens on a TCP address, every other rank
// connects to it and sends its UCX worker address, and rank 0 answers with
// the table of all addresses. The same TCP connections then carry the small
// control messages (stage barriers, errors, the final barrier); chunks go
// over UCX. A rank that dies closes its control connection, which rank 0
// sees at once and turns into a job failure naming that rank.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kangaroo/exec/rank_link.h"
#include "kangaroo/net/transport.h"

namespace kangaroo {

struct ClusterOptions {
  int rank = 0;
  int world_size = 1;
  std::string coordinator;  // HOST:PORT of rank 0's control listener
  int listen_fd = -1;       // rank 0: an already listening socket (local launcher)
  double connect_timeout_s = 60.0;
  // A peer silent for this long (no control message, heartbeats every
  // second) fails the job: it is hung or cut off. 0: never.
  double heartbeat_timeout_s = 60.0;
  // Transport::set_receive_window for this rank.
  std::uint64_t receive_window = kDefaultReceiveWindow;
  // Called while rank 0 waits for the others to join; may throw to give up
  // early (a launcher whose child rank already exited).
  std::function<void()> while_waiting;
};

// Control messages: [u32 body length][u8 kind][fields], little-endian.
enum class ControlKind : std::uint8_t {
  hello = 1,       // rank, world_size, text = UCX address
  table = 2,       // texts = every rank's UCX address
  local_done = 3,  // stage, counts = chunks sent per rank
  stage_done = 4,  // stage, counts = {chunks expected here}
  error = 5,       // text
  abort = 6,       // text
  finished = 7,    // counts = counters to sum on rank 0
  exit = 8,
  heartbeat = 9,   // nothing else to say; proves the sender's link thread runs
};

struct ControlMessage {
  ControlKind kind = ControlKind::hello;
  std::int32_t rank = 0;
  std::int32_t world_size = 0;
  std::int32_t stage = 0;
  std::vector<std::uint64_t> counts;
  std::string text;
  std::vector<std::string> texts;
};

constexpr std::uint32_t kMaxControlBody = 16u << 20;
// Whole frame, length prefix included.
std::string encode_control(const ControlMessage& m);
// Decodes one body (without the length prefix); throws Error(io) naming
// what is wrong.
ControlMessage decode_control(std::span<const std::byte> body);

// Binds HOST:PORT (PORT 0 picks a free one) and listens; returns the fd and
// the bound port. Rank 0's control listener and the metrics endpoint.
std::pair<int, int> listen_tcp(const std::string& host_port);

// Connects this rank to the others (blocking until all joined or the
// timeout passes) and returns the link the executor uses.
std::unique_ptr<RankLink> join_cluster(const ClusterOptions& options);

}  // namespace kangaroo
