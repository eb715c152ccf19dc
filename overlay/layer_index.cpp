// The LayerIndex reader (a memory-mapped index file, validated whole when opened, and pread on the
// data file) and the LayerCache that ingests each layer once per store and shares open indexes.
#include "overlay/layer_index.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <utility>

#include "common/mutex.h"
#include "overlay/layer_format.h"
#include "store/derived.h"

namespace imagefs::overlay {

namespace fs = std::filesystem;
using detail::load_le;
using detail::UniqueFd;

namespace {

// A read-only mapping of a whole file; unmapped on destruction.
class Mapping {
 public:
  Mapping() = default;
  Mapping(const void* p, size_t n) : p_(p), n_(n) {}
  ~Mapping() {
    if (p_ != nullptr) ::munmap(const_cast<void*>(p_), n_);
  }
  Mapping(Mapping&& other) noexcept
      : p_(std::exchange(other.p_, nullptr)), n_(std::exchange(other.n_, 0)) {}
  Mapping& operator=(Mapping&&) = delete;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  [[nodiscard]] const uint8_t* data() const { return static_cast<const uint8_t*>(p_); }
  [[nodiscard]] size_t size() const { return n_; }

 private:
  const void* p_ = nullptr;
  size_t n_ = 0;
};

// a + b <= limit, without overflow.
bool fits(uint64_t a, uint64_t b, uint64_t limit) { return a <= limit && b <= limit - a; }

class MappedLayerIndex final : public LayerIndex {
 public:
  MappedLayerIndex(store::Digest digest, Mapping map, UniqueFd data)
      : digest_(std::move(digest)), map_(std::move(map)), data_(std::move(data)) {}

  // Checks the whole file; nothing is read from it unchecked afterwards.
  Result<void> validate(const fs::path& dir) {
    const uint8_t* p = map_.data();
    uint64_t size = map_.size();
    if (size < detail::kEntriesOffset || std::memcmp(p, detail::kMagic, sizeof detail::kMagic) != 0)
      return damaged(dir, "not a layer index (bad magic or too short)");
    uint32_t version = load_le<uint32_t>(p + detail::kHdrVersion);
    if (version > detail::kVersion)
      return make_error(ENOTSUP, "layer " + digest_.str() + ": its index " + dir.string() +
                                     " has format version " + std::to_string(version) +
                                     ", written by a newer imagefs");
    // Older versions are rebuilt (LayerCache rebuilds what is damaged): they lack the diff_id.
    if (version < detail::kVersion)
      return damaged(dir, "format version " + std::to_string(version) +
                              ", written by an older imagefs (this one writes " +
                              std::to_string(detail::kVersion) + ")");
    if (version != detail::kVersion)
      return damaged(dir, "unknown format version " + std::to_string(version));
    uint32_t flags = load_le<uint32_t>(p + detail::kHdrFlags);
    if ((flags & ~detail::kHeaderFlagRoot) != 0) return damaged(dir, "unknown header flags");
    uint64_t count = load_le<uint64_t>(p + detail::kHdrEntryCount);
    uint64_t xattr_count = load_le<uint64_t>(p + detail::kHdrXattrCount);
    uint64_t strings_size = load_le<uint64_t>(p + detail::kHdrStringsSize);
    data_size_ = load_le<uint64_t>(p + detail::kHdrDataSize);
    diff_id_ = detail::load_diff_id(p + detail::kHdrDiffId);
    if (p[detail::kHdrCompression] > 2) return damaged(dir, "unknown compression");
    // Section sizes, checked against the file size before any multiplication can overflow.
    uint64_t rest = size - detail::kEntriesOffset;
    if (count >= kNoEntry || count > rest / detail::kRecordSize)
      return damaged(dir, "entry count out of bounds");
    rest -= count * detail::kRecordSize;
    if (xattr_count > rest / detail::kXattrRecordSize)
      return damaged(dir, "xattr count out of bounds");
    rest -= xattr_count * detail::kXattrRecordSize;
    if (strings_size != rest) return damaged(dir, "file size does not match its sections");
    count_ = count;
    xattr_count_ = xattr_count;
    records_ = p + detail::kEntriesOffset;
    xattr_records_ = records_ + count * detail::kRecordSize;
    strings_ =
        reinterpret_cast<const char*>(xattr_records_ + xattr_count * detail::kXattrRecordSize);
    strings_size_ = strings_size;

    struct stat st {};
    if (::fstat(data_.get(), &st) != 0) return damaged(dir, "cannot stat the data file");
    if (static_cast<uint64_t>(st.st_size) != data_size_)
      return damaged(dir, "the data file has " + std::to_string(st.st_size) +
                              " bytes, the index says " + std::to_string(data_size_));

    has_root_ = (flags & detail::kHeaderFlagRoot) != 0;
    if (has_root_) {
      IMAGEFS_CHECK(check_record(dir, p + detail::kRootOffset, count_));
      if (load_le<uint32_t>(p + detail::kRootOffset + detail::kRecPathLen) != 0 ||
          p[detail::kRootOffset + detail::kRecType] != static_cast<uint8_t>(EntryType::directory))
        return damaged(dir, "bad root record");
    }
    for (uint64_t i = 0; i < count_; ++i) {
      IMAGEFS_CHECK(check_record(dir, record(i), i));
      // Strictly increasing by (parent, name): binary search depends on it, and it also means
      // paths are unique.
      if (i > 0 && !(key(i - 1) < key(i))) return damaged(dir, "entries out of order");
    }
    return {};
  }

