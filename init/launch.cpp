// The launch decisions of the default /init.
#include "init/launch.h"

#include <vector>

#include "init/environment.h"

namespace imagefs::init {

namespace {

// `path` from the directory `dir` (absolute), without "." components and doubled slashes:
// "/a" + "./b//c" -> "/a/b/c"; an absolute `path` starts from "/". ".." stays for stat() to
// resolve (lexically it would be wrong after a symlink).
std::string join(const std::string& dir, const std::string& path) {
  std::vector<std::string_view> parts;
  auto add = [&](std::string_view text) {
    while (!text.empty()) {
      const size_t slash = text.find('/');
      const std::string_view part = text.substr(0, slash);
      text = slash == std::string_view::npos ? std::string_view() : text.substr(slash + 1);
      if (!part.empty() && part != ".") parts.push_back(part);
    }
  };
  if (!path.starts_with('/')) add(dir);
  add(path);
  std::string out;
  for (std::string_view p : parts) {
    out += '/';
    out += p;
  }
  return out.empty() ? "/" : out;
}

bool valid_hostname(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

Result<Launch> plan_launch(const InitConfig& config, const BootOptions& boot,
                           std::string_view hostname, const RootFs& root) {
  Launch out;
  const std::optional<Argv>& exec = boot.exec ? boot.exec : config.exec;
  Result<Argv> argv = compose_command(config.entrypoint, config.cmd, exec, boot.args);
  if (!argv.ok()) {
    Error e = argv.error();
    if (!exec) e.message += " (give one with imagefs build --exec, or imagefs.exec= at boot)";
    return e;
  }
  out.argv = std::move(*argv);

  Result<ExecUser> user =
      resolve_user(config.user, root.read_file("/etc/passwd"), root.read_file("/etc/group"));
  if (!user.ok()) {
    const int code = user.error().code == ENOENT ? ESRCH : user.error().code;
    return make_error(code, "cannot run as User \"" + config.user + "\": " + user.error().message);
  }
  out.user = std::move(*user);

  out.env = container_environment(config.env, hostname, out.user.home, boot.env);

  out.working_dir = config.working_dir.empty() ? "/" : join("/", config.working_dir);
  if (root.kind(out.working_dir) != RootFs::Kind::directory) {
    return make_error(ENOTDIR, "the working directory " + out.working_dir +
                                   (root.kind(out.working_dir) == RootFs::Kind::missing
                                        ? " does not exist in the image"
                                        : " is not a directory"));
  }

  const std::string path = env_value(out.env, "PATH").value_or(std::string(kDefaultPath));
  Result<std::string> program = find_program(out.argv[0], path, [&](const std::string& p) {
    return root.kind(join(out.working_dir, p)) == RootFs::Kind::executable_file;
  });
  if (!program.ok()) return program.error().context("cannot start the command");
  switch (root.kind(join(out.working_dir, *program))) {
    case RootFs::Kind::executable_file:
      break;
    case RootFs::Kind::missing:
      return make_error(ENOENT,
                        "cannot start the command: " + *program + " does not exist in the image");
    case RootFs::Kind::directory:
    case RootFs::Kind::other:
      return make_error(EACCES,
                        "cannot start the command: " + *program + " is not an executable file");
  }
  out.program = std::move(*program);
  return out;
}

int start_failure_status(const Error& error) { return error.code == ENOENT ? 127 : 126; }

WritableRoot plan_writable_root(const RootFs& root) {
  WritableRoot out;
  // /.imagefs holds the init itself, so it is there in every image made for this path; the others
  // for an init copied elsewhere. Directories, not symlinks: a tmpfs mounted through a symlink
  // lands where the link points, possibly outside what the overlay shows.
  for (const char* dir : {"/.imagefs", "/run", "/tmp", "/mnt", "/media", "/srv", "/opt"}) {
    if (!root.is_symlink(dir) && root.kind(dir) == RootFs::Kind::directory) {
      out.scratch = dir;
      break;
    }
  }
  const TmpfsDir candidates[] = {
      {"/tmp", 01777}, {"/var/tmp", 01777}, {"/run", 0755}, {"/var/run", 0755}};
  for (const TmpfsDir& d : candidates) {
    if (!root.is_symlink(d.path) && root.kind(d.path) == RootFs::Kind::directory)
      out.fallback.push_back(d);
  }
  return out;
}

std::string overlay_options(std::string_view scratch) {
  const std::string s(scratch);
  return "lowerdir=/,upperdir=" + s + "/upper,workdir=" + s + "/work";
}

std::string overlay_root(std::string_view scratch) { return std::string(scratch) + "/root"; }

std::string choose_hostname(std::string_view kernel_hostname,
                            const std::optional<std::string>& etc_hostname) {
  if (!kernel_hostname.empty() && kernel_hostname != "(none)") return std::string(kernel_hostname);
  if (etc_hostname) {
    std::string_view line(*etc_hostname);
    line = line.substr(0, line.find('\n'));
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r'))
      line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (valid_hostname(line)) return std::string(line);
  }
  return "localhost";
}

}  // namespace imagefs::init
