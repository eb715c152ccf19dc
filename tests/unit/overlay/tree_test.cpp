// The merged tree: OCI layer semantics on small fake layers, inode numbers and link counts,
// laziness, concurrency, and random layer stacks compared with an eager reference model.
#include "overlay/tree.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "store/blob_store.h"
#include "tests/unit/overlay/fake_layer.h"
#include "tests/unit/overlay/tar_builder.h"
#include "tests/unit/store/store_test_util.h"

namespace imagefs::overlay {
namespace {

using testing::FakeLayer;
using testing::Meta;
using Builder = FakeLayer::Builder;
using Layers = std::vector<std::shared_ptr<const LayerIndex>>;

template <typename... L>
std::shared_ptr<Tree> open_tree(const L&... layers) {
  Result<std::shared_ptr<Tree>> tree = Tree::open(Layers{layers...});
  EXPECT_TRUE(tree.ok()) << (tree.ok() ? "" : tree.error().message);
  return tree.ok() ? *tree : nullptr;
}

Attr at(Tree& tree, std::string_view path) {
  Result<Attr> attr = tree.resolve(path);
  EXPECT_TRUE(attr.ok()) << path << ": " << (attr.ok() ? "" : attr.error().message);
  return attr.ok() ? *attr : Attr{};
}

int error_of(const Result<Attr>& result) { return result.ok() ? 0 : result.error().code; }

bool exists(Tree& tree, std::string_view path) { return tree.resolve(path).ok(); }

std::vector<std::string> names(Tree& tree, std::string_view dir) {
  Result<std::vector<DirEntry>> entries = tree.readdir(at(tree, dir).ino);
  EXPECT_TRUE(entries.ok());
  std::vector<std::string> out;
  if (entries.ok()) {
    for (const DirEntry& entry : *entries) out.push_back(entry.name);
  }
  return out;
}

std::string read_all(Tree& tree, Ino ino) {
  std::string out;
  std::vector<uint8_t> buffer(7);  // small on purpose: many reads at odd offsets
  while (true) {
    Result<size_t> n = tree.read(ino, out.size(), buffer);
    EXPECT_TRUE(n.ok());
    if (!n.ok() || *n == 0) break;
    out.append(reinterpret_cast<const char*>(buffer.data()), *n);
  }
  return out;
}

std::string read_all(Tree& tree, std::string_view path) {
  return read_all(tree, at(tree, path).ino);
}

std::vector<WalkEntry> walk_all(Tree& tree) {
  std::vector<WalkEntry> out;
  Result<void> walked = tree.walk([&](const WalkEntry& entry) -> Result<void> {
    out.push_back(entry);
    return {};
  });
  EXPECT_TRUE(walked.ok());
  return out;
}

std::vector<std::string> walk_paths(Tree& tree) {
  std::vector<std::string> out;
  for (const WalkEntry& entry : walk_all(tree)) out.push_back(entry.path);
  return out;
}

// --- basics ---------------------------------------------------------------------------------

TEST(Tree, EmptyImageIsARootDirectory) {
  auto tree = open_tree();
  Result<Attr> root = tree->getattr(kRootIno);
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root->ino, kRootIno);
  EXPECT_EQ(root->mode, S_IFDIR | 0755u);
  EXPECT_EQ(root->uid, 0u);
  EXPECT_EQ(root->mtime_sec, 0);
  EXPECT_TRUE(tree->readdir(kRootIno)->empty());
  EXPECT_EQ(walk_paths(*tree), std::vector<std::string>{""});
}

TEST(Tree, OneLayerShowsEveryKindOfEntry) {
  auto layer =
      Builder("l0")
          .dir("etc", {.mode = 0750, .uid = 3, .gid = 4, .mtime = 1000})
          .file("etc/passwd", "root:x:0:0\n", {.mode = 0644, .uid = 1, .gid = 2, .mtime = 77})
          .file("bin/su", "su!", {.mode = 04755})
          .symlink("bin/sh", "busybox")
          .device("dev/console", EntryType::char_device, 5, 1, {.mode = 0600})
          .device("dev/sda", EntryType::block_device, 8, 0)
          .device("run/fifo", EntryType::fifo, 0, 0)
          .xattr("bin/su", "security.capability", std::string("\x01\x00\x02", 3))
          .xattr("bin/su", "user.note", "hi")
          .build();
  auto tree = open_tree(layer);

  EXPECT_EQ(names(*tree, ""), (std::vector<std::string>{"bin", "dev", "etc", "run"}));
  Attr etc = at(*tree, "etc");
  EXPECT_EQ(etc.mode, S_IFDIR | 0750u);
  EXPECT_EQ(etc.uid, 3u);
  EXPECT_EQ(etc.gid, 4u);
  EXPECT_EQ(etc.mtime_sec, 1000);

  Attr passwd = at(*tree, "etc/passwd");
  EXPECT_EQ(passwd.mode, S_IFREG | 0644u);
  EXPECT_EQ(passwd.size, 11u);
  EXPECT_EQ(passwd.nlink, 1u);
  EXPECT_EQ(passwd.uid, 1u);
  EXPECT_EQ(passwd.gid, 2u);
  EXPECT_EQ(passwd.mtime_sec, 77);
  EXPECT_EQ(read_all(*tree, "etc/passwd"), "root:x:0:0\n");

  EXPECT_EQ(at(*tree, "bin/su").mode, S_IFREG | 04755u);
  Attr sh = at(*tree, "bin/sh");
  EXPECT_EQ(sh.mode, S_IFLNK | 0777u);
  EXPECT_EQ(sh.size, 7u);
  EXPECT_EQ(*tree->readlink(sh.ino), "busybox");

  Attr console = at(*tree, "dev/console");
  EXPECT_EQ(console.mode, S_IFCHR | 0600u);
  EXPECT_EQ(console.rdev_major, 5u);
  EXPECT_EQ(console.rdev_minor, 1u);
  EXPECT_EQ(console.size, 0u);
  EXPECT_EQ(at(*tree, "dev/sda").mode & S_IFMT, static_cast<uint32_t>(S_IFBLK));
  EXPECT_EQ(at(*tree, "dev/sda").rdev_major, 8u);
  EXPECT_EQ(at(*tree, "run/fifo").mode & S_IFMT, static_cast<uint32_t>(S_IFIFO));

  Ino su = at(*tree, "bin/su").ino;
  EXPECT_EQ(*tree->listxattr(su), (std::vector<std::string>{"security.capability", "user.note"}));
  EXPECT_EQ(*tree->getxattr(su, "security.capability"), std::string("\x01\x00\x02", 3));
  EXPECT_EQ(*tree->getxattr(su, "user.note"), "hi");
  EXPECT_EQ(tree->getxattr(su, "user.none").error().code, ENODATA);
  EXPECT_TRUE(tree->listxattr(passwd.ino)->empty());

  Result<ContentSource> source = tree->content(passwd.ino);
  ASSERT_TRUE(source.ok());
  EXPECT_EQ(source->layer.get(), layer.get());
  EXPECT_EQ(source->size, 11u);
  EXPECT_EQ(layer->raw(source->entry).path, "etc/passwd");
}

TEST(Tree, ReadsAtAnyOffset) {
  auto tree = open_tree(Builder("l0").file("f", "0123456789").build());
  Ino f = at(*tree, "f").ino;
  std::vector<uint8_t> buffer(4);
  EXPECT_EQ(*tree->read(f, 0, buffer), 4u);
  EXPECT_EQ(std::string(buffer.begin(), buffer.end()), "0123");
  EXPECT_EQ(*tree->read(f, 8, buffer), 2u);
  EXPECT_EQ(std::string(buffer.begin(), buffer.begin() + 2), "89");
  EXPECT_EQ(*tree->read(f, 10, buffer), 0u);
  EXPECT_EQ(*tree->read(f, 1000, buffer), 0u);
  std::vector<uint8_t> empty;
  EXPECT_EQ(*tree->read(f, 0, empty), 0u);
}

TEST(Tree, ErrorsSayWhatWentWrong) {
  auto tree = open_tree(Builder("l0").file("d/f", "x").symlink("l", "d").build());
  Ino d = at(*tree, "d").ino;
  Ino f = at(*tree, "d/f").ino;
  Ino l = at(*tree, "l").ino;
  std::vector<uint8_t> buffer(4);

  EXPECT_EQ(error_of(tree->lookup(kRootIno, "nope")), ENOENT);
  EXPECT_EQ(error_of(tree->lookup(f, "x")), ENOTDIR);
  EXPECT_EQ(error_of(tree->lookup(999999, "x")), EINVAL);
  EXPECT_EQ(error_of(tree->getattr(0)), EINVAL);
  EXPECT_EQ(error_of(tree->getattr(999999)), EINVAL);
  EXPECT_EQ(tree->readdir(f).error().code, ENOTDIR);
  EXPECT_EQ(tree->readlink(f).error().code, EINVAL);
  EXPECT_EQ(tree->read(d, 0, buffer).error().code, EISDIR);
  EXPECT_EQ(tree->read(l, 0, buffer).error().code, EINVAL);
  EXPECT_EQ(tree->content(d).error().code, EISDIR);
  EXPECT_EQ(tree->content(l).error().code, EINVAL);
  EXPECT_EQ(error_of(tree->resolve("d/f/g")), ENOTDIR);
  EXPECT_EQ(error_of(tree->resolve("d/g")), ENOENT);
  EXPECT_EQ(error_of(tree->resolve("d/../d")), EINVAL);
  // Symlinks are entries, never followed.
  EXPECT_EQ(error_of(tree->resolve("l/f")), ENOTDIR);
  EXPECT_NE(tree->resolve("d/g").error().message.find("d/g"), std::string::npos);
  // Lenient about slashes and dots, as a cleaned path would be.
  EXPECT_EQ(at(*tree, "/d//./f").ino, f);
  EXPECT_EQ(at(*tree, "").ino, kRootIno);
}

// --- whiteouts and opaque directories -----------------------------------------------------------

TEST(Tree, WhiteoutHidesALowerFile) {
  auto l0 = Builder("l0").file("etc/a", "a").file("etc/b", "b").build();
  auto l1 = Builder("l1").whiteout("etc/a").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(names(*tree, "etc"), std::vector<std::string>{"b"});
  EXPECT_EQ(error_of(tree->resolve("etc/a")), ENOENT);
}

TEST(Tree, WhiteoutHidesALowerDirectoryAndEverythingBelow) {
  auto l0 = Builder("l0").file("opt/app/bin/x", "x").file("opt/keep", "k").build();
  auto l1 = Builder("l1").whiteout("opt/app").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(names(*tree, "opt"), std::vector<std::string>{"keep"});
  EXPECT_EQ(error_of(tree->resolve("opt/app/bin/x")), ENOENT);
  EXPECT_EQ(walk_paths(*tree), (std::vector<std::string>{"", "opt", "opt/keep"}));
}

// Whiteouts where nothing is (issue 17): `nodir/.wh.zz` or `nodir/.wh..wh..opq` makes no
// `nodir`, as `umoci unpack` makes none; over a lower directory they act on it, and a real entry
// of the layer under the same directory makes it exist.
TEST(Tree, WhiteoutOfAPathNoLayerHasShowsNothing) {
  auto l0 = Builder("l0").file("a", "a").dir("d").file("d/keep", "k").file("file", "f").build();
  auto l1 = Builder("l1")
                .whiteout("ghost")
                .whiteout("dir/ghost")
                .whiteout("n1/n2/ghost")
                .opaque("nodir")
                .opaque("o1/o2")
                .whiteout("d/n/zz")
                .whiteout("file/zz")
                .whiteout("real/zz")
                .file("real/f", "f")
                .opaque("real2")
                .file("real2/f", "f")
                .build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(walk_paths(*tree), (std::vector<std::string>{"", "a", "d", "d/keep", "file", "real",
                                                         "real/f", "real2", "real2/f"}));
  // Over a lower directory, the same layer's markers act.
  auto l2 = Builder("l2").whiteout("d/keep").opaque("d").build();
  auto over = open_tree(l0, l2);
  EXPECT_EQ(walk_paths(*over), (std::vector<std::string>{"", "a", "d", "file"}));
  auto l3 = Builder("l3").whiteout("d/n/zz").whiteout("d/keep").build();
  auto deep = open_tree(l0, l3);
  EXPECT_EQ(walk_paths(*deep), (std::vector<std::string>{"", "a", "d", "file"}));
  // A conditional directory over one deleted below it is nothing either.
  auto l4 = Builder("l4").whiteout("d").build();
  auto l5 = Builder("l5").whiteout("d/keep").build();
  auto gone = open_tree(l0, l4, l5);
  EXPECT_EQ(walk_paths(*gone), (std::vector<std::string>{"", "a", "file"}));
}

TEST(Tree, WhiteoutInALowerLayerDoesNotHideAnUpperEntry) {
  auto l0 = Builder("l0").file("x", "old").build();
  auto l1 = Builder("l1").whiteout("x").build();
  auto l2 = Builder("l2").file("x", "new").build();
  auto tree = open_tree(l0, l1, l2);
  EXPECT_EQ(read_all(*tree, "x"), "new");
}

TEST(Tree, WhiteoutNamesAreNeverShown) {
  // An index should never hold a ".wh." name, but if one slipped through it must not show.
  auto l0 =
      Builder("l0").file(".wh.x", "marker").file("d/.wh..wh..opq", "").file("d/y", "y").build();
  auto tree = open_tree(l0);
  EXPECT_EQ(names(*tree, ""), std::vector<std::string>{"d"});
  EXPECT_EQ(names(*tree, "d"), std::vector<std::string>{"y"});
  EXPECT_EQ(error_of(tree->resolve(".wh.x")), ENOENT);
  EXPECT_EQ(error_of(tree->lookup(kRootIno, ".wh.x")), ENOENT);
}

TEST(Tree, OpaqueDirectoryHidesLowerContentsWhereverTheMarkerIs) {
  auto l0 =
      Builder("l0").dir("d", {.mode = 0700}).file("d/old", "o").file("d/sub/deep", "z").build();
  // The marker before the new contents, and after them: the ingest folds both the same way.
  auto before =
      Builder("before").dir("d", {.mode = 0711, .uid = 9}).opaque("d").file("d/new", "n").build();
  auto after =
      Builder("after").dir("d", {.mode = 0711, .uid = 9}).file("d/new", "n").opaque("d").build();
  for (const auto& top : {before, after}) {
    auto tree = open_tree(l0, top);
    EXPECT_EQ(names(*tree, "d"), std::vector<std::string>{"new"});
    EXPECT_EQ(at(*tree, "d").mode, S_IFDIR | 0711u);  // the directory itself comes from the top
    EXPECT_EQ(at(*tree, "d").uid, 9u);
    EXPECT_EQ(error_of(tree->resolve("d/sub/deep")), ENOENT);
  }
}

TEST(Tree, OpaqueMarkerAloneKeepsTheLowerDirectorysMetadata) {
  auto l0 = Builder("l0")
                .dir("d", {.mode = 0701, .uid = 5, .mtime = 55})
                .xattr("d", "user.a", "1")
                .file("d/old", "o")
                .build();
  auto l1 = Builder("l1").opaque("d").file("other", "x").build();
  auto tree = open_tree(l0, l1);
  EXPECT_TRUE(names(*tree, "d").empty());
  Attr d = at(*tree, "d");
  EXPECT_EQ(d.mode, S_IFDIR | 0701u);
  EXPECT_EQ(d.uid, 5u);
  EXPECT_EQ(d.mtime_sec, 55);
  EXPECT_EQ(*tree->getxattr(d.ino, "user.a"), "1");
}

TEST(Tree, OpaqueAncestorEndsTheRangeOfDeeperDirectories) {
  auto l0 = Builder("l0").file("a/b/c/zero", "0").build();
  auto l1 = Builder("l1").file("a/b/c/one", "1").opaque("a").build();
  auto l2 = Builder("l2").file("a/b/c/two", "2").build();
  auto tree = open_tree(l0, l1, l2);
  EXPECT_EQ(names(*tree, "a/b/c"), (std::vector<std::string>{"one", "two"}));
}

TEST(Tree, DirectoryDeletedAndRecreatedInOneLayer) {
  auto l0 = Builder("l0").dir("d", {.mode = 0700, .uid = 1}).file("d/old", "o").build();
  // Tar order: the whiteout, then the new directory and its contents (buildkit#2614).
  auto l1 =
      Builder("l1").whiteout("d").dir("d", {.mode = 0755, .uid = 2}).file("d/new", "n").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(names(*tree, "d"), std::vector<std::string>{"new"});
  EXPECT_EQ(at(*tree, "d").uid, 2u);
  EXPECT_EQ(at(*tree, "d").mode, S_IFDIR | 0755u);
}

// --- replacement and implicit directories -------------------------------------------------------

TEST(Tree, FileReplacesADirectory) {
  auto l0 = Builder("l0").file("x/child", "c").file("x/sub/deep", "d").build();
  auto l1 = Builder("l1").file("x", "now a file").build();
  auto tree = open_tree(l0, l1);
  Attr x = at(*tree, "x");
  EXPECT_EQ(x.mode & S_IFMT, static_cast<uint32_t>(S_IFREG));
  EXPECT_EQ(read_all(*tree, "x"), "now a file");
  EXPECT_EQ(error_of(tree->resolve("x/child")), ENOTDIR);
  EXPECT_EQ(walk_paths(*tree), (std::vector<std::string>{"", "x"}));
}

TEST(Tree, DirectoryReplacesAFile) {
  auto l0 = Builder("l0").file("x", "file").build();
  auto l1 = Builder("l1").dir("x", {.mode = 0710}).file("x/child", "c").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(at(*tree, "x").mode, S_IFDIR | 0710u);
  EXPECT_EQ(names(*tree, "x"), std::vector<std::string>{"child"});
}

TEST(Tree, ADirectoryAboveAFileOrAWhiteoutStartsAfresh) {
  auto l0 = Builder("l0").file("x/old", "o").file("y/old", "o").build();
  auto l1 = Builder("l1").file("x", "a file between").whiteout("y").build();
  auto l2 = Builder("l2").file("x/new", "n").file("y/new", "n").build();
  auto tree = open_tree(l0, l1, l2);
  EXPECT_EQ(names(*tree, "x"), std::vector<std::string>{"new"});
  EXPECT_EQ(names(*tree, "y"), std::vector<std::string>{"new"});
}

TEST(Tree, SymlinkReplacesADirectoryAndADirectoryASymlink) {
  auto l0 = Builder("l0").file("a/f", "f").symlink("b", "a").build();
  auto l1 = Builder("l1").symlink("a", "/elsewhere").dir("b").file("b/g", "g").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(*tree->readlink(at(*tree, "a").ino), "/elsewhere");
  EXPECT_EQ(at(*tree, "b").mode, S_IFDIR | 0755u);  // an explicit directory replaces a symlink
  EXPECT_EQ(walk_paths(*tree), (std::vector<std::string>{"", "a", "b", "b/g"}));
}

// --- entries under symlinked directories (docs/LAYER_FORMAT.md) ---------------------------------

// A usr-merged base: bin and lib are symlinks into usr.
std::shared_ptr<FakeLayer> usr_merged(const std::string& lib_target) {
  return Builder("base")
      .dir("usr")
      .dir("usr/bin")
      .file("usr/bin/old", "old")
      .file("usr/bin/sh", "sh")
      .dir("usr/lib")
      .file("usr/lib/libc.so", "libc")
      .symlink("bin", "usr/bin")
      .symlink("lib", lib_target)
      .build();
}

TEST(Tree, EntriesUnderARelativeSymlinkGoWhereItLeads) {
  auto l1 = Builder("l1").file("lib/x86_64/libnew.so", "new").file("bin/added", "a").build();
  auto tree = open_tree(usr_merged("usr/lib"), l1);
  EXPECT_EQ(*tree->readlink(at(*tree, "lib").ino), "usr/lib");
  EXPECT_EQ(*tree->readlink(at(*tree, "bin").ino), "usr/bin");
  EXPECT_EQ(names(*tree, "usr/lib"), (std::vector<std::string>{"libc.so", "x86_64"}));
  EXPECT_EQ(read_all(*tree, "usr/lib/x86_64/libnew.so"), "new");
  EXPECT_EQ(names(*tree, "usr/bin"), (std::vector<std::string>{"added", "old", "sh"}));
  EXPECT_EQ(names(*tree, ""), (std::vector<std::string>{"bin", "lib", "usr"}));
  EXPECT_EQ(walk_paths(*tree),
            (std::vector<std::string>{"", "bin", "lib", "usr", "usr/bin", "usr/bin/added",
                                      "usr/bin/old", "usr/bin/sh", "usr/lib", "usr/lib/libc.so",
                                      "usr/lib/x86_64", "usr/lib/x86_64/libnew.so"}));
}

TEST(Tree, EntriesUnderAnAbsoluteSymlinkStartAtTheImageRoot) {
  auto l1 = Builder("l1").file("lib/modules/6.1/modules.dep", "dep").build();
  auto tree = open_tree(usr_merged("/usr/lib"), l1);
  EXPECT_EQ(*tree->readlink(at(*tree, "lib").ino), "/usr/lib");
  EXPECT_EQ(read_all(*tree, "usr/lib/modules/6.1/modules.dep"), "dep");
  EXPECT_EQ(names(*tree, "usr/lib"), (std::vector<std::string>{"libc.so", "modules"}));
}

TEST(Tree, ChainedSymlinksAreFollowedToTheEnd) {
  auto l0 = Builder("l0")
                .dir("real/d")
                .file("real/d/old", "o")
                .symlink("a", "b/c")
                .symlink("b", "/hop")
                .dir("hop")
                .symlink("hop/c", "../real/d")
                .build();
  auto l1 = Builder("l1").file("a/new", "n").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(names(*tree, "real/d"), (std::vector<std::string>{"new", "old"}));
  EXPECT_TRUE(names(*tree, "hop") == std::vector<std::string>{"c"});
  EXPECT_EQ(at(*tree, "a").mode & S_IFMT, unsigned{S_IFLNK});
}

TEST(Tree, DotDotInATargetStopsAtTheRoot) {
  auto l0 =
      Builder("l0").dir("usr/lib").dir("etc").symlink("etc/alt", "../../../../usr/lib").build();
  auto l1 = Builder("l1").file("etc/alt/file", "f").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(read_all(*tree, "usr/lib/file"), "f");
  EXPECT_TRUE(names(*tree, "etc") == std::vector<std::string>{"alt"});
  EXPECT_EQ(at(*tree, "etc/alt").mode & S_IFMT, unsigned{S_IFLNK});
}

TEST(Tree, ASymlinkToNothingMakesTheDirectoriesItNames) {
  auto l0 = Builder("l0").symlink("lib", "usr/lib").build();
  auto l1 = Builder("l1").file("lib/x", "x").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(read_all(*tree, "usr/lib/x"), "x");
  EXPECT_EQ(at(*tree, "usr").mode, S_IFDIR | 0755u);
  EXPECT_EQ(names(*tree, ""), (std::vector<std::string>{"lib", "usr"}));
}

TEST(Tree, EntriesUnderASymlinkToAFileFailTheOpenAsUmociFails) {
  // umoci 0.4: "unpack entry: lib/x: mkdir parent: mkdir .../usr/file: not a directory".
  auto l0 = Builder("l0").file("usr/file", "f").symlink("lib", "usr/file").build();
  auto l1 = Builder("l1").file("lib/x", "x").file("keep", "k").build();
  Result<std::shared_ptr<Tree>> tree = Tree::open(Layers{l0, l1});
  ASSERT_FALSE(tree.ok());
  EXPECT_EQ(tree.error().code, ENOTDIR);
  EXPECT_NE(tree.error().message.find("entries under lib: it leads to usr/file, which is not a "
                                      "directory"),
            std::string::npos)
      << tree.error().message;
}

TEST(Tree, ASymlinkLoopFailsTheOpenNamingTheEntry) {
  auto l0 = Builder("l0").symlink("a", "b").symlink("b", "/a").build();
  auto l1 = Builder("l1").file("a/x", "x").build();
  Result<std::shared_ptr<Tree>> tree = Tree::open(Layers{l0, l1});
  ASSERT_FALSE(tree.ok());
  EXPECT_EQ(tree.error().code, ELOOP);
  EXPECT_NE(tree.error().message.find("entries under a:"), std::string::npos)
      << tree.error().message;
  EXPECT_NE(tree.error().message.find("too many levels of symbolic links"), std::string::npos);
  // A long chain that ends is not a loop; one link more than 40 is.
  Builder chain("chain");
  for (int i = 0; i < 40; ++i) chain.symlink("s" + std::to_string(i), "s" + std::to_string(i + 1));
  chain.dir("s40");
  auto ok = open_tree(chain.build(), Builder("up").file("s0/x", "x").build());
  EXPECT_EQ(read_all(*ok, "s40/x"), "x");
  Builder longer("longer");
  for (int i = 0; i < 41; ++i) longer.symlink("s" + std::to_string(i), "s" + std::to_string(i + 1));
  longer.dir("s41");
  EXPECT_EQ(
      Tree::open(Layers{longer.build(), Builder("up").file("s0/x", "x").build()}).error().code,
      ELOOP);
}

TEST(Tree, WhiteoutsUnderASymlinkDeleteWhereItLeads) {
  auto l1 = Builder("l1").whiteout("bin/old").file("bin/added", "a").build();
  auto tree = open_tree(usr_merged("usr/lib"), l1);
  EXPECT_EQ(names(*tree, "usr/bin"), (std::vector<std::string>{"added", "sh"}));
  EXPECT_EQ(error_of(tree->resolve("usr/bin/old")), ENOENT);
  EXPECT_EQ(at(*tree, "bin").mode & S_IFMT, unsigned{S_IFLNK});
  // An opaque marker under the symlink empties the directory it leads to, as umoci's unpack
  // and containerd's applier do (they resolve the marker's directory through the symlink).
  auto l2 = Builder("l2").opaque("lib").file("lib/only", "o").build();
  auto opaque = open_tree(usr_merged("usr/lib"), l2);
  EXPECT_EQ(names(*opaque, "usr/lib"), (std::vector<std::string>{"only"}));
  EXPECT_EQ(at(*opaque, "lib").mode & S_IFMT, unsigned{S_IFLNK});
  auto l3 = Builder("l3").opaque("lib").build();
  auto alone = open_tree(usr_merged("usr/lib"), l3);
  EXPECT_TRUE(names(*alone, "usr/lib").empty());
  EXPECT_EQ(at(*alone, "lib").mode & S_IFMT, unsigned{S_IFLNK});
  // A whiteout under a symlink to nothing makes nothing.
  auto l4 = Builder("l4").whiteout("dangling/x").build();
  auto nothing = open_tree(Builder("l0").symlink("dangling", "nowhere/deep").build(), l4);
  EXPECT_EQ(walk_paths(*nothing), (std::vector<std::string>{"", "dangling"}));
}

TEST(Tree, LaterLayersFollowWhatEarlierRedirectsMade) {
  auto l1 = Builder("l1").file("lib/x86_64/a.so", "a").build();
  auto l2 = Builder("l2").file("lib/x86_64/b.so", "b").whiteout("lib/x86_64/a.so").build();
  auto l3 = Builder("l3").hardlink("lib/x86_64/c.so", "lib/x86_64/b.so").build();
  auto tree = open_tree(usr_merged("usr/lib"), l1, l2, l3);
  EXPECT_EQ(names(*tree, "usr/lib/x86_64"), (std::vector<std::string>{"b.so", "c.so"}));
  EXPECT_EQ(at(*tree, "usr/lib/x86_64/c.so").ino, at(*tree, "usr/lib/x86_64/b.so").ino);
  EXPECT_EQ(at(*tree, "usr/lib/x86_64/c.so").nlink, 2u);
  EXPECT_EQ(read_all(*tree, "usr/lib/x86_64/c.so"), "b");
}

TEST(Tree, AnExplicitDirectoryReplacesTheSymlinkAsDockerDoes) {
  // moby's UnpackLayer: an existing path is removed unless both it and the entry are
  // directories; lstat sees the symlink, so the entry replaces it.
  auto l1 = Builder("l1").dir("lib").file("lib/new", "n").build();
  auto l2 = Builder("l2").file("lib/later", "l").build();
  auto tree = open_tree(usr_merged("usr/lib"), l1, l2);
  EXPECT_EQ(at(*tree, "lib").mode, S_IFDIR | 0755u);
  EXPECT_EQ(names(*tree, "lib"), (std::vector<std::string>{"later", "new"}));
  EXPECT_EQ(names(*tree, "usr/lib"), std::vector<std::string>{"libc.so"});
}

TEST(Tree, ASymlinkToTheRootPutsEntriesAtTheRoot) {
  auto l0 = Builder("l0").symlink("up", "..").file("f", "f").build();
  auto l1 = Builder("l1").file("up/g", "g").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(names(*tree, ""), (std::vector<std::string>{"f", "g", "up"}));
}

TEST(Tree, ImplicitParentKeepsTheLowerDirectorysMetadata) {
  auto l0 = Builder("l0")
                .dir("usr", {.mode = 0700, .uid = 7, .gid = 8, .mtime = 1234})
                .xattr("usr", "user.k", "v")
                .file("usr/old", "o")
                .build();
  auto l1 = Builder("l1").file("usr/new", "n").build();  // "usr" is implicit in l1
  auto tree = open_tree(l0, l1);
  Attr usr = at(*tree, "usr");
  EXPECT_EQ(usr.mode, S_IFDIR | 0700u);
  EXPECT_EQ(usr.uid, 7u);
  EXPECT_EQ(usr.gid, 8u);
  EXPECT_EQ(usr.mtime_sec, 1234);
  EXPECT_EQ(*tree->getxattr(usr.ino, "user.k"), "v");
  EXPECT_EQ(names(*tree, "usr"), (std::vector<std::string>{"new", "old"}));
}

TEST(Tree, ImplicitParentOverNothingIsRootOwned0755) {
  auto tree = open_tree(Builder("l0").file("a/b/c", "c").build());
  for (const char* path : {"a", "a/b"}) {
    Attr dir = at(*tree, path);
    EXPECT_EQ(dir.mode, S_IFDIR | 0755u) << path;
    EXPECT_EQ(dir.uid, 0u);
    EXPECT_EQ(dir.gid, 0u);
    EXPECT_EQ(dir.mtime_sec, 0);
    EXPECT_TRUE(tree->listxattr(dir.ino)->empty());
  }
}

TEST(Tree, ImplicitParentOverALowerFileReplacesIt) {
  auto l0 = Builder("l0").file("a", "file", {.mode = 0600, .uid = 3}).build();
  auto l1 = Builder("l1").file("a/b", "b").build();
  auto tree = open_tree(l0, l1);
  Attr a = at(*tree, "a");
  EXPECT_EQ(a.mode, S_IFDIR | 0755u);
  EXPECT_EQ(a.uid, 0u);
}

TEST(Tree, ImplicitParentBelowAWhiteoutGetsNoMetadataFromUnderIt) {
  auto l0 = Builder("l0").dir("a", {.mode = 0700, .uid = 3}).build();
  auto l1 = Builder("l1").whiteout("a").build();
  auto l2 = Builder("l2").file("a/new", "n").build();
  auto tree = open_tree(l0, l1, l2);
  EXPECT_EQ(at(*tree, "a").mode, S_IFDIR | 0755u);
  EXPECT_EQ(at(*tree, "a").uid, 0u);
}

TEST(Tree, DirectoryMetadataFromTheTopmostExplicitEntryAndChildrenFromAll) {
  auto l0 = Builder("l0").dir("d", {.mode = 0700, .uid = 1}).file("d/zero", "0").build();
  auto l1 = Builder("l1").dir("d", {.mode = 0750, .uid = 2}).file("d/one", "1").build();
  auto l2 = Builder("l2").file("d/two", "2").build();  // implicit
  auto tree = open_tree(l0, l1, l2);
  EXPECT_EQ(at(*tree, "d").mode, S_IFDIR | 0750u);
  EXPECT_EQ(at(*tree, "d").uid, 2u);
  EXPECT_EQ(names(*tree, "d"), (std::vector<std::string>{"one", "two", "zero"}));
}

TEST(Tree, UpperEntryReplacesLowerOneOfTheSameName) {
  auto l0 = Builder("l0").file("f", "old", {.mode = 0600}).symlink("s", "old").build();
  auto l1 = Builder("l1").file("f", "newer", {.mode = 0755}).symlink("s", "new").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(read_all(*tree, "f"), "newer");
  EXPECT_EQ(at(*tree, "f").mode, S_IFREG | 0755u);
  EXPECT_EQ(*tree->readlink(at(*tree, "s").ino), "new");
}

TEST(Tree, DeepPaths) {
  std::string path = "d0";
  for (int i = 1; i < 300; ++i) path += "/d" + std::to_string(i);
  auto l0 = Builder("l0").file(path + "/leaf", "deep").build();
  auto l1 = Builder("l1").file(path + "/upper", "up").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(read_all(*tree, path + "/leaf"), "deep");
  EXPECT_EQ(names(*tree, path), (std::vector<std::string>{"leaf", "upper"}));
  EXPECT_EQ(walk_paths(*tree).size(), 1u + 300u + 2u);
  EXPECT_EQ(error_of(tree->resolve(path + "/leaf/x")), ENOTDIR);
}

// --- hardlinks ----------------------------------------------------------------------------------

TEST(Tree, HardlinkInOneLayerSharesTheInode) {
  auto l0 = Builder("l0")
                .file("bin/a", "shared", {.mode = 0751, .uid = 5, .mtime = 9})
                .xattr("bin/a", "user.x", "1")
                .hardlink("bin/b", "bin/a")
                .hardlink("c", "bin/a")
                .build();
  auto tree = open_tree(l0);
  Attr a = at(*tree, "bin/a");
  for (const char* path : {"bin/b", "c"}) {
    Attr link = at(*tree, path);
    EXPECT_EQ(link.ino, a.ino) << path;
    EXPECT_EQ(link.nlink, 3u);
    EXPECT_EQ(link.mode, S_IFREG | 0751u);  // the target's metadata, not the link entry's
    EXPECT_EQ(link.uid, 5u);
    EXPECT_EQ(link.mtime_sec, 9);
    EXPECT_EQ(link.size, 6u);
    EXPECT_EQ(read_all(*tree, path), "shared");
    EXPECT_EQ(*tree->getxattr(link.ino, "user.x"), "1");
  }
  EXPECT_EQ(a.nlink, 3u);
}

TEST(Tree, HardlinkToALowerLayer) {
  auto l0 = Builder("l0").file("usr/bin/python3.11", "py", {.mode = 0755}).build();
  auto l1 = Builder("l1").hardlink("usr/bin/python3", "usr/bin/python3.11").build();
  auto tree = open_tree(l0, l1);
  Attr target = at(*tree, "usr/bin/python3.11");
  Attr link = at(*tree, "usr/bin/python3");
  EXPECT_EQ(link.ino, target.ino);
  EXPECT_EQ(link.nlink, 2u);
  EXPECT_EQ(target.nlink, 2u);
  EXPECT_EQ(read_all(*tree, link.ino), "py");
  Result<ContentSource> source = tree->content(link.ino);
  ASSERT_TRUE(source.ok());
  EXPECT_EQ(source->layer.get(), l0.get());
}

TEST(Tree, LinkCountDropsWhenALaterLayerDeletesOrReplacesAPath) {
  auto l0 = Builder("l0").file("a", "content").build();
  auto l1 = Builder("l1").hardlink("b", "a").hardlink("c", "a").build();
  {
    auto deleted = Builder("l2").whiteout("a").build();
    auto tree = open_tree(l0, l1, deleted);
    EXPECT_FALSE(exists(*tree, "a"));
    EXPECT_EQ(at(*tree, "b").nlink, 2u);
    EXPECT_EQ(at(*tree, "b").ino, at(*tree, "c").ino);
    EXPECT_EQ(read_all(*tree, "c"), "content");
  }
  {
    auto replaced = Builder("l2").file("b", "other").build();
    auto tree = open_tree(l0, l1, replaced);
    EXPECT_EQ(at(*tree, "a").nlink, 2u);
    EXPECT_EQ(at(*tree, "a").ino, at(*tree, "c").ino);
    EXPECT_EQ(at(*tree, "b").nlink, 1u);
    EXPECT_NE(at(*tree, "b").ino, at(*tree, "a").ino);
  }
  {
    auto parent_gone = Builder("l2").file("x/a", "x").build();
    auto hidden = Builder("l3").whiteout("b").whiteout("c").build();
    auto tree = open_tree(l0, l1, parent_gone, hidden);
    EXPECT_EQ(at(*tree, "a").nlink, 1u);
  }
}

TEST(Tree, HardlinkChainsAcrossLayersAreOneFile) {
  auto l0 = Builder("l0").file("f", "bytes").build();
  auto l1 = Builder("l1").hardlink("g", "f").build();
  auto l2 = Builder("l2").hardlink("h", "g").hardlink("i", "h").build();  // i: same layer as h
  auto tree = open_tree(l0, l1, l2);
  Ino ino = at(*tree, "f").ino;
  for (const char* path : {"f", "g", "h", "i"}) {
    EXPECT_EQ(at(*tree, path).ino, ino) << path;
    EXPECT_EQ(at(*tree, path).nlink, 4u) << path;
  }
  auto walk = walk_all(*tree);
  ASSERT_EQ(walk.size(), 5u);
  EXPECT_EQ(walk[1].path, "f");
  EXPECT_EQ(walk[1].hardlink_first, "");
  for (size_t i = 2; i < walk.size(); ++i) EXPECT_EQ(walk[i].hardlink_first, "f") << walk[i].path;
}

TEST(Tree, HardlinkResolvesInTheLayersBelowItsOwn) {
  auto l0 = Builder("l0").file("t", "lower").build();
  // The same layer deletes the target (whiteouts only act on lower layers) and links to it.
  auto l1 = Builder("l1").whiteout("t").hardlink("h", "t").build();
  auto tree = open_tree(l0, l1);
  EXPECT_FALSE(exists(*tree, "t"));
  EXPECT_EQ(read_all(*tree, "h"), "lower");
  EXPECT_EQ(at(*tree, "h").nlink, 1u);

  // A link declared before a same-layer file of that name links to the lower file.
  auto l2 = Builder("l2").hardlink("h2", "t2").file("t2", "upper").build();
  auto tree2 = open_tree(Builder("b").file("t2", "below").build(), l2);
  EXPECT_EQ(read_all(*tree2, "h2"), "below");
  EXPECT_NE(at(*tree2, "h2").ino, at(*tree2, "t2").ino);
}

TEST(Tree, HardlinkTargetUnderAReplacedDirectoryIsGone) {
  auto l0 = Builder("l0").file("x/f", "f").build();
  auto l1 = Builder("l1").file("x", "a file").build();
  auto l2 = Builder("l2").file("x/g", "g").build();
  EXPECT_FALSE(Tree::open(Layers{l0, l1, l2, Builder("l3").hardlink("h", "x/f").build()}).ok());
  EXPECT_TRUE(Tree::open(Layers{l0, l1, l2, Builder("l3").hardlink("h", "x/g").build()}).ok());
}

TEST(Tree, HardlinkOverItsOwnTargetPathKeepsTheFile) {
  auto l0 = Builder("l0").file("p", "same").build();
  auto l1 = Builder("l1").hardlink("p", "p").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(read_all(*tree, "p"), "same");
  EXPECT_EQ(at(*tree, "p").nlink, 1u);
}

TEST(Tree, BadHardlinksFailTheOpenNamingLayerAndEntry) {
  struct Case {
    std::shared_ptr<FakeLayer> lower;
    std::shared_ptr<FakeLayer> upper;
    const char* why;
  };
  auto base = Builder("base").dir("d").file("t", "t").build();
  auto between = Builder("between").whiteout("t").build();  // hides the target from the link
  std::vector<Case> cases = {
      {base, Builder("up1").hardlink("h", "missing").build(), "not in the layers below"},
      {base, Builder("up2").hardlink("h", "d").build(), "directory"},
      {base, Builder("up3").dir("x").hardlink("h", "x").build(), "directory"},
      {between, Builder("up4").hardlink("h", "t").build(), "not in the layers below"},
  };
  for (const Case& c : cases) {
    Result<std::shared_ptr<Tree>> tree = c.lower == between
                                             ? Tree::open(Layers{base, between, c.upper})
                                             : Tree::open(Layers{c.lower, c.upper});
    ASSERT_FALSE(tree.ok()) << c.why;
    EXPECT_EQ(tree.error().code, EIO);
    const std::string& message = tree.error().message;
    EXPECT_NE(message.find(c.upper->digest().str()), std::string::npos) << message;
    EXPECT_NE(message.find("hardlink h ->"), std::string::npos) << message;
    EXPECT_NE(message.find(c.why), std::string::npos) << message;
  }
  // Nothing below the base layer.
  EXPECT_FALSE(Tree::open(Layers{Builder("only").hardlink("h", "t").build()}).ok());
}

TEST(Tree, HardlinksToSymlinksDevicesAndFifosShareTheirInode) {
  // link(2) links any non-directory, and `umoci unpack` links what the tar says.
  auto l0 = Builder("l0")
                .symlink("s", "target", {.mode = 0777, .uid = 6})
                .device("c", EntryType::char_device, 4, 64, {.mode = 0620})
                .device("p", EntryType::fifo, 0, 0)
                .build();
  auto l1 = Builder("l1")
                .hardlink("s2", "s")
                .hardlink("c2", "c")
                .hardlink("p2", "p")
                .symlink("t", "x")
                .hardlink("t2", "t")
                .build();
  auto tree = open_tree(l0, l1);
  for (const auto& [a, b] : {std::pair{"s", "s2"}, {"c", "c2"}, {"p", "p2"}, {"t", "t2"}}) {
    Attr first = at(*tree, a);
    Attr second = at(*tree, b);
    EXPECT_EQ(first.ino, second.ino) << a;
    EXPECT_EQ(first.nlink, 2u) << a;
    EXPECT_EQ(first.mode, second.mode) << a;
    EXPECT_EQ(first.rdev_major, second.rdev_major) << a;
  }
  EXPECT_EQ(*tree->readlink(at(*tree, "s2").ino), "target");
  EXPECT_EQ(at(*tree, "s2").uid, 6u);
  EXPECT_EQ(at(*tree, "c2").mode, S_IFCHR | 0620u);
  EXPECT_EQ(at(*tree, "c2").rdev_minor, 64u);
  EXPECT_EQ(at(*tree, "p2").mode & S_IFMT, static_cast<uint32_t>(S_IFIFO));
}

// --- the root -----------------------------------------------------------------------------------

TEST(Tree, RootMetadataComesFromTheTopmostDotEntry) {
  auto l0 = Builder("l0").root({.mode = 0700, .uid = 1, .mtime = 10}).file("a", "").build();
  auto l1 = Builder("l1")
                .root({.mode = 0750, .uid = 2, .gid = 3, .mtime = 20})
                .root_xattr("user.root", "yes")
                .file("b", "")
                .build();
  auto l2 = Builder("l2").file("c", "").build();
  auto tree = open_tree(l0, l1, l2);
  Attr root = *tree->getattr(kRootIno);
  EXPECT_EQ(root.mode, S_IFDIR | 0750u);
  EXPECT_EQ(root.uid, 2u);
  EXPECT_EQ(root.gid, 3u);
  EXPECT_EQ(root.mtime_sec, 20);
  EXPECT_EQ(*tree->listxattr(kRootIno), std::vector<std::string>{"user.root"});
  EXPECT_EQ(*tree->getxattr(kRootIno, "user.root"), "yes");
  EXPECT_EQ(names(*tree, ""), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(Tree, OpaqueRootHidesEveryLowerLayer) {
  auto l0 = Builder("l0").root({.mode = 0711, .uid = 4}).file("old", "").file("t", "t").build();
  auto l1 = Builder("l1").root_opaque().file("new", "").build();
  auto tree = open_tree(l0, l1);
  EXPECT_EQ(names(*tree, ""), std::vector<std::string>{"new"});
  EXPECT_EQ(tree->getattr(kRootIno)->mode, S_IFDIR | 0711u);  // contents hidden, not the root
  EXPECT_EQ(tree->getattr(kRootIno)->uid, 4u);
  // Hardlinks resolve below their layer with the same rule.
  EXPECT_FALSE(Tree::open(Layers{l0, l1, Builder("l2").hardlink("h", "t").build()}).ok());
  auto linked = open_tree(l0, Builder("l1b").hardlink("h", "t").build(), l1);
  EXPECT_EQ(names(*linked, ""), std::vector<std::string>{"new"});
}

// --- inode numbers, readdir and walk -------------------------------------------------------------

TEST(Tree, ReaddirAndLookupAgreeOnInodeNumbers) {
  auto l0 = Builder("l0").file("d/a", "a").dir("d/sub").symlink("d/l", "a").build();
  auto l1 = Builder("l1").file("d/b", "b").hardlink("d/h", "d/a").build();
  auto tree = open_tree(l0, l1);
  Ino d = at(*tree, "d").ino;
  // readdir first for one directory, lookup first for another tree: both orders agree.
  Result<std::vector<DirEntry>> entries = tree->readdir(d);
  ASSERT_TRUE(entries.ok());
  for (const DirEntry& entry : *entries) {
    Result<Attr> looked = tree->lookup(d, entry.name);
    ASSERT_TRUE(looked.ok());
    EXPECT_EQ(looked->ino, entry.attr.ino) << entry.name;
    EXPECT_EQ(tree->getattr(entry.attr.ino)->ino, entry.attr.ino);
    EXPECT_EQ(looked->nlink, entry.attr.nlink);
  }
  auto tree2 = open_tree(l0, l1);
  Ino a = at(*tree2, "d/a").ino;
  Ino h = at(*tree2, "d/h").ino;
  EXPECT_EQ(a, h);
  Result<std::vector<DirEntry>> entries2 = tree2->readdir(at(*tree2, "d").ino);
  ASSERT_TRUE(entries2.ok());
  for (const DirEntry& entry : *entries2) {
    EXPECT_EQ(entry.attr.ino, tree2->lookup(at(*tree2, "d").ino, entry.name)->ino);
  }
  // Stable: asking again gives the same numbers.
  EXPECT_EQ(at(*tree2, "d/a").ino, a);
  std::set<Ino> inos;
  for (const WalkEntry& entry : walk_all(*tree2)) inos.insert(entry.attr.ino);
  EXPECT_EQ(inos.size(), walk_all(*tree2).size() - 1);  // d/a and d/h share one
}

TEST(Tree, WalkVisitsDirectoriesFirstInByteOrder) {
  auto l0 = Builder("l0")
                .file("a-b", "")
                .file("a/z", "")
                .file("a/b/c", "")
                .file("B", "")
                .file("\xc3\xa9", "")  // bytes above ASCII sort last
                .build();
  auto l1 = Builder("l1").file("a/a", "").hardlink("a0", "a/z").build();
  auto tree = open_tree(l0, l1);
  std::vector<WalkEntry> walk = walk_all(*tree);
  std::vector<std::string> paths;
  for (const WalkEntry& entry : walk) paths.push_back(entry.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"", "B", "a", "a/a", "a/b", "a/b/c", "a/z", "a-b",
                                             "a0", "\xc3\xa9"}));
  EXPECT_EQ(walk[0].attr.ino, kRootIno);
  EXPECT_EQ(walk[6].hardlink_first, "");
  EXPECT_EQ(walk[8].hardlink_first, "a/z");
  EXPECT_EQ(walk[8].attr.ino, walk[6].attr.ino);
}

TEST(Tree, WalkStopsAtTheFirstVisitError) {
  auto tree = open_tree(Builder("l0").file("a", "").file("b", "").file("c", "").build());
  int visits = 0;
  Result<void> walked = tree->walk([&](const WalkEntry& entry) -> Result<void> {
    ++visits;
    if (entry.path == "b") return make_error(ENOSPC, "full");
    return {};
  });
  ASSERT_FALSE(walked.ok());
  EXPECT_EQ(walked.error().code, ENOSPC);
  EXPECT_EQ(visits, 3);
}

// --- laziness -----------------------------------------------------------------------------------

TEST(Tree, LookupInAHugeRootMergesNothingDeeper) {
  Builder b0("l0");
  for (int i = 0; i < 100000; ++i) b0.file("f" + std::to_string(i), "");
  for (int d = 0; d < 10; ++d) {
    for (int i = 0; i < 200; ++i) b0.file("d" + std::to_string(d) + "/g" + std::to_string(i), "");
  }
  auto l0 = b0.build();
  auto l1 = Builder("l1").file("d3/new", "").hardlink("d4/link", "f7").whiteout("f8").build();
  auto tree = open_tree(l0, l1);
  l0->reset_counters();
  l1->reset_counters();

  Result<Attr> found = tree->lookup(kRootIno, "f50000");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(error_of(tree->lookup(kRootIno, "f8")), ENOENT);
  EXPECT_EQ(at(*tree, "f7").nlink, 2u);
  for (const FakeLayer* layer : {l0.get(), l1.get()}) {
    EXPECT_EQ(layer->children_calls(), 1u);  // the root's, once
    EXPECT_EQ(layer->find_calls(), 0u);
    for (size_t i = 0; i < layer->size(); ++i) {
      if (layer->raw(i).path.find('/') != std::string::npos) {
        ASSERT_EQ(layer->touched(i), 0u) << layer->raw(i).path;
      }
    }
  }
  // A deeper directory is merged when it is asked for, and only it.
  std::vector<std::string> d4 = names(*tree, "d4");
  EXPECT_EQ(d4.size(), 201u);
  EXPECT_TRUE(std::is_sorted(d4.begin(), d4.end()));
  for (size_t i = 0; i < l0->size(); ++i) {
    const std::string& path = l0->raw(i).path;
    if (path.find('/') != std::string::npos && !path.starts_with("d4/")) {
      ASSERT_EQ(l0->touched(i), 0u) << path;
    }
  }
}

// --- over the real ingest -----------------------------------------------------------------------

// The contract between the ingest and the tree, end to end: tars as tar writers order them,
// markers and all, through LayerCache into a Tree.
TEST(TreeOverIngest, MarkersWhereverTheTarPutsThem) {
  using testing::Dir;
  using testing::File;
  using testing::Hardlink;
  store::testing::TempDir dir;
  auto blobs = store::BlobStore::open(dir.path() / "store");
  ASSERT_TRUE(blobs.ok()) << blobs.error().message;
  auto cache = LayerCache::create(*blobs);
  ASSERT_TRUE(cache.ok()) << cache.error().message;
  auto ingest = [&](const std::vector<testing::TarEntry>& entries) {
    const std::string tar = testing::make_tar(entries);
    const store::Digest digest = store::Digest::of(tar);
    EXPECT_TRUE((*blobs)->put(digest, tar).ok());
    auto index = (*cache)->get(store::LayerRecord{digest, testing::kTar, tar.size(), {}});
    EXPECT_TRUE(index.ok()) << index.error().message;
    return index.ok() ? *index : nullptr;
  };
  testing::TarEntry opt = Dir("opt", 0700);
  opt.uid = 12;
  auto l0 = ingest({Dir("etc"), File("etc/passwd", "root"), File("etc/motd", "hi"), opt,
                    File("opt/app/bin", "x"), File("usr/bin/python3.11", "py", 0755), Dir("var"),
                    File("var/old", "o")});
  auto l1 = ingest({File("etc/.wh.motd", ""), Hardlink("usr/bin/python3", "usr/bin/python3.11"),
                    File("opt/.wh..wh..opq", ""), File("opt/new", "n"), File(".wh.var", ""),
                    Dir("var", 0750), File("var/new", "n"), File("usr/lib/x", "x")});
  auto l2 = ingest({File("usr/bin/.wh.python3.11", "")});
  ASSERT_TRUE(l0 && l1 && l2);

  auto two = open_tree(l0, l1);
  EXPECT_EQ(names(*two, "etc"), std::vector<std::string>{"passwd"});
  EXPECT_EQ(names(*two, "opt"), std::vector<std::string>{"new"});
  EXPECT_EQ(at(*two, "opt").mode, S_IFDIR | 0700u);
  EXPECT_EQ(at(*two, "opt").uid, 12u);
  EXPECT_EQ(names(*two, "var"), std::vector<std::string>{"new"});
  EXPECT_EQ(at(*two, "var").mode, S_IFDIR | 0750u);
  EXPECT_EQ(at(*two, "usr/bin/python3").ino, at(*two, "usr/bin/python3.11").ino);
  EXPECT_EQ(at(*two, "usr/bin/python3").nlink, 2u);
  EXPECT_EQ(at(*two, "usr/bin/python3").mode, S_IFREG | 0755u);
  EXPECT_EQ(read_all(*two, "usr/bin/python3"), "py");
  EXPECT_EQ(names(*two, "usr"), (std::vector<std::string>{"bin", "lib"}));

  auto three = open_tree(l0, l1, l2);
  EXPECT_EQ(names(*three, "usr/bin"), std::vector<std::string>{"python3"});
  EXPECT_EQ(at(*three, "usr/bin/python3").nlink, 1u);
  EXPECT_EQ(read_all(*three, "usr/bin/python3"), "py");
}

// A usr-merged base and layers over it through the real ingest: a layer with no entry for lib,
// and one that declares the symlink again before writing under it (the ingest follows it).
TEST(TreeOverIngest, LayersWritingThroughUsrMergedSymlinks) {
  using testing::Dir;
  using testing::File;
  using testing::Symlink;
  store::testing::TempDir dir;
  auto blobs = store::BlobStore::open(dir.path() / "store");
  ASSERT_TRUE(blobs.ok()) << blobs.error().message;
  auto cache = LayerCache::create(*blobs);
  ASSERT_TRUE(cache.ok()) << cache.error().message;
  auto ingest = [&](const std::vector<testing::TarEntry>& entries) {
    const std::string tar = testing::make_tar(entries);
    const store::Digest digest = store::Digest::of(tar);
    EXPECT_TRUE((*blobs)->put(digest, tar).ok());
    auto index = (*cache)->get(store::LayerRecord{digest, testing::kTar, tar.size(), {}});
    EXPECT_TRUE(index.ok()) << index.error().message;
    return index.ok() ? *index : nullptr;
  };
  auto base = ingest(
      {Dir("usr"), Dir("usr/lib"), File("usr/lib/libc.so.6", "libc"), Symlink("lib", "usr/lib")});
  auto modules = ingest({File("lib/modules/6.1/modules.dep", "dep")});
  auto again = ingest({Symlink("lib", "usr/lib"), File("lib/x", "x")});
  ASSERT_TRUE(base && modules && again);
  auto tree = open_tree(base, modules);
  EXPECT_EQ(*tree->readlink(at(*tree, "lib").ino), "usr/lib");
  EXPECT_EQ(names(*tree, "usr/lib"), (std::vector<std::string>{"libc.so.6", "modules"}));
  EXPECT_EQ(read_all(*tree, "usr/lib/modules/6.1/modules.dep"), "dep");
  auto folded = open_tree(base, again);
  EXPECT_EQ(read_all(*folded, "usr/lib/libc.so.6"), "libc");  // never emptied
  EXPECT_EQ(read_all(*folded, "usr/lib/x"), "x");             // where the symlink leads
  EXPECT_EQ(*folded->readlink(at(*folded, "lib").ino), "usr/lib");
}

// A symlink and entries under it in one layer (issue 12), as `umoci unpack` puts them
// (tests/integration/overlay/usr_merged_vs_umoci_test.sh checks the same cases against it):
// the entries go where the symlink leads when they come after it in the tar, whatever the
// target's form; markers and whiteouts there act where it leads; a symlink to a file or a loop
// fails the ingest naming the entry; entries before the symlink go with the directory it
// replaces.
TEST(TreeOverIngest, SameLayerSymlinksLeadEntriesWhereTheyPoint) {
  using testing::Dir;
  using testing::File;
  using testing::Hardlink;
  using testing::Symlink;
  store::testing::TempDir dir;
  auto blobs = store::BlobStore::open(dir.path() / "store");
  ASSERT_TRUE(blobs.ok()) << blobs.error().message;
  auto cache = LayerCache::create(*blobs);
  ASSERT_TRUE(cache.ok()) << cache.error().message;
  auto get = [&](const std::vector<testing::TarEntry>& entries) {
    const std::string tar = testing::make_tar(entries);
    const store::Digest digest = store::Digest::of(tar);
    EXPECT_TRUE((*blobs)->put(digest, tar).ok());
    return (*cache)->get(store::LayerRecord{digest, testing::kTar, tar.size(), {}});
  };
  auto ingest = [&](const std::vector<testing::TarEntry>& entries) {
    auto index = get(entries);
    EXPECT_TRUE(index.ok()) << index.error().message;
    return index.ok() ? *index : nullptr;
  };

  auto alone = ingest({Symlink("lib", "usr/lib"), File("lib/x.so", "x")});
  auto one = open_tree(alone);
  EXPECT_EQ(walk_paths(*one),
            (std::vector<std::string>{"", "lib", "usr", "usr/lib", "usr/lib/x.so"}));
  EXPECT_EQ(*one->readlink(at(*one, "lib").ino), "usr/lib");

  auto forms = ingest({Dir("etc"), Symlink("abs", "/usr/lib"), Symlink("a", "b"),
                       Symlink("b", "/usr/lib"), Symlink("etc/esc", "../../../usr/bin"),
                       Symlink("root", "/"), File("abs/1", "1"), File("a/2", "2"),
                       File("etc/esc/3", "3"), File("root/4", "4"), Hardlink("abs/5", "a/2")});
  auto tree = open_tree(forms);
  EXPECT_EQ(names(*tree, "usr/lib"), (std::vector<std::string>{"1", "2", "5"}));
  EXPECT_EQ(names(*tree, "usr/bin"), (std::vector<std::string>{"3"}));
  EXPECT_EQ(read_all(*tree, "4"), "4");
  EXPECT_EQ(at(*tree, "usr/lib/5").ino, at(*tree, "usr/lib/2").ino);
  EXPECT_EQ(at(*tree, "a").mode & S_IFMT, unsigned{S_IFLNK});

  // Over a usr-merged base: a whiteout and an opaque marker through the layer's own symlink.
  auto base = ingest({Dir("usr"), Dir("usr/lib"), File("usr/lib/libc.so.6", "libc"),
                      File("usr/lib/old", "o"), Dir("usr/bin"), File("usr/bin/sh", "sh"),
                      Symlink("lib", "usr/lib"), Symlink("bin", "usr/bin")});
  auto wh = ingest({Symlink("l2", "usr/lib"), File("l2/.wh.old", ""), Symlink("b2", "/usr/bin"),
                    File("b2/.wh..wh..opq", ""), File("b2/new", "n")});
  auto over = open_tree(base, wh);
  EXPECT_EQ(names(*over, "usr/lib"), std::vector<std::string>{"libc.so.6"});
  EXPECT_EQ(names(*over, "usr/bin"), std::vector<std::string>{"new"});
  // Entries before the symlink in the tar went into the directory it replaces.
  auto before = ingest({File("lib/x.so", "x"), Symlink("lib", "usr/lib")});
  auto replaced = open_tree(before);
  EXPECT_EQ(walk_paths(*replaced), (std::vector<std::string>{"", "lib"}));
  // A whiteout and its directory deleted and made again through an implicit parent: a new
  // directory, not where a lower symlink led.
  auto again = ingest({File(".wh.lib", ""), File("lib/x", "x")});
  auto fresh = open_tree(base, again);
  EXPECT_EQ(at(*fresh, "lib").mode, S_IFDIR | 0755u);
  EXPECT_EQ(names(*fresh, "lib"), std::vector<std::string>{"x"});
  EXPECT_EQ(names(*fresh, "usr/lib"), (std::vector<std::string>{"libc.so.6", "old"}));

  // Through a lower symlink into a directory that a file of the layer replaces (later in the tar,
  // the only order an extraction accepts): the layer opens and the file hides what went there.
  auto lower = ingest({Dir("a"), Dir("a/b"), File("a/b/c", "c"), Symlink("c", "a/b")});
  auto hides = ingest({File("c/.wh..wh..opq", ""), File("c/new", "n"), File("a", "file")});
  auto hidden = open_tree(lower, hides);
  EXPECT_EQ(walk_paths(*hidden), (std::vector<std::string>{"", "a", "c"}));
  EXPECT_EQ(read_all(*hidden, "a"), "file");
  EXPECT_EQ(*hidden->readlink(at(*hidden, "c").ino), "a/b");

  auto to_file = get({File("f", "f"), Symlink("lib", "f"), File("lib/x", "x")});
  ASSERT_FALSE(to_file.ok());
  EXPECT_EQ(to_file.error().code, ENOTDIR);
  EXPECT_NE(to_file.error().message.find("entry 'lib/x': the symlink lib leads to f, which is "
                                         "not a directory"),
            std::string::npos)
      << to_file.error().message;
  auto loop = get({Symlink("a", "b"), Symlink("b", "a/c"), File("a/x", "x")});
  ASSERT_FALSE(loop.ok());
  EXPECT_EQ(loop.error().code, ELOOP);
  EXPECT_NE(loop.error().message.find("entry 'a/x'"), std::string::npos) << loop.error().message;
}

// --- concurrency --------------------------------------------------------------------------------

TEST(Tree, ManyThreadsSeeOneTree) {
  Builder b0("l0");
  Builder b1("l1");
  Builder b2("l2");
  std::vector<std::string> paths;
  for (int d = 0; d < 30; ++d) {
    const std::string dir = "d" + std::to_string(d);
    for (int f = 0; f < 100; ++f) {
      const std::string path = dir + "/s" + std::to_string(f % 5) + "/f" + std::to_string(f);
      b0.file(path, path);
      paths.push_back(path);
    }
    b1.file(dir + "/s0/upper", "u");
    b1.hardlink(dir + "/h", dir + "/s1/f1");
    paths.push_back(dir + "/s0/upper");
    paths.push_back(dir + "/h");
    if (d % 3 == 0) b2.whiteout(dir + "/s2");
    if (d % 4 == 0) b2.opaque(dir + "/s3").file(dir + "/s3/only", "o");
  }
  auto tree = open_tree(b0.build(), b1.build(), b2.build());
  constexpr int kThreads = 8;
  std::vector<std::map<std::string, Ino>> seen(kThreads);
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::string> order = paths;
      std::mt19937 rng(static_cast<unsigned>(t));
      std::shuffle(order.begin(), order.end(), rng);
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();  // start together
      std::vector<uint8_t> buffer(64);
      for (const std::string& path : order) {
        Result<Attr> attr = tree->resolve(path);
        if (!attr.ok()) continue;
        seen[t][path] = attr->ino;
        if (S_ISREG(attr->mode)) (void)tree->read(attr->ino, 0, buffer);
        const std::string parent = path.substr(0, path.rfind('/'));
        if (Result<Attr> dir = tree->resolve(parent); dir.ok()) (void)tree->readdir(dir->ino);
        (void)tree->getattr(attr->ino);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 1; t < kThreads; ++t) EXPECT_EQ(seen[t], seen[0]);
  std::map<std::string, Ino> walked;
  for (const WalkEntry& entry : walk_all(*tree)) walked[entry.path] = entry.attr.ino;
  for (const auto& [path, ino] : seen[0]) EXPECT_EQ(walked.at(path), ino) << path;
  EXPECT_EQ(seen[0].at("d0/h"), seen[0].at("d0/s1/f1"));
  EXPECT_EQ(seen[0].count("d0/s2/f2"), 0u);
  EXPECT_EQ(seen[0].count("d4/s3/f3"), 0u);
  EXPECT_EQ(seen[0].count("d5/s3/f3"), 1u);
}

// --- random stacks against an eager reference model ---------------------------------------------

// What a path holds after applying layers one by one, as an unpacker writing to a directory
// would have it (the way `umoci unpack` does, simplified to what the index can express).
struct ModelFile {
  EntryType type = EntryType::regular;  // hardlinks become the regular file they share
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 0;
  std::string content;
  std::string link;
  uint32_t major = 0;
  uint32_t minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;
  uint64_t file_id = 0;  // non-directories: which tar entry made the inode
};
// Every path; the root is "".
using Model = std::map<std::string, ModelFile>;

Model empty_model() {
  Model model;
  ModelFile root;
  root.type = EntryType::directory;
  root.mode = 0755;
  model[""] = root;
  return model;
}

void erase_below(Model& model, const std::string& path) {
  const std::string prefix = path + "/";
  auto it = model.lower_bound(prefix);
  while (it != model.end() && it->first.starts_with(prefix)) it = model.erase(it);
}

// Where directory `path` leads in `model`, each symlink on the way followed inside the root, as
// an extraction in a chroot follows it; a missing component is a directory to be made.
struct ModelPath {
  std::string path;
  bool under_file = false;  // a component is a file: nothing can go there
  bool loop = false;        // more than 40 links
};
ModelPath model_resolve(const Model& model, const std::string& path) {
  std::vector<std::string> pending;
  auto push = [&](const std::string& text) {
    std::vector<std::string> parts;
    size_t start = 0;
    while (start <= text.size()) {
      size_t slash = text.find('/', start);
      if (slash == std::string::npos) slash = text.size();
      if (slash > start) parts.push_back(text.substr(start, slash - start));
      start = slash + 1;
    }
    pending.insert(pending.end(), parts.rbegin(), parts.rend());
  };
  push(path);
  ModelPath out;
  int links = 0;
  while (!pending.empty()) {
    const std::string name = pending.back();
    pending.pop_back();
    if (name == ".") continue;
    if (name == "..") {
      const size_t slash = out.path.rfind('/');
      out.path = slash == std::string::npos ? "" : out.path.substr(0, slash);
      continue;
    }
    const std::string next = out.path.empty() ? name : out.path + "/" + name;
    auto it = model.find(next);
    if (it != model.end() && it->second.type == EntryType::symlink) {
      if (++links > 40) {
        out.loop = true;
        return out;
      }
      if (it->second.link.starts_with('/')) out.path.clear();
      push(it->second.link);
      continue;
    }
    if (it != model.end() && it->second.type != EntryType::directory) {
      out.under_file = true;
      return out;
    }
    out.path = next;
  }
  return out;
}

std::string model_parent(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

// Where an entry of a layer lands: its parent resolved in `model`; none under a file.
std::optional<std::string> model_place(const Model& model, const std::string& path, bool* loop,
                                       bool* notdir = nullptr) {
  ModelPath parent = model_resolve(model, model_parent(path));
  if (parent.loop) *loop = true;
  if (parent.under_file && notdir != nullptr) *notdir = true;
  if (parent.loop || parent.under_file) return std::nullopt;
  const std::string name =
      path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  return parent.path.empty() ? name : parent.path + "/" + name;
}

ModelFile model_file(const FakeLayer& layer, uint64_t layer_no, size_t index, const Model& below) {
  const FakeLayer::Entry& e = layer.raw(index);
  if (e.type == EntryType::hardlink) {
    if (e.hardlink_target != kNoEntry) return model_file(layer, layer_no, e.hardlink_target, below);
    bool loop = false;
    auto it = below.find(model_place(below, e.link, &loop).value_or(e.link));
    EXPECT_TRUE(it != below.end() && !e.link.empty() && it->second.type != EntryType::directory)
        << e.link;
    return it != below.end() ? it->second : ModelFile{};
  }
  ModelFile file;
  file.type = e.type;
  file.mode = e.mode;
  file.uid = e.uid;
  file.gid = e.gid;
  file.mtime = e.mtime_sec;
  file.content = e.content;
  file.link = e.link;
  file.major = e.rdev_major;
  file.minor = e.rdev_minor;
  file.xattrs = e.xattrs;
  file.file_id = (layer_no << 32) | index;
  return file;
}

// Applies one layer as an extraction would.
enum class Applied {
  ok,
  loop,  // a symlink loop fails it
  // A loop met when placing a whiteout or opaque marker, which the model places against the
  // layers below only while the tree also sees the layer's own entries: no verdict.
  unsure,
  notdir,  // an entry under a symlink to a file fails it, as umoci's and docker's extraction
};
// The layer's implicit directories with nothing real below them (only whiteouts, opaque markers
// and such directories): an extraction makes no parents for a whiteout, so they make nothing.
std::set<std::string> conditional_dirs(const FakeLayer& layer) {
  std::set<std::string> implicit;
  std::set<std::string> real;
  for (size_t i = 0; i < layer.size(); ++i) {
    const FakeLayer::Entry& e = layer.raw(i);
    if (e.type == EntryType::directory && e.implicit) {
      implicit.insert(e.path);
      continue;
    }
    if (e.type == EntryType::whiteout) continue;
    for (std::string up = model_parent(e.path); !up.empty(); up = model_parent(up)) real.insert(up);
  }
  std::set<std::string> out;
  for (const std::string& path : implicit) {
    if (real.count(path) == 0) out.insert(path);
  }
  return out;
}

Applied apply(Model& model, const FakeLayer& layer, uint64_t layer_no) {
  const Model below = model;
  const std::set<std::string> conditional = conditional_dirs(layer);
  bool loop = false;
  bool notdir = false;  // an entry under a symlink to a non-directory
  if (const auto& root = layer.raw_root()) {
    ModelFile top = model.at("");
    if (root->opaque) model.clear();
    if (!root->implicit) {
      top.mode = root->mode;
      top.uid = root->uid;
      top.gid = root->gid;
      top.mtime = root->mtime_sec;
      top.xattrs = root->xattrs;
    }
    model[""] = top;
  }
  // Then the entries, parents first.
  std::vector<size_t> order;
  for (size_t i = 0; i < layer.size(); ++i) order.push_back(i);
  auto depth = [&](size_t i) {
    return std::count(layer.raw(i).path.begin(), layer.raw(i).path.end(), '/');
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return depth(a) < depth(b); });
  // A directory of the layer over a file (or an explicit one over a symlink) is a directory for
  // everything the layer places: the tree sees all of a layer's directories at once (an
  // extraction in tar order would too, as the parents come first).
  for (size_t i : order) {
    const FakeLayer::Entry& e = layer.raw(i);
    if (e.type != EntryType::directory || conditional.count(e.path) != 0) continue;
    bool ignored = false;
    std::optional<std::string> place = model_place(model, e.path, &ignored);
    if (!place || *place != e.path) continue;
    auto it = model.find(*place);
    if (it == model.end() || it->second.type == EntryType::directory ||
        (it->second.type == EntryType::symlink && e.implicit)) {
      continue;
    }
    ModelFile dir;
    dir.type = EntryType::directory;
    dir.mode = 0755;
    it->second = dir;
  }
  // Whiteouts and opaque markers act on what the lower layers left.
  for (size_t i = 0; i < layer.size(); ++i) {
    const FakeLayer::Entry& e = layer.raw(i);
    if (e.type == EntryType::whiteout) {
      std::optional<std::string> path = model_place(model, e.path, &loop, &notdir);
      if (!path) continue;
      model.erase(*path);
      erase_below(model, *path);
    } else if (e.type == EntryType::directory && e.opaque) {
      // An implicit directory is where its path leads; an explicit one replaces a symlink.
      std::optional<std::string> path = model_place(model, e.path, &loop);
      if (path && e.implicit) {
        ModelPath full = model_resolve(model, e.path);
        loop = loop || full.loop;
        path = full.loop || full.under_file ? std::nullopt : std::optional(full.path);
      }
      if (path) erase_below(model, *path);
    }
  }
  const bool marker_loop = loop;
  std::set<std::string> own;     // the layer's paths as written
  std::set<std::string> placed;  // where its entries went
  for (size_t i = 0; i < layer.size(); ++i) {
    if (layer.raw(i).type != EntryType::whiteout) own.insert(layer.raw(i).path);
  }
  for (size_t i : order) {
    const FakeLayer::Entry& e = layer.raw(i);
    if (e.type == EntryType::whiteout) continue;
    if (conditional.count(e.path) != 0) {
      // Makes nothing: it only carries the layer's whiteouts and markers, applied above.
      std::optional<std::string> place = model_place(model, e.path, &loop);
      auto it = place ? model.find(*place) : model.end();
      if (it != model.end() && it->second.type == EntryType::symlink) {
        loop = loop || model_resolve(model, *place).loop;
      }
      continue;
    }
    std::optional<std::string> place = model_place(model, e.path, &loop, &notdir);
    if (!place) continue;
    // Two entries of the layer at one place: its own entry there, else the first one, stands.
    if (*place != e.path && (own.count(*place) != 0 || placed.count(*place) != 0)) continue;
    placed.insert(*place);
    const std::string& path = *place;
    // Parents missing where a symlink led are made, as implicit directories are.
    for (std::string up = model_parent(path); !up.empty(); up = model_parent(up)) {
      if (model.count(up) != 0) break;
      ModelFile dir;
      dir.type = EntryType::directory;
      dir.mode = 0755;
      model[up] = dir;
    }
    if (e.type == EntryType::directory) {
      auto it = model.find(path);
      if (it != model.end() && it->second.type == EntryType::directory) {
        if (!e.implicit) it->second = model_file(layer, layer_no, i, below);  // like chmod/chown
        continue;
      }
      // An implicit directory makes what is missing only: a symlink stays (its contents went
      // where it leads).
      if (it != model.end() && it->second.type == EntryType::symlink && e.implicit) {
        // ... and the directories it leads to are made (the tree shows an implicit directory
        // wherever a layer has one, even for a whiteout's parent).
        ModelPath full = model_resolve(model, path);
        loop = loop || full.loop;
        if (full.loop || full.under_file) continue;
        for (size_t end = 0; end != std::string::npos;) {
          end = full.path.find('/', end == 0 ? 0 : end + 1);
          const std::string prefix = full.path.substr(0, end);
          if (model.count(prefix) == 0) {
            ModelFile dir;
            dir.type = EntryType::directory;
            dir.mode = 0755;
            model[prefix] = dir;
          }
        }
        continue;
      }
      model.erase(path);  // a non-directory, replaced
      ModelFile dir;
      dir.type = EntryType::directory;
      dir.mode = 0755;
      if (!e.implicit) dir = model_file(layer, layer_no, i, below);
      model[path] = dir;
    } else {
      model.erase(path);
      erase_below(model, path);
      model[path] = model_file(layer, layer_no, i, below);
    }
  }
  if (marker_loop) return Applied::unsure;
  if (loop) return Applied::loop;
  return notdir ? Applied::notdir : Applied::ok;
}

// Byte order of components: '/' sorts before every byte a name can hold.
std::string walk_key(std::string path) {
  std::replace(path.begin(), path.end(), '/', '\0');
  return path;
}

class StackGenerator {
 public:
  explicit StackGenerator(unsigned seed) : rng_(seed) {}

