// The EROFS layout: inodes placed in the metadata area, data blocks assigned, metadata serialized,
// and the layout file's encoding (docs/EROFS_FORMAT.md, docs/STORE_FORMAT.md "EROFS layouts").
#include "erofs/layout.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cstring>

namespace imagefs::erofs::detail {

namespace {

constexpr uint64_t kSuperOffset = 1024;
constexpr uint32_t kSuperMagic = 0xE0F5E1E2;
constexpr uint32_t kMetaBlkaddr = 1;  // the metadata area (nid 0) starts at block 1
constexpr uint32_t kCompactSize = 32;
constexpr uint32_t kExtendedSize = 64;
constexpr uint32_t kDirentSize = 12;
constexpr uint32_t kMaxName = 255;
constexpr uint16_t kLayoutFlatPlain = 0;
constexpr uint16_t kLayoutFlatInline = 2;

enum FileType : uint8_t { ft_unknown, ft_reg, ft_dir, ft_chr, ft_blk, ft_fifo, ft_sock, ft_lnk };

uint8_t file_type(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return ft_reg;
    case S_IFDIR:
      return ft_dir;
    case S_IFCHR:
      return ft_chr;
    case S_IFBLK:
      return ft_blk;
    case S_IFIFO:
      return ft_fifo;
    case S_IFSOCK:
      return ft_sock;
    case S_IFLNK:
      return ft_lnk;
    default:
      return ft_unknown;
  }
}

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void put16(std::string& s, size_t at, uint16_t v) {
  s[at] = static_cast<char>(v & 0xff);
  s[at + 1] = static_cast<char>(v >> 8);
}
void put32(std::string& s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[at + static_cast<size_t>(i)] = static_cast<char>(v >> (8 * i));
}
void put64(std::string& s, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) s[at + static_cast<size_t>(i)] = static_cast<char>(v >> (8 * i));
}

// The xattr name prefixes EROFS knows (erofs_fs.h's EROFS_XATTR_INDEX_*): index and prefix. The
// two ACL names are whole names (an empty suffix).
struct Prefix {
  std::string_view prefix;
  uint8_t index;
  bool whole;
};
constexpr Prefix kPrefixes[] = {
    {"system.posix_acl_access", 2, true},
    {"system.posix_acl_default", 3, true},
    {"user.", 1, false},
    {"trusted.", 4, false},
    {"security.", 6, false},
};

// The inline xattr body of one inode: the 12-byte header then the entries, each 4-byte aligned.
Result<std::string> encode_xattrs(const std::vector<std::pair<std::string, std::string>>& xattrs) {
  if (xattrs.empty()) return std::string();
  std::string out(12, '\0');
  for (const auto& [name, value] : xattrs) {
    const Prefix* match = nullptr;
    for (const Prefix& p : kPrefixes) {
      if (p.whole ? name == p.prefix : name.starts_with(p.prefix)) {
        match = &p;
        break;
      }
    }
    if (match == nullptr)
      return make_error(EINVAL, "xattr \"" + name +
                                    "\" has no prefix EROFS can store (user., trusted., "
                                    "security., system.posix_acl_*)");
    const std::string_view suffix =
        std::string_view(name).substr(match->whole ? name.size() : match->prefix.size());
    if (suffix.size() > 255 || value.size() > 65535)
      return make_error(EINVAL, "xattr \"" + name + "\" is too long for EROFS");
    const size_t at = out.size();
    out.resize(at + 4);
    out[at] = static_cast<char>(suffix.size());
    out[at + 1] = static_cast<char>(match->index);
    put16(out, at + 2, static_cast<uint16_t>(value.size()));
    out += suffix;
    out += value;
    out.resize(align_up(out.size(), 4), '\0');
  }
  if ((out.size() - 12) / 4 + 1 > 0xffff)
    return make_error(EINVAL, "the xattrs of one file are too large for EROFS");
  return out;
}

// One inode as placed.
struct Placed {
  uint32_t node = 0;
  uint32_t parent = 0;  // directories: the node of ".."
  uint32_t nlink = 0;
  bool extended = false;
  uint16_t data_layout = kLayoutFlatPlain;
  std::string xattrs;  // the inline xattr body
  uint64_t size = 0;   // i_size
  // Directories: entries (name, node) sorted by name with "." and "..", cut into blocks.
  std::vector<std::pair<std::string, uint32_t>> entries;
  std::vector<size_t> block_starts;  // index into entries of each block's first entry
  uint64_t pos = 0;                  // byte offset in the metadata area
  uint32_t blkaddr = 0;
};

