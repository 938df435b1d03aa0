// BUF-1..9 and chunk identity / ownership (CHUNK-1, OWN-2).
#include <gtest/gtest.h>

#include <thread>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <utility>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/chunk_id.h"

namespace kangaroo {
namespace {

std::vector<std::uint64_t> ext(std::initializer_list<std::uint64_t> e) { return e; }

TEST(Buffer, ScalarWidthsAndTags_BUF1) {
  EXPECT_EQ(scalar_width(ScalarType::opaque), 1u);
  EXPECT_EQ(scalar_width(ScalarType::u8), 1u);
  EXPECT_EQ(scalar_width(ScalarType::i64), 8u);
  EXPECT_EQ(scalar_width(ScalarType::f32), 4u);
  EXPECT_EQ(scalar_width(ScalarType::f64), 8u);
  EXPECT_EQ(parse_scalar("float32"), ScalarType::f32);
  EXPECT_EQ(parse_scalar("uint8"), ScalarType::u8);
  EXPECT_EQ(parse_scalar("int64"), ScalarType::i64);
  EXPECT_EQ(parse_scalar("float64"), ScalarType::f64);
  EXPECT_FALSE(parse_scalar("f16").has_value());
  EXPECT_FALSE(parse_scalar("").has_value());
}

TEST(Buffer, COrderAndFortranStrides_BUF2_BUF3) {
  auto c = Descriptor::c_order(ScalarType::f64, ext({4, 5, 6}));
  EXPECT_EQ(c.strides[2], 8);
  EXPECT_EQ(c.strides[1], 48);
  EXPECT_EQ(c.strides[0], 240);
  EXPECT_EQ(c.required_bytes(), 4u * 5 * 6 * 8);
  auto f = Descriptor::fortran_order(ScalarType::f32, ext({4, 5, 6}));
  EXPECT_EQ(f.strides[0], 4);
  EXPECT_EQ(f.strides[1], 16);
  EXPECT_EQ(f.strides[2], 80);
  EXPECT_NO_THROW(f.validate(4 * 5 * 6 * 4));
  EXPECT_EQ(f.strides[3], 0);
  EXPECT_EQ(f.extents[3], 0u);
}

TEST(Buffer, ValidateRejectsNonDenseStrides_BUF2) {
  auto d = Descriptor::c_order(ScalarType::f64, ext({4, 5}));
  d.strides[0] = 48;  // gap between rows
  EXPECT_THROW(d.validate(4 * 48), Error);
  auto z = Descriptor::c_order(ScalarType::f64, ext({4, 5}));
  z.strides[1] = 0;
  EXPECT_THROW(z.validate(160), Error);
}

TEST(Buffer, ValidateChecksByteCountExactly_BUF2) {
  auto d = Descriptor::c_order(ScalarType::i64, ext({3}));
  EXPECT_NO_THROW(d.validate(24));
  EXPECT_THROW(d.validate(23), Error);
  EXPECT_THROW(d.validate(25), Error);
  auto empty = Descriptor::c_order(ScalarType::f64, ext({0, 7}));
  EXPECT_EQ(empty.required_bytes(), 0u);
  EXPECT_NO_THROW(empty.validate(0));
}

TEST(Buffer, ExtentOneAxesMayHaveAnyStride_BUF2) {
  auto d = Descriptor::c_order(ScalarType::f64, ext({1, 3}));
  d.strides[0] = 1024;  // ignored because extent is 1
  EXPECT_NO_THROW(d.validate(24));
}

TEST(Buffer, OverflowIsDetected_BUF7) {
  const std::uint64_t big = std::numeric_limits<std::uint64_t>::max() / 2;
  EXPECT_THROW(Descriptor::c_order(ScalarType::f64, ext({big, 4})), Error);
  EXPECT_THROW(checked_mul(big, 3), Error);
  EXPECT_THROW(checked_add(std::numeric_limits<std::uint64_t>::max(), 1), Error);
  EXPECT_EQ(checked_mul(6, 7), 42u);
}

TEST(Buffer, OpaqueRulesAndNumericViewsFail_BUF4) {
  auto b = Buffer::allocate(Descriptor::opaque_bytes(16), InitPolicy::zero);
  EXPECT_EQ(b->rank(), 1);
  EXPECT_EQ(b->descriptor().extents[0], 16u);
  EXPECT_THROW(b->view<double>(1), Error);
  EXPECT_THROW(b->element_as_double(0), Error);
  Descriptor bad = Descriptor::opaque_bytes(8);
  bad.rank = 2;
  bad.extents[1] = 1;
  bad.strides[1] = 8;
  EXPECT_THROW(bad.validate(8), Error);
}

TEST(Buffer, TypedViewChecksTypeAndRank_BUF5) {
  auto b = Buffer::allocate(Descriptor::c_order(ScalarType::f32, ext({2, 3, 4})), InitPolicy::zero);
  EXPECT_NO_THROW(b->view<float>(3));
  EXPECT_THROW(b->view<double>(3), Error);
  EXPECT_THROW(b->view<float>(2), Error);
}

TEST(Buffer, DynamicCommitOnce_BUF6) {
  auto b = Buffer::allocate_dynamic(ScalarType::f64, 10, InitPolicy::zero);
  EXPECT_EQ(b->byte_size(), 0u);  // nothing visible before commit
  EXPECT_EQ(b->allocated_bytes(), 80u);
  b->elements<double>()[0] = 1.5;
  b->elements<double>()[1] = 2.5;
  EXPECT_THROW(b->commit(11), Error);
  b->commit(2);
  EXPECT_EQ(b->descriptor().extents[0], 2u);
  EXPECT_EQ(b->byte_size(), 16u);
  EXPECT_EQ(b->bytes().size(), 16u);
  EXPECT_THROW(b->commit(1), Error);
  auto fixed = Buffer::allocate(Descriptor::c_order(ScalarType::f64, ext({2})), InitPolicy::zero);
  EXPECT_THROW(fixed->commit(1), Error);
}

TEST(Buffer, LogicalAccessIndependentOfLayout_BUF3) {
  // The same logical array in C and Fortran order reads identically.
  auto c = Buffer::allocate(Descriptor::c_order(ScalarType::f64, ext({2, 3, 4})), InitPolicy::zero);
  auto f = Buffer::allocate(Descriptor::fortran_order(ScalarType::f64, ext({2, 3, 4})), InitPolicy::zero);
  auto cv = c->mutable_view<double>(3);
  auto fv = f->mutable_view<double>(3);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) {
        cv(i, j, k) = 100 * i + 10 * j + k;
        fv(i, j, k) = 100 * i + 10 * j + k;
      }
  for (std::uint64_t p = 0; p < 24; ++p) EXPECT_EQ(c->element_as_double(p), f->element_as_double(p)) << p;
  // Fortran: first axis fastest in memory.
  const double* raw = reinterpret_cast<const double*>(f->data());
  EXPECT_EQ(raw[1], 100.0);
  EXPECT_EQ(raw[2], 10.0);
}

TEST(Buffer, CopyConvertMapsLogicalIndicesAndCastsValues_BUF8) {
  auto src = Buffer::allocate(Descriptor::fortran_order(ScalarType::f64, ext({2, 3})), InitPolicy::zero);
  auto sv = src->mutable_view<double>(2);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) sv(i, j, 0) = i * 3 + j + 0.75;
  auto dst = Buffer::allocate(Descriptor::c_order(ScalarType::i64, ext({2, 3})), InitPolicy::zero);
  copy_convert(*src, *dst);
  const auto* d = dst->elements<std::int64_t>();
  for (int p = 0; p < 6; ++p) EXPECT_EQ(d[p], p);  // C order of i*3+j, truncated
  auto wrong = Buffer::allocate(Descriptor::c_order(ScalarType::f64, ext({3, 2})), InitPolicy::zero);
  EXPECT_THROW(copy_convert(*src, *wrong), Error);
  auto opaque = Buffer::allocate(Descriptor::opaque_bytes(48), InitPolicy::zero);
  EXPECT_THROW(copy_convert(*src, *opaque), Error);
}

