// ArchiveMaker: the plan cache (plan files: the whole archive's, and the image part's that a
// changed host file reuses), host files read once, parallel building of missing segments, and the
// default /init's config.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
#include <utility>

#include "common/errno_error.h"
#include "common/mutex.h"
#include "common/unique_fd.h"
#include "cpio/archive.h"
#include "cpio/inputs.h"
#include "cpio/plan.h"
#include "cpio/plan_key.h"
#include "cpio/plan_store.h"
#include "cpio/reader.h"
#include "cpio/segment.h"
#include "init/image_config.h"
#include "init/init_config.h"
#include "store/derived.h"

namespace imagefs::cpio {

namespace fs = std::filesystem;
using detail::check_exec;
using detail::default_init_file;
using detail::host_files;
using detail::HostFile;
using detail::HostFileOption;
using detail::image_part_key;
using detail::ImagePartRecord;
using detail::level_of;
using detail::plan_key;
using detail::PlanRecord;
using detail::SegmentRef;
using detail::stat_host;

namespace {

constexpr unsigned kMaxThreads = 8;

int64_t now_seconds() { return static_cast<int64_t>(::time(nullptr)); }

class ArchiveMakerImpl final : public ArchiveMaker {
 public:
  explicit ArchiveMakerImpl(std::shared_ptr<store::BlobStore> blobs) : blobs_(std::move(blobs)) {}

  Result<std::shared_ptr<const Archive>> cached(const store::Digest& manifest,
                                                const ArchiveOptions& options) override {
    IMAGEFS_TRY(level, level_of(options));
    IMAGEFS_CHECK(check_exec(options));
    std::vector<struct stat> stats;
    for (const HostFileOption& file : host_files(options)) {
      IMAGEFS_TRY(st, stat_host(file.host, file.what));
      stats.push_back(st);
    }
    return load(plan_key(manifest, options, level, stats), options.format);
  }

  Result<std::shared_ptr<const Archive>> make(const ImageSource& image, overlay::Tree& tree,
                                              const ArchiveOptions& options,
                                              const BuildProgress* progress) override {
    // The caller's tree, not owned: it outlives this call.
    auto open_tree = [&tree]() -> Result<std::shared_ptr<overlay::Tree>> {
      return std::shared_ptr<overlay::Tree>(std::shared_ptr<overlay::Tree>(), &tree);
    };
    return make(image, TreeOpener(open_tree), options, progress);
  }

  Result<std::shared_ptr<const Archive>> make(const ImageSource& source,
                                              const TreeOpener& open_tree,
                                              const ArchiveOptions& options,
                                              const BuildProgress* progress) override {
    const store::Digest& image = source.manifest;
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
      IMAGEFS_TRY(config, default_init_config(source, options));
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
      store::mark_used(path, st, now);  // for gc's order of last use
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
    IMAGEFS_CHECK(detail::write_plan(blobs_->root(), key, record));

    ArchiveStats archive_stats;
    archive_stats.segments = record.segments.size();
    archive_stats.segments_built = built;
    archive_stats.segments_reused = record.segments.size() - built;
    archive_stats.raw_bytes = record.raw_size;
    return archive_of(record.segments, options.format, archive_stats);
  }

 private:
  std::shared_ptr<const Archive> archive_of(const std::vector<SegmentRef>& segments, Format format,
                                            ArchiveStats stats) const {
    std::vector<fs::path> paths;
    paths.reserve(segments.size());
    for (const SegmentRef& s : segments)
      paths.push_back(detail::segment_path(blobs_->root(), format, s.key));
    return detail::open_archive(std::move(paths), segments, stats);
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
      store::mark_used(path, st, now);  // for gc's order of last use
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
    return archive_of(plan->segments, format, stats);
  }

  // The cached image part, if every segment is in place; nullopt otherwise.
  Result<std::optional<ImagePartRecord>> load_image_part(const std::string& key, Format format) {
    IMAGEFS_TRY(part, detail::read_image_part(blobs_->root(), key));
    if (part && !segments_in_place(part->segments, format)) part.reset();
    return part;
  }

  // /.imagefs/init.conf for the default /init: the image's config and the exec override, as
  // init/init_config.h encodes them.
  static Result<std::shared_ptr<const HostFile>> default_init_config(
      const ImageSource& image, const ArchiveOptions& options) {
    Result<init::InitConfig> config = init::init_config_from_image(image.config_json, options.exec);
    if (!config.ok()) return config.error().context("image " + image.manifest.str());
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
    // No exception leaves a worker (it would end the process): it becomes the build's Error.
    auto build_one = [&](size_t i) -> Result<detail::Built> {
      try {
        return detail::build_segment(root, format, level, *missing[i]);
      } catch (const std::exception& e) {
        return make_error(EIO, std::string("compressing a segment failed: ") + e.what());
      } catch (...) {
        return make_error(EIO, "compressing a segment failed (an unknown exception)");
      }
    };
    auto work = [&] {
      while (!failed.load()) {
        const size_t i = next.fetch_add(1);
        if (i >= missing.size()) return;
        Result<detail::Built> r = build_one(i);
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
};

}  // namespace

Result<std::shared_ptr<ArchiveMaker>> ArchiveMaker::create(
    std::shared_ptr<store::BlobStore> blobs) {
  if (!blobs) return make_error(EINVAL, "ArchiveMaker needs a blob store");
  return std::shared_ptr<ArchiveMaker>(std::make_shared<ArchiveMakerImpl>(std::move(blobs)));
}

}  // namespace imagefs::cpio
