// Chunk transport between two processes over UCX (seed §4.1, §4.3): every
// chunk arrives with its identity, descriptor and bytes intact, on shared
// memory and on TCP, and the wire header rejects what it must.
#include <sys/socket.h>
#include <sys/wait.h>
#include <csignal>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kangaroo/core/error.h"
#include "kangaroo/net/transport.h"

namespace kangaroo {
namespace {

// Deterministic content so both sides can check it.
BufferPtr pattern(const Descriptor& d, int seed) {
  auto b = Buffer::allocate(d, InitPolicy::uninitialized);
  auto* p = b->mutable_data();
  for (std::uint64_t i = 0; i < b->byte_size(); ++i) p[i] = static_cast<std::byte>((i * 31 + static_cast<std::uint64_t>(seed)) & 0xff);
  return b;
}

std::vector<std::pair<ChunkId, Descriptor>> cases() {
  std::vector<std::pair<ChunkId, Descriptor>> out;
  const std::uint64_t small[] = {3, 4, 5};
  const std::uint64_t big[] = {64, 64, 64};  // 2 MiB of f64
  const std::uint64_t one[] = {1};
  out.push_back({ChunkId{0, 1, 7, 0, 3}, Descriptor::c_order(ScalarType::f64, small)});
  out.push_back({ChunkId{-2, 0, 1000, 2, 99}, Descriptor::fortran_order(ScalarType::f32, small)});
  out.push_back({ChunkId{5, 3, 8, 1, 123456}, Descriptor::c_order(ScalarType::f64, big)});
  out.push_back({ChunkId{0, 0, 9, 0, 0}, Descriptor::opaque_bytes(1000)});
  out.push_back({ChunkId{1, 0, 10, 0, 1}, Descriptor::c_order(ScalarType::i64, one)});
  return out;
}

// Two ranks over `tls`: rank 1 in a forked child runs `rank1` (throws or
// returns false on failure, after saying why on stderr), rank 0 runs `rank0`
// here; each gets its connected transport and its end of the socket pair,
// over which the one that finishes first waits for the other.
using RankBody = std::function<bool(Transport&, int fd)>;
void two_ranks(const char* tls, std::uint64_t rank1_window, const RankBody& rank1,
               const std::function<void(Transport&, int fd)>& rank0) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ::setenv("UCX_TLS", tls, 1);
  ::setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 1);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(sv[0]);
    int rc = 1;
    try {
      auto t = make_ucx_transport(1, 2);
      t->set_receive_window(rank1_window);
      t->connect(0, exchange_address(sv[1], t->address()));
      if (rank1(*t, sv[1])) rc = 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank 1: %s\n", e.what());
    }
    ::_exit(rc);
  }
  ::close(sv[1]);
  {
    auto t = make_ucx_transport(0, 2);
    const std::string peer = exchange_address(sv[0], t->address());
    ASSERT_FALSE(peer.empty());
    t->connect(1, peer);
    rank0(*t, sv[0]);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "rank 1 failed on " << tls;
  ::close(sv[0]);
}

// Rank 1 receives every case and echoes it back; rank 0 checks.
void round_trip(const char* tls) {
  auto echo = [](Transport& t, int fd) {
    for (std::size_t i = 0; i < cases().size(); ++i) {
      ChunkId id;
      auto b = t.receive(0, id);
      t.send(0, id, b);
    }
    char done = 0;
    (void)!::read(fd, &done, 1);  // keep the endpoint until rank 0 has everything
    return true;
  };
  two_ranks(tls, kDefaultReceiveWindow, echo, [](Transport& t, int fd) {
    std::vector<std::uint64_t> tickets;
    int seed = 0;
    for (const auto& [id, d] : cases()) tickets.push_back(t.post_send(1, id, pattern(d, seed++)));
    for (auto k : tickets) t.wait(k);
    seed = 0;
    for (const auto& [id, d] : cases()) {
      SCOPED_TRACE(id.to_string());
      ChunkId got;
      auto b = t.receive(1, got);
      EXPECT_EQ(got, id);
      EXPECT_TRUE(b->descriptor().same_layout(d)) << b->descriptor().to_string() << " vs " << d.to_string();
      const auto want = pattern(d, seed++);
      ASSERT_EQ(b->byte_size(), want->byte_size());
      EXPECT_EQ(std::memcmp(b->data(), want->data(), want->byte_size()), 0);
    }
    const char done = 1;
    (void)!::write(fd, &done, 1);
  });
}

