// Reads docker's config.json and runs credential helpers (the docker-credential-helpers protocol:
// `docker-credential-NAME get`, the server URL on stdin, {"ServerURL","Username","Secret"} on
// stdout, exit status 1 with "credentials not found" when it has none).
#include "registry/credentials.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>
#include <utility>

#include "common/errno_error.h"

extern char** environ;

namespace imagefs::registry {

using nlohmann::json;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  [[nodiscard]] int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) (void)::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct Pipe {
  Fd read;
  Fd write;
};

Result<Pipe> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return errno_error(errno, "pipe");
  return Pipe{Fd(fds[0]), Fd(fds[1])};
}

// Owns posix_spawn_file_actions_t.
class SpawnActions {
 public:
  SpawnActions() { ok_ = posix_spawn_file_actions_init(&actions_) == 0; }
  ~SpawnActions() {
    if (ok_) (void)posix_spawn_file_actions_destroy(&actions_);
  }
  SpawnActions(const SpawnActions&) = delete;
  SpawnActions& operator=(const SpawnActions&) = delete;
  [[nodiscard]] bool ok() const { return ok_; }
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_{};
  bool ok_ = false;
};

// Writes all of `data` to `fd` without dying of SIGPIPE if the reader already left: SIGPIPE is
// blocked for this thread during the write, and one it raised is consumed before unblocking.
bool write_all_nosigpipe(int fd, std::string_view data) {
  sigset_t pipe_set;
  sigset_t old_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigset_t pending;
  sigemptyset(&pending);
  (void)sigpending(&pending);
  bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  (void)pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
  bool ok = true;
  bool broke = false;
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      broke = errno == EPIPE;
      break;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  if (broke && !was_pending) {
    struct timespec zero {};
    (void)sigtimedwait(&pipe_set, nullptr, &zero);
  }
  (void)pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
  return ok;
}

struct HelperRun {
  int exit_status = -1;
  std::string out;
  std::string err;
};

// Runs `program arg` with `input` on stdin, collecting stdout and stderr, killing it after
// `timeout`. Errors: the program could not be started (ENOENT), or timed out (ETIMEDOUT).
Result<HelperRun> run_program(const std::string& program, const std::string& arg,
                              const std::string& input, std::chrono::milliseconds timeout) {
  IMAGEFS_TRY(in, make_pipe());
  IMAGEFS_TRY(out, make_pipe());
  IMAGEFS_TRY(err, make_pipe());
  SpawnActions actions;
  if (!actions.ok()) return make_error(ENOMEM, "posix_spawn_file_actions_init failed");
  (void)posix_spawn_file_actions_adddup2(actions.get(), in.read.get(), STDIN_FILENO);
  (void)posix_spawn_file_actions_adddup2(actions.get(), out.write.get(), STDOUT_FILENO);
  (void)posix_spawn_file_actions_adddup2(actions.get(), err.write.get(), STDERR_FILENO);
  std::string program_copy = program;
  std::string arg_copy = arg;
  char* argv[] = {program_copy.data(), arg_copy.data(), nullptr};
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, program.c_str(), actions.get(), nullptr, argv, environ);
  if (rc != 0) return errno_error(rc, program);
  in.read.reset();
  out.write.reset();
  err.write.reset();

  HelperRun run;
  (void)write_all_nosigpipe(in.write.get(), input);
  in.write.reset();

  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timed_out = false;
  bool out_open = true;
  bool err_open = true;
  while (out_open || err_open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd fds[2] = {{out_open ? out.read.get() : -1, POLLIN, 0},
                     {err_open ? err.read.get() : -1, POLLIN, 0}};
    int n = ::poll(fds, 2, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    char buffer[4096];
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t got = ::read(fds[i].fd, buffer, sizeof buffer);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        (i == 0 ? out_open : err_open) = false;
        continue;
      }
      std::string& sink = i == 0 ? run.out : run.err;
      if (sink.size() < (1u << 20)) sink.append(buffer, static_cast<size_t>(got));
    }
  }
  if (timed_out) (void)::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out)
    return make_error(ETIMEDOUT, program + " did not answer within " +
                                     std::to_string(timeout.count() / 1000) + " s");
  run.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return run;
}

