// The mount's file system without FUSE (fs/filesystem.h) over a real Images, store and catalog
// filled by a real pull from the fake registry: the names at the top and below, an image's files,
// its rootfs (compared with the merged tree), its archives (compared with an ArchiveMaker of a
// separate store, gzip, zstd and GNU cpio), inode numbers, timeouts, errors and .status.
#include "fs/filesystem.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "erofs/erofs.h"
#include "tests/unit/fs/fs_test_env.h"

namespace imagefs::fs {
namespace {

namespace fsys = std::filesystem;
using testing::error_of;
using testing::kArm64;
using testing::kForever;
using testing::kTtl;
using testing::list;
using testing::lookup_path;
using testing::must_lookup;
using testing::read_ino;
using testing::read_path;
using testing::TestImage;
using Names = std::vector<std::string>;

constexpr int kSlotShift = 40;  // fs/filesystem.h: the top 24 bits of an inode are a slot
uint32_t slot_of(Ino ino) { return static_cast<uint32_t>(ino >> kSlotShift); }
Ino local_of(Ino ino) { return ino & ((Ino{1} << kSlotShift) - 1); }

void spit(const fsys::path& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string slurp(const fsys::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream out;
  out << f.rdbuf();
  return out.str();
}

int run(const std::string& command) {
  int status = std::system(command.c_str());  // NOLINT(concurrency-mt-unsafe)
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string quote(const fsys::path& p) { return "'" + p.string() + "'"; }

class FilesystemTest : public testing::FsEnv {
 protected:
  void SetUp() override {
    FsEnv::SetUp();
    pull_standard();
    m = mount();
  }
  Filesystem& fs() { return *m.fs; }
  std::shared_ptr<Image> image(const std::string& reference,
                               const registry::Platform& platform = testing::kAmd64) {
    auto img = m.images->image(registry::parse_reference(reference).value(), platform);
    EXPECT_TRUE(img.ok()) << img.error().message;
    return img.ok() ? *img : nullptr;
  }
  testing::Mounted m;
};

// --- names ------------------------------------------------------------------------------------

// Which requests fs/ops.cpp may answer on libfuse's own threads: only what needs no registry,
// download or archive build.
TEST_F(FilesystemTest, OnlyBuiltTreesAndNamesAnswerAtOnce) {
  // The directories of names: getattr from memory; a lookup in them may resolve a tag.
  EXPECT_TRUE(fs().answers_at_once(FsOp::getattr, kRootIno));
  EXPECT_FALSE(fs().answers_at_once(FsOp::lookup, kRootIno));
  EXPECT_FALSE(fs().answers_at_once(FsOp::opendir, kRootIno));
  Entry digest = must_lookup(fs(), "python:3.12/digest");
  ASSERT_NE(slot_of(digest.ino), 0u);
  // An image's files may need an archive built; its rootfs the layers, until the tree is built.
  EXPECT_FALSE(fs().answers_at_once(FsOp::getattr, digest.ino));
  Ino root = (Ino{slot_of(digest.ino)} << kSlotShift) | (16 + 1);
  EXPECT_FALSE(fs().answers_at_once(FsOp::lookup, root)) << "the tree is not built yet";
  Entry rootfs = must_lookup(fs(), "python:3.12/rootfs");  // builds the tree
  EXPECT_EQ(rootfs.ino, root);
  for (FsOp op : {FsOp::lookup, FsOp::getattr, FsOp::opendir})
    EXPECT_TRUE(fs().answers_at_once(op, root)) << static_cast<int>(op);
  EXPECT_TRUE(fs().answers_at_once(FsOp::lookup, must_lookup(fs(), "python:3.12/rootfs/etc").ino));
  EXPECT_FALSE(fs().answers_at_once(FsOp::getattr, digest.ino)) << "image files stay off";
}

TEST_F(FilesystemTest, TopLevelListsCachedNamesPlatformsAndStatus) {
  auto items = fs().readdir(kRootIno);
  ASSERT_TRUE(items.ok()) << items.error().message;
  EXPECT_EQ(testing::names_of(*items), (Names{".", "..", ".platform", ".status", ".metrics",
                                              "alpine:latest", "localhost:5000", "python:3.12"}));
  for (const DirItem& item : *items) {
    if (item.name == "." || item.name == "..") continue;
    // Each listed name looks up to the inode readdir gave.
    auto e = fs().lookup(kRootIno, item.name);
    ASSERT_TRUE(e.ok()) << item.name << ": " << e.error().message;
    EXPECT_EQ(e->ino, item.entry.ino) << item.name;
    EXPECT_EQ(e->attr.st_mode & S_IFMT, item.entry.attr.st_mode & S_IFMT) << item.name;
  }
  EXPECT_EQ((*items)[0].entry.ino, kRootIno);
  auto root = fs().getattr(kRootIno);
  ASSERT_TRUE(root.ok());
  EXPECT_TRUE(S_ISDIR(root->attr.st_mode));
  EXPECT_EQ(root->attr.st_mode & 0777, 0555u);
  EXPECT_EQ(root->attr.st_uid, ::getuid());
  EXPECT_EQ(root->attr.st_mtim.tv_sec, 1700000000);
  EXPECT_FALSE(fs().listing_immutable(kRootIno));
}

TEST_F(FilesystemTest, RegistryLevelsListWhatIsBelow) {
  EXPECT_EQ(list(fs(), "localhost:5000"), (Names{".", "..", "demo"}));
  // "demo" is also the image localhost:5000/demo:latest, which the store does not know and
  // which has names below it: listed as a level only (no registry asked).
  EXPECT_EQ(list(fs(), "localhost:5000/demo"), (Names{".", "..", "app:1"}));
  EXPECT_EQ(list(fs(), "localhost:5000/demo/app:1"),
            (Names{".", "..", "rootfs", "initramfs.cpio.gz", "initramfs.cpio.zst", "initramfs.cpio",
                   "config.json", "manifest.json", "digest", "rootfs.erofs"}));
  EXPECT_EQ(read_path(fs(), "localhost:5000/demo/app:1/rootfs/srv/app"), "demo app\n");

  EXPECT_EQ(list(fs(), "docker.io"), (Names{".", "..", "library"}));
  EXPECT_EQ(list(fs(), "docker.io/library"), (Names{".", "..", "alpine:latest", "python:3.12"}));
  // The full spelling reaches the same image as the short one: the same inode numbers.
  Entry full = must_lookup(fs(), "docker.io/library/python:3.12/digest");
  Entry shortname = must_lookup(fs(), "python:3.12/digest");
  EXPECT_EQ(full.ino, shortname.ino);
  EXPECT_NE(must_lookup(fs(), "docker.io/library/python:3.12").ino,
            must_lookup(fs(), "python:3.12").ino);  // two directories, one image
}

TEST_F(FilesystemTest, UntaggedNameIsTheLatestImageAndALevel) {
  Entry dir = must_lookup(fs(), "alpine");
  EXPECT_TRUE(S_ISDIR(dir.attr.st_mode));
  EXPECT_EQ(list(fs(), "alpine"),
            (Names{".", "..", "rootfs", "initramfs.cpio.gz", "initramfs.cpio.zst", "initramfs.cpio",
                   "config.json", "manifest.json", "digest", "rootfs.erofs"}));
  EXPECT_EQ(read_path(fs(), "alpine/digest"), alpine.manifest_digest().str() + "\n");
  EXPECT_EQ(must_lookup(fs(), "alpine/digest").ino, must_lookup(fs(), "alpine:latest/digest").ino);
  EXPECT_EQ(read_path(fs(), "alpine/rootfs/etc/alpine-release"), "3.20.0\n");
}

TEST_F(FilesystemTest, PlatformDirectories) {
  EXPECT_EQ(list(fs(), ".platform"), (Names{".", "..", "linux-amd64", "linux-arm64-v8"}));
  Entry arm = must_lookup(fs(), ".platform/linux-arm64-v8");
  EXPECT_TRUE(S_ISDIR(arm.attr.st_mode));
  // Both spellings of one platform are one directory.
  EXPECT_EQ(must_lookup(fs(), ".platform/linux-arm64").ino, arm.ino);
  EXPECT_EQ(list(fs(), ".platform/linux-arm64-v8"), (Names{".", "..", "python:3.12"}));
  EXPECT_EQ(list(fs(), ".platform/linux-amd64"),
            (Names{".", "..", "alpine:latest", "localhost:5000", "python:3.12"}));

  // The arm64 image, not the amd64 one.
  EXPECT_EQ(read_path(fs(), ".platform/linux-arm64/python:3.12/digest"),
            python_arm.manifest_digest().str() + "\n");
  EXPECT_EQ(read_path(fs(), ".platform/linux-arm64/python:3.12/rootfs/etc/os-release"),
            "NAME=imagefs-test\nARCH=arm64\n");
  EXPECT_EQ(read_path(fs(), "python:3.12/rootfs/etc/os-release"),
            "NAME=imagefs-test\nARCH=amd64\n");
  EXPECT_NE(slot_of(must_lookup(fs(), ".platform/linux-arm64/python:3.12/digest").ino),
            slot_of(must_lookup(fs(), "python:3.12/digest").ino));
  // The default platform's directory reaches the same image as the top.
  EXPECT_EQ(must_lookup(fs(), ".platform/linux-amd64/python:3.12/digest").ino,
            must_lookup(fs(), "python:3.12/digest").ino);

  // No .platform or .status below the top.
  EXPECT_EQ(error_of(lookup_path(fs(), ".platform/linux-amd64/.status")), ENOENT);
  EXPECT_EQ(error_of(lookup_path(fs(), ".platform/linux-amd64/.platform")), ENOENT);
  for (std::string_view bad : {"linux", "bogus", "linux--x", ".."})
    EXPECT_EQ(error_of(fs().lookup(kRootIno + 1, bad)), ENOENT) << bad;
}

TEST_F(FilesystemTest, InvalidReferenceNamesAreENOENT) {
  for (std::string_view bad : {"a:b:c", "x@y", "alpine@sha256:short", "Python:3.12", "-x"})
    EXPECT_EQ(error_of(fs().lookup(kRootIno, bad)), ENOENT) << bad;
  EXPECT_EQ(error_of(lookup_path(fs(), "localhost:5000/UPPER:1")), ENOENT);
  EXPECT_EQ(error_of(lookup_path(fs(), "localhost:5000/demo/a:b:c")), ENOENT);
  EXPECT_EQ(error_of(fs().lookup(kRootIno, ".")), ENOENT);
  EXPECT_EQ(error_of(fs().lookup(kRootIno, "..")), ENOENT);
}

// Classify.UpperCaseSingleComponentIsENOENT seen through the mount: MOUNT/Python is no
// directory (it once was: "Python/x" parses with "Python" as a registry host).
TEST_F(FilesystemTest, UpperCaseNameAtTheTopIsENOENT) {
  EXPECT_EQ(error_of(fs().lookup(kRootIno, "Python")), ENOENT);
}

TEST_F(FilesystemTest, UnknownFileInAnImageDirectoryIsENOENT) {
  EXPECT_EQ(error_of(lookup_path(fs(), "python:3.12/nope")), ENOENT);
  EXPECT_EQ(error_of(lookup_path(fs(), "python:3.12/rootfs/nope")), ENOENT);
  EXPECT_EQ(error_of(lookup_path(fs(), "python:3.12/rootfs/etc/motd")), ENOENT);  // whited out
  EXPECT_EQ(error_of(lookup_path(fs(), "python:3.12/digest/x")), ENOTDIR);
}

// --- an image's files -------------------------------------------------------------------------

TEST_F(FilesystemTest, DigestConfigAndManifestAreTheBytesServed) {
  Entry dir = must_lookup(fs(), "python:3.12");
  EXPECT_TRUE(S_ISDIR(dir.attr.st_mode));
  EXPECT_EQ(slot_of(dir.ino), 0u);

  Entry digest = must_lookup(fs(), "python:3.12/digest");
  std::string want = python.manifest_digest().str() + "\n";
  EXPECT_TRUE(S_ISREG(digest.attr.st_mode));
  EXPECT_EQ(digest.attr.st_mode & 0777, 0444u);
  EXPECT_EQ(static_cast<size_t>(digest.attr.st_size), want.size());
  EXPECT_EQ(read_ino(fs(), digest.ino), want);
  EXPECT_EQ(read_ino(fs(), digest.ino, 5), want);  // short reads at odd offsets

  Entry config = must_lookup(fs(), "python:3.12/config.json");
  EXPECT_EQ(static_cast<size_t>(config.attr.st_size), python.config.size());
  EXPECT_EQ(read_ino(fs(), config.ino), python.config);
  Entry manifest = must_lookup(fs(), "python:3.12/manifest.json");
  EXPECT_EQ(static_cast<size_t>(manifest.attr.st_size), python.manifest.size());
  EXPECT_EQ(read_ino(fs(), manifest.ino), python.manifest);

  // mtime: when the image was pulled.
  auto record = catalog->image(python.manifest_digest()).value();
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(digest.attr.st_mtim.tv_sec, record->pulled_at);

  // getattr agrees with lookup.
  auto again = fs().getattr(config.ino);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->attr.st_size, config.attr.st_size);
  EXPECT_EQ(again->attr.st_mode, config.attr.st_mode);
}

TEST_F(FilesystemTest, ImageDirectoryListingMatchesLookups) {
  Entry dir = must_lookup(fs(), "python:3.12");
  auto items = fs().readdir(dir.ino);
  ASSERT_TRUE(items.ok()) << items.error().message;
  ASSERT_EQ(items->size(), 2 + std::size(kImageFiles));
  for (const DirItem& item : *items) {
    if (item.name == "." || item.name == "..") continue;
    EXPECT_FALSE(item.has_attr) << item.name;  // cheap listing: no archive is made for ls
    auto e = fs().lookup(dir.ino, item.name);
    ASSERT_TRUE(e.ok()) << item.name << ": " << e.error().message;
    EXPECT_EQ(e->ino, item.entry.ino) << item.name;
    EXPECT_EQ(e->attr.st_mode & S_IFMT, item.entry.attr.st_mode & S_IFMT) << item.name;
  }
}

TEST_F(FilesystemTest, EntryTimeoutsTagsTtlDigestsForever) {
  for (std::string_view name : {"digest", "config.json", "rootfs", "initramfs.cpio"}) {
    Entry tagged = must_lookup(fs(), "python:3.12/" + std::string(name));
    EXPECT_EQ(tagged.entry_timeout, static_cast<double>(kTtl.count())) << name;
    EXPECT_EQ(tagged.attr_timeout, kForever) << name;  // an inode's content never changes
    Entry pinned =
        must_lookup(fs(), "python@" + python.manifest_digest().str() + "/" + std::string(name));
    EXPECT_EQ(pinned.entry_timeout, kForever) << name;
    EXPECT_EQ(pinned.attr_timeout, kForever) << name;
    EXPECT_EQ(pinned.ino, tagged.ino) << name;  // one image, however it is named
  }
  Entry file = must_lookup(fs(), "python:3.12/rootfs/etc/os-release");
  EXPECT_EQ(file.entry_timeout, kForever);
  EXPECT_EQ(must_lookup(fs(), "python:3.12").entry_timeout, kForever);
}

TEST_F(FilesystemTest, OpeningForWritingIsEROFS) {
  Ino digest = must_lookup(fs(), "python:3.12/digest").ino;
  Ino file = must_lookup(fs(), "python:3.12/rootfs/etc/os-release").ino;
  Ino archive = must_lookup(fs(), "python:3.12/initramfs.cpio").ino;
  Ino status = must_lookup(fs(), ".status").ino;
  for (Ino ino : {digest, file, archive, status}) {
    for (int flags : {O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC, O_WRONLY | O_APPEND}) {
      auto r = fs().open(ino, flags);
      ASSERT_FALSE(r.ok()) << ino << " " << flags;
      EXPECT_EQ(r.error().code, EROFS) << ino << " " << flags;
    }
  }
  EXPECT_TRUE(fs().open(file, O_RDONLY | O_NOFOLLOW).ok());
}

TEST_F(FilesystemTest, OpeningADirectoryIsEISDIR) {
  for (std::string_view path : {"python:3.12", "python:3.12/rootfs", "python:3.12/rootfs/etc"}) {
    auto r = fs().open(must_lookup(fs(), path).ino, O_RDONLY);
    ASSERT_FALSE(r.ok()) << path;
    EXPECT_EQ(r.error().code, EISDIR) << path;
  }
  auto top = fs().open(kRootIno, O_RDONLY);
  ASSERT_FALSE(top.ok());
  EXPECT_EQ(top.error().code, EISDIR);
}

TEST_F(FilesystemTest, ReaddirOfAFileIsENOTDIR) {
  auto digest = fs().readdir(must_lookup(fs(), "python:3.12/digest").ino);
  ASSERT_FALSE(digest.ok());
  EXPECT_EQ(digest.error().code, ENOTDIR);
  auto file = fs().readdir(must_lookup(fs(), "python:3.12/rootfs/etc/os-release").ino);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.error().code, ENOTDIR);
}

TEST_F(FilesystemTest, UnknownInodesAreENOENT) {
  EXPECT_EQ(error_of(fs().getattr(Ino{12345})), ENOENT);            // a name directory never made
  EXPECT_EQ(error_of(fs().getattr((Ino{99} << 40) | 17)), ENOENT);  // no image in slot 99
  EXPECT_EQ(error_of(fs().lookup((Ino{99} << 40) | 17, "etc")), ENOENT);
  Ino digest = must_lookup(fs(), "python:3.12/digest").ino;
  EXPECT_EQ(error_of(fs().getattr((Ino{slot_of(digest)} << 40) | 9)), ENOENT);  // no such file
}

// --- rootfs -----------------------------------------------------------------------------------

TEST_F(FilesystemTest, RootfsServesTheMergedTree) {
  Entry rootfs = must_lookup(fs(), "python:3.12/rootfs");
  EXPECT_TRUE(S_ISDIR(rootfs.attr.st_mode));
  EXPECT_TRUE(fs().listing_immutable(rootfs.ino));
  EXPECT_EQ(list(fs(), "python:3.12/rootfs"),
            (Names{".", "..", "app", "bin", "etc", "usr", "var"}));
  EXPECT_EQ(list(fs(), "python:3.12/rootfs/app"), (Names{".", "..", "bb", "main.py"}));
  EXPECT_EQ(list(fs(), "python:3.12/rootfs/etc"), (Names{".", "..", "os-release"}));

  Entry release = must_lookup(fs(), "python:3.12/rootfs/etc/os-release");
  EXPECT_TRUE(S_ISREG(release.attr.st_mode));
  EXPECT_EQ(release.attr.st_mode & 07777, 0644u);
  EXPECT_EQ(release.attr.st_size, 29);
  EXPECT_EQ(release.attr.st_mtim.tv_sec, 1700000000);  // as in the tar
  EXPECT_EQ(read_ino(fs(), release.ino), "NAME=imagefs-test\nARCH=amd64\n");
  EXPECT_EQ(read_path(fs(), "python:3.12/rootfs/app/main.py"), "print('hi')\n");

  // A larger file, read in big and in small odd-sized pieces, equals the tar's bytes.
  std::string busybox = testing::bytes_of(200000, 7);
  Entry bb = must_lookup(fs(), "python:3.12/rootfs/bin/busybox");
  EXPECT_EQ(bb.attr.st_mode & 07777, 0755u);
  EXPECT_EQ(static_cast<size_t>(bb.attr.st_size), busybox.size());
  EXPECT_EQ(read_ino(fs(), bb.ino), busybox);
  EXPECT_EQ(read_ino(fs(), bb.ino, 4093), busybox);

  // Reads past the end and across it.
  auto open = fs().open(bb.ino, O_RDONLY);
  ASSERT_TRUE(open.ok());
  std::vector<uint8_t> buffer(100);
  EXPECT_EQ(fs().read(**open, busybox.size() + 10, buffer).value(), 0u);
  EXPECT_EQ(fs().read(**open, busybox.size() - 30, buffer).value(), 30u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(buffer.data()), 30),
            busybox.substr(busybox.size() - 30));
}

TEST_F(FilesystemTest, RootfsSymlinksHardlinksAndXattrs) {
  Entry sh = must_lookup(fs(), "python:3.12/rootfs/bin/sh");
  EXPECT_TRUE(S_ISLNK(sh.attr.st_mode));
  EXPECT_EQ(sh.attr.st_size, 7);
  EXPECT_EQ(fs().readlink(sh.ino).value(), "busybox");
  auto not_link = fs().readlink(must_lookup(fs(), "python:3.12/rootfs/etc/os-release").ino);
  ASSERT_FALSE(not_link.ok());
  EXPECT_EQ(not_link.error().code, EINVAL);

  Entry bb = must_lookup(fs(), "python:3.12/rootfs/bin/busybox");
  Entry ls = must_lookup(fs(), "python:3.12/rootfs/bin/ls");
  Entry upper = must_lookup(fs(), "python:3.12/rootfs/app/bb");  // linked from the layer above
  EXPECT_EQ(ls.ino, bb.ino);
  EXPECT_EQ(upper.ino, bb.ino);
  EXPECT_EQ(bb.attr.st_nlink, 3u);
  EXPECT_EQ(read_ino(fs(), ls.ino), testing::bytes_of(200000, 7));
  EXPECT_EQ(read_ino(fs(), upper.ino, 3000), testing::bytes_of(200000, 7));

  // A sparse file reads as zeros in its holes.
  Entry sparse = must_lookup(fs(), "python:3.12/rootfs/var/sparse");
  EXPECT_EQ(sparse.attr.st_size, 300000);
  EXPECT_TRUE(read_ino(fs(), sparse.ino, 4096 * 3 + 1) == testing::sparse_content());

  Entry note = must_lookup(fs(), "python:3.12/rootfs/usr/share/note.txt");
  EXPECT_EQ(fs().listxattr(note.ino).value(), (Names{"user.note"}));
  EXPECT_EQ(fs().getxattr(note.ino, "user.note").value(), "hi there");
  auto missing = fs().getxattr(note.ino, "user.other");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENODATA);
  EXPECT_TRUE(fs().listxattr(bb.ino).value().empty());

