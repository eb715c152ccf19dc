// Facts about the FUSE library imagefs is running with, for `imagefs version` and bug reports.
#pragma once

#include <string>

namespace imagefs::fs {

// "libfuse 3.14.0 (API 314)"-style description of the linked libfuse.
std::string fuse_version();

}  // namespace imagefs::fs
