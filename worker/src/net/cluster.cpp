#include "kangaroo/net/cluster.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "kangaroo/core/error.h"
#include "kangaroo/net/transport.h"

namespace kangaroo {
namespace {

using Clock = std::chrono::steady_clock;

// ---- control message codec ------------------------------------------------

class Writer {
 public:
  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const char*>(&v);
    out_.append(p, sizeof v);
  }
  void put_text(const std::string& s) {
    put<std::uint32_t>(static_cast<std::uint32_t>(s.size()));
    out_.append(s);
  }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  template <class T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, in_.data() + at_, sizeof v);
    at_ += sizeof v;
    return v;
  }
  std::string get_text(const char* what) {
    const auto n = get<std::uint32_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(in_.data() + at_), n);
    at_ += n;
    return s;
  }
  // A count of items that each take at least `item_bytes`: bounded by what is left.
  std::uint32_t get_count(const char* what, std::size_t item_bytes) {
    const auto n = get<std::uint32_t>(what);
    if (static_cast<std::uint64_t>(n) * item_bytes > in_.size() - at_) {
      fail(ErrorKind::io, std::string("control message: ") + what + " count " + std::to_string(n) +
                              " exceeds the message");
    }
    return n;
  }
  void end() const {
    if (at_ != in_.size()) {
      fail(ErrorKind::io, "control message has " + std::to_string(in_.size() - at_) + " trailing byte(s)");
    }
  }

 private:
  void need(std::size_t n, const char* what) const {
    if (n > in_.size() - at_) fail(ErrorKind::io, std::string("control message is truncated in ") + what);
  }
  std::span<const std::byte> in_;
  std::size_t at_ = 0;
};

// ---- sockets -----------------------------------------------------------------

std::pair<std::string, std::string> split_host_port(const std::string& hp) {
  const auto colon = hp.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == hp.size()) {
    fail(ErrorKind::invalid_argument, "address '" + hp + "' is not HOST:PORT");
  }
  std::string host = hp.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return {host, hp.substr(colon + 1)};
}

struct AddrInfo {
  addrinfo* list = nullptr;
  ~AddrInfo() {
    if (list != nullptr) ::freeaddrinfo(list);
  }
};

void resolve(const std::string& hp, bool passive, AddrInfo& out) {
  const auto [host, port] = split_host_port(hp);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &out.list);
  if (rc != 0) fail(ErrorKind::invalid_argument, "cannot resolve address '" + hp + "': " + gai_strerror(rc));
}

double seconds_left(Clock::time_point deadline) {
  return std::chrono::duration<double>(deadline - Clock::now()).count();
}

int poll_ms(Clock::time_point deadline, int cap_ms) {
  const double left = seconds_left(deadline);
  if (left <= 0) return 0;
  return static_cast<int>(std::min<double>(cap_ms, left * 1000.0 + 1.0));
}

// Writes a whole buffer to a (possibly non-blocking) socket.
void write_all(int fd, const std::string& data, const std::string& peer) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t w = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (w > 0) {
      done += static_cast<std::size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 1000);
      continue;
    }
    fail(ErrorKind::io, "control connection to " + peer + " failed: " + std::strerror(errno));
  }
}

// Reads one frame's body, blocking until `deadline`.
std::string read_frame(int fd, Clock::time_point deadline, const std::string& peer) {
  std::string buf;
  std::size_t want = 4;
  bool have_length = false;
  while (buf.size() < want) {
    pollfd p{fd, POLLIN, 0};
    const int pr = ::poll(&p, 1, poll_ms(deadline, 1000));
    if (pr == 0) {
      if (seconds_left(deadline) <= 0) fail(ErrorKind::io, "timed out waiting for " + peer);
      continue;
    }
    if (pr < 0 && errno == EINTR) continue;
    char tmp[4096];
    const ssize_t r = ::recv(fd, tmp, std::min<std::size_t>(sizeof tmp, want - buf.size()), 0);
    if (r == 0) fail(ErrorKind::io, peer + " closed the connection");
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      fail(ErrorKind::io, "reading from " + peer + ": " + std::strerror(errno));
    }
    buf.append(tmp, static_cast<std::size_t>(r));
    if (!have_length && buf.size() == 4) {
      std::uint32_t n = 0;
      std::memcpy(&n, buf.data(), 4);
      if (n == 0 || n > kMaxControlBody) fail(ErrorKind::io, peer + " sent a control frame of " + std::to_string(n) + " bytes");
      want = 4 + n;
      have_length = true;
    }
  }
  return buf.substr(4);
}