  // Names and image files have none.
  Ino digest = must_lookup(fs(), "python:3.12/digest").ino;
  EXPECT_TRUE(fs().listxattr(kRootIno).value().empty());
  EXPECT_TRUE(fs().listxattr(digest).value().empty());
  auto on_digest = fs().getxattr(digest, "user.note");
  ASSERT_FALSE(on_digest.ok());
  EXPECT_EQ(on_digest.error().code, ENODATA);
  auto on_top = fs().getxattr(kRootIno, "user.note");
  ASSERT_FALSE(on_top.ok());
  EXPECT_EQ(on_top.error().code, ENODATA);
}

TEST_F(FilesystemTest, RootfsInodesAreTheTreesInTheImagesSlot) {
  auto python_image = image("python:3.12");
  ASSERT_NE(python_image, nullptr);
  auto tree = python_image->tree();
  ASSERT_TRUE(tree.ok()) << tree.error().message;

  Entry rootfs = must_lookup(fs(), "python:3.12/rootfs");
  EXPECT_EQ(slot_of(rootfs.ino), python_image->slot());
  EXPECT_EQ(local_of(rootfs.ino), 16 + overlay::kRootIno);
  for (std::string_view path :
       {"etc", "etc/os-release", "bin/busybox", "bin/sh", "app/main.py", "usr/share/note.txt"}) {
    Entry e = must_lookup(fs(), "python:3.12/rootfs/" + std::string(path));
    EXPECT_EQ(slot_of(e.ino), python_image->slot()) << path;
    EXPECT_EQ(local_of(e.ino), 16 + (*tree)->resolve(path).value().ino) << path;
    EXPECT_EQ(e.attr.st_ino, e.ino) << path;
    // Stable across lookups and agreeing with getattr.
    EXPECT_EQ(must_lookup(fs(), "python:3.12/rootfs/" + std::string(path)).ino, e.ino) << path;
    auto attr = fs().getattr(e.ino);
    ASSERT_TRUE(attr.ok()) << path;
    EXPECT_EQ(attr->attr.st_mode, e.attr.st_mode) << path;
    EXPECT_EQ(attr->attr.st_size, e.attr.st_size) << path;
  }

  // Another image, another slot: no inode is shared.
  Entry alpine_etc = must_lookup(fs(), "alpine/rootfs/etc");
  EXPECT_NE(slot_of(alpine_etc.ino), python_image->slot());
  EXPECT_NE(slot_of(alpine_etc.ino), 0u);
}

