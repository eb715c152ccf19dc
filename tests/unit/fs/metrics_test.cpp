// fs/metrics.h through the file system without FUSE: MOUNT/.metrics (listed, made per open,
// direct_io), and the counters that lookups, opens, reads, errors and archive makes move. The
// catalog is the process's: each test compares values before and after.
#include "fs/metrics.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "store/usage.h"
#include "tests/unit/fs/fs_test_env.h"

namespace imagefs::fs {
namespace {

using testing::must_lookup;
using testing::read_ino;

// The value of the sample `series` (name and labels exactly as rendered), or -1 when absent.
double sample(const std::string& text, const std::string& series) {
  size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  at += series.size() + 2;
  return std::stod(text.substr(at, text.find('\n', at) - at));
}

class MetricsTest : public testing::FsEnv {
 protected:
  void SetUp() override {
    FsEnv::SetUp();
    pull_standard();
    m = mount();
  }
  Filesystem& fs() { return *m.fs; }
  std::string metrics_file() {
    Entry e = must_lookup(fs(), ".metrics");
    return read_ino(fs(), e.ino);
  }
  testing::Mounted m;
};

TEST_F(MetricsTest, MetricsFileIsHiddenAtTheTopAndMadePerOpen) {
  Entry e = must_lookup(fs(), ".metrics");
  EXPECT_TRUE(S_ISREG(e.attr.st_mode));
  EXPECT_EQ(e.attr.st_mode & 0777, 0444u);
  EXPECT_EQ(e.attr.st_size, 0) << "the size is known only at open: read with direct_io";
  EXPECT_EQ(e.entry_timeout, 0);
  auto file = fs().open(e.ino, O_RDONLY);
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_TRUE((*file)->direct_io);
  EXPECT_FALSE((*file)->keep_cache);
  EXPECT_EQ((*file)->kind, FileKind::metrics);
  EXPECT_EQ((*file)->size, (*file)->bytes.size());
  const std::string text = (*file)->bytes;
  // The snapshot is fixed for this open; a new open sees what happened since.
  (void)must_lookup(fs(), "python:3.12/digest");
  EXPECT_EQ(testing::read_all(fs(), **file), text);
  std::string later = metrics_file();
  const std::string digest_lookups = "imagefs_lookups_total{file=\"digest\"}";
  EXPECT_GT(sample(later, digest_lookups), sample(text, digest_lookups));
  EXPECT_EQ(fs().open(e.ino, O_WRONLY).error().code, EROFS);
  auto attr = fs().getattr(e.ino);
  ASSERT_TRUE(attr.ok());
  EXPECT_EQ(attr->ino, e.ino);
}

TEST_F(MetricsTest, EveryFamilyHasHelpAndTypeAndTheStoreIsMeasured) {
  std::string text = metrics_file();
  for (const char* family :
       {"imagefs_lookups_total", "imagefs_lookup_duration_seconds", "imagefs_opens_total",
        "imagefs_reads_total", "imagefs_read_bytes_total", "imagefs_first_byte_seconds",
        "imagefs_request_errors_total", "imagefs_image_errors_total", "imagefs_pulls_total",
        "imagefs_pull_bytes_total", "imagefs_pull_duration_seconds", "imagefs_archives_total",
        "imagefs_archive_segments_total", "imagefs_images_open", "imagefs_store_bytes",
        "imagefs_store_measured_timestamp_seconds", "imagefs_start_time_seconds"}) {
    EXPECT_NE(text.find(std::string("# HELP ") + family + " "), std::string::npos) << family;
    EXPECT_NE(text.find(std::string("# TYPE ") + family + " "), std::string::npos) << family;
    EXPECT_TRUE(metrics::valid_name(family)) << family;
  }
  // The store holds the pulled blobs: du -sb's count of blobs/ is theirs.
  EXPECT_EQ(sample(text, "imagefs_store_bytes{kind=\"blobs\"}"),
            static_cast<double>(store::disk_usage(store_root).value().blobs));
  EXPECT_GT(sample(text, "imagefs_store_bytes{kind=\"blobs\"}"), 0);
  // Every file kind has its lookups series from the start.
  for (std::string_view kind : kFileKindNames)
    EXPECT_GE(sample(text, "imagefs_lookups_total{file=\"" + std::string(kind) + "\"}"), 0) << kind;
}

TEST_F(MetricsTest, ArchivesCountLookupsOpensMakesAndServedBytes) {
  std::string before = metrics_file();
  const double images_open = sample(before, "imagefs_images_open");
  Entry gz = must_lookup(fs(), "python:3.12/initramfs.cpio.gz");  // makes the archive
  auto file = fs().open(gz.ino, O_RDONLY);
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_EQ((*file)->kind, FileKind::gzip);
  // fs/ops.cpp counts each read reply; the first one of an archive is its first byte.
  count_served(**file, 1000);
  count_served(**file, static_cast<size_t>((*file)->size - 1000));
  std::string after = metrics_file();
  auto delta = [&](const std::string& series) {
    return sample(after, series) - std::max(0.0, sample(before, series));
  };
  const std::string f = "{file=\"initramfs.cpio.gz\"}";
  EXPECT_EQ(delta("imagefs_lookups_total" + f), 1);
  EXPECT_EQ(delta("imagefs_lookup_duration_seconds_count" + f), 1);
  EXPECT_EQ(delta("imagefs_opens_total" + f), 1);
  EXPECT_EQ(delta("imagefs_reads_total" + f), 2);
  EXPECT_EQ(delta("imagefs_read_bytes_total" + f), static_cast<double>(gz.attr.st_size));
  EXPECT_EQ(delta("imagefs_first_byte_seconds_count" + f), 1) << "one first byte per open";
  EXPECT_EQ(delta("imagefs_archives_total{file=\"initramfs.cpio.gz\",how=\"made\"}"), 1);
  double made =
      delta("imagefs_archive_segments_total{file=\"initramfs.cpio.gz\",outcome=\"made\"}");
  double reused =
      delta("imagefs_archive_segments_total{file=\"initramfs.cpio.gz\",outcome=\"reused\"}");
  EXPECT_GT(made, 0) << "a fresh store compresses the segments";
  EXPECT_EQ(made + reused, static_cast<double>((*file)->archive->stats().segments));
  EXPECT_EQ(sample(after, "imagefs_images_open"), images_open + 1);

  // Another mount of the same store takes the archive whole from the plan: all reused.
  testing::Mounted other = mount();
  (void)must_lookup(*other.fs, "python:3.12/initramfs.cpio.gz");
  std::string third = metrics_file();
  EXPECT_EQ(sample(third, "imagefs_archives_total{file=\"initramfs.cpio.gz\",how=\"cached\"}") -
                std::max(0.0, sample(after,
                                     "imagefs_archives_total{file=\"initramfs.cpio.gz\","
                                     "how=\"cached\"}")),
            1);
  EXPECT_EQ(
      sample(third, "imagefs_archive_segments_total{file=\"initramfs.cpio.gz\",outcome=\"made\"}"),
      sample(after, "imagefs_archive_segments_total{file=\"initramfs.cpio.gz\",outcome=\"made\"}"));
}

TEST_F(MetricsTest, FailedRequestsAreCountedByOperationAndErrno) {
  std::string before = metrics_file();
  const std::string enoent = "imagefs_request_errors_total{op=\"lookup\",errno=\"ENOENT\"}";
  const std::string erofs = "imagefs_request_errors_total{op=\"open\",errno=\"EROFS\"}";
  Entry digest = must_lookup(fs(), "python:3.12/digest");
  EXPECT_FALSE(fs().lookup(must_lookup(fs(), "python:3.12").ino, "no-such-file").ok());
  EXPECT_FALSE(fs().open(digest.ino, O_WRONLY).ok());
  std::string after = metrics_file();
  EXPECT_EQ(sample(after, enoent) - std::max(0.0, sample(before, enoent)), 1);
  EXPECT_EQ(sample(after, erofs) - std::max(0.0, sample(before, erofs)), 1);
  // The failed lookup counts under the kind its name would have had: a directory here.
  EXPECT_GE(sample(after, "imagefs_lookups_total{file=\"directory\"}"), 1);
}

TEST(DaemonMetrics, RegistriesAreBoundedAndErrnosNamed) {
  DaemonMetrics& m = daemon_metrics();
  for (int i = 0; i < 100; ++i)
    m.pull("host" + std::to_string(i) + ".test", "resolve", i % 2 == 0,
           std::chrono::milliseconds(5));
  std::string text = m.registry.render();
  size_t series = 0;
  std::regex pulls("\nimagefs_pulls_total\\{");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), pulls);
       it != std::sregex_iterator(); ++it)
    ++series;
  EXPECT_LE(series, 65u * 2 * 2) << "registries beyond 64 are \"other\"";
  EXPECT_NE(text.find("imagefs_pulls_total{registry=\"other\",step=\"resolve\""),
            std::string::npos);
  EXPECT_EQ(errno_label(ENOENT), "ENOENT");
  EXPECT_EQ(errno_label(EIO), "EIO");
}

}  // namespace
}  // namespace imagefs::fs