  std::shared_ptr<FakeLayer> layer(const Model& below, int number) {
    Builder builder("layer" + std::to_string(number) + "-" + std::to_string(rng_()));
    adds_symlinks_ = false;
    writes_through_ = false;
    std::map<std::string, bool> used;      // path -> is a directory, in this layer
    std::vector<std::string> files;        // regular files of this layer, in declaration order
    std::vector<std::string> lower_files;  // anything a hardlink may name: not directories
    for (const auto& [path, file] : below) {
      if (file.type != EntryType::directory) lower_files.push_back(path);
    }
    if (pick(0, 19) == 0) builder.root(random_meta()).root_xattr("user.r", random_content());
    if (pick(0, 24) == 0) builder.root_opaque();
    const int ops = pick(1, 20);
    for (int op = 0; op < ops; ++op) {
      const std::string path = random_path();
      const int kind = pick(0, 99);
      const bool dir_op = (kind >= 30 && kind < 40) || (kind >= 63 && kind < 70);
      const bool whiteout_op = kind >= 48 && kind < 63;
      if (whiteout_op) {
        const std::string target = pick(0, 2) == 0 || below.size() < 2 ? path : existing(below);
        // Claims nothing: a whiteout folds with whatever this layer has at that path.
        const bool redirected = through_symlink(below, target);
        if (redirected) continue;
        if (fits(used, placed(below, target), true)) {
          writes_through_ = writes_through_ || redirected;
          builder.whiteout(target);
          claim_parents(used, placed(below, target));
        }
        continue;
      }
      // Claims where the entry lands: two entries of a layer at one place (one through a
      // symlink) is a question of tar order, which the index does not keep.
      if (!fits(used, placed(below, path), dir_op) || !fits(used, path, dir_op)) continue;
      // A layer either adds symlinks or writes through the symlinks below, not both: which of
      // its own symlinks an entry goes through depends on the tar order, which an index does not
      // keep (docs/LAYER_FORMAT.md), and the model applies entries in its own order.
      // (A hardlink may link a symlink; an entry over a symlink replaces it, but for an opaque
      // marker alone.)
      auto lower = below.find(path);
      const bool symlink_op = (kind >= 40 && kind < 45) || (kind >= 70 && kind < 90) ||
                              (lower != below.end() && lower->second.type == EntryType::symlink &&
                               !(kind >= 63 && kind < 70));
      const bool redirected = through_symlink(below, path);
      if (symlink_op ? writes_through_ || redirected : redirected && adds_symlinks_) continue;
      // Through a symlink: files and directories (whiteouts and markers there: the unit tests
      // above).
      if (redirected && kind >= 40) continue;
      // Under a symlink to a file (an error: the unit tests above).
      if (bool loop = false; !model_place(below, path, &loop)) continue;
      // A symlink that leads to its own parent (an extraction fails there: EISDIR, ELOOP).
      if (redirected && path.starts_with(placed(below, path) + "/")) continue;
      adds_symlinks_ = adds_symlinks_ || symlink_op;
      writes_through_ = writes_through_ || redirected;
      if (kind < 30) {
        builder.file(path, random_content(), random_meta());
        files.push_back(path);
      } else if (kind < 40) {
        builder.dir(path, random_meta());
      } else if (kind < 45) {
        const int style = pick(0, 2);  // relative, absolute, or climbing above the root
        builder.symlink(path,
                        (style == 1   ? "/"
                         : style == 2 ? "../../"
                                      : "") +
                            random_path(),
                        random_meta());
      } else if (kind < 48) {
        const EntryType types[] = {EntryType::char_device, EntryType::block_device,
                                   EntryType::fifo};
        builder.device(path, types[pick(0, 2)], static_cast<uint32_t>(pick(0, 9)),
                       static_cast<uint32_t>(pick(0, 9)), random_meta());
      } else if (kind < 70) {
        // An opaque marker alone, with its directory's entry, or a directory deleted and
        // recreated.
        const int variant = pick(0, 2);
        if (variant == 0) builder.opaque(path);
        if (variant == 1) builder.dir(path, random_meta()).opaque(path);
        if (variant == 2) builder.whiteout(path).dir(path, random_meta());
      } else if (kind < 85) {
        if (lower_files.empty()) continue;
        const std::string& target =
            lower_files[static_cast<size_t>(pick(0, static_cast<int>(lower_files.size()) - 1))];
        if (used.count(target) != 0) continue;  // keep it a link to the lower file
        builder.hardlink(path, target);
      } else if (kind < 90) {
        if (files.empty()) continue;
        builder.hardlink(path,
                         files[static_cast<size_t>(pick(0, static_cast<int>(files.size()) - 1))]);
      } else {
        builder.file(path, random_content(), random_meta());
        files.push_back(path);
      }
      if (pick(0, 4) == 0)
        builder.xattr(path, "user.k" + std::to_string(pick(0, 2)), random_content());
      claim(used, placed(below, path), dir_op);
      claim(used, path, dir_op);
    }
    return builder.build();
  }

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  static std::string placed(const Model& below, const std::string& path) {
    bool loop = false;
    return model_place(below, path, &loop).value_or(path);
  }