  [[nodiscard]] const store::Digest& digest() const override { return digest_; }
  [[nodiscard]] std::optional<store::Digest> diff_id() const override { return diff_id_; }
  [[nodiscard]] size_t size() const override { return count_; }

  [[nodiscard]] LayerEntry entry(size_t index) const override {
    if (index >= count_) return {};  // a caller's bug; nothing sensible to return
    return decode(record(index));
  }

  [[nodiscard]] std::vector<Xattr> xattrs(size_t index) const override {
    if (index >= count_) return {};
    return decode_xattrs(record(index));
  }

  [[nodiscard]] std::optional<LayerEntry> root() const override {
    if (!has_root_) return std::nullopt;
    return decode(map_.data() + detail::kRootOffset);
  }

  [[nodiscard]] std::vector<Xattr> root_xattrs() const override {
    if (!has_root_) return {};
    return decode_xattrs(map_.data() + detail::kRootOffset);
  }

  [[nodiscard]] std::pair<size_t, size_t> children(std::string_view dir) const override {
    size_t first = partition([&](size_t i) { return key(i).first < dir; });
    size_t last = partition([&](size_t i) { return key(i).first <= dir; });
    return {first, last};
  }

  [[nodiscard]] std::optional<size_t> find(std::string_view path) const override {
    if (path.empty()) return std::nullopt;
    size_t slash = path.rfind('/');
    Key want = slash == std::string_view::npos ? Key{std::string_view(), path}
                                               : Key{path.substr(0, slash), path.substr(slash + 1)};
    size_t i = partition([&](size_t j) { return key(j) < want; });
    if (i < count_ && key(i) == want) return i;
    return std::nullopt;
  }

