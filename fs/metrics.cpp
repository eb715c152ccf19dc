// The daemon's metric catalog (fs/metrics.h): names, help texts, labels and buckets, in the order
// they are rendered. docs/METRICS.md describes each; keep the two in step.
#include "fs/metrics.h"

#include <cstring>
#include <ctime>

#include "common/mutex.h"
#include "store/usage.h"

namespace imagefs::fs {
namespace {

using metrics::Label;

// Latency buckets, in seconds. Lookups: microseconds when cached, a registry's round trip or a
// download when not. First byte: an archive made on open may take seconds. Pulls: up to minutes.
const std::vector<double> kLookupBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                            0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                            1,      2.5,     5,      10,    30};
const std::vector<double> kFirstByteBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
const std::vector<double> kPullBuckets = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                          5,    10,    30,   60,  120,  300, 600};

// Registries are what users type (reference domains): bounded.
constexpr size_t kMaxRegistries = 64;
constexpr size_t kMaxErrnos = 64;
constexpr size_t kFileKinds = static_cast<size_t>(FileKind::count);
// A walk of the store costs a stat per file: at most this often.
constexpr std::chrono::seconds kStoreMeasureEvery{30};

}  // namespace

std::string errno_label(int code) {
  const char* name = ::strerrorname_np(code);
  return name != nullptr ? name : "E" + std::to_string(code);
}

DaemonMetrics::DaemonMetrics() {
  metrics::Registry& r = registry;
  auto& lookups =
      r.counter("imagefs_lookups_total",
                "Names looked up in the mount (answered or failed), by the kind of file "
                "the name is.",
                {Label{"file", kFileKinds}});
  auto& lookup_seconds = r.histogram(
      "imagefs_lookup_duration_seconds",
      "Time to answer a lookup, by kind of file: a registry round trip, a download or an archive "
      "build when the answer is not in memory.",
      kLookupBuckets, {Label{"file", kFileKinds}});
  auto& opens =
      r.counter("imagefs_opens_total", "Files opened, by kind.", {Label{"file", kFileKinds}});
  auto& reads = r.counter("imagefs_reads_total",
                          "Read requests served (the kernel's page cache answers repeated reads "
                          "of immutable files without asking), by kind.",
                          {Label{"file", kFileKinds}});
  auto& read_bytes = r.counter("imagefs_read_bytes_total", "Bytes served by reads, by kind.",
                               {Label{"file", kFileKinds}});
  auto& first_byte = r.histogram(
      "imagefs_first_byte_seconds",
      "Time from the open of a generated archive to the reply of its first read, by file.",
      kFirstByteBuckets, {Label{"file", kFileKinds}});
  for (size_t i = 0; i < kFileKinds; ++i) {
    auto kind = static_cast<FileKind>(i);
    std::string_view name = file_kind_name(kind);
    lookups_[i] = &lookups.with({name});
    lookup_seconds_[i] = &lookup_seconds.with({name});
    opens_[i] = &opens.with({name});
    reads_[i] = &reads.with({name});
    read_bytes_[i] = &read_bytes.with({name});
    // Only the generated files have a first byte worth timing.
    first_byte_seconds_[i] = is_generated(kind) ? &first_byte.with({name}) : nullptr;
  }
  request_errors_ =
      &r.counter("imagefs_request_errors_total",
                 "Requests answered with an error, by operation (lookup, getattr, readdir, open, "
                 "read) and errno. ENOENT of lookups is routine (shells search PATH).",
                 {Label{"op", 5}, Label{"errno", kMaxErrnos}});
  image_errors_ = &r.counter("imagefs_image_errors_total",
                             "Failures of images (resolving, downloading, reading layers, making "
                             "archives), as `imagefs status` lists them, by errno.",
                             {Label{"errno", kMaxErrnos}});
  pulls_ = &r.counter("imagefs_pulls_total",
                      "Registry work: tags resolved (step=resolve) and image layers downloaded "
                      "(step=layers), by registry and result (ok, error).",
                      {Label{"registry", kMaxRegistries}, Label{"step", 2}, Label{"result", 2}});
  pull_bytes_ = &r.counter("imagefs_pull_bytes_total", "Layer bytes downloaded, by registry.",
                           {Label{"registry", kMaxRegistries}});
  pull_seconds_ = &r.histogram("imagefs_pull_duration_seconds",
                               "Time of a resolve or of an image's layer download, by step.",
                               kPullBuckets, {Label{"step", 2}});
  archives_ = &r.counter("imagefs_archives_total",
                         "Archives put together: taken whole from a cached plan (how=cached) or "
                         "planned, with missing segments compressed (how=made), by file.",
                         {Label{"file", kFileKinds}, Label{"how", 2}});
  segments_ = &r.counter("imagefs_archive_segments_total",
                         "Segments of the archives made: compressed now (outcome=made) or found "
                         "in the store (outcome=reused), by file.",
                         {Label{"file", kFileKinds}, Label{"outcome", 2}});
  images_open_ = &r.gauge("imagefs_images_open",
                          "Images open (leased: gc keeps them), closed after --idle unused.")
                      .with({});
  store_bytes_ = &r.gauge("imagefs_store_bytes",
                          "Bytes in the store by kind (blobs, derived, segments, plans, partials, "
                          "catalog, other), as du -sb counts them; measured at most every 30 s.",
                          {Label{"kind", 8}});
  store_measured_ = &r.gauge("imagefs_store_measured_timestamp_seconds",
                             "When imagefs_store_bytes was measured (unix time).")
                         .with({});
  start_time_ =
      &r.gauge("imagefs_start_time_seconds", "When the daemon started (unix time).").with({});
  for (std::string_view step : {"resolve", "layers"}) pull_seconds_->with({step});
}

