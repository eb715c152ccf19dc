// The linked libfuse's version. fs/ is the only module that includes libfuse's headers.
#define FUSE_USE_VERSION 314
#include "fs/version.h"

#include <fuse_lowlevel.h>

namespace imagefs::fs {

std::string fuse_version() {
  return std::string("libfuse ") + ::fuse_pkgversion() + " (API " +
         std::to_string(::fuse_version()) + ")";
}

}  // namespace imagefs::fs
