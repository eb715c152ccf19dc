// Serving a Filesystem through the kernel: libfuse's low-level API, multi-threaded, read-only,
// with the kernel caches that immutable content deserves (design decision 5); and the state of
// a mount point before a mount (free, a live imagefs mount, or one whose daemon died).
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "common/result.h"
#include "fs/filesystem.h"
#include "fs/guard.h"

namespace imagefs::fs {

struct ServeOptions {
  std::filesystem::path mountpoint;
  bool allow_other = false;  // other users may look (FUSE's allow_other; needs user_allow_other
                             // in /etc/fuse.conf for non-root mounts)
  bool debug = false;        // libfuse's request trace on stderr
  unsigned max_threads = 16;
  // Called on SIGINT, SIGTERM or SIGHUP once the mount is gone, just before the process ends.
  std::function<void(int signal)> on_signal;
  // The daemon's log: a line for each request whose handler threw (answered EIO, fs/guard.h).
  LogSink log;
};

// Mounts `fs` at options.mountpoint and serves it until it is unmounted (fusermount3 -u, umount),
// then returns. No exception crosses a callback: each request's handler runs under guarded()
// (fs/guard.h), which answers EIO and logs. On SIGINT, SIGTERM or SIGHUP it unmounts and ends the
// process (_exit(0), after options.on_signal) without waiting for downloads or builds in flight.
// Blocks those signals in the calling thread: call it before starting other threads. `ready` runs
// once the mount is in place. Errors: the mount failed (with libfuse's reason on stderr and ours in
// the message).
Result<void> serve(Filesystem& fs, const ServeOptions& options, const std::function<void()>& ready);

// What is at a mount point now. `stale`: an imagefs mount whose daemon is gone (the kernel
// answers "Transport endpoint is not connected"); `live`: an imagefs mount that answers.
enum class MountState { free, live, stale, stale_other };
Result<MountState> mount_state(const std::filesystem::path& mountpoint);

// Detaches a stale mount (umount2 MNT_DETACH as root, else `fusermount3 -u -z`).
Result<void> detach(const std::filesystem::path& mountpoint);

// The mount points of imagefs mounts of this mount namespace (fstype fuse.imagefs).
std::vector<std::filesystem::path> imagefs_mounts();

}  // namespace imagefs::fs
