// `imagefs export`'s writers against a real merged tree (layers built with libarchive, ingested
// into a temporary store): nothing written, chowned or chmodded outside DIR when someone swaps a
// directory for a symlink in the middle of the export, DIR 0700 until the end, --tar's temporary
// file never opened through a planted name, and hdrcharset=BINARY only where a name is not UTF-8.
#include "cli/export.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "cli/beneath.h"
#include "overlay/layer_index.h"
#include "overlay/tree.h"
#include "store/blob_store.h"
#include "tests/unit/overlay/tar_builder.h"
#include "tests/unit/store/store_test_util.h"

namespace imagefs::cli {
namespace {

namespace fsys = std::filesystem;
using overlay::testing::Dir;
using overlay::testing::File;
using overlay::testing::Hardlink;
using overlay::testing::Symlink;
using overlay::testing::TarEntry;
using store::testing::TempDir;

mode_t mode_of(const fsys::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

std::string slurp(const fsys::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream out;
  out << f.rdbuf();
  return out.str();
}

// A store in a temporary directory that makes trees of test layers.
class Trees {
 public:
  Trees() {
    auto blobs = store::BlobStore::open(dir_.path() / "store");
    EXPECT_TRUE(blobs.ok());
    blobs_ = *blobs;
    auto cache = overlay::LayerCache::create(blobs_);
    EXPECT_TRUE(cache.ok());
    cache_ = *cache;
  }

  std::shared_ptr<overlay::Tree> tree(const std::vector<TarEntry>& entries) {
    const std::string tar = overlay::testing::make_tar(entries);
    const store::Digest digest = store::Digest::of(tar);
    EXPECT_TRUE(blobs_->put(digest, tar).ok());
    auto index = cache_->get(store::LayerRecord{digest, overlay::testing::kTar, tar.size(), {}});
    EXPECT_TRUE(index.ok()) << index.error().message;
    auto tree = overlay::Tree::open({*index});
    EXPECT_TRUE(tree.ok()) << tree.error().message;
    return *tree;
  }

 private:
  TempDir dir_;
  std::shared_ptr<store::BlobStore> blobs_;
  std::shared_ptr<overlay::LayerCache> cache_;
};

// A tree that runs `hook` before the writer sees each entry of the walk: the test's way into the
// middle of an export.
class HookedTree final : public overlay::Tree {
 public:
  HookedTree(std::shared_ptr<overlay::Tree> inner,
             std::function<void(const overlay::WalkEntry&)> hook)
      : inner_(std::move(inner)), hook_(std::move(hook)) {}
  Result<overlay::Attr> lookup(overlay::Ino parent, std::string_view name) override {
    return inner_->lookup(parent, name);
  }
  Result<overlay::Attr> getattr(overlay::Ino ino) override { return inner_->getattr(ino); }
  Result<std::vector<overlay::DirEntry>> readdir(overlay::Ino dir) override {
    return inner_->readdir(dir);
  }
  Result<std::string> readlink(overlay::Ino ino) override { return inner_->readlink(ino); }
  Result<size_t> read(overlay::Ino ino, uint64_t offset, std::span<uint8_t> out) override {
    return inner_->read(ino, offset, out);
  }
  Result<std::vector<std::string>> listxattr(overlay::Ino ino) override {
    return inner_->listxattr(ino);
  }
  Result<std::string> getxattr(overlay::Ino ino, std::string_view name) override {
    return inner_->getxattr(ino, name);
  }
  Result<overlay::Attr> resolve(std::string_view path) override { return inner_->resolve(path); }
  Result<overlay::ContentSource> content(overlay::Ino ino) override { return inner_->content(ino); }
  Result<void> walk(const std::function<Result<void>(const overlay::WalkEntry&)>& visit) override {
    return inner_->walk([&](const overlay::WalkEntry& e) -> Result<void> {
      hook_(e);
      return visit(e);
    });
  }

 private:
  std::shared_ptr<overlay::Tree> inner_;
  std::function<void(const overlay::WalkEntry&)> hook_;
};

// A host directory that must come through an export untouched: its files' modes, owners, times
// and contents, and the names in it, are compared before and after.
class Sentinel {
 public:
  explicit Sentinel(fsys::path dir) : dir_(std::move(dir)) {
    fsys::create_directories(dir_);
    ::chmod(dir_.c_str(), 0751);
    std::ofstream(dir_ / "victim") << "host file\n";
    ::chmod((dir_ / "victim").c_str(), 0640);
    fsys::create_directories(dir_ / "sub");
    ::chmod((dir_ / "sub").c_str(), 0705);
    before_ = describe();
  }
  [[nodiscard]] const fsys::path& path() const { return dir_; }
  [[nodiscard]] std::string describe() const {
    std::ostringstream out;
    for (const auto& e : fsys::recursive_directory_iterator(dir_)) {
      struct stat st {};
      ::lstat(e.path().c_str(), &st);
      out << e.path().lexically_relative(dir_).string() << " " << std::oct << (st.st_mode & 07777)
          << std::dec << " " << st.st_uid << ":" << st.st_gid << " " << st.st_mtim.tv_sec << "\n";
    }
    struct stat st {};
    ::stat(dir_.c_str(), &st);
    out << ". " << std::oct << (st.st_mode & 07777) << std::dec << " " << st.st_uid << ":"
        << st.st_gid << "\n"
        << slurp(dir_ / "victim");
    return out.str();
  }
  void expect_untouched() const { EXPECT_EQ(describe(), before_) << "the host directory changed"; }

 private:
  fsys::path dir_;
  std::string before_;
};

// Many directories, each with files, a symlink and a subdirectory, owned by someone else and with
// modes of their own: what a redirected write, chown or chmod would show on the sentinel.
std::vector<TarEntry> many_dirs(int n) {
  std::vector<TarEntry> entries;
  TarEntry root = Dir("./", 0755);
  entries.push_back(root);
  for (int i = 0; i < n; ++i) {
    std::string d = "d" + std::to_string(i);
    TarEntry dir = Dir(d, 0777);
    dir.uid = dir.gid = 4242;
    entries.push_back(dir);
    TarEntry f = File(d + "/victim", "from the image\n", 0666);
    f.uid = f.gid = 4242;
    entries.push_back(f);
    entries.push_back(Symlink(d + "/link", "victim"));
    TarEntry sub = Dir(d + "/sub", 0777);
    sub.uid = 4242;
    entries.push_back(sub);
    entries.push_back(File(d + "/sub/file", "x", 04755));
  }
  return entries;
}

TEST(Beneath, OpenDirRefusesASymlinkOnTheWay) {
  TempDir tmp;
  Sentinel sentinel(tmp.path() / "sentinel");
  fsys::create_directories(tmp.path() / "root/a");
  fsys::create_symlink(sentinel.path(), tmp.path() / "root/a/b");
  UniqueFd root(::open((tmp.path() / "root").c_str(), O_RDONLY | O_DIRECTORY));
  auto fine = open_dir_beneath(root.get(), "a", "DIR");
  ASSERT_TRUE(fine.ok()) << fine.error().message;
  auto refused = open_dir_beneath(root.get(), "a/b", "DIR");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ELOOP);
  EXPECT_NE(refused.error().message.find("DIR/a/b"), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("symbolic link"), std::string::npos);
  auto dots = open_dir_beneath(root.get(), "a/../..", "DIR");
  ASSERT_FALSE(dots.ok());
  EXPECT_EQ(dots.error().code, EINVAL);
  sentinel.expect_untouched();
}

TEST(Beneath, ChainKeepsWritingIntoTheDirectoryItOpened) {
  TempDir tmp;
  Sentinel sentinel(tmp.path() / "sentinel");
  fsys::create_directories(tmp.path() / "root/a/b");
  UniqueFd root(::open((tmp.path() / "root").c_str(), O_RDONLY | O_DIRECTORY));
  DirChain chain(root.get(), "DIR");
  auto b = chain.dir("a/b");
  ASSERT_TRUE(b.ok());
  // Swapped under the writer: the open directory is still the one written into.
  fsys::rename(tmp.path() / "root/a", tmp.path() / "root/moved");
  fsys::create_directory_symlink(sentinel.path(), tmp.path() / "root/a");
  auto same = chain.dir("a/b");
  ASSERT_TRUE(same.ok());
  UniqueFd f(::openat(*same, "new", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600));
  EXPECT_TRUE(f);
  EXPECT_TRUE(fsys::exists(tmp.path() / "root/moved/b/new"));
  // While the chain holds a/, paths under it go on into that directory, wherever it went.
  auto pinned = chain.dir("a");
  ASSERT_TRUE(pinned.ok());
  // Opened afresh (the chain back at the root), a/ is the symlink, and the chain stops there.
  ASSERT_TRUE(chain.dir("").ok());
  auto other = chain.dir("a/b");
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, ELOOP);
  EXPECT_NE(other.error().message.find("DIR/a: it is a symbolic link"), std::string::npos)
      << other.error().message;
  sentinel.expect_untouched();
}

TEST(ExportRoot, NewDirectoryIsMode0700WithItsParents) {
  TempDir tmp;
  ::umask(022);
  auto root = open_export_root(tmp.path() / "x/y/out");
  ASSERT_TRUE(root.ok()) << root.error().message;
  EXPECT_TRUE(root->created);
  EXPECT_EQ(mode_of(tmp.path() / "x/y/out"), 0700);
  EXPECT_EQ(mode_of(tmp.path() / "x/y"), 0755);  // the user's own path, as mkdir -p makes it
  auto slash = open_export_root(tmp.path() / "trailing/");
  ASSERT_TRUE(slash.ok()) << slash.error().message;
  EXPECT_EQ(mode_of(tmp.path() / "trailing"), 0700);
}

TEST(ExportRoot, ExistingEmptyDirectoryBecomes0700) {
  TempDir tmp;
  fsys::create_directory(tmp.path() / "out");
  ::chmod((tmp.path() / "out").c_str(), 0777);
  auto root = open_export_root(tmp.path() / "out");
  ASSERT_TRUE(root.ok()) << root.error().message;
  EXPECT_FALSE(root->created);
  EXPECT_EQ(mode_of(tmp.path() / "out"), 0700);
}

TEST(ExportRoot, RefusesWhatItMustNotWriteInto) {
  TempDir tmp;
  Sentinel sentinel(tmp.path() / "sentinel");
  fsys::create_directory(tmp.path() / "empty");
  // A symlink at DIR, even to an empty directory of ours.
  fsys::create_directory_symlink(tmp.path() / "empty", tmp.path() / "link");
  auto link = open_export_root(tmp.path() / "link");
  ASSERT_FALSE(link.ok());
  EXPECT_EQ(link.error().code, ELOOP);
  EXPECT_NE(link.error().message.find("symbolic link"), std::string::npos);
  fsys::create_directory_symlink(sentinel.path(), tmp.path() / "tohost");
  EXPECT_FALSE(open_export_root(tmp.path() / "tohost").ok());
  // A file.
  std::ofstream(tmp.path() / "file") << "x";
  auto file = open_export_root(tmp.path() / "file");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.error().code, ENOTDIR);
  // A directory that is not empty keeps its mode.
  fsys::create_directory(tmp.path() / "full");
  ::chmod((tmp.path() / "full").c_str(), 0755);
  fsys::create_directory_symlink(sentinel.path(), tmp.path() / "full/etc");
  auto full = open_export_root(tmp.path() / "full");
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, EEXIST);
  EXPECT_NE(full.error().message.find("not empty"), std::string::npos);
  EXPECT_EQ(mode_of(tmp.path() / "full"), 0755);
  sentinel.expect_untouched();
}

