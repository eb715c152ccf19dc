// Content-addressed blobs (manifests, configs, layers) under ROOT/blobs/sha256/<hex>.
//
// The store is the truth (design decision 6): a blob appears under its name only after its bytes
// were checked against that name and fsynced, so a crash or kill -9 at any moment leaves either
// nothing or a verified blob. Partial downloads survive a crash and are resumed by the next
// writer. Safe for many threads and many processes at once: writers of the same blob take an
// exclusive per-blob file lock, so two pulls of one image download each blob once between them.
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
#include "store/digest.h"

namespace imagefs::store {

class BlobWriter;

struct BlobInfo {
  Digest digest;
  uint64_t size = 0;
  int64_t modified = 0;  // unix seconds: when its last byte was written (commit keeps it)
};

// A partial download in ROOT/tmp/.
struct PartialInfo {
  Digest digest;
  uint64_t size = 0;
  int64_t modified = 0;  // unix seconds
};

// What the store's copy of a blob is, by its bytes (BlobStore::check).
enum class BlobState {
  good,     // its bytes hash to its digest
  bad,      // they do not: the disk changed the file after it was verified
  missing,  // no such blob in the store
};

// Called with the bytes hashed so far while a blob is checked.
using HashProgress = std::function<void(uint64_t hashed)>;

class BlobStore {
 public:
  // Opens (creating if needed) the store rooted at `root`. Fails with the path and the reason.
  static Result<std::shared_ptr<BlobStore>> open(const std::filesystem::path& root);
  virtual ~BlobStore() = default;

  [[nodiscard]] virtual const std::filesystem::path& root() const = 0;
  // Where the verified blob lives (whether or not it is there now).
  [[nodiscard]] virtual std::filesystem::path path(const Digest& digest) const = 0;
  [[nodiscard]] virtual bool contains(const Digest& digest) const = 0;
  // Whether this store object's own writer verified the blob a moment ago (kVerifiedFresh) and
  // the file open as `fd` is that same file, unchanged since (device, inode, size, mtime): its
  // bytes need no second hash. False whenever that is not certain.
  [[nodiscard]] virtual bool verified_just_now(const Digest& digest, int fd) const {
    (void)digest;
    (void)fd;
    return false;
  }
  // Where other modules keep what they derive from the blob (a layer's index and data files):
  // ROOT/derived/<hex>. Built and removed only through store/derived.h, and removed with the blob.
  [[nodiscard]] std::filesystem::path derived_dir(const Digest& digest) const {
    return root() / "derived" / std::string(digest.hex());
  }

  // The whole blob, for small ones (manifests, configs), checked against its digest: EUCLEAN
  // ("blob sha256:... in the store does not match its digest: the disk changed it") if the file
  // was damaged after it was stored. ENOENT if absent.
  [[nodiscard]] virtual Result<std::string> read(const Digest& digest) const = 0;
  // Stores `bytes` as `expected` after checking they hash to it (EIO naming both digests if not),
  // through the same temporary file, fsync and rename as a writer. On a write error (ENOSPC) the
  // temporary file is removed: the bytes are still in the caller's hands.
  virtual Result<void> put(const Digest& expected, std::string_view bytes) = 0;

  // Begins, or resumes, writing `expected`. Blocks while another thread or process writes the
  // same blob (a flock on ROOT/locks/<hex>.lock, dropped by the kernel if the writer dies). The
  // writer's done() is true when the blob is already present (nothing to do), including when the
  // writer we waited for committed it. A resumed writer re-reads the partial file to restore its
  // hash and reports its length as offset().
  // With `expected_size` (the descriptor's size) a partial file is never resumed past the blob: a
  // partial longer than expected_size is discarded unread (a registry that sent more than the
  // blob, or a damaged file), and one of exactly expected_size bytes (a pull killed after the last
  // byte, before the rename) is verified and committed here, so the writer comes back done(); if
  // its bytes do not verify it is discarded and the writer starts at 0.
  // With `waiting`, a wait for another writer is reported: `waiting` is called as it begins and
  // then about five times a second until it ends, with the bytes that writer holds so far (its
  // partial file's size). The wait itself is the same: until that writer is done or dies.
  using WaitReport = std::function<void(uint64_t bytes_held)>;
  virtual Result<std::unique_ptr<BlobWriter>> open_writer(
      const Digest& expected, std::optional<uint64_t> expected_size = std::nullopt,
      const WaitReport& waiting = nullptr) = 0;

