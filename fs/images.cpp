// The images a mount serves (fs/images.h): resolution with a TTL, lazy layers and archives, and
// the bookkeeping behind `imagefs status`.
#include "fs/images.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "common/mutex.h"
#include "common/single_flight.h"
#include "common/text.h"
#include "erofs/erofs.h"
#include "fs/metrics.h"
#include "fs/open_image.h"
#include "overlay/layer_index.h"
#include "registry/puller.h"
#include "store/lease.h"

namespace imagefs::fs {
namespace {

using SteadyClock = std::chrono::steady_clock;

// How long one failure of a reference stays quiet in the log after it was written.
constexpr std::chrono::seconds kLogQuiet{60};
constexpr size_t kRecentErrors = 20;
constexpr size_t kRecentServed = 64;
// Distinct failures remembered for the quiet period: a storm of distinct names (random lookups)
// must not grow the table. When it is full of failures younger than kLogQuiet, further new ones
// are counted, not logged, and the count is written with the next line that is.
constexpr size_t kMaxLogged = 1024;

// "ENOENT" for ENOENT: the class of a failure, which any user may see (fs/filesystem.cpp).
std::string errno_name(int code) {
  const char* name = ::strerrorname_np(code);
  return name != nullptr ? name : "E" + std::to_string(code);
}

// Tags remembered in memory (what users type: unbounded otherwise); the store keeps the rest.
constexpr size_t kMaxRefs = 4096;
// Registries remembered as not answering (for the negative TTL).
constexpr size_t kMaxUnanswered = 256;
// Repositories remembered per image as holding its manifest (its blobs can come from any).
constexpr size_t kMaxSources = 8;

// Whether `error` says a registry did not answer in time (registry/transport.cpp's words).
bool is_unanswered(const Error& error) {
  return error.code == EIO && error.message.find(" did not answer within ") != std::string::npos;
}

std::string now_text() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  (void)std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// A failure kept for status: the image's name, the errno class and the whole line (which may
// quote a registry: shown only to the mount's owner, fs/filesystem.cpp decides).
struct RecentError {
  std::string time;
  std::string image;
  int code = EIO;
  std::string line;
};

// Work under way, for status: one entry per resolve, download, ingest or archive build.
struct Task {
  std::string image;
  std::string what;
  SteadyClock::time_point started;
  uint64_t bytes = 0;
  uint64_t total = 0;
};

class ImagesImpl;

// Counts downloaded bytes of one image's layers into its Task, and into `bytes` (the registry's
// imagefs_pull_bytes_total) when given.
class TaskProgress : public registry::ProgressSink {
 public:
  TaskProgress(ImagesImpl& images, uint64_t task, metrics::Counter* bytes = nullptr)
      : images_(images), task_(task), bytes_(bytes) {}
  void layer_started(const registry::LayerId& layer, uint64_t offset) override;
  void layer_progress(const registry::LayerId& layer, uint64_t bytes) override;
  void layer_cached(const registry::LayerId& layer) override;
  void message(const std::string& text) override;
  void served(const std::string& what, const store::Digest& digest,
              const std::string& host) override;

 private:
  ImagesImpl& images_;
  uint64_t task_;
  metrics::Counter* bytes_;
  std::map<size_t, uint64_t> held_;  // bytes held per layer index
};

// Passes on only which mirror served what (a resolve's notes stay out of the log, as before).
class ServedOnly : public registry::ProgressSink {
 public:
  ServedOnly(ImagesImpl& images, uint64_t task) : images_(images), task_(task) {}
  void served(const std::string& what, const store::Digest& digest,
              const std::string& host) override;

 private:
  ImagesImpl& images_;
  uint64_t task_;
};

// The metrics' `file` of an archive format.
FileKind archive_kind(cpio::Format format) {
  switch (format) {
    case cpio::Format::gzip:
      return FileKind::gzip;
    case cpio::Format::zstd:
      return FileKind::zstd;
    case cpio::Format::none:
      break;
  }
  return FileKind::cpio;
}

class ImageImpl;

class ImagesImpl : public Images, public std::enable_shared_from_this<ImagesImpl> {
 public:
  ImagesImpl(std::shared_ptr<store::BlobStore> blobs, std::shared_ptr<store::Catalog> catalog,
             ImagesOptions options, std::shared_ptr<registry::Puller> puller,
             std::shared_ptr<overlay::LayerCache> layers, std::shared_ptr<cpio::ArchiveMaker> maker,
             std::shared_ptr<erofs::ImageMaker> erofs)
      : blobs_(std::move(blobs)),
        catalog_(std::move(catalog)),
        options_(std::move(options)),
        puller_(std::move(puller)),
        opener_(blobs_, catalog_, puller_, std::move(layers)),
        maker_(std::move(maker)),
        erofs_(std::move(erofs)),
        resolves_(ResolveFlights::Options{options_.negative_ttl, kMaxRefs, {}}) {}
  ~ImagesImpl() override { stop_sweeper(); }
  ImagesImpl(const ImagesImpl&) = delete;
  ImagesImpl& operator=(const ImagesImpl&) = delete;