TEST_F(FilesystemTest, RootfsReaddirInodesEqualLookups) {
  for (std::string_view dir : {"", "/bin", "/etc", "/usr/share"}) {
    std::string path = "python:3.12/rootfs" + std::string(dir);
    Entry e = must_lookup(fs(), path);
    auto items = fs().readdir(e.ino);
    ASSERT_TRUE(items.ok()) << path;
    ASSERT_GE(items->size(), 2u);
    EXPECT_EQ((*items)[0].name, ".");
    EXPECT_EQ((*items)[1].name, "..");
    for (size_t i = 2; i < items->size(); ++i) {
      const DirItem& item = (*items)[i];
      EXPECT_TRUE(item.has_attr) << item.name;
      auto child = fs().lookup(e.ino, item.name);
      ASSERT_TRUE(child.ok()) << path << "/" << item.name;
      EXPECT_EQ(child->ino, item.entry.ino) << path << "/" << item.name;
      EXPECT_EQ(child->attr.st_mode, item.entry.attr.st_mode) << path << "/" << item.name;
      EXPECT_EQ(child->attr.st_size, item.entry.attr.st_size) << path << "/" << item.name;
    }
  }
}

TEST_F(FilesystemTest, ConcurrentLookupsAgree) {
  // Many threads walk and read the same names at once, as the kernel's FUSE threads do: every
  // one sees the same inode numbers and bytes.
  const std::vector<std::string> paths{"python:3.12/rootfs/etc/os-release",
                                       "docker.io/library/python:3.12/rootfs/bin/busybox",
                                       "alpine/rootfs/etc/alpine-release",
                                       "localhost:5000/demo/app:1/rootfs/srv/app",
                                       ".platform/linux-arm64/python:3.12/digest",
                                       "python:3.12/initramfs.cpio.zst"};
  constexpr int kThreads = 6;
  std::vector<std::vector<std::pair<Ino, size_t>>> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (size_t i = 0; i < paths.size(); ++i) {
          const std::string& path = paths[(i + static_cast<size_t>(t)) % paths.size()];
          auto e = lookup_path(fs(), path);
          if (!e.ok()) {
            seen[t].emplace_back(0, 0);
            continue;
          }
          seen[t].emplace_back(e->ino, read_ino(fs(), e->ino).size());
          (void)fs().readdir(kRootIno);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::map<Ino, size_t> sizes;
  for (size_t i = 0; i < paths.size(); ++i) {
    Entry e = must_lookup(fs(), paths[i]);
    sizes[e.ino] = static_cast<size_t>(e.attr.st_size);
  }
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(seen[t].size(), 3 * paths.size());
    for (const auto& [ino, size] : seen[t]) {
      ASSERT_TRUE(sizes.contains(ino)) << "thread " << t << " saw inode " << ino;
      EXPECT_EQ(size, sizes[ino]) << "thread " << t << " inode " << ino;
    }
  }
}