// The first line of a helper's complaint, short, for an error message.
std::string first_line(const std::string& text) {
  std::string t = trim(text);
  size_t nl = t.find('\n');
  if (nl != std::string::npos) t = t.substr(0, nl);
  if (t.size() > 200) t = t.substr(0, 200) + "...";
  return t;
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  std::string clean;
  for (char c : text) {
    if (!std::isspace(static_cast<unsigned char>(c))) clean.push_back(c);
  }
  while (clean.size() % 4 != 0) clean.push_back('=');
  if (clean.empty()) return std::string();
  size_t padding = 0;
  if (clean.ends_with("==")) {
    padding = 2;
  } else if (clean.ends_with("=")) {
    padding = 1;
  }
  std::string out(clean.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(clean.data()),
                          static_cast<int>(clean.size()));
  if (n < 0 || static_cast<size_t>(n) < padding) return std::nullopt;
  out.resize(static_cast<size_t>(n) - padding);
  return out;
}

std::string docker_server_url(const std::string& host) {
  if (host == "docker.io") return "https://index.docker.io/v1/";
  return host;
}

std::string host_of_config_key(std::string_view key) {
  std::string k = lower(trim(key));
  std::string_view v = k;
  if (v.starts_with("https://")) {
    v.remove_prefix(8);
  } else if (v.starts_with("http://")) {
    v.remove_prefix(7);
  }
  v = v.substr(0, v.find('/'));
  std::string host(v);
  if (host == "index.docker.io" || host == "registry-1.docker.io" || host == "docker.io")
    return "docker.io";
  return host;
}

std::filesystem::path default_docker_config() {
  // getenv is not thread-safe against setenv; imagefs never calls setenv.
  const char* dir = std::getenv("DOCKER_CONFIG");  // NOLINT(concurrency-mt-unsafe)
  if (dir != nullptr && *dir != '\0') return std::filesystem::path(dir) / "config.json";
  const char* home = std::getenv("HOME");  // NOLINT(concurrency-mt-unsafe)
  if (home != nullptr && *home != '\0')
    return std::filesystem::path(home) / ".docker" / "config.json";
  return {};
}

std::shared_ptr<DockerCredentials> DockerCredentials::none() {
  return std::shared_ptr<DockerCredentials>(new DockerCredentials());
}

Result<std::shared_ptr<DockerCredentials>> DockerCredentials::load(
    const std::filesystem::path& path_in) {
  std::filesystem::path path = path_in.empty() ? default_docker_config() : path_in;
  std::shared_ptr<DockerCredentials> creds(new DockerCredentials());
  if (path.empty()) return creds;
  creds->description_ = path.string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return creds;  // docker without a login: no file
  std::ifstream file(path, std::ios::binary);
  if (!file) return make_error(EINVAL, "docker config " + path.string() + ": cannot be read");
  std::stringstream text;
  text << file.rdbuf();
  std::string bytes = text.str();
  auto bad = [&](const std::string& why) {
    return make_error(EINVAL, "docker config " + path.string() + ": " + why);
  };
  json doc = json::parse(bytes, nullptr, false);
  if (doc.is_discarded()) return bad("not valid JSON");
  if (!doc.is_object()) return bad("not a JSON object");

  if (auto auths = doc.find("auths"); auths != doc.end() && !auths->is_null()) {
    if (!auths->is_object()) return bad("\"auths\" is not an object");
    for (auto item = auths->begin(); item != auths->end(); ++item) {
      const std::string& key = item.key();
      const json& entry = item.value();
      if (!entry.is_object()) return bad("auths entry for " + key + " is not an object");
      Credential c;
      c.source = path.string();
      auto str = [&](const char* name) -> std::string {
        auto v = entry.find(name);
        return v != entry.end() && v->is_string() ? v->get<std::string>() : std::string();
      };
      if (std::string auth = str("auth"); !auth.empty()) {
        std::optional<std::string> decoded = base64_decode(auth);
        size_t colon = decoded ? decoded->find(':') : std::string::npos;
        // Never echo the value: it is a password.
        if (colon == std::string::npos)
          return bad("auths entry for " + key +
                     " has an \"auth\" that is not base64 of user:password");
        c.username = decoded->substr(0, colon);
        c.password = decoded->substr(colon + 1);
      } else {
        c.username = str("username");
        c.password = str("password");
      }
      c.identity_token = str("identitytoken");
      if (!c.has_password() && c.identity_token.empty()) continue;  // e.g. {} left by a helper
      creds->auths_.emplace(host_of_config_key(key), std::move(c));
    }
  }
  if (auto helpers = doc.find("credHelpers"); helpers != doc.end() && !helpers->is_null()) {
    if (!helpers->is_object()) return bad("\"credHelpers\" is not an object");
    for (const auto& [key, name] : helpers->items()) {
      if (!name.is_string()) return bad("credHelpers entry for " + key + " is not a string");
      creds->helpers_[host_of_config_key(key)] = name.get<std::string>();
    }
  }
  if (auto store = doc.find("credsStore"); store != doc.end() && !store->is_null()) {
    if (!store->is_string()) return bad("\"credsStore\" is not a string");
    creds->store_ = store->get<std::string>();
  }
  return creds;
}

