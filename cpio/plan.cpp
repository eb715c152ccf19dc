// Planning an archive: the merged tree's entries in walk order, then /init, injected files,
// /dev/console and the trailer, as newc entries cut into segments.
//
// What the kernel's init/initramfs.c demands (design decision 3) and how it is met here:
//  - directories before their contents: the walk's order; names without a leading "/";
//  - an entry named TRAILER!!! at the top (and what is below it) is left out: the kernel never
//    creates it, it takes the name as the end of an archive and forgets the hardlinks seen so far
//    (later members of a group would become empty files), and cpio(1) stops reading there;
//  - hardlinks are joined by (ino, devmajor, devminor, file type) among entries with nlink >= 2:
//    each regular-file group gets an ino of its own in kLinkDevMajor, the first entry carries the
//    data and later ones have filesize 0 (the kernel links them and writes nothing more);
//    symlinks, devices and fifos that are hardlinked in the image become separate entries (the
//    kernel does not link symlinks, and separate device nodes behave the same);
//  - every other entry has nlink 1 (directories 2), so its ino is never looked at by the kernel:
//    it is a hash of the path, so that an entry's bytes do not depend on its position in the
//    image and a run of entries is byte-identical in every image that has them.
//
// Cutting (decision 1): segments are shared between images only if they are cut at the same
// places, so cuts depend on the entries themselves, not on where a run began (content-defined
// chunking, with entries as the unit). With T = run_limit(format):
//  - natural cut points: after an entry whose path hash, as a fraction of 2^32, is below
//    (entry bytes / T), so cuts come every T bytes on average; not within T/4 of a run's start.
//    Two images that share a stretch of entries agree on every natural cut inside it, so after
//    an inserted or changed entry they are back in step at the next one;
//  - an entry larger than T is a segment of its own (cut before and after it);
//  - a run ends before it would exceed 4T, and (once it holds T/4) where the layer holding the
//    content changes, so that files of an upper layer do not drag their neighbours from the base
//    layer into segments no other image has;
//  - /init and each injected file (with the parent directories it needs) are segments of their
//    own, so a changed agent redoes one segment; /dev/console and the trailer end the archive in
//    a segment of their own.
#include "cpio/plan.h"

#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "cpio/newc.h"

