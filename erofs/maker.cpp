// ImageMaker: the merged tree gathered into nodes, the boot files added, the layout cached in the
// store by key, and the image served from the layout and the layers' data files.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <unordered_map>
#include <utility>

#include "common/errno_error.h"
#include "common/unique_fd.h"
#include "cpio/inputs.h"
#include "cpio/plan_key.h"
#include "erofs/erofs.h"
#include "erofs/layout.h"
#include "init/default_init.h"
#include "init/image_config.h"
#include "init/init_config.h"
#include "overlay/layer_format.h"
#include "store/derived.h"
#include "store/lease.h"

namespace imagefs::erofs {

namespace fs = std::filesystem;
using detail::kInitSource;
using detail::kMetaSource;
using detail::Layout;
using detail::Node;
using detail::TreeNodes;

namespace {

// Layout files are shared derived files (store/derived.h) of this kind.
constexpr std::string_view kKind = "erofs";
// Bumped whenever the layout rules change, so that an old layout is not served for new rules.
constexpr std::string_view kLayoutVersion = "erofs layout 2";  // 2: file tails inline
// Where the boot files go: a kernel boots the image with init=/.imagefs/init.
constexpr std::string_view kInitPath = "/.imagefs/init";
constexpr off_t kMaxLayoutFile = off_t{1} << 30;

int64_t now_seconds() { return static_cast<int64_t>(::time(nullptr)); }

using cpio::detail::HostFileOption;

// The host files of `options`: the --init file at /.imagefs/init, then the injected ones.
std::vector<HostFileOption> host_inputs(const cpio::ArchiveOptions& options) {
  return cpio::detail::host_files(options, kInitPath);
}

std::string layout_key(const store::Digest& manifest, const cpio::ArchiveOptions& options,
                       const std::vector<struct stat>& stats) {
  std::string text(kLayoutVersion);
  text += '\n';
  text += cpio::detail::options_key_text(options, host_inputs(options), stats);
  return manifest.str() + "/erofs/" + std::string(store::Digest::of(text).hex());
}

fs::path layout_path(const fs::path& root, std::string_view key) {
  return store::shared_path(root, kKind, store::Digest::of(key).hex());
}

fs::path layer_data_path(const store::BlobStore& blobs, const store::Digest& layer) {
  return store::derived_path(blobs, layer, overlay::detail::kProductName) /
         overlay::detail::kDataFile;
}

Result<std::string> read_file(const fs::path& path, off_t max, bool* missing) {
  *missing = false;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) {
      *missing = true;
      return std::string();
    }
    return errno_error(errno, "cannot open", path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error(errno, "cannot stat", path);
  if (st.st_size > max) return make_error(EFBIG, path.string() + " is too large");
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::pread(fd.get(), bytes.data() + got, bytes.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, "cannot read", path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  bytes.resize(got);
  store::mark_used(path, st, now_seconds());  // for gc's order of last use
  return bytes;
}

// An image served from its layout: metadata from memory, file data by pread from the layers'
// data files, zeros elsewhere.
class ErofsImage final : public cpio::Archive {
 public:
  ErofsImage(Layout layout, std::vector<UniqueFd> fds, cpio::ArchiveStats stats)
      : layout_(std::move(layout)), fds_(std::move(fds)), stats_(stats) {}

  [[nodiscard]] uint64_t size() const override { return layout_.size; }
  [[nodiscard]] const cpio::ArchiveStats& stats() const override { return stats_; }

  Result<size_t> read(uint64_t offset, std::span<uint8_t> out) const override {
    return detail::read_image(
        layout_, offset, out,
        [this](uint32_t layer, uint64_t at, std::span<uint8_t> dst) -> Result<void> {
          if (layer == kInitSource) {
            const auto bin = init::default_init_binary();
            if (at > bin.size() || dst.size() > bin.size() - at)
              return make_error(EIO, "rootfs.erofs reads past the default init");
            std::memcpy(dst.data(), bin.data() + at, dst.size());
            return {};
          }
          size_t done = 0;
          while (done < dst.size()) {
            ssize_t n = ::pread(fds_[layer].get(), dst.data() + done, dst.size() - done,
                                static_cast<off_t>(at + done));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0)
              return errno_error(errno,
                                 "cannot read the data of layer " + layout_.layers[layer].str());
            if (n == 0)
              return make_error(EIO, "the data file of layer " + layout_.layers[layer].str() +
                                         " is shorter than rootfs.erofs needs");
            done += static_cast<size_t>(n);
          }
          return {};
        });
  }

  // `imagefs build --format erofs`: sequential writes from the fd's position, the layers' data
  // copied by the kernel (copy_file_range: no trip through our memory, a reflink where the file
  // system shares blocks), the zeros between extents left as holes.
  Result<void> write_to(int fd, const fs::path& name) const override {
    uint64_t at = 0;  // the image offset the output's position stands for
    auto skip_to = [&](uint64_t to) -> Result<void> {
      if (to <= at) return {};
      if (::lseek(fd, static_cast<off_t>(to - at), SEEK_CUR) < 0)
        return cpio::write_through_read(*this, at, fd, name);  // not seekable: zeros written
      at = to;
      return {};
    };
    auto write_bytes = [&](const uint8_t* data, size_t size) -> Result<void> {
      for (size_t done = 0; done < size;) {
        ssize_t w = ::write(fd, data + done, size - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return errno_error(errno, "cannot write", name);
        done += static_cast<size_t>(w);
      }
      at += size;
      return {};
    };
    for (const detail::Extent& e : layout_.extents) {
      IMAGEFS_CHECK(skip_to(e.offset));
      if (at != e.offset) return {};  // written whole by write_through_read
      if (e.source == kMetaSource) {
        IMAGEFS_CHECK(write_bytes(
            reinterpret_cast<const uint8_t*>(layout_.meta.data()) + e.source_offset, e.length));
        continue;
      }
      if (e.source == kInitSource) {
        const auto bin = init::default_init_binary();
        if (e.source_offset > bin.size() || e.length > bin.size() - e.source_offset)
          return make_error(EIO, "rootfs.erofs reads past the default init");
        IMAGEFS_CHECK(write_bytes(bin.data() + e.source_offset, e.length));
        continue;
      }
      auto src = static_cast<loff_t>(e.source_offset);
      for (uint64_t left = e.length; left > 0;) {
        ssize_t n = ::copy_file_range(fds_[e.source].get(), &src, fd, nullptr,
                                      static_cast<size_t>(left), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
                      errno == EBADF))
          return cpio::write_through_read(*this, at, fd, name);  // from the first byte not copied
        if (n < 0) return errno_error(errno, "cannot write", name);
        if (n == 0)
          return make_error(EIO, "the data file of layer " + layout_.layers[e.source].str() +
                                     " is shorter than rootfs.erofs needs");
        left -= static_cast<uint64_t>(n);
        at += static_cast<uint64_t>(n);
      }
    }
    if (at < layout_.size) {
      // The last hole: the file must still reach the image's size.
      IMAGEFS_CHECK(skip_to(layout_.size - 1));
      if (at == layout_.size - 1) {
        const uint8_t zero = 0;
        IMAGEFS_CHECK(write_bytes(&zero, 1));
      }
    }
    return {};
  }

 private:
  Layout layout_;
  std::vector<UniqueFd> fds_;
  cpio::ArchiveStats stats_;
};

// The merged tree as nodes, with the boot files and injected files added.
class Gatherer {
 public:
  Result<void> add_tree(overlay::Tree& tree) {
    std::unordered_map<std::string, uint32_t> by_path;
    std::unordered_map<std::string, uint32_t> layer_of;
    return tree.walk([&](const overlay::WalkEntry& e) -> Result<void> {
      uint32_t index = 0;
      if (!e.hardlink_first.empty()) {
        auto it = by_path.find(e.hardlink_first);
        if (it == by_path.end())
          return make_error(EIO, "the hardlink " + e.path + " comes before its first path");
        index = it->second;
      } else {
        Node n;
        const overlay::Attr& a = e.attr;
        n.mode = a.mode;
        n.uid = a.uid;
        n.gid = a.gid;
        n.mtime_sec = a.mtime_sec;
        n.mtime_nsec = a.mtime_nsec;
        n.rdev_major = a.rdev_major;
        n.rdev_minor = a.rdev_minor;
        IMAGEFS_TRY(names, tree.listxattr(a.ino));
        for (const std::string& name : names) {
          IMAGEFS_TRY(value, tree.getxattr(a.ino, name));
          n.xattrs.emplace_back(name, std::move(value));
        }
        if (S_ISLNK(a.mode)) {
          IMAGEFS_TRY(target, tree.readlink(a.ino));
          n.bytes = std::move(target);
        } else if (S_ISREG(a.mode) && a.size > 0) {
          IMAGEFS_TRY(content, tree.content(a.ino));
          const store::Digest& digest = content.layer->digest();
          auto [it, added] = layer_of.emplace(digest.str(), 0);
          if (added) {
            it->second = static_cast<uint32_t>(nodes_.layers.size());
            nodes_.layers.push_back(digest);
            struct stat st {};
            if (::fstat(content.layer->data_fd(), &st) != 0)
              return errno_error(errno, "cannot stat the data file of layer " + digest.str());
            nodes_.layer_sizes.push_back(static_cast<uint64_t>(st.st_size));
          }
          n.layer = it->second;
          n.layer_offset = content.layer->entry(content.entry).data_offset;
          n.size = content.size;
        }
        if (e.path.empty()) {
          nodes_.nodes[0] = std::move(n);
          return {};
        }
        index = static_cast<uint32_t>(nodes_.nodes.size());
        nodes_.nodes.push_back(std::move(n));
      }
      const size_t slash = e.path.rfind('/');
      const std::string parent = slash == std::string::npos ? "" : e.path.substr(0, slash);
      const std::string name = slash == std::string::npos ? e.path : e.path.substr(slash + 1);
      uint32_t parent_index = 0;
      if (!parent.empty()) {
        auto it = by_path.find(parent);
        if (it == by_path.end())
          return make_error(EIO, "the walk gave " + e.path + " before its directory");
        parent_index = it->second;
      }
      nodes_.nodes[parent_index].children[name] = index;
      if (e.hardlink_first.empty()) by_path.emplace(e.path, index);
      return {};
    });
  }

