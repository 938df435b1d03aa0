// Chunk transfer throughput between two ranks over the UCX transport
// (kangaroo/net/transport.h): rank 0 posts chunks of one size to rank 1 with
// a window of outstanding sends, rank 1 receives them into fresh buffers;
// one JSON line per size with MiB/s measured on rank 1 (first byte of the
// timed batch to last byte). Both ranks are processes of this program.
//
//   kangaroo-bench-transfer [--sizes 65536,1048576,...] [--bytes-per-size N] [--window W]
//                           [--source-buffers B]   (B written buffers sent round robin, default 16)
//                           [--pin 1]   (rank 0 on the first allowed CPU, rank 1 on the second)
// UCX_TLS selects the transport (e.g. tcp or sm,self), as for ucx_perftest.
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <sstream>
#include <string>
#include <vector>

#include "kangaroo/core/error.h"
#include "kangaroo/net/transport.h"

using namespace kangaroo;

namespace {

std::vector<std::uint64_t> parse_sizes(const std::string& text) {
  std::vector<std::uint64_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoull(item));
  return out;
}

// Pins this process to the `index`-th CPU it may run on; false when there
// are not that many.
bool pin_to_allowed_cpu(int index) {
  cpu_set_t allowed;
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) return false;
  for (int cpu = 0, seen = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed) || seen++ != index) continue;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    return ::sched_setaffinity(0, sizeof one, &one) == 0;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::uint64_t> sizes = {65536, 1 << 20, 4 << 20, 16 << 20};
  std::uint64_t per_size = 1ull << 30;
  int window = 16;
  int sources = 16;
  bool pin = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--sizes") sizes = parse_sizes(v);
    else if (a == "--bytes-per-size") per_size = std::stoull(v);
    else if (a == "--window") window = std::stoi(v);
    else if (a == "--source-buffers") sources = std::stoi(v);
    else if (a == "--pin") pin = v != "0";
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 1;
  const pid_t child = ::fork();
  const int rank = child == 0 ? 1 : 0;
  const int fd = rank == 0 ? sv[0] : sv[1];
  ::close(rank == 0 ? sv[1] : sv[0]);
  if (pin && !pin_to_allowed_cpu(rank)) {
    std::fprintf(stderr, "rank %d: fewer than two CPUs to pin to\n", rank);
    return 1;
  }
  try {
    auto t = make_ucx_transport(rank, 2);
    t->connect(1 - rank, exchange_address(fd, t->address()));
    for (const auto size : sizes) {
      const std::uint64_t count = std::max<std::uint64_t>(16, per_size / size);
      const std::uint64_t warm = std::max<std::uint64_t>(4, count / 10);
      const std::uint64_t ext[] = {size};
      if (rank == 0) {
        // A few source buffers reused round robin, as a rank sending chunks it holds.
        std::vector<ConstBufferPtr> bufs;
        // Written before the timed batch, as chunks a rank holds are: pages
        // never written would be faulted in by the first transfers.
        for (int b = 0; b < sources; ++b) {
          BufferPtr buf = Buffer::allocate(Descriptor::c_order(ScalarType::u8, ext), InitPolicy::uninitialized);
          std::memset(buf->mutable_data(), 0x5a + b, size);
          bufs.push_back(std::move(buf));
        }
        std::deque<std::uint64_t> inflight;
        for (std::uint64_t i = 0; i < warm + count; ++i) {
          if (inflight.size() >= static_cast<std::size_t>(window)) {
            t->wait(inflight.front());
            inflight.pop_front();
          }
          inflight.push_back(t->post_send(1, ChunkId{0, 0, 1, 0, static_cast<std::int32_t>(i)},
                                          bufs[i % bufs.size()]));
        }
        while (!inflight.empty()) {
          t->wait(inflight.front());
          inflight.pop_front();
        }
        char ack = 0;
        if (::read(fd, &ack, 1) != 1) return 1;  // rank 1 has everything
      } else {
        ChunkId id;
        for (std::uint64_t i = 0; i < warm; ++i) (void)t->receive(0, id);
        const auto t0 = std::chrono::steady_clock::now();
        std::uint64_t bytes = 0;
        for (std::uint64_t i = 0; i < count; ++i) bytes += t->receive(0, id)->byte_size();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("{\"size\": %llu, \"chunks\": %llu, \"seconds\": %.6f, \"mib_per_s\": %.1f, \"transport\": \"%s\"}\n",
                    static_cast<unsigned long long>(size), static_cast<unsigned long long>(count), s,
                    static_cast<double>(bytes) / s / 1048576.0, t->description().c_str());
        std::fflush(stdout);
        const char ack = 1;
        if (::write(fd, &ack, 1) != 1) return 1;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    if (rank == 1) ::_exit(1);
    return 1;
  }
  if (rank == 1) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
