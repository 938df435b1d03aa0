// .npy codec used for seeding datasets and writing results.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <utility>

#include "kangaroo/core/npy.h"
#include "kangaroo/data/memory_dataset.h"

namespace kangaroo {
namespace {

std::vector<std::byte> npy_bytes(const std::string& header_dict, const std::vector<std::byte>& payload, int version = 1) {
  std::string header = header_dict;
  const std::size_t prefix = version == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::vector<std::byte> out;
  const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  for (auto c : magic) out.push_back(static_cast<std::byte>(c));
  out.push_back(static_cast<std::byte>(version));
  out.push_back(std::byte{0});
  if (version == 1) {
    out.push_back(static_cast<std::byte>(header.size() & 0xff));
    out.push_back(static_cast<std::byte>(header.size() >> 8));
  } else {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::byte>((header.size() >> (8 * i)) & 0xff));
  }
  for (char c : header) out.push_back(static_cast<std::byte>(c));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

std::vector<std::byte> doubles(std::initializer_list<double> v) {
  std::vector<std::byte> out(v.size() * 8);
  std::size_t i = 0;
  for (double d : v) std::memcpy(out.data() + 8 * i++, &d, 8);
  return out;
}

TEST(Npy, DecodesCOrderF64) {
  auto b = decode_npy(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
                                doubles({0, 1, 2, 3, 4, 5})),
                      "test");
  EXPECT_EQ(b->rank(), 2);
  EXPECT_EQ(b->descriptor().extents[0], 2u);
  EXPECT_EQ(b->descriptor().extents[1], 3u);
  EXPECT_EQ(b->element_as_double(4), 4.0);
}

TEST(Npy, DecodesFortranOrderAsStrides) {
  // Logical (i, j) = 10 i + j stored column-major.
  auto b = decode_npy(npy_bytes("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }",
                                doubles({0, 10, 1, 11, 2, 12})),
                      "test");
  auto v = b->view<double>(2);
  EXPECT_EQ(v(1, 2, 0), 12.0);
  EXPECT_EQ(v(0, 1, 0), 1.0);
  // Writing back produces C order.
  auto again = decode_npy(encode_npy(*b), "roundtrip");
  EXPECT_TRUE(again->descriptor().is_c_contiguous());
  for (std::uint64_t p = 0; p < 6; ++p) EXPECT_EQ(again->element_as_double(p), b->element_as_double(p));
}

TEST(Npy, Version2HeaderAndScalars) {
  auto b = decode_npy(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", doubles({7.5}), 2), "v2");
  EXPECT_EQ(b->descriptor().element_count(), 1u);
  EXPECT_EQ(b->element_as_double(0), 7.5);
}

TEST(Npy, RoundTripsEveryNumericType) {
  for (ScalarType t : {ScalarType::u8, ScalarType::i64, ScalarType::f32, ScalarType::f64}) {
    const std::uint64_t e[3] = {2, 1, 3};
    auto b = Buffer::allocate(Descriptor::c_order(t, e), InitPolicy::zero);
    for (std::uint64_t p = 0; p < 6; ++p) std::memset(b->mutable_data() + p * scalar_width(t), static_cast<int>(p + 1), 1);
    auto back = decode_npy(encode_npy(*b), "rt");
    EXPECT_EQ(back->scalar(), t);
    EXPECT_EQ(back->descriptor().extents, b->descriptor().extents);
    EXPECT_TRUE(std::equal(back->bytes().begin(), back->bytes().end(), b->bytes().begin()));
  }
}

TEST(Npy, WritesFilesWithoutCopyingAndInCOrder) {
  // C-order data go straight from the buffer, other layouts through
  // encode_npy; both files read back as the same logical array, and no
  // temporary file stays behind.
  const auto dir = std::filesystem::temp_directory_path() / ("npy-write-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto c = decode_npy(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
                                doubles({0, 1, 2, 10, 11, 12})),
                      "c");
  auto f = decode_npy(npy_bytes("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }",
                                doubles({0, 10, 1, 11, 2, 12})),
                      "f");
  for (const auto& [name, buf] : {std::pair{"c.npy", c}, std::pair{"f.npy", f}}) {
    const std::string path = (dir / name).string();
    write_npy_file_atomic(path, *buf);
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
    const auto bytes = read_file_bytes(path, 1 << 20);
    EXPECT_EQ(bytes, encode_npy(*buf)) << name;
    auto back = read_npy_file(path);
    EXPECT_TRUE(back->descriptor().is_c_contiguous());
    for (std::uint64_t p = 0; p < 6; ++p) EXPECT_EQ(back->element_as_double(p), c->element_as_double(p)) << name;
  }
  std::filesystem::remove_all(dir);
}

TEST(Npy, RejectsMalformedInputWithOrigin) {
  const std::string ok = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
  auto expect_bad = [](const std::vector<std::byte>& bytes, const std::string& needle) {
    try {
      decode_npy(bytes, "file.npy");
      FAIL() << "accepted malformed input (" << needle << ")";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("file.npy"), std::string::npos) << what;
      EXPECT_NE(what.find(needle), std::string::npos) << what;
    }
  };
  expect_bad(npy_bytes(ok, doubles({1.0})), "payload");                        // short payload
  expect_bad(npy_bytes(ok, doubles({1.0, 2.0, 3.0})), "payload");              // long payload
  expect_bad(npy_bytes("{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }", doubles({1.0})), "dtype");
  expect_bad(npy_bytes("{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }", doubles({1.0, 2.0})), "dtype");
  expect_bad(npy_bytes("{'descr': '<f8', 'shape': (1,), }", doubles({1.0})), "fortran_order");
  expect_bad(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1,x), }", doubles({1.0})), "shape");
  expect_bad(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1,1,1,1,1), }", doubles({1.0})), "rank");
  std::vector<std::byte> truncated = npy_bytes(ok, doubles({1.0, 2.0}));
  truncated.resize(9);
  expect_bad(truncated, "magic");
  std::vector<std::byte> huge_header = npy_bytes(ok, doubles({1.0, 2.0}));
  huge_header[8] = std::byte{0xff};
  huge_header[9] = std::byte{0xff};
  expect_bad(huge_header, "header length");
}

