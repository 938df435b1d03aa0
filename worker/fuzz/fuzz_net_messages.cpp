// libFuzzer target for what ranks read from each other: control messages
// (kangaroo::decode_control) and chunk wire headers (decode_wire_header).
//
// Any byte string must either decode or fail with kangaroo::Error. A decoded
// control message must survive encode -> decode unchanged; a decoded wire
// header must describe a payload its descriptor accepts.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>

#include "kangaroo/core/error.h"
#include "kangaroo/net/cluster.h"
#include "kangaroo/net/transport.h"

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_net_messages: %s\n", what);
  std::abort();
}

bool same(const kangaroo::ControlMessage& a, const kangaroo::ControlMessage& b) {
  return a.kind == b.kind && a.rank == b.rank && a.world_size == b.world_size && a.stage == b.stage &&
         a.counts == b.counts && a.text == b.text && a.texts == b.texts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  try {
    const kangaroo::ControlMessage m = kangaroo::decode_control(std::span(bytes, size));
    const std::string frame = kangaroo::encode_control(m);
    if (frame.size() < 4) finding("encoded frame lacks its length prefix");
    std::uint32_t n = 0;
    std::memcpy(&n, frame.data(), 4);
    if (n + 4u != frame.size()) finding("length prefix disagrees with the frame");
    const auto back = kangaroo::decode_control(std::span(reinterpret_cast<const std::byte*>(frame.data()) + 4, n));
    if (!same(m, back)) finding("control message changed across encode/decode");
  } catch (const kangaroo::Error&) {
  }
  if (size >= kangaroo::kWireHeaderBytes) {
    try {
      const kangaroo::WireChunk w = kangaroo::decode_wire_header(bytes);
      w.desc.validate(w.nbytes);  // must not throw for an accepted header
    } catch (const kangaroo::Error&) {
    }
  }
  return 0;
}
