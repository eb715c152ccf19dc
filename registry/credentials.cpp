// Reads docker's config.json and runs credential helpers (the docker-credential-helpers protocol:
// `docker-credential-NAME get`, the server URL on stdin, {"ServerURL","Username","Secret"} on
// stdout, exit status 1 with "credentials not found" when it has none).
#include "registry/credentials.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
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

bool same_credential(const std::optional<Credential>& a, const std::optional<Credential>& b) {
  if (!a || !b) return !a && !b;
  return a->username == b->username && a->password == b->password &&
         a->identity_token == b->identity_token;
}

DockerCredentials::DockerCredentials(std::filesystem::path path, std::shared_ptr<Clock> clock,
                                     CredentialPolicy policy)
    : path_(std::move(path)),
      description_(path_.empty() ? "no docker config" : path_.string()),
      clock_(clock ? std::move(clock) : system_clock()),
      policy_(policy) {}

std::shared_ptr<DockerCredentials> DockerCredentials::none() {
  return std::shared_ptr<DockerCredentials>(new DockerCredentials({}, {}, {}));
}

Result<std::shared_ptr<DockerCredentials>> DockerCredentials::load(
    const std::filesystem::path& path_in, std::shared_ptr<Clock> clock, CredentialPolicy policy) {
  std::filesystem::path path = path_in.empty() ? default_docker_config() : path_in;
  std::shared_ptr<DockerCredentials> creds(new DockerCredentials(path, std::move(clock), policy));
  MutexLock lock(creds->mu_);
  IMAGEFS_CHECK(creds->refresh());
  return creds;
}

void DockerCredentials::set_helper_timeout(std::chrono::milliseconds timeout) {
  MutexLock lock(mu_);
  policy_.helper_timeout = timeout;
}

Result<DockerCredentials::Config> DockerCredentials::parse(const std::string& bytes,
                                                           const std::string& file) {
  auto bad = [&](const std::string& why) {
    return make_error(EINVAL, "docker config " + file + ": " + why);
  };
  json doc = json::parse(bytes, nullptr, false);
  if (doc.is_discarded()) return bad("not valid JSON");
  if (!doc.is_object()) return bad("not a JSON object");

  Config config;
  if (auto auths = doc.find("auths"); auths != doc.end() && !auths->is_null()) {
    if (!auths->is_object()) return bad("\"auths\" is not an object");
    for (auto item = auths->begin(); item != auths->end(); ++item) {
      const std::string& key = item.key();
      const json& entry = item.value();
      if (!entry.is_object()) return bad("auths entry for " + key + " is not an object");
      Credential c;
      c.source = file;
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
      config.auths.emplace(host_of_config_key(key), std::move(c));
    }
  }
  if (auto helpers = doc.find("credHelpers"); helpers != doc.end() && !helpers->is_null()) {
    if (!helpers->is_object()) return bad("\"credHelpers\" is not an object");
    for (const auto& [key, name] : helpers->items()) {
      if (!name.is_string()) return bad("credHelpers entry for " + key + " is not a string");
      config.helpers[host_of_config_key(key)] = name.get<std::string>();
    }
  }
  if (auto store = doc.find("credsStore"); store != doc.end() && !store->is_null()) {
    if (!store->is_string()) return bad("\"credsStore\" is not a string");
    config.store = store->get<std::string>();
  }
  return config;
}

namespace {

// A file's modification time can only tell writes apart when they are in different ticks of the
// kernel's coarse clock: a file changed this recently may change again, same size, same mtime.
// (git calls such index entries "racily clean" and compares their contents.) The real wall
// clock, not the Clock seam: it is compared with the file system's own timestamps.
constexpr int64_t kRacyNs = 2'000'000'000;

int64_t wall_now_ns() {
  struct timespec now {};
  (void)::clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

int64_t ns(const struct timespec& t) {
  return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

// Most hosts whose helper answers are kept.
constexpr size_t kMaxAnswers = 256;

}  // namespace

DockerCredentials::Stamp DockerCredentials::stamp_of(const struct stat& st) {
  return Stamp{true,
               static_cast<uint64_t>(st.st_dev),
               static_cast<uint64_t>(st.st_ino),
               static_cast<int64_t>(st.st_size),
               ns(st.st_mtim),
               ns(st.st_ctim)};
}

Result<void> DockerCredentials::refresh() {
  if (path_.empty()) return {};
  auto failed = [&](int err) {
    return make_error(EINVAL,
                      "docker config " + description_ + ": cannot be read: " + errno_text(err));
  };
  Stamp stamp;
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0) {
    stamp = stamp_of(st);
  } else if (errno != ENOENT && errno != ENOTDIR) {
    return failed(errno);
  }
  if (generation_ > 0 && stamp == stamp_ && !racy_) {
    if (config_error_) return *config_error_;
    return {};
  }

  std::string text;
  if (stamp.exists) {
    Fd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
      if (errno != ENOENT) return failed(errno);
      stamp = Stamp{};
    } else {
      // The stamp of what is read (the path may have been replaced since the stat).
      if (::fstat(fd.get(), &st) != 0) return failed(errno);
      stamp = stamp_of(st);
      if (st.st_size > (16 << 20))
        return make_error(EINVAL, "docker config " + description_ + ": larger than 16 MiB");
      char buffer[16384];
      for (;;) {
        ssize_t got = ::read(fd.get(), buffer, sizeof buffer);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return failed(errno);
        if (got == 0) break;
        text.append(buffer, static_cast<size_t>(got));
        if (text.size() > (16u << 20))
          return make_error(EINVAL, "docker config " + description_ + ": larger than 16 MiB");
      }
    }
  }
  racy_ = stamp.exists && wall_now_ns() - stamp.mtime_ns < kRacyNs;
  bool same_text = generation_ > 0 && stamp.exists == stamp_.exists && text == text_;
  stamp_ = stamp;
  if (same_text) {
    // Touched or rewritten with the same bytes: what was learned still holds.
    if (config_error_) return *config_error_;
    return {};
  }
  text_ = std::move(text);
  ++generation_;
  answers_.clear();
  reasked_.clear();
  if (!stamp.exists) {
    config_ = Config{};  // docker without a login: no file
    config_error_.reset();
    return {};
  }
  Result<Config> parsed = parse(text_, description_);
  if (!parsed.ok()) {
    config_ = Config{};
    config_error_ = parsed.error();
    return parsed.error();
  }
  config_ = std::move(parsed).value();
  config_error_.reset();
  return {};
}

