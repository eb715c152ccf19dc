// The file-system BlobStore: verified blobs under ROOT/blobs/sha256/, partial downloads under
// ROOT/tmp/, one lock file per blob being written under ROOT/locks/ (docs/STORE_FORMAT.md).
#include "store/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "common/errno_error.h"
#include "common/mutex.h"
#include "store/cache_dir.h"
#include "store/file_util.h"

namespace imagefs::store {

namespace fs = std::filesystem;
using detail::FileLock;
using detail::UniqueFd;

namespace {

constexpr size_t kChunk = size_t{1} << 20;
constexpr std::string_view kPartialSuffix = ".partial";

// Hashes `fd` from offset 0 to its end, telling `progress` (if any) after each chunk. Returns the
// byte count.
Result<uint64_t> hash_file(int fd, Sha256& hasher, const fs::path& path,
                           const HashProgress& progress = {}) {
  std::string buf(kChunk, '\0');
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(total));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "cannot read", path);
    }
    if (n == 0) return total;
    hasher.update(std::string_view(buf.data(), static_cast<size_t>(n)));
    total += static_cast<uint64_t>(n);
    if (progress) progress(total);
  }
}

// What the file at `path` is for `digest`: good, bad or missing.
Result<BlobState> check_file(const fs::path& path, const Digest& digest,
                             const HashProgress& progress = {}) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return BlobState::missing;
    return errno_error(errno, "cannot open", path);
  }
  Sha256 hasher;
  IMAGEFS_TRY(size, hash_file(fd.get(), hasher, path, progress));
  (void)size;
  return hasher.finish() == digest ? BlobState::good : BlobState::bad;
}

// The error of a stored blob whose bytes no longer match its name (code EUCLEAN: the store's copy
// is damaged, not the registry's; `imagefs verify --repair` or a pull fetches it again).
Error damaged_error(const Digest& digest, const Digest& actual) {
  return make_error(EUCLEAN, "blob " + digest.str() +
                                 " in the store does not match its digest: the disk changed it "
                                 "(its bytes hash to " +
                                 actual.str() + "; `imagefs verify --repair` fetches it again)");
}

std::string mismatch_message(const fs::path& path, const Digest& expected, const Digest& actual) {
  return "digest mismatch for " + path.string() + ": expected " + expected.str() + ", got " +
         actual.str();
}

// Removes `path`; a missing file is fine.
Result<void> remove_file(const fs::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return errno_error(errno, "cannot remove", path);
  return {};
}

class FileBlobStore;

// How long after its writer verified a blob its bytes are trusted without a second hash.
constexpr auto kVerifiedFresh = std::chrono::seconds(60);

// Blobs the store's writers verified and committed lately, with the file's identity then: a layer
// ingest that opens one of them at once need not hash it again (BlobStore::verified_just_now).
// Bounded: the oldest goes first.
class FreshBlobs {
 public:
  void add(const Digest& digest, int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return;
    MutexLock lock(mu_);
    std::erase_if(entries_, [&](const Entry& e) { return e.digest == digest; });
    if (entries_.size() >= kMax) entries_.erase(entries_.begin());
    entries_.push_back(Entry{digest, identity(st), std::chrono::steady_clock::now()});
  }

  [[nodiscard]] bool has(const Digest& digest, int fd) const {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return false;
    const auto now = std::chrono::steady_clock::now();
    MutexLock lock(mu_);
    for (const Entry& e : entries_)
      if (e.digest == digest) return e.file == identity(st) && now - e.at < kVerifiedFresh;
    return false;
  }

 private:
  using Identity = std::array<int64_t, 5>;  // dev, ino, size, mtime s, mtime ns
  static Identity identity(const struct stat& st) {
    return {static_cast<int64_t>(st.st_dev), static_cast<int64_t>(st.st_ino),
            static_cast<int64_t>(st.st_size), static_cast<int64_t>(st.st_mtim.tv_sec),
            static_cast<int64_t>(st.st_mtim.tv_nsec)};
  }
  struct Entry {
    Digest digest;
    Identity file;
    std::chrono::steady_clock::time_point at;
  };
  static constexpr size_t kMax = 64;
  mutable Mutex mu_;
  std::vector<Entry> entries_ GUARDED_BY(mu_);
};

