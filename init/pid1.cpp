// imagefs-init: the default /init of imagefs' archives (design decision 7), PID 1 of the microVM.
// On a read-only root (an EROFS disk) it first makes the root writable, as docker's is (an overlay
// with a tmpfs upper, else tmpfs on the scratch directories). It mounts the kernel's filesystems,
// brings up lo, sets the hostname, runs the image's command as docker would (launch.cpp decides
// how: argv, environment, user, working directory), reaps every zombie, forwards SIGTERM and
// friends to the command, prints one line with the command's exit status on the console, and powers
// the VM off. It is linked statically, so it runs in images without a shell or a libc, and it never
// exits: an init that exits panics the kernel.
//
// This file holds the system calls; the decisions are in the library (unit tested), and the whole
// is tested by booting it in QEMU (tests/integration/init/).
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "init/boot_options.h"
#include "init/init_config.h"
#include "init/launch.h"

namespace imagefs::init {
namespace {

// Signals passed on to the command. SIGKILL and SIGSTOP cannot be caught; the kernel never sends
// PID 1 the others that a terminal would (it has no controlling terminal).
constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

void write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    text.remove_prefix(static_cast<size_t>(n));
  }
}

// One line on the console: "imagefs-init: TEXT".
void say(std::string_view text) {
  std::string line = "imagefs-init: ";
  line += text;
  line += '\n';
  write_all(STDERR_FILENO, line);
}

std::string error_text(int code) {
  const char* text = ::strerrordesc_np(code);
  return text != nullptr ? text : "error " + std::to_string(code);
}

std::optional<std::string> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buffer[16384];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

class RealRoot final : public RootFs {
 public:
  [[nodiscard]] std::optional<std::string> read_file(const std::string& path) const override {
    return init::read_file(path);
  }
  [[nodiscard]] Kind kind(const std::string& path) const override {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
      return errno == ENOENT || errno == ENOTDIR ? Kind::missing : Kind::other;
    if (S_ISDIR(st.st_mode)) return Kind::directory;
    if (S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0) return Kind::executable_file;
    return Kind::other;
  }
  [[nodiscard]] bool is_symlink(const std::string& path) const override {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
  }
};

bool is_empty_dir(const char* path) {
  DIR* dir = ::opendir(path);
  if (dir == nullptr) return false;
  bool empty = true;
  while (const dirent* e = ::readdir(dir)) {  // NOLINT(concurrency-mt-unsafe): one thread
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      empty = false;
      break;
    }
  }
  ::closedir(dir);
  return empty;
}

struct MountSpec {
  const char* target;
  const char* type;
  const char* source;
  unsigned long flags;
  const char* data;
  mode_t mode;         // of the mount point when it has to be made
  bool only_if_empty;  // the image's own files there are kept rather than hidden
};

