// HTTPS front end of the gateway. The only header the rest of the gateway
// needs from the server; Beast and Asio stay inside server.cpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "api.h"

namespace kangaroo::gateway {

struct ServerOptions {
  std::string host = "127.0.0.1";
  unsigned short port = 8443;  // 0: any free port
  std::string cert_file, key_file;
  int threads = 2;
  std::chrono::seconds read_timeout{30};
  std::uint64_t max_body = 64ull << 20;
  std::string ready_file;  // receives "https://host:port\n" once listening
};

// Serves until SIGINT/SIGTERM. Throws std::runtime_error on set-up failures
// (certificate, bind) with what to fix.
void run_server(Api& api, MetricRegistry& metrics, const ServerOptions& opt);

}  // namespace kangaroo::gateway
