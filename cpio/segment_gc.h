// gc of archive segments and plans (docs/STORE_FORMAT.md, "Archive segments"): they are shared by
// images, so they are removed by when they were last used, not with an image. Part of cpio/'s
// interface, for `imagefs gc`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "common/result.h"

namespace imagefs::cpio {

struct SegmentGcReport {
  size_t removed = 0;        // segment files
  uint64_t bytes_freed = 0;  // by segment and plan files
  size_t plans_removed = 0;  // plan files
};

// For gc: removes segment files (ROOT/segments/<format>/<key>) not marked used since
// `unused_since` (unix seconds; make() and cached() mark the segments of the archive they return,
// at most once a day, so pass a cutoff of several days), and temporary segment files no builder
// holds; likewise plan files (ROOT/segments/plans/) not used since then. Archives already returned
// keep working only for segments they have open: a daemon calls cached() or make() again when it
// opens an archive. Names that do not fit the layout are left alone. A missing segments/ directory
// is fine.
Result<SegmentGcReport> remove_unused_segments(const std::filesystem::path& store_root,
                                               int64_t unused_since);

}  // namespace imagefs::cpio
