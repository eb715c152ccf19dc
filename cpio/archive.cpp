// ArchiveMaker and Archive: options and host files, the plan cache (catalog table
// "archive_plans"), parallel building of missing segments, and reads served from segment files.
#include "cpio/archive.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
#include <utility>

#include "common/mutex.h"
#include "common/unique_fd.h"
#include "cpio/plan.h"
#include "cpio/segment.h"
#include "init/default_init.h"
#include "init/image_config.h"
#include "init/init_config.h"

namespace imagefs::cpio {

namespace fs = std::filesystem;
using detail::errno_error;
using detail::HostFile;

namespace {

constexpr std::string_view kPlanTable = "archive_plans";
constexpr int kPlanVersion = 1;
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

struct SegmentRef {
  std::string key;
  uint64_t compressed = 0;
  uint64_t raw = 0;
};

struct PlanRecord {
  std::vector<SegmentRef> segments;
  uint64_t raw_size = 0;
  bool has_init = false;
};

std::string encode_plan(const PlanRecord& plan) {
  nlohmann::json segments = nlohmann::json::array();
  for (const SegmentRef& s : plan.segments)
    segments.push_back(nlohmann::json::array({s.key, s.compressed, s.raw}));
  nlohmann::json j = {{"v", kPlanVersion},
                      {"raw_size", plan.raw_size},
                      {"has_init", plan.has_init},
                      {"segments", std::move(segments)}};
  return j.dump();
}

Result<PlanRecord> decode_plan(std::string_view key, std::string_view text) {
  auto damaged = [&](std::string_view why) {
    return make_error(EIO, "archive plan " + std::string(key) + " is damaged: " + std::string(why));
  };
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return damaged("not JSON");
  if (!j.contains("v") || !j["v"].is_number_integer()) return damaged("no version");
  if (j["v"].get<int>() > kPlanVersion)
    return make_error(ENOTSUP,
                      "archive plan " + std::string(key) + " was written by a newer imagefs");
  PlanRecord plan;
  if (!j.contains("raw_size") || !j["raw_size"].is_number_unsigned() || !j.contains("has_init") ||
      !j["has_init"].is_boolean() || !j.contains("segments") || !j["segments"].is_array())
    return damaged("missing fields");
  plan.raw_size = j["raw_size"].get<uint64_t>();
  plan.has_init = j["has_init"].get<bool>();
  for (const nlohmann::json& s : j["segments"]) {
    if (!s.is_array() || s.size() != 3 || !s[0].is_string() || !s[1].is_number_unsigned() ||
        !s[2].is_number_unsigned())
      return damaged("bad segment");
    SegmentRef ref{s[0].get<std::string>(), s[1].get<uint64_t>(), s[2].get<uint64_t>()};
    if (ref.key.size() != 64 || ref.key.find_first_not_of("0123456789abcdef") != std::string::npos)
      return damaged("bad segment key");
    plan.segments.push_back(std::move(ref));
  }
  return plan;
}

int64_t now_seconds() { return static_cast<int64_t>(::time(nullptr)); }

// Marks a segment file as used (for gc), at most once per kTouchInterval.
void touch_if_stale(const fs::path& path, const struct stat& st, int64_t now) {
  if (st.st_mtim.tv_sec + kTouchInterval < now)
    (void)::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);
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
    IMAGEFS_TRY(plan, detail::make_plan(tree, inputs));
    IMAGEFS_TRY(built, build_missing(plan, options.format, level, progress));

    PlanRecord record;
    record.raw_size = plan.raw_size;
    record.has_init = plan.has_init;
    std::vector<fs::path> paths;
    const int64_t now = now_seconds();
    for (const detail::SegmentSpec& s : plan.segments) {
      fs::path path = detail::segment_path(blobs_->root(), options.format, s.key);
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0) {
        // gc took a segment that was there when this call looked (it had not been used for days):
        // build it again.
        IMAGEFS_TRY(again, detail::build_segment(blobs_->root(), options.format, level, s));
        if (again == detail::Built::now) ++built;
        if (::stat(path.c_str(), &st) != 0) return errno_error(errno, "cannot stat", path);
      }
      touch_if_stale(path, st, now);
      record.segments.push_back(SegmentRef{s.key, static_cast<uint64_t>(st.st_size), s.raw_size});
      paths.push_back(std::move(path));
    }
    IMAGEFS_CHECK(catalog_->put(kPlanTable, key, encode_plan(record)));