// What a container gets (docker mounts proc, sysfs, /dev with devpts and shm), plus tmpfs on /tmp
// and /run where the image has nothing there: the archive is already in RAM and writable, so
// files the image put there are left visible.
constexpr MountSpec kMounts[] = {
    {"/proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr, 0555, false},
    {"/sys", "sysfs", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr, 0555, false},
    {"/dev", "devtmpfs", "devtmpfs", MS_NOSUID, "mode=0755", 0755, false},
    {"/dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666", 0755,
     false},
    {"/dev/shm", "tmpfs", "shm", MS_NOSUID | MS_NODEV, "mode=1777", 01777, false},
    {"/tmp", "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777, true},
    {"/run", "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", 0755, true},
};

// Mounts what is missing. A mount point that is a symlink or a file in the image, or already a
// mount, is the image's (or the kernel's) choice and left alone; a failed mount is reported and
// the boot goes on.
void mount_filesystems() {
  for (const MountSpec& m : kMounts) {
    struct stat st {};
    if (::lstat(m.target, &st) != 0) {
      if (::mkdir(m.target, m.mode) != 0 && errno != EEXIST) {
        say(std::string("cannot create ") + m.target + ": " + error_text(errno));
        continue;
      }
      (void)::chmod(m.target, m.mode);  // not subject to the umask
    } else {
      if (!S_ISDIR(st.st_mode)) continue;
      const std::string parent = std::string(m.target).substr(0, std::string(m.target).rfind('/'));
      struct stat up {};
      if (::stat(parent.empty() ? "/" : parent.c_str(), &up) == 0 && up.st_dev != st.st_dev)
        continue;  // already a mount point
      if (m.only_if_empty && !is_empty_dir(m.target)) continue;
    }
    if (::mount(m.source, m.target, m.type, m.flags, m.data) != 0)
      say(std::string("cannot mount ") + m.type + " on " + m.target + ": " + error_text(errno));
  }
  // The links docker's /dev has and devtmpfs lacks.
  const std::pair<const char*, const char*> links[] = {{"/proc/self/fd", "/dev/fd"},
                                                       {"/proc/self/fd/0", "/dev/stdin"},
                                                       {"/proc/self/fd/1", "/dev/stdout"},
                                                       {"/proc/self/fd/2", "/dev/stderr"}};
  for (const auto& [target, link] : links) (void)::symlink(target, link);
}

// The overlay over the read-only root: a tmpfs on `scratch` holds upper/, work/ and root/ (the
// merged tree), and pivot_root makes root/ "/" (PID 1 on a real root filesystem may pivot, unlike
// on the initramfs, which switch_root has to empty instead). The old root is detached: the overlay
// keeps what it needs of it. Returns false, with everything undone and the reason on the console,
// when the kernel has no overlayfs (ENODEV) or anything else fails.
bool switch_to_overlay(const std::string& scratch) {
  if (::mount("tmpfs", scratch.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) {
    say("cannot mount a tmpfs on " + scratch + " for the overlay: " + error_text(errno));
    return false;
  }
  struct stat top {};
  (void)::stat("/", &top);
  const std::string upper = scratch + "/upper";
  const std::string root = overlay_root(scratch);
  for (const std::string& dir : {upper, scratch + "/work", root}) (void)::mkdir(dir.c_str(), 0755);
  // The merged root shows the upper directory's owner and mode: the image's.
  (void)::chown(upper.c_str(), top.st_uid, top.st_gid);
  (void)::chmod(upper.c_str(), top.st_mode & 07777);
  const std::string options = overlay_options(scratch);
  std::string failed;
  if (::mount("overlay", root.c_str(), "overlay", 0, options.c_str()) != 0) {
    failed = errno == ENODEV ? "no overlayfs in the kernel" : "overlay: " + error_text(errno);
  } else {
    // pivot_root refuses a shared parent mount; a kernel's first root is private, but say so.
    (void)::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr);
    if (::chdir(root.c_str()) != 0) {
      failed = "cannot enter " + root + ": " + error_text(errno);
    } else if (::syscall(SYS_pivot_root, ".", ".") == 0) {
      // The old root is now stacked on "."; detached, it goes when the overlay lets it go.
      (void)::umount2(".", MNT_DETACH);
      (void)::chdir("/");
      return true;
    } else {
      failed = "pivot_root: " + error_text(errno);
    }
    (void)::chdir("/");
    (void)::umount2(root.c_str(), MNT_DETACH);
  }
  (void)::umount2(scratch.c_str(), MNT_DETACH);
  say("read-only root: " + failed + "; falling back to tmpfs on the scratch directories");
  return false;
}

// A read-only root (an EROFS disk) gets a writable root as docker's containers have: an overlay
// with a tmpfs upper, else tmpfs on /tmp, /var/tmp, /run, /var/run (launch.h). A writable root
// (the initramfs) is left as it is.
void make_root_writable() {
  struct statvfs vfs {};
  if (::statvfs("/", &vfs) != 0 || (vfs.f_flag & ST_RDONLY) == 0) return;
  const WritableRoot plan = plan_writable_root(RealRoot());
  if (plan.scratch.empty()) {
    say("read-only root: no directory to hold an overlay's upper (/.imagefs, /run, /tmp, ...)");
  } else if (switch_to_overlay(plan.scratch)) {
    say("read-only root: writable through an overlay with a tmpfs upper");
    return;
  }
  std::string mounted;
  for (const TmpfsDir& d : plan.fallback) {
    char data[16];
    (void)std::snprintf(data, sizeof data, "mode=%04o", static_cast<unsigned>(d.mode));
    if (::mount("tmpfs", d.path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, data) != 0) {
      say("cannot mount tmpfs on " + d.path + ": " + error_text(errno));
    } else {
      mounted += " " + d.path;
    }
  }
  say("read-only root: tmpfs on" + (mounted.empty() ? std::string(" nothing") : mounted) +
      ", everything else read-only");
}

// The kernel gives /init the console as fds 0-2 when the archive has /dev/console (imagefs always
// adds one); if it could not, they are opened now that /dev is mounted.
void ensure_console() {
  if (::fcntl(STDERR_FILENO, F_GETFD) != -1) return;
  const int fd = ::open("/dev/console", O_RDWR | O_NOCTTY);
  if (fd < 0) return;
  for (int i = 0; i <= 2; ++i) {
    if (fd != i) (void)::dup2(fd, i);
  }
  if (fd > 2) ::close(fd);
}

// Brings up lo; the kernel gives it 127.0.0.1/8 (and ::1) when it goes up. A kernel without
// networking has nothing to do.
void bring_up_loopback() {
  const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, "lo", 3);
  if (::ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
    if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) say("cannot bring up lo: " + error_text(errno));
  }
  ::close(s);
}