// --- archives ---------------------------------------------------------------------------------

TEST_F(FilesystemTest, ArchiveIsWhatArchiveMakerMakesOfTheSameLayers) {
  Entry cpio = must_lookup(fs(), "python:3.12/initramfs.cpio");
  EXPECT_TRUE(S_ISREG(cpio.attr.st_mode));
  std::string bytes = read_ino(fs(), cpio.ino);
  EXPECT_EQ(static_cast<size_t>(cpio.attr.st_size), bytes.size());
  EXPECT_EQ(read_ino(fs(), cpio.ino, 4099), bytes);

  cpio::ArchiveOptions options;
  options.format = cpio::Format::none;
  std::string reference = testing::reference_archive(python, options);
  ASSERT_FALSE(reference.empty());
  EXPECT_TRUE(bytes == reference) << "initramfs.cpio differs from ArchiveMaker's archive ("
                                  << bytes.size() << " vs " << reference.size() << " bytes)";
}

// rootfs.erofs: its size known at lookup, an EROFS superblock, and the tree's file bytes in it
// (the kernel's and fsck.erofs' view is tests/integration/erofs/'s).
TEST_F(FilesystemTest, RootfsErofsIsServed) {
  Entry e = must_lookup(fs(), "python:3.12/rootfs.erofs");
  EXPECT_TRUE(S_ISREG(e.attr.st_mode));
  std::string bytes = read_ino(fs(), e.ino);
  EXPECT_EQ(static_cast<size_t>(e.attr.st_size), bytes.size());
  ASSERT_GT(bytes.size(), 2048u);
  EXPECT_EQ(bytes.substr(1024, 4), std::string("\xe2\xe1\xf5\xe0", 4));
  EXPECT_EQ(bytes.size() % 4096, 0u);
  std::string os_release = read_path(fs(), "python:3.12/rootfs/etc/os-release");
  ASSERT_FALSE(os_release.empty());
  EXPECT_NE(bytes.find(os_release), std::string::npos);
  // The same bytes again from the cached layout.
  EXPECT_TRUE(read_ino(fs(), must_lookup(fs(), "python:3.12/rootfs.erofs").ino) == bytes);

  // The layout is the store's: another maker serves it without a tree, gc and rm find it under
  // the image, and a layer data file of another size means laying out again.
  auto maker = erofs::ImageMaker::create(blobs).value();
  auto cached = maker->cached(python.manifest_digest(), cpio::ArchiveOptions{});
  ASSERT_TRUE(cached.ok()) << cached.error().message;
  ASSERT_NE(*cached, nullptr);
  std::string again((*cached)->size(), '\0');
  auto got = (*cached)->read(
      0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(again.data()), again.size()));
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(again == bytes);
  auto by_image = erofs::shared_files_by_image(store_root).value();
  ASSERT_EQ(by_image[python.manifest_digest()].size(), 1u);
  fsys::path data;
  for (const auto& entry : fsys::recursive_directory_iterator(store_root / "derived"))
    if (entry.path().filename() == "data") data = entry.path();
  ASSERT_FALSE(data.empty());
  const auto size = fsys::file_size(data);
  fsys::resize_file(data, size + 1);
  auto stale = maker->cached(python.manifest_digest(), cpio::ArchiveOptions{});
  fsys::resize_file(data, size);
  ASSERT_TRUE(stale.ok());
  EXPECT_EQ(*stale, nullptr);
}

