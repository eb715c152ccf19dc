// The merged tree: an image's layer indexes applied top-down, one directory at a time, the first
// time that directory is looked up or listed.
//
// Shape of the implementation:
// - A node per inode number, immutable once published. Nodes live in segments that double in
//   size and never move, so getattr/read/readlink/xattrs take no lock: an inode number is only
//   handed out after its node is written and `published_` is released.
// - A directory's node carries the range of layers whose contents of it are visible, [lo, hi);
//   its listing is merged from exactly those layers under the directory's own std::once_flag.
//   The only lock, `nodes_mu_`, is held just to append the merged children's nodes.
// - Hardlinks are resolved when the Tree opens: every hardlink entry of every layer (usually a
//   few) is tied to the entry that made its inode (a regular file, or a symlink, device or fifo,
//   which link(2) links as well), and each such inode's link count is the number of its paths
//   that are visible in the merged view, found by resolving those paths alone (`winner`), never
//   by merging the whole tree.
#include "overlay/tree.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <deque>
#include <mutex>
#include <new>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "common/mutex.h"

namespace imagefs::overlay {
namespace {

constexpr uint32_t kNoLayer = 0xffffffffu;
// Ref::entry of a layer's root() entry, which is not one of its entry(i).
constexpr uint32_t kRootEntry = kNoEntry;
// Longest chain of hardlink entries followed to reach the entry that made the inode. Real chains
// are a few links long (tar links every name to the first one); the bound only stops a cycle of
// same-layer `hardlink_target`s, which a well-formed index never has.
constexpr int kMaxLinkChain = 1024;
constexpr uint32_t kDefaultDirMode = 0755;
// Symlinks followed while resolving one entry's parent directories, as Linux's MAXSYMLINKS.
constexpr int kMaxSymlinks = 40;
// Ref::entry of a directory that a redirected entry implies (an ancestor of where it goes),
// which no entry of its layer is: an implicit directory.
constexpr uint32_t kSyntheticEntry = kNoEntry - 1;

// One entry of one layer.
struct Ref {
  uint32_t layer = kNoLayer;
  uint32_t entry = 0;

  [[nodiscard]] bool valid() const { return layer != kNoLayer; }
  [[nodiscard]] uint64_t key() const { return (uint64_t{layer} << 32) | entry; }
  friend bool operator==(const Ref&, const Ref&) = default;
};

std::string_view base_name(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string join(std::string_view dir, std::string_view name) {
  std::string path;
  path.reserve(dir.size() + 1 + name.size());
  path.append(dir);
  if (!dir.empty()) path.push_back('/');
  path.append(name);
  return path;
}

std::string_view dir_name(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
}

// Whether `path` is `prefix` or below it ("" is the root, above everything); `rest` is what
// follows it ("" for the prefix itself).
bool under(std::string_view path, std::string_view prefix, std::string_view* rest) {
  if (prefix.empty()) {
    *rest = path;
    return true;
  }
  if (!path.starts_with(prefix)) return false;
  if (path.size() == prefix.size()) {
    *rest = {};
    return true;
  }
  if (path[prefix.size()] != '/') return false;
  *rest = path.substr(prefix.size() + 1);
  return true;
}

LayerEntry implicit_dir(std::string_view path) {
  LayerEntry entry;
  entry.path = path;
  entry.type = EntryType::directory;
  entry.implicit = true;
  entry.mode = kDefaultDirMode;
  return entry;
}

// Names that may appear in the merged tree. The ingest never produces the others; they are
// refused here too so that a whiteout marker can never be shown, whatever an index holds.
bool shown_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && !name.starts_with(".wh.") &&
         name.find('/') == std::string_view::npos;
}

uint32_t type_bits(EntryType type) {
  switch (type) {
    case EntryType::regular:
    case EntryType::hardlink:
      return S_IFREG;
    case EntryType::directory:
      return S_IFDIR;
    case EntryType::symlink:
      return S_IFLNK;
    case EntryType::char_device:
      return S_IFCHR;
    case EntryType::block_device:
      return S_IFBLK;
    case EntryType::fifo:
      return S_IFIFO;
    case EntryType::whiteout:
      break;
  }
  return 0;
}

const char* type_name(EntryType type) {
  switch (type) {
    case EntryType::regular:
      return "a regular file";
    case EntryType::directory:
      return "a directory";
    case EntryType::symlink:
      return "a symlink";
    case EntryType::hardlink:
      return "a hardlink";
    case EntryType::char_device:
      return "a character device";
    case EntryType::block_device:
      return "a block device";
    case EntryType::fifo:
      return "a fifo";
    case EntryType::whiteout:
      return "a whiteout";
  }
  return "an unknown entry";
}

// The attributes an entry gives, with `type` deciding the file type bits.
Attr attr_of(const LayerEntry& entry, EntryType type) {
  Attr attr;
  attr.mode = type_bits(type) | (entry.mode & 07777);
  attr.uid = entry.uid;
  attr.gid = entry.gid;
  attr.mtime_sec = entry.mtime_sec;
  attr.mtime_nsec = entry.mtime_nsec;
  return attr;
}

Attr default_dir_attr() {
  Attr attr;
  attr.mode = S_IFDIR | kDefaultDirMode;
  return attr;
}

struct Child {
  std::string_view name;  // a view into a layer index, which the Tree keeps alive
  Ino ino = 0;
};

struct DirState {
  std::string path;  // "" for the root
  // The layers whose contents of this directory are visible: [lo, hi). hi is one above the layer
  // that decided this path is a directory; lo is the first blocker's layer (+1 for a whiteout or a
  // non-directory, itself for an opaque directory) or the parent's lo.
  uint32_t lo = 0;
  uint32_t hi = 0;
  std::once_flag merged;
  std::vector<Child> children;  // sorted by name; written once, under `merged`
};

struct Node {
  Attr attr;
  Ref meta;               // whose xattrs apply; invalid for a directory with only implicit entries
  Ref content;            // regular files: the entry whose bytes are read
  std::string_view link;  // symlinks: the target, a view into a layer index
  std::unique_ptr<DirState> dir;  // directories only
};

// One entry of a name being merged: the layers that have it, top first.
struct Candidate {
  uint32_t layer = 0;
  uint32_t index = 0;
  LayerEntry entry;
  // A directory that a whiteout of its layer deleted before a redirect made it again: new, with
  // nothing of the directories below it (not even their metadata).
  bool fresh = false;
  // An implicit directory its layer has only for whiteouts and opaque markers below it: it
  // exists only where the layers below have a directory (extraction makes no parents for a
  // whiteout: `nodir/.wh.x` leaves nothing, as umoci does).
  bool conditional = false;
};

// Drops the conditional directories at the top of a name's candidates (top first) when what
// they lie on is not a directory: nothing (or a whiteout, or a file) is there for them.
void settle(std::vector<Candidate>& candidates) {
  size_t k = 0;
  while (k < candidates.size() && candidates[k].conditional) ++k;
  if (k == 0) return;
  if (k < candidates.size() && candidates[k].entry.type == EntryType::directory) return;
  candidates.erase(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(k));
}

class TreeImpl final : public Tree {
 public:
  explicit TreeImpl(std::vector<std::shared_ptr<const LayerIndex>> layers)
      : layers_(std::move(layers)) {}

