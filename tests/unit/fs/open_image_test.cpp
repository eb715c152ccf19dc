// ImageOpener: the one sequence that opens an image (reference -> manifest -> lease -> record ->
// layers -> tree), against registry/'s FakeRegistry through the real Puller and a real store.
// The lease must name the image that is returned: a lease left on the image a tag used to name
// would leave the new one to gc while it is in use.
#include "fs/open_image.h"

#include <gtest/gtest.h>

#include <fstream>

#include "store/derived.h"
#include "tests/unit/fs/fs_test_env.h"

namespace imagefs::fs {
namespace {

using testing::Dir;
using testing::File;
using testing::Filter;
using testing::FsEnv;
using testing::kAmd64;
using testing::make_tar;

class OpenImageTest : public FsEnv {
 protected:
  void SetUp() override {
    FsEnv::SetUp();
    old_image = registry::testing::make_image(
        "amd64", {make_tar({Dir("etc"), File("etc/version", "old\n")}, Filter::gzip)});
    new_image = registry::testing::make_image(
        "amd64", {make_tar({Dir("etc"), File("etc/version", "new\n")}, Filter::gzip)});
    fake = std::make_shared<registry::testing::FakeRegistry>(clock);
    fake->host = "localhost:5000";
    registry::testing::push(*fake, "demo/app", "1", old_image);
    auto puller = registry::Puller::create(blobs, catalog, registry_options, fake, clock);
    ASSERT_TRUE(puller.ok()) << puller.error().message;
    auto layers = overlay::LayerCache::create(blobs);
    ASSERT_TRUE(layers.ok());
    opener = std::make_unique<ImageOpener>(blobs, catalog, std::move(*puller), *layers);
    reference = registry::parse_reference("localhost:5000/demo/app:1").value();
  }

  // The tag now names another image.
  void move_tag() { registry::testing::push(*fake, "demo/app", "1", new_image); }

  // The contents of etc/version in `tree`.
  static std::string version_in(overlay::Tree& tree) {
    auto etc = tree.lookup(overlay::kRootIno, "etc");
    EXPECT_TRUE(etc.ok());
    auto file = tree.lookup(etc->ino, "version");
    EXPECT_TRUE(file.ok());
    std::string out(16, '\0');
    auto n = tree.read(file->ino, 0, {reinterpret_cast<uint8_t*>(out.data()), out.size()});
    EXPECT_TRUE(n.ok());
    out.resize(n.ok() ? *n : 0);
    return out;
  }

