// Layer ingest: one streaming pass of a layer blob (decompressed, hashed and checked by
// layer_stream.h) through libarchive's tar reader that appends every regular file's bytes to the
// layer's data file and collects its entries, then folds whiteouts, implicit parents,
// replacements and hardlinks as layer_index.h says, and writes the index with the layer's
// diff_id (docs/LAYER_FORMAT.md).
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "overlay/entry_name.h"
#include "overlay/layer_format.h"
#include "overlay/layer_stream.h"

namespace imagefs::overlay::detail {

namespace fs = std::filesystem;

namespace {

constexpr size_t kWriteBuffer = size_t{1} << 20;
// Start writeback of the data file every this many bytes, so that the final fsync finds little
// left to write and disk writes overlap decompression.
constexpr uint64_t kWritebackEvery = uint64_t{4} << 20;
// PATH_MAX - 1: the longest path (or symlink target) Linux can create.
constexpr size_t kMaxPath = 4095;
constexpr uint64_t kMaxImplicitBytes = uint64_t{64} << 20;
// Symlinks followed resolving one entry's parents, as Linux's MAXSYMLINKS.
constexpr int kMaxSymlinks = 40;

struct ArchiveReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveReadFree>;

// The uncompressed stream, handed to libarchive as it comes. The stream's own error (corrupt
// compression, garbage after it) is kept: it says more than libarchive's report of a failed read.
struct Feed {
  LayerStream* stream = nullptr;
  std::span<const uint8_t> first;  // read before libarchive was opened
  std::optional<Error> error;
};

la_ssize_t read_feed(archive* a, void* client, const void** out) {
  auto* f = static_cast<Feed*>(client);
  std::span<const uint8_t> chunk = std::exchange(f->first, {});
  if (chunk.empty()) {
    Result<std::span<const uint8_t>> next = f->stream->read();
    if (!next.ok()) {
      archive_set_error(a, next.error().code, "%s", next.error().message.c_str());
      f->error = next.error();
      return -1;
    }
    chunk = *next;
  }
  *out = chunk.data();
  return static_cast<la_ssize_t>(chunk.size());
}

std::string mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// Whether the file system of `fd` keeps more than `reserve` bytes free after `more` bytes are
// written; ENOSPC naming `layer` when not. Checked before each write, so that a layer bigger
// than the disk ends with this error, not with a full disk for every other user of it.
Result<void> check_free(int fd, uint64_t more, uint64_t reserve, const store::Digest& layer) {
  struct statvfs st {};
  if (::fstatvfs(fd, &st) != 0) return {};  // cannot tell: the write itself will say
  uint64_t free = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  if (free >= reserve && free - reserve >= more) return {};
  return make_error(ENOSPC, "layer " + layer.str() +
                                " needs more disk than the store's filesystem has free (" +
                                mib(free) + " free, and ingest keeps " + mib(reserve) +
                                " in reserve); free some space (imagefs gc --max-size) and retry");
}

// Appends to the data file through a buffer. Holes (of sparse tar entries) are left as holes in
// the data file rather than written as zeros, so a hostile sparse entry costs no disk.
class DataWriter {
 public:
  DataWriter(UniqueFd fd, fs::path path, const store::Digest& layer, uint64_t reserve)
      : fd_(std::move(fd)),
        path_(std::move(path)),
        buffer_(kWriteBuffer),
        layer_(layer),
        reserve_(reserve) {}

  [[nodiscard]] uint64_t end() const { return start_ + used_; }

  Result<void> append(const uint8_t* p, size_t n) {
    if (used_ + n > buffer_.size()) IMAGEFS_CHECK(flush());
    if (n >= buffer_.size()) return write_at(p, n, start_, /*advance=*/true);
    std::memcpy(buffer_.data() + used_, p, n);
    used_ += n;
    return {};
  }

  Result<void> skip(uint64_t n) {
    IMAGEFS_CHECK(flush());
    start_ += n;
    return {};
  }

  // Flushes, sizes the file (a trailing hole), and fsyncs it.
  Result<void> finish() {
    IMAGEFS_CHECK(flush());
    if (::ftruncate(fd_.get(), static_cast<off_t>(start_)) != 0)
      return errno_error(errno, "cannot size", path_);
    if (::fsync(fd_.get()) != 0) return errno_error(errno, "cannot fsync", path_);
    return {};
  }

 private:
  Result<void> flush() {
    if (used_ == 0) return {};
    size_t n = used_;
    used_ = 0;
    return write_at(buffer_.data(), n, start_, /*advance=*/true);
  }

