// `imagefs mount --metrics-listen HOST:PORT`: the daemon's metrics over HTTP (GET /metrics), for
// Prometheus to scrape, served by cpp-httplib (Debian's libcpp-httplib) on a thread of its own.
//
// Where it listens is only where told: HOST is a literal IP address or "localhost" (no name is
// resolved, no wildcard is implied), and an address other hosts can reach (anything but
// 127.0.0.0/8 and ::1) needs --metrics-listen-remote as well, so that metrics (registry names,
// error counts) reach the network only on purpose.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/result.h"

namespace imagefs::cli {

struct ListenAddress {
  std::string host;  // a literal address: "127.0.0.1", "::1"
  int port = 0;      // 0: any free port (the server says which)
  bool loopback = true;
  [[nodiscard]] std::string url() const;  // "http://127.0.0.1:9100/metrics"
};

// "127.0.0.1:9100", "[::1]:9100", "localhost:9100" (taken as 127.0.0.1). EINVAL naming the
// accepted forms; a non-loopback address without `remote_allowed` is EINVAL saying how to allow it.
Result<ListenAddress> parse_listen_address(const std::string& text, bool remote_allowed);

class MetricsServer {
 public:
  // Binds to `address` now (an error names it and why: "Address already in use"), then serves
  // GET /metrics with what `render` returns (called on the server's threads; it must be
  // thread-safe) until destroyed; anything else is 404. At most two requests
  // are served at once; each connection has 5 s read and write timeouts. The server's threads
  // block every signal: the daemon's stop signals go to its own thread (fs/daemon.h).
  static Result<std::unique_ptr<MetricsServer>> start(const ListenAddress& address,
                                                      std::function<std::string()> render);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Where it listens (the port chosen when 0 was asked for).
  [[nodiscard]] const ListenAddress& address() const;

 private:
  struct Impl;
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace imagefs::cli
