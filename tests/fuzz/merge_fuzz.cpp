// Fuzzes the merge: the input bytes choose a stack of 1-4 layers of tar entries (files,
// directories, symlinks with relative, absolute, chained and climbing targets, hardlinks,
// whiteouts, opaque markers) over three names, so that entries keep landing under symlinked
// directories of their own layer and of the layers below. Each layer is written as a real tar
// (libarchive), ingested through LayerCache and merged by overlay::Tree; the merged tree is
// compared, path by path (type, mode, owner, mtime, content, symlink target, inode sharing and
// link counts), with an independent reference model written here: an in-memory unpacker that
// applies each layer's entries in tar order as umoci's unpack does (parents resolved through the
// symlinks already there, inside the root; missing parents made; whiteouts and opaque markers
// act on what the lower layers left and make nothing where nothing is).
//
// Where the model finds a symlink loop, an error must say ELOOP or ENOTDIR (or there may be
// none): an extraction stops at the first error, while imagefs does not look at an entry that a
// later entry of the same layer replaced, so where that later entry is a file the walk meets a
// non-directory before it could loop (`a -> b/b`, then `b/b`, then a file `a`, over `b -> /a`).
// Where it meets what imagefs documents as a limit or where references disagree (an entry under a
// file; two entries of one layer at one place through a symlink of the layers below, decided by tar
// order; a hardlink to a missing or later path) it gives no verdict, and only the absence of
// crashes is checked.
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "overlay/layer_index.h"
#include "overlay/tree.h"
#include "store/blob_store.h"
#include "store/derived.h"
#include "tests/unit/overlay/tar_builder.h"

