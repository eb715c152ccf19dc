// Everything the default /init decides before it starts the command: argv, environment, user,
// working directory and the file to execute, from the image's config, the kernel command line and
// the image's files. Kept apart from the system calls so that unit tests can give it a fake root.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "init/boot_options.h"
#include "init/command.h"
#include "init/init_config.h"
#include "init/users.h"

namespace imagefs::init {

// The booted root filesystem, as the launch decisions see it.
class RootFs {
 public:
  enum class Kind { missing, directory, executable_file, other };
  virtual ~RootFs() = default;
  // The contents of the file at the absolute `path`, nullopt when there is none.
  [[nodiscard]] virtual std::optional<std::string> read_file(const std::string& path) const = 0;
  // What is at `path`, following symlinks. executable_file: a regular file with an x bit.
  [[nodiscard]] virtual Kind kind(const std::string& path) const = 0;
  // Whether `path` itself is a symlink (not followed).
  [[nodiscard]] virtual bool is_symlink(const std::string& path) const = 0;
};

struct Launch {
  std::string program;  // the file to execute: absolute, or relative to working_dir
  Argv argv;
  Argv env;
  ExecUser user;
  std::string working_dir;  // absolute
};

// The command to start. The exec override of the kernel command line wins over the build's
// (config.exec). Errors, each with a message for the console:
//   ENOENT  the program is not in the image (or not along PATH)
//   EACCES  the program is not an executable file
//   ENOEXEC nothing to run (no Entrypoint, Cmd or override)
//   ESRCH   the User (or its group) is not in the image's /etc/passwd (/etc/group); EINVAL for an
//           id out of range
//   ENOTDIR the WorkingDir does not exist or is not a directory (docker would create it; an image
//           built by docker always has it, so here it is reported)
Result<Launch> plan_launch(const InitConfig& config, const BootOptions& boot,
                           std::string_view hostname, const RootFs& root);

// The exit status to report for a command that could not start, as a shell does: 127 when the
// program is not found (ENOENT), else 126.
int start_failure_status(const Error& error);

// The hostname to set: the kernel's (from hostname= on its command line) unless it is empty or
// "(none)", else the first line of the image's /etc/hostname when that is a valid name, else
// "localhost".
std::string choose_hostname(std::string_view kernel_hostname,
                            const std::optional<std::string>& etc_hostname);

// A read-only root (an EROFS disk booted with `root=/dev/vda ro rootfstype=erofs
// init=/.imagefs/init`) made writable as docker's container root is: first an overlay whose upper
// and work directories live on a tmpfs, over the whole read-only root, switched into with
// pivot_root; where the kernel has no overlayfs, a tmpfs on each usual scratch directory (what
// `docker run --read-only --tmpfs /tmp --tmpfs /run ...` gives), the rest staying read-only.
// A writable root (an initramfs) needs none of this.
struct TmpfsDir {
  std::string path;
  mode_t mode;
  bool operator==(const TmpfsDir&) const = default;
};

struct WritableRoot {
  // An existing directory of the image where the tmpfs holding the overlay's upper/, work/ and
  // the merged root/ is mounted before the switch (the overlay sees the read-only root itself, not
  // what is mounted on it, so the directory's own contents come back after the switch). Empty
  // when the image has none of the candidates: then there is no overlay.
  std::string scratch;
  // The fallback: tmpfs mounts, in order, on the directories of the image that are directories
  // (not symlinks: /var/run -> /run is served by /run's mount). The image's files there are
  // hidden: a scratch directory that cannot be written is worse than one that starts empty.
  std::vector<TmpfsDir> fallback;
};

// What to do with a read-only root, from what the image holds.
WritableRoot plan_writable_root(const RootFs& root);

// The options of the overlay mount over the read-only root "/", with its upper and work
// directories under `scratch` (as plan_writable_root chose it).
std::string overlay_options(std::string_view scratch);

// Where the merged overlay is mounted under `scratch` before pivot_root makes it "/".
std::string overlay_root(std::string_view scratch);

}  // namespace imagefs::init