TEST_F(FilesystemTest, ArchivesAgreeWithGzipZstdAndCpio) {
  std::string raw = read_path(fs(), "python:3.12/initramfs.cpio");
  Entry gz = must_lookup(fs(), "python:3.12/initramfs.cpio.gz");
  Entry zst = must_lookup(fs(), "python:3.12/initramfs.cpio.zst");
  std::string gz_bytes = read_ino(fs(), gz.ino);
  std::string zst_bytes = read_ino(fs(), zst.ino);
  EXPECT_EQ(static_cast<size_t>(gz.attr.st_size), gz_bytes.size());
  EXPECT_EQ(static_cast<size_t>(zst.attr.st_size), zst_bytes.size());

  fsys::path work = temp.path() / "check";
  fsys::create_directories(work / "extract");
  spit(work / "a.cpio", raw);
  spit(work / "a.cpio.gz", gz_bytes);
  spit(work / "a.cpio.zst", zst_bytes);
  ASSERT_EQ(run("gzip -dc " + quote(work / "a.cpio.gz") + " > " + quote(work / "gz.cpio")), 0);
  ASSERT_EQ(run("zstd -q -dc " + quote(work / "a.cpio.zst") + " > " + quote(work / "zst.cpio")), 0);
  EXPECT_TRUE(slurp(work / "gz.cpio") == raw) << "gzip -dc initramfs.cpio.gz != initramfs.cpio";
  EXPECT_TRUE(slurp(work / "zst.cpio") == raw) << "zstd -dc initramfs.cpio.zst != initramfs.cpio";

  ASSERT_EQ(run("cd " + quote(work / "extract") + " && cpio -id --quiet < " +
                quote(work / "a.cpio") + " 2>/dev/null"),
            0);
  EXPECT_EQ(slurp(work / "extract/etc/os-release"), "NAME=imagefs-test\nARCH=amd64\n");
  EXPECT_EQ(slurp(work / "extract/app/main.py"), "print('hi')\n");
  EXPECT_TRUE(slurp(work / "extract/bin/busybox") == testing::bytes_of(200000, 7));
  EXPECT_TRUE(fsys::is_symlink(work / "extract/bin/sh"));
  EXPECT_FALSE(fsys::exists(work / "extract/etc/motd"));
}

TEST_F(FilesystemTest, ArchiveInodesAreStableAndInTheImagesSlot) {
  Entry first = must_lookup(fs(), "python:3.12/initramfs.cpio.gz");
  Entry second = must_lookup(fs(), "python:3.12/initramfs.cpio.gz");
  EXPECT_EQ(first.ino, second.ino);
  EXPECT_EQ(first.attr.st_size, second.attr.st_size);
  EXPECT_EQ(slot_of(first.ino), slot_of(must_lookup(fs(), "python:3.12/digest").ino));
  auto file = fs().open(first.ino, O_RDONLY);
  ASSERT_TRUE(file.ok());
  EXPECT_TRUE((*file)->keep_cache);  // no host files: the bytes never change
  EXPECT_FALSE((*file)->direct_io);
}

// --- archives with host files (--inject) ------------------------------------------------------

class InjectTest : public testing::FsEnv {
 protected:
  void SetUp() override {
    FsEnv::SetUp();
    pull_standard();
    agent = temp.path() / "agent";
    spit(agent, "agent version 1\n");
    ImagesOptions o = images_options();
    o.archive.injects.push_back(cpio::Inject{agent, "/usr/bin/agent"});
    m = mount(std::move(o));
  }
  Filesystem& fs() { return *m.fs; }
  fsys::path agent;
  testing::Mounted m;
};

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST_F(InjectTest, ArchivesAreLookedUpAgainAtEveryOpen) {
  for (std::string_view name : {"initramfs.cpio", "initramfs.cpio.gz", "initramfs.cpio.zst"}) {
    Entry e = must_lookup(fs(), "python:3.12/" + std::string(name));
    EXPECT_EQ(e.entry_timeout, 0) << name;
    EXPECT_EQ(e.attr_timeout, 0) << name;
  }
  // Other files of the image do not depend on host files.
  EXPECT_EQ(must_lookup(fs(), "python:3.12/digest").entry_timeout,
            static_cast<double>(kTtl.count()));
  EXPECT_EQ(must_lookup(fs(), "python:3.12/rootfs/etc/os-release").entry_timeout, kForever);
}

