#include <ucp/api/ucp.h>
#include <unistd.h>

#include <cerrno>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kangaroo/core/error.h"
#include "kangaroo/net/transport.h"

namespace kangaroo {
namespace {

constexpr std::uint32_t kMagic = 0x4b434e4b;  // "KNCK"
constexpr std::uint16_t kWireVersion = 4;

template <class T>
void put(std::byte* out, std::size_t at, T v) {
  std::memcpy(out + at, &v, sizeof v);
}
template <class T>
T get(const std::byte* in, std::size_t at) {
  T v;
  std::memcpy(&v, in + at, sizeof v);
  return v;
}

// One place that turns UCX statuses into errors (with what was attempted).
void ucx_check(ucs_status_t status, const std::string& what) {
  if (status != UCS_OK) fail(ErrorKind::io, what + ": " + ucs_status_string(status));
}

// A chunk is one UCX active message: the wire header as the message's user
// header, the payload as its data, sent from the buffer's own memory. Small
// payloads arrive eagerly with the header and are copied out at once; large
// ones announce themselves with the header (UCX's rendezvous request) and
// move only when the receiver posts their destination, so the receiver
// decides, per chunk, when to take the bytes (the receive window). Compared
// with a header message followed by a payload message, the header rides on
// the rendezvous request and the receiver matches nothing.
constexpr unsigned kChunkMessage = 0x4b;

class UcxTransport final : public Transport {
 public:
  UcxTransport(int rank, int world_size) : rank_(rank), world_size_(world_size) {
    if (world_size < 1 || rank < 0 || rank >= world_size || world_size > (1 << 24)) {
      fail(ErrorKind::invalid_argument,
           "rank " + std::to_string(rank) + " is not inside a world of " + std::to_string(world_size));
    }
    ucp_config_t* config = nullptr;
    ucx_check(ucp_config_read(nullptr, nullptr, &config), "reading the UCX configuration");
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    const ucs_status_t st = ucp_init(&params, config, &context_);
    ucp_config_release(config);
    ucx_check(st, "starting UCX");
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    if (const ucs_status_t ws = ucp_worker_create(context_, &wp, &worker_); ws != UCS_OK) {
      ucp_cleanup(context_);
      ucx_check(ws, "creating the UCX worker");
    }
    try {
      ucp_worker_attr_t attr{};
      attr.field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
      ucx_check(ucp_worker_query(worker_, &attr), "querying the UCX worker");
      if (attr.max_am_header < kWireHeaderBytes) {
        fail(ErrorKind::io, "UCX carries active-message headers of at most " + std::to_string(attr.max_am_header) +
                                " bytes; chunk headers take " + std::to_string(kWireHeaderBytes));
      }
      ucp_am_handler_param_t hp{};
      hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS | UCP_AM_HANDLER_PARAM_FIELD_CB |
                      UCP_AM_HANDLER_PARAM_FIELD_ARG;
      hp.id = kChunkMessage;
      hp.flags = UCP_AM_FLAG_WHOLE_MSG;  // one call per chunk, never per fragment
      hp.cb = &UcxTransport::on_chunk;
      hp.arg = this;
      ucx_check(ucp_worker_set_am_recv_handler(worker_, &hp), "installing the chunk message handler");
    } catch (...) {
      ucp_worker_destroy(worker_);
      ucp_cleanup(context_);
      throw;
    }
    eps_.assign(static_cast<std::size_t>(world_size), nullptr);
    send_seq_.assign(static_cast<std::size_t>(world_size), 0);
    next_seq_.assign(static_cast<std::size_t>(world_size), 0);
    receive_window_ = effective_receive_window(kDefaultReceiveWindow);
    failed_.assign(static_cast<std::size_t>(world_size), UCS_OK);
  }

