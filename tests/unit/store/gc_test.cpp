// gc and rm over a real BlobStore and Catalog: least recently used first, shared blobs stay,
// leased images stay, unreferenced blobs and partials go after a day, derived products go with
// their blobs, shared derived files (archive segments and plans) are counted and go by last use.
#include "store/gc.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <iterator>

#include "store/derived.h"
#include "store/file_util.h"
#include "store/lease.h"
#include "tests/unit/store/store_test_util.h"

namespace imagefs::store {
namespace {

namespace fs = std::filesystem;
using testing::as_bytes;
using testing::pattern;
using testing::TempDir;

constexpr int64_t kDay = 24 * 60 * 60;
constexpr uint64_t kNoLimit = UINT64_MAX;

class Gc : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = BlobStore::open(dir_.path());
    ASSERT_TRUE(b.ok()) << b.error().message;
    blobs_ = *b;
    auto c = Catalog::open(Catalog::file_in(dir_.path()));
    ASSERT_TRUE(c.ok()) << c.error().message;
    catalog_ = *c;
  }

  Digest put_blob(const std::string& data) {
    Digest d = Digest::of(data);
    EXPECT_TRUE(blobs_->put(d, data).ok());
    return d;
  }

  // An image named `name` (ref "test/<name>:1", linux/amd64): a 100-byte manifest and config,
  // and the given layers, stored and recorded.
  ImageRecord add_image(const std::string& name, int64_t last_used,
                        const std::vector<std::string>& layers) {
    std::string manifest = "manifest of " + name;
    manifest.resize(100, ' ');
    std::string config = "config of " + name;
    config.resize(100, ' ');
    ImageRecord image{put_blob(manifest),
                      "application/vnd.oci.image.manifest.v1+json",
                      put_blob(config),
                      "linux/amd64",
                      {},
                      200,
                      1000,
                      last_used};
    for (const std::string& layer : layers) {
      image.layers.push_back(
          LayerRecord{put_blob(layer), "application/vnd.oci.image.layer.v1.tar", layer.size(), {}});
      image.size += layer.size();
    }
    EXPECT_TRUE(catalog_->put_image(image).ok());
    EXPECT_TRUE(
        catalog_
            ->put_ref(RefRecord{ref_name(name), "linux/amd64", image.manifest, std::nullopt, 1000})
            .ok());
    return image;
  }

  static std::string ref_name(const std::string& name) { return "test/" + name + ":1"; }

  static int64_t now() { return static_cast<int64_t>(std::time(nullptr)); }

  [[nodiscard]] bool has_image(const ImageRecord& image) const {
    auto got = catalog_->image(image.manifest);
    return got.ok() && got->has_value();
  }
  // Every blob of the image is present, or (all_gone) none is.
  [[nodiscard]] bool blobs_present(const ImageRecord& image) const {
    bool all = blobs_->contains(image.manifest) && blobs_->contains(image.config);
    for (const LayerRecord& l : image.layers) all = all && blobs_->contains(l.digest);
    return all;
  }

  TempDir dir_;
  std::shared_ptr<BlobStore> blobs_;
  std::shared_ptr<Catalog> catalog_;
};

