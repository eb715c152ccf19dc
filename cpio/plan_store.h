// Internal to cpio/ (not part of its interface): archive plans kept in the store, as small files
// under ROOT/segments/plans/, shared derived files of the store (store/derived.h; docs/
// STORE_FORMAT.md, "Archive plans"). Plans are derived data:
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
#include "store/usage.h"

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
};

// The image part of an archive (plan.h), so that a changed host file replans the tail only.
struct ImagePartRecord {
  std::vector<SegmentRef> segments;
  uint64_t raw_size = 0;
  PathModes paths;
};

// The record stored under `key`, or nullopt when there is none, or it is damaged, or it was
// written by a newer imagefs (all mean: plan again). A record read is marked used (its mtime) at
// most once a day, for gc (store/gc.h). Errors: only of the file system (EIO, EACCES).
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

// The shared files (store/derived.h) that gc must keep whatever their last use: the plans of
// images someone holds an image lease on (store/lease.h), such as a mount serving them (which
// does not mark them used again while it keeps an archive in memory) or an `imagefs build`
// reading them, and every segment those plans name. A plan's image is the manifest digest its key
// begins with. Paths as store::list_shared() gives them.
Result<std::set<std::filesystem::path>> shared_files_in_use(
    const std::filesystem::path& store_root);
// Every image's plans and the segments they name, held or not (cpio::shared_files_by_image).
Result<store::SharedUse> shared_files_by_image(const std::filesystem::path& store_root);
}  // namespace imagefs::cpio::detail