  Result<void> write_at(const uint8_t* p, size_t n, uint64_t at, bool advance) {
    IMAGEFS_CHECK(check_free(fd_.get(), n, reserve_, layer_));
    size_t done = 0;
    while (done < n) {
      ssize_t w = ::pwrite(fd_.get(), p + done, n - done, static_cast<off_t>(at + done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        if (errno == ENOSPC)
          return make_error(ENOSPC, "no space left on device while writing " + path_.string());
        return errno_error(errno, "cannot write", path_);
      }
      done += static_cast<size_t>(w);
    }
    if (advance) start_ = at + n;
    if (start_ - written_back_ >= kWritebackEvery) {
      // Only a hint to start writing; errors surface at the fsync in finish().
      (void)::sync_file_range(fd_.get(), static_cast<off_t>(written_back_),
                              static_cast<off_t>(start_ - written_back_), SYNC_FILE_RANGE_WRITE);
      written_back_ = start_;
    }
    return {};
  }

  UniqueFd fd_;
  fs::path path_;
  std::vector<uint8_t> buffer_;
  size_t used_ = 0;
  uint64_t start_ = 0;  // file offset of buffer_[0]
  uint64_t written_back_ = 0;
  const store::Digest& layer_;
  const uint64_t reserve_;
};

bool is_dir(EntryType t) { return t == EntryType::directory; }

// One entry as the tar stream had it, or an implicit directory. Nodes are kept in tar order; a
// replaced node stays (dead) because a hardlink may still refer to its content.
struct Node {
  std::string path;
  EntryType type = EntryType::regular;
  bool implicit = false;
  bool opaque = false;
  bool alive = true;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;
  uint64_t data_offset = 0;
  std::string link;
  uint32_t rdev_major = 0;
  uint32_t rdev_minor = 0;
  int64_t target = -1;  // a hardlink: the node it links to (never itself a hardlink); -1 = lower
  std::vector<std::pair<std::string, std::string>> xattrs;
};

std::string_view parent_of(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
}

std::string_view name_of(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

class Ingest {
 public:
  Ingest(const store::LayerRecord& layer, const IngestProgress* progress,
         const IngestLimits& limits)
      : layer_(layer), progress_(progress), limits_(limits) {}

  Result<void> run(const fs::path& blob, const fs::path& dir, const store::BlobStore* store) {
    fs::path data_path = dir / kDataFile;
    UniqueFd data(::open(data_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444));
    if (!data) return errno_error(errno, "cannot create", data_path);
    data_.emplace(std::move(data), data_path, layer_.digest, limits_.disk_reserve);
    IMAGEFS_TRY(stream, LayerStream::open(blob, layer_, progress_, store));

    // Whatever stops the reading, a blob that does not match its digest is the error to report:
    // the store's copy is damaged, and no error about its contents would be true.
    if (Result<void> read = read_entries(*stream); !read.ok()) return stream->explain(read.error());
    IMAGEFS_TRY(diff_id, stream->finish());
    diff_id_ = std::move(diff_id);
    compression_ = stream->compression();
    IMAGEFS_CHECK(finalize());
    IMAGEFS_CHECK(data_->finish());
    return write_index(dir / kIndexFile);
  }

 private:
  // --- reading ---

  Error bad(const std::string& what) const {
    return make_error(EIO, "layer " + layer_.digest.str() + ": " + what);
  }
  Error bad_entry(std::string_view name, const std::string& what) const {
    return bad("entry '" + std::string(name) + "': " + what);
  }

  Result<void> read_entries(LayerStream& stream) {
    Feed feed{&stream, {}, {}};
    IMAGEFS_TRY(first, stream.read());
    // An empty stream (a gzip of nothing: skopeo makes one from a 0-byte blob; a 0-byte blob) is
    // an empty layer, as docker and umoci read it, though libarchive finds no tar in it.
    if (first.empty()) return {};
    feed.first = first;
    ArchiveReader a(archive_read_new());
    if (!a) return make_error(ENOMEM, "cannot allocate a libarchive reader");
    // Tar only, no filter: the stream is already decompressed, and libarchive never guesses.
    archive_read_support_format_tar(a.get());
    if (archive_read_open(a.get(), &feed, nullptr, read_feed, nullptr) != ARCHIVE_OK) {
      if (feed.error) return *feed.error;
      return not_a_tar(stream, libarchive_error(a.get()));
    }

    std::string previous;  // for errors in a header: the entry before it
    for (;;) {
      archive_entry* e = nullptr;
      int r = archive_read_next_header(a.get(), &e);
      if (r == ARCHIVE_EOF) break;
      // ARCHIVE_WARN: a name libarchive could not convert to the locale's charset; its bytes are
      // still the tar's, which is what a name must be.
      if (r < ARCHIVE_WARN) {
        if (feed.error) return where(stream, *feed.error, previous, "after entry");
        if (previous.empty()) return not_a_tar(stream, libarchive_error(a.get()));
        return bad("after entry '" + previous + "': " + libarchive_error(a.get()));
      }
      const char* raw = archive_entry_pathname(e);
      if (raw == nullptr) return bad("an entry has no name (after '" + previous + "')");
      previous = raw;
      if (Result<void> added = add_entry(a.get(), e, raw); !added.ok())
        return feed.error ? where(stream, *feed.error, previous, "in entry") : added.error();
    }
    return {};
  }

  // A stream error, with the tar entry it happened in or after (not for bytes after the stream,
  // which libarchive may read ahead of while it is still in the last entry).
  static Error where(const LayerStream& stream, const Error& e, const std::string& entry,
                     const char* how) {
    if (entry.empty() || stream.failed_after_the_stream()) return e;
    return make_error(e.code, e.message + " (" + how + " '" + entry + "')");
  }

  // The stream has bytes, and libarchive finds no tar header at its start.
  Error not_a_tar(const LayerStream& stream, const std::string& why) const {
    if (stream.compression() == Compression::none)
      return bad("the blob is neither gzip nor zstd (by its magic bytes), nor a tar archive: " +
                 why);
    return bad(std::string("its ") + compression_name(stream.compression()) +
               " content is not a tar archive: " + why);
  }

  static std::string libarchive_error(archive* a) {
    const char* s = archive_error_string(a);
    return s != nullptr ? s : "unknown libarchive error";
  }

  // The caps of IngestLimits on entries and on the bytes of names kept in memory.
  Result<void> count_entry(std::string_view raw) {
    if (++entries_ > limits_.max_entries)
      return make_error(EFBIG, "layer " + layer_.digest.str() + " has more than " +
                                   std::to_string(limits_.max_entries) + " entries");
    return count_name_bytes(raw.size());
  }
  Result<void> count_name_bytes(uint64_t n) {
    name_bytes_ += n;
    if (name_bytes_ > limits_.max_name_bytes)
      return make_error(EFBIG, "layer " + layer_.digest.str() + " has more than " +
                                   std::to_string(limits_.max_name_bytes) +
                                   " bytes of names, link targets and xattrs");
    return {};
  }

  Result<void> add_entry(archive* a, archive_entry* e, std::string_view raw) {
    IMAGEFS_CHECK(count_entry(raw));
    auto name = parse_entry_name(raw);
    if (!name.ok()) return bad_entry(raw, name.error().message);
    switch (name->kind) {
      case NameKind::bare_whiteout:
        return {};  // hides nothing (stereoscope#647)
      case NameKind::whiteout: {
        // Placed in finalize(), where its parents are made only if the path is not moot; they
        // are resolved now, through the symlinks the layer has at this point of the tar.
        IMAGEFS_CHECK(check_length(raw, name->path));
        IMAGEFS_TRY(path, through_symlinks(raw, name->path));
        whiteouts_.insert(std::move(path));
        return {};
      }
      case NameKind::opaque: {
        IMAGEFS_CHECK(check_length(raw, name->path));
        // The marker is in the directory: the directory's own path is followed too.
        IMAGEFS_TRY(dir, follow_symlinks(raw, name->path));
        if (dir.empty()) {
          root_opaque_ = true;
        } else {
          opaques_.insert(std::move(dir));
        }
        return {};
      }
      case NameKind::root:
      case NameKind::path:
        break;
    }

    IMAGEFS_CHECK(check_length(raw, name->path));
    Node n;
    if (name->kind == NameKind::root) {
      n.path = std::move(name->path);
    } else {
      IMAGEFS_TRY(path, through_symlinks(raw, name->path));
      n.path = std::move(path);
    }
    IMAGEFS_CHECK(read_metadata(e, raw, n));
    for (const auto& [xname, value] : n.xattrs)
      IMAGEFS_CHECK(count_name_bytes(xname.size() + value.size()));
    const char* hardlink = archive_entry_hardlink(e);
    if (hardlink != nullptr) IMAGEFS_CHECK(count_name_bytes(std::strlen(hardlink)));
    if (hardlink != nullptr) {
      n.type = EntryType::hardlink;
    } else {
      switch (archive_entry_filetype(e)) {
        case AE_IFREG:
          n.type = EntryType::regular;
          break;
        case AE_IFDIR:
          n.type = EntryType::directory;
          break;
        case AE_IFLNK:
          n.type = EntryType::symlink;
          break;
        case AE_IFCHR:
          n.type = EntryType::char_device;
          break;
        case AE_IFBLK:
          n.type = EntryType::block_device;
          break;
        case AE_IFIFO:
          n.type = EntryType::fifo;
          break;
        default:
          return bad_entry(raw, "unsupported entry type");
      }
    }

    if (name->kind == NameKind::root) {
      // "./": the root's own metadata. Anything but a directory cannot be the root; skip it.
      if (n.type == EntryType::directory) root_ = std::move(n);
      return {};
    }

    if (n.type == EntryType::regular) IMAGEFS_CHECK(read_data(a, e, raw, n));
    if (n.type == EntryType::symlink) {
      const char* target = archive_entry_symlink(e);
      if (target == nullptr || *target == '\0')
        return bad_entry(raw, "symbolic link with an empty target");
      n.link = target;
      IMAGEFS_CHECK(check_length(raw, n.link));
      IMAGEFS_CHECK(count_name_bytes(n.link.size()));
    }
    if (n.type == EntryType::hardlink) IMAGEFS_CHECK(resolve_hardlink(raw, hardlink, n));
    IMAGEFS_CHECK(ensure_parents(n.path));
    bool to_lower = n.type == EntryType::hardlink && n.target < 0;
    if (n.type == EntryType::symlink) symlinks_.insert(n.path);
    uint32_t index = place(std::move(n));
    if (to_lower) lower_links_.push_back(index);
    return {};
  }

  // No extraction could make a path (or a symlink target) of PATH_MAX bytes or more, and the
  // limit bounds the work and memory one entry can cause.
  Result<void> check_length(std::string_view raw, std::string_view s) const {
    if (s.size() > kMaxPath)
      return bad_entry(raw.substr(0, 200),
                       "name or link target longer than " + std::to_string(kMaxPath) + " bytes");
    return {};
  }

  Result<void> read_metadata(archive_entry* e, std::string_view raw, Node& n) const {
    n.mode = static_cast<uint32_t>(archive_entry_perm(e)) & 07777;
    la_int64_t uid = archive_entry_uid(e);
    la_int64_t gid = archive_entry_gid(e);
    constexpr la_int64_t kMaxId = std::numeric_limits<uint32_t>::max();
    if (uid < 0 || uid > kMaxId || gid < 0 || gid > kMaxId)
      return bad_entry(
          raw, "owner " + std::to_string(uid) + ":" + std::to_string(gid) + " is out of range");
    n.uid = static_cast<uint32_t>(uid);
    n.gid = static_cast<uint32_t>(gid);
    n.mtime_sec = static_cast<int64_t>(archive_entry_mtime(e));
    long nsec = archive_entry_mtime_nsec(e);
    n.mtime_nsec = nsec >= 0 && nsec < 1000000000 ? static_cast<uint32_t>(nsec) : 0;
    n.rdev_major = static_cast<uint32_t>(archive_entry_rdevmajor(e));
    n.rdev_minor = static_cast<uint32_t>(archive_entry_rdevminor(e));
    archive_entry_xattr_reset(e);
    const char* xname = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    while (archive_entry_xattr_next(e, &xname, &value, &size) == ARCHIVE_OK) {
      if (xname == nullptr || *xname == '\0') continue;
      n.xattrs.emplace_back(xname, value != nullptr
                                       ? std::string(static_cast<const char*>(value), size)
                                       : std::string());
    }
    // By name; of a name given twice, the later value wins, as later entries do.
    std::stable_sort(n.xattrs.begin(), n.xattrs.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    auto last_of_each = [&](const auto& a, const auto& b) { return a.first == b.first; };
    std::reverse(n.xattrs.begin(), n.xattrs.end());
    n.xattrs.erase(std::unique(n.xattrs.begin(), n.xattrs.end(), last_of_each), n.xattrs.end());
    std::reverse(n.xattrs.begin(), n.xattrs.end());
    return {};
  }

  Result<void> read_data(archive* a, archive_entry* e, std::string_view raw, Node& n) {
    la_int64_t declared = archive_entry_size(e);
    if (declared < 0) return bad_entry(raw, "negative size");
    n.size = static_cast<uint64_t>(declared);
    n.data_offset = data_->end();
    uint64_t produced = 0;
    for (;;) {
      const void* block = nullptr;
      size_t len = 0;
      la_int64_t at = 0;
      int r = archive_read_data_block(a, &block, &len, &at);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) return bad_entry(raw, libarchive_error(a));
      if (at < 0 || static_cast<uint64_t>(at) < produced)
        return bad_entry(raw, "data blocks out of order");
      auto offset = static_cast<uint64_t>(at);
      if (offset > n.size || len > n.size - offset)
        return bad_entry(raw, "more data than its size of " + std::to_string(n.size) + " bytes");
      if (offset > produced) IMAGEFS_CHECK(data_->skip(offset - produced));  // a sparse hole
      IMAGEFS_CHECK(data_->append(static_cast<const uint8_t*>(block), len));
      produced = offset + len;
    }
    if (produced < n.size) {
      if (archive_entry_sparse_count(e) == 0)
        return bad_entry(raw, "size " + std::to_string(n.size) + " but only " +
                                  std::to_string(produced) + " bytes of data");
      IMAGEFS_CHECK(data_->skip(n.size - produced));  // a trailing hole
    }
    return {};
  }

  // --- folding (layer_index.h's rules; docs/LAYER_FORMAT.md has the reasons) ---

  Result<void> resolve_hardlink(std::string_view raw, const char* target_raw, Node& n) {
    auto target = clean_path(target_raw);
    if (!target.ok()) return bad_entry(raw, "hardlink target: " + target.error().message);
    if (target->empty()) return bad_entry(raw, "hardlink to the root directory");
    IMAGEFS_CHECK(check_length(raw, *target));
    // Its parents, like any path of the layer, lead through the layer's own symlinks.
    IMAGEFS_TRY(followed, through_symlinks(raw, *target));
    *target = std::move(followed);
    if (*target == n.path) return bad_entry(raw, "hardlink to itself");
    auto it = live_.find(*target);
    if (it == live_.end()) {
      // Not (yet) in this layer: a file of a lower layer, unless a later entry of this layer has
      // that path, which finalize() refuses.
      n.link = std::move(*target);
      return {};
    }
    const Node& t = nodes_[it->second];
    if (is_dir(t.type)) return bad_entry(raw, "hardlink to the directory '" + *target + "'");
    if (t.type == EntryType::hardlink) {
      // A link to a link: to whatever that one links to.
      n.target = t.target;
      n.link = t.link;
    } else {
      n.target = it->second;
      n.link = std::move(*target);
    }
    if (n.target >= 0 && nodes_[static_cast<size_t>(n.target)].type == EntryType::symlink)
      symlinks_.insert(n.path);  // a hardlinked symlink leads where the symlink leads
    return {};
  }

  // Where directory `dir` of this layer is, the layer's own symlinks on the way followed as an
  // extraction follows the ones it made (containerd's and umoci's securejoin, docker's chroot):
  // inside the image root, an absolute target starting at the root, ".." stopping there. Only
  // symlinks read so far count: the tar order decides. A component the layer has no entry for
  // stays as written (the tree resolves it through the layers below); a non-directory met
  // directly is replaced by the directory (ensure_parents), but one a symlink leads to is
  // ENOTDIR, and a loop or more than 40 links ELOOP, as extraction fails.
  // follow_symlinks' errors, built outside its loop.
  Error too_many_links(std::string_view raw, std::string_view dir) const {
    return make_error(ELOOP, "layer " + layer_.digest.str() + ": entry '" + std::string(raw) +
                                 "': too many levels of symbolic links (a loop, or more than "
                                 "40) under " +
                                 std::string(dir));
  }
  Error not_a_directory(std::string_view raw, const std::string& via,
                        const std::string& reached) const {
    return make_error(ENOTDIR, "layer " + layer_.digest.str() + ": entry '" + std::string(raw) +
                                   "': the symlink " + via + " leads to " + reached +
                                   ", which is not a directory");
  }

  Result<std::string> follow_symlinks(std::string_view raw, std::string_view dir) const {
    bool any = false;  // quick: no prefix of `dir` was ever a symlink of the layer
    for (size_t end = 0; !any && end != std::string_view::npos;) {
      end = dir.find('/', end == 0 ? 0 : end + 1);
      any = symlinks_.contains(dir.substr(0, end));
    }
    if (!any) return std::string(dir);
    std::vector<std::string> pending;  // components still to walk, the next one last
    auto push = [&](std::string_view text) {
      size_t at = pending.size();
      for (size_t start = 0; start <= text.size();) {
        size_t slash = text.find('/', start);
        if (slash == std::string_view::npos) slash = text.size();
        if (slash > start) pending.emplace_back(text.substr(start, slash - start));
        start = slash + 1;
      }
      std::reverse(pending.begin() + static_cast<std::ptrdiff_t>(at), pending.end());
    };
    push(dir);
    std::string at;
    int links = 0;
    std::string via;  // the last symlink followed, for errors
    while (!pending.empty()) {
      const std::string part = std::move(pending.back());
      pending.pop_back();
      if (part.empty() || part == ".") continue;
      if (part == "..") {
        at = std::string(parent_of(at));
        continue;
      }
      std::string next = at;
      if (!next.empty()) next += '/';
      next += part;
      auto it = live_.find(next);
      if (it != live_.end()) {
        const Node* n = &nodes_[it->second];
        if (n->type == EntryType::hardlink && n->target >= 0)
          n = &nodes_[static_cast<size_t>(n->target)];
        if (n->type == EntryType::symlink) {
          if (++links > kMaxSymlinks) return too_many_links(raw, dir);
          if (n->link.starts_with('/')) at.clear();
          via = next;
          push(n->link);
          continue;
        }
        if (!is_dir(n->type) && !via.empty()) return not_a_directory(raw, via, next);
      }
      at = std::move(next);
    }
    return at;
  }

  // `path` with its parent directory followed (follow_symlinks); its own name is not: an entry
  // replaces a symlink at its path.
  Result<std::string> through_symlinks(std::string_view raw, std::string_view path) const {
    std::string_view parent = parent_of(path);
    if (parent.empty()) return std::string(path);
    IMAGEFS_TRY(dir, follow_symlinks(raw, parent));
    std::string out =
        dir.empty() ? std::string(name_of(path)) : dir + "/" + std::string(name_of(path));
    IMAGEFS_CHECK(check_length(raw, out));
    return out;
  }

  // Whether every ancestor of `path` the layer has is a directory (else what `path` names is
  // moot: a later entry of the layer replaced a parent by a non-directory).
  bool under_dirs_only(std::string_view path) const {
    for (std::string_view up = parent_of(path); !up.empty(); up = parent_of(up)) {
      auto it = live_.find(up);
      if (it != live_.end()) return is_dir(nodes_[it->second].type);
    }
    return true;
  }

  // Every ancestor of `path` becomes a live directory. Invariant: every live node's ancestors
  // are live directories, so the walk up stops at the first one that is; the missing ones are
  // then made top-down. A loop, not recursion: a name may have thousands of components.
  Result<void> ensure_parents(std::string_view path) {
    std::vector<size_t> missing;  // lengths of the ancestors to make, deepest first
    for (size_t end = path.rfind('/'); end != std::string_view::npos && end > 0;
         end = path.rfind('/', end - 1)) {
      auto it = live_.find(path.substr(0, end));
      if (it != live_.end() && is_dir(nodes_[it->second].type)) break;
      missing.push_back(end);
    }
    for (auto len = missing.rbegin(); len != missing.rend(); ++len) {
      implicit_bytes_ += *len;
      // Implicit paths grow with the square of a name's depth: a few hostile names of 4 KiB
      // would otherwise take gigabytes. Real layers stay far below this.
      if (implicit_bytes_ > kMaxImplicitBytes)
        return bad_entry(path, "too many implicit parent directories in the layer");
      place_implicit_dir(std::string(path.substr(0, *len)));
    }
    return {};
  }

  uint32_t place_implicit_dir(std::string path) {
    Node d;
    d.path = std::move(path);
    d.type = EntryType::directory;
    d.implicit = true;
    d.mode = 0755;
    return place(std::move(d));
  }

  // Puts `n` at its path (whose parents are live directories), replacing what was there.
  // Returns its node index.
  uint32_t place(Node n) {
    auto index = static_cast<uint32_t>(nodes_.size());
    auto it = live_.find(n.path);
    if (it != live_.end()) {
      Node& old = nodes_[it->second];
      if (is_dir(old.type)) {
        if (is_dir(n.type))
          n.opaque = n.opaque || old.opaque;  // a new header for the same directory
        else
          kill_descendants(n.path);  // what was in the directory went with it
      } else if (is_dir(n.type)) {
        // A directory where this layer had a non-directory: extracting the layer removed the lower
        // layers' entry at this path first, so nothing of theirs is left below (buildkit#2614).
        // Made anew, it is the layer's own (a symlink below it is not followed), with the
        // placeholder metadata of a directory an extraction makes.
        n.opaque = true;
        n.implicit = false;
      }
      old.alive = false;
      it->second = index;
    } else {
      live_.emplace(n.path, index);
    }
    nodes_.push_back(std::move(n));
    return index;
  }

  void kill_descendants(const std::string& dir) {
    std::string prefix = dir + "/";
    auto it = live_.lower_bound(prefix);
    while (it != live_.end() && it->first.starts_with(prefix)) {
      nodes_[it->second].alive = false;
      it = live_.erase(it);
    }
  }

  Result<void> finalize() {
    // A hardlink that looked for its target before the target's entry came.
    for (uint32_t i : lower_links_) {
      const Node& h = nodes_[i];
      if (!h.alive) continue;
      if (live_.contains(h.link))
        return bad_entry(h.path, "hardlink to '" + h.link + "', which comes later in the layer");
    }

    // Whiteouts apply to lower layers only: a path this layer also has stays, and a directory
    // becomes opaque (deleted and recreated: a new directory, the layer's own even where no entry
    // made it). A whiteout below a path that is a non-directory of the layer is moot. The
    // parents a whiteout needs are made here, after every real entry, so the tree can tell
    // a directory that only whiteouts imply (it exists only where a lower layer has one).
    for (const std::string& w : whiteouts_) {
      auto it = live_.find(w);
      if (it != live_.end()) {
        Node& n = nodes_[it->second];
        if (is_dir(n.type)) {
          n.opaque = true;
          n.implicit = false;
        }
        continue;
      }
      if (!under_dirs_only(w)) continue;
      IMAGEFS_CHECK(ensure_parents(w));
      Node n;
      n.path = w;
      n.type = EntryType::whiteout;
      live_.emplace(w, static_cast<uint32_t>(nodes_.size()));
      nodes_.push_back(std::move(n));
    }
    // Opaque markers, wherever they were in the tar: on the layer's directory there, else on an
    // implicit one (moot under or at a non-directory or whiteout of the layer).
    for (const std::string& d : opaques_) {
      if (!under_dirs_only(d)) continue;
      auto it = live_.find(d);
      if (it != live_.end()) {
        if (is_dir(nodes_[it->second].type)) nodes_[it->second].opaque = true;
        continue;
      }
      IMAGEFS_CHECK(ensure_parents(d));
      nodes_[place_implicit_dir(d)].opaque = true;
    }

    // Hardlinks whose target was replaced later in the layer keep the replaced content (as an
    // extraction would: the link holds the old inode). The first such link takes the target's
    // place; the others link to it.
    std::map<int64_t, int64_t> promoted;  // dead target -> the link that took its place
    for (size_t i = 0; i < nodes_.size(); ++i) {
      Node& h = nodes_[i];
      if (!h.alive || h.type != EntryType::hardlink || h.target < 0) continue;
      if (nodes_[h.target].alive) continue;
      auto [p, first] = promoted.emplace(h.target, static_cast<int64_t>(i));
      if (!first) {
        h.target = p->second;
        h.link = nodes_[p->second].path;
        continue;
      }
      const Node& t = nodes_[h.target];
      std::string path = std::move(h.path);
      h = t;
      h.path = std::move(path);
      h.alive = true;
    }

    order_.reserve(live_.size());
    for (const auto& [path, index] : live_) order_.push_back(index);
    // By (parent, name): a directory's children are one run, found by binary search.
    std::sort(order_.begin(), order_.end(), [&](uint32_t a, uint32_t b) {
      std::string_view pa = nodes_[a].path;
      std::string_view pb = nodes_[b].path;
      int c = parent_of(pa).compare(parent_of(pb));
      return c != 0 ? c < 0 : name_of(pa) < name_of(pb);
    });
    if (order_.size() >= kNoEntry) return bad("too many entries");
    return {};
  }

  // --- writing ---

  Result<void> write_index(const fs::path& path) {
    std::vector<uint32_t> final_index(nodes_.size(), kNoEntry);
    for (size_t i = 0; i < order_.size(); ++i) final_index[order_[i]] = static_cast<uint32_t>(i);

    std::string strings;
    std::vector<uint8_t> xattrs;
    uint64_t xattr_count = 0;
    auto add_string = [&](std::string_view s) {
      uint64_t off = strings.size();
      strings.append(s);
      return off;
    };
    auto encode = [&](const Node& n, uint8_t* rec, uint32_t hardlink_target) {
      const Node& content = hardlink_target != kNoEntry ? nodes_[order_[hardlink_target]] : n;
      store_le<uint64_t>(rec + kRecPathOff, add_string(n.path));
      store_le<uint32_t>(rec + kRecPathLen, static_cast<uint32_t>(n.path.size()));
      size_t slash = n.path.rfind('/');
      store_le<uint32_t>(rec + kRecNameOff,
                         slash == std::string::npos ? 0 : static_cast<uint32_t>(slash + 1));
      store_le<uint64_t>(rec + kRecLinkOff, add_string(n.link));
      store_le<uint32_t>(rec + kRecLinkLen, static_cast<uint32_t>(n.link.size()));
      rec[kRecType] = static_cast<uint8_t>(n.type);
      rec[kRecFlags] = static_cast<uint8_t>((n.implicit ? kRecordFlagImplicit : 0) |
                                            (n.opaque ? kRecordFlagOpaque : 0));
      // A hardlink resolved in this layer is the same inode as its target: its metadata,
      // content and xattrs are the target's.
      store_le<uint32_t>(rec + kRecMode, content.mode);
      store_le<uint32_t>(rec + kRecUid, content.uid);
      store_le<uint32_t>(rec + kRecGid, content.gid);
      store_le<uint32_t>(rec + kRecMtimeNsec, content.mtime_nsec);
      store_le<int64_t>(rec + kRecMtimeSec, content.mtime_sec);
      store_le<uint64_t>(rec + kRecSize, content.size);
      store_le<uint64_t>(rec + kRecDataOff, content.data_offset);
      store_le<uint32_t>(rec + kRecRdevMajor, content.rdev_major);
      store_le<uint32_t>(rec + kRecRdevMinor, content.rdev_minor);
      store_le<uint32_t>(rec + kRecHardlink, hardlink_target);
      store_le<uint32_t>(rec + kRecXattrCount, static_cast<uint32_t>(content.xattrs.size()));
      store_le<uint64_t>(rec + kRecXattrFirst, xattr_count);
      for (const auto& [name, value] : content.xattrs) {
        size_t at = xattrs.size();
        xattrs.resize(at + kXattrRecordSize);
        uint8_t* x = xattrs.data() + at;
        store_le<uint64_t>(x + kXaNameOff, add_string(name));
        store_le<uint32_t>(x + kXaNameLen, static_cast<uint32_t>(name.size()));
        store_le<uint32_t>(x + kXaValueLen, static_cast<uint32_t>(value.size()));
        store_le<uint64_t>(x + kXaValueOff, add_string(value));
        ++xattr_count;
      }
    };

    std::vector<uint8_t> head(kEntriesOffset, 0);
    uint32_t flags = 0;
    if (root_ || root_opaque_) {
      Node root = root_ ? *root_ : Node{};
      if (!root_) {
        root.type = EntryType::directory;
        root.implicit = true;
        root.mode = 0755;
      }
      root.path.clear();
      root.opaque = root_opaque_;
      encode(root, head.data() + kRootOffset, kNoEntry);
      flags |= kHeaderFlagRoot;
    }
    std::vector<uint8_t> records(order_.size() * kRecordSize, 0);
    for (size_t i = 0; i < order_.size(); ++i) {
      const Node& n = nodes_[order_[i]];
      uint32_t target = kNoEntry;
      if (n.type == EntryType::hardlink && n.target >= 0) target = final_index[n.target];
      encode(n, records.data() + i * kRecordSize, target);
    }

    std::memcpy(head.data() + kHdrMagic, kMagic, sizeof kMagic);
    store_le<uint32_t>(head.data() + kHdrVersion, kVersion);
    store_le<uint32_t>(head.data() + kHdrFlags, flags);
    store_le<uint64_t>(head.data() + kHdrEntryCount, order_.size());
    store_le<uint64_t>(head.data() + kHdrXattrCount, xattr_count);
    store_le<uint64_t>(head.data() + kHdrStringsSize, strings.size());
    store_le<uint64_t>(head.data() + kHdrDataSize, data_->end());
    IMAGEFS_CHECK(store_diff_id(head.data() + kHdrDiffId, *diff_id_));
    head[kHdrCompression] = static_cast<uint8_t>(compression_);

    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444));
    if (!fd) return errno_error(errno, "cannot create", path);
    IMAGEFS_CHECK(check_free(fd.get(),
                             head.size() + records.size() + xattrs.size() + strings.size(),
                             limits_.disk_reserve, layer_.digest));
    for (std::span<const uint8_t> part :
         {std::span<const uint8_t>(head), std::span<const uint8_t>(records),
          std::span<const uint8_t>(xattrs),
          std::span(reinterpret_cast<const uint8_t*>(strings.data()), strings.size())}) {
      size_t done = 0;
      while (done < part.size()) {
        ssize_t w = ::write(fd.get(), part.data() + done, part.size() - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return errno_error(errno, "cannot write", path);
        done += static_cast<size_t>(w);
      }
    }
    if (::fsync(fd.get()) != 0) return errno_error(errno, "cannot fsync", path);
    return {};
  }

  const store::LayerRecord& layer_;
  const IngestProgress* progress_;
  const IngestLimits limits_;
  std::optional<store::Digest> diff_id_;  // of the uncompressed stream, once read whole
  Compression compression_ = Compression::none;
  uint64_t entries_ = 0;     // tar entries read
  uint64_t name_bytes_ = 0;  // their names, link targets and xattrs
  std::optional<DataWriter> data_;
  std::vector<Node> nodes_;
  // Live paths to their nodes. Ordered, so that a directory's descendants are one range.
  std::map<std::string, uint32_t, std::less<>> live_;
  std::set<std::string> whiteouts_;  // paths with a `.wh.` entry in this layer, followed
  std::set<std::string> opaques_;    // directories with a `.wh..wh..opq`, followed
  // Every path the layer had a symlink (or a hardlink to one) at, live or not: where
  // follow_symlinks() must look.
  std::set<std::string, std::less<>> symlinks_;
  std::vector<uint32_t> lower_links_;  // hardlinks whose target was not in the layer when read
  std::optional<Node> root_;
  bool root_opaque_ = false;
  uint64_t implicit_bytes_ = 0;  // the total length of the implicit directories' paths
  std::vector<uint32_t> order_;  // live nodes in index order
};

}  // namespace

Result<void> ingest_layer(const fs::path& blob, const store::LayerRecord& layer,
                          const fs::path& dir, const IngestProgress* progress,
                          const IngestLimits& limits, const store::BlobStore* store) {
  Ingest ingest(layer, progress, limits);
  return ingest.run(blob, dir, store);
}

}  // namespace imagefs::overlay::detail