std::string set_hostname() {
  utsname u{};
  (void)::uname(&u);
  std::string name = choose_hostname(u.nodename, read_file("/etc/hostname"));
  if (name != u.nodename && ::sethostname(name.data(), name.size()) != 0)
    say("cannot set the hostname " + name + ": " + error_text(errno));
  return name;
}

// The image's config as cpio/ wrote it; an archive without one (the binary copied elsewhere) runs
// what the kernel command line names.
Result<InitConfig> load_config() {
  const std::string path(kConfigPath);
  std::optional<std::string> bytes = read_file(path);
  if (!bytes) {
    say("no " + path +
        " in the archive: the image's Entrypoint, Cmd, Env, WorkingDir and User "
        "are unknown");
    return InitConfig{};
  }
  return decode_config(*bytes);
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// The child's side of starting the command: its own session (with the console as its terminal
// when possible, so that ^C reaches it), the user, the working directory, exec. Reports and exits
// 126/127 on failure, as a shell would.
[[noreturn]] void exec_command(Launch& launch, const sigset_t& mask) {
  (void)::pthread_sigmask(SIG_SETMASK, &mask, nullptr);
  for (int sig : kForwarded) (void)::signal(sig, SIG_DFL);
  (void)::signal(SIGCHLD, SIG_DFL);
  (void)::setsid();
  (void)::ioctl(STDIN_FILENO, TIOCSCTTY, 0);
  const ExecUser& u = launch.user;
  if (::setgroups(u.groups.size(), u.groups.data()) != 0 || ::setgid(u.gid) != 0 ||
      ::setuid(u.uid) != 0) {
    say("cannot switch to uid " + std::to_string(u.uid) + ", gid " + std::to_string(u.gid) + ": " +
        error_text(errno));
    ::_exit(126);
  }
  if (::chdir(launch.working_dir.c_str()) != 0) {
    say("cannot enter the working directory " + launch.working_dir + ": " + error_text(errno));
    ::_exit(126);
  }
  std::vector<char*> argv = c_strings(launch.argv);
  std::vector<char*> envp = c_strings(launch.env);
  ::execve(launch.program.c_str(), argv.data(), envp.data());
  const int e = errno;
  say("cannot start the command: " + launch.program + ": " + error_text(e));
  ::_exit(e == ENOENT ? 127 : 126);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "command exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::sigabbrev_np(sig);
    std::string out = "command killed by signal " + std::to_string(sig) + " (SIG" +
                      (name != nullptr ? name : "?") + ")";
    if (WCOREDUMP(status)) out += ", core dumped";
    return out;
  }
  return "command ended with wait status " + std::to_string(status);
}

// Reaps every child that has exited; returns true when `main` was among them (its status in
// `*status`).
bool reap(pid_t main, int* status) {
  bool found = false;
  while (true) {
    int st = 0;
    const pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid <= 0) return found;
    if (pid == main) {
      *status = st;
      found = true;
    }
  }
}