  // Whether an entry at `path` goes through a symlink of the layers below, or is at one (an
  // opaque marker there acts where it leads).
  static bool through_symlink(const Model& below, const std::string& path) {
    bool loop = false;
    auto it = below.find(path);
    return model_place(below, path, &loop).value_or("") != path ||
           (it != below.end() && it->second.type == EntryType::symlink);
  }

  bool adds_symlinks_ = false;   // this layer has a symlink entry
  bool writes_through_ = false;  // this layer has an entry under a symlink of the layers below

  std::string random_path() {
    static const char* const kNames[] = {"a", "b", "c", "d"};
    std::string path = kNames[pick(0, 3)];
    const int depth = pick(0, 2);
    for (int i = 0; i < depth; ++i) path += std::string("/") + kNames[pick(0, 3)];
    return path;
  }

  // A path of the model other than the root.
  std::string existing(const Model& model) {
    auto it = std::next(model.begin());
    std::advance(it, pick(0, static_cast<int>(model.size()) - 2));
    return it->first;
  }

  std::string random_content() {
    return std::string(static_cast<size_t>(pick(0, 20)), static_cast<char>('a' + pick(0, 25)));
  }

  Meta random_meta() {
    static const uint32_t kModes[] = {0644, 0600, 0755, 04755, 0700, 01777, 0444};
    return Meta{.mode = kModes[pick(0, 6)],
                .uid = static_cast<uint32_t>(pick(0, 3)),
                .gid = static_cast<uint32_t>(pick(0, 3)),
                .mtime = pick(0, 1000)};
  }

