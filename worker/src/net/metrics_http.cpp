#include "kangaroo/net/metrics_http.h"

#include <tuple>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "kangaroo/core/error.h"
#include "kangaroo/net/cluster.h"

namespace kangaroo {

namespace {

void send_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    const ssize_t w = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    done += static_cast<std::size_t>(w);
  }
}

std::string reply(int code, const char* reason, const std::string& type, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(code) + " " + reason + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

MetricsServer::MetricsServer(const std::string& host_port, MetricRegistry& registry, std::function<void()> refresh)
    : registry_(registry), refresh_(std::move(refresh)) {
  std::string where = host_port;
  if (where.rfind(':', 0) == 0) where = "0.0.0.0" + where;  // ":PORT": every interface
  try {
    std::tie(fd_, port_) = listen_tcp(where);
  } catch (const Error& e) {
    fail(e.kind(), std::string("cannot serve metrics: ") + e.what());
  }
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  thread_ = std::thread([this] { loop(); });
}

MetricsServer::~MetricsServer() {
  const std::uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof one);
  thread_.join();
  ::close(fd_);
  ::close(stop_fd_);
}

void MetricsServer::loop() {
  for (;;) {
    pollfd p[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0 && errno != EINTR) return;
    if (p[1].revents != 0) return;
    if ((p[0].revents & POLLIN) == 0) continue;
    const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    // One short request per connection; a slow client gets two seconds.
    std::string req;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192) {
      pollfd q{c, POLLIN, 0};
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0 || ::poll(&q, 1, static_cast<int>(left)) <= 0) break;
      char buf[2048];
      const ssize_t r = ::recv(c, buf, sizeof buf, 0);
      if (r <= 0) break;
      req.append(buf, static_cast<std::size_t>(r));
    }
    if (req.rfind("GET /metrics", 0) == 0 && (req.size() == 12 || req[12] == ' ' || req[12] == '?')) {
      if (refresh_) refresh_();
      send_all(c, reply(200, "OK", "text/plain; version=0.0.4", registry_.render()));
    } else if (req.rfind("GET ", 0) == 0) {
      send_all(c, reply(404, "Not Found", "text/plain", "only /metrics is served here\n"));
    } else {
      send_all(c, reply(400, "Bad Request", "text/plain", "expected GET /metrics\n"));
    }
    ::close(c);
  }
}

}  // namespace kangaroo
