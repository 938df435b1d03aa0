#include "kangaroo/exec/metrics_http.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "kangaroo/core/error.h"

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
  const auto colon = host_port.rfind(':');
  if (colon == std::string::npos || colon + 1 == host_port.size()) {
    fail(ErrorKind::invalid_argument, "metrics address '" + host_port + "' is not HOST:PORT");
  }
  std::string host = host_port.substr(0, colon);
  const std::string port = host_port.substr(colon + 1);
  if (host.empty()) host = "0.0.0.0";
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* list = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &list); rc != 0) {
    fail(ErrorKind::invalid_argument, "cannot resolve metrics address '" + host_port + "': " + gai_strerror(rc));
  }
  std::string last = "no address";
  for (addrinfo* a = list; a != nullptr && fd_ < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 16) == 0) {
      fd_ = fd;
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
      port_ = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                       : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    } else {
      last = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(list);
  if (fd_ < 0) fail(ErrorKind::io, "cannot serve metrics on " + host_port + ": " + last);
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