TEST(Buffer, CopyConvertSaturatesNonFiniteIntoIntegers_BUF8) {
  auto src = Buffer::allocate(Descriptor::c_order(ScalarType::f64, ext({3})), InitPolicy::zero);
  src->elements<double>()[0] = std::nan("");
  src->elements<double>()[1] = 1e300;
  src->elements<double>()[2] = -5.0;
  auto dst = Buffer::allocate(Descriptor::c_order(ScalarType::u8, ext({3})), InitPolicy::zero);
  copy_convert(*src, *dst);
  EXPECT_EQ(dst->elements<std::uint8_t>()[0], 0);
  EXPECT_EQ(dst->elements<std::uint8_t>()[1], 255);
  EXPECT_EQ(dst->elements<std::uint8_t>()[2], 0);
}

TEST(Buffer, SharedStorageIsNotMutatedThroughPublishedBuffers_BUF9) {
  auto a = Buffer::allocate(Descriptor::c_order(ScalarType::f64, ext({2})), InitPolicy::zero);
  a->elements<double>()[0] = 3.0;
  ConstBufferPtr published = a;
  auto copy = Buffer::from_bytes(published->descriptor(), published->bytes());
  copy->elements<double>()[0] = 7.0;
  EXPECT_EQ(published->elements<double>()[0], 3.0);
}

