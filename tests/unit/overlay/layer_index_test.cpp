// Layer ingest and the LayerIndex reader, over tars written by libarchive in the test: every entry
// type and attribute, names, whiteouts and opaque markers, replacements, implicit parents,
// hardlinks, bad input (named in the error), random reads against the source bytes, and the
// cache: one ingest per store across threads and processes, crash safety, damaged indexes.
#include "overlay/layer_index.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "overlay/layer_format.h"
#include "store/derived.h"
#include "tests/unit/overlay/tar_builder.h"
#include "tests/unit/store/store_test_util.h"

namespace imagefs::overlay {
namespace {

namespace fs = std::filesystem;
using namespace testing;  // NOLINT(google-build-using-namespace): the tar builder's vocabulary
using store::testing::fork_child;
using store::testing::pattern;
using store::testing::Pipe;
using store::testing::TempDir;
using store::testing::wait_child;

using Index = std::shared_ptr<const LayerIndex>;

class Layer : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = store::BlobStore::open(root());
    ASSERT_TRUE(b.ok()) << b.error().message;
    blobs_ = *b;
    auto c = LayerCache::create(blobs_);
    ASSERT_TRUE(c.ok()) << c.error().message;
    cache_ = *c;
  }

  [[nodiscard]] fs::path root() const { return dir_.path() / "store"; }

  store::LayerRecord put(const std::string& blob, std::string media_type = kTar) {
    store::Digest d = store::Digest::of(blob);
    EXPECT_TRUE(blobs_->put(d, blob).ok());
    return store::LayerRecord{d, std::move(media_type), blob.size(), {}};
  }

  Result<Index> try_ingest(const std::vector<TarEntry>& entries, Filter filter = Filter::none) {
    const char* type = filter == Filter::gzip ? kTarGzip : filter == Filter::zstd ? kTarZstd : kTar;
    return cache_->get(put(make_tar(entries, filter), type));
  }

  Index ingest(const std::vector<TarEntry>& entries, Filter filter = Filter::none) {
    auto r = try_ingest(entries, filter);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? *r : nullptr;
  }

  static LayerEntry at(const Index& index, std::string_view path) {
    auto i = index->find(path);
    EXPECT_TRUE(i.has_value()) << "no entry " << path;
    return i ? index->entry(*i) : LayerEntry{};
  }

  static std::string content(const Index& index, std::string_view path) {
    auto i = index->find(path);
    EXPECT_TRUE(i.has_value()) << "no entry " << path;
    if (!i) return {};
    std::string out(index->entry(*i).size, '\0');
    auto n = index->read(*i, 0, std::span(reinterpret_cast<uint8_t*>(out.data()), out.size()));
    EXPECT_TRUE(n.ok()) << n.error().message;
    EXPECT_EQ(n.ok() ? *n : 0, out.size());
    return out;
  }

  static std::vector<std::string> children(const Index& index, std::string_view dir) {
    auto [first, last] = index->children(dir);
    std::vector<std::string> names;
    for (size_t i = first; i < last; ++i) {
      std::string_view p = index->entry(i).path;
      names.emplace_back(p.substr(p.rfind('/') == std::string_view::npos ? 0 : p.rfind('/') + 1));
    }
    return names;
  }

  TempDir dir_;
  std::shared_ptr<store::BlobStore> blobs_;
  std::shared_ptr<LayerCache> cache_;
};

