// cli/metrics_server.h: the addresses --metrics-listen takes and refuses, and the server itself
// on a free loopback port (a plain HTTP/1.0 request over a socket of our own).
#include "cli/metrics_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "common/unique_fd.h"

namespace imagefs::cli {
namespace {

TEST(MetricsListen, LoopbackAddressesAreTaken) {
  auto v4 = parse_listen_address("127.0.0.1:9100", false);
  ASSERT_TRUE(v4.ok()) << v4.error().message;
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 9100);
  EXPECT_TRUE(v4->loopback);
  EXPECT_EQ(v4->url(), "http://127.0.0.1:9100/metrics");
  auto v6 = parse_listen_address("[::1]:9100", false);
  ASSERT_TRUE(v6.ok()) << v6.error().message;
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->url(), "http://[::1]:9100/metrics");
  auto name = parse_listen_address("localhost:0", false);
  ASSERT_TRUE(name.ok());
  EXPECT_EQ(name->host, "127.0.0.1");
  EXPECT_EQ(name->port, 0);
  EXPECT_TRUE(parse_listen_address("127.1.2.3:80", false).ok()) << "all of 127/8 is loopback";
}

TEST(MetricsListen, OtherHostsNeedTheRemoteFlag) {
  for (const char* text : {"0.0.0.0:9100", "192.168.1.5:9100", "[::]:9100", "[2001:db8::1]:80"}) {
    auto refused = parse_listen_address(text, false);
    ASSERT_FALSE(refused.ok()) << text;
    EXPECT_EQ(refused.error().code, EINVAL);
    EXPECT_NE(refused.error().message.find("--metrics-listen-remote"), std::string::npos)
        << refused.error().message;
    auto taken = parse_listen_address(text, true);
    ASSERT_TRUE(taken.ok()) << text << ": " << taken.error().message;
    EXPECT_FALSE(taken->loopback) << text;
  }
}

TEST(MetricsListen, MalformedAddressesNameTheForm) {
  for (const char* text :
       {"", "9100", ":9100", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:http",
        "::1:9100", "[::1:9100", "example.com:9100", "127.0.0.1:-1", "127.0.0.1:123456"}) {
    auto r = parse_listen_address(text, true);
    ASSERT_FALSE(r.ok()) << "taken: " << text;
    EXPECT_NE(r.error().message.find("HOST:PORT"), std::string::npos) << r.error().message;
  }
}

// A GET of `path` on 127.0.0.1:port, HTTP/1.0: the whole answer, headers and body.
std::string get(int port, const std::string& path) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return "";
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  if (::write(fd.get(), request.data(), request.size()) != static_cast<ssize_t>(request.size()))
    return "";
  std::string answer;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) > 0;)
    answer.append(buf, static_cast<size_t>(n));
  return answer;
}

TEST(MetricsServer, ServesRenderAtMetricsOnly) {
  std::atomic<int> calls{0};
  auto address = parse_listen_address("127.0.0.1:0", false);
  ASSERT_TRUE(address.ok());
  auto server = MetricsServer::start(*address, [&calls] {
    ++calls;
    return std::string("# HELP x_total X.\n# TYPE x_total counter\nx_total ") +
           std::to_string(calls.load()) + "\n";
  });
  ASSERT_TRUE(server.ok()) << server.error().message;
  int port = (*server)->address().port;
  EXPECT_GT(port, 0) << "port 0 asks for a free port, and the server says which";
  std::string first = get(port, "/metrics");
  EXPECT_TRUE(first.starts_with("HTTP/1.1 200")) << first;
  EXPECT_NE(first.find("Content-Type: text/plain; version=0.0.4; charset=utf-8"), std::string::npos)
      << first;
  EXPECT_NE(first.find("\r\n\r\n# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n"),
            std::string::npos)
      << first;
  EXPECT_NE(get(port, "/metrics").find("x_total 2\n"), std::string::npos) << "rendered per request";
  EXPECT_TRUE(get(port, "/").starts_with("HTTP/1.1 404")) << get(port, "/");

  // A second server on the same port is refused, with the kernel's reason.
  auto taken = parse_listen_address("127.0.0.1:" + std::to_string(port), false);
  ASSERT_TRUE(taken.ok());
  auto second = MetricsServer::start(*taken, [] { return std::string(); });
  ASSERT_FALSE(second.ok()) << "two servers on one port";
  EXPECT_EQ(second.error().code, EADDRINUSE) << second.error().message;
  EXPECT_NE(second.error().message.find("Address already in use"), std::string::npos)
      << second.error().message;

  server->reset();  // stops and joins
  EXPECT_EQ(get(port, "/metrics"), "") << "nothing listens after the server is gone";
}

}  // namespace
}  // namespace imagefs::cli
