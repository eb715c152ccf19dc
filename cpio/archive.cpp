// ArchiveMaker and Archive: options and host files, the plan cache (plan files: the whole
// archive's, and the image part's that a changed host file reuses), parallel building of missing
// segments, and reads served from segment files.
#include "cpio/archive.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
#include <utility>

#include "common/mutex.h"
#include "common/unique_fd.h"
#include "cpio/plan.h"
#include "cpio/plan_store.h"
#include "cpio/segment.h"
#include "init/default_init.h"
#include "init/image_config.h"
#include "init/init_config.h"

namespace imagefs::cpio {

namespace fs = std::filesystem;
using detail::errno_error;
using detail::HostFile;
using detail::ImagePartRecord;
using detail::PlanRecord;
using detail::SegmentRef;

namespace {

// Bumped whenever planning or cutting changes, so that an old plan is not used for new rules.
constexpr std::string_view kPlannerVersion = "planner 1";
// Segment files are marked used (their mtime set) at most this often; gc may take segments that
// no archive was made from for much longer (docs/STORE_FORMAT.md).
constexpr int64_t kTouchInterval = int64_t{24} * 60 * 60;
constexpr unsigned kMaxThreads = 8;

Result<int> level_of(const ArchiveOptions& options) {
  switch (options.format) {
    case Format::gzip:
      if (options.gzip_level < 1 || options.gzip_level > 12)
        return make_error(EINVAL, "gzip level " + std::to_string(options.gzip_level) +
                                      " is out of range: use 1 to 12");
      return options.gzip_level;
    case Format::zstd:
      if (options.zstd_level < 1 || options.zstd_level > ZSTD_maxCLevel())
        return make_error(EINVAL, "zstd level " + std::to_string(options.zstd_level) +
                                      " is out of range: use 1 to " +
                                      std::to_string(ZSTD_maxCLevel()));
      return options.zstd_level;
    case Format::none:
      return 0;
  }
  return 0;
}

Result<struct stat> stat_host(const fs::path& host, std::string_view what) {
  struct stat st {};
  if (::stat(host.c_str(), &st) != 0)
    return errno_error(errno, "cannot find " + std::string(what), host);
  if (!S_ISREG(st.st_mode))
    return make_error(ENOENT, std::string(what) + " " + host.string() + " is not a regular file");
  return st;
}

// EINVAL for an `exec` the default /init cannot use.
Result<void> check_exec(const ArchiveOptions& options) {
  if (!options.exec) return {};
  if (options.init)
    return make_error(EINVAL,
                      "--exec replaces the image's command for imagefs' default /init: it cannot "
                      "be used with --init");
  if (options.exec->empty() || options.exec->front().empty())
    return make_error(EINVAL, "--exec names no program");
  return {};
}

// The default /init as a host file: the same bytes, mtime and so segment in every archive.
const std::shared_ptr<const HostFile>& default_init_file() {
  static const std::shared_ptr<const HostFile> file = [] {
    const std::span<const uint8_t> binary = init::default_init_binary();
    std::string bytes(reinterpret_cast<const char*>(binary.data()), binary.size());
    store::Digest digest = store::Digest::of(bytes);
    return std::make_shared<const HostFile>(HostFile{"/init", std::move(bytes), std::move(digest)});
  }();
  return file;
}

struct HostFileOption {
  fs::path host;
  std::string guest;
  std::string_view what;  // for messages
};

// The host files of `options` in order: the init file first, if any, then the injected ones.
std::vector<HostFileOption> host_files(const ArchiveOptions& options) {
  std::vector<HostFileOption> out;
  if (options.init) out.push_back({*options.init, "/init", "init file"});
  for (const Inject& inject : options.injects)
    out.push_back({inject.host, inject.guest, "injected file"});
  return out;
}

// The catalog key of a plan: it begins with the image's digest (gc erases it with the image), then
// the format, then a hash of everything else the archive depends on. Host files are identified by
// what stat says (a changed file changes its size, mtime or ctime), so a cached plan is found
// without reading them.
std::string plan_key(const store::Digest& image, const ArchiveOptions& options, int level,
                     const std::vector<struct stat>& stats) {
  std::string text(kPlannerVersion);
  text += '\n';
  text += std::to_string(level) + '\n';
  if (options.init) {
    text += "init\n";
  } else {
    // The default /init: its program (another imagefs may embed another) and the command
    // override. "config 1" names how config.json is read into /.imagefs/init.conf: change it
    // when that changes.
    text += "default init " + std::string(default_init_file()->digest.hex()) + " config 1\n";
    if (options.exec) {
      text += "exec";
      for (const std::string& arg : *options.exec) {
        text += '\0';
        text += arg;
      }
      text += '\n';
    }
  }
  const auto files = host_files(options);
  for (size_t i = 0; i < files.size(); ++i) {
    const struct stat& st = stats[i];
    text += files[i].host.string() + '\0' + files[i].guest + '\0' + std::to_string(st.st_size) +
            ' ' + std::to_string(st.st_mtim.tv_sec) + '.' + std::to_string(st.st_mtim.tv_nsec) +
            ' ' + std::to_string(st.st_ctim.tv_sec) + '.' + std::to_string(st.st_ctim.tv_nsec) +
            ' ' + std::to_string(st.st_ino) + ' ' + std::to_string(st.st_dev) + '\n';
  }
  return image.str() + "/" + std::string(detail::format_dir(options.format)) + "/" +
         std::string(store::Digest::of(text).hex());
}

// The key of the image part of a plan (cpio/plan.h): what it depends on, which excludes the host
// files' identity and bytes, so that a changed agent finds it.
std::string image_part_key(const store::Digest& image, const ArchiveOptions& options, int level) {
  std::string text(kPlannerVersion);
  text += '\n';
  text += std::to_string(level) + '\n';
  for (const HostFileOption& file : host_files(options)) text += file.guest + '\n';
  // The default /init's config file is a tail entry too: the image part records what the image
  // has at its parent.
  if (!options.init) text += std::string(init::kConfigPath) + '\n';
  return image.str() + "/" + std::string(detail::format_dir(options.format)) + "/image/" +
         std::string(store::Digest::of(text).hex());
}

int64_t now_seconds() { return static_cast<int64_t>(::time(nullptr)); }

// Marks a segment file as used (for gc), at most once per kTouchInterval.
void touch_if_stale(const fs::path& path, const struct stat& st, int64_t now) {
  if (st.st_mtim.tv_sec + kTouchInterval < now)
    (void)::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);
}

// The archive from `offset` on, written to `fd` through a buffer.
Result<void> copy_through_read(const Archive& archive, uint64_t offset, int fd,
                               const fs::path& name) {
  std::vector<uint8_t> buffer(size_t{1} << 20);
  for (uint64_t at = offset; at < archive.size();) {
    IMAGEFS_TRY(n, archive.read(at, buffer));
    if (n == 0) return make_error(EIO, "the archive ended early at byte " + std::to_string(at));
    for (size_t done = 0; done < n;) {
      ssize_t w = ::write(fd, buffer.data() + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return errno_error(errno, "cannot write", name);
      done += static_cast<size_t>(w);
    }
    at += n;
  }
  return {};
}

class ArchiveImpl final : public Archive {
 public:
  ArchiveImpl(std::vector<fs::path> paths, const std::vector<SegmentRef>& refs, ArchiveStats stats)
      : paths_(std::move(paths)), stats_(stats) {
    starts_.reserve(refs.size());
    for (const SegmentRef& r : refs) {
      starts_.push_back(size_);
      sizes_.push_back(r.compressed);
      size_ += r.compressed;
    }
  }

  [[nodiscard]] uint64_t size() const override { return size_; }
  [[nodiscard]] const ArchiveStats& stats() const override { return stats_; }

  Result<size_t> read(uint64_t offset, std::span<uint8_t> out) const override {
    if (offset >= size_ || out.empty()) return size_t{0};
    size_t i = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), offset) -
                                   starts_.begin()) -
               1;
    size_t filled = 0;
    while (filled < out.size() && i < starts_.size()) {
      const uint64_t within = offset + filled - starts_[i];
      const size_t want =
          static_cast<size_t>(std::min<uint64_t>(out.size() - filled, sizes_[i] - within));
      if (want > 0) {
        IMAGEFS_TRY(fd, fd_for(i));
        size_t got = 0;
        while (got < want) {
          ssize_t n = ::pread(fd->get(), out.data() + filled + got, want - got,
                              static_cast<off_t>(within + got));
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) return errno_error(errno, "cannot read archive segment", paths_[i]);
          if (n == 0)
            return make_error(EIO, "archive segment " + paths_[i].string() +
                                       " is damaged: shorter than its plan says");
          got += static_cast<size_t>(n);
        }
        filled += want;
      }
      ++i;
    }
    return filled;
  }

  Result<void> write_to(int fd, const fs::path& name) const override {
    for (size_t i = 0; i < paths_.size(); ++i) {
      if (sizes_[i] == 0) continue;
      IMAGEFS_TRY(in, fd_for(i));
      loff_t at = 0;
      while (static_cast<uint64_t>(at) < sizes_[i]) {
        ssize_t n =
            ::copy_file_range(in->get(), &at, fd, nullptr,
                              static_cast<size_t>(sizes_[i] - static_cast<uint64_t>(at)), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
                      errno == EBADF)) {
          // Not between these files (another file system, a pipe): the rest through read(), from
          // the first byte this segment did not copy (the output's offset has moved that far).
          return copy_through_read(*this, starts_[i] + static_cast<uint64_t>(at), fd, name);
        }
        if (n < 0) return errno_error(errno, "cannot write", name);
        if (n == 0)
          return make_error(EIO, "archive segment " + paths_[i].string() +
                                     " is damaged: shorter than its plan says");
      }
    }
    return {};
  }

 private:
  // Segment files are opened on demand: an image has hundreds or thousands of segments and a
  // daemon serves many archives, too many to hold open. The last one used stays open, since
  // consecutive reads mostly fall in one segment.
  Result<std::shared_ptr<UniqueFd>> fd_for(size_t i) const {
    {
      MutexLock lock(mu_);
      if (open_index_ == i && open_fd_) return open_fd_;
    }
    auto fd = std::make_shared<UniqueFd>(::open(paths_[i].c_str(), O_RDONLY | O_CLOEXEC));
    if (fd->get() < 0) {
      Error e = errno_error(errno, "cannot open archive segment", paths_[i]);
      if (e.code == ENOENT) e.code = EIO;  // removed under us: the archive is damaged
      return e;
    }
    MutexLock lock(mu_);
    open_index_ = i;
    open_fd_ = fd;
    return fd;
  }

  std::vector<fs::path> paths_;
  std::vector<uint64_t> starts_;
  std::vector<uint64_t> sizes_;
  uint64_t size_ = 0;
  ArchiveStats stats_;
  mutable Mutex mu_;
  mutable size_t open_index_ GUARDED_BY(mu_) = SIZE_MAX;
  mutable std::shared_ptr<UniqueFd> open_fd_ GUARDED_BY(mu_);
};

