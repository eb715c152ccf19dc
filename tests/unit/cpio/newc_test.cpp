// newc encoding, checked by GNU cpio (the reference reader) extracting what we wrote.
#include "cpio/newc.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace imagefs::cpio {
namespace {

namespace fsys = std::filesystem;

void add(std::string& out, NewcHeader h, std::string_view name, std::string_view data = {}) {
  h.filesize = data.size();
  size_t before = out.size();
  ASSERT_TRUE(append_newc_header(out, h, name).ok());
  out += data;
  out.append(newc_pad(data.size()), '\0');
  EXPECT_EQ(out.size() - before, newc_entry_size(name.size(), data.size())) << name;
  EXPECT_EQ(out.size() % 4, 0u) << name;
}

TEST(Newc, HeaderLayout) {
  std::string out;
  NewcHeader h;
  h.ino = 0x1234;
  h.mode = S_IFREG | 0644;
  h.filesize = 3;
  ASSERT_TRUE(append_newc_header(out, h, "a").ok());
  ASSERT_EQ(out.size(), 112u);  // 110 + "a\0", already aligned
  EXPECT_EQ(out.substr(0, 6), "070701");
  EXPECT_EQ(out.substr(6, 8), "00001234");
  EXPECT_EQ(out.substr(14, 8), "000081A4");
  EXPECT_EQ(out.substr(94, 8), "00000002");  // namesize includes the NUL
}

TEST(Newc, RefusesFilesOf4GiB) {
  std::string out;
  NewcHeader h;
  h.mode = S_IFREG | 0644;
  h.filesize = kNewcMaxFileSize + 1;
  Result<void> r = append_newc_header(out, h, "big/disk.img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EFBIG);
  EXPECT_NE(r.error().message.find("/big/disk.img"), std::string::npos);
  EXPECT_NE(r.error().message.find("4 GiB"), std::string::npos);
  EXPECT_FALSE(append_newc_header(out, NewcHeader{}, "").ok());
}

TEST(Newc, GnuCpioExtractsWhatWeWrite) {
  std::string archive;
  NewcHeader dir{.ino = 1, .mode = S_IFDIR | 0755, .nlink = 2, .mtime = 1700000000};
  add(archive, dir, "etc");
  add(archive,
      NewcHeader{.ino = 2, .mode = S_IFREG | 0640, .uid = 1000, .gid = 1001, .mtime = 1600000000},
      "etc/hosts", "127.0.0.1 localhost\n");
  add(archive, NewcHeader{.ino = 3, .mode = S_IFLNK | 0777}, "etc/link", "hosts");
  // A hardlink group: same ino, nlink 2; the data travels with the last member, as cpio expects.
  add(archive, NewcHeader{.ino = 4, .mode = S_IFREG | 0600, .nlink = 2}, "etc/one");
  add(archive, NewcHeader{.ino = 4, .mode = S_IFREG | 0600, .nlink = 2}, "etc/two", "shared\n");
  add(archive, NewcHeader{.ino = 5, .mode = S_IFCHR | 0666, .rdevmajor = 1, .rdevminor = 3},
      "etc/null");
  append_newc_trailer(archive);
  ASSERT_EQ(archive.size() % 4, 0u);

  fsys::path dirpath = fsys::temp_directory_path() / ("newc_test." + std::to_string(getpid()));
  fsys::remove_all(dirpath);
  fsys::create_directories(dirpath / "out");
  {
    std::ofstream f(dirpath / "a.cpio", std::ios::binary);
    f << archive;
  }
  std::string cmd = "cd '" + (dirpath / "out").string() +
                    "' && cpio -idm --quiet --no-absolute-filenames < ../a.cpio 2> ../err";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << std::ifstream(dirpath / "err").rdbuf();

  fsys::path out = dirpath / "out";
  std::stringstream hosts;
  hosts << std::ifstream(out / "etc/hosts").rdbuf();
  EXPECT_EQ(hosts.str(), "127.0.0.1 localhost\n");
  struct stat st {};
  ASSERT_EQ(lstat((out / "etc/hosts").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_mtime, 1600000000);
  if (geteuid() == 0) {  // cpio keeps owners only for root
    EXPECT_EQ(st.st_uid, 1000u);
    EXPECT_EQ(st.st_gid, 1001u);
  }
  EXPECT_EQ(fsys::read_symlink(out / "etc/link"), "hosts");
  struct stat one {
  }, two{};
  ASSERT_EQ(lstat((out / "etc/one").c_str(), &one), 0);
  ASSERT_EQ(lstat((out / "etc/two").c_str(), &two), 0);
  EXPECT_EQ(one.st_ino, two.st_ino);
  EXPECT_EQ(one.st_nlink, 2u);
  if (geteuid() == 0) {
    struct stat dev {};
    ASSERT_EQ(lstat((out / "etc/null").c_str(), &dev), 0);
    EXPECT_TRUE(S_ISCHR(dev.st_mode));
    EXPECT_EQ(major(dev.st_rdev), 1u);
    EXPECT_EQ(minor(dev.st_rdev), 3u);
  }
  fsys::remove_all(dirpath);
}

}  // namespace
}  // namespace imagefs::cpio