    ArchiveStats archive_stats;
    archive_stats.segments = plan.segments.size();
    archive_stats.segments_built = built;
    archive_stats.segments_reused = plan.segments.size() - built;
    archive_stats.raw_bytes = plan.raw_size;
    archive_stats.has_init = plan.has_init;
    return std::shared_ptr<const Archive>(
        std::make_shared<ArchiveImpl>(std::move(paths), record.segments, archive_stats));
  }

 private:
  // The cached plan's archive, if every segment is there with the size the plan recorded (a
  // segment that gc removed, or that a different library version rebuilt, means planning again).
  Result<std::shared_ptr<const Archive>> load(const std::string& key, Format format) {
    IMAGEFS_TRY(text, catalog_->get(kPlanTable, key));
    if (!text) return std::shared_ptr<const Archive>();
    Result<PlanRecord> plan = decode_plan(key, *text);
    if (!plan.ok()) {
      if (plan.error().code == EIO) return std::shared_ptr<const Archive>();  // plan it again
      return plan.error();
    }
    std::vector<fs::path> paths;
    const int64_t now = now_seconds();
    for (const SegmentRef& s : plan->segments) {
      fs::path path = detail::segment_path(blobs_->root(), format, s.key);
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) != s.compressed)
        return std::shared_ptr<const Archive>();
      touch_if_stale(path, st, now);
      paths.push_back(std::move(path));
    }
    ArchiveStats stats;
    stats.segments = plan->segments.size();
    stats.segments_reused = stats.segments;
    stats.raw_bytes = plan->raw_size;
    stats.has_init = plan->has_init;
    return std::shared_ptr<const Archive>(
        std::make_shared<ArchiveImpl>(std::move(paths), plan->segments, stats));
  }

  // /.imagefs/init.conf for the default /init: the image's config (through the catalog's record
  // of `image`) and the exec override, as init/init_config.h encodes them.
  Result<std::shared_ptr<const HostFile>> default_init_config(const store::Digest& image,
                                                              const ArchiveOptions& options) {
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
    std::string bytes;
    char buffer[1 << 16];
    while (true) {
      ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno_error(errno, "cannot read " + what, host);
      if (n == 0) break;
      bytes.append(buffer, static_cast<size_t>(n));
    }
    store::Digest digest = store::Digest::of(bytes);
    return std::make_shared<const HostFile>(
        HostFile{option.guest, std::move(bytes), std::move(digest), st->st_mtim.tv_sec});
  }

  // Builds the plan's segments that are not in the store, on a few threads; returns how many this
  // call compressed (a segment another process finished first counts as reused).
  Result<size_t> build_missing(const detail::Plan& plan, Format format, int level,
                               const BuildProgress* progress) {
    std::vector<const detail::SegmentSpec*> missing;
    std::set<std::string_view> seen;
    for (const detail::SegmentSpec& s : plan.segments) {
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
  std::shared_ptr<store::Catalog> catalog_;
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
      } else if (st.st_mtim.tv_sec >= unused_since) {
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
  return report;
}

Result<std::shared_ptr<ArchiveMaker>> ArchiveMaker::create(
    std::shared_ptr<store::BlobStore> blobs, std::shared_ptr<store::Catalog> catalog) {
  if (!blobs || !catalog)
    return make_error(EINVAL, "ArchiveMaker needs a blob store and a catalog");
  return std::shared_ptr<ArchiveMaker>(
      std::make_shared<ArchiveMakerImpl>(std::move(blobs), std::move(catalog)));
}

}  // namespace imagefs::cpio
