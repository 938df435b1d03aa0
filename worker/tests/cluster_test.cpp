// Control plane of multi-rank jobs: the control-message codec, and three
// ranks (threads of this process, real TCP and UCX) that join through rank
// 0, push chunks to each other and pass a stage barrier and the final one.
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "kangaroo/core/error.h"
#include "kangaroo/net/cluster.h"

namespace kangaroo {
namespace {

ControlMessage round_trip(const ControlMessage& m) {
  const std::string frame = encode_control(m);
  std::uint32_t n = 0;
  std::memcpy(&n, frame.data(), 4);
  EXPECT_EQ(n + 4u, frame.size());
  return decode_control(std::span(reinterpret_cast<const std::byte*>(frame.data()) + 4, n));
}

TEST(ControlCodec, RoundTripsEveryKind) {
  ControlMessage hello{ControlKind::hello, 3, 4, 0, {}, "address", {}};
  auto h = round_trip(hello);
  EXPECT_EQ(h.kind, ControlKind::hello);
  EXPECT_EQ(h.rank, 3);
  EXPECT_EQ(h.world_size, 4);
  EXPECT_EQ(h.text, "address");
  ControlMessage table{ControlKind::table, 0, 0, 0, {}, "", {"a", std::string("b\0c", 3)}};
  EXPECT_EQ(round_trip(table).texts, table.texts);
  ControlMessage done{ControlKind::local_done, 1, 0, 7, {1, 0, 5}, "", {}};
  auto d = round_trip(done);
  EXPECT_EQ(d.stage, 7);
  EXPECT_EQ(d.counts, done.counts);
  ControlMessage fin{ControlKind::finished, 2, 0, 0, {10, 9}, "", {}};
  EXPECT_EQ(round_trip(fin).counts, fin.counts);
  ControlMessage err{ControlKind::error, 0, 0, 0, {}, "stage 0 failed", {}};
  EXPECT_EQ(round_trip(err).text, "stage 0 failed");
}

TEST(ControlCodec, RejectsTruncatedAndInflatedMessages) {
  ControlMessage done{ControlKind::local_done, 1, 0, 7, {1, 2}, "", {}};
  const std::string frame = encode_control(done);
  const auto* body = reinterpret_cast<const std::byte*>(frame.data()) + 4;
  const std::size_t n = frame.size() - 4;
  for (std::size_t cut = 0; cut < n; ++cut) EXPECT_THROW(decode_control(std::span(body, cut)), Error) << cut;
  std::string longer = frame.substr(4) + "x";
  EXPECT_THROW(decode_control(std::span(reinterpret_cast<const std::byte*>(longer.data()), longer.size())), Error);
  // a count that claims more items than the message holds
  std::string inflated = frame.substr(4);
  const std::uint32_t huge = 0x40000000u;
  std::memcpy(inflated.data() + 5, &huge, 4);
  EXPECT_THROW(decode_control(std::span(reinterpret_cast<const std::byte*>(inflated.data()), inflated.size())), Error);
  const std::byte unknown[1] = {std::byte{42}};
  EXPECT_THROW(decode_control(std::span(unknown, 1)), Error);
}

// Records what the link delivers.
struct Recorder final : RankEvents {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ChunkId> chunks;
  std::int64_t stage_expected = -1;
  std::string abort;
  void on_chunk(int, const ChunkId& id, ConstBufferPtr, std::int32_t) override {
    std::lock_guard lk(mu);
    chunks.push_back(id);
    cv.notify_all();
  }
  void on_stage_done(std::int32_t, std::uint64_t expected) override {
    std::lock_guard lk(mu);
    stage_expected = static_cast<std::int64_t>(expected);
    cv.notify_all();
  }
  void on_abort(const std::string& why) override {
    std::lock_guard lk(mu);
    abort = why;
    cv.notify_all();
  }
};

TEST(Cluster, ThreeRanksPushChunksAndPassBarriers) {
  ::setenv("UCX_TLS", "tcp,self", 1);
  ::setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 1);
  constexpr int kWorld = 3;
  const auto [fd, port] = listen_tcp("127.0.0.1:0");
  std::vector<std::string> failures(kWorld);
  std::vector<std::uint64_t> totals(kWorld);
  std::vector<std::size_t> received(kWorld);
  auto rank_main = [&](int r) {
    try {
      ClusterOptions o;
      o.rank = r;
      o.world_size = kWorld;
      o.coordinator = "127.0.0.1:" + std::to_string(port);
      if (r == 0) o.listen_fd = fd;
      o.connect_timeout_s = 20;
      auto link = join_cluster(o);
      Recorder rec;
      link->attach(&rec);
      const std::uint64_t ext[] = {4};
      std::vector<std::uint64_t> sent(kWorld, 0);
      for (int p = 0; p < kWorld; ++p) {
        if (p == r) continue;
        auto b = Buffer::allocate(Descriptor::c_order(ScalarType::f64, ext), InitPolicy::zero);
        link->push(p, ChunkId{0, 0, 1, 0, r}, b, 0);
        ++sent[static_cast<std::size_t>(p)];
      }
      link->stage_done_locally(0, sent);
      {
        std::unique_lock lk(rec.mu);
        ASSERT_TRUE(rec.cv.wait_for(lk, std::chrono::seconds(20), [&] {
          return rec.stage_expected >= 0 && rec.chunks.size() >= static_cast<std::size_t>(rec.stage_expected);
        }));
        EXPECT_EQ(rec.stage_expected, kWorld - 1);
        received[static_cast<std::size_t>(r)] = rec.chunks.size();
      }
      totals[static_cast<std::size_t>(r)] = link->finish_run({1}).at(0);
      link->attach(nullptr);
    } catch (const std::exception& e) {
      failures[static_cast<std::size_t>(r)] = e.what();
    }
  };
  std::vector<std::thread> ranks;
  for (int r = 0; r < kWorld; ++r) ranks.emplace_back(rank_main, r);
  for (auto& t : ranks) t.join();
  ::close(fd);
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(failures[static_cast<std::size_t>(r)], "") << "rank " << r;
    EXPECT_EQ(received[static_cast<std::size_t>(r)], static_cast<std::size_t>(kWorld - 1)) << "rank " << r;
  }
  EXPECT_EQ(totals[0], static_cast<std::uint64_t>(kWorld));  // summed on rank 0
  EXPECT_EQ(totals[1], 1u);
}

TEST(Cluster, RefusesBadTopology) {
  ClusterOptions o;
  o.rank = 2;
  o.world_size = 2;
  EXPECT_THROW(join_cluster(o), Error);
  o.rank = 1;
  EXPECT_THROW(join_cluster(o), Error);  // no coordinator address
  o.coordinator = "no-port";
  EXPECT_THROW(join_cluster(o), Error);
}

}  // namespace
}  // namespace kangaroo
