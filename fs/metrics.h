// The daemon's metrics (docs/METRICS.md says what each means and what to alert on): one catalog
// per process, made on first use, rendered by MOUNT/.metrics, `imagefs status --prometheus` and
// `--metrics-listen`. Every label takes values from a fixed set, except `registry` (reference
// domains: at most 64, then "other"), so the series are bounded.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/metrics.h"

namespace imagefs::fs {

// What a lookup, an open or a read was about: the `file` label.
enum class FileKind : size_t {
  directory,  // the top, .platform, a registry, a level of names, an image's directory
  status,     // MOUNT/.status
  metrics,    // MOUNT/.metrics
  rootfs,     // anything under an image's rootfs/
  gzip,       // initramfs.cpio.gz
  zstd,       // initramfs.cpio.zst
  cpio,       // initramfs.cpio
  config,     // config.json
  manifest,   // manifest.json
  digest,     // digest
  erofs,      // rootfs.erofs
  // A new file of an image: add it here, to kFileKindNames, and to file_kind() in
  // fs/filesystem.cpp; is_generated() below says whether it gets a first-byte histogram.
  count,
};
inline constexpr std::array<std::string_view, static_cast<size_t>(FileKind::count)> kFileKindNames =
    {"directory",          "status",         "metrics",     "rootfs",        "initramfs.cpio.gz",
     "initramfs.cpio.zst", "initramfs.cpio", "config.json", "manifest.json", "digest",
     "rootfs.erofs"};
inline std::string_view file_kind_name(FileKind kind) {
  return kFileKindNames[static_cast<size_t>(kind)];
}
// Generated files whose first read may wait on their making (the first-byte histogram).
inline bool is_generated(FileKind kind) {
  return kind == FileKind::gzip || kind == FileKind::zstd || kind == FileKind::cpio ||
         kind == FileKind::erofs;
}

// The `errno` label: "ENOENT" for ENOENT (the names are a fixed set).
std::string errno_label(int code);

class DaemonMetrics {
 public:
  DaemonMetrics();
  DaemonMetrics(const DaemonMetrics&) = delete;
  DaemonMetrics& operator=(const DaemonMetrics&) = delete;

  metrics::Registry registry;

  // Per file kind, looked up once (hot paths: every read).
  metrics::Counter& lookups(FileKind k) { return *lookups_[index(k)]; }
  metrics::Counter& opens(FileKind k) { return *opens_[index(k)]; }
  metrics::Counter& reads(FileKind k) { return *reads_[index(k)]; }
  metrics::Counter& read_bytes(FileKind k) { return *read_bytes_[index(k)]; }
  metrics::Histogram& lookup_seconds(FileKind k) { return *lookup_seconds_[index(k)]; }
  metrics::Histogram& first_byte_seconds(FileKind k) { return *first_byte_seconds_[index(k)]; }

  // A request answered with an error: op is lookup, getattr, readdir, open or read.
  void request_error(std::string_view op, int code);
  // A failure of an image (what `imagefs status` lists: resolve, download, ingest, archive).
  void image_error(int code);
  // One resolve of a tag (step "resolve") or download of an image's layers (step "layers")
  // from registry `host` (a reference domain), its outcome and how long it took.
  void pull(std::string_view host, std::string_view step, bool ok,
            std::chrono::steady_clock::duration took);
  metrics::Counter& pull_bytes(std::string_view host);
  // An archive taken whole from the store ("cached") or planned and built ("made"), with its
  // segments compressed by this call and those found in the store.
  void archive(FileKind file, bool cached, size_t segments_made, size_t segments_reused);

  metrics::Gauge& images_open() { return *images_open_; }
  metrics::Gauge& start_time() { return *start_time_; }
  // The store's bytes by kind (store::DiskUsage's fields), and when they were measured.
  metrics::Gauge& store_bytes(std::string_view kind) { return store_bytes_->with({kind}); }
  metrics::Gauge& store_measured() { return *store_measured_; }

 private:
  static size_t index(FileKind k) { return static_cast<size_t>(k); }
  using PerKind = std::array<metrics::Counter*, static_cast<size_t>(FileKind::count)>;
  using PerKindHistogram = std::array<metrics::Histogram*, static_cast<size_t>(FileKind::count)>;
  PerKind lookups_{};
  PerKind opens_{};
  PerKind reads_{};
  PerKind read_bytes_{};
  PerKindHistogram lookup_seconds_{};
  PerKindHistogram first_byte_seconds_{};
  metrics::Family<metrics::Counter>* request_errors_ = nullptr;
  metrics::Family<metrics::Counter>* image_errors_ = nullptr;
  metrics::Family<metrics::Counter>* pulls_ = nullptr;
  metrics::Family<metrics::Counter>* pull_bytes_ = nullptr;
  metrics::Family<metrics::Histogram>* pull_seconds_ = nullptr;
  metrics::Family<metrics::Counter>* archives_ = nullptr;
  metrics::Family<metrics::Counter>* segments_ = nullptr;
  metrics::Gauge* images_open_ = nullptr;
  metrics::Gauge* start_time_ = nullptr;
  metrics::Family<metrics::Gauge>* store_bytes_ = nullptr;
  metrics::Gauge* store_measured_ = nullptr;
};

// The process's catalog (made on first use; lives until the process ends).
DaemonMetrics& daemon_metrics();

// daemon_metrics() in the text exposition format 0.0.4, with the store's size under
// `store_root` measured first when the last measure is 30 s old or more (a walk of the store,
// which concurrent callers do not repeat). Thread-safe; never fails (an unreadable store keeps
// the last measure).
std::string render_metrics(const std::filesystem::path& store_root);

}  // namespace imagefs::fs