  // Puts a regular file (root:root) at `guest` ("/a/b"), replacing what is there and making
  // missing directories (0755, root, mtime 0); a non-directory in the way becomes one.
  void put(std::string_view guest, std::string bytes, uint32_t perm, int64_t mtime) {
    uint32_t dir = 0;
    std::string_view rest = guest;
    while (true) {
      while (rest.starts_with('/')) rest.remove_prefix(1);
      const size_t slash = rest.find('/');
      const std::string name(rest.substr(0, slash));
      if (slash == std::string_view::npos) {
        Node file;
        file.mode = S_IFREG | perm;
        file.mtime_sec = mtime;
        file.bytes = std::move(bytes);
        nodes_.nodes.push_back(std::move(file));
        nodes_.nodes[dir].children[name] = static_cast<uint32_t>(nodes_.nodes.size() - 1);
        return;
      }
      rest.remove_prefix(slash + 1);
      auto it = nodes_.nodes[dir].children.find(name);
      if (it != nodes_.nodes[dir].children.end() && S_ISDIR(nodes_.nodes[it->second].mode)) {
        dir = it->second;
        continue;
      }
      Node d;
      d.mode = S_IFDIR | 0755;
      nodes_.nodes.push_back(std::move(d));
      const auto made = static_cast<uint32_t>(nodes_.nodes.size() - 1);
      nodes_.nodes[dir].children[name] = made;
      dir = made;
    }
  }