  ~UcxTransport() override {
    for (auto& in : incoming_) release(in.request);
    for (auto& [ticket, p] : pending_) release(p.request);
    for (auto* ep : eps_) {
      if (ep == nullptr) continue;
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      void* req = ucp_ep_close_nbx(ep, &p);
      if (UCS_PTR_IS_PTR(req)) {
        while (ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(worker_);
        ucp_request_free(req);
      }
    }
    // Rendezvous requests never taken: UCX keeps them until released.
    for (auto& a : arrivals_) {
      if (a.descriptor != nullptr) ucp_am_data_release(worker_, a.descriptor);
    }
    ucp_worker_destroy(worker_);
    ucp_cleanup(context_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  std::string address() const override {
    ucp_address_t* addr = nullptr;
    std::size_t len = 0;
    ucx_check(ucp_worker_get_address(worker_, &addr, &len), "reading this rank's UCX address");
    std::string out(reinterpret_cast<const char*>(addr), len);
    ucp_worker_release_address(worker_, addr);
    return out;
  }

  void connect(int peer, const std::string& address) override {
    check_peer(peer);
    if (address.empty()) fail(ErrorKind::invalid_argument, "empty address for rank " + std::to_string(peer));
    // Peer error handling would restrict UCX to transports that detect peer
    // failure, which excludes shared memory; a dead rank is detected by the
    // job driver instead. The error handler still records what UCX reports.
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = reinterpret_cast<const ucp_address_t*>(address.data());
    ep.err_handler.cb = &UcxTransport::on_peer_error;
    ep.err_handler.arg = &peer_args_.emplace_back(PeerArg{this, peer});
    ucx_check(ucp_ep_create(worker_, &ep, &eps_[static_cast<std::size_t>(peer)]),
              "connecting to rank " + std::to_string(peer));
    if (!copies_through_shared_memory(eps_[static_cast<std::size_t>(peer)])) {
      ahead_chunks_ = kNetworkAheadChunks;
      ahead_bytes_ = kNetworkAheadBytes;
    }
  }

  std::uint64_t post_send(int peer, const ChunkId& id, ConstBufferPtr buffer, std::uint32_t aux) override {
    check_peer(peer);
    ucp_ep_h ep = eps_[static_cast<std::size_t>(peer)];
    if (ep == nullptr) fail(ErrorKind::invalid_argument, "rank " + std::to_string(peer) + " is not connected");
    raise_if_failed(peer);
    const std::uint64_t ticket = next_ticket_++;
    Pending& p = pending_[ticket];
    p.peer = peer;
    p.buffer = std::move(buffer);
    const auto payload = p.buffer->bytes();
    const WireRoute route{send_seq_[static_cast<std::size_t>(peer)]++, static_cast<std::uint32_t>(rank_), aux};
    encode_wire_header(id, *p.buffer, p.header, route);
    ucp_request_param_t prm{};
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
    prm.datatype = ucp_dt_make_contig(1);
    // The header stays in `p` until the send completes: UCX 1.13 may read it
    // after this call returns.
    void* req = ucp_am_send_nbx(ep, kChunkMessage, p.header, kWireHeaderBytes, payload.data(), payload.size(), &prm);
    if (UCS_PTR_IS_ERR(req)) {
      pending_.erase(ticket);
      ucx_check(UCS_PTR_STATUS(req), "sending chunk " + id.to_string() + " to rank " + std::to_string(peer));
    }
    p.request = req;  // nullptr: completed in place
    return ticket;
  }

  void wait(std::uint64_t ticket) override {
    while (!test(ticket)) ucp_worker_progress(worker_);
  }

  bool test(std::uint64_t ticket) override {
    auto it = pending_.find(ticket);
    if (it == pending_.end()) return true;
    Pending& p = it->second;
    ucs_status_t st = UCS_OK;
    if (p.request != nullptr) {
      st = ucp_request_check_status(p.request);
      if (st == UCS_INPROGRESS) return false;
      ucp_request_free(p.request);
    }
    const int peer = p.peer;
    pending_.erase(it);
    if (st != UCS_OK) {
      raise_if_failed(peer);
      ucx_check(st, "sending to rank " + std::to_string(peer));
    }
    return true;
  }

  ConstBufferPtr receive(int peer, ChunkId& id) override {
    check_peer(peer);
    for (;;) {
      pump(peer);
      for (auto it = incoming_.begin(); it != incoming_.end(); ++it) {
        if (it->peer() != peer) continue;
        if (!finished(*it)) break;
        std::uint32_t aux = 0;
        return pop(it, id, aux);
      }
      raise_if_failed(peer);
      ucp_worker_progress(worker_);
    }
  }

  ConstBufferPtr try_receive(int& peer, ChunkId& id, std::uint32_t& aux) override {
    pump(-1);
    if (incoming_.empty() || !finished(incoming_.front())) return nullptr;
    peer = incoming_.front().peer();
    return pop(incoming_.begin(), id, aux);
  }

  bool progress() override { return ucp_worker_progress(worker_) != 0; }

  void set_receive_window(std::uint64_t bytes) override { receive_window_ = bytes; }

  int event_fd() override {
    if (efd_ < 0) ucx_check(ucp_worker_get_efd(worker_, &efd_), "reading the UCX wakeup descriptor");
    return efd_;
  }

  bool arm() override {
    const ucs_status_t st = ucp_worker_arm(worker_);
    if (st == UCS_ERR_BUSY) return false;
    ucx_check(st, "arming the UCX wakeup descriptor");
    return true;
  }

  std::string description() const override {
    const char* tls = std::getenv("UCX_TLS");
    return std::string("ucx ") + (tls != nullptr ? tls : "(default transports)");
  }

 private:
  // A chunk whose header has arrived: its payload is either copied out
  // already (eager) or waits, as UCX's rendezvous descriptor, for its
  // destination.
  struct Arrival {
    WireChunk chunk;
    std::shared_ptr<Storage> storage;  // eager payload
    void* descriptor = nullptr;        // rendezvous payload
  };
  // A chunk handed to the caller in order: its payload is in `storage` once
  // `request` (the rendezvous receive, if any) completes.
  struct Incoming {
    WireChunk chunk;
    int peer() const { return static_cast<int>(chunk.route.source); }
    std::shared_ptr<Storage> storage;
    void* request = nullptr;
  };
  struct Pending {
    int peer = -1;
    void* request = nullptr;
    ConstBufferPtr buffer;
    std::byte header[kWireHeaderBytes];
  };
  struct PeerArg {
    UcxTransport* self;
    int peer;
  };

  // Called by UCX inside ucp_worker_progress for every chunk message. No
  // exception may cross into UCX: a malformed message is kept as an error
  // that the next receive raises.
  static ucs_status_t on_chunk(void* arg, const void* header, std::size_t header_length, void* data,
                               std::size_t length, const ucp_am_recv_param_t* param) noexcept {
    auto* self = static_cast<UcxTransport*>(arg);
    try {
      if (header_length != kWireHeaderBytes) {
        fail(ErrorKind::buffer, "message with a " + std::to_string(header_length) + "-byte header is not a chunk");
      }
      Arrival a;
      a.chunk = decode_wire_header(static_cast<const std::byte*>(header));
      const std::uint32_t source = a.chunk.route.source;
      if (source >= static_cast<std::uint32_t>(self->world_size_)) {
        fail(ErrorKind::buffer, "chunk message from rank " + std::to_string(source) + ", outside a world of " +
                                    std::to_string(self->world_size_));
      }
      if (length != a.chunk.nbytes) {
        fail(ErrorKind::buffer, "chunk message from rank " + std::to_string(source) + " carries " +
                                    std::to_string(length) + " bytes where its header says " +
                                    std::to_string(a.chunk.nbytes));
      }
      ucs_status_t keep = UCS_OK;
      if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0) {
        a.descriptor = data;
        keep = UCS_INPROGRESS;
      } else {
        a.storage = Storage::allocate_pooled(length);
        if (length > 0) std::memcpy(a.storage->data(), data, length);
      }
      self->arrivals_.push_back(std::move(a));
      return keep;
    } catch (const std::exception& e) {
      if (self->bad_message_.empty()) self->bad_message_ = e.what();
    } catch (...) {
      if (self->bad_message_.empty()) self->bad_message_ = "unreadable chunk message";
    }
    return UCS_OK;  // a dropped rendezvous completes the sender's request
  }

  // Moves arrived chunks, each peer's in the order it sent them, to the
  // incoming queue (from `peer` only when peer >= 0) and starts their
  // rendezvous receives ahead of the caller, so the next chunk moves while
  // the caller handles the last. Bounded in chunks and bytes: ahead_chunks_
  // chunks, more while they total less than ahead_bytes_, never more than
  // the receive window; one chunk of the awaited peer is always allowed. On
  // shared memory the receiver itself copies each payload, so more chunks
  // ahead add no transfer in parallel, only destination buffers that push
  // the copies out of the processor's caches; over a network each chunk's
  // rendezvous costs a round trip, which a few more chunks ahead hide
  // (bench/README.md).
  void pump(int peer) {
    if (!bad_message_.empty()) fail(ErrorKind::buffer, bad_message_);
    constexpr std::size_t kMaxChunks = 32;
    auto room = [&] {
      if (incoming_.size() >= kMaxChunks || incoming_bytes_ >= receive_window_) return !has_incoming(peer);
      return incoming_.size() < ahead_chunks_ || incoming_bytes_ < ahead_bytes_ || !has_incoming(peer);
    };
    while (room()) {
      auto next = arrivals_.begin();
      for (; next != arrivals_.end(); ++next) {
        const int from = static_cast<int>(next->chunk.route.source);
        if ((peer < 0 || from == peer) && next->chunk.route.seq == next_seq_[static_cast<std::size_t>(from)]) break;
      }
      if (next == arrivals_.end()) return;
      Arrival a = std::move(*next);
      arrivals_.erase(next);
      Incoming in;
      in.chunk = a.chunk;
      ++next_seq_[static_cast<std::size_t>(in.peer())];
      if (a.descriptor != nullptr) {
        in.storage = Storage::allocate_pooled(in.chunk.nbytes);
        ucp_request_param_t prm{};
        prm.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
        prm.datatype = ucp_dt_make_contig(1);
        void* req = ucp_am_recv_data_nbx(worker_, a.descriptor, in.storage->data(), in.chunk.nbytes, &prm);
        if (UCS_PTR_IS_ERR(req)) ucx_check(UCS_PTR_STATUS(req), "receiving from rank " + std::to_string(in.peer()));
        in.request = req;
      } else {
        in.storage = std::move(a.storage);
      }
      incoming_bytes_ += in.chunk.nbytes;
      incoming_.push_back(std::move(in));
    }
  }

  bool has_incoming(int peer) const {
    if (peer < 0) return !incoming_.empty();
    for (const auto& in : incoming_) {
      if (in.peer() == peer) return true;
    }
    return false;
  }

  bool finished(Incoming& in) {
    if (in.request == nullptr) return true;
    const ucs_status_t st = ucp_request_check_status(in.request);
    if (st == UCS_INPROGRESS) return false;
    ucp_request_free(in.request);
    in.request = nullptr;
    ucx_check(st, "receiving from rank " + std::to_string(in.peer()));
    return true;
  }

  ConstBufferPtr pop(std::deque<Incoming>::iterator it, ChunkId& id, std::uint32_t& aux) {
    Incoming in = std::move(*it);
    incoming_.erase(it);
    incoming_bytes_ -= in.chunk.nbytes;
    id = in.chunk.id;
    aux = in.chunk.route.aux;
    auto out = Buffer::wrap(in.chunk.desc, std::move(in.storage), 0, in.chunk.nbytes);
    if (in.chunk.nonzero) out->set_nonzero_rect(*in.chunk.nonzero);
    return out;
  }

  void release(void* request) {
    if (request == nullptr) return;
    ucp_request_cancel(worker_, request);
    ucp_request_free(request);
  }

  static void on_peer_error(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* a = static_cast<PeerArg*>(arg);
    a->self->failed_[static_cast<std::size_t>(a->peer)] = status;
  }
  void check_peer(int peer) const {
    if (peer < 0 || peer >= world_size_) {
      fail(ErrorKind::invalid_argument, "rank " + std::to_string(peer) + " is not inside a world of " +
                                            std::to_string(world_size_));
    }
  }
  void raise_if_failed(int peer) const {
    const ucs_status_t st = failed_[static_cast<std::size_t>(peer)];
    if (st != UCS_OK) {
      fail(ErrorKind::io, "rank " + std::to_string(peer) + " is unreachable: " + ucs_status_string(st));
    }
  }

  // Chunks posted ahead, and the bytes below which more may be: two on
  // shared memory (more only for chunks under 1 MiB), four over a network
  // (more only under 4 MiB in all).
  static constexpr std::size_t kSharedMemoryAheadChunks = 2;
  static constexpr std::uint64_t kSharedMemoryAheadBytes = 1ull << 20;
  static constexpr std::size_t kNetworkAheadChunks = 4;
  static constexpr std::uint64_t kNetworkAheadBytes = 4ull << 20;

  // Whether UCX moves this endpoint's large messages by a cross-memory copy,
  // read from the endpoint's description (UCX 1.13 has no query for an
  // endpoint's transports). Anything it cannot read counts as a network.
  static bool copies_through_shared_memory(ucp_ep_h ep) {
    char* text = nullptr;
    std::size_t len = 0;
    FILE* f = ::open_memstream(&text, &len);
    if (f == nullptr) return false;
    ucp_ep_print_info(ep, f);
    std::fclose(f);
    const std::string info(text != nullptr ? text : "", len);
    std::free(text);
    return bulk_lanes_copy_through_shared_memory(info);
  }

  int rank_, world_size_;
  std::size_t ahead_chunks_ = kSharedMemoryAheadChunks;
  std::uint64_t ahead_bytes_ = kSharedMemoryAheadBytes;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  std::vector<ucp_ep_h> eps_;
  std::vector<std::uint32_t> send_seq_;  // next sequence number, per receiver
  std::vector<std::uint32_t> next_seq_;  // next sequence number to hand out, per sender
  std::deque<Arrival> arrivals_;
  std::string bad_message_;
  std::deque<Incoming> incoming_;
  std::uint64_t incoming_bytes_ = 0;
  std::uint64_t receive_window_ = kDefaultReceiveWindow;
  std::vector<ucs_status_t> failed_;
  std::deque<PeerArg> peer_args_;  // stable addresses: UCX keeps pointers to them
  std::unordered_map<std::uint64_t, Pending> pending_;
  std::uint64_t next_ticket_ = 1;
  int efd_ = -1;
};

}  // namespace

void encode_wire_header(const ChunkId& id, const Buffer& buffer, std::byte* out, const WireRoute& route) {
  const Descriptor& desc = buffer.descriptor();
  std::memset(out, 0, kWireHeaderBytes);
  put<std::uint32_t>(out, 0, kMagic);
  put<std::uint16_t>(out, 4, kWireVersion);
  put<std::uint8_t>(out, 6, static_cast<std::uint8_t>(desc.scalar));
  put<std::uint8_t>(out, 7, desc.rank);
  put<std::int32_t>(out, 8, id.step);
  put<std::int32_t>(out, 12, id.level);
  put<std::int32_t>(out, 16, id.field);
  put<std::int32_t>(out, 20, id.version);
  put<std::int32_t>(out, 24, id.block);
  put<std::uint64_t>(out, 32, buffer.bytes().size());
  for (int a = 0; a < kMaxRank; ++a) {
    put<std::uint64_t>(out, 40 + 8 * static_cast<std::size_t>(a), desc.extents[static_cast<std::size_t>(a)]);
    put<std::int64_t>(out, 72 + 8 * static_cast<std::size_t>(a), desc.strides[static_cast<std::size_t>(a)]);
  }
  if (const auto& r = buffer.nonzero_rect()) {
    put<std::uint8_t>(out, 28, 1);
    put<std::uint64_t>(out, 104, r->row_begin);
    put<std::uint64_t>(out, 112, r->row_end);
    put<std::uint64_t>(out, 120, r->col_begin);
    put<std::uint64_t>(out, 128, r->col_end);
  }
  put<std::uint32_t>(out, 136, route.seq);
  put<std::uint32_t>(out, 140, route.source);
  put<std::uint32_t>(out, 144, route.aux);
}

WireChunk decode_wire_header(const std::byte* in) {
  if (get<std::uint32_t>(in, 0) != kMagic) fail(ErrorKind::buffer, "chunk message without the chunk header magic");
  if (get<std::uint16_t>(in, 4) != kWireVersion) {
    fail(ErrorKind::buffer, "chunk header version " + std::to_string(get<std::uint16_t>(in, 4)) +
                                " is not supported (expected " + std::to_string(kWireVersion) + ")");
  }
  WireChunk w;
  Descriptor& d = w.desc;
  const auto scalar = get<std::uint8_t>(in, 6);
  if (scalar > static_cast<std::uint8_t>(ScalarType::f64)) fail(ErrorKind::buffer, "chunk header has an unknown dtype");
  d.scalar = static_cast<ScalarType>(scalar);
  d.rank = get<std::uint8_t>(in, 7);
  if (d.rank < 1 || d.rank > kMaxRank) fail(ErrorKind::buffer, "chunk header has rank " + std::to_string(d.rank));
  const auto level = get<std::int32_t>(in, 12);
  if (level < INT16_MIN || level > INT16_MAX) fail(ErrorKind::buffer, "chunk header level out of range");
  w.id = ChunkId{get<std::int32_t>(in, 8), static_cast<std::int16_t>(level), get<std::int32_t>(in, 16),
                 get<std::int32_t>(in, 20), get<std::int32_t>(in, 24)};
  w.nbytes = get<std::uint64_t>(in, 32);
  for (int a = 0; a < kMaxRank; ++a) {
    d.extents[static_cast<std::size_t>(a)] = get<std::uint64_t>(in, 40 + 8 * static_cast<std::size_t>(a));
    d.strides[static_cast<std::size_t>(a)] = get<std::int64_t>(in, 72 + 8 * static_cast<std::size_t>(a));
  }
  d.validate(w.nbytes);
  const auto flags = get<std::uint8_t>(in, 28);
  if (flags > 1) fail(ErrorKind::buffer, "chunk header has unknown flags");
  if (flags == 1) {
    NonzeroRect r{get<std::uint64_t>(in, 104), get<std::uint64_t>(in, 112), get<std::uint64_t>(in, 120),
                  get<std::uint64_t>(in, 128)};
    if (d.rank != 2 || r.row_end < r.row_begin || r.col_end < r.col_begin || r.row_end > d.extents[0] ||
        r.col_end > d.extents[1]) {
      fail(ErrorKind::buffer, "chunk header has a nonzero rectangle outside the chunk");
    }
    w.nonzero = r;
  }
  if (get<std::uint32_t>(in, 148) != 0) fail(ErrorKind::buffer, "chunk header has nonzero reserved bytes");
  w.route = WireRoute{get<std::uint32_t>(in, 136), get<std::uint32_t>(in, 140), get<std::uint32_t>(in, 144)};
  return w;
}

std::string exchange_address(int fd, const std::string& mine) {
  auto write_all = [fd](const void* data, std::size_t n) {
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail(ErrorKind::io, std::string("address exchange: write failed: ") + std::strerror(errno));
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  };
  auto read_all = [fd](void* data, std::size_t n) {
    auto* p = static_cast<char*>(data);
    while (n > 0) {
      const ssize_t r = ::read(fd, p, n);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) fail(ErrorKind::io, "address exchange: the peer closed the stream");
      p += r;
      n -= static_cast<std::size_t>(r);
    }
  };
  const std::uint64_t n = mine.size();
  write_all(&n, sizeof n);
  write_all(mine.data(), mine.size());
  std::uint64_t m = 0;
  read_all(&m, sizeof m);
  if (m == 0 || m > (std::uint64_t{1} << 20)) fail(ErrorKind::io, "address exchange: implausible address length");
  std::string theirs(m, '\0');
  read_all(theirs.data(), m);
  return theirs;
}

std::uint64_t effective_receive_window(std::uint64_t configured) {
  if (const char* w = std::getenv("KANGAROO_RECEIVE_WINDOW")) {
    const unsigned long long v = std::strtoull(w, nullptr, 10);
    if (v > 0) return v;
  }
  return configured;
}

bool bulk_lanes_copy_through_shared_memory(std::string_view endpoint_info) {
  bool bulk_lane = false, shared = true;
  std::size_t at = 0;
  while (at < endpoint_info.size()) {
    std::size_t end = endpoint_info.find('\n', at);
    if (end == std::string_view::npos) end = endpoint_info.size();
    const std::string_view line = endpoint_info.substr(at, end - at);
    if (line.find("lane[") != std::string_view::npos && line.find("rma_bw") != std::string_view::npos) {
      bulk_lane = true;
      shared = shared && line.find("/memory") != std::string_view::npos;
    }
    at = end + 1;
  }
  return bulk_lane && shared;
}

std::unique_ptr<Transport> make_ucx_transport(int rank, int world_size) {
  return std::make_unique<UcxTransport>(rank, world_size);
}

}  // namespace kangaroo
