// libFuzzer target for the .npy reader (kangaroo::decode_npy).
//
// Any byte string must either decode or fail with kangaroo::Error. A decoded
// buffer must have a valid descriptor, and encode_npy -> decode_npy must give
// the same dtype, extents and element values (the encoding is C order, so a
// Fortran-order input comes back with other strides but the same logical
// values), with the second encoding identical to the first.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "kangaroo/core/buffer.h"
#include "kangaroo/core/error.h"
#include "kangaroo/core/npy.h"

namespace {

[[noreturn]] void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_npy: %s\n%s\n", what, detail.c_str());
  std::abort();
}

bool same_value(double a, double b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, sizeof a) == 0;
}

// Element comparisons per input stay cheap.
constexpr std::uint64_t kMaxCompared = 4096;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);

  kangaroo::BufferPtr first;
  try {
    first = kangaroo::decode_npy(bytes, "fuzz input");
  } catch (const kangaroo::Error&) {
    return 0;
  }
  if (!first) finding("decode_npy returned null", "");
  const kangaroo::Descriptor& d = first->descriptor();
  try {
    d.validate(first->byte_size());
  } catch (const kangaroo::Error& e) {
    finding("decoded buffer has an invalid descriptor", e.what());
  }
  if (first->bytes().size() != first->byte_size())
    finding("visible bytes differ from the descriptor size", "");

  std::vector<std::byte> encoded;
  kangaroo::BufferPtr second;
  try {
    encoded = kangaroo::encode_npy(*first);
    second = kangaroo::decode_npy(encoded, "re-encoded");
  } catch (const kangaroo::Error& e) {
    finding("decoded buffer does not round-trip", e.what());
  }
  const kangaroo::Descriptor& e = second->descriptor();
  if (e.scalar != d.scalar || e.rank != d.rank || e.extents != d.extents) {
    finding("round trip changed the descriptor", d.to_string() + " -> " + e.to_string());
  }
  const std::uint64_t n = d.element_count();
  const std::uint64_t limit = n < kMaxCompared ? n : kMaxCompared;
  for (std::uint64_t p = 0; p < limit; ++p) {
    if (!same_value(first->element_as_double(p), second->element_as_double(p))) {
      finding("round trip changed element", std::to_string(p));
    }
  }
  if (kangaroo::encode_npy(*second) != encoded)
    finding("encoding is not a fixed point", d.to_string());
  return 0;
}