TEST_F(InjectTest, InjectedFileIsInTheArchive) {
  Entry e = must_lookup(fs(), "python:3.12/initramfs.cpio");
  std::string bytes = read_ino(fs(), e.ino);
  EXPECT_EQ(static_cast<size_t>(e.attr.st_size), bytes.size());
  EXPECT_TRUE(contains(bytes, "usr/bin/agent"));
  EXPECT_TRUE(contains(bytes, "agent version 1\n"));

  cpio::ArchiveOptions options;
  options.format = cpio::Format::none;
  options.injects.push_back(cpio::Inject{agent, "/usr/bin/agent"});
  EXPECT_TRUE(bytes == testing::reference_archive(python, options))
      << "initramfs.cpio with --inject differs from ArchiveMaker's archive";
}

// The host file changes between two opens with nothing in between: the second open drops the
// kernel's pages and serves the new bytes.
TEST_F(InjectTest, ChangedHostFileIsServedWithoutTheOldPages) {
  Entry e = must_lookup(fs(), "python:3.12/initramfs.cpio");
  auto first = fs().open(e.ino, O_RDONLY);
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_TRUE((*first)->keep_cache);
  EXPECT_TRUE(contains(testing::read_all(fs(), **first), "agent version 1\n"));

  spit(agent, "agent version 2, longer\n");
  auto second = fs().open(e.ino, O_RDONLY);
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_FALSE((*second)->keep_cache);
  std::string bytes = testing::read_all(fs(), **second);
  EXPECT_TRUE(contains(bytes, "agent version 2, longer\n"));
  EXPECT_FALSE(contains(bytes, "agent version 1\n"));
  EXPECT_EQ((*second)->size, bytes.size());
  // The first open keeps reading what it opened.
  EXPECT_TRUE(contains(testing::read_all(fs(), **first), "agent version 1\n"));

  auto third = fs().open(e.ino, O_RDONLY);
  ASSERT_TRUE(third.ok());
  EXPECT_TRUE((*third)->keep_cache);  // unchanged since the second open
}

// With --inject, an archive's entry and attr timeouts are 0, so the kernel sends LOOKUP (and
// GETATTR) before every OPEN, and that lookup already makes the new archive. The OPEN that
// follows must still reply keep_cache = 0 (with FUSE_CAP_AUTO_INVAL_DATA off, the kernel would
// otherwise keep the old archive's pages): Image::archive() compares with the last open's.
TEST_F(InjectTest, ChangedHostFileDropsOldPagesWhenLookedUpBeforeOpen) {
  Entry e = must_lookup(fs(), "python:3.12/initramfs.cpio");
  auto first = fs().open(e.ino, O_RDONLY);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(contains(testing::read_all(fs(), **first), "agent version 1\n"));

  spit(agent, "agent version 2, longer\n");
  // As the kernel does for an entry whose timeout has passed: LOOKUP, then OPEN.
  Entry again = must_lookup(fs(), "python:3.12/initramfs.cpio");
  ASSERT_EQ(again.ino, e.ino);
  auto second = fs().open(again.ino, O_RDONLY);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(contains(testing::read_all(fs(), **second), "agent version 2, longer\n"));
  EXPECT_FALSE((*second)->keep_cache) << "the kernel would keep the old archive's pages";
}

// --- name directories follow the kernel's references (lookup counts, forget) -------------------

class NameTableTest : public FilesystemTest {
 protected:
  // The number of name directories the mount keeps, from .status.
  size_t name_dirs() {
    auto file = fs().open(must_lookup(fs(), ".status").ino, O_RDONLY);
    EXPECT_TRUE(file.ok());
    if (!file.ok()) return 0;
    auto json = nlohmann::json::parse(testing::read_all(fs(), **file), nullptr, false);
    EXPECT_TRUE(json.contains("name_directories")) << json.dump();
    return json.value("name_directories", size_t{0});
  }
  Entry must(Result<Entry> e) {
    EXPECT_TRUE(e.ok()) << e.error().message;
    return e.ok() ? *e : Entry{};
  }
};

TEST_F(NameTableTest, ForgetToZeroDropsANameAndItsNumberIsNeverReused) {
  Entry level = must(fs().lookup(kRootIno, "a.b"));
  Entry name = must(fs().lookup(level.ino, "random1"));
  EXPECT_EQ(slot_of(name.ino), 0u);
  EXPECT_TRUE(fs().getattr(name.ino).ok());
  // Two lookups, two references: one forget leaves it.
  EXPECT_EQ(must(fs().lookup(level.ino, "random1")).ino, name.ino);
  fs().forget(name.ino, 1);
  EXPECT_TRUE(fs().getattr(name.ino).ok());
  EXPECT_EQ(must(fs().lookup(level.ino, "random1")).ino, name.ino);
  fs().forget(name.ino, 2);
  EXPECT_EQ(error_of(fs().getattr(name.ino)), ENOENT);
  EXPECT_EQ(error_of(fs().lookup(name.ino, "x")), ENOENT);
  // Looked up again: a new number, not the old one.
  Entry again = must(fs().lookup(level.ino, "random1"));
  EXPECT_NE(again.ino, name.ino);
  EXPECT_GT(again.ino, name.ino);
  // A forget of more than was counted, or of an unknown number, is harmless.
  fs().forget(again.ino, 5);
  fs().forget(again.ino, 1);
  fs().forget(Ino{123456789}, 1);
  EXPECT_EQ(error_of(fs().getattr(again.ino)), ENOENT);
  // The fixed directories and image inodes ignore forget.
  fs().forget(kRootIno, 100);
  fs().forget(must_lookup(fs(), ".platform").ino, 100);
  Entry digest = must_lookup(fs(), "python:3.12/digest");
  fs().forget(digest.ino, 100);
  EXPECT_TRUE(fs().getattr(kRootIno).ok());
  EXPECT_TRUE(fs().getattr(digest.ino).ok());
  EXPECT_TRUE(lookup_path(fs(), ".platform/linux-arm64/python:3.12").ok());
}

TEST_F(NameTableTest, ManyUnknownNamesLookedUpAndForgottenLeaveTheTableFlat) {
  size_t before = name_dirs();
  Entry level = must(fs().lookup(kRootIno, "a.b"));
  for (int i = 0; i < 20000; ++i) {
    // What the kernel does for `stat a.b/nI/x`: two lookups, both with a zero entry timeout; at
    // the last dput each dentry is deleted, its inode evicted, and FORGET comes.
    Entry name = must(fs().lookup(level.ino, "n" + std::to_string(i)));
    Entry x = must(fs().lookup(name.ino, "x"));
    EXPECT_EQ(x.entry_timeout, 0);
    fs().forget(x.ino, 1);
    fs().forget(name.ino, 1);
    if (i == 0) {
      EXPECT_EQ(name_dirs(), before + 1) << "a.b itself";
    }
  }
  fs().forget(level.ino, 1);
  EXPECT_EQ(name_dirs(), before);
}