TEST_F(Layer, EveryEntryTypeAndAttribute) {
  TarEntry file = File("bin/tool", "#!/bin/sh\necho hi\n", 04755);
  file.uid = 1000;
  file.gid = 4000000;  // too large for the ustar field: PAX
  file.mtime = 4102444800;
  file.mtime_nsec = 123456789;
  TarEntry dir = Dir("tmp", 01777);
  dir.mtime = 1234567890;
  TarEntry gdir = Dir("srv", 02775);
  TarEntry chr = Device("dev/null", AE_IFCHR, 1, 3);
  TarEntry blk = Device("dev/loop0", AE_IFBLK, 7, 0);
  blk.gid = 6;
  TarEntry fifo = Device("run/fifo", AE_IFIFO, 0, 0);
  fifo.perm = 0620;
  Index index = ingest(
      {Dir("bin"), file, dir, gdir, Dir("dev"), chr, blk, Dir("run"), fifo,
       Symlink("bin/sh", "/bin/tool"), Hardlink("bin/tool2", "bin/tool"), File("etc/empty", "", 0)},
      Filter::gzip);
  ASSERT_TRUE(index);

  LayerEntry f = at(index, "bin/tool");
  EXPECT_EQ(f.type, EntryType::regular);
  EXPECT_EQ(f.mode, 04755u);
  EXPECT_EQ(f.uid, 1000u);
  EXPECT_EQ(f.gid, 4000000u);
  EXPECT_EQ(f.mtime_sec, 4102444800);
  EXPECT_EQ(f.mtime_nsec, 123456789u);
  EXPECT_EQ(f.size, 18u);
  EXPECT_EQ(content(index, "bin/tool"), "#!/bin/sh\necho hi\n");

  LayerEntry d = at(index, "tmp");
  EXPECT_EQ(d.type, EntryType::directory);
  EXPECT_EQ(d.mode, 01777u);
  EXPECT_EQ(d.mtime_sec, 1234567890);
  EXPECT_FALSE(d.implicit);
  EXPECT_EQ(at(index, "srv").mode, 02775u);

  LayerEntry c = at(index, "dev/null");
  EXPECT_EQ(c.type, EntryType::char_device);
  EXPECT_EQ(c.rdev_major, 1u);
  EXPECT_EQ(c.rdev_minor, 3u);
  LayerEntry b = at(index, "dev/loop0");
  EXPECT_EQ(b.type, EntryType::block_device);
  EXPECT_EQ(b.rdev_major, 7u);
  EXPECT_EQ(b.rdev_minor, 0u);
  EXPECT_EQ(b.gid, 6u);
  LayerEntry p = at(index, "run/fifo");
  EXPECT_EQ(p.type, EntryType::fifo);
  EXPECT_EQ(p.mode, 0620u);

  LayerEntry s = at(index, "bin/sh");
  EXPECT_EQ(s.type, EntryType::symlink);
  EXPECT_EQ(s.link, "/bin/tool");

  LayerEntry h = at(index, "bin/tool2");
  EXPECT_EQ(h.type, EntryType::hardlink);
  EXPECT_EQ(h.link, "bin/tool");
  EXPECT_EQ(h.hardlink_target, *index->find("bin/tool"));
  EXPECT_EQ(h.size, f.size);
  EXPECT_EQ(h.data_offset, f.data_offset);
  EXPECT_EQ(h.mode, 04755u) << "a hardlink is its target's inode";
  EXPECT_EQ(content(index, "bin/tool2"), content(index, "bin/tool"));

  LayerEntry e = at(index, "etc/empty");
  EXPECT_EQ(e.size, 0u);
  EXPECT_EQ(e.mode, 0u);
  EXPECT_EQ(content(index, "etc/empty"), "");
  EXPECT_TRUE(at(index, "etc").implicit);
}

TEST_F(Layer, XattrsKeepBinaryValues) {
  TarEntry f = File("bin/ping", "ping");
  std::string cap(
      "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  std::string binary(
      "\x00\xff"
      "bin\x80\xfe\x00",
      7);
  f.xattrs = {{"security.capability", cap}, {"user.binary", binary}, {"user.empty", ""}};
  TarEntry d = Dir("etc");
  d.xattrs = {{"user.dir", "on a directory"}};
  Index index = ingest({f, d}, Filter::zstd);
  ASSERT_TRUE(index);
  std::vector<Xattr> x = index->xattrs(*index->find("bin/ping"));
  ASSERT_EQ(x.size(), 3u);
  EXPECT_EQ(x[0].name, "security.capability");
  EXPECT_EQ(x[0].value, cap);
  EXPECT_EQ(x[1].name, "user.binary");
  EXPECT_EQ(x[1].value, binary);
  EXPECT_EQ(x[2].name, "user.empty");
  EXPECT_EQ(x[2].value, "");
  std::vector<Xattr> dx = index->xattrs(*index->find("etc"));
  ASSERT_EQ(dx.size(), 1u);
  EXPECT_EQ(dx[0].value, "on a directory");
  EXPECT_TRUE(index->xattrs(*index->find("bin")).empty());
}

TEST_F(Layer, LongUnicodeAndSpacedNames) {
  std::string long100 = "d/" + std::string(120, 'a');
  std::string long255 = "d/" + std::string(200, 'x') + "/" + std::string(100, 'y') + "/file.txt";
  std::string component255 = "d/" + std::string(255, 'n');
  std::vector<std::string> names = {long100,
                                    long255,
                                    component255,
                                    "d/héllo wörld.txt",
                                    "d/日本語/ファイル.txt",
                                    "d/emoji_😀.txt",
                                    "d/with space/two  spaces .txt"};
  std::vector<TarEntry> entries;
  entries.reserve(names.size());
  for (const std::string& n : names) entries.push_back(File(n, "content of " + n));
  Index index = ingest(entries);
  ASSERT_TRUE(index);
  for (const std::string& n : names) EXPECT_EQ(content(index, n), "content of " + n) << n;
  EXPECT_TRUE(at(index, "d/" + std::string(200, 'x')).implicit);
}

