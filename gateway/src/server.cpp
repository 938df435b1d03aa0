// Boost.Beast + OpenSSL server: one C++20 coroutine per connection, keep-alive,
// TLS 1.2+ only, header/body limits and read timeouts; replies come from Api.
#include <utility>  // before Asio: its C++20 coroutine support needs std::exchange

#include "server.h"

#include "api_error.h"

#include <openssl/ssl.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Stream = beast::ssl_stream<beast::tcp_stream>;

namespace kangaroo::gateway {
namespace {

// Event streams sleep on a timer that a job change cancels (JobStore
// listener), so progress reaches clients without polling delay.
struct Watcher {
  explicit Watcher(const asio::any_io_executor& ex) : timer(ex) {}
  std::atomic<bool> pending{false};
  asio::steady_timer timer;
};

class Watchers {
 public:
  void add(const std::string& id, const std::shared_ptr<Watcher>& w) {
    std::lock_guard lock(mu_);
    map_.emplace(id, w);
  }
  void remove(const std::string& id, const std::shared_ptr<Watcher>& w) {
    std::lock_guard lock(mu_);
    auto [a, b] = map_.equal_range(id);
    for (auto it = a; it != b; ++it) {
      if (it->second == w) {
        map_.erase(it);
        break;
      }
    }
  }
  void notify(const std::string& id) {
    std::lock_guard lock(mu_);
    auto [a, b] = map_.equal_range(id);
    for (auto it = a; it != b; ++it) {
      std::shared_ptr<Watcher> w = it->second;
      w->pending.store(true);
      asio::post(w->timer.get_executor(), [w] { w->timer.cancel(); });
    }
  }

 private:
  std::mutex mu_;
  std::unordered_multimap<std::string, std::shared_ptr<Watcher>> map_;
};

struct Shared {
  Api& api;
  Watchers& watchers;
  const ServerOptions& opt;
  MetricFamily& requests;
  MetricFamily& durations;
  MetricFamily& connections;
  MetricFamily& handshake_failures;
};

template <class Res>
void add_headers(Res& res, const Reply& r) {
  res.set(http::field::server, "kangaroo-gateway");
  res.set(http::field::content_type, r.content_type);
  for (const auto& [k, v] : r.headers) res.set(k, v);
}

asio::awaitable<bool> write_buffer(Stream& stream, const Reply& r, unsigned version, bool keep_alive) {
  beast::error_code ec;
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  add_headers(res, r);
  res.keep_alive(keep_alive);
  res.body() = r.body;
  res.prepare_payload();
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(60));
  co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec;
}

asio::awaitable<bool> write_file(Stream& stream, const Reply& r, unsigned version, bool keep_alive) {
  beast::error_code ec;
  auto token = asio::redirect_error(asio::use_awaitable, ec);
  std::ifstream in(r.path, std::ios::binary);
  if (!in) {
    Reply e = Api::error_reply(500, "internal", "result chunk is unreadable on the server");
    co_return co_await write_buffer(stream, e, version, false);
  }
  in.seekg(static_cast<std::streamoff>(r.offset));
  http::response<http::buffer_body> res{static_cast<http::status>(r.status), version};
  add_headers(res, r);
  res.keep_alive(keep_alive);
  res.content_length(r.length);
  res.body().data = nullptr;
  res.body().more = true;
  http::response_serializer<http::buffer_body> sr{res};
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(60));
  co_await http::async_write_header(stream, sr, token);
  if (ec) co_return false;
  std::vector<char> buf(1 << 20);
  std::uint64_t left = r.length;
  while (left > 0) {
    const auto want = static_cast<std::streamsize>(std::min<std::uint64_t>(left, buf.size()));
    in.read(buf.data(), want);
    if (in.gcount() != want) co_return false;  // file changed underneath: drop the connection
    left -= static_cast<std::uint64_t>(want);
    res.body().data = buf.data();
    res.body().size = static_cast<std::size_t>(want);
    res.body().more = left > 0;
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(60));
    co_await http::async_write(stream, sr, token);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return false;
  }
  if (!sr.is_done()) {
    res.body().data = nullptr;
    res.body().size = 0;
    res.body().more = false;
    co_await http::async_write(stream, sr, token);
    if (ec && ec != http::error::need_buffer) co_return false;
  }
  co_return true;
}