TEST_F(NameTableTest, UnknownNamesGetAShortEntryTimeoutKnownOnesALongOne) {
  // Nothing stored at or below these: the kernel must drop them after use.
  EXPECT_EQ(must(fs().lookup(kRootIno, "a.b")).entry_timeout, 0);
  EXPECT_EQ(must(lookup_path(fs(), "a.b/random")).entry_timeout, 0);
  EXPECT_EQ(must(fs().lookup(kRootIno, "nothing-here")).entry_timeout, 0);
  EXPECT_EQ(must(lookup_path(fs(), ".platform/linux-s390x")).entry_timeout, 0);
  // Stored references and the levels above them, and images that resolved: long.
  EXPECT_EQ(must(fs().lookup(kRootIno, "localhost:5000")).entry_timeout, kForever);
  EXPECT_EQ(must(lookup_path(fs(), "localhost:5000/demo")).entry_timeout, kForever);
  EXPECT_EQ(must(lookup_path(fs(), "localhost:5000/demo/app:1")).entry_timeout, kForever);
  EXPECT_EQ(must(fs().lookup(kRootIno, "alpine")).entry_timeout, kForever);
  EXPECT_EQ(must(fs().lookup(kRootIno, "python:3.12")).entry_timeout, kForever);
  EXPECT_EQ(must(lookup_path(fs(), ".platform/linux-arm64")).entry_timeout, kForever);
  // Every attribute stays long: only the name is short-lived.
  EXPECT_EQ(must(lookup_path(fs(), "a.b/random")).attr_timeout, kForever);
}

TEST_F(NameTableTest, TopmostUnknownNamesAreHandedOutOnceForInvalidationKnownOnesNever) {
  using StaleNames = std::vector<std::pair<Ino, std::string>>;
  auto later = std::chrono::steady_clock::now() + std::chrono::hours(1);
  Entry level = must(fs().lookup(kRootIno, "a.b"));
  Entry name = must(fs().lookup(level.ino, "zz"));
  Entry below = must(fs().lookup(name.ino, "x"));
  must(lookup_path(fs(), "localhost:5000/demo/app:1"));
  must(lookup_path(fs(), "localhost:5000/nothing"));  // unknown, under a known level
  Entry platform = must(lookup_path(fs(), ".platform/linux-s390x"));
  must(lookup_path(fs(), ".platform/linux-arm64"));
  // Not yet: looked up just now, and the adapter waits a second.
  EXPECT_TRUE(
      fs().stale_names(std::chrono::steady_clock::now() - std::chrono::seconds(1), 100).empty());
  Ino localhost = must(fs().lookup(kRootIno, "localhost:5000")).ino;
  // "a.b" only: invalidating it takes "zz" and "x" with it.
  EXPECT_EQ(fs().stale_names(later, 100),
            (StaleNames{{kRootIno, "a.b"}, {localhost, "nothing"}, {kRootIno + 1, "linux-s390x"}}));
  EXPECT_TRUE(fs().stale_names(later, 100).empty()) << "each lookup yields a name once";
  // Looked up again (the kernel revalidates a zero-timeout name at every walk): once more.
  EXPECT_EQ(must(fs().lookup(level.ino, "zz")).ino, name.ino);
  EXPECT_EQ(must(fs().lookup(kRootIno, "a.b")).ino, level.ino);
  EXPECT_EQ(must(fs().lookup(kRootIno, "a.b")).ino, level.ino);
  EXPECT_EQ(fs().stale_names(later, 1), (StaleNames{{kRootIno, "a.b"}}));
  EXPECT_TRUE(fs().stale_names(later, 100).empty());
  // A name forgotten before it was taken is skipped.
  must(fs().lookup(kRootIno, "a.b"));
  fs().forget(below.ino, 1);
  fs().forget(name.ino, 2);
  fs().forget(level.ino, 4);
  fs().forget(platform.ino, 1);
  EXPECT_TRUE(fs().stale_names(later, 100).empty());
}

TEST_F(NameTableTest, ListingsHoldTheirNamesAndReaddirplusEntriesCountAsLookups) {
  auto items = fs().readdir(kRootIno);
  ASSERT_TRUE(items.ok());
  // Entries only: a DirItem copy would hold the listing.
  auto find = [&](std::string_view name) {
    for (const DirItem& item : *items)
      if (item.name == name) return item.entry;
    ADD_FAILURE() << "no " << name;
    return Entry{};
  };
  Entry alpine_dir = find("alpine:latest");
  Entry localhost = find("localhost:5000");
  ASSERT_EQ(slot_of(alpine_dir.ino), 0u);
  // While the listing lives, its numbers are the lookups' numbers (readdir and readdirplus
  // give the same inode numbers as lookup).
  Entry looked = must(fs().lookup(kRootIno, "localhost:5000"));
  EXPECT_EQ(looked.ino, localhost.ino);
  // readdirplus sent "alpine:latest" with its attributes: one reference.
  fs().remember(alpine_dir.ino);
  Ino never_sent = find("python:3.12").ino;
  items->clear();  // releasedir
  // The one sent with attributes and the one looked up stay; the one only listed is gone.
  EXPECT_TRUE(fs().getattr(alpine_dir.ino).ok());
  EXPECT_TRUE(fs().getattr(localhost.ino).ok());
  EXPECT_EQ(error_of(fs().getattr(never_sent)), ENOENT);
  EXPECT_EQ(must(fs().lookup(kRootIno, "alpine:latest")).ino, alpine_dir.ino);
  fs().forget(alpine_dir.ino, 2);  // readdirplus + lookup
  fs().forget(localhost.ino, 1);
  EXPECT_EQ(error_of(fs().getattr(alpine_dir.ino)), ENOENT);
  EXPECT_EQ(error_of(fs().getattr(localhost.ino)), ENOENT);
  // Listings that come and go leave nothing behind.
  size_t before = name_dirs();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(fs().readdir(kRootIno).ok());
  EXPECT_EQ(name_dirs(), before);
}

TEST_F(NameTableTest, ListingInodesMatchLookupsBelowTheTop) {
  // `ls -R` of a level: each listed name looks up to the number readdir gave, and each of those
  // lists in turn.
  Entry level = must(fs().lookup(kRootIno, "localhost:5000"));
  auto items = fs().readdir(level.ino);
  ASSERT_TRUE(items.ok());
  for (const DirItem& item : *items) {
    if (item.name == "." || item.name == "..") continue;
    Entry e = must(fs().lookup(level.ino, item.name));
    EXPECT_EQ(e.ino, item.entry.ino) << item.name;
    auto below = fs().readdir(e.ino);
    ASSERT_TRUE(below.ok()) << item.name;
    EXPECT_GT(below->size(), 2u) << item.name;
  }
}

// --- .status ----------------------------------------------------------------------------------

