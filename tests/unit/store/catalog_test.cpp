// Catalog: round trips of every record kind, removal rules, persistence, access
// from threads and from another process, growth of the map, version checks and a full disk.
#include "store/catalog.h"

#include <gtest/gtest.h>
#include <lmdb.h>

#include <thread>

#include "tests/unit/store/store_test_util.h"

namespace imagefs::store {
namespace {

namespace fs = std::filesystem;
using testing::fork_child;
using testing::TempDir;
using testing::wait_child;

Digest digest(std::string_view seed) { return Digest::of(seed); }

RefRecord make_ref(std::string reference, std::string platform, std::string_view manifest_seed) {
  return RefRecord{std::move(reference), std::move(platform), digest(manifest_seed), std::nullopt,
                   1'700'000'000};
}

ImageRecord make_image(std::string_view seed, int64_t last_used = 0) {
  std::string s(seed);
  return ImageRecord{
      digest(s),
      "application/vnd.oci.image.manifest.v1+json",
      digest(s + "-config"),
      "linux/amd64",
      {LayerRecord{digest(s + "-layer0"), "application/vnd.oci.image.layer.v1.tar+gzip", 1234, {}},
       LayerRecord{digest(s + "-layer1"),
                   "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                   99,
                   {"https://example.com/a", "https://example.com/b"}}},
      5555,
      1'700'000'000,
      last_used};
}

// An image record of about `bytes` bytes (a long URL list), for tests of the map's size.
ImageRecord big_image(std::string_view seed, size_t bytes) {
  ImageRecord image = make_image(seed);
  image.layers[1].urls = {"https://example.com/" + std::string(bytes, 'u') + std::string(seed)};
  return image;
}

void expect_same(const RefRecord& a, const RefRecord& b) {
  EXPECT_EQ(a.reference, b.reference);
  EXPECT_EQ(a.platform, b.platform);
  EXPECT_EQ(a.manifest, b.manifest);
  EXPECT_EQ(a.index, b.index);
  EXPECT_EQ(a.resolved_at, b.resolved_at);
}

void expect_same(const ImageRecord& a, const ImageRecord& b) {
  EXPECT_EQ(a.manifest, b.manifest);
  EXPECT_EQ(a.manifest_media_type, b.manifest_media_type);
  EXPECT_EQ(a.config, b.config);
  EXPECT_EQ(a.platform, b.platform);
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    EXPECT_EQ(a.layers[i].digest, b.layers[i].digest);
    EXPECT_EQ(a.layers[i].media_type, b.layers[i].media_type);
    EXPECT_EQ(a.layers[i].size, b.layers[i].size);
    EXPECT_EQ(a.layers[i].urls, b.layers[i].urls);
  }
  EXPECT_EQ(a.size, b.size);
  EXPECT_EQ(a.pulled_at, b.pulled_at);
  EXPECT_EQ(a.last_used, b.last_used);
}

std::shared_ptr<Catalog> open_catalog(const fs::path& file,
                                      uint64_t map_size = Catalog::kDefaultMapSize) {
  auto catalog = Catalog::open(file, map_size);
  if (!catalog.ok()) ADD_FAILURE() << catalog.error().message;
  return catalog.ok() ? *catalog : nullptr;
}

TEST(Catalog, RefsRoundTrip) {
  TempDir dir;
  auto catalog = open_catalog(Catalog::file_in(dir.path()));
  ASSERT_TRUE(catalog);
  RefRecord plain = make_ref("docker.io/library/alpine:3.19", "linux/amd64", "alpine-amd64");
  RefRecord indexed = make_ref("docker.io/library/alpine:3.19", "linux/arm64/v8", "alpine-arm64");
  indexed.index = digest("alpine-index");
  RefRecord other = make_ref("ghcr.io/org/app:1.0", "linux/amd64", "app");
  for (const RefRecord& r : {other, indexed, plain}) ASSERT_TRUE(catalog->put_ref(r).ok());

  auto got = catalog->ref("docker.io/library/alpine:3.19", "linux/arm64/v8");
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_TRUE(got->has_value());
  expect_same(**got, indexed);
  EXPECT_FALSE(catalog->ref("docker.io/library/alpine:3.19", "linux/s390x")->has_value());

  auto all = catalog->refs();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  expect_same((*all)[0], plain);  // ordered by reference, then platform
  expect_same((*all)[1], indexed);
  expect_same((*all)[2], other);

  RefRecord moved = plain;
  moved.manifest = digest("alpine-amd64-new");
  ASSERT_TRUE(catalog->put_ref(moved).ok());
  expect_same(**catalog->ref(plain.reference, plain.platform), moved);

  ASSERT_TRUE(catalog->remove_ref(plain.reference, plain.platform).ok());
  ASSERT_TRUE(catalog->remove_ref(plain.reference, plain.platform).ok()) << "absent is fine";
  EXPECT_EQ(catalog->refs()->size(), 2u);
}

TEST(Catalog, RefsRejectBadKeys) {
  TempDir dir;
  auto catalog = open_catalog(Catalog::file_in(dir.path()));
  EXPECT_EQ(catalog->put_ref(make_ref("has space", "linux/amd64", "x")).error().code, EINVAL);
  EXPECT_EQ(catalog->put_ref(make_ref("", "linux/amd64", "x")).error().code, EINVAL);
  EXPECT_EQ(catalog->put_ref(make_ref(std::string(600, 'a'), "linux/amd64", "x")).error().code,
            EINVAL);
}

TEST(Catalog, ImagesRoundTrip) {
  TempDir dir;
  auto catalog = open_catalog(Catalog::file_in(dir.path()));
  ImageRecord a = make_image("a", 10);
  ImageRecord b = make_image("b", 20);
  ASSERT_TRUE(catalog->put_image(a).ok());
  ASSERT_TRUE(catalog->put_image(b).ok());
  auto got = catalog->image(a.manifest);
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_TRUE(got->has_value());
  expect_same(**got, a);
  EXPECT_FALSE(catalog->image(digest("absent"))->has_value());
  auto all = catalog->images();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_LT((*all)[0].manifest, (*all)[1].manifest);
}

TEST(Catalog, RemoveImageTakesItsRefs) {
  TempDir dir;
  auto catalog = open_catalog(Catalog::file_in(dir.path()));
  ImageRecord a = make_image("a");
  ImageRecord b = make_image("b");
  ASSERT_TRUE(catalog->put_image(a).ok());
  ASSERT_TRUE(catalog->put_image(b).ok());
  ASSERT_TRUE(catalog->put_ref(make_ref("r/a:1", "linux/amd64", "a")).ok());
  ASSERT_TRUE(catalog->put_ref(make_ref("r/a:latest", "linux/amd64", "a")).ok());
  ASSERT_TRUE(catalog->put_ref(make_ref("r/b:1", "linux/amd64", "b")).ok());
  auto removed = catalog->remove_image(a.manifest);
  ASSERT_TRUE(removed.ok()) << removed.error().message;
  ASSERT_EQ(removed->size(), 2u);
  EXPECT_EQ((*removed)[0].reference, "r/a:1");
  EXPECT_EQ((*removed)[1].reference, "r/a:latest");
  EXPECT_FALSE(catalog->image(a.manifest)->has_value());
  auto refs = catalog->refs();
  ASSERT_EQ(refs->size(), 1u);
  EXPECT_EQ((*refs)[0].reference, "r/b:1");
  EXPECT_TRUE(catalog->remove_image(a.manifest)->empty()) << "absent is fine";
}

TEST(Catalog, TouchOnlyMovesForward) {
  TempDir dir;
  auto catalog = open_catalog(Catalog::file_in(dir.path()));
  ImageRecord a = make_image("a", 100);
  ASSERT_TRUE(catalog->put_image(a).ok());
  ASSERT_TRUE(catalog->touch(a.manifest, 200).ok());
  EXPECT_EQ((*catalog->image(a.manifest))->last_used, 200);
  ASSERT_TRUE(catalog->touch(a.manifest, 150).ok());
  EXPECT_EQ((*catalog->image(a.manifest))->last_used, 200);
  EXPECT_EQ(catalog->touch(digest("absent"), 1).error().code, ENOENT);
}

TEST(Catalog, SurvivesReopening) {
  TempDir dir;
  fs::path file = Catalog::file_in(dir.path());
  {
    auto catalog = open_catalog(file);
    ASSERT_TRUE(catalog->put_image(make_image("a")).ok());
    ASSERT_TRUE(catalog->put_ref(make_ref("r", "linux/amd64", "a")).ok());
  }
  EXPECT_TRUE(fs::is_regular_file(file)) << "one file, not a directory (MDB_NOSUBDIR)";
  auto catalog = open_catalog(file);
  EXPECT_EQ(catalog->images()->size(), 1u);
  EXPECT_EQ(catalog->refs()->size(), 1u);
}

TEST(Catalog, OpeningTwiceInOneProcessSharesTheEnvironment) {
  TempDir dir;
  fs::path file = Catalog::file_in(dir.path());
  auto first = open_catalog(file);
  auto second = open_catalog(dir.path() / "." / "catalog.lmdb");
  EXPECT_EQ(first.get(), second.get());
  first.reset();
  second.reset();
  auto reopened = open_catalog(file);
  ASSERT_TRUE(reopened);
  EXPECT_TRUE(reopened->put_image(make_image("t")).ok()) << "after the last holder closed it";
}

TEST(Catalog, ThreadsShareOneCatalog) {
  TempDir dir;
  auto catalog = open_catalog(Catalog::file_in(dir.path()));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 15; ++i) {
        std::string key = "t" + std::to_string(t) + "-" + std::to_string(i);
        EXPECT_TRUE(catalog->put_ref(make_ref(key, "linux/amd64", key)).ok());
        EXPECT_TRUE(catalog->put_image(make_image(key)).ok());
        EXPECT_TRUE(catalog->images().ok());
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(catalog->images()->size(), 60u);
  EXPECT_EQ(catalog->refs()->size(), 60u);
  EXPECT_EQ((*catalog->ref("t3-14", "linux/amd64"))->manifest, digest("t3-14"));
}

// A daemon and `imagefs build` share the catalog: two processes writing at once lose nothing.
TEST(Catalog, AnotherProcessWritesConcurrently) {
  TempDir dir;
  fs::path file = Catalog::file_in(dir.path());
  auto catalog = open_catalog(file);
  ASSERT_TRUE(catalog);
  testing::Pipe start;
  pid_t child = fork_child([&] {
    // Its own environment: an LMDB environment must not be used across fork().
    auto mine = Catalog::open(file);
    if (!mine.ok()) return 1;
    start.close_write();
    if (start.receive() != 0) return 2;
    for (int i = 0; i < 40; ++i) {
      if (!(*mine)->put_ref(make_ref("child/" + std::to_string(i), "linux/amd64", "c")).ok())
        return 3;
      if (!(*mine)->images().ok()) return 4;
    }
    return 0;
  });
  start.close_write();
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(catalog->put_ref(make_ref("parent/" + std::to_string(i), "linux/amd64", "p")).ok());
    ASSERT_TRUE(catalog->refs().ok());
  }
  EXPECT_EQ(wait_child(child), 0);
  EXPECT_EQ(catalog->refs()->size(), 80u);
}

TEST(Catalog, MapGrowsWhenFull) {
  TempDir dir;
  fs::path file = Catalog::file_in(dir.path());
  auto catalog = open_catalog(file, 64 * 1024);
  ASSERT_TRUE(catalog);
  // Every commit is an fsync: few, large records.
  for (int i = 0; i < 30; ++i)
    ASSERT_TRUE(catalog->put_image(big_image("k" + std::to_string(i), 20'000)).ok()) << i;
  ASSERT_TRUE(catalog->put_image(make_image("after growth")).ok());
  EXPECT_GT(fs::file_size(file), 64u * 1024u);

  // Another process, started with the small map too, grows it further; this one adopts the new
  // size when it begins its next transaction.
  pid_t child = fork_child([&] {
    auto mine = Catalog::open(file, 64 * 1024);
    if (!mine.ok()) return 1;
    for (int i = 30; i < 80; ++i)
      if (!(*mine)->put_image(big_image("k" + std::to_string(i), 20'000)).ok()) return 2;
    return 0;
  });
  EXPECT_EQ(wait_child(child), 0);
  for (int i = 0; i < 80; i += 7) {
    auto got = catalog->image(digest("k" + std::to_string(i)));
    ASSERT_TRUE(got.ok()) << got.error().message;
    ASSERT_TRUE(got->has_value()) << i;
    expect_same(**got, big_image("k" + std::to_string(i), 20'000));
  }
  ASSERT_TRUE(catalog->put_image(big_image("last", 20'000)).ok());
}

// Writes raw bytes under `key` of database `db` (the catalog must be closed).
void write_raw(const fs::path& file, const char* db, std::string_view key, std::string_view value) {
  MDB_env* env = nullptr;
  ASSERT_EQ(mdb_env_create(&env), 0);
  ASSERT_EQ(mdb_env_set_maxdbs(env, 64), 0);
  ASSERT_EQ(mdb_env_open(env, file.c_str(), MDB_NOSUBDIR, 0644), 0);
  MDB_txn* txn = nullptr;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi dbi = 0;
  ASSERT_EQ(mdb_dbi_open(txn, db, 0, &dbi), 0);
  MDB_val k{key.size(), const_cast<char*>(key.data())};
  MDB_val v{value.size(), const_cast<char*>(value.data())};
  ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

TEST(Catalog, NewerAndDamagedRecordsAreRefused) {
  TempDir dir;
  fs::path file = Catalog::file_in(dir.path());
  Digest m = digest("m");
  open_catalog(file).reset();  // creates the databases
  write_raw(file, "images", m.str(), R"({"v":2,"whatever":"a future field"})");
  write_raw(file, "refs", "r linux/amd64", R"({"v":1,"reference":"r"})");
  auto catalog = open_catalog(file);
  auto image = catalog->image(m);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.error().code, ENOTSUP);
  EXPECT_NE(image.error().message.find("newer imagefs"), std::string::npos)
      << image.error().message;
  auto ref = catalog->ref("r", "linux/amd64");
  ASSERT_FALSE(ref.ok());
  EXPECT_EQ(ref.error().code, EIO);
  EXPECT_NE(ref.error().message.find("\"platform\""), std::string::npos) << ref.error().message;
  catalog.reset();

  write_raw(file, "meta", "format", R"({"v":7})");
  auto newer = Catalog::open(file);
  ASSERT_FALSE(newer.ok());
  EXPECT_EQ(newer.error().code, ENOTSUP);
}

TEST(Catalog, FullDiskIsAnErrorAndKeepsWhatWasThere) {
  testing::SmallTmpfs tmpfs("1m");
  IMAGEFS_REQUIRE_TMPFS(tmpfs);
  auto catalog = open_catalog(Catalog::file_in(tmpfs.path()));
  ASSERT_TRUE(catalog);
  ASSERT_TRUE(catalog->put_image(make_image("kept")).ok());
  Result<void> r;
  for (int i = 0; i < 20 && r.ok(); ++i)
    r = catalog->put_image(big_image("k" + std::to_string(i), 100'000));
  ASSERT_FALSE(r.ok()) << "1 MiB cannot hold 2 MB of records";
  EXPECT_EQ(r.error().code, ENOSPC) << r.error().message;
  EXPECT_TRUE((*catalog->image(digest("kept"))).has_value());
  auto first = catalog->image(digest("k0"));
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_TRUE(first->has_value());
  expect_same(**first, big_image("k0", 100'000));
}

}  // namespace
}  // namespace imagefs::store
