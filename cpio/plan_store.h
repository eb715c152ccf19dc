// Internal to cpio/ (not part of its interface): archive plans kept in the store, as small files
// under ROOT/segments/plans/ (docs/STORE_FORMAT.md, "Archive plans"). Plans are derived data:
// each file carries a checksum and is written without fsync, so that recording a plan costs a
// rename rather than two LMDB fsyncs; a file that a crash left empty or torn fails its checksum
// and counts as absent, and the archive is planned again.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "cpio/plan.h"

namespace imagefs::cpio::detail {

struct SegmentRef {
  std::string key;          // segments/<format>/<key>
  uint64_t compressed = 0;  // the segment file's size
  uint64_t raw = 0;         // the raw bytes it holds
};

// The plan of a whole archive: what ArchiveMaker::cached() serves.
struct PlanRecord {
  std::vector<SegmentRef> segments;
  uint64_t raw_size = 0;
  bool has_init = false;
};

// The image part of an archive (plan.h), so that a changed host file replans the tail only.
struct ImagePartRecord {
  std::vector<SegmentRef> segments;
  uint64_t raw_size = 0;
  PathModes paths;
};

// ROOT/segments/plans.
std::filesystem::path plans_dir(const std::filesystem::path& store_root);

// The record stored under `key`, or nullopt when there is none, or it is damaged, or it was
// written by a newer imagefs (all mean: plan again). A record read is marked used (its mtime) at
// most once a day, for remove_unused_segments(). Errors: only of the file system (EIO, EACCES).
Result<std::optional<PlanRecord>> read_plan(const std::filesystem::path& store_root,
                                            std::string_view key);
Result<std::optional<ImagePartRecord>> read_image_part(const std::filesystem::path& store_root,
                                                       std::string_view key);

// Stores a record under `key`, replacing any: written to a temporary file and renamed, so readers
// in any process see the old record or the new one, whole. Safe from many threads and processes.
Result<void> write_plan(const std::filesystem::path& store_root, std::string_view key,
                        const PlanRecord& record);
Result<void> write_image_part(const std::filesystem::path& store_root, std::string_view key,
                              const ImagePartRecord& record);

// What gc must keep whatever its age: the plan files (by file name) and the segment keys of
// plans whose image someone holds an image lease on (store/lease.h), such as a mount serving it
// or an `imagefs build` reading it. A plan's image is the manifest digest its key begins with.
struct InUse {
  std::set<std::string> plans;     // file names under plans_dir()
  std::set<std::string> segments;  // segments/<format>/<key>: keys, any format
};
Result<InUse> plans_in_use(const std::filesystem::path& store_root);

struct PlanGcReport {
  size_t removed = 0;
  uint64_t bytes_freed = 0;
};
// Removes plan files not used since `unused_since` (unix seconds), and temporary ones older than
// that (a writer holds one for microseconds). A missing directory is fine.
// Plans named in `keep` stay.
Result<PlanGcReport> remove_unused_plans(const std::filesystem::path& store_root,
                                         int64_t unused_since, const InUse& keep);

}  // namespace imagefs::cpio::detail