class ArchiveMakerImpl final : public ArchiveMaker {
 public:
  ArchiveMakerImpl(std::shared_ptr<store::BlobStore> blobs, std::shared_ptr<store::Catalog> catalog)
      : blobs_(std::move(blobs)), catalog_(std::move(catalog)) {}

  Result<std::shared_ptr<const Archive>> cached(const store::Digest& image,
                                                const ArchiveOptions& options) override {
    IMAGEFS_TRY(level, level_of(options));
    IMAGEFS_CHECK(check_exec(options));
    std::vector<struct stat> stats;
    for (const HostFileOption& file : host_files(options)) {
      IMAGEFS_TRY(st, stat_host(file.host, file.what));
      stats.push_back(st);
    }
    return load(plan_key(image, options, level, stats), options.format);
  }

  Result<std::shared_ptr<const Archive>> make(const store::Digest& image, overlay::Tree& tree,
                                              const ArchiveOptions& options,
                                              const BuildProgress* progress) override {
    // The caller's tree, not owned: it outlives this call.
    auto open_tree = [&tree]() -> Result<std::shared_ptr<overlay::Tree>> {
      return std::shared_ptr<overlay::Tree>(std::shared_ptr<overlay::Tree>(), &tree);
    };
    return make(image, TreeOpener(open_tree), options, progress);
  }