TEST(ExportRoot, RefusesAnotherUsersDirectory) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make a directory of another user";
  TempDir tmp;
  fsys::create_directory(tmp.path() / "theirs");
  ASSERT_EQ(::chown((tmp.path() / "theirs").c_str(), 65534, 65534), 0);
  ::chmod((tmp.path() / "theirs").c_str(), 0777);
  auto theirs = open_export_root(tmp.path() / "theirs");
  ASSERT_FALSE(theirs.ok());
  EXPECT_EQ(theirs.error().code, EPERM);
  EXPECT_NE(theirs.error().message.find("belongs to uid 65534"), std::string::npos)
      << theirs.error().message;
  EXPECT_EQ(mode_of(tmp.path() / "theirs"), 0777);
}

TEST(TempFile, NeverOpensAPlantedNameAndIs0600UntilCommitted) {
  TempDir tmp;
  Sentinel sentinel(tmp.path() / "sentinel");
  const fsys::path file = tmp.path() / "out.tar";
  // The first name it tries, planted as a symlink to a host file, and as a dangling one.
  fsys::create_symlink(sentinel.path() / "victim", tmp.path() / "out.tar.tmp");
  auto temp = TempFile::create(file);
  ASSERT_TRUE(temp.ok()) << temp.error().message;
  EXPECT_NE(temp->path(), tmp.path() / "out.tar.tmp");
  EXPECT_EQ(temp->path().parent_path(), tmp.path());
  EXPECT_EQ(mode_of(temp->path()), 0600);
  ASSERT_EQ(::write(temp->fd(), "tar", 3), 3);
  ASSERT_TRUE(temp->commit().ok());
  EXPECT_EQ(slurp(file), "tar");
  EXPECT_EQ(mode_of(file), 0666 & ~current_umask());
  EXPECT_TRUE(fsys::is_symlink(tmp.path() / "out.tar.tmp"));  // left alone
  sentinel.expect_untouched();
  // A symlink at FILE itself is replaced, not followed.
  fsys::create_symlink(sentinel.path() / "victim", tmp.path() / "planted.tar");
  auto again = TempFile::create(tmp.path() / "planted.tar");
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(again->commit().ok());
  EXPECT_FALSE(fsys::is_symlink(tmp.path() / "planted.tar"));
  sentinel.expect_untouched();
}