  ~TreeImpl() override {
    MutexLock lock(nodes_mu_);
    for (uint64_t index = 0; index < allocated_; ++index) {
      auto [segment, offset] = locate(index);
      segments_[segment].load(std::memory_order_relaxed)[offset].~Node();
    }
    for (size_t segment = 0; segment < segments_.size(); ++segment) {
      Node* nodes = segments_[segment].load(std::memory_order_relaxed);
      if (nodes != nullptr) ::operator delete (nodes, std::align_val_t{alignof(Node)});
    }
  }

  TreeImpl(const TreeImpl&) = delete;
  TreeImpl& operator=(const TreeImpl&) = delete;

  Result<void> init();

  Result<Attr> lookup(Ino parent, std::string_view name) override {
    IMAGEFS_TRY(dir, dir_node(parent));
    const Node* child = find_child(*dir, name);
    if (child == nullptr) return no_entry(dir->dir->path, name);
    return child->attr;
  }

  Result<Attr> getattr(Ino ino) override {
    IMAGEFS_TRY(node, node_of(ino));
    return node->attr;
  }

  Result<std::vector<DirEntry>> readdir(Ino ino) override {
    IMAGEFS_TRY(dir, dir_node(ino));
    const std::vector<Child>& children = listing(*dir);
    std::vector<DirEntry> entries;
    entries.reserve(children.size());
    for (const Child& child : children) {
      entries.push_back(DirEntry{std::string(child.name), published(child.ino)->attr});
    }
    return entries;
  }

  Result<std::string> readlink(Ino ino) override {
    IMAGEFS_TRY(node, node_of(ino));
    if (!S_ISLNK(node->attr.mode)) {
      return make_error(EINVAL, "inode " + std::to_string(ino) + " is not a symlink");
    }
    return std::string(node->link);
  }

  Result<size_t> read(Ino ino, uint64_t offset, std::span<uint8_t> out) override {
    IMAGEFS_TRY(node, regular_node(ino));
    const uint64_t size = node->attr.size;
    if (offset >= size || out.empty()) return size_t{0};
    const auto length = static_cast<size_t>(std::min<uint64_t>(out.size(), size - offset));
    return layers_[node->content.layer]->read(node->content.entry, offset, out.first(length));
  }

  Result<std::vector<std::string>> listxattr(Ino ino) override {
    IMAGEFS_TRY(node, node_of(ino));
    std::vector<std::string> names;
    for (const Xattr& xattr : xattrs_of(node->meta)) names.emplace_back(xattr.name);
    return names;
  }

  Result<std::string> getxattr(Ino ino, std::string_view name) override {
    IMAGEFS_TRY(node, node_of(ino));
    for (const Xattr& xattr : xattrs_of(node->meta)) {
      if (xattr.name == name) return std::string(xattr.value);
    }
    return make_error(
        ENODATA, "no extended attribute " + std::string(name) + " on inode " + std::to_string(ino));
  }

  Result<Attr> resolve(std::string_view path) override {
    const Node* node = published(kRootIno);
    size_t start = 0;
    while (start <= path.size()) {
      size_t slash = path.find('/', start);
      if (slash == std::string_view::npos) slash = path.size();
      const std::string_view name = path.substr(start, slash - start);
      const std::string_view done = path.substr(0, start);  // what `node` is, with its '/'
      start = slash + 1;
      if (name.empty() || name == ".") continue;
      if (name == "..") {
        return make_error(EINVAL, "path " + std::string(path) + " is not clean (has ..)");
      }
      if (node->dir == nullptr) {
        return make_error(ENOTDIR, "cannot resolve " + std::string(path) + ": " +
                                       std::string(done.substr(0, done.size() - 1)) +
                                       " is not a directory");
      }
      const Node* child = find_child(*node, name);
      if (child == nullptr) return no_entry(node->dir->path, name);
      node = child;
    }
    return node->attr;
  }

  Result<ContentSource> content(Ino ino) override {
    IMAGEFS_TRY(node, regular_node(ino));
    return ContentSource{layers_[node->content.layer], node->content.entry, node->attr.size};
  }

  Result<void> walk(const std::function<Result<void>(const WalkEntry&)>& visit) override;

 private:
  struct Group {
    Ref file;            // the entry that made the inode: its type, metadata and bytes
    uint32_t nlink = 0;  // its visible paths
  };

  // Node storage: segment k holds 2^(k + kFirstSegmentBits) nodes; node index = ino - 1.
  static constexpr unsigned kFirstSegmentBits = 10;
  static std::pair<size_t, uint64_t> locate(uint64_t index) {
    const uint64_t biased = index + (uint64_t{1} << kFirstSegmentBits);
    const auto width = static_cast<size_t>(std::bit_width(biased));  // > kFirstSegmentBits
    const size_t segment = width > kFirstSegmentBits ? width - 1 - kFirstSegmentBits : 0;
    return {segment, biased - (uint64_t{1} << (segment + kFirstSegmentBits))};
  }