  // The embedded default init at `guest` (0755, root, mtime 0), its bytes not copied.
  void put_default_init(std::string_view guest) {
    put(guest, std::string(), 0755, 0);
    Node& init = nodes_.nodes.back();
    init.layer = kInitSource;
    init.size = init::default_init_binary().size();
  }

  TreeNodes& nodes() { return nodes_; }

 private:
  static TreeNodes root_only() {
    TreeNodes t;
    t.nodes.emplace_back();
    t.nodes[0].mode = S_IFDIR | 0755;
    return t;
  }
  TreeNodes nodes_ = root_only();
};

class ImageMakerImpl final : public ImageMaker {
 public:
  explicit ImageMakerImpl(std::shared_ptr<store::BlobStore> blobs) : blobs_(std::move(blobs)) {}

  Result<std::shared_ptr<const cpio::Archive>> cached(
      const store::Digest& manifest, const cpio::ArchiveOptions& options) override {
    IMAGEFS_CHECK(cpio::detail::check_exec(options));
    std::vector<struct stat> stats;
    for (const HostFileOption& input : host_inputs(options)) {
      IMAGEFS_TRY(st, cpio::detail::stat_host(input.host, input.what));
      stats.push_back(st);
    }
    const std::string key = layout_key(manifest, options, stats);
    bool missing = false;
    IMAGEFS_TRY(bytes, read_file(layout_path(blobs_->root(), key), kMaxLayoutFile, &missing));
    if (missing) return std::shared_ptr<const cpio::Archive>();
    std::optional<Layout> layout = detail::decode_layout(key, bytes);
    if (!layout) return std::shared_ptr<const cpio::Archive>();  // damaged or old: lay out again
    cpio::ArchiveStats stats_out;
    stats_out.segments = 1;
    stats_out.segments_reused = 1;
    stats_out.raw_bytes = layout->size;
    return serve(std::move(*layout), stats_out);
  }

