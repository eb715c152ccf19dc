// Internal to cpio/ (not part of its interface): the keys of an archive's cached plans
// (docs/STORE_FORMAT.md, "Archive plans"): what each plan depends on, hashed.
#pragma once

#include <sys/stat.h>

#include <string>
#include <vector>

#include "cpio/inputs.h"
#include "cpio/options.h"
#include "store/digest.h"

namespace imagefs::cpio::detail {

// The catalog key of a plan: it begins with the image's digest (gc erases it with the image), then
// the format, then a hash of everything else the archive depends on. Host files are identified by
// what stat says (a changed file changes its size, mtime or ctime), so a cached plan is found
// without reading them.
// `stats` are those of host_files(options), in order; `level` is level_of(options).
std::string plan_key(const store::Digest& image, const ArchiveOptions& options, int level,
                     const std::vector<struct stat>& stats);

// What a derived file made with `options` depends on besides the image, as lines of text for a
// key: which init (imagefs' own, by its digest, with the --exec override; or an --init file), and
// each host file of `files` (the init file, injected files) by path, place and what `stats` (one
// per file, in order) say of it. Plans and rootfs.erofs layouts (erofs/maker.cpp) both key on it.
std::string options_key_text(const ArchiveOptions& options,
                             const std::vector<HostFileOption>& files,
                             const std::vector<struct stat>& stats);

// The key of the image part of a plan (cpio/plan.h): what it depends on, which excludes the host
// files' identity and bytes, so that a changed agent finds it.
std::string image_part_key(const store::Digest& image, const ArchiveOptions& options, int level);

}  // namespace imagefs::cpio::detail