class FileBlobWriter final : public BlobWriter {
 public:
  // A writer with nothing to do: the blob of `size` bytes is present.
  FileBlobWriter(Digest expected, fs::path final_path, uint64_t size)
      : done_(true), expected_(std::move(expected)), final_(std::move(final_path)), offset_(size) {}

  FileBlobWriter(Digest expected, fs::path partial, fs::path final_path, FileLock lock, UniqueFd fd,
                 std::unique_ptr<Sha256> hasher, uint64_t offset, std::shared_ptr<FreshBlobs> fresh)
      : expected_(std::move(expected)),
        partial_(std::move(partial)),
        final_(std::move(final_path)),
        lock_(std::move(lock)),
        fd_(std::move(fd)),
        hasher_(std::move(hasher)),
        offset_(offset),
        fresh_(std::move(fresh)) {}

  ~FileBlobWriter() override {
    // What the caller handed over is kept for a resume, as if it had been written at once.
    if (!done_ && fd_ && hasher_) (void)flush();
  }
  FileBlobWriter(const FileBlobWriter&) = delete;
  FileBlobWriter& operator=(const FileBlobWriter&) = delete;

  [[nodiscard]] bool done() const override { return done_; }
  [[nodiscard]] uint64_t offset() const override { return offset_ + buffer_.size(); }

  // Network reads arrive in pieces of ~16 KiB; gathering them into 1 MiB writes takes most of
  // the write syscalls off a pull's critical path.
  Result<void> write(std::span<const uint8_t> bytes) override {
    if (auto usable = check_usable("write"); !usable.ok()) return usable;
    if (buffer_.size() + bytes.size() > kBufferSize) IMAGEFS_CHECK(flush());
    if (bytes.size() >= kBufferSize) return write_through(bytes);
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
    return {};
  }

  Result<void> restart() override {
    if (auto usable = check_usable("restart"); !usable.ok()) return usable;
    buffer_.clear();
    if (::ftruncate(fd_.get(), 0) != 0) return errno_error(errno, "cannot truncate", partial_);
    hasher_ = std::make_unique<Sha256>();
    offset_ = 0;
    written_back_ = 0;
    return {};
  }

  Result<void> commit(std::optional<uint64_t> expected_size) override {
    if (done_) {
      if (expected_size && *expected_size != offset_)
        return make_error(EIO, "size mismatch for " + final_.string() + ": expected " +
                                   std::to_string(*expected_size) + " bytes, the stored blob has " +
                                   std::to_string(offset_));
      return {};
    }
    if (auto usable = check_usable("commit"); !usable.ok()) return usable;
    IMAGEFS_CHECK(flush());
    if (expected_size && offset_ < *expected_size) {
      // Most likely a dropped connection: keep what we have for the resume.
      return make_error(EIO, "incomplete blob " + expected_.str() + ": got " +
                                 std::to_string(offset_) + " of " + std::to_string(*expected_size) +
                                 " bytes");
    }
    if (expected_size && offset_ > *expected_size) {
      uint64_t got = offset_;
      discard();
      return make_error(EIO, "size mismatch for " + expected_.str() + ": expected " +
                                 std::to_string(*expected_size) + " bytes, got " +
                                 std::to_string(got));
    }
    Digest actual = hasher_->finish();
    hasher_.reset();
    if (actual != expected_) {
      discard();
      return make_error(EIO, mismatch_message(partial_, expected_, actual));
    }
    if (::fsync(fd_.get()) != 0) {
      // After a failed fsync the kernel may have dropped the dirty pages: what the file holds is
      // unknown, so it cannot be trusted for a resume either.
      int err = errno;
      discard();
      return errno_error(err, "cannot fsync", partial_);
    }
    if (::rename(partial_.c_str(), final_.c_str()) != 0) return fail(errno, "cannot rename");
    // Read-only: a blob is never modified in place, and this catches code that tries. After the
    // rename, so that a crash cannot leave a read-only partial that a resume could not reopen; a
    // failure (or a crash before it) only leaves a writable, still verified, blob.
    (void)::fchmod(fd_.get(), 0444);
    if (fresh_) fresh_->add(expected_, fd_.get());  // after the chmod: the ctime is not compared
    fd_.reset();
    done_ = true;
    // Without this a power loss could undo the rename. A crash before it is harmless: the blob
    // is verified and fsynced under either name, and a writer resumes a complete partial.
    Result<void> synced = detail::fsync_dir(final_.parent_path());
    lock_.reset();  // let waiting writers see the blob now, not when this writer is destroyed
    return synced;
  }

