// The EROFS layout (erofs/layout.h): images read back by a small reader written here from the
// on-disk format (docs/EROFS_FORMAT.md), by fsck.erofs where it is installed, and the layout
// file's encoding. The kernel's view is the integration test's (tests/integration/erofs/).
#include "erofs/layout.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>

namespace imagefs::erofs::detail {
namespace {

uint64_t le(const std::string& img, uint64_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i)
    v = v << 8 | static_cast<uint8_t>(img[at + static_cast<uint64_t>(i)]);
  return v;
}

// What the reader finds of one inode.
struct Read {
  uint32_t mode = 0, uid = 0, gid = 0, nlink = 0;
  uint64_t size = 0, mtime = 0;
  uint32_t nsec = 0, rdev = 0;
  bool extended = false;
  std::string data;  // file content, symlink target, or raw directory data
  std::map<std::string, std::string> xattrs;
};

class Reader {
 public:
  explicit Reader(std::string img) : img_(std::move(img)) {}
  const std::string& img() const { return img_; }
  uint64_t meta() const { return le(img_, 1024 + 40, 4) * 4096; }
  uint64_t build_time() const { return le(img_, 1024 + 24, 8); }

  Read inode(uint64_t nid) const {
    const uint64_t at = meta() + nid * 32;
    Read r;
    const uint16_t format = static_cast<uint16_t>(le(img_, at, 2));
    r.extended = format & 1;
    const uint32_t layout = (format >> 1) & 7;
    const uint16_t icount = static_cast<uint16_t>(le(img_, at + 2, 2));
    r.mode = static_cast<uint32_t>(le(img_, at + 4, 2));
    uint32_t iu = 0;
    uint64_t isize = 32;
    if (r.extended) {
      isize = 64;
      r.size = le(img_, at + 8, 8);
      iu = static_cast<uint32_t>(le(img_, at + 16, 4));
      r.uid = static_cast<uint32_t>(le(img_, at + 24, 4));
      r.gid = static_cast<uint32_t>(le(img_, at + 28, 4));
      r.mtime = le(img_, at + 32, 8);
      r.nsec = static_cast<uint32_t>(le(img_, at + 40, 4));
      r.nlink = static_cast<uint32_t>(le(img_, at + 44, 4));
    } else {
      r.nlink = static_cast<uint32_t>(le(img_, at + 6, 2));
      r.size = le(img_, at + 8, 4);
      iu = static_cast<uint32_t>(le(img_, at + 16, 4));
      r.uid = static_cast<uint32_t>(le(img_, at + 24, 2));
      r.gid = static_cast<uint32_t>(le(img_, at + 26, 2));
      r.mtime = build_time();
      r.nsec = static_cast<uint32_t>(le(img_, 1024 + 32, 4));
    }
    EXPECT_LE(at / 4096, (at + isize - 1) / 4096) << "an inode crosses a block";
    uint64_t xsize = 0;
    if (icount > 0) {
      xsize = 12 + (uint64_t{icount} - 1) * 4;
      uint64_t p = at + isize + 12;
      const uint64_t end = at + isize + xsize;
      static const std::map<int, std::string> prefixes{{1, "user."},
                                                       {2, "system.posix_acl_access"},
                                                       {3, "system.posix_acl_default"},
                                                       {4, "trusted."},
                                                       {6, "security."}};
      while (p < end) {
        const size_t len = static_cast<uint8_t>(img_[p]);
        const int index = static_cast<uint8_t>(img_[p + 1]);
        const size_t vlen = le(img_, p + 2, 2);
        std::string name = prefixes.at(index) + img_.substr(p + 4, len);
        r.xattrs[name] = img_.substr(p + 4 + len, vlen);
        p += (4 + len + vlen + 3) / 4 * 4;
      }
    }
    if (S_ISCHR(r.mode) || S_ISBLK(r.mode)) {
      r.rdev = iu;
    } else if (layout == 2) {
      // FLAT_INLINE: the whole blocks at i_u, then the last partial block after the inode.
      const uint64_t tail = at + isize + xsize;
      const uint64_t whole = r.size / 4096 * 4096;
      EXPECT_NE(whole, r.size) << "an inline layout without a tail";
      EXPECT_LE(tail % 4096 + (r.size - whole), 4096u) << "inline data crosses a block";
      r.data = img_.substr(uint64_t{iu} * 4096, whole) + img_.substr(tail, r.size - whole);
    } else {
      EXPECT_EQ(layout, 0u);
      r.data = img_.substr(uint64_t{iu} * 4096, r.size);
    }
    return r;
  }