  // Removes a blob, and its partial download unless a writer is busy with it (that writer keeps
  // going). Removing an absent blob succeeds. Callers keep references in order: gc removes only
  // what no image record references, under an exclusive PullLease (store/lease.h).
  virtual Result<void> remove(const Digest& digest) = 0;
  // Every verified blob with its size.
  [[nodiscard]] virtual Result<std::vector<BlobInfo>> list() const = 0;
  // Re-hashes every blob; returns those that do not match their name (none, in a sound store).
  [[nodiscard]] virtual Result<std::vector<Digest>> verify() const = 0;
  // Re-hashes one blob (SHA-256 of the whole file), telling `progress` (if any) after each MiB.
  // Errors: only reading ones (EIO, EACCES), naming the file.
  [[nodiscard]] virtual Result<BlobState> check(const Digest& digest,
                                                const HashProgress& progress = {}) const = 0;
  // open_writer() for a blob whose stored copy may be bad: under the blob's lock, a stored copy is
  // hashed; if it matches its digest the writer is done() (a concurrent repair came first), and if
  // not the writer starts (or resumes) a download whose commit() renames the new bytes over the
  // bad copy, atomically: a reader opens the old file or the new one, never none, and a repair
  // that cannot reach the registry leaves the store as it was. Nothing derived from the blob is
  // touched (store/derived.h: remove_derived()). A missing blob is written as by open_writer().
  virtual Result<std::unique_ptr<BlobWriter>> open_repair_writer(
      const Digest& expected, std::optional<uint64_t> expected_size) = 0;
  // put() through open_repair_writer(): replaces a bad stored copy of a small blob (a manifest, a
  // config) with `bytes`, after checking they hash to `expected`.
  virtual Result<void> repair(const Digest& expected, std::string_view bytes) = 0;

  // Removes the partial downloads that no writer holds and that were last written before
  // `modified_before` (unix seconds), or whose blob is already present; returns them. Also removes
  // lock files nobody holds. For gc.
  virtual Result<std::vector<PartialInfo>> remove_stale_partials(int64_t modified_before) = 0;
  // Every partial download in ROOT/tmp/ (busy or not), with its size: they count in the store's
  // size (gc, `imagefs verify`).
  [[nodiscard]] virtual Result<std::vector<PartialInfo>> list_partials() const = 0;
  // Removes the partial download of `digest` unless a writer holds it; true if it was removed
  // (false: busy, or none). For `imagefs verify`'s repair of partials that cannot be resumed.
  virtual Result<bool> remove_partial(const Digest& digest) = 0;
};

// Writes one blob. Not thread-safe; owned by one thread. Destroying a writer without commit()
// keeps the bytes written so far for a later resume, and releases the blob's lock.
class BlobWriter {
 public:
  virtual ~BlobWriter() = default;
  // The blob is in the store: it was there when the writer was opened, or commit() succeeded.
  [[nodiscard]] virtual bool done() const = 0;
  // Bytes already written: resume from here. For a writer that is done(), the blob's size.
  [[nodiscard]] virtual uint64_t offset() const = 0;
  // Appends bytes, hashing them on the way. ENOSPC ("no space left on device while writing
  // <path>") and other write errors name the path; the bytes that did reach the file stay counted
  // in offset(), so the writer (or a later one) can resume. EINVAL once done().
  virtual Result<void> write(std::span<const uint8_t> bytes) = 0;
  // Discards what was written (when the server ignored a Range request).
  virtual Result<void> restart() = 0;
  // Verifies size (if given) and digest, fsyncs and renames into place. On a digest mismatch, or
  // more bytes than expected, the partial data is deleted and the error (EIO) names the expected
  // and the actual value; with fewer bytes than expected the partial is kept for a resume. Commit
  // of a writer that is done() only checks the size.
  virtual Result<void> commit(std::optional<uint64_t> expected_size) = 0;
};

}  // namespace imagefs::store