  Result<size_t> read(size_t index, uint64_t offset, std::span<uint8_t> out) const override {
    if (index >= count_)
      return make_error(EINVAL, "layer " + digest_.str() + ": no entry " + std::to_string(index));
    const uint8_t* r = record(index);
    auto type = static_cast<EntryType>(r[detail::kRecType]);
    bool has_content =
        type == EntryType::regular ||
        (type == EntryType::hardlink && load_le<uint32_t>(r + detail::kRecHardlink) != kNoEntry);
    if (!has_content)
      return make_error(EINVAL, "layer " + digest_.str() + ": '" + std::string(path_of(r)) +
                                    "' has no content to read");
    uint64_t size = load_le<uint64_t>(r + detail::kRecSize);
    uint64_t base = load_le<uint64_t>(r + detail::kRecDataOff);
    if (offset >= size) return size_t{0};
    size_t want = static_cast<size_t>(std::min<uint64_t>(out.size(), size - offset));
    size_t done = 0;
    while (done < want) {
      ssize_t n = ::pread(data_.get(), out.data() + done, want - done,
                          static_cast<off_t>(base + offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0)
        return make_error(EIO, "layer " + digest_.str() + ": cannot read the data of '" +
                                   std::string(path_of(r)) + "': " + detail::errno_text(errno));
      if (n == 0)
        return make_error(EIO, "layer " + digest_.str() + ": the data file is shorter than its " +
                                   "index says (reading '" + std::string(path_of(r)) + "')");
      done += static_cast<size_t>(n);
    }
    return done;
  }

  [[nodiscard]] int data_fd() const override { return data_.get(); }

 private:
  using Key = std::pair<std::string_view, std::string_view>;  // (parent, name)

  [[nodiscard]] const uint8_t* record(uint64_t i) const {
    return records_ + i * detail::kRecordSize;
  }

  [[nodiscard]] std::string_view str(uint64_t off, uint64_t len) const {
    return {strings_ + off, static_cast<size_t>(len)};
  }

  [[nodiscard]] std::string_view path_of(const uint8_t* r) const {
    return str(load_le<uint64_t>(r + detail::kRecPathOff),
               load_le<uint32_t>(r + detail::kRecPathLen));
  }

  [[nodiscard]] Key key(uint64_t i) const {
    const uint8_t* r = record(i);
    std::string_view path = path_of(r);
    uint32_t name_off = load_le<uint32_t>(r + detail::kRecNameOff);
    std::string_view parent = name_off == 0 ? std::string_view() : path.substr(0, name_off - 1);
    return {parent, path.substr(name_off)};
  }

  // The first index in [0, count) for which `below` is false (`below` true then false).
  template <typename Below>
  [[nodiscard]] size_t partition(Below below) const {
    size_t lo = 0;
    size_t hi = count_;
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (below(mid))
        lo = mid + 1;
      else
        hi = mid;
    }
    return lo;
  }

  Error damaged(const fs::path& dir, const std::string& what) const {
    return make_error(
        EIO, "layer " + digest_.str() + ": damaged index in " + dir.string() + ": " + what);
  }

  Result<void> check_record(const fs::path& dir, const uint8_t* r, uint64_t self) const {
    auto where = [&](const char* what) {
      return damaged(dir, std::string(what) + " in record " + std::to_string(self));
    };
    uint64_t path_off = load_le<uint64_t>(r + detail::kRecPathOff);
    uint32_t path_len = load_le<uint32_t>(r + detail::kRecPathLen);
    uint32_t name_off = load_le<uint32_t>(r + detail::kRecNameOff);
    if (!fits(path_off, path_len, strings_size_)) return where("path out of bounds");
    std::string_view path = str(path_off, path_len);
    bool is_root = self == count_;
    if (!is_root) {
      if (name_off >= path_len) return where("bad name offset");
      if (name_off > 0 && path[name_off - 1] != '/') return where("bad name offset");
      if (path.substr(name_off).find('/') != std::string_view::npos) return where("bad name");
    }
    if (!fits(load_le<uint64_t>(r + detail::kRecLinkOff),
              load_le<uint32_t>(r + detail::kRecLinkLen), strings_size_))
      return where("link out of bounds");
    uint8_t type = r[detail::kRecType];
    if (type > static_cast<uint8_t>(EntryType::whiteout)) return where("unknown type");
    if ((r[detail::kRecFlags] & ~(detail::kRecordFlagImplicit | detail::kRecordFlagOpaque)) != 0)
      return where("unknown flags");
    if (!fits(load_le<uint64_t>(r + detail::kRecDataOff), load_le<uint64_t>(r + detail::kRecSize),
              data_size_))
      return where("content out of the data file's bounds");
    uint32_t target = load_le<uint32_t>(r + detail::kRecHardlink);
    if (target != kNoEntry && (target >= count_ || target == self)) return where("bad hardlink");
    uint64_t first = load_le<uint64_t>(r + detail::kRecXattrFirst);
    uint32_t n = load_le<uint32_t>(r + detail::kRecXattrCount);
    if (!fits(first, n, xattr_count_)) return where("xattrs out of bounds");
    for (uint64_t x = first; x < first + n; ++x) {
      const uint8_t* xr = xattr_records_ + x * detail::kXattrRecordSize;
      if (!fits(load_le<uint64_t>(xr + detail::kXaNameOff),
                load_le<uint32_t>(xr + detail::kXaNameLen), strings_size_) ||
          !fits(load_le<uint64_t>(xr + detail::kXaValueOff),
                load_le<uint32_t>(xr + detail::kXaValueLen), strings_size_))
        return where("xattr out of bounds");
    }
    return {};
  }