TEST_F(Layer, DeepNamesAndTheLimitsOnNames) {
  // 2,000 components, none with an entry: as many implicit parents, made without recursion.
  std::string deep;
  for (int i = 0; i < 2000; ++i) deep += "a/";
  deep += "f";
  Index index = ingest({File(deep, "deep")});
  ASSERT_TRUE(index);
  EXPECT_EQ(index->size(), 2001u);
  EXPECT_EQ(content(index, deep), "deep");

  std::string too_long = "d/" + std::string(4094, 'x');
  auto r = try_ingest({File(too_long, "x")});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("longer than 4095 bytes"), std::string::npos);
  auto t = try_ingest({Symlink("s", "/" + std::string(4095, 't'))});
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message.find("'s'"), std::string::npos) << t.error().message;

  // Many distinct deep chains: implicit paths grow with the square of the depth, so they are
  // capped rather than allowed to take gigabytes.
  std::vector<TarEntry> chains;
  for (int c = 0; c < 40; ++c) chains.push_back(File("c" + std::to_string(c) + "/" + deep, ""));
  auto capped = try_ingest(chains, Filter::gzip);
  ASSERT_FALSE(capped.ok());
  EXPECT_NE(capped.error().message.find("too many implicit parent directories"), std::string::npos);
}

TEST_F(Layer, NamesAreCleanedAndStayInside) {
  Index index =
      ingest({File("../../escape", "1"), File("/abs/olute", "2"), File("./a/./b/../c", "3"),
              Symlink("link", "../../../etc/shadow"), Hardlink("hl", "../../escape")});
  ASSERT_TRUE(index);
  EXPECT_EQ(content(index, "escape"), "1");
  EXPECT_EQ(content(index, "abs/olute"), "2");
  EXPECT_EQ(content(index, "a/c"), "3");
  EXPECT_EQ(at(index, "link").link, "../../../etc/shadow") << "symlink targets are data";
  EXPECT_EQ(at(index, "hl").hardlink_target, *index->find("escape"));
  for (size_t i = 0; i < index->size(); ++i) {
    std::string_view p = index->entry(i).path;
    EXPECT_FALSE(p.starts_with("/") || p.starts_with("..") || p.find("/..") != p.npos) << p;
  }
  // Nothing was written beside the store.
  std::vector<std::string> beside;
  for (const auto& e : fs::directory_iterator(dir_.path())) beside.push_back(e.path().filename());
  EXPECT_EQ(beside, std::vector<std::string>{"store"});
}

TEST_F(Layer, WhiteoutsAndOpaqueMarkers) {
  Index index = ingest({
      Dir("a"), File("a/.wh.gone", ""), File("a/.wh.kept", ""),
      File("a/kept", "this layer's own kept"),       // a whiteout hides lower layers only
      Dir("early"), File("early/.wh..wh..opq", ""),  // marker before the directory's entries
      File("early/new", "n"), Dir("late"), File("late/new", "n"),
      File("late/.wh..wh..opq", ""),   // marker after them
      File("nodir/.wh..wh..opq", ""),  // marker in a directory with no entry
      File(".wh.reborn", ""),
      Dir("reborn"),  // deleted and recreated: opaque
      File("reborn/x", "x"),
      File("deep/er/.wh.thing", ""),  // a whiteout whose parents have no entries
      File("a/.wh.", ""),             // a bare ".wh." hides nothing
  });
  ASSERT_TRUE(index);
  LayerEntry gone = at(index, "a/gone");
  EXPECT_EQ(gone.type, EntryType::whiteout);
  EXPECT_EQ(content(index, "a/kept"), "this layer's own kept");
  EXPECT_TRUE(at(index, "early").opaque);
  EXPECT_TRUE(at(index, "late").opaque);
  EXPECT_FALSE(at(index, "late").implicit);
  LayerEntry nodir = at(index, "nodir");
  EXPECT_TRUE(nodir.opaque);
  EXPECT_TRUE(nodir.implicit);
  EXPECT_EQ(nodir.type, EntryType::directory);
  EXPECT_TRUE(at(index, "reborn").opaque);
  EXPECT_EQ(at(index, "deep/er/thing").type, EntryType::whiteout);
  EXPECT_TRUE(at(index, "deep/er").implicit);
  EXPECT_FALSE(at(index, "a").opaque);
  EXPECT_FALSE(index->root().has_value());
  for (size_t i = 0; i < index->size(); ++i)
    EXPECT_EQ(index->entry(i).path.find(".wh."), std::string_view::npos) << index->entry(i).path;
  EXPECT_EQ(children(index, "a"), (std::vector<std::string>{"gone", "kept"}));
}

TEST_F(Layer, RootEntryAndRootOpaqueMarker) {
  TarEntry root = Dir("./", 0700);
  root.uid = 5;
  root.mtime = 1600000000;
  root.xattrs = {{"user.root", "r"}};
  Index with_root = ingest({root, File("f", "x")});
  ASSERT_TRUE(with_root);
  auto r = with_root->root();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->path, "");
  EXPECT_EQ(r->mode, 0700u);
  EXPECT_EQ(r->uid, 5u);
  EXPECT_EQ(r->mtime_sec, 1600000000);
  EXPECT_FALSE(r->opaque);
  ASSERT_EQ(with_root->root_xattrs().size(), 1u);
  EXPECT_EQ(with_root->root_xattrs()[0].value, "r");
  EXPECT_EQ(with_root->size(), 1u) << "the root is not an entry";

  Index opaque = ingest({File(".wh..wh..opq", ""), File("only", "x")});
  ASSERT_TRUE(opaque);
  auto o = opaque->root();
  ASSERT_TRUE(o.has_value());
  EXPECT_TRUE(o->opaque);
  EXPECT_TRUE(o->implicit);
}

