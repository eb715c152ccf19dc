// Where the store lives when --cache-dir is not given: /var/lib/imagefs for root (a system
// daemon's state), else the XDG cache directory of the user ($XDG_CACHE_HOME/imagefs, or
// ~/.cache/imagefs): everything in it can be downloaded again. And the rule that keeps a store
// private to its user.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>

#include "common/result.h"

namespace imagefs::store {

// What the default depends on, so that tests need not change the process's identity or
// environment.
struct CacheDirInputs {
  uid_t euid = 0;
  std::optional<std::string> xdg_cache_home;  // $XDG_CACHE_HOME
  std::optional<std::string> home;            // $HOME, or else the passwd entry's directory
};

// The default for these inputs. Relative or empty XDG_CACHE_HOME and HOME are ignored, as the
// XDG base directory spec says. ENOENT when a non-root user has no usable home.
Result<std::filesystem::path> default_cache_dir(const CacheDirInputs& inputs);
// The default for this process (effective uid, environment, passwd).
Result<std::filesystem::path> default_cache_dir();

// Makes `root` a store's private directory: created mode 0700 (with missing parents, also
// 0700) if absent; an existing one that other users may read, search or write (made by an
// older imagefs, or by hand) is changed to 0700. Everything a store holds lives under its root,
// so this one directory keeps other local users out: they see images only through a mount, which
// checks who asks. A directory that this process may not change (another user's) is left as it
// is. BlobStore::open calls it; errors name the path.
Result<void> make_private_store_dir(const std::filesystem::path& root);

}  // namespace imagefs::store