  const registry::Platform& default_platform() const override {
    return puller_->default_platform();
  }
  const ImagesOptions& options() const override { return options_; }

  Result<std::shared_ptr<Image>> image(const registry::Reference& reference,
                                       const registry::Platform& platform) override;
  std::shared_ptr<Image> by_slot(uint32_t slot) override;
  size_t close_idle() override EXCLUDES(mu_);
  void tree_refs(uint32_t slot, int64_t delta) override EXCLUDES(mu_);
  Result<std::vector<store::RefRecord>> refs() const override { return catalog_->refs(); }
  // Starts the thread that calls close_idle() (when options().idle is not zero).
  void start_sweeper() EXCLUDES(sweep_mu_);
  std::string status_json() const override;

  // For ImageImpl and TaskProgress.
  store::BlobStore& blobs() { return *blobs_; }
  // Opening an image: the one sequence the CLI shares (fs/open_image.h).
  ImageOpener& opener() { return opener_; }
  cpio::ArchiveMaker& maker() { return *maker_; }
  erofs::ImageMaker& erofs() { return *erofs_; }
  uint64_t start_task(std::string image, std::string what) EXCLUDES(mu_);
  void update_task(uint64_t id, uint64_t bytes_delta, uint64_t total_delta) EXCLUDES(mu_);
  void end_task(uint64_t id) EXCLUDES(mu_);
  // Logs `error` about `image` (once per kLogQuiet) and keeps it for status; returns it.
  Error failed(const std::string& image, const Error& error) EXCLUDES(mu_);
  void note(const std::string& line) EXCLUDES(mu_);
  // A mirror (registry/hosts.h) served a blob of task `task`'s image: logged, kept for status.
  void served(uint64_t task, const std::string& what, const store::Digest& digest,
              const std::string& host) EXCLUDES(mu_);
  // The repositories known to hold the slot's manifest, the one that served last first.
  std::vector<registry::Reference> sources(uint32_t slot) const EXCLUDES(mu_);
  // `source` served the slot's blobs: it is asked first next time.
  void source_served(uint32_t slot, const registry::Reference& source) EXCLUDES(mu_);

 private:
  struct RefState {
    store::Digest manifest;
    SteadyClock::time_point checked;  // when the registry (or the store) last vouched for it
  };
  using ResolveFlights = SingleFlight<std::string, store::Digest>;
  Result<store::Digest> resolve(const registry::Reference& reference,
                                const registry::Platform& platform) EXCLUDES(mu_);
  // The work of one resolve (one at a time per key, through resolves_).
  Result<store::Digest> resolve_now(const std::string& key, const registry::Reference& reference,
                                    const registry::Platform& platform) EXCLUDES(mu_);
  // Remembers what `key` resolved to, dropping the entry checked longest ago when full.
  void remember_ref(const std::string& key, RefState state) REQUIRES(mu_);
  Result<std::shared_ptr<Image>> open(const store::Digest& manifest,
                                      const registry::Reference& source) EXCLUDES(mu_);
  SteadyClock::time_point now() const {
    return options_.clock ? options_.clock() : SteadyClock::now();
  }
  void stop_sweeper() EXCLUDES(sweep_mu_);
  // The catalog's record of a tag, when it is complete in the store; its age in seconds.
  std::optional<std::pair<store::Digest, int64_t>> stored_ref(const registry::Reference& ref,
                                                              const std::string& platform);

  std::shared_ptr<store::BlobStore> blobs_;
  std::shared_ptr<store::Catalog> catalog_;
  ImagesOptions options_;
  std::shared_ptr<registry::Puller> puller_;
  ImageOpener opener_;
  std::shared_ptr<cpio::ArchiveMaker> maker_;
  std::shared_ptr<erofs::ImageMaker> erofs_;