TEST_F(Layer, LaterEntriesReplaceEarlierOnes) {
  TarEntry dir_again = Dir("d", 0700);
  Index index = ingest({
      File("dup", "first"), File("dup", "second"), Dir("d"), File("d/child", "c"),
      dir_again,  // a new header for the same directory keeps its children
      Dir("gone_dir"), File("gone_dir/inner", "i"), Dir("gone_dir/sub"),
      File("gone_dir/sub/deep", "d"),
      File("gone_dir", "now a file"),  // takes the directory's contents with it
      File("was_file", "f"),
      Dir("was_file"),  // a directory where this layer had a file: opaque
      File("was_file/x", "x"), Symlink("implied", "x"),
      File("implied/below", "b"),  // goes where the symlink leads, as extraction puts it
  });
  ASSERT_TRUE(index);
  EXPECT_EQ(content(index, "dup"), "second");
  EXPECT_EQ(at(index, "d").mode, 0700u);
  EXPECT_EQ(content(index, "d/child"), "c");
  EXPECT_EQ(at(index, "gone_dir").type, EntryType::regular);
  EXPECT_FALSE(index->find("gone_dir/inner"));
  EXPECT_FALSE(index->find("gone_dir/sub"));
  EXPECT_FALSE(index->find("gone_dir/sub/deep"));
  EXPECT_EQ(content(index, "gone_dir"), "now a file");
  EXPECT_EQ(at(index, "was_file").type, EntryType::directory);
  EXPECT_TRUE(at(index, "was_file").opaque);
  EXPECT_FALSE(at(index, "was_file").implicit);  // made anew: the layer's own
  EXPECT_EQ(at(index, "implied").type, EntryType::symlink);
  EXPECT_EQ(content(index, "x/below"), "b");
  EXPECT_TRUE(at(index, "x").implicit);
}

