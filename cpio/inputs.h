// Internal to cpio/ (not part of its interface): the archive options as the maker and the plan keys
// use them: levels and --exec checked, host files listed in archive order, and the default /init.
#pragma once

#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "cpio/options.h"
#include "cpio/segment.h"

namespace imagefs::cpio::detail {

// The level that applies to options.format (0 for none). EINVAL names the accepted range.
Result<int> level_of(const ArchiveOptions& options);

// EINVAL for an `exec` the default /init cannot use: with --init, empty, or an argument with a NUL.
Result<void> check_exec(const ArchiveOptions& options);

// stat(2) of a host file named by an option. ENOENT (naming `what` and the path) when it is
// missing or not a regular file.
Result<struct stat> stat_host(const std::filesystem::path& host, std::string_view what);

struct HostFileOption {
  std::filesystem::path host;
  std::string guest;
  std::string_view what;  // for messages
};

// The host files of `options` in order: the init file first (at `init_guest`), if any, then the
// injected ones.
std::vector<HostFileOption> host_files(const ArchiveOptions& options,
                                       std::string_view init_guest = "/init");

// The default /init as a host file: the same bytes, mtime and so segment in every archive.
const std::shared_ptr<const HostFile>& default_init_file();

}  // namespace imagefs::cpio::detail
