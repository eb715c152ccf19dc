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
#include <set>
#include <span>
#include <string>

#include "common/result.h"
#include "cpio/options.h"
#include "overlay/tree.h"
#include "store/blob_store.h"
#include "store/digest.h"
#include "store/usage.h"

namespace imagefs::cpio {

struct ArchiveStats {
  size_t segments = 0;
  size_t segments_built = 0;   // compressed by this call
  size_t segments_reused = 0;  // found in the store
  uint64_t raw_bytes = 0;      // the uncompressed cpio stream
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

// The archive from `offset` on, through read() and write(): what write_to() falls back on where
// the kernel cannot copy (the output at that offset already).
Result<void> write_through_read(const Archive& archive, uint64_t offset, int fd,
                                const std::filesystem::path& name);

struct BuildProgress {
  // Segments compressed so far of those that needed it, and raw bytes they cover. Called from
  // the compressing threads, one call at a time, after each segment; not called when nothing
  // needs compressing.
  std::function<void(size_t done, size_t total, uint64_t raw_bytes)> update;
};

// The image an archive is made of, as the caller found it in the store.
struct ImageSource {
  store::Digest manifest;  // the platform-specific manifest: names the image's cached plans
  // The image's config.json, its bytes as served: the default /init runs the image's Entrypoint,
  // Cmd, Env, WorkingDir and User from it (/.imagefs/init.conf). Not read with --init.
  std::string config_json;
};

// Makes archives, keeping segments and plans in the store. Thread-safe, and safe across
// processes (a segment is built once under a lock and appears by rename).
class ArchiveMaker {
 public:
  // Plans and segments live in the blob store's directory (docs/STORE_FORMAT.md).
  static Result<std::shared_ptr<ArchiveMaker>> create(std::shared_ptr<store::BlobStore> blobs);
  virtual ~ArchiveMaker() = default;

  // The archive of `tree` (the image `image`) with `options`. Uses the cached plan when the image
  // and options (including injected files' size and mtime) are unchanged; otherwise plans and
  // builds the missing segments (in parallel). Errors: EFBIG naming a file of 4 GiB or more (newc
  // cannot hold it); for the default /init, EIO for a config it cannot use (naming the image);
  // EINVAL for `exec` with `init`, or an empty `exec`; errors of the tree or the store.
  virtual Result<std::shared_ptr<const Archive>> make(const ImageSource& image, overlay::Tree& tree,
                                                      const ArchiveOptions& options,
                                                      const BuildProgress* progress = nullptr) = 0;

  // Opens the image's tree when make() needs it; called at most once, from the calling thread.
  using TreeOpener = std::function<Result<std::shared_ptr<overlay::Tree>>()>;
  // make() for callers that have not opened the tree yet: the tree is needed only when the image's
  // own part of the archive is not cached for this format, level and these guest paths. When just
  // a host file changed (a new agent), the cached image part is reused with a new tail: no layer
  // is opened, no directory merged. Errors: those of make(), and of `open_tree`.
  virtual Result<std::shared_ptr<const Archive>> make(const ImageSource& image,
                                                      const TreeOpener& open_tree,
                                                      const ArchiveOptions& options,
                                                      const BuildProgress* progress = nullptr) = 0;

  // The archive when its plan is cached and every segment is in the store (the cheap path of
  // make(): it reads the plan file, stats the host files and the segment files, and needs no
  // tree, so no layer has to be ingested to learn an archive's size); nullptr otherwise. Errors:
  // EINVAL for bad levels or `exec`, ENOENT for a missing --init or injected host file, errors of
  // the file system.
  virtual Result<std::shared_ptr<const Archive>> cached(const store::Digest& manifest,
                                                        const ArchiveOptions& options) = 0;
};

// The shared files of the store (archive plans and segments) that gc must keep whatever their
// last use: those of images someone holds an image lease on (a mount serving them, a build
// reading them). For store::collect()'s `keep_shared`. Unreadable plans are not counted.
Result<std::set<std::filesystem::path>> shared_files_in_use(
    const std::filesystem::path& store_root);

// For each image (the manifest digest a plan's key begins with), the shared files its archives
// use: its plan files and the segments they name, whether or not anyone holds the image. For
// store::collect() and remove_reference() (an image's archives go with it), store_usage() (each
// image's share) and store::remove_derived_of_bad(). Unreadable plans are not counted.
Result<store::SharedUse> shared_files_by_image(const std::filesystem::path& store_root);

}  // namespace imagefs::cpio