  [[nodiscard]] LayerEntry decode(const uint8_t* r) const {
    LayerEntry e;
    e.path = path_of(r);
    e.type = static_cast<EntryType>(r[detail::kRecType]);
    e.implicit = (r[detail::kRecFlags] & detail::kRecordFlagImplicit) != 0;
    e.opaque = (r[detail::kRecFlags] & detail::kRecordFlagOpaque) != 0;
    e.mode = load_le<uint32_t>(r + detail::kRecMode);
    e.uid = load_le<uint32_t>(r + detail::kRecUid);
    e.gid = load_le<uint32_t>(r + detail::kRecGid);
    e.mtime_sec = load_le<int64_t>(r + detail::kRecMtimeSec);
    e.mtime_nsec = load_le<uint32_t>(r + detail::kRecMtimeNsec);
    e.size = load_le<uint64_t>(r + detail::kRecSize);
    e.data_offset = load_le<uint64_t>(r + detail::kRecDataOff);
    e.link =
        str(load_le<uint64_t>(r + detail::kRecLinkOff), load_le<uint32_t>(r + detail::kRecLinkLen));
    e.rdev_major = load_le<uint32_t>(r + detail::kRecRdevMajor);
    e.rdev_minor = load_le<uint32_t>(r + detail::kRecRdevMinor);
    e.hardlink_target = load_le<uint32_t>(r + detail::kRecHardlink);
    return e;
  }

  [[nodiscard]] std::vector<Xattr> decode_xattrs(const uint8_t* r) const {
    uint64_t first = load_le<uint64_t>(r + detail::kRecXattrFirst);
    uint32_t n = load_le<uint32_t>(r + detail::kRecXattrCount);
    std::vector<Xattr> out;
    out.reserve(n);
    for (uint64_t x = first; x < first + n; ++x) {
      const uint8_t* xr = xattr_records_ + x * detail::kXattrRecordSize;
      out.push_back(Xattr{str(load_le<uint64_t>(xr + detail::kXaNameOff),
                              load_le<uint32_t>(xr + detail::kXaNameLen)),
                          str(load_le<uint64_t>(xr + detail::kXaValueOff),
                              load_le<uint32_t>(xr + detail::kXaValueLen))});
    }
    return out;
  }

  store::Digest digest_;
  std::optional<store::Digest> diff_id_;
  Mapping map_;
  UniqueFd data_;
  const uint8_t* records_ = nullptr;
  const uint8_t* xattr_records_ = nullptr;
  const char* strings_ = nullptr;
  uint64_t count_ = 0;
  uint64_t xattr_count_ = 0;
  uint64_t strings_size_ = 0;
  uint64_t data_size_ = 0;
  bool has_root_ = false;
};

class FileLayerCache final : public LayerCache {
 public:
  FileLayerCache(std::shared_ptr<store::BlobStore> blobs, IngestLimits limits)
      : blobs_(std::move(blobs)), limits_(limits) {}

  Result<std::shared_ptr<const LayerIndex>> get(const store::LayerRecord& layer,
                                                const IngestProgress* progress) override {
    {
      MutexLock lock(mu_);
      auto it = open_.find(layer.digest);
      if (it != open_.end())
        if (auto index = it->second.lock()) return index;
    }
    // Outside the mutex: an ingest takes seconds, and other layers must not wait for it. Two
    // threads asking for the same new layer meet at the product's file lock instead.
    IMAGEFS_TRY(index, open_or_ingest(layer, progress));
    MutexLock lock(mu_);
    std::erase_if(open_, [](const auto& kv) { return kv.second.expired(); });
    auto& slot = open_[layer.digest];
    if (auto existing = slot.lock()) return existing;  // another thread opened it meanwhile
    slot = index;
    return index;
  }