std::string sse(const char* event, const nlohmann::json& data) {
  return std::string("event: ") + event + "\ndata: " + dump_json(data) + "\n\n";
}

asio::awaitable<bool> write_events(Stream& stream, Shared& sh, const Reply& r, unsigned version, bool keep_alive) {
  beast::error_code ec;
  auto token = asio::redirect_error(asio::use_awaitable, ec);
  http::response<http::empty_body> res{http::status::ok, version};
  add_headers(res, r);
  res.set(http::field::cache_control, "no-cache");
  res.keep_alive(keep_alive);
  res.chunked(true);
  http::response_serializer<http::empty_body> sr{res};
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(60));
  co_await http::async_write_header(stream, sr, token);
  if (ec) co_return false;
  auto watcher = std::make_shared<Watcher>(co_await asio::this_coro::executor);
  sh.watchers.add(r.job_id, watcher);
  struct Unwatch {
    Watchers& ws;
    const std::string& id;
    std::shared_ptr<Watcher>& w;
    ~Unwatch() { ws.remove(id, w); }
  } unwatch{sh.watchers, r.job_id, watcher};
  std::string last_state;
  std::uint64_t last_done = ~0ull, last_total = ~0ull;
  for (;;) {
    watcher->pending.store(false);
    auto rec = sh.api.jobs().get(r.tenant, r.job_id);
    if (!rec) break;
    std::string text;
    const std::string state = state_name(rec->state);
    if (rec->done != last_done || rec->total != last_total) {
      text += sse("progress", {{"done", rec->done}, {"total", rec->total}});
      last_done = rec->done;
      last_total = rec->total;
    }
    if (state != last_state) {
      text += sse("state", rec->to_json());
      last_state = state;
    }
    if (!text.empty()) {
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(60));
      co_await asio::async_write(stream, http::make_chunk(asio::buffer(text)), token);
      if (ec) co_return false;
    }
    if (is_terminal(rec->state)) break;
    if (!watcher->pending.exchange(false)) {
      watcher->timer.expires_after(std::chrono::seconds(2));
      co_await watcher->timer.async_wait(token);  // cancelled by a change, or a periodic re-check
      ec = {};
    }
  }
  co_await asio::async_write(stream, http::make_chunk_last(), token);
  co_return !ec && keep_alive;
}

asio::awaitable<void> session(Stream stream, Shared& sh) {
  beast::error_code ec;
  auto token = asio::redirect_error(asio::use_awaitable, ec);
  auto& open = sh.connections.series();
  open.add(1);
  struct Closer {
    MetricSeries& s;
    ~Closer() { s.add(-1); }
  } closer{open};

  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
  co_await stream.async_handshake(ssl::stream_base::server, token);
  if (ec) {
    sh.handshake_failures.series().add(1);
    co_return;
  }
  beast::flat_buffer buf;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(sh.opt.max_body);
    beast::get_lowest_layer(stream).expires_after(sh.opt.read_timeout);
    co_await http::async_read(stream, buf, parser, token);
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::eof ||
        ec == ssl::error::stream_truncated || ec == asio::error::connection_reset) {
      break;
    }
    if (ec) {
      const bool too_large = ec == http::error::body_limit || ec == http::error::header_limit;
      Reply e = too_large ? Api::error_reply(413, "too_large",
                                             ec == http::error::body_limit
                                                 ? "request body exceeds the limit of " +
                                                       std::to_string(sh.opt.max_body) + " bytes"
                                                 : "request headers exceed 16 KiB")
                          : Api::error_reply(400, "bad_request", "malformed HTTP request: " + ec.message());
      sh.requests.with({"other", std::to_string(e.status)}).add(1);
      co_await write_buffer(stream, e, 11, false);
      break;
    }
    auto& msg = parser.get();
    const auto t0 = std::chrono::steady_clock::now();
    Request req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    // Only the headers the API reads (lower-case names, as Api expects).
    for (const auto& [field, name] : {std::pair{http::field::authorization, "authorization"},
                                      std::pair{http::field::range, "range"},
                                      std::pair{http::field::content_type, "content-type"}}) {
      if (auto it = msg.find(field); it != msg.end()) req.headers[name] = std::string(it->value());
    }
    if (auto it = msg.find("Idempotency-Key"); it != msg.end()) req.headers["idempotency-key"] = std::string(it->value());
    req.body = std::move(msg.body());
    const bool keep_alive = msg.keep_alive();
    const unsigned version = msg.version();
    Reply r = sh.api.handle(req);
    const std::string route = Api::route_of(req.target);
    bool ok = false;
    switch (r.kind) {
      case Reply::Kind::buffer: ok = co_await write_buffer(stream, r, version, keep_alive); break;
      case Reply::Kind::file: ok = co_await write_file(stream, r, version, keep_alive); break;
      case Reply::Kind::events: ok = co_await write_events(stream, sh, r, version, keep_alive); break;
    }
    sh.requests.with({route, std::to_string(r.status)}).add(1);
    sh.durations.with({route}).observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (!ok || !keep_alive) break;
  }
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
  co_await stream.async_shutdown(token);
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, ssl::context& tls, Shared& sh) {
  for (;;) {
    beast::error_code ec;
    tcp::socket sock = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      continue;  // e.g. EMFILE: keep serving the connections we have
    }
    sock.set_option(tcp::no_delay(true), ec);
    // Each session runs on its own strand: its coroutine never overlaps itself,
    // and a job change that cancels its event timer is serialised with it.
    auto ex = sock.get_executor();
    co_spawn(asio::make_strand(ex), session(Stream(beast::tcp_stream(std::move(sock)), tls), sh), asio::detached);
  }
}

