// Internal to cpio/ (not part of its interface): the plan of an archive, i.e. the ordered cpio
// entries of a merged tree, /init, injected files, /dev/console and the trailer, cut into segments
// (design decisions 1-3; the rules are in plan.cpp and docs/STORE_FORMAT.md).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
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
};

// What the image has at a relative path ("dev/console"): its mode with the file type bits, or 0
// when nothing is there (or a parent is not a directory).
using PathModes = std::map<std::string, uint32_t, std::less<>>;

// An archive is planned in two parts, so that a changed host file needs no walk of the tree:
//  - the image part: the tree's entries, less the paths /init and injected files replace. It
//    depends on the image, the format and level, and the guest paths of `inputs` (not on the host
//    files' bytes), and ends with a cut;
//  - the tail: /init, injected files (with the parents the image lacks), /dev/console and the
//    trailer. It depends on the host files and on what the image has at tail_paths(inputs) only:
//    whatever else the tail comes to depend on in the tree must be added there.
struct ImagePart {
  std::vector<SegmentSpec> segments;  // keys computed
  uint64_t raw_size = 0;
  PathModes paths;  // what the image has at each of tail_paths(inputs)
};

// The paths of the tree the tail looks at: "init", "dev", "dev/console" and every parent of each
// injected file's guest path.
std::vector<std::string> tail_paths(const PlanInputs& inputs);

// Walks `tree` once. Errors: EFBIG naming a file of 4 GiB or more; errors of the tree.
Result<ImagePart> plan_image(overlay::Tree& tree, const PlanInputs& inputs);

// The tail, from `paths` (which must hold every one of tail_paths(inputs)): its segments with
// keys and raw_size. Errors: ENOTDIR when an injected file's parent is a non-directory in
// the image.
Result<Plan> plan_tail(const PathModes& paths, const PlanInputs& inputs);

// The average distance between natural cut points, in raw bytes (plan.cpp has the rules): an
// entry larger than this is a segment of its own, and no run exceeds 4 times it.
uint64_t run_limit(Format format);

}  // namespace imagefs::cpio::detail