Result<std::optional<Credential>> DockerCredentials::lookup(const std::string& host_in) {
  std::string host = host_of_config_key(host_in);
  {
    MutexLock lock(mu_);
    if (auto it = cache_.find(host); it != cache_.end()) return it->second;
  }
  // Not under the lock: a helper may take a while, and a duplicate lookup is harmless.
  IMAGEFS_TRY(found, lookup_uncached(host));
  MutexLock lock(mu_);
  cache_.emplace(host, found);
  return found;
}

Result<std::optional<Credential>> DockerCredentials::lookup_uncached(const std::string& host) {
  std::string helper;
  if (auto it = helpers_.find(host); it != helpers_.end()) {
    helper = it->second;
  } else {
    helper = store_;
  }
  if (!helper.empty()) {
    IMAGEFS_TRY(found, run_helper(helper, host));
    if (found) return found;
  }
  if (auto it = auths_.find(host); it != auths_.end()) return std::optional<Credential>(it->second);
  return std::optional<Credential>();
}

Result<std::optional<Credential>> DockerCredentials::run_helper(const std::string& helper,
                                                                const std::string& host) {
  std::string program = "docker-credential-" + helper;
  auto failed = [&](const std::string& why) {
    return make_error(EACCES, "credential helper " + program + " (from " + description_ +
                                  ") failed for " + host + ": " + why);
  };
  Result<HelperRun> run = run_program(program, "get", docker_server_url(host), helper_timeout_);
  if (!run.ok()) {
    if (run.error().code == ENOENT) return failed("not found in PATH");
    return failed(run.error().message);
  }
  if (run->exit_status != 0) {
    std::string said = lower(run->out + " " + run->err);
    if (said.find("credentials not found") != std::string::npos ||
        said.find("not found in native keychain") != std::string::npos)
      return std::optional<Credential>();
    std::string why = first_line(run->err.empty() ? run->out : run->err);
    return failed("exit status " + std::to_string(run->exit_status) +
                  (why.empty() ? "" : ": " + why));
  }
  json doc = json::parse(run->out, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return failed("its answer is not a JSON object");
  auto username = doc.find("Username");
  auto secret = doc.find("Secret");
  if (username == doc.end() || !username->is_string() || secret == doc.end() ||
      !secret->is_string())
    return failed("its answer lacks Username or Secret");
  Credential c;
  c.source = program;
  if (username->get<std::string>() == "<token>") {
    c.identity_token = secret->get<std::string>();
  } else {
    c.username = username->get<std::string>();
    c.password = secret->get<std::string>();
  }
  if (!c.has_password() && c.identity_token.empty()) return std::optional<Credential>();
  return std::optional<Credential>(std::move(c));
}

}  // namespace imagefs::registry