  // The node of a published inode number (anything a lookup, readdir or walk has returned).
  const Node* published(Ino ino) const {
    auto [segment, offset] = locate(ino - 1);
    return &segments_[segment].load(std::memory_order_acquire)[offset];
  }

  // Appends a node; it is visible to other threads after the next store to `published_`.
  Ino append_node(Node&& node) REQUIRES(nodes_mu_) {
    const uint64_t index = allocated_;
    auto [segment, offset] = locate(index);
    Node* nodes = segments_[segment].load(std::memory_order_relaxed);
    if (nodes == nullptr) {
      // Raw storage: capacity not yet used is never touched, so it costs address space only.
      const size_t count = size_t{1} << (segment + kFirstSegmentBits);
      nodes = static_cast<Node*>(
          ::operator new (count * sizeof(Node), std::align_val_t{alignof(Node)}));
      segments_[segment].store(nodes, std::memory_order_release);
    }
    Node* slot = new (&nodes[offset]) Node(std::move(node));
    ++allocated_;
    slot->attr.ino = index + 1;
    return slot->attr.ino;
  }

  Result<const Node*> node_of(Ino ino) const {
    if (ino == 0 || ino > published_.load(std::memory_order_acquire)) {
      return make_error(EINVAL, "no inode " + std::to_string(ino) + " in this tree");
    }
    return published(ino);
  }

  Result<const Node*> dir_node(Ino ino) const {
    IMAGEFS_TRY(node, node_of(ino));
    if (node->dir == nullptr) {
      return make_error(ENOTDIR, "inode " + std::to_string(ino) + " is not a directory");
    }
    return node;
  }

  Result<const Node*> regular_node(Ino ino) const {
    IMAGEFS_TRY(node, node_of(ino));
    if (node->dir != nullptr) {
      return make_error(EISDIR, "inode " + std::to_string(ino) + " is a directory");
    }
    if (!S_ISREG(node->attr.mode)) {
      return make_error(EINVAL, "inode " + std::to_string(ino) + " is not a regular file");
    }
    return node;
  }

  [[nodiscard]] std::vector<Xattr> xattrs_of(Ref meta) const {
    if (!meta.valid()) return {};
    const LayerIndex& layer = *layers_[meta.layer];
    return meta.entry == kRootEntry ? layer.root_xattrs() : layer.xattrs(meta.entry);
  }

  // The lowest layer whose contents of the root show in the view of layers [0, top): the topmost
  // one with an opaque root (a `.wh..wh..opq` at the top of its tar), or the base.
  [[nodiscard]] uint32_t root_lo(uint32_t top) const {
    for (uint32_t layer = top; layer-- > 0;) {
      std::optional<LayerEntry> root = layers_[layer]->root();
      if (root && root->opaque) return layer;
    }
    return 0;
  }

  static Error no_entry(std::string_view dir, std::string_view name) {
    return make_error(ENOENT, "no " + join(dir, name) + " in the image");
  }

  const std::vector<Child>& listing(const Node& dir) {
    std::call_once(dir.dir->merged, [&] { merge(*dir.dir); });
    return dir.dir->children;
  }

  const Node* find_child(const Node& dir, std::string_view name) {
    const std::vector<Child>& children = listing(dir);
    auto it =
        std::lower_bound(children.begin(), children.end(), name,
                         [](const Child& child, std::string_view n) { return child.name < n; });
    if (it == children.end() || it->name != name) return nullptr;
    return published(it->ino);
  }

  void merge(DirState& dir) EXCLUDES(nodes_mu_);
  std::optional<Node> make_child(const DirState& parent, std::string_view name,
                                 const std::vector<Candidate>& candidates, uint32_t* group) const;
  [[nodiscard]] static Node leaf_node(Ref ref, const LayerEntry& entry);
  [[nodiscard]] std::optional<Ref> winner(std::string_view path, uint32_t top,
                                          bool skip_top_implicit = false) const;
  [[nodiscard]] LayerEntry entry_of(Ref ref) const;
  [[nodiscard]] LayerEntry linked_entry(Ref ref) const;
  [[nodiscard]] int owner(uint32_t layer, std::string_view path) const;
  [[nodiscard]] bool hidden(uint32_t layer, std::string_view path) const;
  [[nodiscard]] std::optional<Candidate> vfind(uint32_t layer, std::string_view path) const;
  [[nodiscard]] std::vector<Candidate> vchildren(uint32_t layer, std::string_view dir) const;
  [[nodiscard]] bool conditional(uint32_t layer, uint32_t index) const;
  void find_conditional(uint32_t layer, const std::vector<uint32_t>& implicit);
  [[nodiscard]] std::string vpath(uint32_t layer, std::string_view path) const;
  struct Resolved {
    std::string path;         // the directory, symlinks followed ("" the root)
    bool under_file = false;  // a component is neither a directory nor a symlink
  };
  Result<Resolved> resolve_dir(std::string_view path, uint32_t top, bool skip_top_implicit) const;
  Result<void> find_redirects(uint32_t layer);
  Result<Ref> link_file(Ref link, std::unordered_map<uint64_t, Ref>& files, int depth) const;
  [[nodiscard]] Error bad_link(Ref link, const std::string& why) const;

  const std::vector<std::shared_ptr<const LayerIndex>> layers_;

  // An implicit directory of a layer whose path leads through a symlink of the view below it (or
  // of the layer itself): its entries belong where the symlink leads (docs/LAYER_FORMAT.md,
  // "Entries under symlinked directories"). Fixed when the Tree opens, read without a lock.
  struct Redirect {
    std::string_view src;  // the implicit directory's path, a view into the layer index
    std::string_view dst;  // where it resolves ("" the root), a view into `names_`
  };
  std::vector<std::vector<Redirect>> redirects_;  // per layer
  // Per layer, the indexes of its conditional directories (Candidate::conditional), sorted.
  // Fixed when the Tree opens.
  std::vector<std::vector<uint32_t>> conditional_;
  std::deque<std::string> names_;  // never moves an element