uint32_t inode_size(const Placed& p) { return p.extended ? kExtendedSize : kCompactSize; }

Result<void> check_name(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos)
    return make_error(EINVAL, "a directory entry has an invalid name \"" + name + "\"");
  if (name.size() > kMaxName)
    return make_error(ENAMETOOLONG, "the name \"" + name + "\" is longer than 255 bytes");
  return {};
}

// Serializes a directory's blocks (the whole directory data, i_size bytes).
std::string dir_data(const Placed& p, const std::vector<uint64_t>& nid_of,
                     const std::vector<Node>& nodes) {
  std::string out;
  for (size_t b = 0; b < p.block_starts.size(); ++b) {
    const size_t first = p.block_starts[b];
    const size_t last = b + 1 < p.block_starts.size() ? p.block_starts[b + 1] : p.entries.size();
    std::string block((last - first) * kDirentSize, '\0');
    uint32_t nameoff = static_cast<uint32_t>(block.size());
    for (size_t i = first; i < last; ++i) {
      const auto& [name, node] = p.entries[i];
      const size_t at = (i - first) * kDirentSize;
      put64(block, at, nid_of[node]);
      put16(block, at + 8, static_cast<uint16_t>(nameoff));
      block[at + 10] = static_cast<char>(file_type(nodes[node].mode));
      nameoff += static_cast<uint32_t>(name.size());
    }
    for (size_t i = first; i < last; ++i) block += p.entries[i].first;
    if (b + 1 < p.block_starts.size()) block.resize(kBlockSize, '\0');
    out += block;
  }
  return out;
}

}  // namespace

