// Data service (§5, DS-1..3) and subbox fetches (SUBBOX-1..4).
//
// Source chunks hold the closed form value(i, j, k) = 10000 + 100*i + 10*j + k
// at global index (i, j, k), so the expected subbox contents are computed from
// the request alone, independently of how the source is laid out in memory.
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "exec_test_support.h"
#include "kangaroo/core/error.h"
#include "kangaroo/exec/data_service.h"

namespace kangaroo {
namespace {

using namespace exec_testing;

double value_at(std::int64_t i, std::int64_t j, std::int64_t k) { return 10000.0 + 100.0 * i + 10.0 * j + k; }

// Source buffer covering `box` in the requested layout and scalar type.
BufferPtr source(const IndexBox& box, ScalarType t, bool fortran) {
  const std::uint64_t ext[3] = {static_cast<std::uint64_t>(box.extent(0)), static_cast<std::uint64_t>(box.extent(1)),
                                static_cast<std::uint64_t>(box.extent(2))};
  const Descriptor d = fortran ? Descriptor::fortran_order(t, ext) : Descriptor::c_order(t, ext);
  BufferPtr b = Buffer::allocate(d, InitPolicy::zero);
  for (std::int64_t i = 0; i < box.extent(0); ++i) {
    for (std::int64_t j = 0; j < box.extent(1); ++j) {
      for (std::int64_t k = 0; k < box.extent(2); ++k) {
        const double v = value_at(box.lo[0] + i, box.lo[1] + j, box.lo[2] + k);
        switch (t) {
          case ScalarType::f64: b->mutable_view<double>(3)(i, j, k) = v; break;
          case ScalarType::f32: b->mutable_view<float>(3)(i, j, k) = static_cast<float>(v); break;
          case ScalarType::i64: b->mutable_view<std::int64_t>(3)(i, j, k) = static_cast<std::int64_t>(v); break;
          default: ADD_FAILURE() << "unsupported test dtype";
        }
      }
    }
  }
  return b;
}

// The expected C-order contents of `box`.
std::vector<double> expected_values(const IndexBox& box) {
  std::vector<double> out;
  for (std::int64_t i = box.lo[0]; i <= box.hi[0]; ++i) {
    for (std::int64_t j = box.lo[1]; j <= box.hi[1]; ++j) {
      for (std::int64_t k = box.lo[2]; k <= box.hi[2]; ++k) out.push_back(value_at(i, j, k));
    }
  }
  return out;
}

bool empty_payload(const SubboxResult& r) { return !r.payload || r.payload->byte_size() == 0; }

const IndexBox kChunk = box3(10, 20, 30, 13, 22, 34);  // extents 4 x 3 x 5

struct Layout {
  ScalarType type;
  bool fortran;
};

class SubboxLayoutTest : public ::testing::TestWithParam<Layout> {};

TEST_P(SubboxLayoutTest, IntersectionIsReturnedInCOrder) {
  const Layout l = GetParam();
  const BufferPtr src = source(kChunk, l.type, l.fortran);
  const IndexBox request = box3(11, 19, 32, 20, 21, 33);
  const IndexBox inter = box3(11, 20, 32, 13, 21, 33);
  const SubboxResult r = cut_subbox(*src, kChunk, request);
  EXPECT_EQ(r.box, inter);
  ASSERT_TRUE(r.payload);
  const Descriptor& d = r.payload->descriptor();
  EXPECT_EQ(d.scalar, l.type);
  EXPECT_EQ(d.rank, 3);
  EXPECT_EQ(extents_of(*r.payload), (std::vector<std::uint64_t>{3, 2, 2}));
  const auto w = static_cast<std::int64_t>(scalar_width(l.type));
  EXPECT_EQ(d.strides[0], 4 * w);
  EXPECT_EQ(d.strides[1], 2 * w);
  EXPECT_EQ(d.strides[2], w);
  EXPECT_EQ(r.payload->byte_size(), 12u * static_cast<std::uint64_t>(w));
  // Five-digit integers are exact in every tested dtype, f32 included.
  EXPECT_EQ(values_of(*r.payload), expected_values(inter));
}

TEST_P(SubboxLayoutTest, RequestCoveringTheChunkReturnsTheWholeChunk) {
  const Layout l = GetParam();
  const BufferPtr src = source(kChunk, l.type, l.fortran);
  const SubboxResult r = cut_subbox(*src, kChunk, box3(0, 0, 0, 100, 100, 100));
  EXPECT_EQ(r.box, kChunk);
  ASSERT_TRUE(r.payload);
  EXPECT_TRUE(r.payload->descriptor().is_c_contiguous());
  EXPECT_EQ(values_of(*r.payload), expected_values(kChunk));
}

TEST_P(SubboxLayoutTest, SingleCellRequest) {
  const Layout l = GetParam();
  const BufferPtr src = source(kChunk, l.type, l.fortran);
  const IndexBox cell = box3(13, 20, 34, 13, 20, 34);
  const SubboxResult r = cut_subbox(*src, kChunk, cell);
  EXPECT_EQ(r.box, cell);
  ASSERT_TRUE(r.payload);
  EXPECT_EQ(values_of(*r.payload), (std::vector<double>{value_at(13, 20, 34)}));
}

std::string layout_name(const ::testing::TestParamInfo<Layout>& p) {
  return std::string(scalar_name(p.param.type)) + (p.param.fortran ? "_fortran" : "_c");
}

INSTANTIATE_TEST_SUITE_P(Layouts, SubboxLayoutTest,
                         ::testing::Values(Layout{ScalarType::f64, false}, Layout{ScalarType::f64, true},
                                           Layout{ScalarType::f32, true}, Layout{ScalarType::i64, false},
                                           Layout{ScalarType::i64, true}),
                         layout_name);

// A payload is fresh storage: it does not alias the source.
TEST(Subbox, PayloadDoesNotAliasTheSource) {
  const BufferPtr src = source(kChunk, ScalarType::f64, false);
  const SubboxResult r = cut_subbox(*src, kChunk, kChunk);
  ASSERT_TRUE(r.payload);
  src->mutable_view<double>(3)(0, 0, 0) = -1.0;
  EXPECT_EQ(r.payload->element_as_double(0), value_at(10, 20, 30));
}

// SUBBOX-3
TEST(Subbox, NoOverlapGivesEmptyPayloadAndLoMinusOne) {
  const BufferPtr src = source(kChunk, ScalarType::f64, false);
  const std::vector<IndexBox> requests = {
      box3(100, 100, 100, 105, 106, 107),  // far away
      box3(14, 20, 30, 20, 22, 34),        // touches x = 13 from above: no shared cell
      box3(10, 20, -5, 13, 22, 29),        // overlaps x, y but not z
      box3(-3, 23, 31, -1, 40, 31),        // overlaps z only
  };
  for (const auto& req : requests) {
    const SubboxResult r = cut_subbox(*src, kChunk, req);
    EXPECT_TRUE(empty_payload(r)) << req.to_string();
    EXPECT_EQ(r.box.lo, req.lo) << req.to_string();
    for (int a = 0; a < 3; ++a) EXPECT_EQ(r.box.hi[a], req.lo[a] - 1) << req.to_string() << " axis " << a;
    EXPECT_TRUE(r.box.empty());
  }
}

// SUBBOX-4
TEST(Subbox, UnusableSourcesEchoTheRequestWithEmptyPayload) {
  const IndexBox req = box3(11, 21, 31, 12, 22, 33);
  const std::uint64_t e2[2] = {4, 3};
  const std::uint64_t e4[4] = {4, 3, 5, 2};
  const std::uint64_t e0[3] = {4, 0, 5};
  const std::vector<std::pair<std::string, BufferPtr>> sources = {
      {"opaque", Buffer::allocate(Descriptor::opaque_bytes(60 * 8), InitPolicy::zero)},
      {"rank2", Buffer::allocate(Descriptor::c_order(ScalarType::f64, e2), InitPolicy::zero)},
      {"rank4", Buffer::allocate(Descriptor::c_order(ScalarType::f64, e4), InitPolicy::zero)},
      {"empty", Buffer::allocate(Descriptor::c_order(ScalarType::f64, e0), InitPolicy::zero)},
  };
  for (const auto& [name, src] : sources) {
    const SubboxResult r = cut_subbox(*src, kChunk, req);
    EXPECT_TRUE(empty_payload(r)) << name;
    EXPECT_EQ(r.box, req) << name;
  }
}

// ---------------------------------------------------------------------------
// LocalDataService (DS-1..3, SUBBOX-1)

struct GetResult {
  int calls = 0;
  ConstBufferPtr value;
  std::exception_ptr error;
};

DataService::GetCallback capture(GetResult& r) {
  return [&r](ConstBufferPtr v, std::exception_ptr e) {
    ++r.calls;
    r.value = std::move(v);
    r.error = e;
  };
}

TEST(LocalDataService, GetBeforePutCompletesOnPutWithTheSameBufferForAllWaiters) {
  LocalDataService ds(nullptr);
  const ChunkId id = cid(0, 1, 5, 2, 9);
  GetResult a, b, c;
  ds.get(id, capture(a));
  ds.get(id, capture(b));
  ds.get(id, capture(c));
  EXPECT_EQ(a.calls + b.calls + c.calls, 0) << "a get before put stays pending";
  const ConstBufferPtr v = f64_scalar(4.5);
  ds.put(id, v);
  for (GetResult* r : {&a, &b, &c}) {
    EXPECT_EQ(r->calls, 1);
    EXPECT_FALSE(r->error);
    EXPECT_EQ(r->value.get(), v.get());
  }
  // A get after put completes immediately.
  GetResult late;
  ds.get(id, capture(late));
  EXPECT_EQ(late.calls, 1);
  EXPECT_EQ(late.value.get(), v.get());
  // Waiters of one identity are not woken by another.
  GetResult other;
  ds.get(cid(0, 1, 5, 3, 9), capture(other));
  EXPECT_EQ(other.calls, 0);
}

TEST(LocalDataService, PutReplacesTheEarlierValue) {
  LocalDataService ds(nullptr);
  const ChunkId id = cid(0, 0, 1, 0, 0);
  ds.put(id, f64_scalar(1.0));
  const ConstBufferPtr second = f64_scalar(2.0);
  ds.put(id, second);
  GetResult r;
  ds.get(id, capture(r));
  ASSERT_EQ(r.calls, 1);
  EXPECT_EQ(r.value.get(), second.get());
  EXPECT_EQ(values_of(*r.value), (std::vector<double>{2.0}));
  EXPECT_EQ(ds.estimate_bytes(id), 8u);
}

TEST(LocalDataService, GetServesDatasetChunks) {
  auto dataset = std::make_shared<MemoryDataset>();
  const ChunkId id = cid(3, 0, 7, 0, 2);
  dataset->set_chunk(id, f64_buffer({3}, {1.0, 2.0, 3.0}));
  LocalDataService ds(dataset);
  EXPECT_EQ(ds.estimate_bytes(id), 24u);
  EXPECT_EQ(ds.estimate_bytes(cid(3, 0, 7, 0, 3)), 0u);
  GetResult r;
  ds.get(id, capture(r));
  ASSERT_EQ(r.calls, 1);
  EXPECT_EQ(values_of(*r.value), (std::vector<double>{1.0, 2.0, 3.0}));
  EXPECT_EQ(ds.world_size(), 1);
  EXPECT_EQ(ds.rank(), 0);
}

TEST(LocalDataService, GetSubboxWaitsForTheSource) {
  LocalDataService ds(nullptr);
  const ChunkId id = cid(0, 2, 11, 0, 4);
  const IndexBox request = box3(12, 21, 30, 13, 21, 31);
  int calls = 0;
  SubboxResult got;
  std::exception_ptr err;
  auto done = [&](SubboxResult r, std::exception_ptr e) {
    ++calls;
    got = std::move(r);
    err = e;
  };
  ds.get_subbox(id, kChunk, request, done);
  EXPECT_EQ(calls, 0);
  ds.put(id, source(kChunk, ScalarType::f64, true));
  ASSERT_EQ(calls, 1);
  EXPECT_FALSE(err);
  EXPECT_EQ(got.box, request);
  ASSERT_TRUE(got.payload);
  EXPECT_EQ(values_of(*got.payload), expected_values(request));

  // Once published, a subbox completes at once; no overlap echoes SUBBOX-3.
  calls = 0;
  const IndexBox far = box3(50, 50, 50, 51, 51, 51);
  ds.get_subbox(id, kChunk, far, done);
  ASSERT_EQ(calls, 1);
  EXPECT_TRUE(empty_payload(got));
  EXPECT_EQ(got.box.lo, far.lo);
  EXPECT_EQ(got.box.hi, (std::array<std::int32_t, 3>{49, 49, 49}));
}

TEST(LocalDataService, ConcurrentGetsAndPutAgree) {
  LocalDataService ds(nullptr);
  const ChunkId id = cid(0, 0, 42, 0, 0);
  constexpr int kReaders = 8;
  std::vector<GetResult> results(kReaders);
  std::mutex mu;
  std::vector<std::thread> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.emplace_back([&, i] {
      ds.get(id, [&, i](ConstBufferPtr v, std::exception_ptr e) {
        std::lock_guard lk(mu);
        ++results[static_cast<std::size_t>(i)].calls;
        results[static_cast<std::size_t>(i)].value = std::move(v);
        results[static_cast<std::size_t>(i)].error = e;
      });
    });
  }
  const ConstBufferPtr v = f64_scalar(9.0);
  std::thread writer([&] { ds.put(id, v); });
  for (auto& t : readers) t.join();
  writer.join();
  for (const auto& r : results) {
    EXPECT_EQ(r.calls, 1);
    EXPECT_EQ(r.value.get(), v.get());
  }
}

}  // namespace
}  // namespace kangaroo
