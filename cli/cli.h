// The `imagefs` command line: parses arguments and dispatches to the modules. main() is a thin
// wrapper around run(), so commands can be tested without a process.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "common/result.h"

namespace imagefs::cli {

// Runs the command in `args` (without the program name). Returns the process exit status:
// 0 success, 1 the command failed, 2 bad usage.
int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// mount(8)'s helper (cli/mount_helper.cpp): run as /sbin/mount.fuse.imagefs SOURCE MOUNTPOINT
// [-o OPTIONS] [-s] [-f] [-n] [-v]; mounts as `imagefs mount --OPTION... MOUNTPOINT` would.
int run_mount_helper(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// The `imagefs mount` arguments for mount(8)'s: each -o option of ours as --OPTION[=VALUE], those
// mount(8) owns (rw, noauto, _netdev, x-systemd.*, ...) left out, an unknown one EINVAL (skipped
// with -s). `fake` (-f: do everything but mount) is set when given.
Result<std::vector<std::string>> mount_helper_arguments(const std::vector<std::string>& args,
                                                        bool* fake = nullptr);

}  // namespace imagefs::cli