  // Whether `path` can be declared in this layer without contradicting what it already has: no
  // entry below a non-directory, and nothing declared twice.
  static bool fits(const std::map<std::string, bool>& used, const std::string& path, bool dir) {
    if (used.count(path) != 0) return false;
    for (size_t slash = path.find('/'); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      auto it = used.find(path.substr(0, slash));
      if (it != used.end() && !it->second) return false;
    }
    if (!dir) {
      auto it = used.lower_bound(path + "/");
      if (it != used.end() && it->first.starts_with(path + "/")) return false;
    }
    return true;
  }

  static void claim(std::map<std::string, bool>& used, const std::string& path, bool dir) {
    used[path] = dir;
    claim_parents(used, path);
  }

  static void claim_parents(std::map<std::string, bool>& used, const std::string& path) {
    for (size_t slash = path.find('/'); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      used[path.substr(0, slash)] = true;
    }
  }

  std::mt19937 rng_;
};

// Compares a tree with the model: every path, its kind, metadata, content, link counts and
// inode sharing; first through resolve() in random order, then through walk().
void compare(Tree& tree, const Model& model, unsigned seed) {
  std::vector<std::pair<std::string, const ModelFile*>> expected;
  for (const auto& [path, file] : model) expected.emplace_back(path, &file);
  std::sort(expected.begin(), expected.end(),
            [](const auto& a, const auto& b) { return walk_key(a.first) < walk_key(b.first); });
  std::map<uint64_t, uint32_t> links;  // file_id -> paths
  for (const auto& [path, file] : model) {
    if (file.type != EntryType::directory) ++links[file.file_id];
  }

  std::map<std::string, Ino> resolved;
  std::vector<std::string> order;
  for (const auto& [path, file] : model) order.push_back(path);
  std::mt19937 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  for (const std::string& path : order) {
    Result<Attr> attr = tree.resolve(path);
    ASSERT_TRUE(attr.ok()) << path << ": " << attr.error().message;
    resolved[path] = attr->ino;
  }

  std::vector<WalkEntry> walk = walk_all(tree);
  if (walk.size() != expected.size()) {
    std::string got;
    std::string want;
    for (const WalkEntry& entry : walk) got += " " + entry.path;
    for (const auto& [path, file] : expected) want += " " + path;
    ADD_FAILURE() << "walk:" << got << "\nmodel:" << want;
  }
  ASSERT_EQ(walk.size(), expected.size());
  std::map<uint64_t, Ino> ino_of_file;
  std::map<Ino, std::string> first_path;
  std::set<Ino> inos;
  for (size_t i = 0; i < expected.size(); ++i) {
    const WalkEntry& got = walk[i];
    const auto& [path, want] = expected[i];
    ASSERT_EQ(got.path, path);
    const Attr& attr = got.attr;
    EXPECT_EQ(resolved.at(path), attr.ino) << path;
    EXPECT_EQ(attr.mode & 07777, want->mode) << path;
    EXPECT_EQ(attr.uid, want->uid) << path;
    EXPECT_EQ(attr.gid, want->gid) << path;
    EXPECT_EQ(attr.mtime_sec, want->mtime) << path;
    std::vector<std::string> xattr_names;
    for (const auto& [name, value] : want->xattrs) {
      xattr_names.push_back(name);
      EXPECT_EQ(*tree.getxattr(attr.ino, name), value) << path;
    }
    EXPECT_EQ(*tree.listxattr(attr.ino), xattr_names) << path;
    uint32_t type = 0;
    switch (want->type) {
      case EntryType::regular:
        type = S_IFREG;
        EXPECT_EQ(attr.size, want->content.size()) << path;
        EXPECT_EQ(read_all(tree, attr.ino), want->content) << path;
        break;
      case EntryType::directory:
        type = S_IFDIR;
        break;
      case EntryType::symlink:
        type = S_IFLNK;
        EXPECT_EQ(*tree.readlink(attr.ino), want->link) << path;
        EXPECT_EQ(attr.size, want->link.size()) << path;
        break;
      case EntryType::char_device:
      case EntryType::block_device:
        type = want->type == EntryType::char_device ? S_IFCHR : S_IFBLK;
        EXPECT_EQ(attr.rdev_major, want->major) << path;
        EXPECT_EQ(attr.rdev_minor, want->minor) << path;
        break;
      default:
        type = S_IFIFO;
        break;
    }
    EXPECT_EQ(attr.mode & S_IFMT, type) << path;
    if (want->type == EntryType::directory) {
      EXPECT_TRUE(inos.insert(attr.ino).second) << path << " shares an inode";
      EXPECT_EQ(attr.nlink, 1u) << path;
      continue;
    }
    // One inode per file_id, shared by exactly the paths that have it.
    EXPECT_EQ(attr.nlink, links.at(want->file_id)) << path;
    auto [it, first] = ino_of_file.try_emplace(want->file_id, attr.ino);
    EXPECT_EQ(it->second, attr.ino) << path << " is not one inode with its hardlinks";
    if (first) {
      EXPECT_TRUE(inos.insert(attr.ino).second) << path << " shares an inode";
      first_path[attr.ino] = path;
      EXPECT_EQ(got.hardlink_first, "") << path;
    } else {
      EXPECT_EQ(got.hardlink_first, first_path[attr.ino]) << path;
    }
  }
}

// A layer stack as text, for a failure message.
std::string describe(const Layers& layers) {
  static const char* const kTypes[] = {"file", "dir", "symlink", "hardlink",
                                       "chr",  "blk", "fifo",    "whiteout"};
  std::string out;
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& layer = static_cast<const FakeLayer&>(*layers[l]);
    out += "layer " + std::to_string(l) + ":\n";
    for (size_t i = 0; i < layer.size(); ++i) {
      const FakeLayer::Entry& e = layer.raw(i);
      out += "  " + e.path + " " + kTypes[static_cast<int>(e.type)];
      if (e.implicit) out += " implicit";
      if (e.opaque) out += " opaque";
      if (!e.link.empty()) out += " -> " + e.link;
      if (e.hardlink_target != kNoEntry) out += " (same layer)";
      out += "\n";
    }
  }
  return out;
}