TEST(Npy, ChunkFileNames_BACKMEM) {
  auto id = parse_chunk_name("s2_l1_f1000_v3_b17");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->step, 2);
  EXPECT_EQ(id->level, 1);
  EXPECT_EQ(id->field, 1000);
  EXPECT_EQ(id->version, 3);
  EXPECT_EQ(id->block, 17);
  EXPECT_EQ(parse_chunk_name("s-1_l0_f5_v0_b0")->step, -1);
  EXPECT_FALSE(parse_chunk_name("s0_l0_f5_v0").has_value());
  EXPECT_FALSE(parse_chunk_name("s0_l0_f5_v0_b0_extra").has_value());
  EXPECT_FALSE(parse_chunk_name("s0_l99999_f5_v0_b0").has_value());
  EXPECT_FALSE(parse_chunk_name("density").has_value());
}

TEST(MemoryDataset, SetGetAndRawWrites_BACKMEM1_3) {
  MemoryDataset ds;
  EXPECT_EQ(ds.kind(), "memory");
  ChunkId a{0, 0, 1, 0, 0};
  ChunkId b{0, 0, 1, 1, 0};  // another version coexists
  const std::vector<std::byte> bytes = doubles({1, 2, 3, 4});
  ds.set_chunk_raw(a, "f64", std::vector<std::uint64_t>{2, 2}, bytes);
  ds.set_chunk_raw(b, "float64", std::vector<std::uint64_t>{4}, bytes);
  EXPECT_EQ(ds.get_chunk(a)->rank(), 2);
  EXPECT_EQ(ds.get_chunk(b)->rank(), 1);
  EXPECT_EQ(ds.estimate_chunk_bytes(a), 32u);
  EXPECT_EQ(ds.get_chunk({0, 0, 2, 0, 0}), nullptr);
  EXPECT_EQ(ds.metadata_json(0), "{}");
  auto expect_msg = [&](auto&& fn, const std::string& needle) {
    try {
      fn();
      FAIL() << "expected failure: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_msg([&] { ds.set_chunk_raw(a, "f64", std::nullopt, bytes); }, "numeric chunk writes require an explicit shape");
  expect_msg([&] { ds.set_chunk_raw(a, "opaque", std::vector<std::uint64_t>{3}, bytes); },
             "opaque chunk shape must equal its byte count");
  expect_msg([&] { ds.set_chunk_raw(a, "c64", std::vector<std::uint64_t>{4}, bytes); }, "unsupported chunk dtype: c64");
  expect_msg([&] { ds.set_chunk_raw(a, "f64", std::vector<std::uint64_t>{3}, bytes); }, "needs 24 bytes");
  ds.set_chunk_raw(a, "opaque", std::nullopt, bytes);
  EXPECT_EQ(ds.get_chunk(a)->scalar(), ScalarType::opaque);  // replaced
}

TEST(MemoryDataset, SeedsFromDirectory) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("kangaroo_seed_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::uint64_t e[1] = {3};
  auto buf = Buffer::allocate(Descriptor::c_order(ScalarType::f64, e), InitPolicy::zero);
  buf->elements<double>()[2] = 9.0;
  write_file_atomic((dir / "s0_l0_f7_v0_b2.npy").string(), encode_npy(*buf));
  const std::byte raw[3] = {std::byte{1}, std::byte{2}, std::byte{3}};
  write_file_atomic((dir / "s0_l0_f8_v0_b0.bin").string(), raw);
  write_file_atomic((dir / "notes.txt").string(), raw);
  MemoryDataset ds;
  EXPECT_EQ(ds.seed_from_directory(dir.string()), 2u);
  EXPECT_EQ(ds.get_chunk({0, 0, 7, 0, 2})->element_as_double(2), 9.0);
  EXPECT_EQ(ds.get_chunk({0, 0, 8, 0, 0})->byte_size(), 3u);
  write_file_atomic((dir / "badname.npy").string(), encode_npy(*buf));
  EXPECT_THROW(ds.seed_from_directory(dir.string()), Error);
  EXPECT_THROW(ds.seed_from_directory((dir / "missing").string()), Error);
  fs::remove_all(dir);
}

TEST(MemoryDataset, ReadOnlyBackendsRejectWrites_BACK5) {
  // The default Dataset::set_chunk is the read-only behaviour.
  struct ReadOnly : Dataset {
    std::string u = "x://";
    std::string_view kind() const override { return "amrex"; }
    const std::string& uri() const override { return u; }
    ConstBufferPtr get_chunk(const ChunkId&) override { return nullptr; }
    bool has_chunk(const ChunkId&) const override { return false; }
    std::uint64_t estimate_chunk_bytes(const ChunkId&) const override { return 0; }
    std::string metadata_json(std::int32_t) const override { return "{}"; }
    void register_field(std::int32_t, const std::string&) override {}
    void register_field_component(std::int32_t, std::int32_t) override {}
  } ro;
  try {
    ro.set_chunk({}, nullptr);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Cannot set_chunk on read-only backend"), std::string::npos);
  }
  EXPECT_THROW(ro.particle_chunk_count("electrons"), Error);
  EXPECT_THROW(ro.read_particle_field("electrons", "x", 0), Error);
}

}  // namespace
}  // namespace kangaroo
