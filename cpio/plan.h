// Internal to cpio/ (not part of its interface): the plan of an archive, i.e. the ordered cpio
// entries of a merged tree, /init, injected files, /dev/console and the trailer, cut into segments
// (design decisions 1-3; the rules are in plan.cpp and docs/STORE_FORMAT.md).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/result.h"
#include "cpio/archive.h"
#include "cpio/segment.h"
#include "overlay/tree.h"

namespace imagefs::cpio::detail {

struct PlanInputs {
  Format format = Format::gzip;
  int level = 0;                         // the level of `format` (0 for none), part of each key
  std::shared_ptr<const HostFile> init;  // becomes /init, or nullptr
  std::vector<std::shared_ptr<const HostFile>> injects;  // in the order given
};

struct Plan {
  std::vector<SegmentSpec> segments;  // in archive order, keys computed
  uint64_t raw_size = 0;
  bool has_init = false;
};

// The average distance between natural cut points, in raw bytes (plan.cpp has the rules): an
// entry larger than this is a segment of its own, and no run exceeds 4 times it.
uint64_t run_limit(Format format);

// Walks `tree` once. Errors: EFBIG naming a file of 4 GiB or more; ENOTDIR when an injected
// file's parent is a non-directory in the image; errors of the tree.
Result<Plan> make_plan(overlay::Tree& tree, const PlanInputs& inputs);

}  // namespace imagefs::cpio::detail