TEST(Buffer, ZeroBuffersReadZeroOnEveryAllocationPath) {
  // Small ones come from calloc, large ones from lazily zero anonymous pages;
  // reuse of freed memory must not leak old contents into either.
  for (int round = 0; round < 2; ++round) {
    for (const std::uint64_t n :
         {std::uint64_t{3}, std::uint64_t{1} << 17, (std::uint64_t{1} << 20) + 5, (std::uint64_t{3} << 18) + 7}) {
      auto b = Buffer::allocate(Descriptor::c_order(ScalarType::f64, ext({n})), InitPolicy::zero);
      EXPECT_TRUE(b->known_zero());
      const double* v = std::as_const(*b).elements<double>();
      for (std::uint64_t e = 0; e < n; ++e)
        ASSERT_EQ(v[e], 0.0) << n << " element " << e;
      double* w = b->elements<double>();
      EXPECT_FALSE(b->known_zero());  // mutable access ends the guarantee
      for (std::uint64_t e = 0; e < n; e += 511)
        w[e] = 1.5;
      EXPECT_EQ(w[0], 1.5);
      EXPECT_EQ(w[1], 0.0);
    }
  }
  auto big = Buffer::allocate(Descriptor::c_order(ScalarType::u8, ext({3u << 20})),
                              InitPolicy::uninitialized);
  EXPECT_FALSE(big->known_zero());
  auto dyn = Buffer::allocate_dynamic(ScalarType::f64, 1 << 18, InitPolicy::zero);
  EXPECT_TRUE(dyn->known_zero());
  EXPECT_EQ(std::as_const(*dyn).elements<double>()[(1 << 18) - 1], 0.0);
  auto wrapped = Buffer::from_bytes(big->descriptor(), big->bytes());
  EXPECT_FALSE(wrapped->known_zero());
}

TEST(Buffer, LargeZeroBuffersSitOnHugePageBoundaries) {
  // Zero buffers of 2 MiB and more are mapped on 2 MiB boundaries (so
  // transparent huge pages can back them) unless KANGAROO_HUGE_PAGES=0; the
  // sparse-writes hint changes neither contents nor the zero guarantee.
  const char* env = std::getenv("KANGAROO_HUGE_PAGES");
  if (env != nullptr && std::string(env) == "0") GTEST_SKIP() << "huge pages turned off by KANGAROO_HUGE_PAGES=0";
  for (const std::uint64_t n : {std::uint64_t{1} << 18, (std::uint64_t{5} << 18) + 3}) {
    auto b = Buffer::allocate(Descriptor::c_order(ScalarType::f64, ext({n})), InitPolicy::zero);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b->data()) % (std::uintptr_t{2} << 20), 0u) << n;
    b->expect_sparse_writes();
    EXPECT_TRUE(b->known_zero());
    double* w = b->elements<double>();
    w[n - 1] = 2.0;
    EXPECT_EQ(w[0], 0.0);
    EXPECT_EQ(w[n / 2], 0.0);
    EXPECT_EQ(w[n - 1], 2.0);
  }
}