TEST_F(Gc, LeastRecentlyUsedGoFirstUntilUnderTheLimit) {
  ImageRecord a = add_image("a", 100, {pattern(10'000, 1)});
  ImageRecord b = add_image("b", 300, {pattern(10'000, 2)});
  ImageRecord c = add_image("c", 200, {pattern(10'000, 3)});
  auto report = collect(*blobs_, *catalog_, 15'000, now());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->images_removed, (std::vector<Digest>{a.manifest, c.manifest}));
  ASSERT_EQ(report->refs_removed.size(), 2u);
  EXPECT_EQ(report->refs_removed[0].reference, ref_name("a"));
  EXPECT_EQ(report->refs_removed[1].reference, ref_name("c"));
  EXPECT_EQ(report->size_before, 30'600u);
  EXPECT_EQ(report->size_after, 10'200u);
  EXPECT_EQ(report->bytes_freed(), 20'400u);
  EXPECT_EQ(report->blobs_removed.size(), 6u);
  EXPECT_FALSE(has_image(a));
  EXPECT_FALSE(has_image(c));
  EXPECT_TRUE(has_image(b));
  EXPECT_TRUE(blobs_present(b));
  EXPECT_FALSE(blobs_->contains(a.layers[0].digest));
  EXPECT_FALSE(blobs_->contains(c.manifest));
  EXPECT_EQ(catalog_->refs()->size(), 1u);
  EXPECT_TRUE(blobs_->verify()->empty());

  auto again = collect(*blobs_, *catalog_, 15'000, now());
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->images_removed.empty()) << "under the limit: nothing to do";
}

TEST_F(Gc, BlobsSharedWithAKeptImageStay) {
  std::string shared = pattern(20'000, 1);
  ImageRecord a = add_image("a", 100, {shared, pattern(5000, 2)});
  ImageRecord b = add_image("b", 200, {shared});
  auto report = collect(*blobs_, *catalog_, 25'000, now());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->images_removed, std::vector<Digest>{a.manifest});
  EXPECT_TRUE(blobs_->contains(a.layers[0].digest)) << "b still uses it";
  EXPECT_FALSE(blobs_->contains(a.layers[1].digest));
  EXPECT_TRUE(blobs_present(b));
  EXPECT_EQ(report->size_after, 20'200u);
}

TEST_F(Gc, ImagesInUseAreNeverRemoved) {
  ImageRecord a = add_image("a", 100, {pattern(1000, 1)});
  ImageRecord b = add_image("b", 200, {pattern(1000, 2)});
  auto lease = Lease::image(dir_.path(), a.manifest);
  ASSERT_TRUE(lease.ok());
  auto report = collect(*blobs_, *catalog_, 0, now());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->images_in_use, std::vector<Digest>{a.manifest});
  EXPECT_EQ(report->images_removed, std::vector<Digest>{b.manifest});
  EXPECT_TRUE(has_image(a));
  EXPECT_TRUE(blobs_present(a));
  EXPECT_EQ(report->size_after, 1200u) << "over the limit, as far as the leases allow";
}

TEST_F(Gc, UnreferencedBlobsGoAfterADay) {
  ImageRecord a = add_image("a", 100, {pattern(1000, 1)});
  Digest orphan = put_blob("left by a pull that died");
  Digest index = put_blob("an image index");
  ASSERT_TRUE(
      catalog_->put_ref(RefRecord{"test/multi:1", "linux/amd64", a.manifest, index, 1}).ok());

  auto young = collect(*blobs_, *catalog_, kNoLimit, now());
  ASSERT_TRUE(young.ok()) << young.error().message;
  EXPECT_TRUE(young->blobs_removed.empty());
  EXPECT_TRUE(blobs_->contains(orphan));

  auto old = collect(*blobs_, *catalog_, kNoLimit, now() + 2 * kDay);
  ASSERT_TRUE(old.ok()) << old.error().message;
  ASSERT_EQ(old->blobs_removed.size(), 1u);
  EXPECT_EQ(old->blobs_removed[0].digest, orphan);
  EXPECT_TRUE(blobs_->contains(index)) << "a ref's index is referenced";
  EXPECT_TRUE(blobs_present(a));
}

TEST_F(Gc, StalePartialsGoUnlessBeingWritten) {
  Digest stale = Digest::of(std::string_view("stale"));
  Digest busy = Digest::of(std::string_view("busy"));
  {
    auto w = blobs_->open_writer(stale);
    ASSERT_TRUE((*w)->write(as_bytes("12345")).ok());
  }
  auto writer = blobs_->open_writer(busy);
  ASSERT_TRUE((*writer)->write(as_bytes("123")).ok());
  auto young = collect(*blobs_, *catalog_, kNoLimit, now());
  ASSERT_TRUE(young.ok());
  EXPECT_TRUE(young->partials_removed.empty());
  auto old = collect(*blobs_, *catalog_, kNoLimit, now() + 2 * kDay);
  ASSERT_TRUE(old.ok()) << old.error().message;
  ASSERT_EQ(old->partials_removed.size(), 1u);
  EXPECT_EQ(old->partials_removed[0].digest, stale);
  EXPECT_EQ(old->bytes_freed(), 5u);
  EXPECT_TRUE((*writer)->write(as_bytes("45")).ok()) << "the busy writer carries on";
}

TEST_F(Gc, PartialsCountInTheSizeAndGoFirstOverTheLimit) {
  ImageRecord a = add_image("a", 100, {pattern(1000, 1)});  // 1200 bytes
  Digest big = Digest::of(std::string_view("a blob being downloaded"));
  {
    auto w = blobs_->open_writer(big);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->write(as_bytes(pattern(5000, 3))).ok());
  }
  auto young = collect(*blobs_, *catalog_, kNoLimit, now());
  ASSERT_TRUE(young.ok()) << young.error().message;
  EXPECT_TRUE(young->partials_removed.empty());
  EXPECT_EQ(young->size_before, 6200u) << "the partial counts in the store's size";
  EXPECT_EQ(young->size_after, 6200u);

  // Over the limit, the young partial goes before any image.
  auto over = collect(*blobs_, *catalog_, 2000, now());
  ASSERT_TRUE(over.ok()) << over.error().message;
  ASSERT_EQ(over->partials_removed.size(), 1u);
  EXPECT_EQ(over->partials_removed[0].digest, big);
  EXPECT_TRUE(over->images_removed.empty());
  EXPECT_TRUE(has_image(a));
  EXPECT_EQ(over->size_before, 6200u);
  EXPECT_EQ(over->size_after, 1200u);
  EXPECT_EQ(over->bytes_freed(), 5000u);
  EXPECT_TRUE(blobs_->list_partials().value().empty());

  // A stale partial removed in step 1 counts in the size before, not after.
  {
    auto w = blobs_->open_writer(big);
    ASSERT_TRUE((*w)->write(as_bytes(pattern(700, 4))).ok());
  }
  auto stale = collect(*blobs_, *catalog_, kNoLimit, now() + 2 * kDay);
  ASSERT_TRUE(stale.ok()) << stale.error().message;
  ASSERT_EQ(stale->partials_removed.size(), 1u);
  EXPECT_EQ(stale->size_before, 1900u);
  EXPECT_EQ(stale->size_after, 1200u);
}

TEST_F(Gc, ImagesNoRefNamesAreRemoved) {
  ImageRecord named = add_image("named", 100, {pattern(1000, 1)});
  ImageRecord unnamed = add_image("unnamed", 200, {pattern(1000, 2)});
  ASSERT_TRUE(catalog_->remove_ref(ref_name("unnamed"), "linux/amd64").ok());
  auto report = collect(*blobs_, *catalog_, kNoLimit, now());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->images_removed, std::vector<Digest>{unnamed.manifest});
  EXPECT_FALSE(blobs_present(unnamed));
  EXPECT_TRUE(has_image(named));
}

TEST_F(Gc, RemoveReferenceFreesTheImageWithItsLastName) {
  std::string shared = pattern(3000, 9);
  ImageRecord a = add_image("a", 100, {shared, pattern(1000, 1)});
  ImageRecord b = add_image("b", 200, {shared});
  Digest index = put_blob("index of a:latest");
  ASSERT_TRUE(
      catalog_->put_ref(RefRecord{"test/a:latest", "linux/amd64", a.manifest, index, 1}).ok());

  auto first = remove_reference(*blobs_, *catalog_, ref_name("a"), "linux/amd64");
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(first->refs_removed.size(), 1u);
  EXPECT_TRUE(first->images_removed.empty()) << "test/a:latest still names it";
  EXPECT_TRUE(blobs_present(a));

  auto last = remove_reference(*blobs_, *catalog_, "test/a:latest", "");
  ASSERT_TRUE(last.ok()) << last.error().message;
  EXPECT_EQ(last->images_removed, std::vector<Digest>{a.manifest});
  EXPECT_FALSE(has_image(a));
  EXPECT_FALSE(blobs_->contains(a.manifest));
  EXPECT_FALSE(blobs_->contains(a.layers[1].digest));
  EXPECT_FALSE(blobs_->contains(index)) << "the index went with its ref";
  EXPECT_TRUE(blobs_->contains(a.layers[0].digest)) << "shared with b";
  EXPECT_TRUE(blobs_present(b));

  auto absent = remove_reference(*blobs_, *catalog_, ref_name("a"), "");
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.error().code, ENOENT);
  EXPECT_EQ(absent.error().message, "no image test/a:1 in the store");
}

TEST_F(Gc, RemoveReferenceWithoutPlatformTakesEveryPlatform) {
  ImageRecord amd = add_image("multi", 100, {pattern(1000, 1)});
  ImageRecord arm = add_image("multi-arm", 100, {pattern(1000, 2)});
  ASSERT_TRUE(catalog_->remove_ref(ref_name("multi-arm"), "linux/amd64").ok());
  ASSERT_TRUE(
      catalog_->put_ref(RefRecord{ref_name("multi"), "linux/arm64", arm.manifest, std::nullopt, 1})
          .ok());
  auto report = remove_reference(*blobs_, *catalog_, ref_name("multi"), "");
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->refs_removed.size(), 2u);
  EXPECT_EQ(report->images_removed.size(), 2u);
  EXPECT_FALSE(has_image(amd));
  EXPECT_FALSE(has_image(arm));
  EXPECT_TRUE(blobs_->list()->empty());
}

TEST_F(Gc, RemoveReferenceKeepsAnImageInUseForALaterGc) {
  ImageRecord a = add_image("a", 100, {pattern(1000, 1)});
  {
    auto lease = Lease::image(dir_.path(), a.manifest);
    ASSERT_TRUE(lease.ok());
    auto report = remove_reference(*blobs_, *catalog_, ref_name("a"), "linux/amd64");
    ASSERT_TRUE(report.ok()) << report.error().message;
    EXPECT_EQ(report->refs_removed.size(), 1u);
    EXPECT_EQ(report->images_in_use, std::vector<Digest>{a.manifest});
    EXPECT_TRUE(has_image(a));
    EXPECT_TRUE(blobs_present(a));
  }
  auto report = collect(*blobs_, *catalog_, kNoLimit, now());
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->images_removed, std::vector<Digest>{a.manifest});
  EXPECT_TRUE(blobs_->list()->empty());
}

// A committed product "layer" of `blob`, holding one file.
void build_product(const BlobStore& blobs, const Digest& blob) {
  auto build = DerivedBuild::begin(blobs, blob, "layer", IfPresent::keep);
  ASSERT_TRUE(build.ok()) << build.error().message;
  std::ofstream((*build)->dir() / "index") << "index";
  ASSERT_TRUE((*build)->commit().ok());
}

TEST_F(Gc, DerivedProductsGoWithTheirBlobAndStaleBuildsGo) {
  ImageRecord a = add_image("a", 100, {pattern(1000, 1)});
  ImageRecord b = add_image("b", 200, {pattern(1000, 2)});
  Digest la = a.layers[0].digest;
  Digest lb = b.layers[0].digest;
  build_product(*blobs_, la);
  build_product(*blobs_, lb);
  // A builder that died: its temporary directory, no lock holder.
  fs::create_directories(blobs_->derived_dir(lb) / "segments.tmp");
  // A builder at work: its lock is held, so gc must leave its directory alone.
  auto busy = DerivedBuild::begin(*blobs_, lb, "other", IfPresent::keep);
  ASSERT_TRUE(busy.ok());
  // Products of a blob that is gone (a crash between removing them and their blob, or older).
  Digest gone = Digest::of(std::string_view("gone"));
  fs::create_directories(blobs_->derived_dir(gone) / "layer");
  fs::create_directories(blobs_->root() / "derived" / "not-a-digest");

  auto report = collect(*blobs_, *catalog_, 1500, now());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->images_removed, std::vector<Digest>{a.manifest});
  EXPECT_FALSE(fs::exists(blobs_->derived_dir(la))) << "removed with its blob";
  EXPECT_TRUE(fs::exists(blobs_->derived_dir(lb) / "layer" / "index"));
  EXPECT_FALSE(fs::exists(blobs_->derived_dir(lb) / "segments.tmp"));
  EXPECT_TRUE(fs::exists((*busy)->dir())) << "a build in progress stays";
  EXPECT_FALSE(fs::exists(blobs_->derived_dir(gone)));
  EXPECT_TRUE(fs::exists(blobs_->root() / "derived" / "not-a-digest")) << "not ours";

  ASSERT_TRUE((*busy)->commit().ok());
  EXPECT_TRUE(fs::exists(blobs_->derived_dir(lb) / "other"));
  auto none = DerivedBuild::begin(*blobs_, lb, "Bad/Name", IfPresent::keep);
  EXPECT_FALSE(none.ok());
}

TEST_F(Gc, DerivedBytesCountTowardTheLimit) {
  // Two images of 1,200 blob bytes each: under a 3,000-byte limit by blobs alone, but a's
  // derived product (an ingested layer, say) takes the store over it.
  ImageRecord a = add_image("a", 100, {pattern(1000, 1)});
  ImageRecord b = add_image("b", 200, {pattern(1000, 2)});
  fs::path product = blobs_->derived_dir(a.layers[0].digest) / "layer";
  fs::create_directories(product);
  {
    std::ofstream f(product / "data", std::ios::binary);
    f << pattern(2000, 3);
  }
  auto report = collect(*blobs_, *catalog_, 3000, now());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->size_before, 4400u);
  EXPECT_EQ(report->images_removed, std::vector<Digest>{a.manifest});
  EXPECT_EQ(report->size_after, 1200u);
  EXPECT_FALSE(fs::exists(product));
  EXPECT_TRUE(has_image(b));
}

// A shared derived file of `size` bytes, last used `age` seconds before now.
SharedFile add_shared(const fs::path& root, std::string_view kind, uint32_t seed, size_t size,
                      int64_t age) {
  const std::string key(Digest::of(pattern(8, seed)).hex());
  auto built = build_shared(root, kind, key, Sync::no, [&](int fd, const fs::path& tmp) {
    size_t written = 0;
    const std::string bytes = pattern(size, seed);
    return detail::write_all(fd, bytes.data(), bytes.size(), tmp, &written);
  });
  EXPECT_TRUE(built.ok() && *built == Built::now);
  const fs::path path = shared_path(root, kind, key);
  const int64_t when = static_cast<int64_t>(std::time(nullptr)) - age;
  const struct timespec t[2] = {{when, 0}, {when, 0}};
  EXPECT_EQ(::utimensat(AT_FDCWD, path.c_str(), t, 0), 0);
  return SharedFile{path, size, when};
}

TEST(SharedFiles, BuiltOnceReplacedWholeAndListed) {
  TempDir dir;
  const std::string key(64, 'c');
  int calls = 0;
  auto write = [&](int fd, const fs::path& tmp) {
    ++calls;
    size_t written = 0;
    return detail::write_all(fd, "bytes", 5, tmp, &written);
  };
  auto first = build_shared(dir.path(), "gzip", key, Sync::yes, write);
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(*first, Built::now);
  auto second = build_shared(dir.path(), "gzip", key, Sync::yes, write);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, Built::already);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(shared_path(dir.path(), "gzip", key), dir.path() / "segments" / "gzip" / key);

  ASSERT_TRUE(replace_shared(dir.path(), "plans", key, "one").ok());
  ASSERT_TRUE(replace_shared(dir.path(), "plans", key, "two").ok());
  std::ifstream in(shared_path(dir.path(), "plans", key));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "two");

  EXPECT_EQ(build_shared(dir.path(), "Bad/Kind", key, Sync::no, write).error().code, EINVAL);
  EXPECT_EQ(replace_shared(dir.path(), "plans", "not-hex", "x").error().code, EINVAL);

  // A failed write leaves nothing behind.
  auto failed = build_shared(
      dir.path(), "gzip", std::string(64, 'd'), Sync::yes,
      [](int, const fs::path&) -> Result<void> { return make_error(EIO, "compressor failed"); });
  ASSERT_FALSE(failed.ok());
  EXPECT_FALSE(fs::exists(shared_path(dir.path(), "gzip", std::string(64, 'd'))));
  EXPECT_FALSE(fs::exists(dir.path() / "segments" / "gzip" / (std::string(64, 'd') + ".tmp")));

  // Leftovers of dead writers go; names that are not ours stay.
  std::ofstream(dir.path() / "segments" / "gzip" / (std::string(64, 'e') + ".tmp")) << "dead";
  std::ofstream(dir.path() / "segments" / "gzip" / "README") << "not ours";
  auto listed = list_shared(dir.path(), static_cast<int64_t>(std::time(nullptr)) + 10);
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  EXPECT_EQ(listed->size(), 2u);
  EXPECT_FALSE(fs::exists(dir.path() / "segments" / "gzip" / (std::string(64, 'e') + ".tmp")));
  EXPECT_TRUE(fs::exists(dir.path() / "segments" / "gzip" / "README"));
}

// The shared files count toward --max-size, and go in one order of last use with images.
TEST_F(Gc, SharedFilesCountAndGoByLastUseWithImages) {
  const int64_t t = now();
  ImageRecord a = add_image("a", t - 5 * kDay, {pattern(1000, 1)});
  ImageRecord b = add_image("b", t - 2 * kDay, {pattern(1000, 2)});
  SharedFile older = add_shared(dir_.path(), "gzip", 10, 3000, 6 * kDay);
  SharedFile between = add_shared(dir_.path(), "plans", 11, 3000, 3 * kDay);
  SharedFile today = add_shared(dir_.path(), "zstd", 12, 3000, 3600);
  SharedFile stale = add_shared(dir_.path(), "gzip", 13, 500, 8 * kDay);

  auto counted = collect(*blobs_, *catalog_, kNoLimit, t);
  ASSERT_TRUE(counted.ok()) << counted.error().message;
  EXPECT_EQ(counted->size_before, 2400u + 9500u);
  ASSERT_EQ(counted->shared_removed.size(), 1u) << "unused for a week goes whatever the size";
  EXPECT_EQ(counted->shared_removed[0].path, stale.path);
  EXPECT_EQ(counted->size_after, 2400u + 9000u);

  // 11,400 bytes down to 5,000: the oldest first (older, then image a, then between), and the
  // file used today stays even though the store is still over the limit afterwards.
  auto report = collect(*blobs_, *catalog_, 5000, t);
  ASSERT_TRUE(report.ok()) << report.error().message;
  ASSERT_EQ(report->shared_removed.size(), 2u);
  EXPECT_EQ(report->shared_removed[0].path, older.path);
  EXPECT_EQ(report->shared_removed[1].path, between.path);
  EXPECT_EQ(report->images_removed, std::vector<Digest>{a.manifest});
  EXPECT_TRUE(has_image(b));
  EXPECT_TRUE(fs::exists(today.path));
  EXPECT_EQ(report->size_after, 1200u + 3000u);
  EXPECT_EQ(report->bytes_freed(), 6000u + 1200u);
}

}  // namespace
}  // namespace imagefs::store