  ResolveFlights resolves_;  // one registry request per key at a time; failures kept briefly
  mutable Mutex mu_;
  std::map<std::string, RefState> refs_ GUARDED_BY(mu_);  // at most kMaxRefs
  // Registries (reference domains) that did not answer in time, until when their error is
  // returned without asking them again: N tags of a dead registry looked up one after another
  // (or one directory at a time, when the kernel serializes lookups in a directory: see
  // fs/ops.cpp's dirops) would otherwise wait N timeouts in a row. At most kMaxUnanswered.
  struct Unanswered {
    SteadyClock::time_point until;
    Error error;
  };
  std::map<std::string, Unanswered> unanswered_ GUARDED_BY(mu_);
  // A slot: what its inode numbers mean, kept while the mount lives (a few hundred bytes per
  // image ever opened), and the image while it is open.
  struct Slot {
    store::Digest manifest;
    registry::Reference source;  // the name it was first opened by (log lines, status)
    // Every repository a lookup resolved to this manifest (registry/repository, no tag), the one
    // that served blobs last first, then in the order they came; at most kMaxSources (a new one
    // replaces the last, which has not served since). Blobs are content-addressed: any of them
    // will do, so a registry that fails or went away is not the image's only way in.
    std::vector<registry::Reference> sources;
    std::shared_ptr<ImageImpl> open;  // null while closed
    SteadyClock::time_point used;     // last image() or by_slot()
    uint64_t tree_refs = 0;           // the kernel's references to its rootfs inodes
  };
  // Adds `source` to the slot's sources unless its repository is there already.
  static void add_source(Slot& slot, const registry::Reference& source);
  std::map<std::string, std::shared_ptr<ImageImpl>> images_ GUARDED_BY(mu_);  // open, by manifest
  std::map<std::string, uint32_t> slot_of_ GUARDED_BY(mu_);                   // by manifest
  std::vector<Slot> slots_ GUARDED_BY(mu_);                                   // slot - 1
  std::map<uint64_t, Task> tasks_ GUARDED_BY(mu_);
  uint64_t next_task_ GUARDED_BY(mu_) = 1;
  std::deque<RecentError> recent_ GUARDED_BY(mu_);
  std::deque<nlohmann::json> served_ GUARDED_BY(mu_);  // the last kRecentServed via a mirror
  // When each failure line was last logged; at most kMaxLogged, none older than kLogQuiet once
  // the table is full.
  std::map<std::string, SteadyClock::time_point> logged_ GUARDED_BY(mu_);
  uint64_t unlogged_ GUARDED_BY(mu_) = 0;  // failures not logged since the table was full
  Mutex log_mu_;                           // one log call at a time

  Mutex sweep_mu_;
  std::condition_variable_any sweep_wake_;
  bool sweep_stop_ GUARDED_BY(sweep_mu_) = false;
  std::thread sweeper_;
};

// The host files an archive is made of, as (size, mtime) pairs: when they change, the archive
// is made again.
using InputStamp = std::vector<std::pair<int64_t, int64_t>>;

InputStamp stamp_inputs(const cpio::ArchiveOptions& options) {
  InputStamp stamp;
  auto add = [&](const std::filesystem::path& p) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) {
      stamp.emplace_back(-1, -1);
      return;
    }
    stamp.emplace_back(st.st_size, int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec);
  };
  if (options.init) add(*options.init);
  for (const cpio::Inject& inject : options.injects) add(inject.host);
  return stamp;
}

class ImageImpl : public Image {
 public:
  ImageImpl(ImagesImpl& images, store::ImageRecord record, registry::Reference source,
            uint32_t slot, store::Lease lease)
      : images_(images),
        record_(std::move(record)),
        source_(std::move(source)),
        slot_(slot),
        lease_(std::move(lease)) {
    daemon_metrics().images_open().add(1);
  }
  ~ImageImpl() override { daemon_metrics().images_open().add(-1); }
  ImageImpl(const ImageImpl&) = delete;
  ImageImpl& operator=(const ImageImpl&) = delete;

  const store::ImageRecord& record() const override { return record_; }
  uint32_t slot() const override { return slot_; }
  Result<std::string> manifest_json() const override {
    return images_.blobs().read(record_.manifest);
  }
  Result<std::string> config_json() const override { return images_.blobs().read(record_.config); }
  bool archives_mutable() const override {
    const cpio::ArchiveOptions& o = images_.options().archive;
    return o.init.has_value() || !o.injects.empty();
  }

  Result<std::shared_ptr<overlay::Tree>> tree() override {
    {
      MutexLock lock(mu_);
      if (tree_) return tree_;
    }
    // One download and ingest however many callers wait; they all get its outcome.
    return tree_flight_.run(0, [this]() -> Result<std::shared_ptr<overlay::Tree>> {
      {
        MutexLock lock(mu_);
        if (tree_) return tree_;  // made by a flight that ended just before this one began
      }
      IMAGEFS_TRY(made, make_tree());
      MutexLock lock(mu_);
      tree_ = made;
      return made;
    });
  }

  bool tree_ready() const override {
    MutexLock lock(mu_);
    return tree_ != nullptr;
  }

  Result<std::shared_ptr<const cpio::Archive>> archive(cpio::Format format,
                                                       bool* changed) override {
    return served_file(static_cast<size_t>(format), changed);
  }

  Result<std::shared_ptr<const cpio::Archive>> erofs_image(bool* changed) override {
    return served_file(kErofsSlot, changed);
  }

 private:
  // archives_[] slots: the three cpio::Format values, then rootfs.erofs.
  static constexpr size_t kErofsSlot = 3;

  cpio::ArchiveOptions options_for(size_t which) const {
    cpio::ArchiveOptions options = images_.options().archive;
    if (which != kErofsSlot) options.format = static_cast<cpio::Format>(which);
    return options;
  }
  static FileKind slot_kind(size_t which) {
    return which == kErofsSlot ? FileKind::erofs : archive_kind(static_cast<cpio::Format>(which));
  }
  static std::string file_name(size_t which) {
    return which == kErofsSlot ? std::string(erofs::kFileName)
                               : std::string(cpio::file_name(static_cast<cpio::Format>(which)));
  }