  // name -> (nid, file type), checking each block: whole entries, sorted names.
  std::map<std::string, std::pair<uint64_t, int>> list(const Read& dir,
                                                       std::vector<std::string>* order) const {
    std::map<std::string, std::pair<uint64_t, int>> out;
    for (uint64_t b = 0; b * 4096 < dir.size; ++b) {
      const std::string block =
          dir.data.substr(b * 4096, std::min<uint64_t>(4096, dir.size - b * 4096));
      const uint64_t n = le(block, 8, 2) / 12;
      for (uint64_t i = 0; i < n; ++i) {
        const uint64_t off = le(block, i * 12 + 8, 2);
        const uint64_t end = i + 1 < n ? le(block, (i + 1) * 12 + 8, 2) : block.size();
        std::string name = block.substr(off, end - off);
        name = name.substr(0, name.find('\0'));
        out[name] = {le(block, i * 12, 8), static_cast<uint8_t>(block[i * 12 + 10])};
        if (order) order->push_back(name);
      }
    }
    return out;
  }

 private:
  std::string img_;
};

std::string whole_image(const Layout& layout, const std::map<uint32_t, std::string>& layers) {
  std::string img(layout.size, '\0');
  auto got =
      read_image(layout, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(img.data()), img.size()),
                 [&](uint32_t layer, uint64_t offset, std::span<uint8_t> out) -> Result<void> {
                   const std::string& data = layers.at(layer);
                   if (offset + out.size() > data.size()) return make_error(EIO, "short");
                   std::memcpy(out.data(), data.data() + offset, out.size());
                   return {};
                 });
  EXPECT_TRUE(got.ok());
  EXPECT_EQ(*got, img.size());
  return img;
}

Node make(uint32_t mode, int64_t mtime = 1000) {
  Node n;
  n.mode = mode;
  n.mtime_sec = mtime;
  return n;
}

uint32_t add(TreeNodes& t, uint32_t dir, const std::string& name, Node n) {
  t.nodes.push_back(std::move(n));
  const auto i = static_cast<uint32_t>(t.nodes.size() - 1);
  t.nodes[dir].children[name] = i;
  return i;
}

// A tree with every kind of entry; layer 0's data file is `layer`.
TreeNodes sample(std::string* layer) {
  TreeNodes t;
  t.nodes.push_back(make(S_IFDIR | 0755));
  t.layers.push_back(store::Digest::of(std::string_view("layer")));
  *layer = std::string(10000, 'L');
  for (size_t i = 0; i < layer->size(); ++i) (*layer)[i] = static_cast<char>('a' + i % 26);
  Node file = make(S_IFREG | 0644);
  file.layer = 0;
  file.layer_offset = 100;
  file.size = 5000;
  file.xattrs = {{"user.note", "hi"},
                 {"security.capability", std::string("\x01\0\0\x02", 4)},
                 {"trusted.t", std::string(300, 'v')}};
  const uint32_t f = add(t, 0, "file", file);
  Node host = make(S_IFREG | 0755, 0);
  host.bytes = "#!/bin/sh\necho host\n";
  add(t, 0, "host", host);
  Node empty = make(S_IFREG | 0600);
  add(t, 0, "empty", empty);
  Node link = make(S_IFLNK | 0777);
  link.bytes = "file";
  add(t, 0, "link", link);
  Node big_owner = make(S_IFREG | 0644, 1234567890);
  big_owner.mtime_nsec = 5;
  big_owner.uid = 100000;
  big_owner.gid = 70000;
  big_owner.layer = 0;
  big_owner.size = 10;
  add(t, 0, "owner", big_owner);
  Node dev = make(S_IFCHR | 0620);
  dev.rdev_major = 4;
  dev.rdev_minor = 300;
  add(t, 0, "tty", dev);
  add(t, 0, "fifo", make(S_IFIFO | 0644));
  add(t, 0, "sock", make(S_IFSOCK | 0755));
  const uint32_t sub = add(t, 0, "sub", make(S_IFDIR | 0700, 7));
  t.nodes[sub].children["hard"] = f;  // a hardlink to /file
  add(t, sub, "emptydir", make(S_IFDIR | 0755));
  add(t, 0, std::string(255, 'n'), make(S_IFREG | 0644));
  add(t, 0, std::string("odd\x01\xff name\n", 11), make(S_IFREG | 0644));
  return t;
}