Result<Layout> lay_out(const TreeNodes& tree, std::string_view uuid_seed) {
  const std::vector<Node>& nodes = tree.nodes;
  if (nodes.empty() || !S_ISDIR(nodes[0].mode))
    return make_error(EINVAL, "the tree has no root directory");

  // Order: depth first from the root, each directory's children by name; a hardlinked node where
  // it is first reached. Links counted on the way.
  std::vector<uint32_t> order;
  std::vector<int64_t> placed_at(nodes.size(), -1);
  std::vector<uint32_t> links(nodes.size(), 0);
  std::vector<Placed> placed;
  {
    std::vector<std::pair<uint32_t, uint32_t>> stack{{0, 0}};  // node, parent
    while (!stack.empty()) {
      auto [n, parent] = stack.back();
      stack.pop_back();
      ++links[n];
      if (placed_at[n] >= 0) {
        if (S_ISDIR(nodes[n].mode))
          return make_error(EINVAL, "a directory is reached by two names");
        continue;
      }
      placed_at[n] = static_cast<int64_t>(placed.size());
      Placed p;
      p.node = n;
      p.parent = parent;
      placed.push_back(std::move(p));
      if (S_ISDIR(nodes[n].mode)) {
        // Reversed, so that the stack pops them in name order.
        for (auto it = nodes[n].children.rbegin(); it != nodes[n].children.rend(); ++it) {
          IMAGEFS_CHECK(check_name(it->first));
          if (it->second >= nodes.size()) return make_error(EINVAL, "a child node is missing");
          stack.emplace_back(it->second, n);
        }
      }
    }
  }

  // The superblock's build time: the most common mtime, so that most inodes can be compact
  // (a compact inode has no mtime of its own: the kernel gives it the build time).
  std::map<std::pair<int64_t, uint32_t>, uint64_t> mtimes;
  for (const Placed& p : placed) {
    const Node& n = nodes[p.node];
    if (n.mtime_sec >= 0) ++mtimes[{n.mtime_sec, n.mtime_nsec}];
  }
  std::pair<int64_t, uint32_t> build{0, 0};
  uint64_t best = 0;
  for (const auto& [t, count] : mtimes)
    if (count > best) best = count, build = t;

  // Sizes, formats and places in the metadata area.
  uint64_t pos = 0;
  for (Placed& p : placed) {
    const Node& n = nodes[p.node];
    IMAGEFS_TRY(xattrs, encode_xattrs(n.xattrs));
    p.xattrs = std::move(xattrs);
    if (S_ISDIR(n.mode)) {
      uint32_t subdirs = 0;
      p.entries.emplace_back(".", p.node);
      p.entries.emplace_back("..", p.parent);
      for (const auto& [name, child] : n.children) {
        p.entries.emplace_back(name, child);
        if (S_ISDIR(nodes[child].mode)) ++subdirs;
      }
      std::sort(p.entries.begin(), p.entries.end());
      p.nlink = 2 + subdirs;
      // Blocks hold whole entries: dirents first, then their names.
      uint64_t used = 0;
      uint64_t full_blocks = 0;
      for (size_t i = 0; i < p.entries.size(); ++i) {
        const uint64_t need = kDirentSize + p.entries[i].first.size();
        if (i == 0 || used + need > kBlockSize) {
          if (i != 0) ++full_blocks;
          p.block_starts.push_back(i);
          used = 0;
        }
        used += need;
      }
      p.size = full_blocks * kBlockSize + used;
    } else if (S_ISLNK(n.mode)) {
      p.size = n.bytes.size();
      p.nlink = links[p.node];
    } else if (S_ISREG(n.mode)) {
      p.size = n.layer == kMetaSource ? n.bytes.size() : n.size;
      p.nlink = links[p.node];
    } else {
      p.size = 0;
      p.nlink = links[p.node];
    }
    p.extended = n.uid > 0xffff || n.gid > 0xffff || p.nlink > 0xffff || p.size > 0xffffffffu ||
                 n.mtime_sec != build.first || n.mtime_nsec != build.second;
    const uint64_t head = inode_size(p) + p.xattrs.size();
    uint64_t remaining = kBlockSize - pos % kBlockSize;
    // The last partial block of a file, and a directory or symlink shorter than a block, go
    // inline after the inode and its xattrs (FLAT_INLINE) when they fit in its block, padding to
    // a new block when that wastes less than a block of their own would; the file's whole blocks
    // stay blocks of their own, mapped to the layers. A directory of more than a block keeps
    // every block (FLAT_PLAIN), as the kernel reads its entries block by block.
    const uint64_t tail = S_ISREG(n.mode)                        ? p.size % kBlockSize
                          : (S_ISDIR(n.mode) || S_ISLNK(n.mode)) ? p.size
                                                                 : 0;
    const bool inline_tail =
        tail > 0 && head + tail <= kBlockSize && (S_ISREG(n.mode) || p.size < kBlockSize);
    if (inline_tail && head + tail <= remaining) {
      p.data_layout = kLayoutFlatInline;
    } else if (inline_tail && remaining <= kBlockSize - tail) {
      p.data_layout = kLayoutFlatInline;
      pos = align_up(pos, kBlockSize);
    } else if (head > remaining && (head <= kBlockSize || inode_size(p) > remaining)) {
      pos = align_up(pos, kBlockSize);  // an inode and its xattrs never cross a block
    }
    p.pos = pos;
    pos += head + (p.data_layout == kLayoutFlatInline ? tail : 0);
    pos = align_up(pos, 32);
  }
  if (placed[0].pos != 0) return make_error(EINVAL, "the root inode is not first");

  std::vector<uint64_t> nid_of(nodes.size(), 0);
  for (const Placed& p : placed) nid_of[p.node] = p.pos / 32;

  // Data blocks after the metadata area, in inode order.
  const uint64_t meta_blocks = std::max<uint64_t>(1, align_up(pos, kBlockSize) / kBlockSize);
  uint64_t next = kMetaBlkaddr + meta_blocks;
  for (Placed& p : placed) {
    if (!S_ISDIR(nodes[p.node].mode) && !S_ISLNK(nodes[p.node].mode) &&
        !S_ISREG(nodes[p.node].mode))
      continue;
    // FLAT_INLINE: the whole blocks only (none for a directory or symlink of less than a block).
    const uint64_t blocks = p.data_layout == kLayoutFlatInline
                                ? p.size / kBlockSize
                                : align_up(p.size, kBlockSize) / kBlockSize;
    if (blocks == 0) continue;
    p.blkaddr = static_cast<uint32_t>(next);
    next += blocks;
    if (next > 0xffffffffu) return make_error(EFBIG, "the image would be larger than 16 TiB");
  }

  Layout out;
  out.layers = tree.layers;
  out.layer_sizes = tree.layer_sizes;
  out.layer_sizes.resize(out.layers.size(), 0);
  out.size = next * kBlockSize;
  out.inodes = placed.size();
  out.build_time = static_cast<uint64_t>(build.first);
  out.build_time_nsec = build.second;
  std::string& meta = out.meta;
  meta.assign((kMetaBlkaddr + meta_blocks) * kBlockSize, '\0');

  // The superblock (erofs_fs.h's struct erofs_super_block, 128 bytes at 1024).
  const size_t sb = kSuperOffset;
  put32(meta, sb + 0, kSuperMagic);
  put32(meta, sb + 4, 0);  // checksum: unused (feature_compat has no SB_CHKSUM)
  put32(meta, sb + 8, 0);  // feature_compat
  meta[sb + 12] = static_cast<char>(kBlockBits);
  meta[sb + 13] = 0;        // sb_extslots
  put16(meta, sb + 14, 0);  // root_nid
  put64(meta, sb + 16, out.inodes);
  put64(meta, sb + 24, out.build_time);
  put32(meta, sb + 32, out.build_time_nsec);
  put32(meta, sb + 36, static_cast<uint32_t>(next));  // blocks
  put32(meta, sb + 40, kMetaBlkaddr);
  put32(meta, sb + 44, 0);  // xattr_blkaddr: no shared xattrs
  const store::Digest uuid = store::Digest::of(uuid_seed);
  for (size_t i = 0; i < 16; ++i) {
    const std::string_view hex = uuid.hex().substr(i * 2, 2);
    meta[sb + 48 + i] = static_cast<char>(std::stoi(std::string(hex), nullptr, 16));
  }
  meta[sb + 48 + 6] = static_cast<char>((meta[sb + 48 + 6] & 0x0f) | 0x40);  // a v4-style UUID
  meta[sb + 48 + 8] = static_cast<char>((meta[sb + 48 + 8] & 0x3f) | 0x80);
  std::memcpy(meta.data() + sb + 64, "imagefs", 7);  // volume_name
  // feature_incompat 0, no compression, no extra devices, dirblkbits 0: the rest stays zero.

  // Inline file tails read from a layer or the embedded init: ranges of the metadata area that
  // come from elsewhere (the metadata extent is cut around them below).
  std::vector<Extent> tails;
  const uint64_t meta_area = meta.size();
  auto add_meta = [&](uint64_t blkaddr, std::string_view bytes) {
    out.extents.push_back(Extent{blkaddr * kBlockSize, bytes.size(), kMetaSource, meta.size()});
    meta += bytes;
  };

  uint32_t ino = 0;
  for (const Placed& p : placed) {
    const Node& n = nodes[p.node];
    std::string data;  // the directory's or symlink's bytes
    if (S_ISDIR(n.mode)) {
      data = dir_data(p, nid_of, nodes);
    } else if (S_ISLNK(n.mode)) {
      data = n.bytes;
    }
    uint32_t iu = 0;
    if (S_ISCHR(n.mode) || S_ISBLK(n.mode)) {
      // The kernel's new_encode_dev().
      iu = (n.rdev_minor & 0xff) | (n.rdev_major << 8) | ((n.rdev_minor & ~0xffu) << 12);
    } else {
      iu = p.blkaddr;  // FLAT_PLAIN: all the data; FLAT_INLINE: the whole blocks before the tail
    }
    const size_t at = kMetaBlkaddr * kBlockSize + p.pos;
    const uint16_t icount =
        p.xattrs.empty() ? 0 : static_cast<uint16_t>((p.xattrs.size() - 12) / 4 + 1);
    ++ino;
    if (p.extended) {
      put16(meta, at + 0, static_cast<uint16_t>(p.data_layout << 1 | 1));
      put16(meta, at + 2, icount);
      put16(meta, at + 4, static_cast<uint16_t>(n.mode));
      put64(meta, at + 8, p.size);
      put32(meta, at + 16, iu);
      put32(meta, at + 20, ino);
      put32(meta, at + 24, n.uid);
      put32(meta, at + 28, n.gid);
      put64(meta, at + 32, static_cast<uint64_t>(n.mtime_sec));
      put32(meta, at + 40, n.mtime_nsec);
      put32(meta, at + 44, p.nlink);
    } else {
      put16(meta, at + 0, static_cast<uint16_t>(p.data_layout << 1));
      put16(meta, at + 2, icount);
      put16(meta, at + 4, static_cast<uint16_t>(n.mode));
      put16(meta, at + 6, static_cast<uint16_t>(p.nlink));
      put32(meta, at + 8, static_cast<uint32_t>(p.size));
      put32(meta, at + 16, iu);
      put32(meta, at + 20, ino);
      put16(meta, at + 24, static_cast<uint16_t>(n.uid));
      put16(meta, at + 26, static_cast<uint16_t>(n.gid));
    }
    const size_t xat = at + inode_size(p);
    std::memcpy(meta.data() + xat, p.xattrs.data(), p.xattrs.size());
    if (p.data_layout == kLayoutFlatInline && !S_ISREG(n.mode)) {
      std::memcpy(meta.data() + xat + p.xattrs.size(), data.data(), data.size());
    } else if (p.data_layout == kLayoutFlatInline) {
      const uint64_t whole = p.size / kBlockSize * kBlockSize;
      const uint64_t tail = p.size - whole;
      const size_t tail_at = xat + p.xattrs.size();
      if (n.layer == kMetaSource) {
        if (whole > 0) add_meta(p.blkaddr, std::string_view(n.bytes).substr(0, whole));
        std::memcpy(meta.data() + tail_at, n.bytes.data() + whole, tail);
      } else {
        if (n.layer >= out.layers.size() && n.layer != kInitSource)
          return make_error(EINVAL, "a file names no layer");
        if (whole > 0)
          out.extents.push_back(
              Extent{uint64_t{p.blkaddr} * kBlockSize, whole, n.layer, n.layer_offset});
        tails.push_back(Extent{tail_at, tail, n.layer, n.layer_offset + whole});
      }
    } else if (p.size > 0) {
      if (S_ISDIR(n.mode) || S_ISLNK(n.mode)) {
        add_meta(p.blkaddr, data);
      } else if (S_ISREG(n.mode) && n.layer == kMetaSource) {
        add_meta(p.blkaddr, n.bytes);
      } else if (S_ISREG(n.mode)) {
        if (n.layer >= out.layers.size() && n.layer != kInitSource)
          return make_error(EINVAL, "a file names no layer");
        out.extents.push_back(
            Extent{uint64_t{p.blkaddr} * kBlockSize, p.size, n.layer, n.layer_offset});
      }
    }
  }
  // The metadata area, its bytes from `meta` (image offset = offset in meta) except the tails.
  std::sort(tails.begin(), tails.end(),
            [](const Extent& a, const Extent& b) { return a.offset < b.offset; });
  uint64_t from = 0;
  for (const Extent& t : tails) {
    if (t.offset > from) out.extents.push_back(Extent{from, t.offset - from, kMetaSource, from});
    out.extents.push_back(t);
    from = t.offset + t.length;
  }
  if (meta_area > from) out.extents.push_back(Extent{from, meta_area - from, kMetaSource, from});
  std::sort(out.extents.begin(), out.extents.end(),
            [](const Extent& a, const Extent& b) { return a.offset < b.offset; });
  return out;
}