  // Hardlinked files, fixed when the Tree opens and read without a lock afterwards.
  std::vector<Group> groups_;
  std::unordered_map<uint64_t, uint32_t> group_of_file_;  // the inode's entry -> group
  std::unordered_map<uint64_t, uint32_t> group_of_link_;  // hardlink entry -> group

  Mutex nodes_mu_;
  uint64_t allocated_ GUARDED_BY(nodes_mu_) = 0;
  std::vector<Ino> group_ino_ GUARDED_BY(nodes_mu_);  // 0 until a path of it is merged
  std::array<std::atomic<Node*>, 64 - kFirstSegmentBits> segments_{};
  std::atomic<uint64_t> published_{0};
};

Result<void> TreeImpl::init() {
  if (layers_.size() >= kNoLayer) return make_error(EINVAL, "too many layers");
  redirects_.resize(layers_.size());
  conditional_.resize(layers_.size());
  std::vector<Ref> links;
  for (uint32_t layer = 0; layer < layers_.size(); ++layer) {
    if (layers_[layer] == nullptr)
      return make_error(EINVAL, "layer " + std::to_string(layer) + " is null");
    const LayerIndex& index = *layers_[layer];
    if (index.size() >= kNoEntry) {
      return make_error(EINVAL, "layer " + index.digest().str() + " has too many entries");
    }
    // A pass over every entry: LayerIndex has no list of its hardlinks. Decoding a record is
    // cheap next to merging, and no directory is merged here.
    const auto size = static_cast<uint32_t>(index.size());
    std::vector<uint32_t> implicit;
    for (uint32_t entry = 0; entry < size; ++entry) {
      const LayerEntry e = index.entry(entry);
      if (e.type == EntryType::hardlink) links.push_back(Ref{layer, entry});
      if (e.type == EntryType::directory && e.implicit) implicit.push_back(entry);
    }
    if (!implicit.empty()) find_conditional(layer, implicit);
    IMAGEFS_CHECK(find_redirects(layer));
  }

  std::unordered_map<uint64_t, Ref> files;  // hardlink entry -> the entry that made its inode
  for (const Ref& link : links) {
    IMAGEFS_TRY(file, link_file(link, files, 0));
    auto [it, added] =
        group_of_file_.try_emplace(file.key(), static_cast<uint32_t>(groups_.size()));
    if (added) groups_.push_back(Group{file, 0});
    group_of_link_.emplace(link.key(), it->second);
  }
  const auto top = static_cast<uint32_t>(layers_.size());
  auto visible = [&](Ref ref) {
    const std::string path = vpath(ref.layer, layers_[ref.layer]->entry(ref.entry).path);
    return winner(path, top) == std::optional<Ref>(ref);
  };
  for (Group& group : groups_) group.nlink += visible(group.file) ? 1 : 0;
  for (const Ref& link : links)
    groups_[group_of_link_.at(link.key())].nlink += visible(link) ? 1 : 0;

  // The root: contents from above the topmost opaque root, metadata from the topmost layer with a
  // "./" entry (an opaque marker hides contents, not the directory itself).
  Node root;
  root.attr = default_dir_attr();
  for (uint32_t layer = top; layer-- > 0;) {
    std::optional<LayerEntry> entry = layers_[layer]->root();
    if (entry && !entry->implicit) {
      root.attr = attr_of(*entry, EntryType::directory);
      root.meta = Ref{layer, kRootEntry};
      break;
    }
  }
  root.dir = std::make_unique<DirState>();
  root.dir->lo = root_lo(top);
  root.dir->hi = top;
  MutexLock lock(nodes_mu_);
  group_ino_.assign(groups_.size(), 0);
  append_node(std::move(root));
  published_.store(allocated_, std::memory_order_release);
  return {};
}

// The layer's implicit directories with nothing but whiteouts, opaque markers and other such
// directories below them: every entry that is real (anything but a whiteout or an implicit
// directory) marks its implicit ancestors; the others are conditional. One find() per run of
// siblings whose parent is implicit (entries are sorted by parent).
void TreeImpl::find_conditional(uint32_t layer, const std::vector<uint32_t>& implicit) {
  const LayerIndex& index = *layers_[layer];
  std::vector<bool> real(index.size(), false);
  std::string_view last_parent;
  bool have_last = false;
  const auto size = static_cast<uint32_t>(index.size());
  for (uint32_t i = 0; i < size; ++i) {
    const LayerEntry e = index.entry(i);
    if (e.type == EntryType::whiteout || (e.type == EntryType::directory && e.implicit)) continue;
    std::string_view up = dir_name(e.path);
    if (have_last && up == last_parent) continue;
    have_last = true;
    last_parent = up;
    for (; !up.empty(); up = dir_name(up)) {
      std::optional<size_t> at = index.find(up);
      if (!at || real[*at]) break;
      const LayerEntry parent = index.entry(*at);
      if (parent.type != EntryType::directory || !parent.implicit) break;
      real[*at] = true;
    }
  }
  for (uint32_t i : implicit) {
    if (!real[i]) conditional_[layer].push_back(i);
  }
}

bool TreeImpl::conditional(uint32_t layer, uint32_t index) const {
  const std::vector<uint32_t>& list = conditional_[layer];
  return !list.empty() && std::binary_search(list.begin(), list.end(), index);
}

Error TreeImpl::bad_link(Ref link, const std::string& why) const {
  const LayerIndex& index = *layers_[link.layer];
  const LayerEntry entry = index.entry(link.entry);
  return make_error(EIO, "layer " + index.digest().str() + ": hardlink " + std::string(entry.path) +
                             " -> " + std::string(entry.link) + ": " + why);
}

// The entry that made the inode a hardlink entry shares: its same-layer target, or what its path
// names in the merged view of the layers below it (as `umoci unpack` finds it when it links).
// Any non-directory will do, as for link(2): a regular file, a symlink, a device or a fifo.
Result<Ref> TreeImpl::link_file(Ref link, std::unordered_map<uint64_t, Ref>& files,
                                int depth) const {
  if (auto it = files.find(link.key()); it != files.end()) return it->second;
  if (depth > kMaxLinkChain) return bad_link(link, "hardlinks to hardlinks form a cycle");
  const LayerIndex& index = *layers_[link.layer];
  const LayerEntry entry = index.entry(link.entry);
  Ref target;
  if (entry.hardlink_target != kNoEntry) {
    if (entry.hardlink_target >= index.size()) {
      return bad_link(link, "its target index is out of range");
    }
    target = Ref{link.layer, entry.hardlink_target};
  } else {
    // Its target's parents resolve through the symlinks of the layers below, as extraction
    // resolves them when it links.
    std::optional<Ref> found;
    auto parent = resolve_dir(dir_name(entry.link), link.layer, false);
    if (!parent.ok()) return bad_link(link, parent.error().message);
    if (!parent->under_file) found = winner(join(parent->path, base_name(entry.link)), link.layer);
    if (!found) return bad_link(link, "the target is not in the layers below");
    target = *found;
  }
  const EntryType type = entry_of(target).type;
  Ref file;
  if (type == EntryType::hardlink) {
    IMAGEFS_TRY(chained, link_file(target, files, depth + 1));
    file = chained;
  } else if (type == EntryType::directory || type == EntryType::whiteout) {
    return bad_link(
        link, std::string("the target is ") + type_name(type) + ", which cannot be hardlinked");
  } else {
    file = target;
  }
  files.emplace(link.key(), file);
  return file;
}

// The entry that `path` shows in the merged view of layers [0, top), or none when the path is
// hidden, missing, or under a non-directory. The same rules as merge(), one path at a time; used
// only for the paths hardlinks involve.
std::optional<Ref> TreeImpl::winner(std::string_view path, uint32_t top,
                                    bool skip_top_implicit) const {
  uint32_t lo = root_lo(top);
  uint32_t hi = top;
  size_t start = 0;
  while (true) {
    const size_t slash = path.find('/', start);
    const bool last = slash == std::string_view::npos;
    const std::string_view prefix = last ? path : path.substr(0, slash);
    if (!shown_name(prefix.substr(start))) return std::nullopt;
    std::optional<Ref> found;
    std::optional<Ref> pending;  // the topmost conditional directory, until known to exist
    uint32_t pending_lo = kNoLayer;
    uint32_t next_lo = lo;
    for (uint32_t layer = hi; layer-- > lo;) {
      const std::optional<Candidate> candidate = vfind(layer, prefix);
      if (!candidate) continue;
      const LayerEntry& entry = candidate->entry;
      const bool is_dir = entry.type == EntryType::directory;
      if (skip_top_implicit && last && layer + 1 == top && is_dir && entry.implicit) continue;
      if (!found) {
        if (candidate->conditional) {
          if (!pending) pending = Ref{layer, candidate->index};
          if (entry.opaque && pending_lo == kNoLayer) pending_lo = layer;
          continue;
        }
        if (entry.type == EntryType::whiteout) return std::nullopt;
        if (!is_dir) return last ? std::optional<Ref>(Ref{layer, candidate->index}) : std::nullopt;
        found = pending ? *pending : Ref{layer, candidate->index};
        if (last) return found;
        if (pending_lo != kNoLayer) {
          next_lo = pending_lo;
          break;
        }
      } else if (!is_dir) {
        next_lo = layer + 1;
        break;
      }
      if (entry.opaque) {
        next_lo = layer;
        break;
      }
    }
    if (!found) return std::nullopt;
    lo = next_lo;
    hi = found->layer + 1;
    start = slash + 1;
  }
}

LayerEntry TreeImpl::entry_of(Ref ref) const {
  if (ref.entry == kSyntheticEntry) return implicit_dir({});
  if (ref.entry == kRootEntry) return layers_[ref.layer]->root().value_or(implicit_dir({}));
  return layers_[ref.layer]->entry(ref.entry);
}

// The entry at `ref` with a hardlink followed to the entry that made its inode (what a path
// walk sees: a hardlinked symlink is a symlink); a broken hardlink stays a hardlink, which
// open() reports later.
LayerEntry TreeImpl::linked_entry(Ref ref) const {
  LayerEntry entry = entry_of(ref);
  for (int depth = 0; entry.type == EntryType::hardlink && depth < kMaxLinkChain; ++depth) {
    if (entry.hardlink_target != kNoEntry) {
      if (entry.hardlink_target >= layers_[ref.layer]->size()) break;
      ref = Ref{ref.layer, entry.hardlink_target};
    } else {
      auto parent = resolve_dir(dir_name(entry.link), ref.layer, false);
      if (!parent.ok() || parent->under_file) break;
      std::optional<Ref> found = winner(join(parent->path, base_name(entry.link)), ref.layer);
      if (!found) break;
      ref = *found;
    }
    entry = entry_of(ref);
  }
  return entry;
}

// The redirect that moves the layer's entry at `path`: the one of the longest `src` that is the
// path or above it (a redirected directory's contents may be redirected again, deeper); -1 if
// none.
int TreeImpl::owner(uint32_t layer, std::string_view path) const {
  int best = -1;
  std::string_view rest;
  const std::vector<Redirect>& redirects = redirects_[layer];
  for (size_t i = 0; i < redirects.size(); ++i) {
    if (!under(path, redirects[i].src, &rest)) continue;
    if (best < 0 || redirects[i].src.size() > redirects[static_cast<size_t>(best)].src.size()) {
      best = static_cast<int>(i);
    }
  }
  return best;
}

// Whether the layer's entry at `path` moved elsewhere: a redirected directory or below it.
bool TreeImpl::hidden(uint32_t layer, std::string_view path) const {
  return owner(layer, path) >= 0;
}

// Where the layer's entry at `path` shows in the merged tree: its path with a redirected
// directory replaced by where it leads.
std::string TreeImpl::vpath(uint32_t layer, std::string_view path) const {
  const int by = owner(layer, path);
  if (by < 0) return std::string(path);
  const Redirect& redirect = redirects_[layer][static_cast<size_t>(by)];
  std::string_view rest;
  under(path, redirect.src, &rest);
  return rest.empty() ? std::string(redirect.dst) : join(redirect.dst, rest);
}

// The layer's entry that shows at merged `path`, redirects applied (as vchildren() chooses it);
// LayerIndex::find() for a layer without redirects.
std::optional<Candidate> TreeImpl::vfind(uint32_t layer, std::string_view path) const {
  const LayerIndex& index = *layers_[layer];
  if (redirects_[layer].empty()) {
    std::optional<size_t> found = index.find(path);
    if (!found) return std::nullopt;
    const auto at = static_cast<uint32_t>(*found);
    return Candidate{layer, at, index.entry(at), false, conditional(layer, at)};
  }
  if (path.empty()) return std::nullopt;
  const std::string_view name = base_name(path);
  for (const Candidate& candidate : vchildren(layer, dir_name(path))) {
    if (base_name(candidate.entry.path) == name) return candidate;
  }
  return std::nullopt;
}

// The layer's entries that show in merged directory `dir`, by name, with the same precedence as
// vfind(): for the layers with redirects.
std::vector<Candidate> TreeImpl::vchildren(uint32_t layer, std::string_view dir) const {
  const LayerIndex& index = *layers_[layer];
  std::vector<Candidate> out;
  // The entries of `source` that redirect `by` (-1: none) moves, and no other one.
  auto add_range = [&](std::string_view source, int by) {
    auto [first, last] = index.children(source);
    for (size_t i = first; i < last; ++i) {
      LayerEntry entry = index.entry(i);
      if (owner(layer, entry.path) != by) continue;
      const auto at = static_cast<uint32_t>(i);
      out.push_back(Candidate{layer, at, entry, false, conditional(layer, at)});
    }
  };
  if (!hidden(layer, dir)) add_range(dir, -1);
  std::string_view rest;
  for (size_t i = 0; i < redirects_[layer].size(); ++i) {
    const Redirect& redirect = redirects_[layer][i];
    if (!under(dir, redirect.dst, &rest)) continue;
    add_range(rest.empty() ? std::string(redirect.src) : join(redirect.src, rest),
              static_cast<int>(i));
  }
  for (const Redirect& redirect : redirects_[layer]) {
    if (redirect.dst.size() <= dir.size()) continue;
    if (dir.empty() || (redirect.dst.starts_with(dir) && redirect.dst[dir.size()] == '/')) {
      const size_t end = redirect.dst.find('/', dir.empty() ? 0 : dir.size() + 1);
      // The redirected directory's entry (where it leads itself), or the directories on the way
      // there, which exist as surely as it does.
      const std::optional<size_t> src = index.find(redirect.src);
      const bool weak = src && conditional(layer, static_cast<uint32_t>(*src));
      if (src && end == std::string_view::npos) {
        LayerEntry entry = index.entry(*src);
        entry.path = redirect.dst;  // its name is where it leads
        // Its `opaque` goes with it: a marker under the symlink empties where it leads, as
        // umoci and containerd apply it (docs/LAYER_FORMAT.md).
        out.push_back(Candidate{layer, static_cast<uint32_t>(*src), entry, false, weak});
      } else {
        out.push_back(Candidate{layer, kSyntheticEntry, implicit_dir(redirect.dst.substr(0, end)),
                                false, weak});
      }
    }
  }
  // Of a name given twice, the first added stands (the layer's own entry, then the redirects in
  // the order they were found), except that a whiteout yields to what a redirect brings: the
  // layer's whiteouts act before its entries (a directory then hides what was below it).
  std::stable_sort(out.begin(), out.end(), [](const Candidate& a, const Candidate& b) {
    return base_name(a.entry.path) < base_name(b.entry.path);
  });
  std::vector<Candidate> chosen;
  for (size_t first = 0; first < out.size();) {
    size_t last = first + 1;
    while (last < out.size() &&
           base_name(out[last].entry.path) == base_name(out[first].entry.path)) {
      ++last;
    }
    // (A conditional directory does not make anything again: the whiteout stands.)
    size_t pick = first;
    if (out[first].entry.type == EntryType::whiteout) {
      for (size_t other = first + 1; other < last; ++other) {
        if (out[other].entry.type != EntryType::whiteout && !out[other].conditional) {
          pick = other;
          break;
        }
      }
    }
    Candidate candidate = out[pick];
    candidate.fresh = pick != first && candidate.entry.type == EntryType::directory;
    if (candidate.conditional) {
      // Real if any of its names is.
      for (size_t other = first; other < last; ++other) {
        if (out[other].entry.type == EntryType::directory && !out[other].conditional) {
          candidate.conditional = false;
        }
      }
    }
    if (candidate.entry.type == EntryType::directory) {
      // Hidden below by a whiteout of the layer, or by an opaque marker on any of its names.
      for (size_t other = first; other < last; ++other) {
        const LayerEntry& entry = out[other].entry;
        if (entry.type == EntryType::whiteout ||
            (entry.type == EntryType::directory && entry.opaque)) {
          candidate.entry.opaque = true;
        }
      }
    }
    chosen.push_back(candidate);
    first = last;
  }
  return chosen;
}

// Resolves a directory path in the merged view of layers [0, top), following every symlink on
// the way inside the image root: an absolute target starts again at the root, ".." stops at the
// root. A missing component is a directory-to-be. `skip_top_implicit`: layer top - 1's implicit
// directories over symlinks are not looked at, so that the symlinks show (the layer being
// placed).
Result<TreeImpl::Resolved> TreeImpl::resolve_dir(std::string_view path, uint32_t top,
                                                 bool skip_top_implicit) const {
  std::vector<std::string> pending;  // components still to walk, the next one last
  auto push_components = [&](std::string_view text) {
    size_t end = text.size();
    while (true) {
      const size_t slash = text.rfind('/', end == 0 ? 0 : end - 1);
      const size_t begin = slash == std::string_view::npos ? 0 : slash + 1;
      if (end > begin) pending.emplace_back(text.substr(begin, end - begin));
      if (slash == std::string_view::npos || slash == 0) break;
      end = slash;
    }
  };
  push_components(path);
  Resolved resolved;
  int links = 0;
  while (!pending.empty()) {
    const std::string name = std::move(pending.back());
    pending.pop_back();
    if (name.empty() || name == ".") continue;
    if (name == "..") {
      resolved.path = std::string(dir_name(resolved.path));
      continue;
    }
    std::string next = join(resolved.path, name);
    std::optional<Ref> found = winner(next, top);
    if (found && skip_top_implicit && found->layer + 1 == top) {
      // The layer's implicit directory over a symlink is where the symlink leads; over anything
      // else it is a directory of its own (it replaces a file).
      const LayerEntry entry = entry_of(*found);
      if (entry.type == EntryType::directory && entry.implicit) {
        std::optional<Ref> below = winner(next, top, true);
        if (below && linked_entry(*below).type == EntryType::symlink) found = below;
      } else if (entry.type != EntryType::directory &&
                 linked_entry(*found).type != EntryType::symlink) {
        // The layer's own file there replaces what its entries went into: an extraction succeeds
        // only where the file comes later in the tar (before it, mkdir fails), so the walk goes
        // on in the layers below, and the file hides what it made (docs/LAYER_FORMAT.md).
        found = winner(next, top - 1);
      }
    }
    if (found) {
      const LayerEntry entry = linked_entry(*found);
      if (entry.type == EntryType::symlink) {
        if (++links > kMaxSymlinks) {
          return make_error(ELOOP, "too many levels of symbolic links (a loop, or more than " +
                                       std::to_string(kMaxSymlinks) + ") resolving " +
                                       std::string(path));
        }
        if (entry.link.starts_with('/')) resolved.path.clear();
        push_components(entry.link);
        continue;
      }
      if (entry.type != EntryType::directory) {
        resolved.under_file = true;
        resolved.path = std::move(next);
        return resolved;
      }
    }
    resolved.path = std::move(next);
  }
  return resolved;
}

// The layer's implicit directories that lead through a symlink, in path order (a directory
// before its contents), each resolved in the view of the layers below and of this layer's
// redirects found so far. An explicit directory entry replaces a symlink instead, as extraction
// does (docs/LAYER_FORMAT.md), and so is never redirected.
Result<void> TreeImpl::find_redirects(uint32_t layer) {
  const LayerIndex& index = *layers_[layer];
  const auto size = static_cast<uint32_t>(index.size());
  for (uint32_t i = 0; i < size; ++i) {
    const LayerEntry entry = index.entry(i);
    if (entry.type != EntryType::directory || !entry.implicit) continue;
    // Where its parent leads already (below a redirect found before it, or where it is).
    const std::string at = vpath(layer, entry.path);
    // Cheap first: only a symlink at that very path moves it.
    std::optional<Ref> below = winner(at, layer + 1, true);
    if (!below || linked_entry(*below).type != EntryType::symlink) continue;
    auto resolved = resolve_dir(at, layer + 1, true);
    if (!resolved.ok()) {
      return make_error(resolved.error().code, "layer " + index.digest().str() +
                                                   ": entries under " + std::string(entry.path) +
                                                   ": " + resolved.error().message);
    }
    if (resolved->under_file) {
      // As umoci and docker fail their extraction (mkdir: not a directory).
      return make_error(ENOTDIR, "layer " + index.digest().str() + ": entries under " +
                                     std::string(entry.path) + ": it leads to " + resolved->path +
                                     ", which is not a directory");
    }
    names_.push_back(std::move(resolved->path));
    redirects_[layer].push_back(Redirect{entry.path, names_.back()});
  }
  return {};
}

// The node a name shows, from its entries in the parent's visible layers (top first); none for a
// whiteout. `group` is set to the hardlink group of a hardlinked file.
std::optional<Node> TreeImpl::make_child(const DirState& parent, std::string_view name,
                                         const std::vector<Candidate>& candidates,
                                         uint32_t* group) const {
  *group = kNoLayer;
  const Candidate& top = candidates.front();
  Node node;
  switch (top.entry.type) {
    case EntryType::whiteout:
      return std::nullopt;
    case EntryType::directory: {
      auto dir = std::make_unique<DirState>();
      dir->path = join(parent.path, name);
      dir->hi = top.layer + 1;
      dir->lo = parent.lo;
      bool contents_open = true;
      const Candidate* meta = nullptr;
      for (const Candidate& candidate : candidates) {
        if (candidate.entry.type != EntryType::directory) {
          // Whiteout or non-directory: nothing below it belongs to this directory.
          if (contents_open) dir->lo = candidate.layer + 1;
          break;
        }
        // Implicit entries give existence only; the metadata comes from the topmost explicit
        // one, even below an opaque marker (which hides contents, not the directory itself).
        if (meta == nullptr && !candidate.entry.implicit) meta = &candidate;
        if (contents_open && candidate.entry.opaque) {
          dir->lo = candidate.layer;
          contents_open = false;
        }
        if (candidate.fresh || (!contents_open && meta != nullptr)) break;
      }
      if (meta != nullptr) {
        node.attr = attr_of(meta->entry, EntryType::directory);
        node.meta = Ref{meta->layer, meta->index};
      } else {
        node.attr = default_dir_attr();
      }
      node.dir = std::move(dir);
      return node;
    }
    case EntryType::regular:
    case EntryType::hardlink:
    case EntryType::symlink:
    case EntryType::char_device:
    case EntryType::block_device:
    case EntryType::fifo: {
      Ref ref{top.layer, top.index};
      if (top.entry.type == EntryType::hardlink) {
        // Every hardlink entry was given a group when the Tree opened.
        *group = group_of_link_.at(ref.key());
        ref = groups_[*group].file;
        node = leaf_node(ref, layers_[ref.layer]->entry(ref.entry));
      } else {
        if (auto it = group_of_file_.find(ref.key()); it != group_of_file_.end()) {
          *group = it->second;
        }
        node = leaf_node(ref, top.entry);
      }
      if (*group != kNoLayer) node.attr.nlink = groups_[*group].nlink;
      return node;
    }
  }
  return std::nullopt;
}

// The node of a non-directory entry (never a hardlink: its group's entry is passed instead).
Node TreeImpl::leaf_node(Ref ref, const LayerEntry& entry) {
  Node node;
  node.attr = attr_of(entry, entry.type);
  node.meta = ref;
  switch (entry.type) {
    case EntryType::regular:
      node.attr.size = entry.size;
      node.content = ref;
      break;
    case EntryType::symlink:
      node.attr.size = entry.link.size();
      node.link = entry.link;
      break;
    case EntryType::char_device:
    case EntryType::block_device:
      node.attr.rdev_major = entry.rdev_major;
      node.attr.rdev_minor = entry.rdev_minor;
      break;
    default:
      break;
  }
  return node;
}

// Merges one directory: a k-way merge by name of its entries in layers [lo, hi), the topmost
// entry of each name deciding what it is.
void TreeImpl::merge(DirState& dir) {
  struct Cursor {
    uint32_t layer = 0;
    size_t next = 0;
    size_t end = 0;
    // A layer with redirected entries: its children here, made up front; else none, and
    // [next, end) are entry indexes of the layer.
    const std::vector<Candidate>* made = nullptr;
    uint32_t index = 0;
    bool fresh = false;
    bool conditional = false;
    LayerEntry entry;
    std::string_view name;
  };
  auto load = [&](Cursor& cursor) {
    if (cursor.next >= cursor.end) return;
    if (cursor.made != nullptr) {
      const Candidate& made = (*cursor.made)[cursor.next];
      cursor.entry = made.entry;
      cursor.index = made.index;
      cursor.fresh = made.fresh;
      cursor.conditional = made.conditional;
    } else {
      cursor.entry = layers_[cursor.layer]->entry(cursor.next);
      cursor.index = static_cast<uint32_t>(cursor.next);
      cursor.conditional = cursor.entry.type == EntryType::directory && cursor.entry.implicit &&
                           conditional(cursor.layer, cursor.index);
    }
    cursor.name = base_name(cursor.entry.path);
  };
  std::deque<std::vector<Candidate>> made;  // never moves an element
  std::vector<Cursor> cursors;              // top layer first
  size_t most = 0;  // children in the largest layer: a floor for the merged count
  for (uint32_t layer = dir.hi; layer-- > dir.lo;) {
    Cursor cursor{layer, 0, 0, nullptr, 0, false, false, {}, {}};
    if (redirects_[layer].empty()) {
      std::tie(cursor.next, cursor.end) = layers_[layer]->children(dir.path);
    } else {
      cursor.made = &made.emplace_back(vchildren(layer, dir.path));
      cursor.end = cursor.made->size();
    }
    if (cursor.next >= cursor.end) continue;
    most = std::max(most, cursor.end - cursor.next);
    load(cursor);
    cursors.push_back(cursor);
  }

  struct Pending {
    std::string_view name;
    Node node;
    uint32_t group = kNoLayer;
  };
  std::vector<Pending> pending;
  pending.reserve(most);
  std::vector<Candidate> candidates;
  std::optional<std::string_view> previous;
  while (true) {
    const Cursor* smallest = nullptr;
    for (const Cursor& cursor : cursors) {
      if (cursor.next < cursor.end && (smallest == nullptr || cursor.name < smallest->name)) {
        smallest = &cursor;
      }
    }
    if (smallest == nullptr) break;
    const std::string_view name = smallest->name;
    candidates.clear();
    for (Cursor& cursor : cursors) {
      if (cursor.next < cursor.end && cursor.name == name) {
        candidates.push_back(
            Candidate{cursor.layer, cursor.index, cursor.entry, cursor.fresh, cursor.conditional});
        ++cursor.next;
        load(cursor);
      }
    }
    settle(candidates);
    // An index out of order could repeat a name; the first (merged) occurrence stands.
    if (previous && name <= *previous) continue;
    previous = name;
    if (!shown_name(name) || candidates.empty()) continue;
    uint32_t group = kNoLayer;
    std::optional<Node> node = make_child(dir, name, candidates, &group);
    if (node) pending.push_back(Pending{name, std::move(*node), group});
  }

  std::vector<Child> children;
  children.reserve(pending.size());
  {
    MutexLock lock(nodes_mu_);
    for (Pending& child : pending) {
      Ino ino = 0;
      if (child.group == kNoLayer) {
        ino = append_node(std::move(child.node));
      } else {
        Ino& shared = group_ino_[child.group];
        if (shared == 0) shared = append_node(std::move(child.node));
        ino = shared;
      }
      children.push_back(Child{child.name, ino});
    }
    published_.store(allocated_, std::memory_order_release);
  }
  dir.children = std::move(children);
}

Result<void> TreeImpl::walk(const std::function<Result<void>(const WalkEntry&)>& visit) {
  struct Frame {
    const Node* dir;
    std::string path;
    size_t next = 0;
  };
  std::unordered_map<Ino, std::string> first_path;  // hardlink groups seen so far
  const Node* root = published(kRootIno);
  IMAGEFS_CHECK(visit(WalkEntry{"", root->attr, ""}));
  std::vector<Frame> stack;
  stack.push_back(Frame{root, "", 0});
  while (!stack.empty()) {
    Frame& frame = stack.back();
    const std::vector<Child>& children = listing(*frame.dir);
    if (frame.next == children.size()) {
      stack.pop_back();
      continue;
    }
    const Child& child = children[frame.next++];
    const Node* node = published(child.ino);
    WalkEntry entry{join(frame.path, child.name), node->attr, ""};
    if (node->dir == nullptr && node->attr.nlink >= 2) {
      auto [it, first] = first_path.try_emplace(child.ino, entry.path);
      if (!first) entry.hardlink_first = it->second;
    }
    IMAGEFS_CHECK(visit(entry));
    if (node->dir != nullptr) stack.push_back(Frame{node, std::move(entry.path), 0});
  }
  return {};
}

}  // namespace

Result<std::shared_ptr<Tree>> Tree::open(std::vector<std::shared_ptr<const LayerIndex>> layers) {
  auto tree = std::make_shared<TreeImpl>(std::move(layers));
  IMAGEFS_CHECK(tree->init());
  return std::shared_ptr<Tree>(std::move(tree));
}

}  // namespace imagefs::overlay