TEST_F(Layer, ImplicitParentsAndSortedChildren) {
  Index index = ingest({File("z/y/x/file", "1"), File("a-b", "2"), Dir("a"), File("a/c", "3"),
                        File("b", "4"), File("a/b", "5")});
  ASSERT_TRUE(index);
  for (std::string_view p : {"z", "z/y", "z/y/x"}) {
    LayerEntry e = at(index, p);
    EXPECT_EQ(e.type, EntryType::directory) << p;
    EXPECT_TRUE(e.implicit) << p;
  }
  EXPECT_FALSE(at(index, "a").implicit);
  EXPECT_EQ(children(index, ""), (std::vector<std::string>{"a", "a-b", "b", "z"}));
  EXPECT_EQ(children(index, "a"), (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(children(index, "z/y/x"), std::vector<std::string>{"file"});
  auto [first, last] = index->children("nothing");
  EXPECT_EQ(first, last);
  EXPECT_FALSE(index->find("a/d"));
  EXPECT_FALSE(index->find(""));
  EXPECT_FALSE(index->find("z/y/x/file/more"));
}

TEST_F(Layer, Hardlinks) {
  Index index = ingest({
      File("orig", "shared bytes"),
      Hardlink("second", "orig"),
      Hardlink("third", "second"),  // a link to a link: to the same inode
      Hardlink("lower", "from/a/lower/layer"),
      Hardlink("./dotted", "./orig"),
      File("replaced", "old content"),
      Hardlink("keeps_old", "replaced"),
      Hardlink("keeps_old_too", "replaced"),
      File("replaced", "new content"),  // the links keep the old inode, as in an extraction
      Symlink("sym", "orig"),
      Hardlink("sym_link", "sym"),
  });
  ASSERT_TRUE(index);
  size_t orig = *index->find("orig");
  for (std::string_view name : {"second", "third", "dotted"}) {
    LayerEntry h = at(index, name);
    EXPECT_EQ(h.type, EntryType::hardlink) << name;
    EXPECT_EQ(h.hardlink_target, orig) << name;
    EXPECT_EQ(h.link, "orig") << name;
    EXPECT_EQ(content(index, name), "shared bytes") << name;
  }
  LayerEntry lower = at(index, "lower");
  EXPECT_EQ(lower.type, EntryType::hardlink);
  EXPECT_EQ(lower.hardlink_target, kNoEntry);
  EXPECT_EQ(lower.link, "from/a/lower/layer");
  EXPECT_EQ(content(index, "replaced"), "new content");
  LayerEntry kept = at(index, "keeps_old");
  EXPECT_EQ(kept.type, EntryType::regular) << "it took the replaced entry's place";
  EXPECT_EQ(content(index, "keeps_old"), "old content");
  LayerEntry kept2 = at(index, "keeps_old_too");
  EXPECT_EQ(kept2.hardlink_target, *index->find("keeps_old"));
  EXPECT_EQ(content(index, "keeps_old_too"), "old content");
  LayerEntry sl = at(index, "sym_link");
  EXPECT_EQ(sl.hardlink_target, *index->find("sym"));
}

TEST_F(Layer, BadHardlinksAreErrorsNamingLayerAndEntry) {
  struct Case {
    std::vector<TarEntry> entries;
    std::string entry;
    std::string says;
  };
  std::vector<Case> cases = {
      {{Hardlink("early", "late"), File("late", "x")}, "early", "comes later"},
      {{Hardlink("new/dir/early", "late"), File("late", "x")}, "new/dir/early", "comes later"},
      {{Hardlink("l1", "late"), Hardlink("l2", "l1"), File("late", "x")}, "l1", "comes later"},
      {{Hardlink("self", "self")}, "self", "itself"},
      {{File("self2", "x"), Hardlink("self2", "self2")}, "self2", "itself"},
      {{Dir("d"), Hardlink("to_dir", "d")}, "to_dir", "directory"},
      {{Hardlink("to_root", "./")}, "to_root", "root"},
  };
  for (const Case& c : cases) {
    std::string tar = make_tar(c.entries);
    auto r = cache_->get(put(tar));
    ASSERT_FALSE(r.ok()) << c.entry;
    EXPECT_EQ(r.error().code, EIO);
    EXPECT_NE(r.error().message.find(store::Digest::of(tar).str()), std::string::npos)
        << r.error().message;
    EXPECT_NE(r.error().message.find("'" + c.entry + "'"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find(c.says), std::string::npos) << r.error().message;
  }
}

TEST_F(Layer, MediaTypesAndMagicBytes) {
  std::vector<TarEntry> entries = {File("f", "content")};
  std::string plain = make_tar(entries);
  std::string gz = make_tar(entries, Filter::gzip);
  std::string zst = make_tar(entries, Filter::zstd);
  for (auto [blob, type] : std::vector<std::pair<std::string, std::string>>{
           {plain, kTar},
           {gz, kTarGzip},
           {zst, kTarZstd},
           {gz, kDockerGzip},
           {plain, "application/vnd.oci.image.layer.nondistributable.v1.tar"},
           {gz, "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"},
       }) {
    {
      auto r = cache_->get(put(blob, type));
      ASSERT_TRUE(r.ok()) << type << ": " << r.error().message;
      EXPECT_EQ(content(*r, "f"), "content");
    }
    // Clear the product so the next media type for the same blob is ingested again.
    ASSERT_TRUE(store::remove_derived(*blobs_, store::Digest::of(blob)).ok());
  }

  // The magic bytes decide, whatever the media type says (layer_stream_test.cpp has the rest),
  // and a media type overlay/ does not know is no reason to refuse the bytes: which media types
  // an image may have is the puller's business.
  for (auto [blob, type] : std::vector<std::pair<std::string, std::string>>{
           {gz, kTar}, {zst, kTarGzip}, {plain, "application/vnd.example.squashfs"}}) {
    auto r = cache_->get(put(blob, type));
    ASSERT_TRUE(r.ok()) << type << ": " << r.error().message;
    EXPECT_EQ(content(*r, "f"), "content");
    ASSERT_TRUE(store::remove_derived(*blobs_, store::Digest::of(blob)).ok());
  }
}

TEST_F(Layer, TruncatedOrCorruptInputIsAnErrorNamingTheEntry) {
  std::string big = pattern(300000, 7);
  std::vector<TarEntry> entries = {File("small", "s"), File("usr/lib/big.so", big),
                                   File("after", "a")};

  std::string gz = make_tar(entries, Filter::gzip);
  std::string cut = gz.substr(0, gz.size() / 2);
  auto r = cache_->get(put(cut, kTarGzip));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_NE(r.error().message.find(store::Digest::of(cut).str()), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("usr/lib/big.so"), std::string::npos) << r.error().message;

  std::string plain = make_tar(entries);
  std::string short_tar = plain.substr(0, 512 * 3 + 100000);  // inside big.so's data
  auto t = cache_->get(put(short_tar));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message.find("usr/lib/big.so"), std::string::npos) << t.error().message;

  std::string zst = make_tar(entries, Filter::zstd);
  std::string bad = zst;
  for (size_t i = 100; i < 200; ++i) bad[i] = static_cast<char>(bad[i] ^ 0x5a);
  auto z = cache_->get(put(bad, kTarZstd));
  ASSERT_FALSE(z.ok());
  EXPECT_NE(z.error().message.find(store::Digest::of(bad).str()), std::string::npos);

  // A failed ingest leaves no product and no temporary directory behind.
  EXPECT_FALSE(fs::exists(blobs_->derived_dir(store::Digest::of(cut)) / "layer"));
  EXPECT_FALSE(fs::exists(blobs_->derived_dir(store::Digest::of(cut)) / "layer.tmp"));
}

TEST_F(Layer, RandomReadsMatchTheSourceBytes) {
  std::vector<std::string> sources = {pattern(5 << 20, 1), pattern(1, 2), pattern(4096, 3),
                                      pattern(1 << 20, 4), pattern(12345, 5)};
  std::vector<TarEntry> entries;
  for (size_t i = 0; i < sources.size(); ++i)
    entries.push_back(File("f" + std::to_string(i), sources[i]));
  Index index = ingest(entries, Filter::gzip);
  ASSERT_TRUE(index);
  std::mt19937_64 rng(42);
  std::vector<uint8_t> buf(70000);
  for (int round = 0; round < 2000; ++round) {
    size_t which = rng() % sources.size();
    const std::string& src = sources[which];
    uint64_t offset = rng() % (src.size() + 10);
    size_t len = rng() % buf.size();
    size_t i = *index->find("f" + std::to_string(which));
    auto n = index->read(i, offset, std::span(buf.data(), len));
    ASSERT_TRUE(n.ok()) << n.error().message;
    size_t expect = offset >= src.size() ? 0 : std::min<size_t>(len, src.size() - offset);
    ASSERT_EQ(*n, expect) << "file " << which << " offset " << offset << " len " << len;
    ASSERT_EQ(std::memcmp(buf.data(), src.data() + std::min<size_t>(offset, src.size()), *n), 0);
  }
  // Not readable: a directory.
  auto dir_read = index->read(0, 0, std::span(buf.data(), 10));
  EXPECT_TRUE(dir_read.ok() ? index->entry(0).type == EntryType::regular
                            : dir_read.error().code == EINVAL);
}

TEST_F(Layer, SparseFilesReadAsZerosInTheHoles) {
  std::string data(3 << 20, '\0');
  std::string head = pattern(5000, 1);
  std::string mid = pattern(7000, 2);
  data.replace(0, head.size(), head);
  data.replace(1 << 20, mid.size(), mid);
  TarEntry f = File("sparse", data);
  f.sparse = {{0, 5000}, {1 << 20, 7000}};
  Index index = ingest({f, File("after", "after")});
  ASSERT_TRUE(index);
  EXPECT_EQ(at(index, "sparse").size, data.size());
  EXPECT_EQ(content(index, "sparse"), data);
  EXPECT_EQ(content(index, "after"), "after");
}

TEST_F(Layer, OneIngestPerStoreAndSharedIndexes) {
  std::atomic<int> updates{0};
  IngestProgress progress{[&](const store::Digest&, uint64_t) { ++updates; }, {}};
  store::LayerRecord layer =
      put(make_tar({File("f", pattern(3 << 20, 9))}, Filter::gzip), kTarGzip);
  std::vector<Index> got(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] {
      auto r = cache_->get(layer, &progress);
      if (r.ok()) got[i] = *r;
    });
  for (std::thread& t : threads) t.join();
  int after_first = updates.load();
  EXPECT_GT(after_first, 0) << "progress reported";
  for (const Index& g : got) {
    ASSERT_TRUE(g);
    EXPECT_EQ(g->size(), 1u);
  }
  auto again = cache_->get(layer, &progress);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(updates.load(), after_first) << "no second ingest";
  EXPECT_EQ(again->get(), got[0].get()) << "one open index shared by the process";

  // A new cache (a new process, in effect) opens the stored index without ingesting.
  auto other = LayerCache::create(blobs_);
  auto reopened = (*other)->get(layer, &progress);
  ASSERT_TRUE(reopened.ok()) << reopened.error().message;
  EXPECT_EQ(updates.load(), after_first);
  EXPECT_EQ(content(*reopened, "f"), pattern(3 << 20, 9));
}

TEST_F(Layer, TwoProcessesIngestOnce) {
  store::LayerRecord layer =
      put(make_tar({File("f", pattern(4 << 20, 3))}, Filter::gzip), kTarGzip);
  Pipe go;
  auto child = [&]() {
    if (go.receive() == 0) return 3;
    auto b = store::BlobStore::open(root());
    if (!b.ok()) return 2;
    auto cache = LayerCache::create(*b);
    bool ingested = false;
    IngestProgress progress{[&](const store::Digest&, uint64_t) {
                              // Slow the ingester down so that the other process surely arrives
                              // while it runs.
                              if (!ingested)
                                std::this_thread::sleep_for(std::chrono::milliseconds(300));
                              ingested = true;
                            },
                            {}};
    auto r = (*cache)->get(layer, &progress);
    if (!r.ok() || content(*r, "f") != pattern(4 << 20, 3)) return 2;
    return ingested ? 1 : 0;
  };
  pid_t a = fork_child(child);
  pid_t b = fork_child(child);
  go.send();
  go.send();
  int ra = wait_child(a);
  int rb = wait_child(b);
  ASSERT_LT(ra, 2);
  ASSERT_LT(rb, 2);
  EXPECT_EQ(ra + rb, 1) << "exactly one of them ingested";
}

TEST_F(Layer, ACrashedIngestIsCleanedAndRedone) {
  std::string source = pattern(2 << 20, 5);
  store::LayerRecord layer = put(make_tar({File("f", source)}, Filter::gzip), kTarGzip);
  // A builder that dies mid-ingest (SIGKILL: no destructor runs).
  Pipe started;
  pid_t pid = fork_child([&]() {
    auto b = store::BlobStore::open(root());
    auto cache = LayerCache::create(*b);
    IngestProgress progress{[&](const store::Digest&, uint64_t) {
                              started.send();
                              ::pause();
                            },
                            {}};
    (void)(*cache)->get(layer, &progress);
    return 0;
  });
  ASSERT_EQ(started.receive(), 'x');
  fs::path tmp = blobs_->derived_dir(layer.digest) / "layer.tmp";
  EXPECT_TRUE(fs::exists(tmp / "data"));
  ::kill(pid, SIGKILL);
  EXPECT_EQ(wait_child(pid), 128 + SIGKILL);

  auto r = cache_->get(layer);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(content(*r, "f"), source);
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_TRUE(fs::exists(blobs_->derived_dir(layer.digest) / "layer" / "index"));
}

// Overwrites `bytes` at `offset` of the index file.
void patch(const fs::path& file, uint64_t offset, std::string_view bytes) {
  ::chmod(file.c_str(), 0644);
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &v, 8);
  return s;
}

