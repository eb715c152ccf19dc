// The store's disk usage by kind (a walk of the root, as du -sb adds it up) and each image's
// share of it.
#include "store/usage.h"

#include <sys/stat.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>

#include "common/errno_error.h"
#include "store/lease.h"

namespace imagefs::store {

namespace fs = std::filesystem;

namespace {

// st_size of `path` without following a symlink; nullopt if it vanished.
Result<std::optional<struct stat>> lstat_of(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::optional<struct stat>();
    return errno_error(errno, "cannot stat", path);
  }
  return std::optional<struct stat>(st);
}

// Adds the bytes of `dir` and everything under it, each inode once (du counts a hard-linked file
// once): directories to `*dirs`, the rest to `*files`. Entries that vanish are skipped.
Result<void> add_tree(const fs::path& dir, uint64_t* files, uint64_t* dirs,
                      std::set<std::pair<dev_t, ino_t>>* seen) {
  IMAGEFS_TRY(top, lstat_of(dir));
  if (!top) return {};
  if (!seen->emplace(top->st_dev, top->st_ino).second) return {};
  *(S_ISDIR(top->st_mode) ? dirs : files) += static_cast<uint64_t>(top->st_size);
  if (!S_ISDIR(top->st_mode)) return {};
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    if (ec.value() == ENOENT) return {};
    return errno_error(ec.value(), "cannot list", dir);
  }
  for (; !ec && it != fs::directory_iterator(); it.increment(ec))
    IMAGEFS_CHECK(add_tree(it->path(), files, dirs, seen));
  if (ec && ec.value() != ENOENT) return errno_error(ec.value(), "cannot list", dir);
  return {};
}

}  // namespace

uint64_t tree_bytes(const fs::path& dir) {
  uint64_t total = 0;
  std::set<std::pair<dev_t, ino_t>> seen;
  (void)add_tree(dir, &total, &total, &seen);  // what could be read: gc's running total
  return total;
}

Result<DiskUsage> disk_usage(const fs::path& root) {
  DiskUsage usage;
  std::set<std::pair<dev_t, ino_t>> seen;
  IMAGEFS_TRY(top, lstat_of(root));
  if (!top) return make_error(ENOENT, "the store " + root.string() + " does not exist");
  seen.emplace(top->st_dev, top->st_ino);
  usage.other += static_cast<uint64_t>(top->st_size);
  std::error_code ec;
  fs::directory_iterator it(root, ec);
  if (ec) return errno_error(ec.value(), "cannot list", root);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const fs::path& path = it->path();
    const std::string name = path.filename().string();
    uint64_t* bucket = &usage.other;
    if (name == "blobs") {
      bucket = &usage.blobs;
    } else if (name == "derived") {
      bucket = &usage.derived;
    } else if (name == "tmp") {
      bucket = &usage.partials;
    } else if (name == "catalog.lmdb" || name == "catalog.lmdb-lock") {
      bucket = &usage.catalog;
    } else if (name == "segments") {
      // Plans apart from the segments: segments/plans/ (a shared-file kind of cpio/'s).
      IMAGEFS_TRY(st, lstat_of(path));
      if (!st || !seen.emplace(st->st_dev, st->st_ino).second) continue;
      usage.other += static_cast<uint64_t>(st->st_size);
      if (!S_ISDIR(st->st_mode)) continue;
      std::error_code kind_ec;
      fs::directory_iterator kinds(path, kind_ec);
      for (; !kind_ec && kinds != fs::directory_iterator(); kinds.increment(kind_ec)) {
        bool plans = kinds->path().filename() == "plans";
        IMAGEFS_CHECK(
            add_tree(kinds->path(), plans ? &usage.plans : &usage.segments, &usage.other, &seen));
      }
      if (kind_ec && kind_ec.value() != ENOENT)
        return errno_error(kind_ec.value(), "cannot list", path);
      continue;
    }
    IMAGEFS_CHECK(add_tree(path, bucket, &usage.other, &seen));
  }
  if (ec) return errno_error(ec.value(), "cannot list", root);
  return usage;
}

Result<StoreUsage> store_usage(const BlobStore& blobs, const Catalog& catalog,
                               const SharedUse& shared_use) {
  StoreUsage out;
  IMAGEFS_TRY(disk, disk_usage(blobs.root()));
  out.disk = disk;
  IMAGEFS_TRY(images, catalog.images());
  IMAGEFS_TRY(refs, catalog.refs());
  IMAGEFS_TRY(present, blobs.list());

  // Every item an image may use, by a name of its own, with its bytes.
  std::map<std::string, uint64_t> bytes;
  for (const BlobInfo& blob : present)
    bytes["b:" + blob.digest.str()] = blob.size + tree_bytes(blobs.derived_dir(blob.digest));
  for (const auto& [manifest, paths] : shared_use) {
    for (const fs::path& path : paths) {
      struct stat st {};
      if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode))
        bytes["s:" + path.string()] = static_cast<uint64_t>(st.st_size);
    }
  }

  // Which items each image uses, and how many images use each.
  std::map<Digest, std::set<std::string>> uses;
  for (const ImageRecord& image : images) {
    std::set<std::string>& mine = uses[image.manifest];
    mine.insert("b:" + image.manifest.str());
    mine.insert("b:" + image.config.str());
    for (const LayerRecord& layer : image.layers) mine.insert("b:" + layer.digest.str());
    if (auto it = shared_use.find(image.manifest); it != shared_use.end())
      for (const fs::path& path : it->second) mine.insert("s:" + path.string());
  }
  for (const RefRecord& ref : refs)
    if (ref.index)
      if (auto it = uses.find(ref.manifest); it != uses.end())
        it->second.insert("b:" + ref.index->str());
  std::map<std::string, int> users;
  for (const auto& [manifest, items] : uses)
    for (const std::string& item : items) ++users[item];

  for (const ImageRecord& image : images) {
    ImageUsage usage{image.manifest, 0, 0};
    for (const std::string& item : uses[image.manifest]) {
      auto it = bytes.find(item);
      if (it == bytes.end()) continue;  // not in the store (a layer not fetched yet)
      usage.size += it->second;
      if (users[item] > 1) usage.shared += it->second;
    }
    out.images.push_back(usage);
  }
  for (const auto& [item, n] : users)
    if (auto it = bytes.find(item); it != bytes.end()) out.used_by_images += it->second;
  return out;
}

std::set<fs::path> files_in_use(const fs::path& store_root, const SharedUse& by_image) {
  std::set<fs::path> keep;
  for (const auto& [manifest, files] : by_image)
    if (in_use(store_root, manifest)) keep.insert(files.begin(), files.end());
  return keep;
}

}  // namespace imagefs::store
