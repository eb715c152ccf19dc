// Helpers for the store's tests: temporary directories, test data, forked children and pipes to
// synchronize with them, and a small tmpfs for running out of space.
#pragma once

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>

namespace imagefs::store::testing {

// A fresh directory, removed with its contents at the end of the test.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe)
    std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/imagefs-store-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// `size` bytes that differ with `seed` and do not repeat with a short period.
inline std::string pattern(size_t size, uint32_t seed = 1) {
  std::string out(size, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (char& c : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return out;
}

inline std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// A pipe for "I am ready" signals between a parent and a forked child.
class Pipe {
 public:
  Pipe() {
    if (::pipe(fds_) != 0) std::abort();
  }
  ~Pipe() {
    close_read();
    close_write();
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  void send(char c = 'x') const {
    if (::write(fds_[1], &c, 1) != 1) std::abort();
  }
  // Next byte, or 0 at end of file (the writer closed or died).
  [[nodiscard]] char receive() const {
    char c = 0;
    ssize_t n = 0;
    do {
      n = ::read(fds_[0], &c, 1);
    } while (n < 0 && errno == EINTR);
    return n == 1 ? c : 0;
  }
  void send_u64(uint64_t v) const {
    if (::write(fds_[1], &v, sizeof v) != static_cast<ssize_t>(sizeof v)) std::abort();
  }
  [[nodiscard]] uint64_t receive_u64() const {
    uint64_t v = 0;
    if (::read(fds_[0], &v, sizeof v) != static_cast<ssize_t>(sizeof v)) return UINT64_MAX;
    return v;
  }
  void close_read() {
    if (fds_[0] >= 0) ::close(fds_[0]);
    fds_[0] = -1;
  }
  void close_write() {
    if (fds_[1] >= 0) ::close(fds_[1]);
    fds_[1] = -1;
  }

 private:
  int fds_[2] = {-1, -1};
};

// Runs fn in a forked child, which exits with fn's result without running the parent's atexit
// handlers or destructors (those own the parent's LMDB environment and gtest's state).
inline pid_t fork_child(const std::function<int()>& fn) {
  pid_t pid = ::fork();
  if (pid < 0) std::abort();
  if (pid == 0) ::_exit(fn());
  return pid;
}

// The child's exit status, or 128 + the signal that killed it.
inline int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

inline bool under_ci() {
  const char* ci = std::getenv("CI");  // NOLINT(concurrency-mt-unsafe)
  return ci != nullptr && std::string_view(ci) == "true";
}

// A tmpfs of `size` mounted on a temporary directory (needs root), unmounted at the end.
class SmallTmpfs {
 public:
  explicit SmallTmpfs(const std::string& size) {
    std::string options = "size=" + size;
    mounted_ = ::mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, options.c_str()) == 0;
    if (!mounted_) error_ = errno;
  }
  ~SmallTmpfs() {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  SmallTmpfs(const SmallTmpfs&) = delete;
  SmallTmpfs& operator=(const SmallTmpfs&) = delete;
  [[nodiscard]] bool mounted() const { return mounted_; }
  [[nodiscard]] int error() const { return error_; }
  [[nodiscard]] const std::filesystem::path& path() const { return dir_.path(); }

 private:
  TempDir dir_;
  bool mounted_ = false;
  int error_ = 0;
};

// In a test: skips (or, under CI=true, fails) when the tmpfs could not be mounted.
#define IMAGEFS_REQUIRE_TMPFS(fs)                                                           \
  do {                                                                                      \
    if (!(fs).mounted()) {                                                                  \
      std::string why =                                                                     \
          std::string("cannot mount a tmpfs (needs root): ") + std::strerror((fs).error()); \
      if (::imagefs::store::testing::under_ci()) FAIL() << why;                             \
      GTEST_SKIP() << why;                                                                  \
    }                                                                                       \
  } while (0)

}  // namespace imagefs::store::testing
