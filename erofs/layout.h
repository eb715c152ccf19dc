// Internal to erofs/ (not part of its interface): the layout of an EROFS image (docs/
// EROFS_FORMAT.md) computed from a tree of inodes: the metadata bytes (superblock, inodes, inline
// xattrs, directory blocks, symlink targets, host files' bytes) and an extent map that says which
// byte ranges of the image come from which layer data file at which offset. Everything not in an
// extent reads as zeros. The layout is all a reader needs: no file data is copied into it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "store/digest.h"

namespace imagefs::erofs::detail {

inline constexpr uint32_t kBlockBits = 12;
inline constexpr uint64_t kBlockSize = uint64_t{1} << kBlockBits;

// Where a byte range of the image comes from.
inline constexpr uint32_t kMetaSource = 0xffffffffu;  // Layout::meta
// The default init's program, which the imagefs binary embeds (init/default_init.h): kept out of
// every layout file (the layout key names its SHA-256).
inline constexpr uint32_t kInitSource = 0xfffffffeu;
struct Extent {
  uint64_t offset = 0;         // in the image
  uint64_t length = 0;         // > 0
  uint32_t source = 0;         // kMetaSource, kInitSource, or an index into Layout::layers
  uint64_t source_offset = 0;  // in Layout::meta or in that layer's data file
};

struct Layout {
  uint64_t size = 0;                  // the image's size, a multiple of kBlockSize
  std::vector<store::Digest> layers;  // the layer data files extents read
  std::vector<uint64_t> layer_sizes;  // each data file's size when laid out (checked on use)
  std::vector<Extent> extents;        // sorted by offset, not overlapping
  std::string meta;                   // the bytes of the kMetaSource extents
  // For dump.erofs and tests: what the superblock says.
  uint64_t inodes = 0;
  uint64_t build_time = 0;
  uint32_t build_time_nsec = 0;
};

// One inode of the tree to lay out. Hardlinks are one Node named by several directory entries.
struct Node {
  uint32_t mode = 0;  // with the type bits
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint32_t rdev_major = 0;
  uint32_t rdev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // full names ("user.x"), values
  // Regular files: `size` bytes from layer `layer` at `layer_offset`; when `layer` is
  // kInitSource, `size` bytes of the embedded default init; when it is kMetaSource, the bytes in
  // `bytes` (host files: init.conf, injected files, an --init file).
  uint64_t size = 0;
  uint32_t layer = kMetaSource;
  uint64_t layer_offset = 0;
  std::string bytes;                         // regular files from the host; the target of a symlink
  std::map<std::string, uint32_t> children;  // directories: name -> node index (sorted by bytes)
};

// The nodes of a tree: nodes[0] is the root directory; every other node is reachable from it
// through `children`. A node reached through several names is a hardlink group (not a directory).
struct TreeNodes {
  std::vector<Node> nodes;
  std::vector<store::Digest> layers;  // Node::layer indexes these
  std::vector<uint64_t> layer_sizes;  // the size of each layer's data file
};

// Lays out `tree` as an EROFS image. `uuid_seed` makes the superblock's UUID (same seed, same
// bytes). Errors: EINVAL for an xattr whose name has no EROFS prefix (user., trusted., security.,
// system.posix_acl_access/default) or that is too long, a directory reached twice, a name that is
// empty, "." or ".." or holds '/' or NUL; EFBIG for an image past 16 TiB.
Result<Layout> lay_out(const TreeNodes& tree, std::string_view uuid_seed);

// Copies the image's bytes at [offset, offset + out.size()) into `out`, calling `read_layer` for
// ranges in layer data files and the embedded init (source kInitSource); it must fill its whole
// span or fail. Reads past the end stop there;
// returns the bytes given.
using LayerReader =
    std::function<Result<void>(uint32_t layer, uint64_t offset, std::span<uint8_t> out)>;
Result<size_t> read_image(const Layout& layout, uint64_t offset, std::span<uint8_t> out,
                          const LayerReader& read_layer);

// The layout as a file of the store: a magic line, `key`, the layout, a SHA-256 of it all
// (docs/STORE_FORMAT.md, "EROFS layouts"); and back: nullopt for another key, another version,
// or a damaged file.
std::string encode_layout(std::string_view key, const Layout& layout);
std::optional<Layout> decode_layout(std::string_view key, std::string_view bytes);
// The key a layout file holds, without checking the rest (for gc's by-image accounting).
std::optional<std::string> layout_file_key(std::string_view bytes);

}  // namespace imagefs::erofs::detail