  registry::testing::TestImage old_image, new_image;
  std::shared_ptr<registry::testing::FakeRegistry> fake;
  std::unique_ptr<ImageOpener> opener;
  registry::Reference reference;
};

TEST_F(OpenImageTest, ResolvesLeasesFetchesLayersAndOpensTheTree) {
  auto image = opener->open(reference, kAmd64, Resolve::stored);
  ASSERT_TRUE(image.ok()) << image.error().message;
  EXPECT_EQ(image->record.manifest, old_image.manifest_digest());
  EXPECT_TRUE(store::in_use(store_root, old_image.manifest_digest()));
  EXPECT_FALSE(opener->has_layers(image->record)) << "open() downloads no layer";
  registry::testing::RecordingProgress progress;
  auto tree = opener->tree(image->record, reference, &progress);
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  EXPECT_TRUE(opener->has_layers(image->record));
  EXPECT_EQ(version_in(**tree), "old\n");
  EXPECT_EQ(progress.count("finished 0"), 1u) << "the download reports its layer";
}

TEST_F(OpenImageTest, StoredTagsNeedNoRegistryUnlessAsked) {
  ASSERT_TRUE(opener->open(reference, kAmd64, Resolve::stored).ok());
  move_tag();
  const size_t before = fake->requests().size();
  auto stored = opener->open(reference, kAmd64, Resolve::stored);
  ASSERT_TRUE(stored.ok()) << stored.error().message;
  EXPECT_EQ(stored->record.manifest, old_image.manifest_digest());
  EXPECT_EQ(fake->requests().size(), before) << "a stored tag was asked of the registry";

  auto asked = opener->open(reference, kAmd64, Resolve::registry);
  ASSERT_TRUE(asked.ok()) << asked.error().message;
  EXPECT_EQ(asked->record.manifest, new_image.manifest_digest());
}

// The bug this fixes: `imagefs build` of a stored tag whose image was incomplete took a lease on
// that image, then pulled the tag, which had moved: the image it went on to use was unleased, so
// a concurrent gc could remove its blobs, and the old one was kept for nothing.
TEST_F(OpenImageTest, TheLeaseFollowsATagThatMovedWhileTheStoredImageWasIncomplete) {
  {
    auto first = opener->open(reference, kAmd64, Resolve::stored);
    ASSERT_TRUE(first.ok()) << first.error().message;
  }
  // The stored image lost its config (a crash, a user's rm of one blob): it must be asked again.
  ASSERT_TRUE(blobs->remove(store::Digest::of(old_image.config)).ok());
  move_tag();

  auto image = opener->open(reference, kAmd64, Resolve::stored);
  ASSERT_TRUE(image.ok()) << image.error().message;
  EXPECT_EQ(image->record.manifest, new_image.manifest_digest());
  EXPECT_TRUE(store::in_use(store_root, new_image.manifest_digest()))
      << "the image being used has no lease";
  EXPECT_FALSE(store::in_use(store_root, old_image.manifest_digest()))
      << "a lease is still held on the image the tag used to name";
  auto tree = opener->tree(image->record, reference);
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  EXPECT_EQ(version_in(**tree), "new\n");
}

TEST_F(OpenImageTest, LeaseOfAResolvedManifest) {
  auto resolved = opener->open(reference, kAmd64, Resolve::stored);
  ASSERT_TRUE(resolved.ok());
  const store::Digest manifest = resolved->record.manifest;
  resolved = Error{};  // releases the lease
  EXPECT_FALSE(store::in_use(store_root, manifest));

  auto leased = opener->lease(manifest);
  ASSERT_TRUE(leased.ok()) << leased.error().message;
  EXPECT_EQ(leased->record.manifest, manifest);
  EXPECT_TRUE(store::in_use(store_root, manifest));

  auto unknown = opener->lease(store::Digest::of("never pulled"));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, EIO);
  EXPECT_FALSE(store::in_use(store_root, store::Digest::of("never pulled")))
      << "a failed open keeps no lease";
}

}  // namespace
}  // namespace imagefs::fs

