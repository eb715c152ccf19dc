// A layer index: what one layer blob holds, entry by entry, ingested once per cache and shared by
// every image that has the layer. File contents are kept uncompressed in the layer's data file so
// that any byte of any file is one pread away (docs/LAYER_FORMAT.md says why and how).
//
// Entries are unique by path within a layer (a later tar entry for the same path replaces an
// earlier one) and sorted by (parent directory, name), so a directory's entries in this layer
// are one contiguous range. Whiteouts are folded in: `.wh.NAME` becomes an entry of type
// `whiteout` for NAME (or, when the layer also has NAME, that entry with `opaque` set if it is a
// directory); `.wh..wh..opq` sets `opaque` on its directory's entry (creating an implicit one if
// the layer has none). Parents that the layer implies but has no entry for get `implicit`
// directory entries. The root itself is never an entry: root() describes it.
//
// Every entry's parent is a directory entry of the layer (explicit or implicit): a later entry
// that replaces a directory by a non-directory takes the directory's entries with it, and a
// directory where the layer had a non-directory is `opaque` (extraction removed the lower
// layers' entry first). A hardlink resolved in this layer points at a non-hardlink entry (links
// to links are followed) and carries its target's metadata; a link whose target was replaced
// later in the layer keeps the replaced content, as extraction would (docs/LAYER_FORMAT.md).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "store/blob_store.h"
#include "store/catalog.h"
#include "store/digest.h"

namespace imagefs::overlay {

enum class EntryType : uint8_t {
  regular,
  directory,
  symlink,
  hardlink,  // `link` names the target path (in this layer or a lower one)
  char_device,
  block_device,
  fifo,
  whiteout,  // NAME was deleted: lower layers' NAME (and everything below it) is hidden
};

inline constexpr uint32_t kNoEntry = 0xffffffffu;

struct LayerEntry {
  std::string_view path;  // cleaned, relative: "usr/bin/ls"
  EntryType type = EntryType::regular;
  bool implicit = false;  // a directory implied by a deeper entry, with no entry of its own
  bool opaque = false;    // a directory whose lower layers' contents are hidden
  uint32_t mode = 0;      // permission bits with setuid/setgid/sticky, no file type bits
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;         // regular files (and hardlinks resolved in this layer): content bytes
  uint64_t data_offset = 0;  // where that content starts in the layer's data file
  std::string_view link;     // symlink target, or a hardlink's target path (cleaned)
  uint32_t rdev_major = 0;
  uint32_t rdev_minor = 0;
  // For a hardlink whose target is an earlier entry of this layer: that entry's index (size and
  // data_offset are then the target's). kNoEntry when the target is in a lower layer.
  uint32_t hardlink_target = kNoEntry;
};

struct Xattr {
  std::string_view name;   // "security.capability", "user.x"
  std::string_view value;  // raw bytes
};

// An ingested layer, memory-mapped and immutable: shared between threads without locks.
class LayerIndex {
 public:
  virtual ~LayerIndex() = default;
  [[nodiscard]] virtual const store::Digest& digest() const = 0;  // the layer blob's digest
  // The SHA-256 of the layer's uncompressed stream, as the image config's rootfs.diff_ids has it:
  // computed while the layer was ingested. nullopt for indexes that have none (test fakes).
  [[nodiscard]] virtual std::optional<store::Digest> diff_id() const { return std::nullopt; }
  [[nodiscard]] virtual size_t size() const = 0;  // number of entries
  [[nodiscard]] virtual LayerEntry entry(size_t index) const = 0;
  [[nodiscard]] virtual std::vector<Xattr> xattrs(size_t index) const = 0;
  // [first, last) indexes of the entries whose parent is `dir` ("" for the root), by name.
  [[nodiscard]] virtual std::pair<size_t, size_t> children(std::string_view dir) const = 0;
  [[nodiscard]] virtual std::optional<size_t> find(std::string_view path) const = 0;
  // The layer's entry for the image root itself, with path "": its "./" directory entry (mode,
  // owner, mtime), or an implicit one when the layer only has a `.wh..wh..opq` at the top (opaque
  // set: every lower layer is hidden); nullopt when the layer has neither. Not one of entry(i).
  [[nodiscard]] virtual std::optional<LayerEntry> root() const { return std::nullopt; }
  [[nodiscard]] virtual std::vector<Xattr> root_xattrs() const { return {}; }
  // Reads content bytes of a regular entry (or a hardlink resolved in this layer). Returns the
  // bytes read: fewer than out.size() only at the end of the file. EIO names the layer.
  virtual Result<size_t> read(size_t index, uint64_t offset, std::span<uint8_t> out) const = 0;
  // The data file, for callers that copy content without a user-space buffer (sendfile).
  [[nodiscard]] virtual int data_fd() const = 0;
};

// Caps on what one layer may cost to ingest, so that a hostile or broken layer ends with an
// error naming it rather than an out-of-memory kill or a full disk (docs/LAYER_FORMAT.md,
// "Limits"). The defaults are far above any real image.
struct IngestLimits {
  uint64_t max_entries = 10'000'000;            // tar entries in one layer
  uint64_t max_name_bytes = uint64_t{1} << 30;  // paths, link targets and xattrs, summed
  // Free bytes the store's file system must keep while a layer's data and index are written
  // (checked as they are written, with statvfs).
  uint64_t disk_reserve = uint64_t{256} << 20;
};

struct IngestProgress {
  std::function<void(const store::Digest& layer, uint64_t compressed_bytes_read)> update;
  // A line for people (the log): a layer whose media type names another compression than its
  // bytes have (the bytes win).
  std::function<void(const std::string& line)> notice;
};

// Opens layer indexes, ingesting each layer blob the first time it is asked for. Thread-safe and
// safe across processes: two asking for the same new layer ingest it once (a per-layer lock), and
// an index being written is never seen half-written (it appears by rename when complete).
class LayerCache {
 public:
  static Result<std::shared_ptr<LayerCache>> create(std::shared_ptr<store::BlobStore> blobs,
                                                    IngestLimits limits = {});
  virtual ~LayerCache() = default;

  // The index of `layer` (its blob must be in the store), ingesting the blob the first time: the
  // blob is hashed as it is read. Errors name the layer and, for bad tar input, the entry: corrupt
  // or truncated compression (a wrong gzip CRC-32 or length trailer included), anything after the
  // last gzip member or zstd frame, a compression layers may not use (ENOTSUP), a hardlink to a
  // later or missing entry of the same layer, sizes that disagree with the data; EFBIG for a
  // layer over a cap of IngestLimits, ENOSPC when the store's file system would keep less than
  // the reserve free. EUCLEAN when the blob's bytes do not hash to its digest (the disk changed
  // them): the blob is removed from the store, so that fetching it again repairs the store. A
  // failed ingest leaves no file behind.
  virtual Result<std::shared_ptr<const LayerIndex>> get(
      const store::LayerRecord& layer, const IngestProgress* progress = nullptr) = 0;
};

}  // namespace imagefs::overlay