// Rank 0 posts 48 chunks of mixed sizes (eager and rendezvous payloads
// interleaved) without waiting; rank 1 takes them with try_receive and must
// see them in the order they were posted, each with its aux value and bytes,
// with the given receive window (1 byte: one chunk at a time).
void ordered_stream(const char* tls, std::uint64_t window) {
  static constexpr std::uint64_t kSizes[] = {8, 2u << 20, 70000, 1, 5u << 20, 4096};
  constexpr int kChunks = 48;
  auto descriptor = [](int i) { return Descriptor::opaque_bytes(kSizes[static_cast<std::size_t>(i) % std::size(kSizes)]); };
  auto take_in_order = [&](Transport& t, int fd) {
    bool ok = true;
    // Takes all of them even after a mismatch: rank 0 waits for its sends.
    for (int i = 0; i < kChunks;) {
      int peer = -1;
      ChunkId id;
      std::uint32_t aux = 0;
      auto b = t.try_receive(peer, id, aux);
      if (b == nullptr) {
        t.progress();
        continue;
      }
      const auto want = pattern(descriptor(i), i);
      if (peer != 0 || id.block != i || aux != 1000u + static_cast<std::uint32_t>(i) ||
          b->byte_size() != want->byte_size() || std::memcmp(b->data(), want->data(), want->byte_size()) != 0) {
        ok = false;
        std::fprintf(stderr, "rank 1: chunk %d arrived as block %d (aux %u, %llu bytes)\n", i, id.block, aux,
                     static_cast<unsigned long long>(b->byte_size()));
      }
      ++i;
    }
    const char done = 1;
    (void)!::write(fd, &done, 1);
    return ok;
  };
  two_ranks(tls, window, take_in_order, [&](Transport& t, int fd) {
    std::vector<std::uint64_t> tickets;
    for (int i = 0; i < kChunks; ++i) {
      tickets.push_back(
          t.post_send(1, ChunkId{0, 0, 1, 0, i}, pattern(descriptor(i), i), 1000u + static_cast<std::uint32_t>(i)));
    }
    for (auto k : tickets) t.wait(k);
    char done = 0;
    (void)!::read(fd, &done, 1);  // keep the endpoint until rank 1 has everything
  });
}

// Endpoint descriptions as UCX 1.13 prints them (ucp_ep_print_info).
TEST(UcxEndpointInfo, SharedMemoryBulkLanesAreRecognised) {
  const std::string shared =
      "#\n# UCP endpoint\n#\n#               peer: <no debug data>\n"
      "#                 lane[0]:  0:sysv/memory.0 md[0]           -> md[0]/sysv/sysdev[255] am am_bw#0\n"
      "#                 lane[1]:  2:cma/memory.0 md[2]            -> md[2]/cma/sysdev[255] rma_bw#0\n"
      "#\n#                tag_send: 0..<egr/short>..93..<egr/bcopy>..8256..<rndv>..(inf)\n";
  const std::string tcp =
      "#                 lane[0]:  0:tcp/lo.0 md[0]                -> md[0]/tcp/sysdev[255] rma_bw#0 am am_bw#0\n"
      "#                 lane[1]:  1:tcp/eth0.0 md[0]              -> md[0]/tcp/sysdev[255] rma_bw#1 wireup\n";
  const std::string mixed =
      "#                 lane[0]:  2:cma/memory.0 md[2]            -> md[2]/cma/sysdev[255] rma_bw#0\n"
      "#                 lane[1]:  1:tcp/eth0.0 md[0]              -> md[0]/tcp/sysdev[255] rma_bw#1";
  EXPECT_TRUE(bulk_lanes_copy_through_shared_memory(shared));
  EXPECT_FALSE(bulk_lanes_copy_through_shared_memory(tcp));
  EXPECT_FALSE(bulk_lanes_copy_through_shared_memory(mixed));
  EXPECT_FALSE(bulk_lanes_copy_through_shared_memory(""));
  EXPECT_FALSE(bulk_lanes_copy_through_shared_memory("lane[0]: 0:sysv/memory.0 am am_bw#0"));  // no bulk lane
}