TEST_F(FilesystemTest, StatusFileIsJsonAboutTheMount) {
  Entry status = must_lookup(fs(), ".status");
  EXPECT_TRUE(S_ISREG(status.attr.st_mode));
  EXPECT_EQ(status.attr.st_size, 0);
  EXPECT_EQ(status.entry_timeout, 0);
  EXPECT_EQ(status.attr_timeout, 0);
  EXPECT_EQ(fs().getattr(status.ino).value().ino, status.ino);

  must_lookup(fs(), "python:3.12/digest");                        // opens one image
  must_lookup(fs(), ".platform/linux-arm64/python:3.12/digest");  // and another
  auto file = fs().open(status.ino, O_RDONLY);
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_TRUE((*file)->direct_io);
  EXPECT_FALSE((*file)->keep_cache);
  std::string text = testing::read_all(fs(), **file, 10);
  auto json = nlohmann::json::parse(text, nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << text;
  EXPECT_EQ(json["mountpoint"], "/mnt/imagefs-test");
  EXPECT_EQ(json["pid"], ::getpid());
  EXPECT_EQ(json["images_open"], 2);
  EXPECT_EQ(json["platform"], "linux/amd64");
  EXPECT_EQ(json["tag_ttl_seconds"], kTtl.count());
  EXPECT_EQ(json["cache_dir"], store_root.string());
  EXPECT_EQ(json["started"], 1700000000);
  EXPECT_TRUE(json["in_flight"].is_array());
  EXPECT_TRUE(json["recent_errors"].is_array());
  EXPECT_TRUE(json["recent_errors"].empty());
}

// --- tags older than the TTL ------------------------------------------------------------------

// A registry on a loopback port where nothing listens: connections are refused at once.
constexpr const char* kDeadRegistry = "127.0.0.1:1";

class StaleTagTest : public testing::FsEnv {
 protected:
  void SetUp() override {
    FsEnv::SetUp();
    image = registry::testing::make_image(
        "amd64", {testing::make_tar({testing::File("hello", "hi\n")}, testing::Filter::gzip)});
    pull(kDeadRegistry, "app", "1", {&image}, std::string(kDeadRegistry) + "/app:1",
         testing::kAmd64);
    // Resolved two TTLs ago.
    auto ref = catalog->ref(std::string(kDeadRegistry) + "/app:1", "linux/amd64").value();
    ASSERT_TRUE(ref.has_value());
    ref->resolved_at -= 2 * kTtl.count();
    ASSERT_TRUE(catalog->put_ref(*ref).ok());
    m = mount();
  }
  Filesystem& fs() { return *m.fs; }
  TestImage image;
  testing::Mounted m;
};

TEST_F(StaleTagTest, UnreachableRegistryServesTheLastDigestAndSaysSo) {
  std::string path = std::string(kDeadRegistry) + "/app:1";
  EXPECT_EQ(list(fs(), kDeadRegistry), (Names{".", "..", "app:1"}));
  EXPECT_EQ(read_path(fs(), path + "/digest"), image.manifest_digest().str() + "\n");
  EXPECT_EQ(read_path(fs(), path + "/rootfs/hello"), "hi\n");
  std::vector<std::string> lines = logged();
  ASSERT_FALSE(lines.empty());
  EXPECT_TRUE(contains(lines[0], "serving the last known digest " + image.manifest_digest().str()))
      << lines[0];
  std::string status = read_path(fs(), ".status");
  EXPECT_TRUE(contains(status, "serving the last known digest")) << status;
}

TEST_F(StaleTagTest, EachFailureIsLoggedOnceAMinute) {
  // TTL 0: every lookup asks the (unreachable) registry again, and keeps serving the last digest.
  ImagesOptions options = images_options();
  options.tag_ttl = std::chrono::seconds(0);
  testing::Mounted zero = mount(std::move(options));
  std::string path = std::string(kDeadRegistry) + "/app:1/digest";
  for (int i = 0; i < 3; ++i) {
    Entry e = must_lookup(*zero.fs, path);
    EXPECT_EQ(e.entry_timeout, 0) << i;
    EXPECT_EQ(read_ino(*zero.fs, e.ino), image.manifest_digest().str() + "\n") << i;
  }
  std::vector<std::string> lines = logged();
  EXPECT_EQ(lines.size(), 1u) << ::testing::PrintToString(lines);
}

TEST_F(StaleTagTest, UnknownTagOfAnUnreachableRegistryIsEIO) {
  auto r = lookup_path(fs(), std::string(kDeadRegistry) + "/app:2");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO) << r.error().message;
}

// Issue 17: an image config docker accepts (Cmd as a string) makes archives; one that docker
// refuses answers the archives with EIO, the errno README's troubleshooting lists for a broken
// image, never EINVAL, and the log says why.
class ConfigFormsTest : public testing::FsEnv {
 protected:
  // `image` with `config` as its config.json's "config" object, and the manifest to match.
  static TestImage with_config(TestImage image, const nlohmann::json& config) {
    nlohmann::json doc = nlohmann::json::parse(image.config);
    doc["config"] = config;
    image.config = doc.dump();
    nlohmann::json manifest = nlohmann::json::parse(image.manifest);
    manifest["config"]["digest"] = store::Digest::of(image.config).str();
    manifest["config"]["size"] = image.config.size();
    image.manifest = manifest.dump();
    return image;
  }
};

TEST_F(ConfigFormsTest, StringCmdMakesArchivesAndABadCmdIsEIO) {
  using namespace std::string_literals;
  const TestImage base = registry::testing::make_image(
      "amd64", {testing::make_tar({testing::Dir("bin"), testing::File("bin/app", "#!app\n", 0755)},
                                  testing::Filter::gzip)});
  const TestImage good = with_config(base, {{"Cmd", "/bin/app --serve"}});
  const TestImage bad =
      with_config(base, {{"Entrypoint", "/bin/app"}, {"Cmd", {{"not", "a list"}}}});
  pull("registry.example", "app", "good", {&good}, "registry.example/app:good", testing::kAmd64);
  pull("registry.example", "app", "bad", {&bad}, "registry.example/app:bad", testing::kAmd64);
  testing::Mounted m = mount();

  const std::string cpio = read_path(*m.fs, "registry.example/app:good/initramfs.cpio");
  // The default /init's config holds the string as a list of one.
  EXPECT_NE(cpio.find("cmd\0"
                      "1\0/bin/app --serve\0"s),
            std::string::npos);
  EXPECT_EQ(error_of(lookup_path(*m.fs, "registry.example/app:good/initramfs.cpio.gz")), 0);

  for (const char* file : {"initramfs.cpio.gz", "initramfs.cpio.zst", "initramfs.cpio"}) {
    auto e = lookup_path(*m.fs, std::string("registry.example/app:bad/") + file);
    ASSERT_FALSE(e.ok()) << file;
    EXPECT_EQ(e.error().code, EIO) << file << ": " << e.error().message;
  }
  bool said = false;
  for (const std::string& line : logged())
    said |= line.find("Cmd is neither a string nor a list of strings") != std::string::npos;
  EXPECT_TRUE(said) << ::testing::PrintToString(logged());
  // The rest of the image is served as ever.
  EXPECT_EQ(read_path(*m.fs, "registry.example/app:bad/rootfs/bin/app"), "#!app\n");
}

}  // namespace
}  // namespace imagefs::fs