TEST_F(Layer, DamagedIndexesAreErrorsThenRebuilt) {
  TarEntry x = File("d/file", "bytes");
  x.xattrs = {{"user.a", "b"}};
  store::LayerRecord layer = put(make_tar({x, Symlink("d/link", "file")}));
  fs::path product = blobs_->derived_dir(layer.digest) / "layer";
  fs::path index_file = product / "index";
  uint64_t rec0 = detail::kEntriesOffset;
  uint64_t big = uint64_t{1} << 62;

  struct Damage {
    const char* what;
    std::function<void()> apply;
  };
  std::vector<Damage> damages = {
      {"magic", [&] { patch(index_file, 0, "XXXX"); }},
      {"entry count", [&] { patch(index_file, detail::kHdrEntryCount, le64(big)); }},
      {"xattr count", [&] { patch(index_file, detail::kHdrXattrCount, le64(big)); }},
      {"strings size", [&] { patch(index_file, detail::kHdrStringsSize, le64(3)); }},
      {"path offset", [&] { patch(index_file, rec0 + detail::kRecPathOff, le64(big)); }},
      {"link offset", [&] { patch(index_file, rec0 + detail::kRecLinkOff, le64(big)); }},
      {"data offset",
       [&] { patch(index_file, rec0 + 2 * detail::kRecordSize + detail::kRecDataOff, le64(big)); }},
      {"xattr first",
       [&] {
         patch(index_file, rec0 + 2 * detail::kRecordSize + detail::kRecXattrFirst, le64(big));
       }},
      {"type", [&] { patch(index_file, rec0 + detail::kRecType, "\x63"); }},
      {"order",
       [&] {
         // Record 0 gets record 1's path: two equal keys.
         std::ifstream in(index_file, std::ios::binary);
         std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
         patch(index_file, rec0, bytes.substr(rec0 + detail::kRecordSize, 16));
       }},
      {"truncated", [&] { fs::resize_file(index_file, fs::file_size(index_file) - 1); }},
      {"short file", [&] { fs::resize_file(index_file, 10); }},
      {"data file", [&] { fs::resize_file(product / "data", 1); }},
  };
  for (const Damage& d : damages) {
    {
      auto fresh = LayerCache::create(blobs_);
      auto r = (*fresh)->get(layer);
      ASSERT_TRUE(r.ok()) << d.what << ": " << r.error().message;
      EXPECT_EQ(content(*r, "d/file"), "bytes");
    }
    d.apply();
    auto opened = detail::open_layer_index(product, layer.digest);
    ASSERT_FALSE(opened.ok()) << d.what;
    EXPECT_EQ(opened.error().code, EIO) << d.what;
    EXPECT_NE(opened.error().message.find(layer.digest.str()), std::string::npos);
    // The cache rebuilds a damaged index from the blob.
    auto fresh = LayerCache::create(blobs_);
    auto r = (*fresh)->get(layer);
    ASSERT_TRUE(r.ok()) << d.what << ": " << r.error().message;
    EXPECT_EQ(content(*r, "d/file"), "bytes") << d.what;
  }

  patch(index_file, detail::kHdrVersion, std::string("\x03\x00\x00\x00", 4));
  auto newer = detail::open_layer_index(product, layer.digest);
  ASSERT_FALSE(newer.ok());
  EXPECT_EQ(newer.error().code, ENOTSUP);
  auto fresh = LayerCache::create(blobs_);
  EXPECT_EQ((*fresh)->get(layer).error().code, ENOTSUP) << "left for the newer imagefs";
}