  Result<std::shared_ptr<const cpio::Archive>> make(const cpio::ImageSource& source,
                                                    const cpio::ArchiveMaker::TreeOpener& open_tree,
                                                    const cpio::ArchiveOptions& options) override {
    IMAGEFS_TRY(hit, cached(source.manifest, options));
    if (hit) return hit;

    Gatherer gather;
    {
      IMAGEFS_TRY(tree, open_tree());
      if (!tree) return make_error(EINVAL, "no tree to lay out " + source.manifest.str());
      IMAGEFS_CHECK(gather.add_tree(*tree));
    }
    // Host files are read once, here: what the key names is what goes in.
    std::vector<struct stat> stats;
    if (!options.init) {
      Result<init::InitConfig> config =
          init::init_config_from_image(source.config_json, options.exec);
      if (!config.ok()) return config.error().context("image " + source.manifest.str());
      gather.put_default_init(kInitPath);
      gather.put(init::kConfigPath, init::encode_config(*config), 0644, 0);
    }
    for (const HostFileOption& input : host_inputs(options)) {
      IMAGEFS_TRY(st, cpio::detail::stat_host(input.host, input.what));
      bool missing = false;
      IMAGEFS_TRY(bytes, read_file(input.host, off_t{1} << 32, &missing));
      if (missing)
        return make_error(ENOENT,
                          std::string(input.what) + " " + input.host.string() + " is missing");
      // The stat taken before reading names the bytes in the key; a file changed meanwhile
      // gets a new key on the next stat.
      stats.push_back(st);
      gather.put(input.guest, std::move(bytes), 0755, st.st_mtim.tv_sec);
    }
    const std::string key = layout_key(source.manifest, options, stats);
    IMAGEFS_TRY(layout, detail::lay_out(gather.nodes(), key));
    // No fsync (as plans): a torn file fails its checksum and is laid out again.
    IMAGEFS_CHECK(store::replace_shared(blobs_->root(), kKind, store::Digest::of(key).hex(),
                                        detail::encode_layout(key, layout)));
    cpio::ArchiveStats stats_out;
    stats_out.segments = 1;
    stats_out.segments_built = 1;
    stats_out.raw_bytes = layout.size;
    IMAGEFS_TRY(image, serve(std::move(layout), stats_out));
    if (!image) return make_error(EIO, "a layer's data file left the store while laying out");
    return image;
  }