  Result<std::shared_ptr<const cpio::Archive>> served_file(size_t which, bool* changed) {
    auto& slot = archives_[which];
    {
      InputStamp stamp = stamp_inputs(options_for(which));
      MutexLock lock(slot.mu);
      if (slot.archive && slot.stamp == stamp) return slot.served(changed);
    }
    // One maker per file at a time: readers of the same file share its outcome.
    IMAGEFS_CHECK(
        archive_flight_.run(static_cast<int>(which), [&] { return make_archive(which); }));
    MutexLock lock(slot.mu);
    return slot.served(changed);
  }

  // Makes (or takes from the store) the archive or rootfs.erofs (`which`) for the inputs as they
  // are now, and keeps it in its slot.
  Result<std::shared_ptr<const cpio::Archive>> make_archive(size_t which) {
    auto& slot = archives_[which];
    cpio::ArchiveOptions options = options_for(which);
    InputStamp stamp = stamp_inputs(options);
    {
      MutexLock lock(slot.mu);
      if (slot.archive && slot.stamp == stamp) return slot.archive;
    }
    std::string name = source_.familiar();
    const bool is_erofs = which == kErofsSlot;
    auto cached = is_erofs ? images_.erofs().cached(record_.manifest, options)
                           : images_.maker().cached(record_.manifest, options);
    if (!cached.ok()) return images_.failed(name, cached.error().context(file_name(which)));
    std::shared_ptr<const cpio::Archive> archive = *cached;
    if (archive) daemon_metrics().archive(slot_kind(which), true, 0, archive->stats().segments);
    if (!archive) {
      uint64_t task = images_.start_task(name, "making " + file_name(which));
      cpio::BuildProgress progress{[&](size_t, size_t, uint64_t) {}};
      // The tree only if the image's part of the archive is not cached: a changed injected file
      // needs no layer.
      cpio::ArchiveMaker::TreeOpener open_tree = [this] { return this->tree(); };
      auto config = images_.blobs().read(record_.config);
      Result<std::shared_ptr<const cpio::Archive>> made =
          !config.ok() ? Result<std::shared_ptr<const cpio::Archive>>(config.error())
          : is_erofs
              ? images_.erofs().make({record_.manifest, std::move(*config)}, open_tree, options)
              : images_.maker().make({record_.manifest, std::move(*config)}, open_tree, options,
                                     &progress);
      images_.end_task(task);
      if (!made.ok()) return images_.failed(name, made.error().context(file_name(which)));
      archive = *made;
      daemon_metrics().archive(slot_kind(which), false, archive->stats().segments_built,
                               archive->stats().segments_reused);
      // Compressing big files alone takes buffers of their size; give them back to the system
      // rather than keep them in malloc's arenas for the life of the daemon.
      ::malloc_trim(0);
    }
    MutexLock lock(slot.mu);
    slot.archive = archive;
    slot.stamp = std::move(stamp);
    return archive;
  }

  Result<std::shared_ptr<overlay::Tree>> make_tree() {
    std::string name = source_.familiar();
    ImageOpener& opener = images_.opener();
    if (!opener.has_layers(record_)) {
      Result<void> fetched = fetch_layers();
      if (!fetched.ok()) return images_.failed(name, fetched.error());
    }
    uint64_t task = images_.start_task(name, "reading layers");
    // Notes of a layer fetched again go to the log, its bytes to the metrics.
    TaskProgress progress(images_, task, &daemon_metrics().pull_bytes(source_.domain));
    auto tree = opener.open_tree(record_, &source_, &progress);
    images_.end_task(task);
    if (!tree.ok()) return images_.failed(name, tree.error());
    return tree;
  }

  // Downloads the layers the store lacks from the repositories known to hold this manifest, in
  // turn: the one that served last first, the next when one fails (the layers it did bring stay).
  // Logs which one served and why the others failed. The error, when all failed, names each.
  Result<void> fetch_layers() {
    const std::string name = source_.familiar();
    ImageOpener& opener = images_.opener();
    std::vector<registry::Reference> sources = images_.sources(slot_);
    if (sources.empty()) sources.push_back(source_);
    std::vector<std::string> failures;
    std::optional<Error> last;
    bool retried = false;
    for (size_t i = 0; i < sources.size(); ++i) {
      const registry::Reference& source = sources[i];
      uint64_t task = images_.start_task(name, "downloading layers from " + source.name());
      TaskProgress progress(images_, task, &daemon_metrics().pull_bytes(source.domain));
      auto started = SteadyClock::now();
      Result<void> fetched = opener.fetch_layers(record_, source, &progress);
      daemon_metrics().pull(source.domain, "layers", fetched.ok(), SteadyClock::now() - started);
      images_.end_task(task);
      if (fetched.ok()) {
        images_.source_served(slot_, source);
        if (sources.size() > 1) {
          std::string line =
              name + ": layers of " + record_.manifest.str() + " served by " + source.name();
          if (!failures.empty()) line += " (after " + join(failures) + ")";
          images_.note(line);
        }
        return {};
      }
      const Error& error = fetched.error();
      // A partial download left by the source before resumes from this one; if its bytes were
      // bad, the digest check threw them away and failed this source for it: once more, clean.
      if (i > 0 && !retried && error.message.find("digest mismatch") != std::string::npos) {
        retried = true;
        images_.note(name + ": " + source.name() +
                     " served bytes that did not match their digest, which may have been a "
                     "failed source's partial download: asking it once more");
        --i;
        continue;
      }
      failures.push_back(source.name() + " failed: " + error.message);
      if (i + 1 < sources.size())
        images_.note(name + ": downloading layers of " + record_.manifest.str() + " from " +
                     source.name() + " failed (" + error.message + "); trying " +
                     sources[i + 1].name());
      last = error;
    }
    if (sources.size() == 1) return *last;
    return make_error(last->code, "no repository known to hold " + record_.manifest.str() +
                                      " served its layers: " + join(failures));
  }