namespace imagefs::fs {
namespace {

// The image's config with rootfs.diff_ids replaced, and its manifest made again.
registry::testing::TestImage with_diff_ids(registry::testing::TestImage image,
                                           const nlohmann::json& diff_ids) {
  auto config = nlohmann::json::parse(image.config);
  config["rootfs"]["diff_ids"] = diff_ids;
  image.config = config.dump();
  auto manifest = nlohmann::json::parse(image.manifest);
  manifest["config"]["digest"] = store::Digest::of(image.config).str();
  manifest["config"]["size"] = image.config.size();
  image.manifest = manifest.dump();
  return image;
}

// Changes one byte of a stored blob, as a failing disk would.
void rot(const std::filesystem::path& blob) {
  std::filesystem::permissions(blob, std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::add);
  std::fstream f(blob, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-8, std::ios::end);  // the gzip member's CRC-32
  char c = 0;
  f.get(c);
  f.seekp(-8, std::ios::end);
  f.put(static_cast<char>(c ^ 0x20));
}

TEST_F(OpenImageTest, LayersMustMatchTheConfigsDiffIds) {
  const std::string right = nlohmann::json::parse(old_image.config)["rootfs"]["diff_ids"][0];
  const std::string wrong = store::Digest::of(std::string_view("not the layer")).str();
  struct Case {
    const char* tag;
    nlohmann::json diff_ids;
    std::vector<std::string> says;
  };
  for (const Case& c : std::vector<Case>{
           {"wrong",
            nlohmann::json::array({wrong}),
            {"layer 1 of 1 (" + store::Digest::of(old_image.layers[0]).str() + ")",
             "does not match the image config: its uncompressed content has diff_id " + right +
                 ", and rootfs.diff_ids[0] says " + wrong}},
           {"none",
            nlohmann::json::array(),
            {"its config lists 0 diff_ids in rootfs.diff_ids, but it has 1 layers"}},
       }) {
    SCOPED_TRACE(c.tag);
    registry::testing::TestImage bad = with_diff_ids(old_image, c.diff_ids);
    registry::testing::push(*fake, "demo/app", c.tag, bad);
    auto ref = registry::parse_reference(std::string("localhost:5000/demo/app:") + c.tag).value();
    auto image = opener->open(ref, kAmd64, Resolve::registry);
    ASSERT_TRUE(image.ok()) << image.error().message;
    auto tree = opener->tree(image->record, ref);
    ASSERT_FALSE(tree.ok());
    EXPECT_EQ(tree.error().code, EIO);
    for (const std::string& s : c.says)
      EXPECT_NE(tree.error().message.find(s), std::string::npos) << tree.error().message;
  }
}

TEST_F(OpenImageTest, ARottenBlobIsFetchedAgainOnceAndServed) {
  auto image = opener->open(reference, kAmd64, Resolve::stored);
  ASSERT_TRUE(image.ok()) << image.error().message;
  ASSERT_TRUE(opener->fetch_layers(image->record, reference).ok());
  const store::Digest layer = image->record.layers[0].digest;
  for (const registry::Reference* source :
       {&reference, static_cast<registry::Reference*>(nullptr)}) {
    SCOPED_TRACE(source != nullptr ? "from the source given" : "from the catalog's references");
    ASSERT_TRUE(store::remove_derived(*blobs, layer).ok());  // an index would be used as it is
    rot(blobs->path(layer));
    registry::testing::RecordingProgress progress;
    auto tree = opener->open_tree(image->record, source, &progress);
    ASSERT_TRUE(tree.ok()) << tree.error().message;
    EXPECT_EQ(version_in(**tree), "old\n");
    EXPECT_EQ(progress.count("message blob " + layer.str() +
                             " in the store does not match its digest: the disk changed it"),
              1u);
    EXPECT_EQ(progress.count("message layer 1 of 1 (" + layer.str() +
                             ") fetched again from localhost:5000/demo/app:1"),
              1u);
    EXPECT_EQ(progress.count("finished 0"), 1u) << "downloaded once more";
    EXPECT_EQ(store::Digest::of(blobs->read(layer).value()), layer) << "the store is repaired";
  }
}

TEST_F(OpenImageTest, ARottenBlobWithoutARegistryStaysAnError) {
  auto image = opener->open(reference, kAmd64, Resolve::stored);
  ASSERT_TRUE(image.ok()) << image.error().message;
  ASSERT_TRUE(opener->fetch_layers(image->record, reference).ok());
  const store::Digest layer = image->record.layers[0].digest;
  rot(blobs->path(layer));
  // A registry that no longer has the repository.
  auto empty = std::make_shared<registry::testing::FakeRegistry>(clock);
  empty->host = "localhost:5000";
  auto puller = registry::Puller::create(blobs, catalog, registry_options, empty, clock);
  ASSERT_TRUE(puller.ok());
  ImageOpener offline(blobs, catalog, std::move(*puller),
                      overlay::LayerCache::create(blobs).value());
  auto tree = offline.open_tree(image->record, &reference);
  ASSERT_FALSE(tree.ok());
  EXPECT_EQ(tree.error().code, EUCLEAN) << tree.error().message;
  EXPECT_NE(tree.error().message.find("blob " + layer.str() +
                                      " in the store does not match its digest: the disk changed "
                                      "it"),
            std::string::npos)
      << tree.error().message;
  EXPECT_NE(tree.error().message.find("fetching it again failed"), std::string::npos);
  EXPECT_FALSE(blobs->contains(layer)) << "nothing is served from the rotten copy";
}

}  // namespace
}  // namespace imagefs::fs