 private:
  // The image, if every layer data file the layout reads is in the store with the size it had
  // when laid out (a layer ingested again by another imagefs could place data elsewhere);
  // nullptr otherwise.
  Result<std::shared_ptr<const cpio::Archive>> serve(Layout layout, cpio::ArchiveStats stats) {
    const uint64_t init_size = init::default_init_binary().size();
    for (const detail::Extent& e : layout.extents)
      if (e.source == kInitSource &&
          (e.source_offset > init_size || e.length > init_size - e.source_offset))
        return std::shared_ptr<const cpio::Archive>();  // another init than this imagefs embeds
    std::vector<UniqueFd> fds;
    for (size_t i = 0; i < layout.layers.size(); ++i) {
      const fs::path path = layer_data_path(*blobs_, layout.layers[i]);
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd) {
        if (errno == ENOENT) return std::shared_ptr<const cpio::Archive>();
        return errno_error(errno, "cannot open", path);
      }
      struct stat st {};
      if (::fstat(fd.get(), &st) != 0) return errno_error(errno, "cannot stat", path);
      if (static_cast<uint64_t>(st.st_size) != layout.layer_sizes[i])
        return std::shared_ptr<const cpio::Archive>();
      fds.push_back(std::move(fd));
    }
    return std::shared_ptr<const cpio::Archive>(
        std::make_shared<ErofsImage>(std::move(layout), std::move(fds), stats));
  }

  std::shared_ptr<store::BlobStore> blobs_;
};

}  // namespace

Result<std::shared_ptr<ImageMaker>> ImageMaker::create(std::shared_ptr<store::BlobStore> blobs) {
  if (!blobs) return make_error(EINVAL, "ImageMaker needs a blob store");
  return std::shared_ptr<ImageMaker>(std::make_shared<ImageMakerImpl>(std::move(blobs)));
}

Result<store::SharedUse> shared_files_by_image(const fs::path& store_root) {
  store::SharedUse out;
  const fs::path dir = store::shared_path(store_root, kKind, std::string(64, '0')).parent_path();
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    if (ec.value() == ENOENT) return out;
    return errno_error(ec.value(), "cannot list", dir);
  }
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const fs::path path = it->path();
    const std::string name = path.filename().string();
    if (name.size() != 64 || name.find_first_not_of("0123456789abcdef") != std::string::npos)
      continue;
    // The magic line and the key line are all that is read: "sha256:<manifest>/erofs/<hex>".
    std::ifstream in(path, std::ios::binary);
    std::string head(4096, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
    std::optional<std::string> key = detail::layout_file_key(head);
    if (!key) continue;
    const size_t slash = key->find('/');
    if (slash == std::string::npos) continue;
    auto manifest = store::Digest::parse(std::string_view(*key).substr(0, slash));
    if (!manifest.ok()) continue;
    out[*manifest].insert(path);
  }
  if (ec && ec.value() != ENOENT) return errno_error(ec.value(), "cannot list", dir);
  return out;
}

Result<std::set<fs::path>> shared_files_in_use(const fs::path& store_root) {
  IMAGEFS_TRY(by_image, shared_files_by_image(store_root));
  return store::files_in_use(store_root, by_image);
}

}  // namespace imagefs::erofs
