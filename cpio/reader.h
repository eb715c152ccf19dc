// Internal to cpio/ (not part of its interface): an Archive served from its segment files, the
// reader side of Archive::read() and write_to().
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "cpio/archive.h"
#include "cpio/plan_store.h"

namespace imagefs::cpio::detail {

// The archive made of `segments` (in order; `paths` are their files, one each), which must all be
// in the store with the recorded sizes. Opens no file yet: each read opens the segment it needs.
std::shared_ptr<const Archive> open_archive(std::vector<std::filesystem::path> paths,
                                            const std::vector<SegmentRef>& segments,
                                            ArchiveStats stats);

}  // namespace imagefs::cpio::detail