  Result<std::shared_ptr<const Archive>> make(const store::Digest& image,
                                              const TreeOpener& open_tree,
                                              const ArchiveOptions& options,
                                              const BuildProgress* progress) override {
    IMAGEFS_TRY(hit, cached(image, options));
    if (hit) return hit;
    IMAGEFS_TRY(level, level_of(options));

    // Host files are read once, here: what is hashed into segment keys is what gets compressed.
    detail::PlanInputs inputs;
    inputs.format = options.format;
    inputs.level = level;
    std::vector<struct stat> stats;
    const auto files = host_files(options);
    for (size_t i = 0; i < files.size(); ++i) {
      struct stat st {};
      IMAGEFS_TRY(file, read_host(files[i], &st));
      stats.push_back(st);
      if (i == 0 && options.init) {
        inputs.init = std::move(file);
      } else {
        inputs.injects.push_back(std::move(file));
      }
    }
    if (!options.init) {
      IMAGEFS_TRY(config, default_init_config(image, options));
      inputs.init = default_init_file();
      inputs.injects.insert(inputs.injects.begin(), std::move(config));
    }
    const std::string key = plan_key(image, options, level, stats);
    const std::string part_key = image_part_key(image, options, level);

    // The image's own part: cached (every segment in place), or planned now from the tree.
    IMAGEFS_TRY(part, load_image_part(part_key, options.format));
    std::vector<detail::SegmentSpec> specs;  // segments planned by this call, in archive order
    const bool part_planned = !part.has_value();
    if (part_planned) {
      IMAGEFS_TRY(tree, open_tree());
      if (!tree) return make_error(EINVAL, "no tree to plan the archive of " + image.str());
      IMAGEFS_TRY(planned, detail::plan_image(*tree, inputs));
      part = ImagePartRecord{{}, planned.raw_size, std::move(planned.paths)};
      specs = std::move(planned.segments);
    }
    const size_t part_specs = specs.size();
    IMAGEFS_TRY(tail, detail::plan_tail(part->paths, inputs));
    for (detail::SegmentSpec& s : tail.segments) specs.push_back(std::move(s));
    IMAGEFS_TRY(built, build_missing(specs, options.format, level, progress));

    std::vector<SegmentRef> planned_refs;
    const int64_t now = now_seconds();
    for (const detail::SegmentSpec& s : specs) {
      const fs::path path = detail::segment_path(blobs_->root(), options.format, s.key);
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0) {
        // gc took a segment that was there when this call looked (it had not been used for days):
        // build it again.
        IMAGEFS_TRY(again, detail::build_segment(blobs_->root(), options.format, level, s));
        if (again == detail::Built::now) ++built;
        if (::stat(path.c_str(), &st) != 0) return errno_error(errno, "cannot stat", path);
      }
      touch_if_stale(path, st, now);
      planned_refs.push_back(SegmentRef{s.key, static_cast<uint64_t>(st.st_size), s.raw_size});
    }
    if (part_planned) {
      part->segments.assign(planned_refs.begin(),
                            planned_refs.begin() + static_cast<std::ptrdiff_t>(part_specs));
      IMAGEFS_CHECK(detail::write_image_part(blobs_->root(), part_key, *part));
      planned_refs.erase(planned_refs.begin(),
                         planned_refs.begin() + static_cast<std::ptrdiff_t>(part_specs));
    }
    PlanRecord record;
    record.segments = std::move(part->segments);
    for (SegmentRef& ref : planned_refs) record.segments.push_back(std::move(ref));
    record.raw_size = part->raw_size + tail.raw_size;
    record.has_init = tail.has_init;
    IMAGEFS_CHECK(detail::write_plan(blobs_->root(), key, record));