 private:
  Result<std::shared_ptr<const LayerIndex>> open_or_ingest(const store::LayerRecord& layer,
                                                           const IngestProgress* progress) {
    fs::path product = store::derived_path(*blobs_, layer.digest, detail::kProductName);
    auto opened = detail::open_layer_index(product, layer.digest);
    if (opened.ok()) return opened;
    // A damaged index (EIO) is rebuilt: it is derived data, and the blob is the truth. An index
    // from a newer imagefs (ENOTSUP) is left alone for that imagefs.
    int code = opened.error().code;
    if (code != ENOENT && code != EIO) return opened;
    store::IfPresent if_present = code == EIO ? store::IfPresent::replace : store::IfPresent::keep;
    if (!blobs_->contains(layer.digest))
      return make_error(ENOENT, "layer " + layer.digest.str() + " is not in the store");
    IMAGEFS_TRY(
        build, store::DerivedBuild::begin(*blobs_, layer.digest, detail::kProductName, if_present));
    if (!build->done()) {
      Result<void> ingested = detail::ingest_layer(blobs_->path(layer.digest), layer, build->dir(),
                                                   progress, limits_, blobs_.get());
      if (!ingested.ok()) {
        build.reset();  // removes the half-built product and releases its lock
        if (ingested.error().code == EUCLEAN) remove_rotten(layer.digest);
        return ingested.error();
      }
      IMAGEFS_CHECK(build->commit());
    }
    return detail::open_layer_index(build->dir(), layer.digest);
  }

  // Nothing is served from a blob whose bytes do not match its digest: it leaves the store (with
  // anything derived from it), so that the next pull or open fetches it again. A failure to remove
  // it changes nothing for the caller, whose error stands either way.
  void remove_rotten(const store::Digest& blob) {
    (void)store::remove_derived(*blobs_, blob);
    (void)blobs_->remove(blob);
  }

  std::shared_ptr<store::BlobStore> blobs_;
  const IngestLimits limits_;
  Mutex mu_;
  // Weak: an index nobody uses is unmapped; opening it again costs one validation pass.
  std::map<store::Digest, std::weak_ptr<const LayerIndex>> open_ GUARDED_BY(mu_);
};

}  // namespace

namespace detail {

Result<std::shared_ptr<const LayerIndex>> open_layer_index(const fs::path& dir,
                                                           const store::Digest& layer) {
  fs::path index_path = dir / kIndexFile;
  UniqueFd fd(::open(index_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT)
      return make_error(ENOENT, "layer " + layer.str() + " has not been ingested");
    return errno_error(errno, "cannot open", index_path);
  }
  fs::path data_path = dir / kDataFile;
  UniqueFd data(::open(data_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!data) {
    int err = errno;
    return make_error(EIO, "layer " + layer.str() + ": damaged index in " + dir.string() +
                               ": cannot open its data file: " + detail::errno_text(err));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error(errno, "cannot stat", index_path);
  auto size = static_cast<size_t>(st.st_size);
  if (size < kEntriesOffset)
    return make_error(
        EIO, "layer " + layer.str() + ": damaged index in " + dir.string() + ": too short");
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (p == MAP_FAILED) return errno_error(errno, "cannot map", index_path);
  auto index = std::make_shared<MappedLayerIndex>(layer, Mapping(p, size), std::move(data));
  IMAGEFS_CHECK(index->validate(dir));
  return std::shared_ptr<const LayerIndex>(std::move(index));
}

}  // namespace detail

Result<std::shared_ptr<LayerCache>> LayerCache::create(std::shared_ptr<store::BlobStore> blobs,
                                                       IngestLimits limits) {
  if (!blobs) return make_error(EINVAL, "LayerCache needs a blob store");
  return std::shared_ptr<LayerCache>(std::make_shared<FileLayerCache>(std::move(blobs), limits));
}

}  // namespace imagefs::overlay