TEST(ErofsLayout, SuperblockSaysWhatWeMean) {
  std::string layer;
  TreeNodes t = sample(&layer);
  auto layout = lay_out(t, "seed");
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  const std::string img = whole_image(*layout, {{0, layer}});
  EXPECT_EQ(le(img, 1024, 4), 0xE0F5E1E2u);
  EXPECT_EQ(img[1024 + 12], 12);                     // 4 KiB blocks
  EXPECT_EQ(le(img, 1024 + 14, 2), 0u);              // root nid
  EXPECT_EQ(le(img, 1024 + 16, 8), t.nodes.size());  // inodes: /sub/hard is /file
  EXPECT_EQ(le(img, 1024 + 36, 4) * 4096, layout->size);
  EXPECT_EQ(le(img, 1024 + 24, 8), 1000u);  // the most common mtime
  EXPECT_EQ(le(img, 1024 + 80, 4), 0u);     // no incompatible features
  EXPECT_EQ(layout->size % 4096, 0u);
}

TEST(ErofsLayout, ReadsBackEveryKindOfEntry) {
  std::string layer;
  TreeNodes t = sample(&layer);
  auto layout = lay_out(t, "seed");
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  Reader r(whole_image(*layout, {{0, layer}}));
  const Read root = r.inode(0);
  EXPECT_EQ(root.mode, S_IFDIR | 0755u);
  EXPECT_EQ(root.nlink, 3u);  // 2 + one subdirectory
  std::vector<std::string> order;
  auto entries = r.list(root, &order);
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));
  EXPECT_EQ(entries.size(), t.nodes[0].children.size() + 2);
  EXPECT_EQ(entries.at(".").first, 0u);
  EXPECT_EQ(entries.at("..").first, 0u);

  const Read file = r.inode(entries.at("file").first);
  EXPECT_EQ(file.mode, S_IFREG | 0644u);
  EXPECT_EQ(file.data, layer.substr(100, 5000));
  EXPECT_EQ(file.nlink, 2u);
  EXPECT_EQ(file.xattrs.at("user.note"), "hi");
  EXPECT_EQ(file.xattrs.at("security.capability"), std::string("\x01\0\0\x02", 4));
  EXPECT_EQ(file.xattrs.at("trusted.t"), std::string(300, 'v'));
  EXPECT_EQ(entries.at("file").second, 1);

  EXPECT_EQ(r.inode(entries.at("host").first).data, "#!/bin/sh\necho host\n");
  EXPECT_EQ(r.inode(entries.at("host").first).mtime, 0u);
  EXPECT_TRUE(r.inode(entries.at("host").first).extended);
  EXPECT_EQ(r.inode(entries.at("empty").first).size, 0u);
  const Read link = r.inode(entries.at("link").first);
  EXPECT_TRUE(S_ISLNK(link.mode));
  EXPECT_EQ(link.data, "file");
  EXPECT_EQ(entries.at("link").second, 7);

  const Read owner = r.inode(entries.at("owner").first);
  EXPECT_TRUE(owner.extended);
  EXPECT_EQ(owner.uid, 100000u);
  EXPECT_EQ(owner.gid, 70000u);
  EXPECT_EQ(owner.mtime, 1234567890u);
  EXPECT_EQ(owner.nsec, 5u);
  EXPECT_EQ(owner.data, layer.substr(0, 10));

  const Read tty = r.inode(entries.at("tty").first);
  EXPECT_EQ(tty.mode, S_IFCHR | 0620u);
  // The kernel's new_encode_dev(MKDEV(4, 300)).
  EXPECT_EQ(tty.rdev, (300u & 0xff) | (4u << 8) | ((300u & ~0xffu) << 12));
  EXPECT_EQ(entries.at("tty").second, 3);
  EXPECT_EQ(entries.at("fifo").second, 5);
  EXPECT_EQ(entries.at("sock").second, 6);
  EXPECT_TRUE(entries.contains(std::string(255, 'n')));
  EXPECT_TRUE(entries.contains(std::string("odd\x01\xff name\n", 11)));

  const Read sub = r.inode(entries.at("sub").first);
  EXPECT_EQ(sub.mode, S_IFDIR | 0700u);
  EXPECT_EQ(sub.mtime, 7u);
  auto sub_entries = r.list(sub, nullptr);
  EXPECT_EQ(sub_entries.at("hard").first, entries.at("file").first);  // one inode
  EXPECT_EQ(sub_entries.at("..").first, 0u);
  const Read emptydir = r.inode(sub_entries.at("emptydir").first);
  EXPECT_EQ(r.list(emptydir, nullptr).size(), 2u);  // "." and ".." only
  EXPECT_EQ(emptydir.nlink, 2u);
}