namespace imagefs::cpio::detail {

namespace {

// Hardlink groups live in a device of their own, so that no other reader mistakes an nlink-1
// entry's hashed ino for a member of a group.
constexpr uint32_t kLinkDevMajor = 1;

// FNV-1a, 32 bits, then murmur3's finalizer (FNV alone leaves the high bits of similar short
// names far from uniform, and cut points compare the whole value): stable across runs, builds
// and machines, as std::hash is not.
uint32_t hash32(std::string_view text) {
  uint32_t h = 2166136261u;
  for (char c : text) {
    h ^= static_cast<uint8_t>(c);
    h *= 16777619u;
  }
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

uint32_t clamp_mtime(int64_t sec) {
  return static_cast<uint32_t>(std::clamp<int64_t>(sec, 0, UINT32_MAX));
}

// One whole cpio entry as pieces: header and name (and inline data for symlinks), file content,
// padding.
struct EntryPieces {
  std::string name;
  std::vector<Piece> pieces;
  uint64_t raw_size = 0;
  const overlay::LayerIndex* source = nullptr;  // the layer holding its content, if any
};

Result<EntryPieces> make_entry(const NewcHeader& header, std::string_view name,
                               std::string_view inline_data = {}) {
  EntryPieces e;
  e.name = std::string(name);
  Piece head;
  IMAGEFS_CHECK(append_newc_header(head.bytes, header, name));
  head.bytes += inline_data;
  if (!inline_data.empty()) head.bytes.append(newc_pad(inline_data.size()), '\0');
  head.size = head.bytes.size();
  e.raw_size = head.size;
  e.pieces.push_back(std::move(head));
  return e;
}

void add_data(EntryPieces& e, Piece data) {
  const uint64_t size = data.size;
  e.raw_size += size;
  e.pieces.push_back(std::move(data));
  if (newc_pad(size) != 0) {
    Piece pad;
    pad.bytes.assign(newc_pad(size), '\0');
    pad.size = pad.bytes.size();
    e.raw_size += pad.size;
    e.pieces.push_back(std::move(pad));
  }
}

class Segmenter {
 public:
  // Natural cuts average `target` bytes apart; none within `target / 4` bytes of a run's start;
  // runs end before `4 * target` bytes.
  explicit Segmenter(uint64_t target) : target_(target), min_(target / 4), limit_(target * 4) {}

  // An entry of the tree: joins the current run or, when larger than the target, stands alone.
  void add_to_run(EntryPieces e) {
    if (e.raw_size > target_) {
      cut();
      append(std::move(e));
      cut();
      return;
    }
    const bool layer_changes = e.source != nullptr && source_ != nullptr && e.source != source_;
    if ((layer_changes && current_.raw_size >= min_) || current_.raw_size + e.raw_size > limit_)
      cut();
    // A natural cut point: an entry whose path hash falls below a threshold proportional to its
    // size, so that cuts come every `target` bytes on average and depend on nothing but the entry.
    const bool natural = (uint64_t{hash32(e.name)} * target_) < (e.raw_size << 32);
    append(std::move(e));
    if (natural && current_.raw_size >= min_) cut();
  }

  // Entries that make one segment of their own.
  void add_alone(std::vector<EntryPieces> entries) {
    cut();
    for (EntryPieces& e : entries) append(std::move(e));
    cut();
  }

  void cut() {
    if (current_.pieces.empty()) return;
    segments_.push_back(std::move(current_));
    current_ = SegmentSpec{};
    source_ = nullptr;
  }

  std::vector<SegmentSpec> finish() {
    cut();
    return std::move(segments_);
  }

 private:
  void append(EntryPieces e) {
    if (current_.pieces.empty()) current_.first_name = e.name;
    if (e.source != nullptr) source_ = e.source;
    current_.raw_size += e.raw_size;
    for (Piece& p : e.pieces) {
      // Consecutive literal bytes are one piece: fewer, larger copies.
      if (p.kind == Piece::Kind::bytes && !current_.pieces.empty() &&
          current_.pieces.back().kind == Piece::Kind::bytes) {
        current_.pieces.back().bytes += p.bytes;
        current_.pieces.back().size += p.size;
      } else {
        current_.pieces.push_back(std::move(p));
      }
    }
  }

  uint64_t target_;
  uint64_t min_;
  uint64_t limit_;
  SegmentSpec current_;
  const overlay::LayerIndex* source_ = nullptr;
  std::vector<SegmentSpec> segments_;
};

NewcHeader basic_header(std::string_view name, uint32_t mode) {
  NewcHeader h;
  h.ino = hash32(name);
  h.mode = mode;
  h.nlink = S_ISDIR(mode) ? 2 : 1;
  return h;
}

// Walks the tree into `segmenter`, leaving out `excluded` paths and everything below them.
class TreePlanner {
 public:
  TreePlanner(overlay::Tree& tree, Segmenter& segmenter, std::vector<std::string> excluded)
      : tree_(tree), segmenter_(segmenter), excluded_(std::move(excluded)) {}

  Result<void> run() {
    return tree_.walk([this](const overlay::WalkEntry& w) -> Result<void> {
      if (is_excluded(w.path)) return {};
      IMAGEFS_TRY(e, entry(w));
      segmenter_.add_to_run(std::move(e));
      return {};
    });
  }

 private:
  [[nodiscard]] bool is_excluded(std::string_view path) const {
    for (const std::string& x : excluded_) {
      if (path == x || (path.starts_with(x) && path.size() > x.size() && path[x.size()] == '/'))
        return true;
    }
    return false;
  }

  Result<EntryPieces> entry(const overlay::WalkEntry& w) {
    const overlay::Attr& a = w.attr;
    const std::string name = w.path.empty() ? "." : w.path;
    NewcHeader h = basic_header(name, a.mode);
    h.uid = a.uid;
    h.gid = a.gid;
    h.mtime = clamp_mtime(a.mtime_sec);
    switch (a.mode & S_IFMT) {
      case S_IFDIR:
        return make_entry(h, name);
      case S_IFLNK: {
        IMAGEFS_TRY(target, tree_.readlink(a.ino));
        h.filesize = target.size();
        return make_entry(h, name, target);
      }
      case S_IFCHR:
      case S_IFBLK:
        h.rdevmajor = a.rdev_major;
        h.rdevminor = a.rdev_minor;
        return make_entry(h, name);
      case S_IFREG:
        return regular(w, h, name);
      default:  // fifos, sockets
        return make_entry(h, name);
    }
  }

  Result<EntryPieces> regular(const overlay::WalkEntry& w, NewcHeader h, const std::string& name) {
    const overlay::Attr& a = w.attr;
    bool carries_data = true;
    if (a.nlink >= 2) {
      auto [it, first] = groups_.try_emplace(a.ino, 0);
      if (first) {
        // Probing keeps groups apart in the (unlikely) event that two first paths hash alike.
        uint32_t ino = hash32("hardlink:" + name);
        while (!group_inos_.insert(ino).second) ++ino;
        it->second = ino;
      }
      carries_data = first;
      h.ino = it->second;
      h.devmajor = kLinkDevMajor;
      h.nlink = a.nlink;
    }
    if (!carries_data) return make_entry(h, name);
    h.filesize = a.size;
    IMAGEFS_TRY(e, make_entry(h, name));  // EFBIG for 4 GiB or more, before any content is read
    if (a.size == 0) return e;
    IMAGEFS_TRY(source, tree_.content(a.ino));
    if (source.size != a.size)
      return make_error(EIO, "/" + name + ": content size " + std::to_string(source.size) +
                                 " disagrees with the file's size " + std::to_string(a.size));
    Piece data;
    data.kind = Piece::Kind::layer_content;
    data.layer = source.layer;
    data.entry = source.entry;
    data.size = source.size;
    e.source = source.layer.get();
    add_data(e, std::move(data));
    return e;
  }

  overlay::Tree& tree_;
  Segmenter& segmenter_;
  std::vector<std::string> excluded_;
  std::unordered_map<overlay::Ino, uint32_t> groups_;  // tree inode -> the group's cpio ino
  std::set<uint32_t> group_inos_;
};

// What the image has at `path`: 0 when nothing (ENOENT, or ENOTDIR: a parent is not a
// directory), else its mode.
Result<uint32_t> image_mode(overlay::Tree& tree, std::string_view path) {
  Result<overlay::Attr> attr = tree.resolve(path);
  if (attr.ok()) return attr->mode;
  if (attr.error().code == ENOENT || attr.error().code == ENOTDIR) return uint32_t{0};
  return attr.error();
}

// What `paths` (from plan_image) says is at `path`: nullopt when nothing, else its mode.
std::optional<uint32_t> recorded_mode(const PathModes& paths, std::string_view path) {
  auto it = paths.find(path);
  if (it == paths.end() || it->second == 0) return std::nullopt;
  return it->second;
}

// A host file as a root:root regular file (0755 unless it says otherwise).
Result<EntryPieces> host_entry(const std::shared_ptr<const HostFile>& file, std::string_view name) {
  NewcHeader h = basic_header(name, S_IFREG | file->mode);
  h.mtime = clamp_mtime(file->mtime_sec);
  h.filesize = file->bytes.size();
  IMAGEFS_TRY(e, make_entry(h, name));
  if (!file->bytes.empty()) {
    Piece data;
    data.kind = Piece::Kind::host_file;
    data.host = file;
    data.size = file->bytes.size();
    add_data(e, std::move(data));
  }
  return e;
}

}  // namespace

uint64_t run_limit(Format format) {
  // Measured on the image fixtures: with runs of 64 KiB, gzip at level 6 came out 0.7% larger
  // than `gzip -6` of the whole python cpio; cuts 256 KiB apart on average make it 1.2% smaller
  // (node 1.4%, rust 0.9%). zstd loses more when cut short (its window is megabytes, deflate's
  // 32 KiB): 4 MiB keeps it within 1% of `zstd -3` on python and node (2 MiB: 1%, but 8% over
  // on a text corpus of C headers; 256 KiB runs: 5.5% over on python).
  return format == Format::zstd ? uint64_t{4} << 20 : uint64_t{256} << 10;
}

std::vector<std::string> tail_paths(const PlanInputs& inputs) {
  std::vector<std::string> out = {"init", "dev", "dev/console"};
  for (const auto& inject : inputs.injects) {
    const std::string name = inject->guest.substr(1);
    for (size_t slash = name.find('/'); slash != std::string::npos;
         slash = name.find('/', slash + 1))
      out.push_back(name.substr(0, slash));
  }
  return out;
}

Result<ImagePart> plan_image(overlay::Tree& tree, const PlanInputs& inputs) {
  ImagePart part;
  Segmenter segmenter(run_limit(inputs.format));
  std::vector<std::string> excluded = {std::string(kTrailerName)};
  if (inputs.init) excluded.emplace_back("init");
  for (const auto& inject : inputs.injects) excluded.push_back(inject->guest.substr(1));
  TreePlanner planner(tree, segmenter, excluded);
  IMAGEFS_CHECK(planner.run());
  part.segments = segmenter.finish();
  for (SegmentSpec& s : part.segments) {
    compute_key(s, inputs.format, inputs.level);
    part.raw_size += s.raw_size;
  }
  for (std::string& path : tail_paths(inputs)) {
    IMAGEFS_TRY(mode, image_mode(tree, path));
    part.paths.insert_or_assign(std::move(path), mode);
  }
  return part;
}

Result<Plan> plan_tail(const PathModes& paths, const PlanInputs& inputs) {
  Plan plan;
  Segmenter segmenter(run_limit(inputs.format));

  // Host files: /init, then each injected file with the parent directories the image lacks.
  if (inputs.init) {
    IMAGEFS_TRY(e, host_entry(inputs.init, "init"));
    std::vector<EntryPieces> unit;
    unit.push_back(std::move(e));
    segmenter.add_alone(std::move(unit));
  }
  std::set<std::string> added_dirs;
  // What the tail itself puts at a path wins over what the image had there (the image's entry
  // was left out of the image part): an injected file is not a directory.
  std::set<std::string> injected;
  for (const auto& inject : inputs.injects) {
    const std::string name = inject->guest.substr(1);
    std::vector<EntryPieces> unit;
    for (size_t slash = name.find('/'); slash != std::string::npos;
         slash = name.find('/', slash + 1)) {
      const std::string parent = name.substr(0, slash);
      if (added_dirs.count(parent) != 0) continue;
      // Prefixes are checked from the top, so a non-directory is met before anything below it.
      const std::optional<uint32_t> mode = injected.count(parent) != 0
                                               ? std::optional<uint32_t>(S_IFREG)
                                               : recorded_mode(paths, parent);
      if (mode && !S_ISDIR(*mode) && !S_ISLNK(*mode))
        return make_error(ENOTDIR, "cannot inject " + inject->guest + ": /" + parent +
                                       " is not a directory in the image");
      if (mode) continue;  // a directory, or a symlink the kernel follows
      IMAGEFS_TRY(dir, make_entry(basic_header(parent, S_IFDIR | 0755), parent));
      unit.push_back(std::move(dir));
      added_dirs.insert(parent);
    }
    IMAGEFS_TRY(file, host_entry(inject, name));
    unit.push_back(std::move(file));
    segmenter.add_alone(std::move(unit));
    injected.insert(name);
  }

  // The tail, a segment of its own: /dev/console when the image has none, then the trailer.
  std::vector<EntryPieces> tail;
  bool console_injected = false;
  for (const auto& inject : inputs.injects) console_injected |= inject->guest == "/dev/console";
  const std::optional<uint32_t> console = recorded_mode(paths, "dev/console");
  if (!console && !console_injected) {
    std::optional<uint32_t> dev =
        injected.count("dev") != 0 ? std::optional<uint32_t>(S_IFREG) : recorded_mode(paths, "dev");
    if (!dev) {
      if (added_dirs.count("dev") == 0) {
        IMAGEFS_TRY(e, make_entry(basic_header("dev", S_IFDIR | 0755), "dev"));
        tail.push_back(std::move(e));
      }
      dev = S_IFDIR | 0755;
    }
    if (S_ISDIR(*dev)) {  // not when the image's /dev is a file or a symlink
      NewcHeader h = basic_header("dev/console", S_IFCHR | 0600);
      h.rdevmajor = 5;
      h.rdevminor = 1;
      IMAGEFS_TRY(e, make_entry(h, "dev/console"));
      tail.push_back(std::move(e));
    }
  }
  {
    EntryPieces trailer;
    trailer.name = std::string(kTrailerName);
    Piece p;
    append_newc_trailer(p.bytes);
    p.size = p.bytes.size();
    trailer.raw_size = p.size;
    trailer.pieces.push_back(std::move(p));
    tail.push_back(std::move(trailer));
  }
  segmenter.add_alone(std::move(tail));

  plan.segments = segmenter.finish();
  for (SegmentSpec& s : plan.segments) {
    compute_key(s, inputs.format, inputs.level);
    plan.raw_size += s.raw_size;
  }
  return plan;
}

}  // namespace imagefs::cpio::detail