TEST(Tree, RandomStacksMatchTheReferenceModel) {
  size_t paths = 0;
  size_t shared = 0;                    // files with two or more visible paths
  std::map<std::string, size_t> kinds;  // what the layers held, to show the cases were reached
  size_t unsure_stacks = 0;
  for (unsigned seed = 1; seed <= 3000; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    StackGenerator generator(seed);
    Model model = empty_model();
    Layers layers;
    bool looped = false;
    bool unsure = false;
    bool notdir = false;
    const int count = 1 + static_cast<int>(seed % 6);
    for (int i = 0; i < count; ++i) {
      std::shared_ptr<FakeLayer> layer = generator.layer(model, i);
      for (size_t e = 0; e < layer->size(); ++e) {
        const FakeLayer::Entry& entry = layer->raw(e);
        if (entry.type == EntryType::whiteout) ++kinds["whiteout"];
        if (entry.opaque) ++kinds[entry.implicit ? "implicit opaque" : "opaque"];
        if (entry.type == EntryType::hardlink) {
          ++kinds[entry.hardlink_target == kNoEntry ? "link below" : "link same layer"];
          if (entry.hardlink_target == kNoEntry && model.count(entry.link) != 0 &&
              model.at(entry.link).type != EntryType::regular) {
            ++kinds["link to a non-file"];
          }
        }
        if (model.count(entry.path) != 0 &&
            (model.at(entry.path).type == EntryType::directory) !=
                (entry.type == EntryType::directory) &&
            entry.type != EntryType::whiteout) {
          ++kinds["replaced"];
        }
        bool loop = false;
        if (entry.type != EntryType::directory &&
            model_place(model, entry.path, &loop).value_or(entry.path) != entry.path) {
          ++kinds["under a symlink"];
        }
      }
      if (layer->raw_root()) ++kinds[layer->raw_root()->opaque ? "opaque root" : "root entry"];
      const Applied applied = apply(model, *layer, static_cast<uint64_t>(i));
      looped = looped || applied == Applied::loop;
      notdir = notdir || (applied == Applied::notdir && !looped);
      unsure = unsure || applied == Applied::unsure;
      layers.push_back(layer);
    }
    Result<std::shared_ptr<Tree>> tree = Tree::open(layers);
    if (unsure) {
      ++unsure_stacks;
      continue;
    }
    if (notdir && !looped) {
      ++kinds["under a symlink to a file"];
      ASSERT_FALSE(tree.ok()) << "an entry under a symlink to a file, not refused:\n"
                              << describe(layers);
      EXPECT_EQ(tree.error().code, ENOTDIR) << tree.error().message;
      continue;
    }
    if (looped) {
      ++kinds["symlink loop"];
      ASSERT_FALSE(tree.ok()) << "a symlink loop, not found:\n" << describe(layers);
      EXPECT_EQ(tree.error().code, ELOOP);
      continue;
    }
    ASSERT_TRUE(tree.ok()) << tree.error().message << "\n" << describe(layers);
    compare(**tree, model, seed);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "the stack of seed " << seed << ", base first:\n" << describe(layers);
      break;
    }
    paths += model.size();
    std::map<uint64_t, int> ids;
    for (const auto& [path, file] : model) {
      if (file.type == EntryType::regular && ++ids[file.file_id] == 2) ++shared;
    }
  }
  // The generator must reach the interesting cases, not just produce small trees.
  EXPECT_GT(paths, 30000u);
  EXPECT_LT(unsure_stacks, 30u);
  EXPECT_GT(kinds["under a symlink"], 120u);
  EXPECT_GT(shared, 1000u);
  for (const char* kind : {"whiteout", "opaque", "implicit opaque", "link below", "link same layer",
                           "replaced", "link to a non-file", "opaque root", "root entry"}) {
    EXPECT_GT(kinds[kind], 200u) << kind << " (" << kinds[kind] << ")";
  }
}

}  // namespace
}  // namespace imagefs::overlay