TEST(ErofsLayout, BigDirectoriesSpanBlocksWithWholeSortedEntries) {
  TreeNodes t;
  t.nodes.push_back(make(S_IFDIR | 0755));
  const uint32_t dir = add(t, 0, "many", make(S_IFDIR | 0755));
  std::mt19937 rng(7);
  std::set<std::string> names;
  while (names.size() < 5000) {
    std::string name(1 + rng() % 200, 'x');
    for (char& c : name) c = static_cast<char>(1 + rng() % 255);
    for (char& c : name)
      if (c == '/') c = '_';
    if (name == "." || name == "..") continue;
    names.insert(name);
  }
  for (const std::string& name : names) add(t, dir, name, make(S_IFREG | 0644));
  auto layout = lay_out(t, "seed");
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  Reader r(whole_image(*layout, {}));
  const Read many = r.inode(r.list(r.inode(0), nullptr).at("many").first);
  EXPECT_GT(many.size, 100u * 4096);
  std::vector<std::string> order;
  auto entries = r.list(many, &order);
  EXPECT_EQ(entries.size(), names.size() + 2);
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));  // across blocks too
  for (const std::string& name : names) ASSERT_TRUE(entries.contains(name));
}

TEST(ErofsLayout, FilesPast4GiBTakeExtendedInodes) {
  TreeNodes t;
  t.nodes.push_back(make(S_IFDIR | 0755));
  t.layers.push_back(store::Digest::of(std::string_view("big")));
  Node big = make(S_IFREG | 0644);
  big.layer = 0;
  big.size = (uint64_t{5} << 30) + 3;
  add(t, 0, "big", big);
  auto layout = lay_out(t, "seed");
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_GT(layout->size, big.size);
  // The metadata alone: no 5 GiB buffer.
  const std::string head = layout->meta.substr(0, 3 * 4096);
  Reader r(head + std::string(4096, '\0'));
  const uint64_t nid = r.list(r.inode(0), nullptr).at("big").first;
  const uint64_t at = r.meta() + nid * 32;
  EXPECT_EQ(le(head, at, 2) & 1, 1u);
  EXPECT_EQ(le(head, at + 8, 8), big.size);
  // Its 5 GiB of whole blocks from the layer, and its last 3 bytes inline after the inode, read
  // from the layer too.
  const Extent& last = layout->extents.back();
  EXPECT_EQ(last.length, uint64_t{5} << 30);
  EXPECT_EQ(last.source, 0u);
  EXPECT_EQ(last.source_offset, 0u);
  uint64_t from_layer = 0;
  for (const Extent& e : layout->extents) {
    if (e.source != 0) continue;
    from_layer += e.length;
    if (e.length == 3) {
      EXPECT_LT(e.offset, 3u * 4096) << "the tail is in the metadata area";
      EXPECT_EQ(e.source_offset, uint64_t{5} << 30);
    }
  }
  EXPECT_EQ(from_layer, big.size);
}

TEST(ErofsLayout, RefusesWhatEROFSCannotHold) {
  TreeNodes t;
  t.nodes.push_back(make(S_IFDIR | 0755));
  Node odd = make(S_IFREG | 0644);
  odd.xattrs = {{"system.other", "x"}};
  add(t, 0, "odd", odd);
  auto layout = lay_out(t, "seed");
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(layout.error().code, EINVAL);
  EXPECT_NE(layout.error().message.find("system.other"), std::string::npos);

  TreeNodes names;
  names.nodes.push_back(make(S_IFDIR | 0755));
  add(names, 0, std::string(256, 'n'), make(S_IFREG | 0644));
  auto too_long = lay_out(names, "seed");
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.error().code, ENAMETOOLONG);
}

