// `imagefs mount MOUNTPOINT`: the daemon that presents every image reference as a directory,
// and `imagefs status`, which asks running mounts what they are doing.
//
// Without -f the command forks a daemon and waits until the mount is in place (or has failed,
// whose reason it prints), like other FUSE file systems; the daemon then logs to a file. The
// store is opened only in the daemon: LMDB environments must not cross a fork.
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "cli/metrics_server.h"
#include "cli/progress.h"
#include "common/errno_error.h"
#include "common/text.h"
#include "common/unique_fd.h"
#include "fs/daemon.h"
#include "fs/filesystem.h"
#include "fs/images.h"
#include "fs/metrics.h"
#include "registry/reference.h"
#include "store/cache_dir.h"

namespace imagefs::cli {
namespace {

namespace fsys = std::filesystem;

constexpr int64_t kDefaultTtl = 300;

// How much a log line matters: syslog's priorities, which journald reads from a "<N>" prefix.
enum class Level { error = 3, warning = 4, info = 6, debug = 7 };

// Whether fd is the stream journald gave this service: systemd sets $JOURNAL_STREAM to its
// "DEVICE:INODE" when stdout or stderr is connected to the journal (systemd.exec(5)).
bool is_journal_stream(int fd) {
  const char* env = std::getenv("JOURNAL_STREAM");  // NOLINT(concurrency-mt-unsafe): read at start
  struct stat st {};
  if (!env || ::fstat(fd, &st) != 0) return false;
  return std::string(env) == std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

// Appends lines to the daemon's log (a file, or stderr with -f). A line is made printable
// (common/text.h) here, the one sink every log line goes through: a registry's answer or a tar
// name can neither break the line nor put escape sequences on a terminal. Into a file or a
// terminal a line is stamped with the time and pid; into the journal it starts with its
// priority ("<4>...") instead, and journald adds the rest.
class Log {
 public:
  explicit Log(int fd) : fd_(fd), journal_(is_journal_stream(fd)) {}
  void write(const std::string& raw) { write(Level::info, raw); }
  void write(Level level, const std::string& raw) {
    std::string line = printable(raw);
    std::string text;
    if (journal_) {
      text = "<" + std::to_string(static_cast<int>(level)) + ">" + line + "\n";
    } else {
      std::time_t t = std::time(nullptr);
      std::tm tm{};
      ::localtime_r(&t, &tm);
      char stamp[32];
      (void)std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
      text = std::string(stamp) + " imagefs[" + std::to_string(::getpid()) + "]: " + line + "\n";
    }
    std::lock_guard<std::mutex> lock(mu_);
    (void)!::write(fd_, text.data(), text.size());
  }

 private:
  int fd_;
  bool journal_;
  std::mutex mu_;
};

// What the daemon tells systemd (sd_notify(3); nothing without $NOTIFY_SOCKET): READY=1 once the
// mount is in place, STATUS= every few seconds from Images::status_json ("serving 3 images, 1
// task in flight"), STOPPING=1 when a signal ends it.
class Notifier {
 public:
  Notifier()
      : enabled_(std::getenv("NOTIFY_SOCKET") != nullptr) {}  // NOLINT(concurrency-mt-unsafe)
  ~Notifier() { stop(); }
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // READY=1, then a thread sends `status()` when it changes (checked every 2 s) until stop().
  void ready(std::function<std::string()> status) {
    if (!enabled_) return;
    std::string first = status();
    (void)sd_notify(0, ("READY=1\nSTATUS=" + first).c_str());
    thread_ = std::thread([this, status = std::move(status), last = first]() mutable {
      std::unique_lock<std::mutex> lock(mu_);
      while (!cv_.wait_for(lock, std::chrono::seconds(2), [this] { return stopping_; })) {
        std::string now;
        try {  // no exception leaves a thread: a status missed now is sent next time
          now = status();
        } catch (...) {
          continue;
        }
        if (now != last) (void)sd_notify(0, ("STATUS=" + now).c_str());
        last = std::move(now);
      }
    });
  }
  void stopping(const std::string& why) {
    if (enabled_) (void)sd_notify(0, ("STOPPING=1\nSTATUS=" + why).c_str());
  }
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  bool enabled_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

// "serving 2 images, 1 task in flight (downloading alpine ...)", from Images::status_json.
std::string status_line_of(const fs::Images& images) {
  nlohmann::json s = nlohmann::json::parse(images.status_json(), nullptr, false);
  if (s.is_discarded() || !s.is_object()) return "serving";
  uint64_t open = s.value("images_open", uint64_t{0});
  const nlohmann::json& tasks = s.contains("in_flight") ? s["in_flight"] : nlohmann::json();
  size_t n = tasks.is_array() ? tasks.size() : 0;
  std::string line = "serving " + plural(open, "image") + ", " + plural(n, "task") + " in flight";
  if (n > 0 && tasks[0].is_object() && tasks[0].contains("image") && tasks[0]["image"].is_string())
    line += " (" + tasks[0].value("task", std::string("working on")) + " " +
            tasks[0]["image"].get<std::string>() + ")";
  const nlohmann::json& errors =
      s.contains("recent_errors") ? s["recent_errors"] : nlohmann::json();
  if (errors.is_array() && !errors.empty() && errors.back().is_object())
    line += "; last error: " + errors.back().value("error", std::string());
  return printable(line);
}

// status_line_of, which never throws: a field of a type it does not expect gives "serving".
std::string status_line(const fs::Images& images) noexcept {
  try {
    return status_line_of(images);
  } catch (...) {
    return "serving";
  }
}

// What the process writes to its stderr (fd 2) while a mount starts: libfuse, and fusermount3,
// which libfuse runs for a mount without root, write their reasons for a failed mount there
// ("fusermount3: option allow_other only allowed if 'user_allow_other' is set in
// /etc/fuse.conf"). Captured into a memory file, so the failure the user sees on the terminal can
// say it, not only the log; finish() puts stderr back. Used before any thread exists.
class StderrCapture {
 public:
  StderrCapture()
      : original_(::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3)),
        file_(::memfd_create("imagefs-mount-stderr", MFD_CLOEXEC)) {
    // Without either, nothing is captured: stderr stays where it was.
    if (original_ && file_ && ::dup2(file_.get(), STDERR_FILENO) < 0) file_.reset();
  }
  ~StderrCapture() { (void)finish(Echo::yes); }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;

  // stderr as it was before the capture (valid while this lives).
  [[nodiscard]] int original() const { return original_ ? original_.get() : STDERR_FILENO; }

  enum class Echo { yes, no };
  // Puts stderr back and returns what was written to it meanwhile (the first 4 KiB), also
  // writing it there with Echo::yes. Later calls return "".
  std::string finish(Echo echo) {
    if (!file_) return "";
    (void)::dup2(original_.get(), STDERR_FILENO);
    std::string text(4096, '\0');
    ssize_t n = ::pread(file_.get(), text.data(), text.size(), 0);
    text.resize(n > 0 ? static_cast<size_t>(n) : 0);
    file_.reset();
    if (echo == Echo::yes && !text.empty()) (void)!::write(STDERR_FILENO, text.data(), text.size());
    return text;
  }

 private:
  UniqueFd original_;
  UniqueFd file_;
};

// A failed mount's message with what libfuse and fusermount3 said on stderr (`said`), one line.
// libfuse says why on every path (no /dev/fuse: "fuse: device not found, try 'modprobe fuse'
// first"; no fusermount3: "fuse: failed to exec fusermount3: ..."), so no guess is added.
std::string mount_failure(const Error& error, const std::string& said) {
  std::string reason;
  std::istringstream lines(said);
  for (std::string line; std::getline(lines, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty()) continue;
    reason += (reason.empty() ? "" : "; ") + line;
  }
  if (reason.empty()) return error.message;
  return error.message + ": " + reason;
}

struct MountSetup {
  std::vector<std::string> allowed_registries;  // for other users (--allow-other)
  fsys::path mountpoint;
  fsys::path cache_dir;
  fsys::path log_file;
  fs::ImagesOptions images;
  fs::ServeOptions serve;
  bool foreground = false;
  std::optional<ListenAddress> metrics_listen;  // --metrics-listen
};

// A registry as references name it: "ghcr.io", "127.0.0.1:5000", "docker.io" (Docker Hub's
// other names are taken as docker.io, as references take them), or "*".
Result<std::string> registry_domain(std::string host, const std::string& where) {
  for (char& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (host == "*") return host;
  if (host.starts_with("https://")) host = host.substr(8);
  if (host.starts_with("http://")) host = host.substr(7);
  while (host.ends_with("/")) host.pop_back();
  if (host == "index.docker.io" || host == "registry-1.docker.io") host = "docker.io";
  auto ref = registry::parse_reference(host + "/x");
  if (host.empty() || !ref.ok() || ref->domain != host)
    return make_error(EINVAL, where + ": \"" + printable(host) +
                                  "\" is not a registry host (write it as in references: "
                                  "ghcr.io, 127.0.0.1:5000, docker.io; or * for any)");
  return host;
}

// The hosts of --allow-registry HOST...
Result<std::vector<std::string>> allowed_registry_options(const Args& args) {
  std::vector<std::string> hosts;
  for (const std::string& h : args.all("allow-registry")) {
    IMAGEFS_TRY(domain, registry_domain(h, "--allow-registry"));
    hosts.push_back(std::move(domain));
  }
  return hosts;
}

// --allow-registry HOST... and the hosts of --allow-registry-file FILE (one a line, '#' starts a
// comment).
Result<std::vector<std::string>> allowed_registries(const Args& args) {
  IMAGEFS_TRY(hosts, allowed_registry_options(args));
  if (auto file = args.get("allow-registry-file")) {
    std::ifstream in(*file);
    if (!in) return errno_error(errno, "cannot read --allow-registry-file", *file);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      line = line.substr(0, line.find('#'));
      size_t start = line.find_first_not_of(" \t\r");
      if (start == std::string::npos) continue;
      line = line.substr(start, line.find_last_not_of(" \t\r") + 1 - start);
      IMAGEFS_TRY(domain, registry_domain(line, *file + ":" + std::to_string(n)));
      hosts.push_back(std::move(domain));
    }
  }
  return hosts;
}

// --idle: a whole number of seconds, or with a unit: "90s", "10m", "2h"; 0 never closes.
Result<std::chrono::milliseconds> parse_idle(const std::string& text) {
  std::string digits = text;
  int64_t unit = 1;
  if (!digits.empty() && std::string_view("smh").find(digits.back()) != std::string_view::npos) {
    unit = digits.back() == 's' ? 1 : digits.back() == 'm' ? 60 : 3600;
    digits.pop_back();
  }
  auto n = parse_number(digits, 0, 365L * 24 * 3600 / unit, "--idle");
  if (!n.ok())
    return make_error(
        EINVAL, "--idle " + text + ": expected a duration such as 600, 90s, 10m or 2h (0: never)");
  return std::chrono::milliseconds(*n * unit * 1000);
}

// The options of a mount that need nothing but the command line: registry and archive options,
// durations, threads and the --allow-other rules. Errors are usage errors.
Result<void> mount_options(const Args& args, MountSetup& setup) {
  IMAGEFS_TRY(registry, registry_options(args));
  setup.images.registry = std::move(registry);
  IMAGEFS_TRY(archive, archive_options(args));
  setup.images.archive = std::move(archive);
  if (args.get("format"))
    return make_error(EINVAL, "--format is for build: a mount serves all three formats");
  if (auto ttl = args.get("ttl")) {
    IMAGEFS_TRY(n, parse_number(*ttl, 0, 365L * 24 * 3600, "--ttl"));
    setup.images.tag_ttl = std::chrono::seconds(n);
  } else {
    setup.images.tag_ttl = std::chrono::seconds(kDefaultTtl);
  }
  if (auto ttl = args.get("negative-ttl")) {
    IMAGEFS_TRY(n, parse_number(*ttl, 0, 3600, "--negative-ttl"));
    setup.images.negative_ttl = std::chrono::seconds(n);
  }
  // No refusal of credentials is remembered longer than a failed lookup.
  setup.images.registry.refusal_ttl = setup.images.negative_ttl;
  if (auto idle = args.get("idle")) {
    IMAGEFS_TRY(d, parse_idle(*idle));
    setup.images.idle = d;
  }
  if (auto threads = args.get("threads")) {
    IMAGEFS_TRY(n, parse_number(*threads, 1, 256, "--threads"));
    setup.serve.max_threads = static_cast<unsigned>(n);
  }
  setup.serve.allow_other = args.has("allow-other");
  IMAGEFS_TRY(allowed, allowed_registry_options(args));
  const bool named = !allowed.empty() || args.has("allow-registry-file");
  if (setup.serve.allow_other && !named)
    return make_error(EINVAL,
                      "--allow-other lets other users make this daemon contact registries with "
                      "your credentials: name the registries they may reach with --allow-registry "
                      "HOST (repeatable; '*' for any) or --allow-registry-file FILE");
  if (!setup.serve.allow_other && named)
    return make_error(EINVAL,
                      "--allow-registry and --allow-registry-file are for --allow-other (without "
                      "it, no other user can reach the mount)");
  setup.serve.debug = args.has("debug");
  setup.foreground = args.has("foreground") || setup.serve.debug;
  if (auto listen = args.get("metrics-listen")) {
    IMAGEFS_TRY(address, parse_listen_address(*listen, args.has("metrics-listen-remote")));
    setup.metrics_listen = std::move(address);
  } else if (args.has("metrics-listen-remote")) {
    return make_error(EINVAL, "--metrics-listen-remote is for --metrics-listen");
  }
  return {};
}

Result<MountSetup> mount_setup(const Args& args) {
  MountSetup setup;
  std::error_code ec;
  setup.mountpoint = fsys::absolute(args.positional()[0], ec).lexically_normal();
  if (setup.mountpoint.has_filename() == false) setup.mountpoint = setup.mountpoint.parent_path();
  if (auto dir = args.get("cache-dir")) {
    setup.cache_dir = fsys::absolute(*dir, ec);
  } else {
    IMAGEFS_TRY(dflt, store::default_cache_dir());
    setup.cache_dir = dflt;
  }
  IMAGEFS_CHECK(mount_options(args, setup));
  setup.serve.mountpoint = setup.mountpoint;
  IMAGEFS_TRY(allowed, allowed_registries(args));
  setup.allowed_registries = std::move(allowed);
  if (setup.serve.allow_other && setup.allowed_registries.empty())
    return make_error(EINVAL,
                      "--allow-registry-file names no registry: other users could reach "
                      "none (write one host a line, or '*' for any)");
  setup.log_file =
      args.get("log") ? fsys::absolute(*args.get("log"), ec) : setup.cache_dir / "mount.log";
  struct stat st {};
  if (::stat(setup.mountpoint.c_str(), &st) == 0 && !S_ISDIR(st.st_mode))
    return make_error(ENOTDIR, setup.mountpoint.string() + " is not a directory");
  return setup;
}

// A mount point left by a daemon that died is detached (it can only answer ENOTCONN); a live
// imagefs mount is an error.
Result<void> prepare_mountpoint(const fsys::path& mountpoint, Io& io) {
  IMAGEFS_TRY(state, fs::mount_state(mountpoint));
  switch (state) {
    case fs::MountState::free:
      return {};
    case fs::MountState::live:
      return make_error(EBUSY, mountpoint.string() +
                                   " is already an imagefs mount: unmount it first "
                                   "(fusermount3 -u " +
                                   mountpoint.string() + ")");
    case fs::MountState::stale_other:
      return make_error(ENOTCONN, mountpoint.string() +
                                      " is a FUSE mount whose daemon is gone (\"Transport "
                                      "endpoint is not connected\"), and not imagefs': run "
                                      "fusermount3 -u " +
                                      mountpoint.string());
    case fs::MountState::stale:
      io.err << "imagefs mount: " << mountpoint.string()
             << " was left mounted by an imagefs daemon that is no longer running (\"Transport "
                "endpoint is not connected\"); unmounting it first\n";
      IMAGEFS_CHECK(fs::detach(mountpoint));
      return {};
  }
  return {};
}

// Everything the daemon does, in the process that serves. `ready` runs once the mount is up.
Result<void> run_daemon(MountSetup setup, Log& log, const std::function<void()>& ready) {
  // A long-lived daemon compresses files of any size, each alone in one buffer: with glibc's
  // sliding mmap threshold, buffers up to 32 MB would come from the heap and stay there after
  // they are freed. Anything of 1 MiB or more is mapped on its own and given back when freed.
  ::mallopt(M_MMAP_THRESHOLD, 1 << 20);  // NOLINT(concurrency-mt-unsafe): no thread exists yet
  IMAGEFS_TRY(blobs, store::BlobStore::open(setup.cache_dir));
  IMAGEFS_TRY(catalog, store::Catalog::open(store::Catalog::file_in(setup.cache_dir)));
  std::string mountpoint = setup.mountpoint.string();
  setup.images.log = [&log](const std::string& line) { log.write(line); };
  setup.images.log_failure = [&log](const std::string& line) { log.write(Level::warning, line); };
  IMAGEFS_TRY(images, fs::Images::create(blobs, catalog, setup.images));
  fs::MountInfo info{mountpoint, setup.cache_dir.string(),
                     setup.foreground ? std::string("stderr") : setup.log_file.string(),
                     static_cast<int64_t>(std::time(nullptr))};
  fs::Access access;
  access.allowed_registries = setup.allowed_registries;
  setup.serve.log = [&log](const std::string& line) {
    log.write(line.starts_with("internal error") ? Level::error : Level::warning, line);
  };
  std::unique_ptr<fs::Filesystem> filesystem = fs::Filesystem::create(images, info, access);
  fs::daemon_metrics().start_time().set(static_cast<double>(info.started));
  // Bound before the mount, so a port in use fails the mount with its reason; stopped (and its
  // thread joined) when this function returns.
  std::unique_ptr<MetricsServer> metrics;
  if (setup.metrics_listen) {
    IMAGEFS_TRY(server, MetricsServer::start(*setup.metrics_listen, [cache = setup.cache_dir] {
                  return fs::render_metrics(cache);
                }));
    metrics = std::move(server);
    log.write("serving metrics on " + metrics->address().url());
  }
  Notifier notifier;
  setup.serve.on_signal = [&log, &notifier, mountpoint](int sig) {
    std::string name = sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP" : "SIGTERM";
    notifier.stopping("unmounted " + mountpoint + " on " + name);
    log.write("unmounted " + mountpoint + " on " + name +
              "; work in flight abandoned (a cut-off pull resumes next time)");
  };
  Result<void> served = fs::serve(*filesystem, setup.serve, [&] {
    log.write("mounted " + mountpoint + " (store " + setup.cache_dir.string() + ", platform " +
              images->default_platform().str() + ")");
    // Started here: serve() has blocked the stop signals, which this thread inherits.
    notifier.ready([&images] { return status_line(*images); });
    ready();
  });
  notifier.stopping(served.ok() ? "unmounted " + mountpoint : "serving ended");
  notifier.stop();
  if (served.ok()) log.write("unmounted " + mountpoint);
  return served;
}

// run_daemon, with anything thrown while setting up (before the FUSE loop, whose callbacks are
// guarded) turned into an Error rather than std::terminate.
Result<void> run_daemon_guarded(MountSetup setup, Log& log, const std::function<void()>& ready) {
  try {
    return run_daemon(std::move(setup), log, ready);
  } catch (const std::exception& e) {
    return make_error(EIO, std::string("internal error: ") + e.what());
  } catch (...) {
    return make_error(EIO, "internal error (an exception that is not a std::exception)");
  }
}

int mount_foreground(MountSetup setup, Io& io) {
  io.err.flush();
  StderrCapture capture;
  Log log(capture.original());
  Result<void> served = run_daemon_guarded(
      std::move(setup), log, [&capture] { (void)capture.finish(StderrCapture::Echo::yes); });
  if (!served.ok()) {
    std::string said = capture.finish(StderrCapture::Echo::no);
    Error failed = make_error(served.error().code, mount_failure(served.error(), said));
    if (is_journal_stream(STDERR_FILENO)) {  // one line, at the error priority
      log.write(Level::error, "mount failed: " + failed.message);
      return kExitFailed;
    }
    return report(io, "mount", failed);
  }
  return kExitOk;
}

// Forks the daemon; returns once it says the mount is ready, or why it is not.
int mount_background(MountSetup setup, Io& io) {
  std::error_code ec;
  // The default log lives in the store: its root is made private before anything is in it.
  if (setup.log_file.parent_path() == setup.cache_dir)
    (void)store::make_private_store_dir(setup.cache_dir);  // BlobStore::open says why, if it fails
  else
    fsys::create_directories(setup.log_file.parent_path(), ec);
  UniqueFd log_fd(::open(setup.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!log_fd)
    return report(io, "mount", errno_error(errno, "cannot open the log", setup.log_file));
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0)
    return report(io, "mount", errno_error(errno, "cannot create a pipe for", setup.mountpoint));
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  io.out.flush();
  io.err.flush();
  pid_t pid = ::fork();
  if (pid < 0) return report(io, "mount", errno_error(errno, "cannot fork for", setup.mountpoint));
  if (pid == 0) {
    read_end.reset();
    ::setsid();
    // The daemon's own output goes to the log; it keeps no terminal.
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    ::dup2(null, STDIN_FILENO);
    ::dup2(log_fd.get(), STDOUT_FILENO);
    ::dup2(log_fd.get(), STDERR_FILENO);
    (void)::chdir("/");
    Log log(log_fd.get());
    int fd = write_end.get();
    StderrCapture capture;  // into the log once the mount is up, to the user too if it fails
    Result<void> served = run_daemon_guarded(std::move(setup), log, [fd, &capture] {
      (void)capture.finish(StderrCapture::Echo::yes);
      (void)!::write(fd, "ok\n", 3);
      ::close(fd);
    });
    if (!served.ok()) {
      std::string failure = mount_failure(served.error(), capture.finish(StderrCapture::Echo::yes));
      log.write(Level::error, "mount failed: " + failure);
      std::string message = printable(failure) + "\n";
      (void)!::write(fd, message.data(), message.size());
      ::_exit(kExitFailed);
    }
    ::_exit(kExitOk);
  }
  write_end.reset();
  std::string answer;
  char buf[512];
  ssize_t n = 0;
  while ((n = ::read(read_end.get(), buf, sizeof buf)) > 0) {
    answer.append(buf, static_cast<size_t>(n));
    if (answer == "ok\n") break;
  }
  if (answer == "ok\n") {
    io.err << "imagefs: mounted " << printable(setup.mountpoint.string()) << " (daemon pid " << pid
           << ", log " << printable(setup.log_file.string()) << ")\n";
    return kExitOk;
  }
  if (answer.empty()) answer = "the daemon ended while starting; see " + setup.log_file.string();
  while (!answer.empty() && answer.back() == '\n') answer.pop_back();
  // The mount point once: the daemon's reasons mostly name it ("cannot mount on MOUNT: ...").
  bool named = answer.find(setup.mountpoint.string()) != std::string::npos;
  io.err << "imagefs: mount" << (named ? "" : " " + printable(setup.mountpoint.string())) << ": "
         << printable(answer) << "\n";
  return kExitFailed;
}

std::string seconds_text(double s) {
  std::ostringstream out;
  out.precision(1);
  out << std::fixed << s << " s";
  return out.str();
}

// One mount's status, for people; false when it does not answer.
bool print_status(const fsys::path& mountpoint, Io& io) {
  std::ifstream in(mountpoint / std::string(fs::kStatusFile));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json s = nlohmann::json::parse(text.str(), nullptr, false);
  // What reaches the terminal is printable(): the mount point's name and every string of the
  // status may hold any bytes (an older daemon, a registry's text).
  auto str = [&](const nlohmann::json& j, const char* key) {
    return printable(j.is_object() && j.contains(key) && j[key].is_string()
                         ? j[key].get<std::string>()
                         : std::string());
  };
  if (!in || s.is_discarded() || !s.is_object()) {
    io.out << printable(mountpoint.string())
           << ": not answering (a daemon that died leaves \"Transport "
           << "endpoint is not connected\"; `imagefs mount` cleans it up, or fusermount3 -u)\n";
    return false;
  }
  auto num = [](const nlohmann::json& j, const char* key) -> double {
    return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0;
  };
  io.out << printable(mountpoint.string()) << "  pid " << static_cast<int64_t>(num(s, "pid"))
         << "  store " << str(s, "cache_dir") << "  log " << str(s, "log") << "\n";
  if (!str(s, "cache_dir").empty())
    io.out << "  the store " << printable(store_usage_line(str(s, "cache_dir"))) << "\n";
  io.out << "  platform " << str(s, "platform") << ", tags re-checked after "
         << static_cast<int64_t>(num(s, "tag_ttl_seconds")) << " s, "
         << static_cast<int64_t>(num(s, "images_open")) << " images open\n";
  const nlohmann::json tasks = s.contains("in_flight") ? s["in_flight"] : nlohmann::json();
  if (!tasks.is_array() || tasks.empty()) io.out << "  nothing in flight\n";
  for (const auto& t : tasks.is_array() ? tasks : nlohmann::json::array()) {
    io.out << "  in flight: " << str(t, "image") << ": " << str(t, "task");
    if (t.is_object() && t.contains("total_bytes"))
      io.out << " " << format_size(static_cast<uint64_t>(num(t, "bytes"))) << " of "
             << format_size(static_cast<uint64_t>(num(t, "total_bytes")));
    io.out << " (" << seconds_text(num(t, "seconds")) << ")\n";
  }
  const nlohmann::json errors = s.contains("recent_errors") ? s["recent_errors"] : nlohmann::json();
  if (errors.is_array() && !errors.empty()) {
    io.out << "  recent errors:\n";
    for (const auto& e : errors)
      io.out << "    " << str(e, "time") << "  " << str(e, "error") << "\n";
  }
  // Blobs that a mirror (hosts.toml, --mirror) served rather than the registry itself.
  const nlohmann::json served =
      s.contains("served_by_mirrors") ? s["served_by_mirrors"] : nlohmann::json();
  if (served.is_array() && !served.empty()) {
    io.out << "  served by mirrors (latest last):\n";
    for (const auto& e : served)
      io.out << "    " << str(e, "time") << "  " << str(e, "image") << ": " << str(e, "blob") << " "
             << str(e, "digest") << " via " << str(e, "host") << "\n";
  }
  return true;
}

// `status --prometheus`: one mount's MOUNT/.metrics as it is (the daemon makes it per open). A
// Prometheus text of several mounts would repeat every metric: one mount must be named when there
// are several.
int print_prometheus(const std::vector<fsys::path>& mounts, Io& io) {
  if (mounts.size() > 1)
    return report(io, "status",
                  make_error(EINVAL, std::to_string(mounts.size()) +
                                         " imagefs mounts: name the one whose metrics to print"));
  const fsys::path file = mounts[0] / std::string(fs::kMetricsFile);
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty())
    return report(io, "status",
                  make_error(EIO, printable(mounts[0].string()) +
                                      ": not answering, or a daemon without metrics (cannot read " +
                                      printable(file.string()) + ")"));
  io.out << text.str();
  return kExitOk;
}

// The paths named on the command line that are imagefs mounts (live or whose daemon died);
// each other one is reported as an error.
std::vector<fsys::path> named_mounts(const std::vector<std::string>& paths, Io& io, int& status) {
  std::vector<fsys::path> mounts;
  for (const std::string& p : paths) {
    std::error_code ec;
    fsys::path path = fsys::absolute(p, ec).lexically_normal();
    if (path.has_parent_path() && !path.has_filename()) path = path.parent_path();  // "dir/"
    Result<fs::MountState> state = fs::mount_state(path);
    if (!state.ok()) {
      status = report(io, "status", state.error());
      continue;
    }
    switch (*state) {
      case fs::MountState::live:
      case fs::MountState::stale:
        mounts.push_back(std::move(path));
        break;
      case fs::MountState::free:
        status = report(io, "status", make_error(EINVAL, p + " is not an imagefs mount"));
        break;
      case fs::MountState::stale_other: {
        std::string message = p;
        message += " is not an imagefs mount (a FUSE mount whose daemon is gone: fusermount3 -u ";
        message += p;
        message += ")";
        status = report(io, "status", make_error(ENOTCONN, message));
        break;
      }
    }
  }
  return mounts;
}

}  // namespace

std::vector<OptionSpec> mount_option_specs() {
  return {
      {"foreground", Arity::flag, "stay in the foreground, logging to stderr", "", 'f'},
      {"ttl", Arity::value,
       "re-resolve a tag when it was resolved longer ago than this (default: 300)", "SECONDS"},
      {"negative-ttl", Arity::value,
       "a failed lookup of a tag is answered again without asking the registry for this long "
       "(default: 5)",
       "SECONDS"},
      {"threads", Arity::value, "most threads serving requests at once (default: 16)", "N"},
      {"idle", Arity::value,
       "close an image unused for this long, releasing it to gc (default: 10m; 0: never)",
       "DURATION"},
      {"allow-other", Arity::flag,
       "let other users see the mount (for non-root mounts: user_allow_other in "
       "/etc/fuse.conf); needs --allow-registry or --allow-registry-file",
       ""},
      {"allow-registry", Arity::repeated,
       "with --allow-other: a registry other users may look images up on ('*': any); other "
       "names are ENOENT for them, with no network traffic",
       "HOST[:PORT]"},
      {"allow-registry-file", Arity::value,
       "with --allow-other: registries other users may reach, one a line ('#' comments)", "FILE"},
      {"log", Arity::value, "the daemon's log (default: CACHE-DIR/mount.log)", "FILE"},
      {"debug", Arity::flag, "trace every FUSE request on stderr (implies -f)", ""},
      {"metrics-listen", Arity::value,
       "serve the metrics (as MOUNT/.metrics) over HTTP at GET /metrics on this address: "
       "127.0.0.1:9100, [::1]:9100, localhost:9100 (port 0: any free one, logged)",
       "HOST:PORT"},
      {"metrics-listen-remote", Arity::flag,
       "let --metrics-listen take an address other hosts can reach (0.0.0.0:9100, a LAN "
       "address); without it only loopback is accepted",
       ""},
  };
}

Result<void> check_mount(const Args& args) {
  if (args.positional().size() != 1) return make_error(EINVAL, "give one mount point");
  MountSetup setup;
  return mount_options(args, setup);
}

int run_mount(const Args& args, Io& io) {
  if (args.positional().size() != 1) {
    io.err << "imagefs mount: give one mount point\n";
    return kExitUsage;
  }
  auto setup = mount_setup(args);
  if (!setup.ok()) return report(io, "mount", setup.error());
  if (auto prepared = prepare_mountpoint(setup->mountpoint, io); !prepared.ok())
    return report(io, "mount", prepared.error());
  if (setup->foreground) return mount_foreground(std::move(*setup), io);
  return mount_background(std::move(*setup), io);
}

int run_status(const Args& args, Io& io) {
  if (args.has("json") && args.has("prometheus")) {
    io.err << "imagefs status: --json and --prometheus are two formats: give one\n";
    return kExitUsage;
  }
  int status = kExitOk;
  // A mount named on the command line that does not answer fails the command; in the list of
  // every mount (which may hold other users' dead mounts) it is only reported.
  const bool named = !args.positional().empty();
  std::vector<fsys::path> mounts;
  if (named) {
    mounts = named_mounts(args.positional(), io, status);
    if (mounts.empty()) return status;
  } else {
    mounts = fs::imagefs_mounts();
  }
  if (mounts.empty()) {
    io.out << "no imagefs mounts\n";
    return kExitOk;
  }
  if (args.has("prometheus")) return print_prometheus(mounts, io);
  if (args.has("json")) {
    // One JSON object per mount; a mount that does not answer (or answers no JSON) is one too.
    for (const fsys::path& m : mounts) {
      std::ifstream in(m / std::string(fs::kStatusFile));
      std::stringstream text;
      text << in.rdbuf();
      nlohmann::json s = nlohmann::json::parse(text.str(), nullptr, false);
      if (!in || s.is_discarded() || !s.is_object()) {
        s = nlohmann::json{{"mountpoint", printable(m.string())}, {"answering", false}};
        if (named) status = kExitFailed;
      }
      io.out << s.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
    return status;
  }
  for (const fsys::path& m : mounts)
    if (!print_status(m, io) && named) status = kExitFailed;
  return status;
}

}  // namespace imagefs::cli
