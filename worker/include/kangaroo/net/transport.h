// Chunk transport between ranks (seed §4.1, §4.3). One Transport per rank:
// it publishes an opaque address, connects to its peers' addresses (exchanged
// out of band: flags, environment, or the job launcher), and moves chunks as
// one message each: a compact binary header (chunk identity + descriptor,
// WireHeader) followed by the payload, sent from and received into the
// buffers' own memory (no staging copy). The UCX implementation keeps UCX
// types out of this header.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/chunk_id.h"

namespace kangaroo {

// Wire header: fixed 152 bytes, little-endian fields at fixed offsets: chunk
// identity, descriptor, payload size, the buffer's nonzero-rectangle hint (so
// a partial image keeps its footprint across ranks) and its route: the
// sending rank, the sender's per-receiver sequence number (the receiver
// hands a peer's chunks out in the order they were posted) and `aux`.
constexpr std::size_t kWireHeaderBytes = 152;
struct WireRoute {
  std::uint32_t seq = 0;
  std::uint32_t source = 0;
  std::uint32_t aux = 0;
};
struct WireChunk {
  ChunkId id;
  Descriptor desc;
  std::uint64_t nbytes = 0;
  std::optional<NonzeroRect> nonzero;
  WireRoute route;
};
void encode_wire_header(const ChunkId& id, const Buffer& buffer, std::byte* out, const WireRoute& route = {});
// Throws Error(buffer) on a bad magic/version or an inconsistent descriptor.
WireChunk decode_wire_header(const std::byte* in);

constexpr std::uint64_t kDefaultReceiveWindow = 64ull << 20;
// The receive window a rank uses: KANGAROO_RECEIVE_WINDOW bytes when the
// environment sets a positive value, else `configured`.
std::uint64_t effective_receive_window(std::uint64_t configured);

// From a UCX endpoint's description (ucp_ep_print_info), whether its bulk
// lanes ("rma_bw") all copy through shared memory (".../memory" transports,
// e.g. "lane[1]:  2:cma/memory.0 md[2] -> ... rma_bw#0"). False when the text
// names no bulk lane.
bool bulk_lanes_copy_through_shared_memory(std::string_view endpoint_info);

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Opaque bytes another rank passes to connect().
  virtual std::string address() const = 0;
  virtual void connect(int peer, const std::string& address) = 0;

  // Posts a chunk to `peer` without waiting; `buffer` is kept alive until the
  // send completes. `aux` travels with the message (the producing stage, for
  // the multi-rank runtime). Returns a ticket for wait() / test().
  virtual std::uint64_t post_send(int peer, const ChunkId& id, ConstBufferPtr buffer, std::uint32_t aux = 0) = 0;
  // Progresses until the send of `ticket` has completed (throws Error naming
  // the peer on failure).
  virtual void wait(std::uint64_t ticket) = 0;
  // Non-blocking: true once the send of `ticket` completed (the ticket is
  // then retired); throws like wait().
  virtual bool test(std::uint64_t ticket) = 0;
  void send(int peer, const ChunkId& id, ConstBufferPtr buffer) { wait(post_send(peer, id, std::move(buffer))); }
  // Receives the next chunk from `peer` (blocking, progressing the transport).
  virtual ConstBufferPtr receive(int peer, ChunkId& id) = 0;
  // Receives a chunk from any peer when one has arrived; nullptr otherwise.
  virtual ConstBufferPtr try_receive(int& peer, ChunkId& id, std::uint32_t& aux) = 0;
  // Payload bytes whose receives may be posted ahead of the caller taking
  // the chunks (one chunk is always allowed). Within it the transport posts
  // two chunks ahead on shared memory, more while they total under 1 MiB,
  // and four over a network, more while under 4 MiB (bench/README.md).
  // These buffers are outside a memory cap's accounting. Default
  // kDefaultReceiveWindow, or KANGAROO_RECEIVE_WINDOW bytes from the
  // environment.
  virtual void set_receive_window(std::uint64_t bytes) = 0;
  // Drives communication; true when it did something.
  virtual bool progress() = 0;
  // A file descriptor that becomes readable when the transport has work,
  // once arm() returned true; arm() returns false when work is already
  // pending (progress again before sleeping).
  virtual int event_fd() = 0;
  virtual bool arm() = 0;
  // Transport in use, e.g. "tcp" or "sysv,cma" (for reports).
  virtual std::string description() const = 0;
};

// Out-of-band address swap over a connected stream socket or pipe pair (a
// launcher's socketpair between local ranks): writes `mine` length-prefixed,
// reads the peer's. Throws Error(io) when the stream breaks.
std::string exchange_address(int fd, const std::string& mine);

// UCX active-message transport. Throws Error(io) when UCX cannot start.
std::unique_ptr<Transport> make_ucx_transport(int rank, int world_size);

}  // namespace kangaroo