TEST(Buffer, CompactImagesStoreTheirRectangleAndExpandOnDenseAccess) {
  const Descriptor d = Descriptor::c_order(ScalarType::f64, ext({5, 7}));
  const NonzeroRect r{1, 4, 2, 5};
  BufferPtr b = Buffer::allocate_compact_image(d, r);
  EXPECT_TRUE(b->is_compact());
  EXPECT_TRUE(b->known_zero());
  EXPECT_EQ(b->compact_rect(), r);
  ASSERT_TRUE(b->nonzero_rect().has_value());
  EXPECT_EQ(*b->nonzero_rect(), r);
  EXPECT_EQ(b->allocated_bytes(), 5u * 7u * 8u);  // accounted at full size
  for (std::uint64_t row = r.row_begin; row < r.row_end; ++row) {
    auto* p = reinterpret_cast<double*>(b->mutable_rect_row(row));
    for (std::uint64_t c = r.col_begin; c < r.col_end; ++c) p[c - r.col_begin] = 10.0 * row + c;
  }
  EXPECT_FALSE(b->known_zero());
  EXPECT_EQ(*b->nonzero_rect(), r);  // writing rows keeps the hint
  const double* row2 = reinterpret_cast<const double*>(b->rect_row(2));
  // Dense access expands once: every element, zeros outside the rectangle.
  const double* v = std::as_const(*b).elements<double>();
  EXPECT_FALSE(b->is_compact());
  for (std::uint64_t row = 0; row < 5; ++row) {
    for (std::uint64_t c = 0; c < 7; ++c) {
      const bool in = row >= r.row_begin && row < r.row_end && c >= r.col_begin && c < r.col_end;
      EXPECT_EQ(v[row * 7 + c], in ? 10.0 * row + c : 0.0) << row << "," << c;
    }
  }
  EXPECT_EQ(b->bytes().size(), 5u * 7u * 8u);
  EXPECT_EQ(row2[0], 22.0);  // row pointers stay valid after expansion
  EXPECT_EQ(*b->nonzero_rect(), r);
  EXPECT_THROW(b->mutable_rect_row(2), Error);
  // Rows outside the rectangle, bad rectangles and layouts are refused.
  BufferPtr c = Buffer::allocate_compact_image(d, r);
  EXPECT_THROW(c->rect_row(0), Error);
  EXPECT_THROW(c->rect_row(4), Error);
  EXPECT_THROW(Buffer::allocate_compact_image(d, {0, 6, 0, 1}), Error);
  EXPECT_THROW(Buffer::allocate_compact_image(Descriptor::c_order(ScalarType::f64, ext({35})), {}), Error);
  EXPECT_THROW(Buffer::allocate_compact_image(Descriptor::opaque_bytes(35), {}), Error);
  // An empty rectangle stores nothing and reads as all zero.
  BufferPtr e = Buffer::allocate_compact_image(d, {});
  EXPECT_TRUE(e->nonzero_rect()->empty());
  EXPECT_EQ(std::as_const(*e).view<double>(2)(4, 6, 0), 0.0);
}

void check_recycled_compact_images(std::uint64_t max_rows, std::size_t keep) {
  std::mt19937_64 rng(5 + max_rows);
  struct Live {
    BufferPtr b;
    double value;
  };
  std::vector<Live> live;
  const auto holds = [](const Buffer& b, double v) {
    const NonzeroRect& r = b.compact_rect();
    for (std::uint64_t row = r.row_begin; row < r.row_end; ++row) {
      const auto* p = reinterpret_cast<const double*>(b.rect_row(row));
      for (std::uint64_t c = 0; c < r.col_end - r.col_begin; ++c) {
        if (p[c] != v) return false;
      }
    }
    return true;
  };
  for (int i = 0; i < 400; ++i) {
    const std::uint64_t rows = 1 + rng() % max_rows, cols = 1 + rng() % 800;
    BufferPtr b = Buffer::allocate_compact_image(Descriptor::c_order(ScalarType::f64, ext({rows + 5, cols + 5})),
                                                 {2, 2 + rows, 3, 3 + cols});
    ASSERT_TRUE(holds(*b, 0.0)) << "image " << i << " does not start zeroed";
    const double v = 1.0 + i;
    for (std::uint64_t row = 2; row < 2 + rows; ++row) {
      auto* p = reinterpret_cast<double*>(b->mutable_rect_row(row));
      std::fill_n(p, cols, v);
    }
    live.push_back({b, v});
    while (live.size() > keep || (!live.empty() && rng() % 3 == 0)) live.erase(live.begin() + static_cast<std::ptrdiff_t>(rng() % live.size()));
    for (const Live& l : live) ASSERT_TRUE(holds(*l.b, l.value)) << "an image changed after image " << i;
  }
}