 private:
  Result<void> check_usable(const char* what) const {
    if (done_)
      return make_error(EINVAL, std::string("cannot ") + what + " blob " + final_.string() +
                                    ": it is already in the store");
    if (!fd_ || !hasher_)
      return make_error(EINVAL, std::string("cannot ") + what + " blob " + expected_.str() +
                                    ": the writer failed earlier");
    return {};
  }

  Error fail(int err, const char* what) { return errno_error(err, what, partial_); }

  Result<void> write_through(std::span<const uint8_t> bytes) {
    size_t written = 0;
    Result<void> r = detail::write_all(fd_.get(), bytes.data(), bytes.size(), partial_, &written);
    // Hash exactly what reached the file, so that offset(), the hash and the file agree even
    // after a short write: a later write() or a resumed writer carries on from there.
    hasher_->update(bytes.first(written));
    offset_ += written;
    if (offset_ >= written_back_ + kWritebackEvery) {
      // Only a hint to start writing, so that the fsync at commit finds little left (it is on a
      // pull's critical path); errors surface at that fsync.
      (void)::sync_file_range(fd_.get(), static_cast<off_t>(written_back_),
                              static_cast<off_t>(offset_ - written_back_), SYNC_FILE_RANGE_WRITE);
      written_back_ = offset_;
    }
    return r;
  }

  // Writes the buffer out. On a short write (a full disk) the unwritten rest is dropped, so
  // offset() again counts exactly the bytes in the file.
  Result<void> flush() {
    if (buffer_.empty()) return {};
    Result<void> r = write_through(buffer_);
    buffer_.clear();
    return r;
  }

  // Deletes the partial file; the writer becomes unusable.
  void discard() {
    // Best effort: the partial is about to be abandoned; if unlink fails, the next writer of this
    // blob truncates or re-verifies it, and gc removes it after a day.
    (void)::unlink(partial_.c_str());
    fd_.reset();
    hasher_.reset();
    buffer_.clear();
    offset_ = 0;
  }

  // Small enough that the partial file shows a download's progress to a writer waiting for it
  // (open_writer's WaitReport), large enough that writes cost nothing next to the network.
  static constexpr size_t kBufferSize = size_t{256} << 10;
  // Writeback of the partial file starts every this many bytes.
  static constexpr uint64_t kWritebackEvery = uint64_t{4} << 20;

  bool done_ = false;
  Digest expected_;
  fs::path partial_;
  fs::path final_;
  std::optional<FileLock> lock_;  // held for the writer's lifetime
  UniqueFd fd_;
  std::unique_ptr<Sha256> hasher_;
  uint64_t offset_ = 0;          // bytes in the partial file (and hashed)
  uint64_t written_back_ = 0;    // offset up to which writeback was started
  std::vector<uint8_t> buffer_;  // handed to write() but not yet in the file
  std::shared_ptr<FreshBlobs> fresh_;
};

class FileBlobStore final : public BlobStore {
 public:
  explicit FileBlobStore(fs::path root)
      : root_(std::move(root)),
        blobs_(root_ / "blobs" / "sha256"),
        tmp_(root_ / "tmp"),
        locks_(root_ / "locks") {}

  Result<void> init() const {
    for (const fs::path& dir : {blobs_, tmp_, locks_, root_ / "leases"})
      IMAGEFS_CHECK(detail::make_dirs(dir));
    return {};
  }

