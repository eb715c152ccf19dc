// The HTTP side of --metrics-listen (cli/metrics_server.h), over cpp-httplib.
#include "cli/metrics_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>
#include <thread>

#include "common/errno_error.h"
#include "common/metrics.h"
#include "common/text.h"
#include "common/unique_fd.h"

namespace imagefs::cli {
namespace {

constexpr std::string_view kForms =
    "expected HOST:PORT with HOST a literal address or localhost: 127.0.0.1:9100, [::1]:9100, "
    "localhost:9100";

// Why binding `address` fails, asked of the kernel directly (httplib says only that it failed).
Error bind_error(const ListenAddress& address) {
  sockaddr_storage storage{};
  socklen_t length = 0;
  int family = AF_INET;
  if (address.host.find(':') != std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(address.port));
    ::inet_pton(AF_INET6, address.host.c_str(), &a->sin6_addr);
    length = sizeof *a;
    family = AF_INET6;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&storage);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(address.port));
    ::inet_pton(AF_INET, address.host.c_str(), &a->sin_addr);
    length = sizeof *a;
  }
  std::string what = "--metrics-listen " + address.url() + ": cannot listen";
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return errno_error(errno, what);
  int one = 1;
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), length) != 0)
    return errno_error(errno, what);
  return make_error(EADDRINUSE, what + " (the HTTP server could not bind it)");
}

}  // namespace

std::string ListenAddress::url() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return "http://" + h + ":" + std::to_string(port) + "/metrics";
}

Result<ListenAddress> parse_listen_address(const std::string& text, bool remote_allowed) {
  auto invalid = [&] {
    return make_error(EINVAL, "--metrics-listen " + printable(text) + ": " + std::string(kForms));
  };
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) return invalid();
  std::string host = text.substr(0, colon);
  std::string port_text = text.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return invalid();
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return invalid();  // an IPv6 address needs its brackets
  }
  if (port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos)
    return invalid();
  int port = std::stoi(port_text);
  if (port > 65535) return invalid();
  if (host == "localhost") host = "127.0.0.1";
  ListenAddress address{host, port, false};
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    address.loopback = (ntohl(v4.s_addr) >> 24) == 127;
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    address.loopback = IN6_IS_ADDR_LOOPBACK(&v6);
  } else {
    return invalid();
  }
  if (!address.loopback && !remote_allowed)
    return make_error(EINVAL, "--metrics-listen " + printable(text) +
                                  ": other hosts can reach that address; metrics stay on "
                                  "loopback (127.0.0.1, ::1) unless --metrics-listen-remote is "
                                  "given too");
  return address;
}

struct MetricsServer::Impl {
  ListenAddress address;
  httplib::Server server;
  std::thread thread;
};

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MetricsServer::~MetricsServer() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

const ListenAddress& MetricsServer::address() const { return impl_->address; }

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const ListenAddress& address,
                                                            std::function<std::string()> render) {
  auto impl = std::make_unique<Impl>();
  impl->address = address;
  httplib::Server& server = impl->server;
  server.new_task_queue = [] { return new httplib::ThreadPool(2); };
  server.set_read_timeout(5);
  server.set_write_timeout(5);
  server.set_keep_alive_max_count(100);
  server.set_payload_max_length(4096);
  // httplib's default also sets SO_REUSEPORT, which would let a second daemon share the port
  // (the kernel splitting the scrapes between them): SO_REUSEADDR alone, so a port in use is an
  // error and a restarted daemon still takes its port at once.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    (void)::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  server.Get("/metrics", [render = std::move(render)](const httplib::Request& /*request*/,
                                                      httplib::Response& response) {
    try {
      response.set_content(render(), std::string(metrics::kContentType));
    } catch (const std::exception& e) {
      response.status = 500;
      response.set_content(std::string("cannot render the metrics: ") + e.what() + "\n",
                           "text/plain");
    }
  });
  if (address.port == 0) {
    int port = server.bind_to_any_port(address.host);
    if (port <= 0) return bind_error(address);
    impl->address.port = port;
  } else if (!server.bind_to_port(address.host, address.port)) {
    return bind_error(address);
  }
  // The thread and the pool it makes block every signal (the daemon's stop signals are taken by
  // fs::serve's own thread; a SIGPIPE of a closed connection must not end the process).
  sigset_t all;
  sigset_t old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  try {
    impl->thread = std::thread([&server] { server.listen_after_bind(); });
  } catch (const std::system_error& e) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return make_error(EAGAIN, std::string("--metrics-listen: cannot start a thread: ") + e.what());
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
}

}  // namespace imagefs::cli