TEST(TempFile, RemovedWhenNotCommitted) {
  TempDir tmp;
  fsys::path path;
  {
    auto temp = TempFile::create(tmp.path() / "out.tar");
    ASSERT_TRUE(temp.ok());
    path = temp->path();
    EXPECT_TRUE(fsys::exists(path));
  }
  EXPECT_FALSE(fsys::exists(path));
  EXPECT_FALSE(fsys::exists(tmp.path() / "out.tar"));
}

TEST(ExportDir, WritesTheTreeAndGivesDirItsModeLast) {
  Trees trees;
  TempDir tmp;
  std::vector<TarEntry> entries = many_dirs(3);
  entries.push_back(Hardlink("d0/hard", "d0/victim"));
  auto tree = trees.tree(entries);
  std::vector<mode_t> seen;
  const fsys::path out = tmp.path() / "out";
  HookedTree hooked(tree, [&](const overlay::WalkEntry&) { seen.push_back(mode_of(out)); });
  auto done = export_to_dir(hooked, out);
  ASSERT_TRUE(done.ok()) << done.error().message;
  ASSERT_FALSE(seen.empty());
  for (mode_t m : seen) EXPECT_EQ(m, 0700u) << "DIR was open to others during the export";
  EXPECT_EQ(mode_of(out), 0755);
  EXPECT_EQ(mode_of(out / "d1"), 0777);
  EXPECT_EQ(mode_of(out / "d1/sub/file"), 04755);
  EXPECT_EQ(slurp(out / "d2/victim"), "from the image\n");
  EXPECT_EQ(fsys::read_symlink(out / "d1/link"), "victim");
  EXPECT_TRUE(fsys::equivalent(out / "d0/hard", out / "d0/victim"));
  struct stat st {};
  ASSERT_EQ(::stat((out / "d1/victim").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1700000000);
  if (::geteuid() == 0) {
    EXPECT_EQ(st.st_uid, 4242u);
  }
}

// The race of issue 12, made certain: in the middle of the export a directory already written is
// replaced by a symlink to a host directory, and another (not yet written) one is pre-empted
// by such a symlink. The export may fail, but nothing outside DIR changes.
TEST(ExportDir, ASwappedDirectoryRedirectsNothing) {
  Trees trees;
  TempDir tmp;
  Sentinel sentinel(tmp.path() / "sentinel");
  auto tree = trees.tree(many_dirs(20));
  const fsys::path out = tmp.path() / "out";
  bool swapped = false;
  HookedTree hooked(tree, [&](const overlay::WalkEntry& e) {
    if (e.path == "d5/sub/file") {  // d5/ is open in the writer's chain, d5/sub too
      fsys::rename(out / "d5", out / "d5.moved");
      fsys::create_directory_symlink(sentinel.path(), out / "d5");
      fsys::rename(out / "d3", out / "d3.moved");  // finished: only its metadata is to come
      fsys::create_directory_symlink(sentinel.path(), out / "d3");
      swapped = true;
    }
  });
  auto done = export_to_dir(hooked, out);
  ASSERT_TRUE(swapped);
  ASSERT_FALSE(done.ok()) << "a directory of the image turned into a symlink went unnoticed";
  EXPECT_EQ(done.error().code, ELOOP) << done.error().message;
  EXPECT_NE(done.error().message.find("symbolic link"), std::string::npos) << done.error().message;
  sentinel.expect_untouched();
  EXPECT_EQ(mode_of(out), 0700) << "a failed export left DIR open to others";
  EXPECT_TRUE(fsys::exists(out / "d5.moved/sub/file"));  // written where the directory went
}

TEST(ExportDir, AFreshSymlinkAheadOfTheWriterRedirectsNothing) {
  Trees trees;
  TempDir tmp;
  Sentinel sentinel(tmp.path() / "sentinel");
  auto tree = trees.tree(many_dirs(10));
  const fsys::path out = tmp.path() / "out";
  HookedTree hooked(tree, [&](const overlay::WalkEntry& e) {
    // d7 does not exist yet: the writer's mkdirat meets the symlink instead.
    if (e.path == "d6") fsys::create_directory_symlink(sentinel.path(), out / "d7");
  });
  auto done = export_to_dir(hooked, out);
  ASSERT_FALSE(done.ok());
  EXPECT_EQ(done.error().code, EEXIST) << done.error().message;
  sentinel.expect_untouched();
}

// `hdrcharset=BINARY` entries in a tar (each pax record says it once per entry).
int binary_records(const std::string& tar) {
  int n = 0;
  for (size_t at = tar.find("hdrcharset=BINARY"); at != std::string::npos;
       at = tar.find("hdrcharset=BINARY", at + 1))
    ++n;
  return n;
}

TEST(ExportTar, BinaryHeaderOnlyWhereANameIsNotUtf8) {
  Trees trees;
  TempDir tmp;
  const std::string bad = "bad\xff\xfe";
  const std::string cafe = "caf\xc3\xa9";
  TarEntry x = File("etc/x", "x");
  x.xattrs = {{"user.note", "v"}};
  auto tree = trees.tree({Dir("./"), Dir("etc"), x, File(cafe, "utf-8"), File(bad, "not utf-8"),
                          Symlink("to-bad", bad), Symlink("to-cafe", cafe)});
  auto done = export_to_tar(*tree, tmp.path() / "out.tar");
  ASSERT_TRUE(done.ok()) << done.error().message;
  const std::string raw = slurp(tmp.path() / "out.tar");
  EXPECT_EQ(binary_records(raw), 2) << "one for ./bad\\xff\\xfe, one for the link to it";
  EXPECT_EQ(raw.find("LIBARCHIVE.xattr"), std::string::npos);
  EXPECT_NE(raw.find("SCHILY.xattr.user.note=v"), std::string::npos);
  // The names as their bytes, in pax records (GNU tar and bsdtar read them back in the
  // integration test export_safety).
  for (const std::string& record : {"path=./" + bad + "\n", "path=./" + cafe + "\n",
                                    "linkpath=" + bad + "\n", "linkpath=" + cafe + "\n"})
    EXPECT_NE(raw.find(record), std::string::npos) << record;
  EXPECT_EQ(mode_of(tmp.path() / "out.tar"), 0666 & ~current_umask());
  for (const auto& e : fsys::directory_iterator(tmp.path()))
    EXPECT_EQ(e.path().filename(), "out.tar") << "a temporary file was left behind";
}

TEST(ExportTar, AsciiImageHasNoBinaryHeader) {
  Trees trees;
  TempDir tmp;
  auto tree = trees.tree(many_dirs(3));
  ASSERT_TRUE(export_to_tar(*tree, tmp.path() / "out.tar").ok());
  EXPECT_EQ(binary_records(slurp(tmp.path() / "out.tar")), 0);
}

}  // namespace
}  // namespace imagefs::cli