TEST(UcxTransport, RoundTripSharedMemory) { round_trip("sm,self"); }
TEST(UcxTransport, RoundTripTcp) { round_trip("tcp,self"); }
TEST(UcxTransport, StreamKeepsOrderSharedMemory) { ordered_stream("sm,self", kDefaultReceiveWindow); }
TEST(UcxTransport, StreamKeepsOrderTcp) { ordered_stream("tcp,self", kDefaultReceiveWindow); }
TEST(UcxTransport, StreamKeepsOrderOneChunkAtATime) { ordered_stream("tcp,self", 1); }

TEST(WireHeader, EncodesAndRejects) {
  const std::uint64_t ext[] = {2, 3};
  const Descriptor d = Descriptor::c_order(ScalarType::f64, ext);
  auto buf = Buffer::allocate(d, InitPolicy::zero);
  std::byte h[kWireHeaderBytes];
  encode_wire_header(ChunkId{4, 2, 11, 1, 77}, *buf, h);
  WireChunk w = decode_wire_header(h);
  EXPECT_EQ(w.id, (ChunkId{4, 2, 11, 1, 77}));
  EXPECT_TRUE(w.desc.same_layout(d));
  EXPECT_EQ(w.nbytes, 48u);
  EXPECT_FALSE(w.nonzero.has_value());
  EXPECT_EQ(w.route.seq, 0u);
  // The route (sequence number, sending rank, aux) travels with the chunk.
  encode_wire_header(ChunkId{4, 2, 11, 1, 77}, *buf, h, WireRoute{0xfffffffeu, 3, 0x12345678u});
  w = decode_wire_header(h);
  EXPECT_EQ(w.route.seq, 0xfffffffeu);
  EXPECT_EQ(w.route.source, 3u);
  EXPECT_EQ(w.route.aux, 0x12345678u);
  // The footprint hint of a partial image travels with it.
  buf->set_nonzero_rect({0, 1, 1, 3});
  encode_wire_header(ChunkId{4, 2, 11, 1, 77}, *buf, h);
  w = decode_wire_header(h);
  ASSERT_TRUE(w.nonzero.has_value());
  EXPECT_EQ(*w.nonzero, (NonzeroRect{0, 1, 1, 3}));
  std::byte bad[kWireHeaderBytes];
  std::memcpy(bad, h, sizeof h);
  bad[0] = std::byte{0};
  EXPECT_THROW(decode_wire_header(bad), Error);  // magic
  std::memcpy(bad, h, sizeof h);
  bad[7] = std::byte{9};
  EXPECT_THROW(decode_wire_header(bad), Error);  // rank
  std::memcpy(bad, h, sizeof h);
  bad[112] = std::byte{7};  // row_end 7 > 2 rows
  EXPECT_THROW(decode_wire_header(bad), Error);
  std::memcpy(bad, h, sizeof h);
  bad[32] = std::byte{40};  // bytes disagree with the descriptor
  EXPECT_THROW(decode_wire_header(bad), Error);
  std::memcpy(bad, h, sizeof h);
  bad[150] = std::byte{1};  // reserved
  EXPECT_THROW(decode_wire_header(bad), Error);
}

TEST(AddressExchange, FailsWhenThePeerIsGone) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ::close(sv[1]);
  ::signal(SIGPIPE, SIG_IGN);
  EXPECT_THROW(exchange_address(sv[0], "addr"), Error);
  ::close(sv[0]);
}

TEST(UcxTransport, RejectsBadRanks) {
  EXPECT_THROW(make_ucx_transport(2, 2), Error);
  auto t = make_ucx_transport(0, 1);
  EXPECT_THROW(t->connect(1, "x"), Error);
  ChunkId id;
  EXPECT_THROW(t->receive(3, id), Error);
}

}  // namespace
}  // namespace kangaroo
