// The merged root filesystem of one image: its layer indexes applied base first with OCI
// semantics (whiteouts, opaque directories, replacements, implicit parents, hardlinks across
// layers), computed lazily: a directory's merged listing is made when it is first looked up or
// listed, then kept. fs/ serves it; cpio/ archives it; `imagefs export` writes it out.
//
// Thread-safe: any number of threads may call any method at once. Inode numbers are stable for
// the life of a Tree (1 is the root); hardlinked paths share one inode number.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "overlay/layer_index.h"

namespace imagefs::overlay {

using Ino = uint64_t;
inline constexpr Ino kRootIno = 1;

struct Attr {
  Ino ino = 0;
  uint32_t mode = 0;   // with file type bits (S_IFREG, S_IFDIR, ...)
  uint32_t nlink = 1;  // hardlinked paths: how many are visible; directories: always 1 (see Tree)
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;  // regular: content bytes; symlink: target length; others 0
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint32_t rdev_major = 0;
  uint32_t rdev_minor = 0;
};

struct DirEntry {
  std::string name;
  Attr attr;
};

// Where a regular file's bytes are: for cpio/ to copy or compress content without going through
// read().
struct ContentSource {
  std::shared_ptr<const LayerIndex> layer;
  size_t entry = 0;  // index in `layer` of the entry holding the content
  uint64_t size = 0;
};

struct WalkEntry {
  std::string path;  // relative to the root, "" for the root itself
  Attr attr;
  // For a hardlink group, the first path visited in the walk; "" otherwise or for that first one.
  // A group is of any non-directory type: regular files, but also symlinks, devices and fifos
  // (link(2) links those too, and images do carry them).
  std::string hardlink_first;
};

// Directories report nlink 1, as overlayfs does for merged ones: the count of subdirectories is
// unknown until they are merged, and 1 tells tools like find(1) not to rely on it. The root's
// metadata is the topmost layer's "./" entry (LayerIndex::root()), else 0755 root:root mtime 0;
// a directory that only implicit entries make is likewise 0755 root:root mtime 0.
class Tree {
 public:
  // `layers` base first, as in the manifest. Hardlinks are resolved here, reading only the paths
  // they involve: EIO, naming the layer digest and the entry, for a hardlink whose target is
  // missing from the layers below it, a directory, or part of a cycle.
  static Result<std::shared_ptr<Tree>> open(std::vector<std::shared_ptr<const LayerIndex>> layers);
  virtual ~Tree() = default;

  // Errors: ENOENT no such entry, ENOTDIR parent is not a directory, EINVAL bad ino.
  virtual Result<Attr> lookup(Ino parent, std::string_view name) = 0;
  virtual Result<Attr> getattr(Ino ino) = 0;
  // Children of a directory by name ("." and ".." not included).
  virtual Result<std::vector<DirEntry>> readdir(Ino dir) = 0;
  virtual Result<std::string> readlink(Ino ino) = 0;  // EINVAL if not a symlink
  // Bytes read; fewer than out.size() only at the end of the file. EISDIR/EINVAL if not regular.
  virtual Result<size_t> read(Ino ino, uint64_t offset, std::span<uint8_t> out) = 0;
  virtual Result<std::vector<std::string>> listxattr(Ino ino) = 0;
  virtual Result<std::string> getxattr(Ino ino, std::string_view name) = 0;  // ENODATA if absent
  // A relative path ("usr/bin/python3"), resolved without following symlinks.
  virtual Result<Attr> resolve(std::string_view path) = 0;
  virtual Result<ContentSource> content(Ino ino) = 0;

  // Visits every entry, the root first, each directory before its contents, children in name
  // order. A visit error stops the walk and is returned.
  virtual Result<void> walk(const std::function<Result<void>(const WalkEntry&)>& visit) = 0;
};

}  // namespace imagefs::overlay