// Runs the command to its end as PID 1: every signal of interest is blocked and taken with
// sigwaitinfo, so none is lost between checks. Returns its wait status.
int supervise(pid_t child, const sigset_t& waited) {
  while (true) {
    siginfo_t info{};
    const int sig = ::sigwaitinfo(&waited, &info);
    if (sig < 0) continue;  // EINTR
    if (sig == SIGCHLD) {
      int status = 0;
      if (reap(child, &status)) return status;
    } else {
      (void)::kill(child, sig);
    }
  }
}

// What is left when the command has ended is stopped, as docker stops a container's other
// processes when its main process exits.
void stop_everything(const sigset_t& waited) {
  (void)::kill(-1, SIGKILL);
  const timespec deadline{2, 0};
  timespec start{};
  ::clock_gettime(CLOCK_MONOTONIC, &start);
  while (true) {
    int st = 0;
    const pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid < 0) return;  // ECHILD: nothing left
    if (pid > 0) continue;
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - start.tv_sec >= deadline.tv_sec) return;
    const timespec tick{0, 10'000'000};
    siginfo_t info{};
    (void)::sigtimedwait(&waited, &info, &tick);
  }
}

// Power-off needs the firmware's help: on x86 that is ACPI's S5 state, and without it the kernel
// halts instead, leaving the VM running (Firecracker has no ACPI power-off). There a reboot is
// what ends the VM: Firecracker stops, QEMU with -no-reboot exits.
bool can_power_off() {
  if (std::optional<std::string> dsdt = read_file("/sys/firmware/acpi/tables/DSDT"))
    return dsdt->find("_S5_") != std::string::npos;
#if defined(__x86_64__) || defined(__i386__)
  return false;
#else
  return true;  // PSCI and the like
#endif
}

[[noreturn]] void power_off() {
  ::sync();
  if (can_power_off()) (void)::reboot(RB_POWER_OFF);
  (void)::reboot(RB_AUTOBOOT);
  say("cannot power off or reboot: " + error_text(errno));
  while (true) ::pause();
}

int run() {
  // Blocked from the start, so that no signal is lost before the supervision loop; an empty
  // handler rather than SIG_DFL, which the kernel ignores for PID 1.
  sigset_t waited;
  sigemptyset(&waited);
  sigaddset(&waited, SIGCHLD);
  for (int sig : kForwarded) sigaddset(&waited, sig);
  sigset_t old_mask;
  (void)::pthread_sigmask(SIG_BLOCK, &waited, &old_mask);
  struct sigaction noop {};
  noop.sa_handler = [](int) {};
  for (int sig : kForwarded) (void)::sigaction(sig, &noop, nullptr);
  (void)::sigaction(SIGCHLD, &noop, nullptr);

  ::umask(022);
  make_root_writable();
  mount_filesystems();
  ensure_console();
  bring_up_loopback();
  const std::string hostname = set_hostname();

  const BootOptions boot = parse_boot_options(read_file("/proc/cmdline").value_or(std::string()));
  Result<InitConfig> config = load_config();
  if (!config.ok()) {
    say("error: " + config.error().message);
    say("command exited with status 126");
    return 126;
  }
  Result<Launch> launch = plan_launch(*config, boot, hostname, RealRoot());
  if (!launch.ok()) {
    const int status = start_failure_status(launch.error());
    say("error: " + launch.error().message);
    say("command exited with status " + std::to_string(status));
    return status;
  }
  const pid_t child = ::fork();
  if (child < 0) {
    say("error: cannot start the command: fork: " + error_text(errno));
    say("command exited with status 126");
    return 126;
  }
  if (child == 0) exec_command(*launch, old_mask);
  const int status = supervise(child, waited);
  say(describe_status(status));
  stop_everything(waited);
  return status;
}

}  // namespace
}  // namespace imagefs::init

int main() {
  using imagefs::init::say;
  if (::getpid() != 1) {
    say("this is the default /init of imagefs' initramfs archives: the kernel runs it as PID 1, "
        "and it does nothing else");
    return 2;
  }
  try {
    (void)imagefs::init::run();
  } catch (const std::exception& e) {
    say(std::string("error: ") + e.what());
  } catch (...) {
    say("error: unexpected failure");
  }
  imagefs::init::power_off();
}