Result<size_t> read_image(const Layout& layout, uint64_t offset, std::span<uint8_t> out,
                          const LayerReader& read_layer) {
  if (offset >= layout.size) return size_t{0};
  const size_t total = static_cast<size_t>(std::min<uint64_t>(out.size(), layout.size - offset));
  std::memset(out.data(), 0, total);
  // The first extent that ends after `offset`.
  auto it = std::upper_bound(layout.extents.begin(), layout.extents.end(), offset,
                             [](uint64_t off, const Extent& e) { return off < e.offset; });
  if (it != layout.extents.begin()) --it;
  const uint64_t end = offset + total;
  for (; it != layout.extents.end() && it->offset < end; ++it) {
    const uint64_t from = std::max(offset, it->offset);
    const uint64_t to = std::min(end, it->offset + it->length);
    if (from >= to) continue;
    std::span<uint8_t> dst = out.subspan(from - offset, to - from);
    const uint64_t src = it->source_offset + (from - it->offset);
    if (it->source == kMetaSource) {
      std::memcpy(dst.data(), layout.meta.data() + src, dst.size());
    } else {
      IMAGEFS_CHECK(read_layer(it->source, src, dst));
    }
  }
  return total;
}

namespace {

constexpr std::string_view kLayoutMagic = "imagefs-erofs-layout 1\n";
constexpr size_t kSumSize = 65;  // 64 hex digits and '\n'

void add64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s += static_cast<char>(v >> (8 * i));
}

