// Per-rank metrics endpoint (seed §8): a small HTTP/1.1 server on its own
// thread that answers GET /metrics with the registry in Prometheus text
// format. `refresh` runs before each render to pull values kept elsewhere
// (spill, transport and memory snapshots).
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "kangaroo/core/metrics.h"

namespace kangaroo {

class MetricsServer {
 public:
  // Listens on HOST:PORT (PORT 0 picks one); throws Error(io) when it cannot.
  MetricsServer(const std::string& host_port, MetricRegistry& registry, std::function<void()> refresh);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  int port() const { return port_; }

 private:
  void loop();
  MetricRegistry& registry_;
  std::function<void()> refresh_;
  int fd_ = -1;
  int port_ = 0;
  int stop_fd_ = -1;
  std::thread thread_;
};

}  // namespace kangaroo
