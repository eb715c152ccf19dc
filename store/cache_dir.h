// Where the store lives when --cache-dir is not given: /var/lib/imagefs for root (a system
// daemon's state), else the XDG cache directory of the user ($XDG_CACHE_HOME/imagefs, or
// ~/.cache/imagefs): everything in it can be downloaded again.
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

}  // namespace imagefs::store