struct Cursor {
  std::string_view rest;
  bool ok = true;
  uint64_t u64() {
    if (rest.size() < 8) {
      ok = false;
      return 0;
    }
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(rest[static_cast<size_t>(i)]);
    rest.remove_prefix(8);
    return v;
  }
  std::string_view bytes(uint64_t n) {
    if (rest.size() < n) {
      ok = false;
      return {};
    }
    std::string_view v = rest.substr(0, n);
    rest.remove_prefix(n);
    return v;
  }
};

}  // namespace

std::string encode_layout(std::string_view key, const Layout& layout) {
  std::string s(kLayoutMagic);
  s += key;
  s += '\n';
  add64(s, layout.size);
  add64(s, layout.inodes);
  add64(s, layout.build_time);
  add64(s, layout.build_time_nsec);
  add64(s, layout.layers.size());
  add64(s, layout.extents.size());
  add64(s, layout.meta.size());
  for (size_t i = 0; i < layout.layers.size(); ++i) {
    const std::string& d = layout.layers[i].str();
    add64(s, d.size());
    s += d;
    add64(s, i < layout.layer_sizes.size() ? layout.layer_sizes[i] : 0);
  }
  for (const Extent& e : layout.extents) {
    add64(s, e.offset);
    add64(s, e.length);
    add64(s, e.source);
    add64(s, e.source_offset);
  }
  s += layout.meta;
  s += store::Digest::of(s).hex();
  s += '\n';
  return s;
}