ControlMessage decode_string(const std::string& body) {
  return decode_control(std::span(reinterpret_cast<const std::byte*>(body.data()), body.size()));
}

int connect_with_retry(const std::string& hp, Clock::time_point deadline, double timeout_s) {
  std::string last = "no address";
  for (;;) {
    AddrInfo ai;
    resolve(hp, false, ai);
    for (addrinfo* a = ai.list; a != nullptr; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return fd;
      }
      last = std::strerror(errno);
      ::close(fd);
    }
    if (seconds_left(deadline) <= 0) {
      fail(ErrorKind::io, "cannot reach rank 0 (the coordinator) at " + hp + " within " +
                              std::to_string(static_cast<int>(timeout_s)) + " s: " + last);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

std::string rank_name(int r) { return "rank " + std::to_string(r); }

// ---- the link -------------------------------------------------------------------

class UcxRankLink final : public RankLink {
 public:
  UcxRankLink(int rank, int world, std::unique_ptr<Transport> transport, std::vector<int> fds, double heartbeat_timeout_s)
      : rank_(rank), world_(world), heartbeat_timeout_s_(heartbeat_timeout_s), transport_(std::move(transport)),
        fds_(std::move(fds)),
        rx_(static_cast<std::size_t>(world)), outbox_(static_cast<std::size_t>(world)),
        traffic_(static_cast<std::size_t>(world)),
        closed_(static_cast<std::size_t>(world), false), finished_(static_cast<std::size_t>(world), false) {
    last_heard_.assign(static_cast<std::size_t>(world), Clock::now());
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) fail(ErrorKind::io, std::string("eventfd: ") + std::strerror(errno));
    for (int fd : fds_) {
      if (fd >= 0) set_nonblocking(fd);
    }
    thread_ = std::thread([this] { loop(); });
  }

  ~UcxRankLink() override {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    wake();
    thread_.join();
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
    ::close(wake_fd_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  void attach(RankEvents* events) override {
    std::deque<Event> backlog;
    std::lock_guard dl(deliver_mu_);
    {
      std::lock_guard lk(mu_);
      events_ = events;
      if (events != nullptr) backlog.swap(backlog_);
    }
    for (auto& e : backlog) dispatch(events, e);
  }

  void push(int peer, const ChunkId& id, ConstBufferPtr value, std::int32_t stage) override {
    queued_bytes_ += value->bytes().size();
    {
      std::lock_guard lk(mu_);
      out_.push_back({peer, id, std::move(value), stage});
    }
    wake();
  }

  void stage_done_locally(std::int32_t stage, std::vector<std::uint64_t> sent) override {
    ControlMessage m;
    m.kind = ControlKind::local_done;
    m.rank = rank_;
    m.stage = stage;
    m.counts = std::move(sent);
    send_control(0, std::move(m));
  }

  void report_error(const std::string& what) override {
    ControlMessage m;
    m.kind = ControlKind::error;
    m.rank = rank_;
    m.text = what;
    send_control(0, std::move(m));
  }

  std::vector<std::uint64_t> finish_run(std::vector<std::uint64_t> counters) override {
    ControlMessage m;
    m.kind = ControlKind::finished;
    m.rank = rank_;
    m.counts = counters;
    send_control(0, std::move(m));
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return aborted_ || (exit_ && out_.empty() && inflight_count_ == 0); });
    if (aborted_) fail(ErrorKind::io, abort_reason_);
    return rank_ == 0 ? totals_ : counters;
  }

  std::uint64_t bytes_queued() const override { return queued_bytes_.load(); }

  std::vector<PeerTraffic> traffic() const override {
    std::lock_guard lk(mu_);
    return traffic_;
  }

  std::string description() const override {
    return std::to_string(world_) + " ranks over " + transport_->description();
  }

 private:
  struct Outgoing {
    int peer;
    ChunkId id;
    ConstBufferPtr value;
    std::int32_t stage;
  };
  struct Inflight {
    std::uint64_t ticket;
    int peer;
    std::uint64_t bytes;
    Clock::time_point posted;
  };
  enum class EventKind { chunk, stage_done, abort };
  struct Event {
    EventKind kind;
    int from = 0;
    ChunkId id;
    ConstBufferPtr value;
    std::int32_t stage = 0;
    std::uint64_t expected = 0;
    std::string text;
  };
  struct Tally {
    int ranks = 0;
    std::vector<std::uint64_t> sums;
  };

  void wake() {
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }

  void send_control(int peer, ControlMessage m) {
    {
      std::lock_guard lk(mu_);
      ctl_out_.emplace_back(peer, std::move(m));
    }
    wake();
  }

  static void dispatch(RankEvents* ev, Event& e) {
    switch (e.kind) {
      case EventKind::chunk: ev->on_chunk(e.from, e.id, std::move(e.value), e.stage); break;
      case EventKind::stage_done: ev->on_stage_done(e.stage, e.expected); break;
      case EventKind::abort: ev->on_abort(e.text); break;
    }
  }

  void deliver(Event e) {
    std::lock_guard dl(deliver_mu_);
    RankEvents* ev = nullptr;
    {
      std::lock_guard lk(mu_);
      if (events_ == nullptr) {
        backlog_.push_back(std::move(e));
        return;
      }
      ev = events_;
    }
    dispatch(ev, e);
  }

  // Net thread only. Control messages are batched per peer and written
  // once per loop iteration (flush_control).
  void write_control(int peer, const ControlMessage& m) {
    if (fds_[static_cast<std::size_t>(peer)] < 0 || closed_[static_cast<std::size_t>(peer)]) return;
    outbox_[static_cast<std::size_t>(peer)] += encode_control(m);
  }

  void flush_control() {
    for (int r = 0; r < world_; ++r) {
      std::string& out = outbox_[static_cast<std::size_t>(r)];
      if (out.empty()) continue;
      try {
        if (!closed_[static_cast<std::size_t>(r)]) write_all(fds_[static_cast<std::size_t>(r)], out, rank_name(r));
      } catch (const Error&) {
        // A closed peer shows up as end of stream on the read side.
      }
      out.clear();
    }
  }

  void abort_job(const std::string& reason) {
    {
      std::lock_guard lk(mu_);
      if (aborted_ || exit_) return;
      aborted_ = true;
      abort_reason_ = reason;
    }
    cv_.notify_all();
    if (rank_ == 0) {
      ControlMessage a;
      a.kind = ControlKind::abort;
      a.text = reason;
      for (int r = 1; r < world_; ++r) write_control(r, a);
    }
    Event e;
    e.kind = EventKind::abort;
    e.text = reason;
    deliver(std::move(e));
  }

  // Rank 0 receives from every rank (itself included); the others only
  // from rank 0.
  void handle(int from, const ControlMessage& m) {
    switch (m.kind) {
      case ControlKind::local_done: {
        if (rank_ != 0) break;
        if (m.counts.size() != static_cast<std::size_t>(world_)) {
          abort_job(rank_name(from) + " sent a stage report for " + std::to_string(m.counts.size()) + " ranks");
          break;
        }
        Tally& t = tally_[m.stage];
        if (t.sums.empty()) t.sums.assign(static_cast<std::size_t>(world_), 0);
        ++t.ranks;
        for (int r = 0; r < world_; ++r) t.sums[static_cast<std::size_t>(r)] += m.counts[static_cast<std::size_t>(r)];
        if (t.ranks == world_) {
          for (int r = 0; r < world_; ++r) {
            ControlMessage d;
            d.kind = ControlKind::stage_done;
            d.stage = m.stage;
            d.counts = {t.sums[static_cast<std::size_t>(r)]};
            if (r == 0) handle(0, d);
            else write_control(r, d);
          }
          tally_.erase(m.stage);
        }
        break;
      }
      case ControlKind::stage_done: {
        Event e;
        e.kind = EventKind::stage_done;
        e.stage = m.stage;
        e.expected = m.counts.empty() ? 0 : m.counts[0];
        deliver(std::move(e));
        break;
      }
      case ControlKind::error:
        abort_job(rank_ == 0 ? rank_name(from) + ": " + m.text : m.text);
        break;
      case ControlKind::abort: abort_job(m.text); break;
      case ControlKind::finished: {
        if (rank_ != 0) break;
        finished_[static_cast<std::size_t>(from)] = true;
        {
          std::lock_guard lk(mu_);
          if (totals_.size() < m.counts.size()) totals_.resize(m.counts.size(), 0);
          for (std::size_t i = 0; i < m.counts.size(); ++i) totals_[i] += m.counts[i];
        }
        if (std::all_of(finished_.begin(), finished_.end(), [](bool b) { return b; })) {
          ControlMessage x;
          x.kind = ControlKind::exit;
          for (int r = 1; r < world_; ++r) write_control(r, x);
          handle(0, x);
        }
        break;
      }
      case ControlKind::exit: {
        {
          std::lock_guard lk(mu_);
          exit_ = true;
        }
        cv_.notify_all();
        break;
      }
      case ControlKind::heartbeat: break;  // noted in parse_frames
      case ControlKind::hello:
      case ControlKind::table: break;  // start-up only
    }
  }

  void peer_closed(int r) {
    closed_[static_cast<std::size_t>(r)] = true;
    bool quiet = false;
    {
      std::lock_guard lk(mu_);
      quiet = exit_ || stop_;
    }
    if (quiet || finished_[static_cast<std::size_t>(r)]) return;
    if (rank_ == 0) {
      abort_job(rank_name(r) + " stopped while the job was running (its control connection closed)");
    } else {
      abort_job("lost the connection to rank 0 (the coordinator) while the job was running");
    }
  }

  // Every second each rank tells its control peers it is alive; a peer
  // silent for heartbeat_timeout_s fails the job (a hung rank keeps its
  // connection open, so end of stream alone would never come).
  void heartbeats() {
    const auto now = Clock::now();
    if (now - last_beat_ >= std::chrono::seconds(1)) {
      last_beat_ = now;
      ControlMessage hb;
      hb.kind = ControlKind::heartbeat;
      for (int r = 0; r < world_; ++r) {
        if (r != rank_ && fds_[static_cast<std::size_t>(r)] >= 0) write_control(r, hb);
      }
    }
    if (heartbeat_timeout_s_ <= 0) return;
    for (int r = 0; r < world_; ++r) {
      if (r == rank_ || fds_[static_cast<std::size_t>(r)] < 0 || closed_[static_cast<std::size_t>(r)] ||
          finished_[static_cast<std::size_t>(r)]) {
        continue;
      }
      const double silent = std::chrono::duration<double>(now - last_heard_[static_cast<std::size_t>(r)]).count();
      if (silent > heartbeat_timeout_s_) {
        last_heard_[static_cast<std::size_t>(r)] = now;  // report once
        abort_job(rank_name(r) + " stopped responding (no message for " + std::to_string(static_cast<int>(silent)) +
                  " s; hung, or its network is cut)");
      }
    }
  }

  // Reads what is available on a control connection.
  void read_control(int r) {
    const int fd = fds_[static_cast<std::size_t>(r)];
    std::string& buf = rx_[static_cast<std::size_t>(r)];
    char tmp[16384];
    for (;;) {
      const ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n > 0) {
        buf.append(tmp, static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      parse_frames(r);
      peer_closed(r);
      return;
    }
    parse_frames(r);
  }

  void parse_frames(int r) {
    std::string& buf = rx_[static_cast<std::size_t>(r)];
    std::size_t at = 0;
    while (buf.size() - at >= 4) {
      std::uint32_t n = 0;
      std::memcpy(&n, buf.data() + at, 4);
      if (n == 0 || n > kMaxControlBody) {
        abort_job(rank_name(r) + " sent a control frame of " + std::to_string(n) + " bytes");
        buf.clear();
        return;
      }
      if (buf.size() - at - 4 < n) break;
      last_heard_[static_cast<std::size_t>(r)] = Clock::now();
      try {
        handle(r, decode_string(buf.substr(at + 4, n)));
      } catch (const Error& e) {
        abort_job("bad control message from " + rank_name(r) + ": " + e.what());
      }
      at += 4 + n;
    }
    buf.erase(0, at);
  }

  void loop() {
    std::vector<pollfd> pfds;
    for (;;) {
      bool did = false;
      std::deque<Outgoing> out;
      std::deque<std::pair<int, ControlMessage>> ctl;
      {
        std::lock_guard lk(mu_);
        if (stop_) {
          flush_control();
          return;
        }
        out.swap(out_);
        ctl.swap(ctl_out_);
      }
      try {
        for (auto& o : out) {
          did = true;
          if (broken_) continue;
          const std::uint64_t bytes = o.value->bytes().size();
          const std::uint64_t ticket = transport_->post_send(o.peer, o.id, std::move(o.value), static_cast<std::uint32_t>(o.stage));
          inflight_.push_back({ticket, o.peer, bytes, Clock::now()});
        }
        {
          std::lock_guard lk(mu_);
          inflight_count_ = inflight_.size();
        }
        for (auto& [peer, m] : ctl) {
          did = true;
          if (peer == rank_) handle(rank_, m);
          else write_control(peer, m);
        }
        while (transport_->progress()) did = true;
        for (std::size_t i = 0; i < inflight_.size();) {
          if (transport_->test(inflight_[i].ticket)) {
            std::lock_guard lk(mu_);
            PeerTraffic& t = traffic_[static_cast<std::size_t>(inflight_[i].peer)];
            ++t.chunks_sent;
            t.bytes_sent += inflight_[i].bytes;
            t.send_seconds += std::chrono::duration<double>(Clock::now() - inflight_[i].posted).count();
            queued_bytes_ -= inflight_[i].bytes;
            inflight_[i] = inflight_.back();
            inflight_.pop_back();
            did = true;
          } else {
            ++i;
          }
        }
        for (;;) {
          int peer = 0;
          ChunkId id;
          std::uint32_t aux = 0;
          ConstBufferPtr v = transport_->try_receive(peer, id, aux);
          if (!v) break;
          did = true;
          if (peer < 0 || peer >= world_) continue;
          {
            std::lock_guard lk(mu_);
            PeerTraffic& t = traffic_[static_cast<std::size_t>(peer)];
            ++t.chunks_received;
            t.bytes_received += v->bytes().size();
          }
          Event e;
          e.kind = EventKind::chunk;
          e.from = peer;
          e.id = id;
          e.value = std::move(v);
          e.stage = static_cast<std::int32_t>(aux);
          deliver(std::move(e));
        }
      } catch (const Error& e) {
        broken_ = true;
        abort_job(rank_name(rank_) + ": chunk transport failed: " + e.what());
      }
      {
        std::lock_guard lk(mu_);
        inflight_count_ = inflight_.size();
      }
      cv_.notify_all();
      for (int r = 0; r < world_; ++r) {
        if (fds_[static_cast<std::size_t>(r)] >= 0 && !closed_[static_cast<std::size_t>(r)]) read_control(r);
      }
      heartbeats();
      flush_control();
      if (did) continue;
      if (!broken_) {
        try {
          if (!transport_->arm()) continue;
        } catch (const Error&) {
          broken_ = true;
        }
      }
      pfds.clear();
      pfds.push_back({wake_fd_, POLLIN, 0});
      if (!broken_) pfds.push_back({transport_->event_fd(), POLLIN, 0});
      for (int r = 0; r < world_; ++r) {
        const int fd = fds_[static_cast<std::size_t>(r)];
        if (fd >= 0 && !closed_[static_cast<std::size_t>(r)]) pfds.push_back({fd, POLLIN, 0});
      }
      // Sends in flight complete without an event on some transports.
      ::poll(pfds.data(), pfds.size(), inflight_.empty() ? 1000 : 1);
      std::uint64_t drained = 0;
      (void)!::read(wake_fd_, &drained, sizeof drained);
    }
  }

  const int rank_, world_;
  const double heartbeat_timeout_s_;
  std::unique_ptr<Transport> transport_;
  std::vector<int> fds_;
  std::vector<std::string> rx_;
  std::vector<std::string> outbox_;  // net thread: control frames to write, per peer
  int wake_fd_ = -1;
  std::thread thread_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Outgoing> out_;
  std::deque<std::pair<int, ControlMessage>> ctl_out_;
  std::size_t inflight_count_ = 0;
  std::atomic<std::uint64_t> queued_bytes_{0};
  std::vector<PeerTraffic> traffic_;
  RankEvents* events_ = nullptr;
  std::deque<Event> backlog_;
  bool stop_ = false, aborted_ = false, exit_ = false;
  std::string abort_reason_;
  std::vector<std::uint64_t> totals_;  // rank 0: finish_run counters summed

  std::mutex deliver_mu_;  // held while an event is handed to the executor

  // Net thread only.
  std::vector<Inflight> inflight_;
  std::vector<bool> closed_;
  std::vector<bool> finished_;
  std::vector<Clock::time_point> last_heard_;
  Clock::time_point last_beat_ = Clock::now();
  std::map<std::int32_t, Tally> tally_;
  bool broken_ = false;
};

}  // namespace

std::string encode_control(const ControlMessage& m) {
  Writer w;
  w.put<std::uint32_t>(0);
  w.put<std::uint8_t>(static_cast<std::uint8_t>(m.kind));
  switch (m.kind) {
    case ControlKind::hello:
      w.put<std::int32_t>(m.rank);
      w.put<std::int32_t>(m.world_size);
      w.put_text(m.text);
      break;
    case ControlKind::table:
      w.put<std::uint32_t>(static_cast<std::uint32_t>(m.texts.size()));
      for (const auto& t : m.texts) w.put_text(t);
      break;
    case ControlKind::finished:
      w.put<std::uint32_t>(static_cast<std::uint32_t>(m.counts.size()));
      for (auto c : m.counts) w.put<std::uint64_t>(c);
      break;
    case ControlKind::local_done:
    case ControlKind::stage_done:
      w.put<std::int32_t>(m.stage);
      w.put<std::uint32_t>(static_cast<std::uint32_t>(m.counts.size()));
      for (auto c : m.counts) w.put<std::uint64_t>(c);
      break;
    case ControlKind::error:
    case ControlKind::abort: w.put_text(m.text); break;
    case ControlKind::exit:
    case ControlKind::heartbeat: break;
  }
  std::string& s = w.out();
  const auto n = static_cast<std::uint32_t>(s.size() - 4);
  std::memcpy(s.data(), &n, 4);
  return s;
}

ControlMessage decode_control(std::span<const std::byte> body) {
  Reader r(body);
  ControlMessage m;
  const auto kind = r.get<std::uint8_t>("kind");
  if (kind < 1 || kind > 9) fail(ErrorKind::io, "control message has unknown kind " + std::to_string(kind));
  m.kind = static_cast<ControlKind>(kind);
  switch (m.kind) {
    case ControlKind::hello:
      m.rank = r.get<std::int32_t>("rank");
      m.world_size = r.get<std::int32_t>("world size");
      m.text = r.get_text("address");
      break;
    case ControlKind::table: {
      const auto n = r.get_count("address table", 4);
      for (std::uint32_t i = 0; i < n; ++i) m.texts.push_back(r.get_text("address table"));
      break;
    }
    case ControlKind::local_done:
    case ControlKind::stage_done: {
      m.stage = r.get<std::int32_t>("stage");
      const auto n = r.get_count("counts", 8);
      for (std::uint32_t i = 0; i < n; ++i) m.counts.push_back(r.get<std::uint64_t>("counts"));
      break;
    }
    case ControlKind::finished: {
      const auto n = r.get_count("counters", 8);
      for (std::uint32_t i = 0; i < n; ++i) m.counts.push_back(r.get<std::uint64_t>("counters"));
      break;
    }
    case ControlKind::error:
    case ControlKind::abort: m.text = r.get_text("text"); break;
    case ControlKind::exit:
    case ControlKind::heartbeat: break;
  }
  r.end();
  return m;
}

std::pair<int, int> listen_tcp(const std::string& host_port) {
  AddrInfo ai;
  resolve(host_port, true, ai);
  std::string last = "no address";
  for (addrinfo* a = ai.list; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
      const int port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                                : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      return {fd, port};
    }
    last = std::strerror(errno);
    ::close(fd);
  }
  fail(ErrorKind::io, "cannot listen on " + host_port + ": " + last);
}