namespace {

using imagefs::overlay::Attr;
using imagefs::overlay::LayerCache;
using imagefs::overlay::LayerIndex;
using imagefs::overlay::Tree;
using imagefs::overlay::WalkEntry;
using imagefs::overlay::testing::TarEntry;

// --- the input, read as choices ------------------------------------------------------------------

class Choices {
 public:
  Choices(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  [[nodiscard]] bool done() const { return at_ >= size_; }
  unsigned pick(unsigned n) { return at_ < size_ ? data_[at_++] % n : 0; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

std::string parent(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}
std::string base(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}
std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

// One tar entry as the generator means it.
enum class Op { file, dir, symlink, hardlink, whiteout, opaque };
struct Step {
  Op op = Op::file;
  std::string path;  // for opaque: the directory ("" the root)
  std::string link;  // symlink target or hardlink target
  unsigned mode = 0644;
  unsigned uid = 0;
  int64_t mtime = 0;
  std::string data;
};

std::string random_path(Choices& in) {
  static const char* const kNames[] = {"a", "b", "c"};
  std::string path = kNames[in.pick(3)];
  for (unsigned depth = in.pick(3); depth > 0; --depth)
    path += std::string("/") + kNames[in.pick(3)];
  return path;
}

std::vector<Step> random_layer(Choices& in, bool base_layer) {
  std::vector<Step> steps;
  const unsigned count = 1 + in.pick(10);
  for (unsigned i = 0; i < count && !in.done(); ++i) {
    Step s;
    static const unsigned kModes[] = {0644, 0755, 0700, 0600};
    s.mode = kModes[in.pick(4)];
    s.uid = in.pick(2);
    s.mtime = in.pick(3);
    s.path = random_path(in);
    switch (in.pick(9)) {
      case 0:
      case 1:
        s.op = Op::file;
        s.data = std::string(in.pick(4), static_cast<char>('a' + in.pick(26)));
        break;
      case 2:
        s.op = Op::dir;
        break;
      case 3:
      case 4: {
        s.op = Op::symlink;
        s.mode = 0777;
        // Climbing targets only in the base layer: over a symlink of a lower layer, a climbing
        // target of the layer's own symlink is taken lexically by imagefs (a documented limit).
        const unsigned form = in.pick(base_layer ? 5 : 4);
        s.link = form == 0   ? "/" + random_path(in)
                 : form == 1 ? "./" + random_path(in) + "/"
                 : form == 2 ? std::string("/")
                 : form == 4 ? "../../" + random_path(in)
                             : random_path(in);
        break;
      }
      case 5:
        s.op = Op::hardlink;
        s.link = random_path(in);
        break;
      case 6:
      case 7:
        s.op = Op::whiteout;
        break;
      default:
        s.op = Op::opaque;
        if (in.pick(8) == 0) s.path.clear();
        break;
    }
    steps.push_back(std::move(s));
  }
  return steps;
}

TarEntry tar_entry(const Step& s) {
  TarEntry e;
  e.perm = s.mode;
  e.uid = s.uid;
  e.mtime = s.mtime;
  switch (s.op) {
    case Op::file:
      e.name = s.path;
      e.data = s.data;
      break;
    case Op::dir:
      e.name = s.path;
      e.type = AE_IFDIR;
      break;
    case Op::symlink:
      e.name = s.path;
      e.type = AE_IFLNK;
      e.symlink = s.link;
      break;
    case Op::hardlink:
      e.name = s.path;
      e.hardlink = s.link;
      break;
    case Op::whiteout:
      e.name = join(parent(s.path), ".wh." + base(s.path));
      break;
    case Op::opaque:
      e.name = join(s.path, ".wh..wh..opq");
      break;
  }
  return e;
}

// --- the reference model: an unpacker into a map of paths ----------------------------------------

enum class Kind { regular, directory, symlink };
struct Inode {
  Kind kind = Kind::directory;
  unsigned mode = 0755;
  unsigned uid = 0;
  int64_t mtime = 0;
  std::string data;  // regular: content; symlink: target
};
// Every path ("" the root); hardlinked paths share their Inode.
using Model = std::map<std::string, std::shared_ptr<Inode>>;

enum class Verdict { ok, loop, unsure };

struct Resolved {
  Verdict verdict = Verdict::ok;
  bool under_file = false;
  std::string path;
  std::vector<std::pair<std::string, const Inode*>> followed;  // the symlinks on the way
};

// `path` with every symlink on the way followed inside the root, the last component too.
Resolved resolve(const Model& m, const std::string& path) {
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
  Resolved out;
  int links = 0;
  while (!pending.empty()) {
    const std::string name = pending.back();
    pending.pop_back();
    if (name == ".") continue;
    if (name == "..") {
      out.path = parent(out.path);
      continue;
    }
    const std::string next = join(out.path, name);
    auto it = m.find(next);
    if (it != m.end() && it->second->kind == Kind::symlink) {
      if (++links > 40) {
        out.verdict = Verdict::loop;
        return out;
      }
      out.followed.emplace_back(next, it->second.get());
      if (it->second->data.starts_with('/')) out.path.clear();
      push(it->second->data);
      continue;
    }
    if (it != m.end() && it->second->kind != Kind::directory) {
      out.under_file = true;
      out.verdict = Verdict::unsure;
      return out;
    }
    out.path = next;
  }
  return out;
}

void erase_tree(Model& m, const std::string& path) {
  m.erase(path);
  const std::string prefix = path.empty() ? "" : path + "/";
  for (auto it = m.lower_bound(prefix); it != m.end() && it->first.starts_with(prefix);) {
    it = it->first.empty() ? std::next(it) : m.erase(it);
  }
}

bool has_upper_below(const std::set<std::string>& upper, const std::string& path) {
  const std::string prefix = path + "/";
  auto it = upper.lower_bound(prefix);
  return it != upper.end() && it->starts_with(prefix);
}

// What an opaque directory keeps: the layer's own paths, and the directories on the way to
// them (made anew: nothing of the lower directory shows, not even its metadata).
void prune_lower(Model& m, const std::set<std::string>& upper, const std::string& dir) {
  const std::string prefix = dir.empty() ? "" : dir + "/";
  std::vector<std::string> below;
  for (auto it = m.lower_bound(prefix); it != m.end() && it->first.starts_with(prefix); ++it) {
    if (!it->first.empty()) below.push_back(it->first);
  }
  for (const std::string& path : below) {
    if (upper.contains(path)) continue;
    if (!m.contains(path)) continue;
    if (has_upper_below(upper, path)) {
      m[path] = std::make_shared<Inode>();  // a directory: it holds one of the layer's paths
    } else {
      erase_tree(m, path);
    }
  }
}

Verdict worst(Verdict a, Verdict b) {
  if (a == Verdict::unsure || b == Verdict::unsure) return Verdict::unsure;
  return a == Verdict::loop || b == Verdict::loop ? Verdict::loop : Verdict::ok;
}

Verdict apply(Model& m, const std::vector<Step>& steps) {
  Verdict verdict = Verdict::ok;
  std::set<std::string> upper;             // paths this layer made (entries and parents)
  std::map<std::string, std::string> raw;  // where an entry went -> its name in the tar
  std::set<std::string> linked_below;      // hardlink targets taken from the layers below
  std::set<const Inode*> own;              // the layer's symlinks
  // Symlinks of the layers below that the layer wrote through: replacing one of them (or what
  // holds it) later in the same layer is decided by tar order in an extraction, while imagefs'
  // index has only the paths as written (docs/LAYER_FORMAT.md): no verdict.
  std::set<std::string> through;
  std::set<std::string> through_dest;  // and where the entries written through them went
  bool unsure = false;
  auto note = [&](const Resolved& r) {
    bool lower = false;
    for (const auto& [path, inode] : r.followed) {
      if (!own.contains(inode)) {
        through.insert(path);
        lower = true;
      }
    }
    return lower;
  };
  // A marker or whiteout led through a symlink of the layers below to that symlink itself or a
  // directory holding it (`c -> /`, then `c/.wh..wh..opq`): an extraction deletes the symlink on
  // its way, imagefs keeps it (the redirect's symlink stays). No verdict.
  auto above_own_way = [&](const Resolved& r, const std::string& dest) {
    for (const auto& [path, inode] : r.followed) {
      if (own.contains(inode)) continue;
      if (dest.empty() || path == dest || path.starts_with(dest + "/")) return true;
    }
    return false;
  };
  auto touches_through = [&](const std::string& at) {
    auto it = through.lower_bound(at);
    return it != through.end() && (*it == at || it->starts_with(at + "/") || at.empty());
  };
  auto replace = [&](const std::string& at) {
    auto dest = through_dest.lower_bound(at);
    if (dest != through_dest.end() && (*dest == at || dest->starts_with(at + "/"))) unsure = true;
    erase_tree(m, at);
    for (auto it = upper.lower_bound(at + "/"); it != upper.end() && it->starts_with(at + "/");)
      it = upper.erase(it);
  };
  // The directories the layer names on the way to its entries, as written.
  std::set<std::string> named;
  for (const Step& s : steps) {
    for (std::string dir = parent(tar_entry(s).name); !dir.empty(); dir = parent(dir))
      named.insert(dir);
  }
  // A hardlink to a name whose first entry in the layer comes later, or that the layer names as a
  // directory: imagefs refuses the layer (EIO) whatever else an extraction fails on first
  // (docs/LAYER_FORMAT.md).
  std::set<std::string> written;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].op == Op::hardlink && named.contains(steps[i].link)) return Verdict::unsure;
    if (steps[i].op == Op::hardlink && !written.contains(steps[i].link)) {
      for (size_t j = i + 1; j < steps.size(); ++j) {
        if (tar_entry(steps[j]).name == steps[i].link) return Verdict::unsure;
      }
    }
    written.insert(tar_entry(steps[i]).name);
  }
  for (const Step& s : steps) {
    if (s.op == Op::opaque) {
      Resolved d = resolve(m, s.path);
      if (d.verdict != Verdict::ok) {
        verdict = worst(verdict, d.verdict);
        continue;
      }
      if (note(d)) through_dest.insert(d.path);
      if (above_own_way(d, d.path)) return Verdict::unsure;
      auto it = m.find(d.path);
      if (it != m.end() && it->second->kind == Kind::directory) prune_lower(m, upper, d.path);
      continue;
    }
    Resolved p = resolve(m, parent(s.path));
    if (p.verdict != Verdict::ok) {
      verdict = worst(verdict, p.verdict);
      continue;
    }
    const bool redirected = note(p);
    const std::string at = join(p.path, base(s.path));
    if (touches_through(at)) return Verdict::unsure;
    if (redirected && s.op != Op::whiteout) through_dest.insert(at);
    // A whiteout through a symlink of the layers below that deletes a directory the layer writes
    // under by its own name: imagefs finds redirects in path order, not tar order.
    if (redirected && s.op == Op::whiteout && named.contains(at)) return Verdict::unsure;
    if (s.op == Op::whiteout && above_own_way(p, at)) return Verdict::unsure;
    if (s.op == Op::whiteout) {
      auto dir = m.find(p.path);
      if (dir == m.end() || dir->second->kind != Kind::directory) continue;  // makes nothing
      auto it = m.find(at);
      if (it == m.end()) continue;
      // Whiteouts act on the lower layers only, wherever they are in the tar: what the layer
      // has at or below the path stays, in a directory made anew.
      if (upper.contains(at)) {
        if (it->second->kind == Kind::directory) prune_lower(m, upper, at);
      } else if (has_upper_below(upper, at)) {
        m[at] = std::make_shared<Inode>();
        prune_lower(m, upper, at);
      } else {
        erase_tree(m, at);
      }
      continue;
    }
    // Two entries of the layer at one place through different names: tar order decides in an
    // extraction, imagefs' rule in the index (docs/LAYER_FORMAT.md).
    if (auto r = raw.find(at); r != raw.end() && r->second != s.path) return Verdict::unsure;
    raw[at] = s.path;
    // mkdir -p of the parent.
    for (size_t end = 0; end != std::string::npos && !p.path.empty();) {
      end = p.path.find('/', end == 0 ? 0 : end + 1);
      const std::string prefix = p.path.substr(0, end);
      if (!m.contains(prefix)) {
        m[prefix] = std::make_shared<Inode>();
        upper.insert(prefix);
      }
    }
    std::shared_ptr<Inode> inode;
    switch (s.op) {
      case Op::dir: {
        auto it = m.find(at);
        if (it != m.end() && it->second->kind == Kind::directory) {
          inode = it->second;
        } else {
          replace(at);
          inode = std::make_shared<Inode>();
        }
        inode->mode = s.mode;
        inode->uid = s.uid;
        inode->mtime = s.mtime;
        break;
      }
      case Op::file:
      case Op::symlink:
        inode = std::make_shared<Inode>();
        inode->kind = s.op == Op::file ? Kind::regular : Kind::symlink;
        inode->mode = s.mode;
        inode->uid = s.uid;
        inode->mtime = s.mtime;
        inode->data = s.op == Op::file ? s.data : s.link;
        if (s.op == Op::symlink) own.insert(inode.get());
        break;
      case Op::hardlink: {
        Resolved t = resolve(m, parent(s.link));
        if (t.verdict != Verdict::ok) return Verdict::unsure;
        const std::string target = join(t.path, base(s.link));
        auto it = m.find(target);
        if (it == m.end() || it->second->kind == Kind::directory || target == at ||
            at.starts_with(target + "/")) {
          return Verdict::unsure;  // a link to nothing or to a directory: an error, not a tree
        }
        if (!upper.contains(target)) linked_below.insert(target);
        inode = it->second;
        break;
      }
      default:
        break;
    }
    if (s.op != Op::dir || m.find(at) == m.end() || m.at(at) != inode) replace(at);
    m[at] = inode;
    upper.insert(at);
  }
  if (unsure) return Verdict::unsure;
  // A link to a lower file whose path this layer writes again (later in the tar): imagefs
  // refuses the layer (it cannot tell which inode is meant).
  for (const std::string& target : linked_below) {
    if (upper.contains(target)) return Verdict::unsure;
  }
  return verdict;
}

// --- the store and the comparison
// -----------------------------------------------------------------

void check(bool ok, const std::string& what) {
  if (ok) return;
  std::fprintf(stderr, "merge_fuzz: %s\n", what.c_str());
  std::abort();
}

struct Store {
  Store() {
    // tmpfs when there is one: every blob and index is fsynced, which costs nothing there.
    std::string dir_base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string tmpl = dir_base + "/imagefs-merge-fuzz-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    dir = tmpl;
    blobs = *imagefs::store::BlobStore::open(dir);
    cache = *LayerCache::create(blobs);
  }
  ~Store() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::filesystem::path dir;
  std::shared_ptr<imagefs::store::BlobStore> blobs;
  std::shared_ptr<LayerCache> cache;
};

std::string describe(const std::vector<std::vector<Step>>& layers) {
  std::string out;
  for (size_t l = 0; l < layers.size(); ++l) {
    out += "layer " + std::to_string(l) + ":";
    for (const Step& s : layers[l]) {
      TarEntry e = tar_entry(s);
      out += " " + e.name;
      if (s.op == Op::dir) out += "/";
      if (s.op == Op::symlink) out += "->" + s.link;
      if (s.op == Op::hardlink) out += "=>" + s.link;
    }
    out += "\n";
  }
  return out;
}

void compare(Tree& tree, const Model& model, const std::string& stack) {
  std::map<std::string, WalkEntry> seen;
  auto walked = tree.walk([&](const WalkEntry& e) -> imagefs::Result<void> {
    seen.emplace(e.path, e);
    return {};
  });
  check(walked.ok(), "walk failed: " + (walked.ok() ? "" : walked.error().message) + "\n" + stack);
  std::string problems;
  for (const auto& [path, inode] : model) {
    if (!seen.contains(path)) problems += "  missing: /" + path + "\n";
  }
  for (const auto& [path, e] : seen) {
    if (!model.contains(path)) problems += "  extra: /" + path + "\n";
  }
  check(problems.empty(), "paths differ from the model:\n" + problems + stack);
  std::map<const Inode*, uint32_t> links;
  std::map<const Inode*, imagefs::overlay::Ino> ino_of;
  for (const auto& [path, inode] : model) {
    if (inode->kind != Kind::directory) ++links[inode.get()];
  }
  for (const auto& [path, inode] : model) {
    const Attr& a = seen.at(path).attr;
    const std::string where = "/" + path + ": ";
    const uint32_t type = inode->kind == Kind::directory ? S_IFDIR
                          : inode->kind == Kind::symlink ? S_IFLNK
                                                         : S_IFREG;
    check((a.mode & S_IFMT) == type, where + "type differs\n" + stack);
    if (path.empty()) continue;  // the root: no "./" entries here
    check((a.mode & 07777) == inode->mode, where + "mode " + std::to_string(a.mode & 07777) +
                                               ", model " + std::to_string(inode->mode) + "\n" +
                                               stack);
    check(a.uid == inode->uid, where + "owner differs\n" + stack);
    check(a.mtime_sec == inode->mtime, where + "mtime " + std::to_string(a.mtime_sec) + ", model " +
                                           std::to_string(inode->mtime) + "\n" + stack);
    if (inode->kind == Kind::directory) continue;
    check(a.nlink == links.at(inode.get()), where + "link count " + std::to_string(a.nlink) +
                                                ", model " + std::to_string(links.at(inode.get())) +
                                                "\n" + stack);
    auto [it, first] = ino_of.try_emplace(inode.get(), a.ino);
    check(it->second == a.ino, where + "not one inode with its hardlinks\n" + stack);
    if (inode->kind == Kind::symlink) {
      auto target = tree.readlink(a.ino);
      check(target.ok() && *target == inode->data, where + "symlink target differs\n" + stack);
    } else {
      std::string content(a.size, '\0');
      auto n = tree.read(a.ino, 0,
                         std::span(reinterpret_cast<uint8_t*>(content.data()), content.size()));
      check(n.ok() && *n == a.size && content == inode->data, where + "content differs\n" + stack);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Store store;
  Choices in(data, size);
  std::vector<std::vector<Step>> layers;
  const unsigned count = 1 + in.pick(4);
  for (unsigned l = 0; l < count && !in.done(); ++l) layers.push_back(random_layer(in, l == 0));
  if (layers.empty()) return 0;

  Model model;
  model[""] = std::make_shared<Inode>();
  Verdict verdict = Verdict::ok;
  for (const std::vector<Step>& steps : layers) {
    Verdict v = apply(model, steps);
    verdict = worst(verdict, v);
    if (verdict == Verdict::unsure) break;
  }

  std::vector<std::shared_ptr<const LayerIndex>> indexes;
  std::vector<imagefs::store::Digest> digests;
  bool ingested = true;
  int failure = 0;
  std::string failure_message;
  for (const std::vector<Step>& steps : layers) {
    std::vector<TarEntry> entries;
    for (const Step& s : steps) entries.push_back(tar_entry(s));
    const std::string tar = imagefs::overlay::testing::make_tar(entries);
    const auto digest = imagefs::store::Digest::of(tar);
    check(store.blobs->put(digest, tar).ok(), "cannot store a layer");
    digests.push_back(digest);
    auto index = store.cache->get(
        imagefs::store::LayerRecord{digest, imagefs::overlay::testing::kTar, tar.size(), {}});
    if (!index.ok()) {
      ingested = false;
      failure = index.error().code;
      failure_message = index.error().message;
      break;
    }
    indexes.push_back(*index);
  }
  const std::string stack = describe(layers);
  // MERGE_FUZZ_STATS=1: how often each verdict comes, to see that the comparison is reached.
  static const bool stats = std::getenv("MERGE_FUZZ_STATS") != nullptr;
  static std::map<std::string, size_t> counts;
  if (stats && ++counts[verdict == Verdict::ok     ? (ingested ? "compared" : "ingest failed")
                        : verdict == Verdict::loop ? "loop"
                                                   : "no verdict"] %
                       500 ==
                   0) {
    for (const auto& [what, n] : counts) std::fprintf(stderr, "%s %zu; ", what.c_str(), n);
    std::fprintf(stderr, "\n");
  }
  if (ingested) {
    auto tree = Tree::open(indexes);
    if (verdict == Verdict::ok) {
      check(tree.ok(), "the open failed where the model has a tree: " +
                           (tree.ok() ? "" : tree.error().message) + "\n" + stack);
      compare(**tree, model, stack);
    } else if (verdict == Verdict::loop && !tree.ok()) {
      // A bad hardlink refused first is as good an error (which one an extraction meets first
      // is tar order), as for the ingest below.
      check(tree.error().code == ELOOP || tree.error().code == ENOTDIR ||
                tree.error().message.find("hardlink") != std::string::npos,
            "a symlink loop, refused with " + tree.error().message + "\n" + stack);
    } else if (tree.ok()) {
      (void)(*tree)->walk([](const WalkEntry&) -> imagefs::Result<void> { return {}; });
    }
  } else {
    check(verdict != Verdict::ok, "a layer failed to ingest where the model has a tree\n" + stack);
    // Where the layer also has a bad hardlink (to itself, to a directory, to a later name), the
    // ingest may refuse that first: which of two errors an extraction meets first is tar order.
    const bool bad_hardlink =
        failure == EIO && failure_message.find("hardlink") != std::string::npos;
    check(verdict != Verdict::loop || failure == ELOOP || failure == ENOTDIR || bad_hardlink,
          "a symlink loop, refused with errno " + std::to_string(failure) + ": " + failure_message +
              "\n" + stack);
  }

  // Each input starts from nothing, and the store stays small.
  for (const auto& digest : digests) {
    check(imagefs::store::remove_derived(*store.blobs, digest).ok(), "cannot remove an index");
    (void)store.blobs->remove(digest);
  }
  return 0;
}