TEST(Buffer, RecycledCompactImagesNeverOverlapAndStartZeroed) {
  // Compact images of up to 1 MiB share chunks that are recycled once all
  // their images are gone, larger ones reuse freed blocks: every new image
  // reads as zero, and no image's values change while others are written
  // and freed around it. Small images first, then a mix up to 3.8 MB.
  for (const std::uint64_t max_rows : {std::uint64_t{200}, std::uint64_t{600}}) {
    SCOPED_TRACE(max_rows);
    check_recycled_compact_images(max_rows, max_rows == 200 ? 12 : 6);
  }
}

TEST(Buffer, CompactImagesExpandOnceUnderConcurrentReaders) {
  const Descriptor d = Descriptor::c_order(ScalarType::f64, ext({300, 400}));
  for (int trial = 0; trial < 20; ++trial) {
    BufferPtr b = Buffer::allocate_compact_image(d, {10, 290, 20, 380});
    for (std::uint64_t row = 10; row < 290; ++row) reinterpret_cast<double*>(b->mutable_rect_row(row))[0] = 1.0 + row;
    const ConstBufferPtr shared = b;
    std::vector<const std::byte*> seen(4);
    std::vector<std::thread> readers;
    for (std::size_t t = 0; t < seen.size(); ++t) readers.emplace_back([&, t] { seen[t] = shared->data(); });
    for (auto& th : readers) th.join();
    for (const std::byte* p : seen) ASSERT_EQ(p, seen[0]);
    const double* v = reinterpret_cast<const double*>(seen[0]);
    EXPECT_EQ(v[11 * 400 + 20], 12.0);
    EXPECT_EQ(v[11 * 400 + 21], 0.0);
  }
}

TEST(Buffer, NonzeroRectHintIsCheckedAndDroppedOnMutation) {
  auto img = Buffer::allocate(Descriptor::c_order(ScalarType::f64, ext({4, 6})), InitPolicy::zero);
  EXPECT_FALSE(img->nonzero_rect().has_value());  // absent: anything may be nonzero
  img->set_nonzero_rect({1, 3, 2, 6});
  ASSERT_TRUE(img->nonzero_rect().has_value());
  EXPECT_EQ(*img->nonzero_rect(), (NonzeroRect{1, 3, 2, 6}));
  EXPECT_FALSE(img->nonzero_rect()->empty());
  img->set_nonzero_rect({});
  EXPECT_TRUE(img->nonzero_rect()->empty());
  img->set_nonzero_rect({0, 4, 0, 6});
  // Reading keeps the hint; any mutable access drops it.
  (void)std::as_const(*img).elements<double>();
  (void)img->view<double>(2);
  EXPECT_TRUE(img->nonzero_rect().has_value());
  (void)img->mutable_view<double>(2);
  EXPECT_FALSE(img->nonzero_rect().has_value());
  img->set_nonzero_rect({0, 1, 0, 1});
  (void)img->mutable_data();
  EXPECT_FALSE(img->nonzero_rect().has_value());

  for (const NonzeroRect& bad : {NonzeroRect{0, 5, 0, 6}, NonzeroRect{0, 4, 0, 7},
                                 NonzeroRect{3, 2, 0, 6}, NonzeroRect{0, 4, 5, 4}}) {
    try {
      img->set_nonzero_rect(bad);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::buffer);
      EXPECT_NE(std::string(e.what()).find("nonzero rectangle rows"), std::string::npos)
          << e.what();
    }
  }
  auto vec = Buffer::allocate(Descriptor::c_order(ScalarType::f64, ext({4})), InitPolicy::zero);
  EXPECT_THROW(vec->set_nonzero_rect({0, 1, 0, 1}), Error);
  auto bytes = Buffer::allocate(Descriptor::opaque_bytes(16), InitPolicy::zero);
  EXPECT_THROW(bytes->set_nonzero_rect({0, 1, 0, 1}), Error);
}