  static std::string join(const std::vector<std::string>& parts) {
    std::string out;
    for (const std::string& p : parts) {
      if (!out.empty()) out += "; ";
      out += p;
    }
    return out;
  }

  struct ArchiveSlot {
    Mutex mu;
    std::shared_ptr<const cpio::Archive> archive GUARDED_BY(mu);
    InputStamp stamp GUARDED_BY(mu);
    // The archive the last caller that asked about changes (an open) was given: a lookup may
    // remake the archive before the open comes, and the open must still learn of the change.
    std::shared_ptr<const cpio::Archive> opened GUARDED_BY(mu);

    std::shared_ptr<const cpio::Archive> served(bool* changed) REQUIRES(mu) {
      if (changed) {
        *changed = opened != nullptr && opened != archive;
        opened = archive;
      }
      return archive;
    }
  };

  ImagesImpl& images_;
  const store::ImageRecord record_;
  const registry::Reference source_;  // the name it was opened by (its layers: Images::sources)
  const uint32_t slot_;
  store::Lease lease_;

  mutable Mutex mu_;
  std::shared_ptr<overlay::Tree> tree_ GUARDED_BY(mu_);
  SingleFlight<int, std::shared_ptr<overlay::Tree>> tree_flight_;           // one key: 0
  SingleFlight<int, std::shared_ptr<const cpio::Archive>> archive_flight_;  // by slot
  ArchiveSlot archives_[4];  // the three formats, then rootfs.erofs
};

void TaskProgress::layer_started(const registry::LayerId& layer, uint64_t offset) {
  held_[layer.index] = offset;
  images_.update_task(task_, offset, layer.size);
}
void TaskProgress::layer_progress(const registry::LayerId& layer, uint64_t bytes) {
  uint64_t& held = held_[layer.index];
  images_.update_task(task_, bytes - std::min(bytes, held), 0);
  if (bytes_ != nullptr) bytes_->inc(bytes - std::min(bytes, held));
  held = std::max(held, bytes);
}
void TaskProgress::layer_cached(const registry::LayerId& layer) { (void)layer; }
void TaskProgress::message(const std::string& text) { images_.note(text); }
void TaskProgress::served(const std::string& what, const store::Digest& digest,
                          const std::string& host) {
  images_.served(task_, what, digest, host);
}

void ServedOnly::served(const std::string& what, const store::Digest& digest,
                        const std::string& host) {
  images_.served(task_, what, digest, host);
}

void ImagesImpl::served(uint64_t task, const std::string& what, const store::Digest& digest,
                        const std::string& host) {
  std::string image;
  {
    MutexLock lock(mu_);
    if (auto it = tasks_.find(task); it != tasks_.end()) image = it->second.image;
    served_.push_back({{"time", now_text()},
                       {"image", printable(image)},
                       {"blob", printable(what)},
                       {"digest", digest.str()},
                       {"host", printable(host)}});
    while (served_.size() > kRecentServed) served_.pop_front();
  }
  note(image + ": " + what + " " + digest.str() + " served by mirror " + host);
}

uint64_t ImagesImpl::start_task(std::string image, std::string what) {
  MutexLock lock(mu_);
  uint64_t id = next_task_++;
  tasks_[id] = Task{std::move(image), std::move(what), SteadyClock::now(), 0, 0};
  return id;
}