    ArchiveStats archive_stats;
    archive_stats.segments = record.segments.size();
    archive_stats.segments_built = built;
    archive_stats.segments_reused = record.segments.size() - built;
    archive_stats.raw_bytes = record.raw_size;
    archive_stats.has_init = record.has_init;
    return archive_of(record.segments, options.format, archive_stats);
  }

 private:
  std::shared_ptr<const Archive> archive_of(const std::vector<SegmentRef>& segments, Format format,
                                            ArchiveStats stats) const {
    std::vector<fs::path> paths;
    paths.reserve(segments.size());
    for (const SegmentRef& s : segments)
      paths.push_back(detail::segment_path(blobs_->root(), format, s.key));
    return std::make_shared<ArchiveImpl>(std::move(paths), segments, stats);
  }

  // Whether every segment is there with the size the plan recorded (one that gc removed, or that
  // a different library version rebuilt, means planning again); marks them used.
  bool segments_in_place(const std::vector<SegmentRef>& segments, Format format) const {
    const int64_t now = now_seconds();
    for (const SegmentRef& s : segments) {
      const fs::path path = detail::segment_path(blobs_->root(), format, s.key);
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) != s.compressed)
        return false;
      touch_if_stale(path, st, now);
    }
    return true;
  }

  // The cached plan's archive, if every segment is in place; nullptr otherwise.
  Result<std::shared_ptr<const Archive>> load(const std::string& key, Format format) {
    IMAGEFS_TRY(plan, detail::read_plan(blobs_->root(), key));
    if (!plan || !segments_in_place(plan->segments, format))
      return std::shared_ptr<const Archive>();
    ArchiveStats stats;
    stats.segments = plan->segments.size();
    stats.segments_reused = stats.segments;
    stats.raw_bytes = plan->raw_size;
    stats.has_init = plan->has_init;
    return archive_of(plan->segments, format, stats);
  }

  // The cached image part, if every segment is in place; nullopt otherwise.
  Result<std::optional<ImagePartRecord>> load_image_part(const std::string& key, Format format) {
    IMAGEFS_TRY(part, detail::read_image_part(blobs_->root(), key));
    if (part && !segments_in_place(part->segments, format)) part.reset();
    return part;
  }

  // /.imagefs/init.conf for the default /init: the image's config (through the catalog's record
  // of `image`) and the exec override, as init/init_config.h encodes them.
  Result<std::shared_ptr<const HostFile>> default_init_config(const store::Digest& image,
                                                              const ArchiveOptions& options) {
    if (!catalog_)
      return make_error(EINVAL, "the default /init needs the catalog, for the image's config");
    IMAGEFS_TRY(record, catalog_->image(image));
    if (!record)
      return make_error(ENOENT, "image " + image.str() +
                                    " is not in the store's catalog: the default /init needs "
                                    "its config");
    IMAGEFS_TRY(json, blobs_->read(record->config));
    Result<init::InitConfig> config = init::init_config_from_image(json);
    if (!config.ok()) return config.error().context("image " + image.str());
    config->exec = options.exec;
    std::string bytes = init::encode_config(*config);
    store::Digest digest = store::Digest::of(bytes);
    return std::make_shared<const HostFile>(
        HostFile{std::string(init::kConfigPath), std::move(bytes), std::move(digest), 0, 0644});
  }

  static Result<std::shared_ptr<const HostFile>> read_host(const HostFileOption& option,
                                                           struct stat* st) {
    const fs::path& host = option.host;
    const std::string what(option.what);
    UniqueFd fd(::open(host.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return errno_error(errno, "cannot open " + what, host);
    if (::fstat(fd.get(), st) != 0) return errno_error(errno, "cannot stat", host);
    if (!S_ISREG(st->st_mode))
      return make_error(ENOENT, what + " " + host.string() + " is not a regular file");
    // Read straight into place (the file's size as stat says; it may still grow or shrink).
    std::string bytes(static_cast<size_t>(st->st_size) + 1, '\0');
    size_t got = 0;
    while (true) {
      if (got == bytes.size()) bytes.resize(bytes.size() * 2);
      ssize_t n = ::read(fd.get(), bytes.data() + got, bytes.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno_error(errno, "cannot read " + what, host);
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    bytes.resize(got);
    store::Digest digest = store::Digest::of(bytes);
    return std::make_shared<const HostFile>(
        HostFile{option.guest, std::move(bytes), std::move(digest), st->st_mtim.tv_sec});
  }

  // Builds the plan's segments that are not in the store, on a few threads; returns how many this
  // call compressed (a segment another process finished first counts as reused).
  Result<size_t> build_missing(const std::vector<detail::SegmentSpec>& segments, Format format,
                               int level, const BuildProgress* progress) {
    std::vector<const detail::SegmentSpec*> missing;
    std::set<std::string_view> seen;
    for (const detail::SegmentSpec& s : segments) {
      if (!seen.insert(s.key).second) continue;
      struct stat st {};
      if (::stat(detail::segment_path(blobs_->root(), format, s.key).c_str(), &st) != 0)
        missing.push_back(&s);
    }
    if (missing.empty()) return size_t{0};
    // Largest first, so that a big file does not start last and hold everything up.
    std::stable_sort(missing.begin(), missing.end(),
                     [](const auto* a, const auto* b) { return a->raw_size > b->raw_size; });

    struct Shared {
      Mutex mu;
      size_t done GUARDED_BY(mu) = 0;
      size_t built GUARDED_BY(mu) = 0;
      uint64_t raw_done GUARDED_BY(mu) = 0;
      std::optional<Error> error GUARDED_BY(mu);
    } shared;
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    const fs::path root = blobs_->root();
    auto work = [&] {
      while (!failed.load()) {
        const size_t i = next.fetch_add(1);
        if (i >= missing.size()) return;
        Result<detail::Built> r = detail::build_segment(root, format, level, *missing[i]);
        MutexLock lock(shared.mu);
        if (!r.ok()) {
          if (!shared.error) shared.error = r.error();
          failed.store(true);
          return;
        }
        if (*r == detail::Built::now) ++shared.built;
        ++shared.done;
        shared.raw_done += missing[i]->raw_size;
        if (progress != nullptr && progress->update)
          progress->update(shared.done, missing.size(), shared.raw_done);
      }
    };
    const unsigned threads =
        std::min<unsigned>({std::max(1u, std::thread::hardware_concurrency()), kMaxThreads,
                            static_cast<unsigned>(missing.size())});
    std::vector<std::thread> pool;
    for (unsigned t = 1; t < threads; ++t) {
      try {
        pool.emplace_back(work);
      } catch (const std::system_error&) {
        break;  // fewer threads, same result
      }
    }
    work();
    for (std::thread& t : pool) t.join();
    MutexLock lock(shared.mu);
    if (shared.error) return *shared.error;
    return shared.built;
  }

  std::shared_ptr<store::BlobStore> blobs_;
  std::shared_ptr<store::Catalog> catalog_;  // for the image's config (the default /init)
};

// "/a//b/./c/" -> "/a/b/c"; nullopt for a ".." component.
std::optional<std::string> clean_guest(std::string_view guest) {
  std::string out;
  size_t i = 0;
  while (i < guest.size()) {
    size_t end = guest.find('/', i);
    if (end == std::string_view::npos) end = guest.size();
    std::string_view part = guest.substr(i, end - i);
    i = end + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return std::nullopt;
    out += '/';
    out += part;
  }
  return out;
}

}  // namespace

Result<void> Archive::write_to(int fd, const fs::path& name) const {
  return copy_through_read(*this, 0, fd, name);
}

Result<Format> parse_format(std::string_view text) {
  if (text == "gz" || text == "gzip") return Format::gzip;
  if (text == "zst" || text == "zstd") return Format::zstd;
  if (text == "none" || text == "cpio") return Format::none;
  return make_error(EINVAL, "unknown archive format \"" + std::string(text) +
                                "\": use gz (gzip), zst (zstd) or none (cpio)");
}

std::string_view file_name(Format format) {
  switch (format) {
    case Format::gzip:
      return "initramfs.cpio.gz";
    case Format::zstd:
      return "initramfs.cpio.zst";
    case Format::none:
      return "initramfs.cpio";
  }
  return "initramfs.cpio";
}

Result<Inject> parse_inject(std::string_view spec) {
  // Split at the first ':' as docker's -v does: host paths with ':' are rarer than guest ones.
  const size_t colon = spec.find(':');
  if (colon == std::string_view::npos || colon == 0)
    return make_error(EINVAL, "--inject " + std::string(spec) + ": expected HOST:GUEST");
  const std::string_view host = spec.substr(0, colon);
  const std::string_view guest = spec.substr(colon + 1);
  if (!guest.starts_with('/') || guest.find('\0') != std::string_view::npos)
    return make_error(EINVAL, "--inject " + std::string(spec) + ": the guest path " +
                                  std::string(guest) + " is not absolute");
  std::optional<std::string> clean = clean_guest(guest);
  if (!clean)
    return make_error(EINVAL, "--inject " + std::string(spec) + ": the guest path " +
                                  std::string(guest) + " has a \"..\" component");
  if (clean->empty())
    return make_error(EINVAL, "--inject " + std::string(spec) + ": the guest path is the root");
  IMAGEFS_TRY(st, stat_host(fs::path(host), "injected file"));
  (void)st;
  return Inject{fs::path(host), std::move(*clean)};
}

Result<SegmentGcReport> remove_unused_segments(const fs::path& store_root, int64_t unused_since) {
  SegmentGcReport report;
  // What a leased image's plans name stays, however long ago it was marked used: a mount keeps
  // serving an archive it made days ago without asking the maker again.
  IMAGEFS_TRY(keep, detail::plans_in_use(store_root));
  for (Format format : {Format::gzip, Format::zstd, Format::none}) {
    const fs::path dir = detail::segment_path(store_root, format, "").parent_path();
    std::error_code ec;
    fs::directory_iterator it(dir, ec);
    if (ec) {
      if (ec.value() == ENOENT) continue;
      return errno_error(ec.value(), "cannot list", dir);
    }
    for (const fs::directory_entry& entry : it) {
      const std::string name = entry.path().filename().string();
      const bool tmp = name.ends_with(".tmp");
      const std::string key = tmp ? name.substr(0, name.size() - 4) : name;
      if (key.size() != 64 || key.find_first_not_of("0123456789abcdef") != std::string::npos)
        continue;  // not ours
      struct stat st {};
      if (::lstat(entry.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      if (tmp) {
        // A builder holds its temporary file locked; one nobody holds was left by a crash. A
        // builder that opened it just before the unlink finds the name gone and starts over.
        UniqueFd fd(::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC));
        if (fd.get() < 0 || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;
      } else if (st.st_mtim.tv_sec >= unused_since || keep.segments.contains(key)) {
        continue;
      }
      if (::unlink(entry.path().c_str()) != 0) {
        if (errno == ENOENT) continue;
        return errno_error(errno, "cannot remove", entry.path());
      }
      ++report.removed;
      report.bytes_freed += static_cast<uint64_t>(st.st_size);
    }
  }
  IMAGEFS_TRY(plans, detail::remove_unused_plans(store_root, unused_since, keep));
  report.plans_removed = plans.removed;
  report.bytes_freed += plans.bytes_freed;
  return report;
}

// The catalog is not used (plans are files now); the parameter stays so that callers need not
// change.
Result<std::shared_ptr<ArchiveMaker>> ArchiveMaker::create(
    std::shared_ptr<store::BlobStore> blobs, std::shared_ptr<store::Catalog> catalog) {
  if (!blobs) return make_error(EINVAL, "ArchiveMaker needs a blob store");
  return std::shared_ptr<ArchiveMaker>(
      std::make_shared<ArchiveMakerImpl>(std::move(blobs), std::move(catalog)));
}

}  // namespace imagefs::cpio