TEST_F(Layer, ShortDataFileIsEioNamingTheLayer) {
  store::LayerRecord layer = put(make_tar({File("f", pattern(100000, 1))}));
  auto r = cache_->get(layer);
  ASSERT_TRUE(r.ok());
  // Damage after opening (the open check has passed): a read past the end is EIO, not zeros.
  fs::resize_file(blobs_->derived_dir(layer.digest) / "layer" / "data", 50000);
  std::vector<uint8_t> buf(4096);
  auto n = (*r)->read(0, 60000, buf);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.error().code, EIO);
  EXPECT_NE(n.error().message.find(layer.digest.str()), std::string::npos);
}

TEST_F(Layer, MissingBlobIsEnoent) {
  store::LayerRecord layer{store::Digest::of(std::string_view("absent")), kTar, 6, {}};
  auto r = cache_->get(layer);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_NE(r.error().message.find(layer.digest.str()), std::string::npos);
}

TEST_F(Layer, GcRemovesTheProductWithItsBlob) {
  store::LayerRecord layer = put(make_tar({File("f", "x")}));
  ASSERT_TRUE(cache_->get(layer).ok());
  fs::path derived = blobs_->derived_dir(layer.digest);
  ASSERT_TRUE(fs::exists(derived / "layer"));
  ASSERT_TRUE(blobs_->remove(layer.digest).ok());
  auto removed = store::remove_stale_derived(*blobs_);
  ASSERT_TRUE(removed.ok());
  EXPECT_FALSE(fs::exists(derived));
}