TEST(ErofsLayout, ReadsAtAnyOffsetMatchTheWholeImage) {
  std::string layer;
  TreeNodes t = sample(&layer);
  auto layout = lay_out(t, "seed");
  ASSERT_TRUE(layout.ok());
  const std::string img = whole_image(*layout, {{0, layer}});
  std::mt19937_64 rng(3);
  for (int i = 0; i < 500; ++i) {
    const uint64_t off = rng() % (img.size() + 100);
    std::string part(rng() % 9000, '\x55');
    auto got = read_image(*layout, off,
                          std::span<uint8_t>(reinterpret_cast<uint8_t*>(part.data()), part.size()),
                          [&](uint32_t, uint64_t o, std::span<uint8_t> out) -> Result<void> {
                            std::memcpy(out.data(), layer.data() + o, out.size());
                            return {};
                          });
    ASSERT_TRUE(got.ok());
    const uint64_t want = off >= img.size() ? 0 : std::min<uint64_t>(part.size(), img.size() - off);
    ASSERT_EQ(*got, want);
    ASSERT_EQ(part.substr(0, want), img.substr(off < img.size() ? off : 0, want)) << off;
  }
}

TEST(ErofsLayout, TheEmbeddedInitIsASourceOfItsOwn) {
  TreeNodes t;
  t.nodes.push_back(make(S_IFDIR | 0755));
  Node init = make(S_IFREG | 0755, 0);
  init.layer = kInitSource;
  init.size = 5000;
  add(t, 0, "init", init);
  auto layout = lay_out(t, "seed");
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_LT(layout->meta.size(), 3 * 4096u);  // not copied into the layout
  const std::string program(5000, 'P');
  Reader r(whole_image(*layout, {{kInitSource, program}}));
  EXPECT_EQ(r.inode(r.list(r.inode(0), nullptr).at("init").first).data, program);
  auto back = decode_layout("k", encode_layout("k", *layout));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->extents.back().source, kInitSource);
}

TEST(ErofsLayout, LayoutFileRoundTripsAndRefusesDamage) {
  std::string layer;
  TreeNodes t = sample(&layer);
  auto layout = lay_out(t, "seed");
  ASSERT_TRUE(layout.ok());
  const std::string bytes = encode_layout("sha256:abc/erofs/key", *layout);
  EXPECT_EQ(layout_file_key(bytes), "sha256:abc/erofs/key");
  auto back = decode_layout("sha256:abc/erofs/key", bytes);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->size, layout->size);
  EXPECT_EQ(back->meta, layout->meta);
  EXPECT_EQ(back->extents.size(), layout->extents.size());
  EXPECT_EQ(back->layers, layout->layers);
  EXPECT_EQ(whole_image(*back, {{0, layer}}), whole_image(*layout, {{0, layer}}));
  EXPECT_FALSE(decode_layout("sha256:abc/erofs/other", bytes).has_value());
  std::string damaged = bytes;
  damaged[damaged.size() / 2] ^= 1;
  EXPECT_FALSE(decode_layout("sha256:abc/erofs/key", damaged).has_value());
  EXPECT_FALSE(
      decode_layout("sha256:abc/erofs/key", bytes.substr(0, bytes.size() - 10)).has_value());
}

// fsck.erofs (erofs-utils) checks the image and extracts it: the reference reader.
TEST(ErofsLayout, FsckErofsAccepts) {
  if (std::system("command -v fsck.erofs >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "fsck.erofs is not installed (Debian's erofs-utils; scripts/setup)";
  std::string layer;
  TreeNodes t = sample(&layer);
  auto layout = lay_out(t, "seed");
  ASSERT_TRUE(layout.ok());
  const auto dir =
      std::filesystem::temp_directory_path() / ("erofs_layout_test." + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto img = dir / "t.erofs";
  std::ofstream(img, std::ios::binary) << whole_image(*layout, {{0, layer}});
  const std::string cmd = "fsck.erofs --extract=" + (dir / "out").string() + " " + img.string() +
                          " >" + (dir / "log").string() + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream log(dir / "log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << text;
  std::ifstream extracted(dir / "out" / "sub" / "hard", std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(extracted)),
                      std::istreambuf_iterator<char>());
  EXPECT_EQ(content, layer.substr(100, 5000));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace imagefs::erofs::detail