std::unique_ptr<RankLink> join_cluster(const ClusterOptions& o) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    fail(ErrorKind::invalid_argument,
         "rank " + std::to_string(o.rank) + " is not inside a world of " + std::to_string(o.world_size));
  }
  if (o.world_size > 1 && o.coordinator.empty() && !(o.rank == 0 && o.listen_fd >= 0)) {
    fail(ErrorKind::invalid_argument, "a job of " + std::to_string(o.world_size) +
                                          " ranks needs the coordinator address (HOST:PORT of rank 0)");
  }
  auto transport = make_ucx_transport(o.rank, o.world_size);
  transport->set_receive_window(effective_receive_window(o.receive_window));
  const std::size_t world = static_cast<std::size_t>(o.world_size);
  std::vector<int> fds(world, -1);
  std::vector<std::string> table(world);
  table[static_cast<std::size_t>(o.rank)] = transport->address();
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<std::int64_t>(o.connect_timeout_s * 1000));
  auto close_all = [&] {
    for (int& fd : fds) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  };
  try {
    if (o.world_size > 1 && o.rank == 0) {
      const int lfd = o.listen_fd >= 0 ? o.listen_fd : listen_tcp(o.coordinator).first;
      struct Closer {
        int fd;
        bool own;
        ~Closer() {
          if (own) ::close(fd);
        }
      } closer{lfd, o.listen_fd < 0};
      int joined = 0;
      while (joined < o.world_size - 1) {
        if (seconds_left(deadline) <= 0) {
          std::string missing;
          for (std::size_t r = 1; r < world; ++r) {
            if (fds[r] < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
          }
          fail(ErrorKind::io, "rank(s) " + missing + " did not join within " +
                                  std::to_string(static_cast<int>(o.connect_timeout_s)) + " s" +
                                  (o.coordinator.empty() ? "" : " (coordinator " + o.coordinator + ")"));
        }
        if (o.while_waiting) o.while_waiting();
        pollfd p{lfd, POLLIN, 0};
        if (::poll(&p, 1, poll_ms(deadline, 200)) <= 0) continue;
        const int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        ControlMessage hello;
        try {
          hello = decode_string(read_frame(c, std::min(deadline, Clock::now() + std::chrono::seconds(10)), "a joining rank"));
        } catch (const Error&) {
          ::close(c);  // a stray connection does not end the job
          continue;
        }
        auto refuse = [&](const std::string& why) {
          ControlMessage a;
          a.kind = ControlKind::abort;
          a.text = why;
          try {
            write_all(c, encode_control(a), "a joining rank");
          } catch (const Error&) {
          }
          ::close(c);
          fail(ErrorKind::invalid_argument, why);
        };
        if (hello.kind != ControlKind::hello) refuse("a joining rank did not introduce itself");
        if (hello.world_size != o.world_size) {
          refuse(rank_name(hello.rank) + " joined with world size " + std::to_string(hello.world_size) +
                 " but rank 0 has " + std::to_string(o.world_size));
        }
        if (hello.rank < 1 || hello.rank >= o.world_size || fds[static_cast<std::size_t>(hello.rank)] >= 0) {
          refuse(rank_name(hello.rank) + " joined twice or is outside the world of " + std::to_string(o.world_size));
        }
        if (hello.text.empty()) refuse(rank_name(hello.rank) + " sent an empty transport address");
        fds[static_cast<std::size_t>(hello.rank)] = c;
        table[static_cast<std::size_t>(hello.rank)] = hello.text;
        ++joined;
      }
      ControlMessage t;
      t.kind = ControlKind::table;
      t.texts = table;
      for (std::size_t r = 1; r < world; ++r) write_all(fds[r], encode_control(t), rank_name(static_cast<int>(r)));
    } else if (o.world_size > 1) {
      const int c = connect_with_retry(o.coordinator, deadline, o.connect_timeout_s);
      fds[0] = c;
      ControlMessage hello;
      hello.kind = ControlKind::hello;
      hello.rank = o.rank;
      hello.world_size = o.world_size;
      hello.text = table[static_cast<std::size_t>(o.rank)];
      write_all(c, encode_control(hello), "rank 0");
      ControlMessage t = decode_string(read_frame(c, deadline, "rank 0 (the coordinator) to list the ranks"));
      if (t.kind == ControlKind::abort) fail(ErrorKind::invalid_argument, "rank 0 refused this rank: " + t.text);
      if (t.kind != ControlKind::table || t.texts.size() != world) {
        fail(ErrorKind::io, "rank 0 sent no usable address table");
      }
      for (std::size_t r = 0; r < world; ++r) {
        if (r != static_cast<std::size_t>(o.rank)) table[r] = t.texts[r];
      }
    }
    for (int p = 0; p < o.world_size; ++p) {
      if (p != o.rank) transport->connect(p, table[static_cast<std::size_t>(p)]);
    }
  } catch (...) {
    close_all();
    throw;
  }
  return std::make_unique<UcxRankLink>(o.rank, o.world_size, std::move(transport), std::move(fds),
                                       o.heartbeat_timeout_s);
}

}  // namespace kangaroo
