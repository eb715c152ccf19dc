// Initramfs archives of an image: newc cpio of the merged tree, then /init (the given one, or
// imagefs' default init with the image's config in /.imagefs/init.conf) and injected files,
// ending with TRAILER!!!, in three formats (gzip, zstd, none). An archive is assembled from
// cached, independently compressed segments (design decisions 1-3): each segment is a run of
// whole cpio entries compressed once (a gzip member, a zstd frame, or raw bytes) and kept in the
// store, so the archive's size is known before it is read, any offset maps to one segment, and
// nothing is compressed twice. Segments are shared by images that share layers and survive
// restarts; an injected file that changes redoes only its own segment.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "overlay/tree.h"
#include "store/blob_store.h"
#include "store/catalog.h"
#include "store/digest.h"

namespace imagefs::cpio {

enum class Format { gzip, zstd, none };

// "gz"/"gzip", "zst"/"zstd", "none"/"cpio". EINVAL names the accepted values.
Result<Format> parse_format(std::string_view text);
// The file name of the archive in an image directory: "initramfs.cpio.gz", ".cpio.zst", ".cpio".
std::string_view file_name(Format format);

// A host file that goes into the archive at `guest` with mode 0755 (root:root).
struct Inject {
  std::filesystem::path host;
  std::string guest;  // absolute, cleaned: "/usr/bin/agent"
};
// Parses "HOST:GUEST". EINVAL when GUEST is not absolute or has a ".." component; ENOENT when
// HOST does not exist or is not a regular file (the message names it).
Result<Inject> parse_inject(std::string_view spec);

struct ArchiveOptions {
  Format format = Format::gzip;
  std::vector<Inject> injects;
  std::optional<std::filesystem::path> init;  // becomes /init (0755), replacing the image's
  // Without `init`, /init is imagefs' default init (init/default_init.h, design decision 7), with
  // the image's config for it at /.imagefs/init.conf (init/init_config.h); `exec` then replaces
  // the image's Entrypoint and Cmd (as `docker run --entrypoint`). Not allowed with `init`.
  std::optional<std::vector<std::string>> exec;
  // Compression levels: libdeflate 1-12 (6 matches gzip -6's size or better; 12 beats gzip -9),
  // zstd 1-19.
  int gzip_level = 6;
  int zstd_level = 3;
};

struct ArchiveStats {
  size_t segments = 0;
  size_t segments_built = 0;   // compressed by this call
  size_t segments_reused = 0;  // found in the store
  uint64_t raw_bytes = 0;      // the uncompressed cpio stream
  bool has_init = false;       // /init exists (from --init or the default init: always)
};

// A planned archive whose segments are all in the store. Immutable: reads from any number of
// threads at once.
class Archive {
 public:
  virtual ~Archive() = default;
  [[nodiscard]] virtual uint64_t size() const = 0;  // exact, in bytes of the chosen format
  [[nodiscard]] virtual const ArchiveStats& stats() const = 0;
  // Bytes read: fewer than out.size() only at the end. EIO names a damaged segment.
  virtual Result<size_t> read(uint64_t offset, std::span<uint8_t> out) const = 0;
  // Writes the whole archive to `fd` at its current offset: for a file, copied inside the kernel
  // from the segment files (copy_file_range) where the file systems allow, else through read().
  // Errors: those of read(), and of writing, naming `name` (the file `fd` is open on).
  virtual Result<void> write_to(int fd, const std::filesystem::path& name) const;
};

struct BuildProgress {
  // Segments compressed so far of those that needed it, and raw bytes they cover. Called from
  // the compressing threads, one call at a time, after each segment; not called when nothing
  // needs compressing.
  std::function<void(size_t done, size_t total, uint64_t raw_bytes)> update;
};

// Makes archives, keeping segments and plans in the store. Thread-safe, and safe across
// processes (a segment is built once under a lock and appears by rename).
class ArchiveMaker {
 public:
  // Plans and segments live in the blob store's directory (docs/STORE_FORMAT.md). `catalog` is
  // read for an image's config, which the default /init needs (null: only with --init).
  static Result<std::shared_ptr<ArchiveMaker>> create(std::shared_ptr<store::BlobStore> blobs,
                                                      std::shared_ptr<store::Catalog> catalog);
  virtual ~ArchiveMaker() = default;

  // The archive of `tree` (the image whose manifest is `image`) with `options`. Uses the cached
  // plan when the image and options (including injected files' size and mtime) are unchanged;
  // otherwise plans and builds the missing segments (in parallel). Errors: EFBIG naming a file of
  // 4 GiB or more (newc cannot hold it); for the default /init, ENOENT when the catalog has no
  // record of `image` (its config is needed) and EINVAL for a config it cannot use; EINVAL for
  // `exec` with `init`, or an empty `exec`; errors of the tree or the store.
  virtual Result<std::shared_ptr<const Archive>> make(const store::Digest& image,
                                                      overlay::Tree& tree,
                                                      const ArchiveOptions& options,
                                                      const BuildProgress* progress = nullptr) = 0;

  // Opens the image's tree when make() needs it; called at most once, from the calling thread.
  using TreeOpener = std::function<Result<std::shared_ptr<overlay::Tree>>()>;
  // make() for callers that have not opened the tree yet: the tree is needed only when the image's
  // own part of the archive is not cached for this format, level and these guest paths. When just
  // a host file changed (a new agent), the cached image part is reused with a new tail: no layer
  // is opened, no directory merged. Errors: those of make(), and of `open_tree`.
  virtual Result<std::shared_ptr<const Archive>> make(const store::Digest& image,
                                                      const TreeOpener& open_tree,
                                                      const ArchiveOptions& options,
                                                      const BuildProgress* progress = nullptr) = 0;

  // The archive when its plan is cached and every segment is in the store (the cheap path of
  // make(): it reads the plan file, stats the host files and the segment files, and needs no
  // tree, so no layer has to be ingested to learn an archive's size); nullptr otherwise. Errors:
  // EINVAL for bad levels or `exec`, ENOENT for a missing --init or injected host file, errors of
  // the file system.
  virtual Result<std::shared_ptr<const Archive>> cached(const store::Digest& image,
                                                        const ArchiveOptions& options) = 0;
};

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
