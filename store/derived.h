// Products that other modules derive from blobs: per blob (a layer's index and data files),
// built in a temporary directory under a per-product lock, then renamed into place whole,
// so that no reader ever sees half a product and a crash leaves only a temporary directory that
// the next builder or gc removes. gc removes a blob's products with the blob. And shared files,
// derived from several blobs at once (archive segments and plans, below), which gc counts and
// removes by last use.
//
// Layout (docs/STORE_FORMAT.md):
//   ROOT/derived/<hex>/<name>/       a complete product of blob <hex>; never changed in place
//   ROOT/derived/<hex>/<name>.tmp/   the product being built, by the holder of
//   ROOT/locks/derived-<hex>-<name>.lock (flock, exclusive)
// `name` is 1 to 32 of [a-z0-9_-] ("layer").
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "store/blob_store.h"
#include "store/digest.h"

namespace imagefs::store {

enum class IfPresent {
  keep,     // an existing product is used as it is
  replace,  // an existing product is removed and built again (it was found damaged)
};

// One build of one product; holds the product's lock until commit() or destruction. Not
// thread-safe; owned by one thread.
class DerivedBuild {
 public:
  // Waits for the product's lock (another thread or process may be building it; the kernel drops
  // the lock of a builder that dies). Then, if the product exists and `if_present` is keep, the
  // build is done(): nothing to build, dir() is the product. Otherwise dir() is a new, empty
  // temporary directory (a leftover of a crashed builder is removed first). EINVAL for a bad name.
  static Result<std::unique_ptr<DerivedBuild>> begin(const BlobStore& blobs, const Digest& blob,
                                                     std::string_view name, IfPresent if_present);
  virtual ~DerivedBuild() = default;  // without commit(): removes the temporary directory

  [[nodiscard]] virtual bool done() const = 0;
  // Where to write the product's files (the temporary directory), or the product once done().
  [[nodiscard]] virtual const std::filesystem::path& dir() const = 0;
  // The caller has written and fsynced its files in dir(). Fsyncs dir(), renames it to the
  // product's name, fsyncs the parent directory and releases the lock; the build is then done()
  // and dir() names the product.
  virtual Result<void> commit() = 0;
};

// Where the product `name` of `blob` is (whether or not it is there now).
std::filesystem::path derived_path(const BlobStore& blobs, const Digest& blob,
                                   std::string_view name);

// Removes everything derived from `blob`, except products being built right now (left for the
// next gc: their blob is gone, so remove_stale_derived takes them). For gc, before it removes the
// blob itself: a crash in between leaves a blob without products, never the reverse.
Result<void> remove_derived(const BlobStore& blobs, const Digest& blob);

// For gc: removes temporary directories that no builder holds, and every product of a blob that is
// no longer in the store; returns the directories removed. Names that do not fit the layout are
// left alone.
Result<std::vector<std::filesystem::path>> remove_stale_derived(const BlobStore& blobs);

// --- Shared derived files ---
//
// Products derived from several blobs at once, so that no one blob owns them: an archive segment
// holds entries of many layers and is shared by every image that has them; a plan names segments.
// Each is one file, named by a key of its module's, never changed in place (a plan is replaced
// whole, by rename), and counted and removed by gc by last use (store/gc.h):
//   ROOT/segments/<kind>/<key>           a complete file; its mtime is its last use
//   ROOT/segments/<kind>/<key>.tmp       being built by build_shared(), the holder of its flock
//   ROOT/segments/<kind>/<key>.tmp.XXXXXX being written by replace_shared()
// `kind` is 1 to 32 of [a-z0-9_-]; `key` is 64 lowercase hex digits. (The directory's name is
// historical: archive segments were the first shared files.)

// Whether build_shared() fsyncs the file before its rename. Without, a crash may leave the file
// empty or torn under its name: only for files whose readers check them (a plan's checksum).
enum class Sync { yes, no };
enum class Built { now, already };

// Writes the whole content of a shared file to `fd` (open on `tmp`, empty, at offset 0).
using SharedWriter = std::function<Result<void>(int fd, const std::filesystem::path& tmp)>;

// ROOT/segments/<kind>/<key>. `store_root` is BlobStore::root().
std::filesystem::path shared_path(const std::filesystem::path& store_root, std::string_view kind,
                                  std::string_view key);

// Makes the file unless it exists: opens <key>.tmp (created if missing) and takes flock(LOCK_EX)
// on it, so a second builder in any thread or process waits and then finds the file in place;
// then `write`, fsync (Sync::yes) and rename. On an error the temporary file is removed. The
// directory is not fsynced: a rename that a crash undoes leaves the file missing, which its
// readers must handle by building it again. EINVAL for a bad kind or key.
Result<Built> build_shared(const std::filesystem::path& store_root, std::string_view kind,
                           std::string_view key, Sync sync, const SharedWriter& write);

// Replaces the file with `bytes`: written to a temporary file of a unique name (mode 0644) and
// renamed, without fsync, so readers in any process see the old file or the new one, whole (or,
// after a crash, possibly a torn one: for small records that carry a checksum).
Result<void> replace_shared(const std::filesystem::path& store_root, std::string_view kind,
                            std::string_view key, std::string_view bytes);

// Shared files are marked used (their mtime set) at most this often: gc's notion of last use has
// this resolution, and a file used within it is never removed by size.
inline constexpr int64_t kMarkUsedInterval = int64_t{24} * 60 * 60;
// Marks the file at `path` used at `now` (unix seconds) unless `st` (its stat) says it was marked
// less than kMarkUsedInterval ago. Best effort: a file gc removed meanwhile is not recreated.
void mark_used(const std::filesystem::path& path, const struct stat& st, int64_t now);

struct SharedFile {
  std::filesystem::path path;
  uint64_t size = 0;
  int64_t last_used = 0;  // mtime, unix seconds
};

// For gc: every complete shared file (names that do not fit the layout are left out), after
// removing temporary files no builder holds (<key>.tmp not locked; <key>.tmp.XXXXXX older than
// `stale_before`, unix seconds). A missing directory is an empty list.
Result<std::vector<SharedFile>> list_shared(const std::filesystem::path& store_root,
                                            int64_t stale_before);

}  // namespace imagefs::store