void write_ready(const std::string& path, const std::string& line) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << line << "\n";
    if (!out) throw std::runtime_error("cannot write ready file '" + path + "'");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace

void run_server(Api& api, MetricRegistry& metrics, const ServerOptions& opt) {
  ssl::context tls(ssl::context::tls_server);
  tls.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  SSL_CTX_set_min_proto_version(tls.native_handle(), TLS1_2_VERSION);
  try {
    tls.use_certificate_chain_file(opt.cert_file);
    tls.use_private_key_file(opt.key_file, ssl::context::pem);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot load TLS certificate '" + opt.cert_file + "' / key '" + opt.key_file +
                             "': " + e.what());
  }

  Watchers watchers;
  api.jobs().set_listener([&watchers](const std::string& id) { watchers.notify(id); });
  struct Unlisten {
    JobStore& jobs;
    ~Unlisten() { jobs.set_listener(nullptr); }
  } unlisten{api.jobs()};
  Shared sh{api,
            watchers,
            opt,
            metrics.counter("kangaroo_gateway_http_requests_total", "HTTP requests by route and status",
                            {"route", "code"}),
            metrics.histogram("kangaroo_gateway_http_request_duration_seconds",
                              "Time from a parsed request to its reply written", exponential_buckets(0.0001, 4, 9),
                              {"route"}),
            metrics.gauge("kangaroo_gateway_open_connections", "Open client connections"),
            metrics.counter("kangaroo_gateway_tls_handshake_failures_total", "Failed TLS handshakes")};

  asio::io_context ioc(opt.threads);
  tcp::acceptor acceptor(ioc);
  beast::error_code ec;
  const auto addr = asio::ip::make_address(opt.host, ec);
  if (ec) throw std::runtime_error("--listen host '" + opt.host + "' is not an IP address");
  const tcp::endpoint ep(addr, opt.port);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error("cannot listen on " + opt.host + ":" + std::to_string(opt.port) + ": " + ec.message());
  }
  const auto port = acceptor.local_endpoint().port();
  const std::string host = addr.is_v6() ? "[" + opt.host + "]" : opt.host;
  const std::string url = "https://" + host + ":" + std::to_string(port);

  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const beast::error_code&, int) {
    acceptor.close();
    ioc.stop();
  });
  co_spawn(ioc, accept_loop(acceptor, tls, sh), asio::detached);
  if (!opt.ready_file.empty()) write_ready(opt.ready_file, url);
  std::cout << url << std::endl;

  std::vector<std::thread> threads;
  for (int i = 1; i < opt.threads; ++i) threads.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (auto& t : threads) t.join();
}

}  // namespace kangaroo::gateway