// --- caps (IngestLimits) ------------------------------------------------------------------------

// An ingest over a cap fails with the layer's digest in the error and leaves nothing in the
// store's derived directory: no product, no temporary directory.
class Caps : public Layer {
 protected:
  Result<Index> ingest_with(IngestLimits limits, const std::string& blob) {
    layer_ = put(blob);
    auto cache = LayerCache::create(blobs_, limits);
    EXPECT_TRUE(cache.ok());
    return (*cache)->get(*layer_);
  }
  void expect_refused(const Result<Index>& r, int code, const std::string& says) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, code) << r.error().message;
    EXPECT_NE(r.error().message.find("layer " + layer_->digest.str()), std::string::npos)
        << r.error().message;
    EXPECT_NE(r.error().message.find(says), std::string::npos) << r.error().message;
    std::error_code ec;
    size_t left = 0;
    for (auto it = fs::recursive_directory_iterator(blobs_->derived_dir(layer_->digest), ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
      if (it->is_regular_file()) ++left;
    EXPECT_EQ(left, 0u) << "partial files left behind";
  }
  std::optional<store::LayerRecord> layer_;
};

std::vector<TarEntry> many_files(int n) {
  std::vector<TarEntry> entries{Dir("d")};
  for (int i = 0; i < n; ++i) entries.push_back(File("d/f" + std::to_string(i), "x"));
  return entries;
}

TEST_F(Caps, MoreEntriesThanTheCapIsRefusedNamingTheLayer) {
  IngestLimits limits;
  limits.max_entries = 50;
  expect_refused(ingest_with(limits, make_tar(many_files(60))), EFBIG, "has more than 50 entries");
  // At the cap it is fine: 1 directory and 49 files.
  auto at_cap = ingest_with(limits, make_tar(many_files(49)));
  ASSERT_TRUE(at_cap.ok()) << at_cap.error().message;
  EXPECT_EQ((*at_cap)->size(), 50u);
}

TEST_F(Caps, MoreNameBytesThanTheCapIsRefused) {
  IngestLimits limits;
  limits.max_name_bytes = 4096;
  std::vector<TarEntry> entries{Dir("d")};
  for (int i = 0; i < 40; ++i)
    entries.push_back(
        Symlink("d/link" + std::to_string(i), std::string(200, static_cast<char>('a' + i % 26))));
  expect_refused(ingest_with(limits, make_tar(entries)), EFBIG, "bytes of names");
  // Long xattr values count too.
  std::vector<TarEntry> xattrs{Dir("d")};
  for (int i = 0; i < 3; ++i) {
    TarEntry f = File("d/x" + std::to_string(i), "x");
    f.xattrs.emplace_back("user.big", std::string(2000, 'v'));
    xattrs.push_back(std::move(f));
  }
  expect_refused(ingest_with(limits, make_tar(xattrs)), EFBIG, "bytes of names");
}

TEST_F(Caps, ALayerNeedingMoreDiskThanIsFreeIsENOSPC) {
  // A reserve larger than any disk: the first write of data must be refused, before it is made.
  IngestLimits limits;
  limits.disk_reserve = uint64_t{1} << 62;
  expect_refused(ingest_with(limits, make_tar({Dir("d"), File("d/f", pattern(300000, 2))})), ENOSPC,
                 "needs more disk than the store's filesystem has free");
  // With the ordinary reserve the same layer is fine.
  auto fine = ingest_with(IngestLimits{}, make_tar({Dir("d"), File("d/f", pattern(300000, 2))}));
  ASSERT_TRUE(fine.ok()) << fine.error().message;
  EXPECT_EQ(content(*fine, "d/f"), pattern(300000, 2));
}

}  // namespace
}  // namespace imagefs::overlay