  [[nodiscard]] const fs::path& root() const override { return root_; }

  [[nodiscard]] bool verified_just_now(const Digest& digest, int fd) const override {
    return fresh_->has(digest, fd);
  }

  [[nodiscard]] fs::path path(const Digest& digest) const override {
    return blobs_ / std::string(digest.hex());
  }

  [[nodiscard]] bool contains(const Digest& digest) const override {
    struct stat st {};
    return ::stat(path(digest).c_str(), &st) == 0 && S_ISREG(st.st_mode);
  }

  [[nodiscard]] Result<std::string> read(const Digest& digest) const override {
    fs::path p = path(digest);
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      if (errno == ENOENT)
        return make_error(ENOENT, "blob " + digest.str() + " is not in the store");
      return errno_error(errno, "cannot open", p);
    }
    std::string out;
    std::string buf(kChunk, '\0');
    for (;;) {
      ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_error(errno, "cannot read", p);
      }
      if (n == 0) break;
      out.append(buf.data(), static_cast<size_t>(n));
    }
    Digest actual = Digest::of(std::string_view(out));
    if (actual != digest) return damaged_error(digest, actual);
    return out;
  }

  Result<void> put(const Digest& expected, std::string_view bytes) override {
    return put_bytes(expected, bytes, IfStored::use);
  }

  Result<void> repair(const Digest& expected, std::string_view bytes) override {
    return put_bytes(expected, bytes, IfStored::check);
  }

  Result<std::unique_ptr<BlobWriter>> open_repair_writer(
      const Digest& expected, std::optional<uint64_t> expected_size) override {
    return open_writer_once(expected, expected_size, true, IfStored::check);
  }

  [[nodiscard]] Result<BlobState> check(const Digest& digest,
                                        const HashProgress& progress) const override {
    return check_file(path(digest), digest, progress);
  }

  Result<std::unique_ptr<BlobWriter>> open_writer(const Digest& expected,
                                                  std::optional<uint64_t> expected_size,
                                                  const WaitReport& waiting) override {
    return open_writer_once(expected, expected_size, true, IfStored::use, waiting);
  }

  // The blob's writer lock; with `waiting`, polled rather than waited for, to report the wait.
  Result<FileLock> writer_lock(const Digest& expected, const WaitReport& waiting) {
    if (!waiting) return FileLock::acquire(lock_path(expected), detail::LockMode::exclusive);
    for (;;) {
      IMAGEFS_TRY(lock, FileLock::try_acquire(lock_path(expected), detail::LockMode::exclusive,
                                              detail::IfMissing::create));
      if (lock) return std::move(*lock);
      // The partial, or once the other writer committed (it releases the lock next) the blob.
      waiting(file_size(partial_path(expected)).value_or(file_size(path(expected)).value_or(0)));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }

  Result<void> remove(const Digest& digest) override {
    IMAGEFS_CHECK(remove_file(path(digest)));
    IMAGEFS_TRY(lock, FileLock::try_acquire(lock_path(digest), detail::LockMode::exclusive,
                                            detail::IfMissing::create));
    if (lock) IMAGEFS_CHECK(remove_file(partial_path(digest)));
    return {};
  }

  [[nodiscard]] Result<std::vector<BlobInfo>> list() const override {
    std::vector<BlobInfo> out;
    IMAGEFS_TRY(names, detail::list_dir(blobs_));
    for (const std::string& name : names) {
      auto digest = Digest::parse("sha256:" + name);
      if (!digest.ok()) continue;  // not ours (an editor's backup, a stray file)
      fs::path p = blobs_ / name;
      struct stat st {};
      if (::lstat(p.c_str(), &st) != 0) {
        if (errno == ENOENT) continue;  // removed meanwhile
        return errno_error(errno, "cannot stat", p);
      }
      if (!S_ISREG(st.st_mode)) continue;
      out.push_back(BlobInfo{std::move(*digest), static_cast<uint64_t>(st.st_size),
                             detail::mtime_seconds(st)});
    }
    return out;
  }

  [[nodiscard]] Result<std::vector<Digest>> verify() const override {
    IMAGEFS_TRY(blobs, list());
    std::vector<Digest> bad;
    for (const BlobInfo& blob : blobs) {
      IMAGEFS_TRY(state, check_file(path(blob.digest), blob.digest));
      if (state == BlobState::bad) bad.push_back(blob.digest);  // missing: removed meanwhile
    }
    return bad;
  }

  Result<std::vector<PartialInfo>> remove_stale_partials(int64_t modified_before) override {
    std::vector<PartialInfo> removed;
    IMAGEFS_TRY(names, detail::list_dir(tmp_));
    for (const std::string& name : names) {
      if (!name.ends_with(kPartialSuffix)) continue;
      fs::path p = tmp_ / name;
      auto digest = Digest::parse("sha256:" + name.substr(0, name.size() - kPartialSuffix.size()));
      if (!digest.ok()) continue;
      // Holding the blob's lock means no writer is using the partial, and none can start.
      IMAGEFS_TRY(lock, FileLock::try_acquire(lock_path(*digest), detail::LockMode::exclusive,
                                              detail::IfMissing::create));
      if (!lock) continue;
      struct stat st {};
      if (::stat(p.c_str(), &st) != 0) continue;  // committed or removed meanwhile
      if (detail::mtime_seconds(st) >= modified_before && !contains(*digest)) continue;
      IMAGEFS_CHECK(remove_file(p));
      removed.push_back(PartialInfo{std::move(*digest), static_cast<uint64_t>(st.st_size),
                                    detail::mtime_seconds(st)});
    }
    IMAGEFS_CHECK(detail::sweep_lock_dir(locks_));
    return removed;
  }

  [[nodiscard]] Result<std::vector<PartialInfo>> list_partials() const override {
    std::vector<PartialInfo> out;
    IMAGEFS_TRY(names, detail::list_dir(tmp_));
    for (const std::string& name : names) {
      if (!name.ends_with(kPartialSuffix)) continue;
      auto digest = Digest::parse("sha256:" + name.substr(0, name.size() - kPartialSuffix.size()));
      if (!digest.ok()) continue;
      fs::path p = tmp_ / name;
      struct stat st {};
      if (::lstat(p.c_str(), &st) != 0) {
        if (errno == ENOENT) continue;  // committed or removed meanwhile
        return errno_error(errno, "cannot stat", p);
      }
      if (!S_ISREG(st.st_mode)) continue;
      out.push_back(PartialInfo{std::move(*digest), static_cast<uint64_t>(st.st_size),
                                detail::mtime_seconds(st)});
    }
    return out;
  }

  Result<bool> remove_partial(const Digest& digest) override {
    IMAGEFS_TRY(lock, FileLock::try_acquire(lock_path(digest), detail::LockMode::exclusive,
                                            detail::IfMissing::create));
    if (!lock) return false;
    fs::path p = partial_path(digest);
    if (::unlink(p.c_str()) != 0) {
      if (errno == ENOENT) return false;
      return errno_error(errno, "cannot remove", p);
    }
    return true;
  }

 private:
  // Whether a writer takes a stored copy as it is, or hashes it first and replaces a bad one.
  enum class IfStored { use, check };

  Result<void> put_bytes(const Digest& expected, std::string_view bytes, IfStored if_stored) {
    Digest actual = Digest::of(bytes);
    if (actual != expected)
      return make_error(EIO, mismatch_message(path(expected), expected, actual));
    IMAGEFS_TRY(writer, open_writer_once(expected, bytes.size(), true, if_stored));
    if (writer->done()) return {};
    if (writer->offset() != 0) IMAGEFS_CHECK(writer->restart());
    auto span = std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    Result<void> r = writer->write(span);
    if (r.ok()) r = writer->commit(bytes.size());
    if (!r.ok() && !writer->done()) {
      // The bytes are in the caller's memory, so a partial is worth nothing and would only take
      // space on a disk that may be full. Remove it while the writer still holds the lock.
      (void)remove_file(partial_path(expected));
    }
    return r;
  }

  Result<std::unique_ptr<BlobWriter>> open_writer_once(const Digest& expected,
                                                       std::optional<uint64_t> expected_size,
                                                       bool commit_complete, IfStored if_stored,
                                                       const WaitReport& waiting = nullptr) {
    fs::path final_path = path(expected);
    if (if_stored == IfStored::use)
      if (auto size = file_size(final_path)) return done_writer(expected, final_path, *size);
    IMAGEFS_TRY(lock, writer_lock(expected, waiting));
    // The writer we may have waited for has committed it. A repair hashes the stored copy under
    // the lock: a good one was repaired by the writer we waited for (or was never bad), and a bad
    // one stays where it is until this writer's commit renames the new bytes over it.
    if (auto size = file_size(final_path)) {
      if (if_stored == IfStored::use) return done_writer(expected, final_path, *size);
      IMAGEFS_TRY(state, check_file(final_path, expected));
      if (state == BlobState::good) return done_writer(expected, final_path, *size);
    }

    fs::path partial = partial_path(expected);
    UniqueFd fd(::open(partial.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (!fd) return errno_error(errno, "cannot create", partial);
    if (expected_size) {
      struct stat st {};
      if (::fstat(fd.get(), &st) != 0) return errno_error(errno, "cannot stat", partial);
      // Longer than the blob: nothing in it is worth hashing (it may be gigabytes of a registry's
      // endless answer), and a resume from there could only fail.
      if (static_cast<uint64_t>(st.st_size) > *expected_size && ::ftruncate(fd.get(), 0) != 0)
        return errno_error(errno, "cannot truncate", partial);
    }
    // Resume: the hash state cannot be saved, so rebuild it from the bytes on disk.
    auto hasher = std::make_unique<Sha256>();
    IMAGEFS_TRY(offset, hash_file(fd.get(), *hasher, partial));
    auto writer =
        std::make_unique<FileBlobWriter>(expected, partial, final_path, std::move(lock),
                                         std::move(fd), std::move(hasher), offset, fresh_);
    if (commit_complete && expected_size && offset == *expected_size) {
      // Complete already (killed after the last byte): commit it now rather than ask the
      // registry for the bytes after the end (416). A mismatch deletes it: start again (once;
      // another failure, such as a failed rename, is the caller's to see on its own commit).
      if (writer->commit(expected_size).ok()) return std::unique_ptr<BlobWriter>(std::move(writer));
      writer.reset();  // releases the lock: take it again for a fresh writer
      return open_writer_once(expected, expected_size, false, if_stored);
    }
    return std::unique_ptr<BlobWriter>(std::move(writer));
  }

  [[nodiscard]] fs::path partial_path(const Digest& digest) const {
    return tmp_ / (std::string(digest.hex()) + std::string(kPartialSuffix));
  }
  [[nodiscard]] fs::path lock_path(const Digest& digest) const {
    return locks_ / (std::string(digest.hex()) + ".lock");
  }
  static Result<std::unique_ptr<BlobWriter>> done_writer(const Digest& d, const fs::path& p,
                                                         uint64_t size) {
    return std::unique_ptr<BlobWriter>(std::make_unique<FileBlobWriter>(d, p, size));
  }
  static std::optional<uint64_t> file_size(const fs::path& p) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
    return static_cast<uint64_t>(st.st_size);
  }

  fs::path root_;
  fs::path blobs_;
  fs::path tmp_;
  fs::path locks_;
  std::shared_ptr<FreshBlobs> fresh_ = std::make_shared<FreshBlobs>();
};

}  // namespace

Result<std::shared_ptr<BlobStore>> BlobStore::open(const fs::path& root) {
  auto store = std::make_shared<FileBlobStore>(root);
  if (auto r = make_private_store_dir(root); !r.ok())
    return r.error().context("cannot open blob store");
  if (auto r = store->init(); !r.ok()) return r.error().context("cannot open blob store");
  return std::shared_ptr<BlobStore>(std::move(store));
}

}  // namespace imagefs::store