void DaemonMetrics::request_error(std::string_view op, int code) {
  request_errors_->with({op, errno_label(code)}).inc();
}

void DaemonMetrics::image_error(int code) { image_errors_->with({errno_label(code)}).inc(); }

void DaemonMetrics::pull(std::string_view host, std::string_view step, bool ok,
                         std::chrono::steady_clock::duration took) {
  pulls_->with({host, step, ok ? "ok" : "error"}).inc();
  pull_seconds_->with({step}).observe(std::chrono::duration<double>(took).count());
}

metrics::Counter& DaemonMetrics::pull_bytes(std::string_view host) {
  return pull_bytes_->with({host});
}

void DaemonMetrics::archive(FileKind file, bool cached, size_t segments_made,
                            size_t segments_reused) {
  std::string_view name = file_kind_name(file);
  archives_->with({name, cached ? "cached" : "made"}).inc();
  segments_->with({name, "made"}).inc(segments_made);
  segments_->with({name, "reused"}).inc(segments_reused);
}

DaemonMetrics& daemon_metrics() {
  static DaemonMetrics* metrics = new DaemonMetrics();  // never destroyed: threads may count late
  return *metrics;
}

std::string render_metrics(const std::filesystem::path& store_root) {
  static Mutex mu;
  static std::filesystem::path measured_root;
  static std::chrono::steady_clock::time_point measured_at;
  DaemonMetrics& m = daemon_metrics();
  {
    // Concurrent scrapes wait for one walk rather than each making their own.
    MutexLock lock(mu);
    auto now = std::chrono::steady_clock::now();
    if (measured_root != store_root || measured_at == std::chrono::steady_clock::time_point{} ||
        now - measured_at >= kStoreMeasureEvery) {
      Result<store::DiskUsage> usage = store::disk_usage(store_root);
      if (usage.ok()) {
        const store::DiskUsage& u = *usage;
        for (auto [kind, bytes] : {std::pair<std::string_view, uint64_t>{"blobs", u.blobs},
                                   {"derived", u.derived},
                                   {"segments", u.segments},
                                   {"plans", u.plans},
                                   {"partials", u.partials},
                                   {"catalog", u.catalog},
                                   {"other", u.other}})
          m.store_bytes(kind).set(static_cast<double>(bytes));
        m.store_measured().set(static_cast<double>(::time(nullptr)));
        measured_root = store_root;
        measured_at = now;
      }
    }
  }
  return m.registry.render();
}

}  // namespace imagefs::fs