TEST(Buffer, VisitRealRejectsIntegerInputs_OPGEN1) {
  auto i = Buffer::allocate(Descriptor::c_order(ScalarType::i64, ext({1, 1, 1})), InitPolicy::zero);
  try {
    visit_real(*i, 3, [](auto) { return 0; });
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("real-buffer visitor accepts only f32 and f64 inputs"), std::string::npos);
  }
}

TEST(ChunkId, NameAndEquality_CHUNK1) {
  ChunkId id{3, 1, 1000, 2, 17};
  EXPECT_EQ(id.to_string(), "s3_l1_f1000_v2_b17");
  ChunkId same{3, 1, 1000, 2, 17};
  EXPECT_EQ(id, same);
  same.version = 0;
  EXPECT_FALSE(id == same);
  EXPECT_NE(ChunkIdHash{}(id), ChunkIdHash{}(same));
}

// OWN-2 computed by hand with explicit 64-bit arithmetic.
std::uint64_t reference_hash(std::int64_t step, std::int64_t level, std::int64_t block) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  const std::int64_t vals[3] = {step, level, block};
  for (std::int64_t v : vals) {
    const std::uint64_t u = static_cast<std::uint64_t>(v);
    const std::uint64_t add = u + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h ^= add;
  }
  return h;
}

TEST(Ownership, HomeRankFollowsReferenceFunction_OWN2) {
  for (int world : {1, 2, 3, 7, 64}) {
    for (std::int64_t b : {0, 1, 2, 99, -1}) {
      const int expected = static_cast<int>(reference_hash(0, 1, b) % static_cast<std::uint64_t>(world));
      EXPECT_EQ(home_rank(0, 1, b, world), expected) << "world " << world << " block " << b;
    }
  }
}

TEST(Ownership, FieldAndVersionDoNotMatter_OWN1) {
  ChunkId a{0, 2, 5, 0, 11};
  ChunkId b{0, 2, 999, 3, 11};
  EXPECT_EQ(home_rank(a, 5), home_rank(b, 5));
}

TEST(Ownership, BlocksSpreadOverRanks_OWN2) {
  std::vector<int> per_rank(4, 0);
  for (int b = 0; b < 400; ++b) ++per_rank[static_cast<std::size_t>(home_rank(0, 0, b, 4))];
  for (int r = 0; r < 4; ++r) EXPECT_GT(per_rank[static_cast<std::size_t>(r)], 40) << r;
}

}  // namespace
}  // namespace kangaroo

namespace kangaroo {
namespace {

TEST(StoragePool, ReusesBlocksOfTheSameSize) {
  std::byte* first = nullptr;
  {
    auto s = Storage::allocate_pooled(3 << 16);
    ASSERT_NE(s->data(), nullptr);
    EXPECT_EQ(s->size(), std::size_t{3} << 16);
    first = s->data();
    std::memset(s->data(), 0x5a, s->size());  // writable over its whole size
  }
  auto again = Storage::allocate_pooled(3 << 16);
  EXPECT_EQ(again->data(), first);  // the freed block came back
  auto other = Storage::allocate_pooled(5 << 16);
  EXPECT_NE(other->data(), first);
  auto empty = Storage::allocate_pooled(0);
  EXPECT_NE(empty->data(), nullptr);
  EXPECT_EQ(empty->size(), 0u);
}

// Blocks of a huge page and more are mappings of their own (huge-page
// aligned); they are pooled and reused like small ones.
TEST(StoragePool, LargeBlocksAreAlignedMappingsAndReused) {
  constexpr std::size_t kSize = (std::size_t{5} << 20) + 123;
  std::byte* first = nullptr;
  {
    auto s = Storage::allocate_pooled(kSize);
    first = s->data();
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(first) % (std::uintptr_t{2} << 20), 0u);
    std::memset(s->data(), 0x33, s->size());
  }
  auto again = Storage::allocate_pooled(kSize);
  EXPECT_EQ(again->data(), first);
  EXPECT_EQ(again->data()[kSize - 1], std::byte{0x33});  // the same block, as it was left
}

}  // namespace
}  // namespace kangaroo
