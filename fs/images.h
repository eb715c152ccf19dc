// The images a mount serves: references resolved to manifests (tags re-checked after a TTL, the
// last digest kept when the registry is unreachable), each image's layers fetched and merged on
// first need, its archives made on first need, one at a time per image however many readers
// wait, and a record of what is under way and what failed, for the log and `imagefs status`.
// No FUSE here: fs/filesystem.cpp maps the mount's paths onto this.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "cpio/archive.h"
#include "overlay/tree.h"
#include "registry/options.h"
#include "registry/platform.h"
#include "registry/reference.h"
#include "store/blob_store.h"
#include "store/catalog.h"

namespace imagefs::fs {

struct ImagesOptions {
  registry::RegistryOptions registry;  // registry.platform: the mount's default platform
  cpio::ArchiveOptions archive;        // every archive's inputs; `format` is chosen per file
  std::chrono::seconds tag_ttl{300};   // a tag resolved longer ago than this is asked again
  // A failed resolve is returned again, without asking the registry, for this long: a storm of
  // lookups of a missing tag (or of an unreachable registry) makes one request. 0: not at all.
  std::chrono::milliseconds negative_ttl{5000};
  // An image nobody has used for this long is closed: its tree and archives are dropped and its
  // lease released, so that `imagefs gc` may remove it. Its slot (inode numbers) stays, as a
  // small record, and the next use reopens it. Zero: never closed.
  std::chrono::milliseconds idle{std::chrono::minutes(10)};
  // The clock `idle` is measured on; std::chrono::steady_clock when empty (tests set a fake).
  std::function<std::chrono::steady_clock::time_point()> clock;
  // One line per event worth a person's attention (failures, stale tags served); called from
  // any thread, one call at a time, with printable() text (common/text.h).
  std::function<void(const std::string&)> log;
  // Where the lines of failures go instead, when set (the daemon logs them as warnings).
  std::function<void(const std::string&)> log_failure;
};

// One platform-specific image manifest, open for reading (its lease keeps gc away). Thread-safe.
class Image {
 public:
  virtual ~Image() = default;
  [[nodiscard]] virtual const store::ImageRecord& record() const = 0;
  // A small number, unique among the images of one Images, never reused (for inode numbers).
  [[nodiscard]] virtual uint32_t slot() const = 0;
  // The manifest and config as the registry served them.
  virtual Result<std::string> manifest_json() const = 0;
  virtual Result<std::string> config_json() const = 0;
  // The merged tree: downloads missing layers and ingests them the first time (one download
  // however many callers wait; others images are not held up). A failure is returned to every
  // waiter and retried by the next call.
  // Whether tree() would answer at once (the tree is built): callers that must not block on a
  // download ask this first.
  [[nodiscard]] virtual bool tree_ready() const = 0;
  virtual Result<std::shared_ptr<overlay::Tree>> tree() = 0;
  // The archive of this image in `format` with the mount's inputs as they are now: the same
  // archive again while the injected files and --init are unchanged on disk; a new one after
  // they change. Makes it the first time (which needs the tree). With `changed` (open() passes
  // it), says whether the archive differs from the one the previous such caller got, so the
  // kernel's cached pages of the old one can be dropped. Concurrent callers for one format
  // share one build and its outcome, failure included.
  virtual Result<std::shared_ptr<const cpio::Archive>> archive(cpio::Format format,
                                                               bool* changed = nullptr) = 0;
  // rootfs.erofs (erofs/erofs.h) with the mount's inputs as they are now, as archive() serves
  // an archive: the same rules, one build shared by concurrent callers, `changed` likewise.
  virtual Result<std::shared_ptr<const cpio::Archive>> erofs_image(bool* changed = nullptr) = 0;
  // Whether the archives can change during the life of the mount (host files are inputs).
  [[nodiscard]] virtual bool archives_mutable() const = 0;
};

class Images {
 public:
  static Result<std::shared_ptr<Images>> create(std::shared_ptr<store::BlobStore> blobs,
                                                std::shared_ptr<store::Catalog> catalog,
                                                ImagesOptions options);
  virtual ~Images() = default;

  [[nodiscard]] virtual const registry::Platform& default_platform() const = 0;
  [[nodiscard]] virtual const ImagesOptions& options() const = 0;

  // The image `reference` names for `platform`. A digest reference is resolved once; a tag is
  // taken from the store when resolved less than the TTL ago, else asked of the registry
  // (concurrent callers share one request and its outcome, failure included; a failure is
  // returned again for options().negative_ttl without a new request). When the registry cannot
  // be reached (EIO) and the tag was resolved before, the last digest keeps serving, with one log
  // line. Errors as registry::Puller::resolve: ENOENT unknown, EACCES denied, EIO unreachable,
  // too slow or broken; each is logged once a minute per reference at most and kept for
  // status(). The tags remembered in memory are capped (the store keeps the rest).
  virtual Result<std::shared_ptr<Image>> image(const registry::Reference& reference,
                                               const registry::Platform& platform) = 0;
  // An image opened earlier by image(), by its slot; nullptr for an unknown slot. An image closed
  // for being idle is opened again (a new lease); when it has left the store meanwhile (gc, rm),
  // nullptr, with a log line.
  virtual std::shared_ptr<Image> by_slot(uint32_t slot) = 0;
  // Closes the open images not used (image(), by_slot()) for options().idle and held by no one
  // else (an open file holds its image); returns how many. A thread of Images calls it
  // periodically; tests call it with a fake clock.
  virtual size_t close_idle() = 0;
  // The kernel's references to inodes of the slot's rootfs (lookups minus forgets, counted by
  // fs::Filesystem), changed by `delta`. An image whose rootfs the kernel still references is
  // never closed: a tree opened anew numbers its inodes anew (in the order of first lookups), so
  // the kernel's numbers would then name other files.
  virtual void tree_refs(uint32_t slot, int64_t delta) = 0;
  // The references the store has resolved (for listings).
  virtual Result<std::vector<store::RefRecord>> refs() const = 0;

  // A JSON object: images open, work under way (resolving, downloading with bytes so far,
  // ingesting, compressing) with how long it has run, and the latest failures, each with its
  // time, "image", "errno" ("ENOENT") and "error" (the whole line, which may quote a registry).
  // Every string in it is printable() text (common/text.h): valid UTF-8, whatever bytes the
  // names and the registries' answers held.
  [[nodiscard]] virtual std::string status_json() const = 0;
};

}  // namespace imagefs::fs