std::string DockerCredentials::helper_for(const std::string& host) const {
  if (auto it = config_.helpers.find(host); it != config_.helpers.end()) return it->second;
  return config_.store;
}

std::optional<Credential> DockerCredentials::inline_entry(const std::string& host) const {
  if (auto it = config_.auths.find(host); it != config_.auths.end()) return it->second;
  return std::nullopt;
}

bool DockerCredentials::fresh(const Answer& answer) const {
  auto age = clock_->steady_now() - answer.obtained;
  if (!answer.result.ok()) return age < policy_.refusal_ttl;
  return age < policy_.helper_max_age;
}

void DockerCredentials::keep(const std::string& host, Answer answer) {
  if (answers_.size() >= kMaxAnswers && !answers_.contains(host)) {
    for (auto it = answers_.begin(); it != answers_.end();)
      it = fresh(it->second) ? std::next(it) : answers_.erase(it);
    while (answers_.size() >= kMaxAnswers) {
      auto oldest = answers_.begin();
      for (auto it = answers_.begin(); it != answers_.end(); ++it)
        if (it->second.obtained < oldest->second.obtained) oldest = it;
      answers_.erase(oldest);
    }
  }
  answers_.insert_or_assign(host, std::move(answer));
}

Result<std::optional<Credential>> DockerCredentials::lookup(const std::string& host_in) {
  std::string host = host_of_config_key(host_in);
  std::string helper;
  std::optional<Credential> fallback;
  uint64_t generation = 0;
  std::chrono::milliseconds timeout{};
  {
    MutexLock lock(mu_);
    IMAGEFS_CHECK(refresh());
    helper = helper_for(host);
    fallback = inline_entry(host);
    if (helper.empty()) return fallback;
    if (auto it = answers_.find(host); it != answers_.end() && fresh(it->second)) {
      const Answer& answer = it->second;
      if (!answer.result.ok()) return answer.result.error();
      return answer.result.value() ? answer.result.value() : fallback;
    }
    generation = generation_;
    timeout = policy_.helper_timeout;
  }
  // Not under the lock: a helper may take a while. Concurrent lookups of one host share a run.
  auto started = clock_->steady_now();
  Result<std::optional<Credential>> answer =
      helper_runs_.run(host + '\n' + helper, [&] { return run_helper(helper, host, timeout); });
  {
    MutexLock lock(mu_);
    auto it = answers_.find(host);
    // Kept unless the file changed meanwhile, or a waiter of the same run kept it already.
    if (generation == generation_ && (it == answers_.end() || !fresh(it->second))) {
      bool after_refusal = reasked_.erase(host) > 0;
      keep(host, Answer{answer, started, after_refusal});
    }
  }
  if (!answer.ok()) return answer.error();
  return answer.value() ? answer.value() : fallback;
}

bool DockerCredentials::refused(const std::string& host_in, const std::optional<Credential>& used) {
  std::string host = host_of_config_key(host_in);
  MutexLock lock(mu_);
  if (helper_for(host).empty()) return false;
  auto it = answers_.find(host);
  if (it == answers_.end()) return true;  // dropped already: the next lookup asks
  const Answer& answer = it->second;
  if (!answer.result.ok()) return false;  // `used` did not come from this answer
  std::optional<Credential> given =
      answer.result.value() ? answer.result.value() : inline_entry(host);
  if (!same_credential(given, used)) return true;  // a newer answer is there
  if (answer.after_refusal && clock_->steady_now() - answer.obtained < policy_.refusal_ttl)
    return false;  // asked again after a refusal just now, and refused again
  answers_.erase(it);
  if (reasked_.size() < kMaxAnswers) reasked_.insert(host);
  return true;
}

Result<std::optional<Credential>> DockerCredentials::run_helper(
    const std::string& helper, const std::string& host, std::chrono::milliseconds timeout) const {
  std::string program = "docker-credential-" + helper;
  auto failed = [&](const std::string& why) {
    return make_error(EACCES, "credential helper " + program + " (from " + description_ +
                                  ") failed for " + host + ": " + why);
  };
  Result<HelperRun> run = run_program(program, "get", docker_server_url(host), timeout);
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