void ImagesImpl::update_task(uint64_t id, uint64_t bytes_delta, uint64_t total_delta) {
  MutexLock lock(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  it->second.bytes += bytes_delta;
  it->second.total += total_delta;
}

void ImagesImpl::end_task(uint64_t id) {
  MutexLock lock(mu_);
  tasks_.erase(id);
}

Error ImagesImpl::failed(const std::string& image, const Error& error) {
  daemon_metrics().image_error(error.code);
  // Names and messages may hold any bytes (tar names, registry bodies): printable from here on.
  std::string line = printable(image + ": " + error.message);
  bool quiet = false;
  uint64_t unlogged = 0;
  {
    MutexLock lock(mu_);
    auto now = SteadyClock::now();
    auto it = logged_.find(line);
    if (it == logged_.end() && logged_.size() >= kMaxLogged) {
      std::erase_if(logged_, [&](const auto& entry) { return now - entry.second >= kLogQuiet; });
    }
    if (it != logged_.end()) {
      quiet = now - it->second < kLogQuiet;
      if (!quiet) it->second = now;
    } else if (logged_.size() < kMaxLogged) {
      logged_.emplace(line, now);
    } else {
      quiet = true;  // a storm of distinct failures: counted, not logged
      ++unlogged_;
    }
    if (!quiet) std::swap(unlogged, unlogged_);
    if (!quiet || recent_.empty() || recent_.back().line != line) {
      recent_.push_back(RecentError{now_text(), printable(image), error.code, line});
      while (recent_.size() > kRecentErrors) recent_.pop_front();
    }
  }
  const auto& sink = options_.log_failure ? options_.log_failure : options_.log;
  if (!quiet && sink) {
    MutexLock lock(log_mu_);
    if (unlogged > 0)
      sink("(" + std::to_string(unlogged) +
           " more failures were not logged: too many distinct ones within " +
           std::to_string(kLogQuiet.count()) + " s)");
    sink(line);
  }
  return error;
}

void ImagesImpl::note(const std::string& line) {
  if (!options_.log) return;
  std::string text = printable(line);
  MutexLock lock(log_mu_);
  options_.log(text);
}

std::optional<std::pair<store::Digest, int64_t>> ImagesImpl::stored_ref(
    const registry::Reference& ref, const std::string& platform) {
  auto record = catalog_->ref(ref.str(), platform);
  if (!record.ok() || !*record) return std::nullopt;
  auto image = catalog_->image((*record)->manifest);
  if (!image.ok() || !*image || !blobs_->contains((*image)->config) ||
      !blobs_->contains((*image)->manifest))
    return std::nullopt;
  int64_t age = static_cast<int64_t>(std::time(nullptr)) - (*record)->resolved_at;
  return std::make_pair((*record)->manifest, age);
}

Result<store::Digest> ImagesImpl::resolve(const registry::Reference& reference,
                                          const registry::Platform& platform) {
  std::string key = platform.str() + " " + reference.str();
  const bool by_digest = !reference.digest.empty();
  {
    MutexLock lock(mu_);
    auto it = refs_.find(key);
    if (it != refs_.end() &&
        (by_digest || SteadyClock::now() - it->second.checked < options_.tag_ttl))
      return it->second.manifest;
  }
  // Concurrent callers for one key wait for one answer, failure included; a failure is
  // returned again for the negative TTL without asking the registry.
  return resolves_.run(key, [&] { return resolve_now(key, reference, platform); });
}

Result<store::Digest> ImagesImpl::resolve_now(const std::string& key,
                                              const registry::Reference& reference,
                                              const registry::Platform& platform) {
  const std::string name = reference.familiar();
  const bool by_digest = !reference.digest.empty();
  std::optional<store::Digest> last;
  {
    MutexLock lock(mu_);
    auto it = refs_.find(key);
    if (it != refs_.end()) {
      // Resolved by the flight that ended just before this one began?
      if (by_digest || SteadyClock::now() - it->second.checked < options_.tag_ttl)
        return it->second.manifest;
      last = it->second.manifest;
    }
  }
  Result<store::Digest> result = make_error(EIO, "not resolved");
  SteadyClock::time_point checked = SteadyClock::now();
  bool done = false;
  if (!last) {
    // A fresh daemon (or one that let this tag go from memory) trusts what the store resolved
    // less than a TTL ago, as a running one would, and a digest reference the store has resolved
    // at all (the puller would only redo it from the stored manifest, writing the catalog
    // again).
    if (auto stored = stored_ref(reference, platform.str())) {
      last = stored->first;
      auto age = std::chrono::seconds(std::max<int64_t>(0, stored->second));
      if (by_digest || age < options_.tag_ttl) {
        result = stored->first;
        checked -= std::min(age, options_.tag_ttl);
        done = true;
      }
    }
  }
  if (!done) {
    if (options_.negative_ttl.count() > 0) {
      MutexLock lock(mu_);
      auto it = unanswered_.find(reference.domain);
      if (it != unanswered_.end()) {
        if (SteadyClock::now() < it->second.until) {
          if (!last) return it->second.error;
          // Keep serving what the tag meant last time, as when the registry times out now.
          remember_ref(key, RefState{*last, checked});
          return *last;
        }
        unanswered_.erase(it);
      }
    }
    uint64_t task = start_task(name, "resolving");
    ServedOnly served_only(*this, task);  // which mirror served the manifest and config
    auto started = SteadyClock::now();
    auto resolved = puller_->resolve(reference, platform, &served_only);
    daemon_metrics().pull(reference.domain, "resolve", resolved.ok(), SteadyClock::now() - started);
    end_task(task);
    if (!resolved.ok() && is_unanswered(resolved.error()) && options_.negative_ttl.count() > 0) {
      MutexLock lock(mu_);
      auto now = SteadyClock::now();
      if (unanswered_.size() >= kMaxUnanswered && !unanswered_.contains(reference.domain)) {
        for (auto it = unanswered_.begin(); it != unanswered_.end();)
          it = it->second.until <= now ? unanswered_.erase(it) : std::next(it);
        if (unanswered_.size() >= kMaxUnanswered) unanswered_.erase(unanswered_.begin());
      }
      unanswered_.insert_or_assign(reference.domain,
                                   Unanswered{now + options_.negative_ttl, resolved.error()});
    }
    if (resolved.ok()) {
      result = resolved->image.manifest;
      if (last && *last != resolved->image.manifest)
        note(name + ": now " + resolved->image.manifest.str() + " (was " + last->str() + ")");
    } else if (last && resolved.error().code == EIO) {
      // Keep serving what the tag meant last time; ask again after another TTL.
      failed(name, resolved.error().context("serving the last known digest " + last->str() +
                                            ", since the registry could not be asked"));
      result = *last;
    } else {
      return failed(name, resolved.error());
    }
  }
  MutexLock lock(mu_);
  remember_ref(key, RefState{*result, checked});
  return result;
}

void ImagesImpl::remember_ref(const std::string& key, RefState state) {
  if (refs_.size() >= kMaxRefs && !refs_.contains(key)) {
    auto oldest = refs_.begin();
    for (auto it = refs_.begin(); it != refs_.end(); ++it)
      if (it->second.checked < oldest->second.checked) oldest = it;
    refs_.erase(oldest);
  }
  refs_.insert_or_assign(key, std::move(state));
}

Result<std::shared_ptr<Image>> ImagesImpl::image(const registry::Reference& reference,
                                                 const registry::Platform& platform) {
  IMAGEFS_TRY(manifest, resolve(reference, platform));
  return open(manifest, reference);
}

Result<std::shared_ptr<Image>> ImagesImpl::open(const store::Digest& manifest,
                                                const registry::Reference& source) {
  {
    MutexLock lock(mu_);
    auto it = images_.find(manifest.str());
    if (it != images_.end()) {
      Slot& s = slots_[it->second->slot() - 1];
      s.used = now();
      add_source(s, source);
      return std::shared_ptr<Image>(it->second);
    }
  }
  // Lease, then record (and the last-use stamp, an LMDB write: never under mu_, which every
  // lookup needs), as every command opens an image.
  auto leased = opener_.lease(manifest);
  if (!leased.ok()) return failed(source.familiar(), leased.error());
  std::shared_ptr<ImageImpl> image;
  {
    MutexLock lock(mu_);
    auto it = images_.find(manifest.str());
    if (it != images_.end()) {
      Slot& s = slots_[it->second->slot() - 1];
      s.used = now();
      add_source(s, source);
      return std::shared_ptr<Image>(it->second);
    }
    // An image closed for being idle gets its slot back: its inode numbers keep their meaning.
    auto [known, fresh] =
        slot_of_.try_emplace(manifest.str(), static_cast<uint32_t>(slots_.size() + 1));
    if (fresh) slots_.push_back(Slot{manifest, source, {}, nullptr, {}});
    uint32_t slot = known->second;
    add_source(slots_[slot - 1], source);
    image = std::make_shared<ImageImpl>(*this, std::move(leased->record), source, slot,
                                        std::move(leased->lease));
    images_.emplace(manifest.str(), image);
    slots_[slot - 1].open = image;
    slots_[slot - 1].used = now();
  }
  return std::shared_ptr<Image>(image);
}

void ImagesImpl::add_source(Slot& slot, const registry::Reference& source) {
  const std::string name = source.name();
  for (const registry::Reference& known : slot.sources)
    if (known.name() == name) return;
  if (slot.sources.size() >= kMaxSources) slot.sources.pop_back();
  slot.sources.push_back(source);
}

std::vector<registry::Reference> ImagesImpl::sources(uint32_t slot) const {
  MutexLock lock(mu_);
  if (slot == 0 || slot > slots_.size()) return {};
  return slots_[slot - 1].sources;
}

void ImagesImpl::source_served(uint32_t slot, const registry::Reference& source) {
  MutexLock lock(mu_);
  if (slot == 0 || slot > slots_.size()) return;
  std::vector<registry::Reference>& sources = slots_[slot - 1].sources;
  const std::string name = source.name();
  auto it = std::find_if(sources.begin(), sources.end(),
                         [&](const registry::Reference& r) { return r.name() == name; });
  if (it == sources.end()) return;
  std::rotate(sources.begin(), it, std::next(it));
}

std::shared_ptr<Image> ImagesImpl::by_slot(uint32_t slot) {
  std::optional<store::Digest> manifest;
  registry::Reference source;
  {
    MutexLock lock(mu_);
    if (slot == 0 || slot > slots_.size()) return nullptr;
    Slot& s = slots_[slot - 1];
    if (s.open) {
      s.used = now();
      return s.open;
    }
    manifest = s.manifest;
    source = s.source;
  }
  // Closed for being idle: open it again, through the same path as a lookup (a new lease). The
  // image may have left the store meanwhile (gc, rm): its inode numbers then mean nothing.
  auto reopened = open(*manifest, source);
  if (!reopened.ok()) {
    failed(source.familiar(),
           reopened.error().context("cannot reopen " + manifest->str() +
                                    " (closed while idle); look the name up again"));
    return nullptr;
  }
  return *reopened;
}

size_t ImagesImpl::close_idle() {
  if (options_.idle.count() <= 0) return 0;
  std::vector<std::shared_ptr<ImageImpl>> closing;  // released outside the lock
  std::vector<std::string> names;
  {
    MutexLock lock(mu_);
    auto t = now();
    for (Slot& s : slots_) {
      // Held by images_ and the slot only: no call is under way, no file is open.
      if (!s.open || t - s.used < options_.idle || s.open.use_count() > 2 || s.tree_refs > 0)
        continue;
      images_.erase(s.manifest.str());
      names.push_back(s.source.familiar() + " (" + s.manifest.str() + ")");
      closing.push_back(std::move(s.open));
      s.open = nullptr;
    }
  }
  if (closing.empty()) return 0;
  size_t n = closing.size();
  closing.clear();  // trees, archives and leases go here
  ::malloc_trim(0);
  for (const std::string& name : names)
    note(name + ": closed after being idle; its lease is released (gc may remove it)");
  return n;
}

void ImagesImpl::tree_refs(uint32_t slot, int64_t delta) {
  MutexLock lock(mu_);
  if (slot == 0 || slot > slots_.size()) return;
  uint64_t& refs = slots_[slot - 1].tree_refs;
  if (delta >= 0)
    refs += static_cast<uint64_t>(delta);
  else
    refs -= std::min(refs, static_cast<uint64_t>(-delta));
}

void ImagesImpl::start_sweeper() {
  if (options_.idle.count() <= 0) return;
  // Often enough that an image closes within a quarter of the idle time after it is due.
  auto period = std::clamp<std::chrono::milliseconds>(options_.idle / 4, std::chrono::seconds(1),
                                                      std::chrono::seconds(60));
  // No signal is for this thread: the daemon's stop signals go to its sigwait thread (fs/ops.cpp
  // blocks them only later, for the threads it starts). Blocked before it starts, so that none
  // arrives in between.
  sigset_t all;
  sigset_t old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  sweeper_ = std::thread([this, period] {
    while (true) {
      {
        MutexLock lock(sweep_mu_);
        if (!sweep_stop_) sweep_wake_.wait_for(sweep_mu_, period);
        if (sweep_stop_) return;
      }
      try {  // no exception leaves a thread; the next pass tries again
        close_idle();
      } catch (...) {
      }
    }
  });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void ImagesImpl::stop_sweeper() {
  {
    MutexLock lock(sweep_mu_);
    sweep_stop_ = true;
  }
  sweep_wake_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
}

std::string ImagesImpl::status_json() const {
  nlohmann::json status;
  MutexLock lock(mu_);
  status["images_open"] = images_.size();
  nlohmann::json& tasks = status["in_flight"] = nlohmann::json::array();
  auto now = SteadyClock::now();
  for (const auto& [id, task] : tasks_) {
    nlohmann::json t{{"image", printable(task.image)},
                     {"task", printable(task.what)},
                     {"seconds", std::chrono::duration<double>(now - task.started).count()}};
    if (task.total > 0) {
      t["bytes"] = task.bytes;
      t["total_bytes"] = task.total;
    }
    tasks.push_back(std::move(t));
  }
  nlohmann::json& errors = status["recent_errors"] = nlohmann::json::array();
  for (const RecentError& e : recent_) {
    errors.push_back(
        {{"time", e.time}, {"image", e.image}, {"errno", errno_name(e.code)}, {"error", e.line}});
  }
  status["served_by_mirrors"] = nlohmann::json::array();
  for (const nlohmann::json& entry : served_) status["served_by_mirrors"].push_back(entry);
  // Every string above is printable() (valid UTF-8): dump cannot throw; `replace` is the belt.
  return status.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

Result<std::shared_ptr<Images>> Images::create(std::shared_ptr<store::BlobStore> blobs,
                                               std::shared_ptr<store::Catalog> catalog,
                                               ImagesOptions options) {
  IMAGEFS_TRY(puller, registry::Puller::create(blobs, catalog, options.registry));
  IMAGEFS_TRY(layers, overlay::LayerCache::create(blobs));
  IMAGEFS_TRY(maker, cpio::ArchiveMaker::create(blobs));
  IMAGEFS_TRY(erofs, erofs::ImageMaker::create(blobs));
  auto images = std::make_shared<ImagesImpl>(std::move(blobs), std::move(catalog),
                                             std::move(options), std::move(puller),
                                             std::move(layers), std::move(maker), std::move(erofs));
  images->start_sweeper();
  return std::shared_ptr<Images>(std::move(images));
}

}  // namespace imagefs::fs
