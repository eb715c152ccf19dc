// The catalog: what the store knows about images, in LMDB (one writer, many readers, safe across
// processes, so a running daemon and `imagefs build` share one cache).
//
// Records: references resolved to manifest digests (with when), and images (one platform-specific
// manifest each: its config, layers, sizes, last use). What other modules derive from blobs (layer
// indexes, archive segments and plans) lives in files beside the blobs (store/derived.h), not
// here. The key layout is in docs/STORE_FORMAT.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "store/digest.h"

namespace imagefs::store {

struct LayerRecord {
  Digest digest;
  std::string media_type;
  uint64_t size = 0;
  std::vector<std::string> urls;  // non-distributable layers: where they may be fetched
};

struct ImageRecord {
  Digest manifest;  // the platform-specific manifest
  std::string manifest_media_type;
  Digest config;
  std::string platform;  // "linux/amd64", "linux/arm64/v8"
  std::vector<LayerRecord> layers;
  uint64_t size = 0;      // manifest + config + compressed layers, in bytes
  int64_t pulled_at = 0;  // unix seconds
  int64_t last_used = 0;  // unix seconds
};

struct RefRecord {
  std::string reference;        // canonical (Reference::str())
  std::string platform;         // as requested, normalized
  Digest manifest;              // the platform-specific manifest it resolved to
  std::optional<Digest> index;  // the index the platform was chosen from, if any
  int64_t resolved_at = 0;      // unix seconds
};

// Every method is safe to call from many threads and many processes at once, and each is one
// LMDB transaction: it happens entirely or not at all. Records written by a newer imagefs (a
// higher "v") are refused with ENOTSUP rather than misread; a damaged record is EIO.
class Catalog {
 public:
  // 4 GiB: address space, not disk (the file grows as records are written). The map doubles
  // when it is full, so this is a starting point rather than a limit.
  static constexpr uint64_t kDefaultMapSize = uint64_t{4} << 30;

  // Opens (creating if needed, with its parent directory) the catalog file. Fails with the path
  // and LMDB's reason. `map_size` is for tests of the map's growth. Opening a file this process
  // has open already returns the same Catalog (LMDB allows one environment per file and process).
  // A forked child must open its own and must not use its parent's.
  static Result<std::shared_ptr<Catalog>> open(const std::filesystem::path& file,
                                               uint64_t map_size = kDefaultMapSize);
  // The catalog of the store rooted at `store_root`: ROOT/catalog.lmdb.
  static std::filesystem::path file_in(const std::filesystem::path& store_root) {
    return store_root / "catalog.lmdb";
  }
  virtual ~Catalog() = default;

  // Adds or replaces the ref for (reference, platform). EINVAL if the reference contains a space
  // or the key is longer than LMDB allows.
  virtual Result<void> put_ref(const RefRecord& ref) = 0;
  [[nodiscard]] virtual Result<std::optional<RefRecord>> ref(std::string_view reference,
                                                             std::string_view platform) const = 0;
  // All refs, ordered by reference, then platform.
  [[nodiscard]] virtual Result<std::vector<RefRecord>> refs() const = 0;
  // Removing an absent ref succeeds.
  virtual Result<void> remove_ref(std::string_view reference, std::string_view platform) = 0;

  virtual Result<void> put_image(const ImageRecord& image) = 0;
  [[nodiscard]] virtual Result<std::optional<ImageRecord>> image(const Digest& manifest) const = 0;
  // All images, ordered by manifest digest.
  [[nodiscard]] virtual Result<std::vector<ImageRecord>> images() const = 0;
  // Removes the image record and, in the same transaction, every ref that resolves to it (a ref
  // to a missing image names nothing); returns those refs. Removing an absent image succeeds.
  // Blobs are not touched: see store/gc.h.
  virtual Result<std::vector<RefRecord>> remove_image(const Digest& manifest) = 0;
  // Sets last_used to `now` (unix seconds) unless it is already later. ENOENT if no such image.
  // Each call that changes it is a durable write (an fsync): callers touch at most once per use.
  virtual Result<void> touch(const Digest& manifest, int64_t now) = 0;
};

}  // namespace imagefs::store