std::optional<std::string> layout_file_key(std::string_view bytes) {
  if (!bytes.starts_with(kLayoutMagic)) return std::nullopt;
  bytes.remove_prefix(kLayoutMagic.size());
  const size_t nl = bytes.find('\n');
  if (nl == std::string_view::npos) return std::nullopt;
  return std::string(bytes.substr(0, nl));
}

std::optional<Layout> decode_layout(std::string_view key, std::string_view bytes) {
  if (bytes.size() < kLayoutMagic.size() + kSumSize || bytes.back() != '\n') return std::nullopt;
  const std::string_view covered = bytes.substr(0, bytes.size() - kSumSize);
  if (bytes.substr(covered.size(), 64) != store::Digest::of(covered).hex()) return std::nullopt;
  std::optional<std::string> stored_key = layout_file_key(covered);
  if (!stored_key || *stored_key != key) return std::nullopt;
  Cursor c{covered.substr(kLayoutMagic.size() + key.size() + 1)};
  Layout l;
  l.size = c.u64();
  l.inodes = c.u64();
  l.build_time = c.u64();
  l.build_time_nsec = static_cast<uint32_t>(c.u64());
  const uint64_t layers = c.u64();
  const uint64_t extents = c.u64();
  const uint64_t meta = c.u64();
  if (!c.ok || layers > c.rest.size() || extents > c.rest.size() / 32 || meta > c.rest.size())
    return std::nullopt;
  for (uint64_t i = 0; i < layers; ++i) {
    const uint64_t n = c.u64();
    auto digest = store::Digest::parse(c.bytes(n));
    const uint64_t data_size = c.u64();
    if (!c.ok || !digest.ok()) return std::nullopt;
    l.layers.push_back(*digest);
    l.layer_sizes.push_back(data_size);
  }
  uint64_t end = 0;
  for (uint64_t i = 0; i < extents; ++i) {
    Extent e{c.u64(), c.u64(), 0, 0};
    const uint64_t source = c.u64();
    e.source_offset = c.u64();
    if (!c.ok || e.length == 0 || e.offset < end || e.offset + e.length > l.size)
      return std::nullopt;
    if (source == kMetaSource) {
      if (e.source_offset > meta || e.length > meta - e.source_offset) return std::nullopt;
    } else if (source >= layers && source != kInitSource) {
      return std::nullopt;
    }
    e.source = static_cast<uint32_t>(source);
    end = e.offset + e.length;
    l.extents.push_back(e);
  }
  l.meta = std::string(c.bytes(meta));
  if (!c.ok || !c.rest.empty()) return std::nullopt;
  return l;
}

}  // namespace imagefs::erofs::detail
