// Fuzzes layer ingest: arbitrary bytes as an uncompressed tar layer, ingested into a temporary
// store. No crash, leak or write outside the store; when the layer is accepted, its index opens
// and holds together: every entry is found by its path and listed under its parent, parents are
// directories, paths are clean, hardlinks resolve to non-directories, and every readable entry
// reads exactly its size.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "overlay/layer_index.h"
#include "store/blob_store.h"
#include "store/derived.h"

namespace {

using imagefs::overlay::EntryType;
using imagefs::overlay::kNoEntry;
using imagefs::overlay::LayerCache;
using imagefs::overlay::LayerEntry;
using imagefs::overlay::LayerIndex;

void check(bool ok) {
  if (!ok) std::abort();
}

bool clean(std::string_view p) {
  if (p.empty() || p.front() == '/' || p.back() == '/') return false;
  while (!p.empty()) {
    size_t slash = p.find('/');
    std::string_view part = p.substr(0, slash);
    if (part.empty() || part == "." || part == "..") return false;
    p = slash == std::string_view::npos ? std::string_view() : p.substr(slash + 1);
  }
  return true;
}

void walk(const LayerIndex& index) {
  std::vector<uint8_t> buf(1024);
  for (size_t i = 0; i < index.size(); ++i) {
    LayerEntry e = index.entry(i);
    check(clean(e.path));
    check(index.find(e.path) == i);
    size_t slash = e.path.rfind('/');
    std::string_view parent = slash == std::string_view::npos ? "" : e.path.substr(0, slash);
    auto [first, last] = index.children(parent);
    check(first <= i && i < last);
    if (!parent.empty()) {
      auto p = index.find(parent);
      check(p.has_value() && index.entry(*p).type == EntryType::directory);
    }
    (void)index.xattrs(i);
    if (e.type == EntryType::hardlink && e.hardlink_target != kNoEntry) {
      check(e.hardlink_target != i && e.hardlink_target < index.size());
      LayerEntry t = index.entry(e.hardlink_target);
      check(t.type != EntryType::hardlink && t.type != EntryType::directory);
    }
    bool readable = e.type == EntryType::regular ||
                    (e.type == EntryType::hardlink && e.hardlink_target != kNoEntry);
    if (!readable) continue;
    uint64_t total = 0;
    for (;;) {
      auto n = index.read(i, total, buf);
      check(n.ok());
      if (*n == 0) break;
      total += *n;
    }
    check(total == e.size);
  }
  if (auto root = index.root()) check(root->path.empty() && root->type == EntryType::directory);
  (void)index.root_xattrs();
}

struct Store {
  Store() {
    // tmpfs when there is one: every blob and index is fsynced, which costs nothing there.
    std::string base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string tmpl = base + "/imagefs-layer-fuzz-XXXXXX";
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Store store;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto digest = imagefs::store::Digest::of(bytes);
  if (!store.blobs->put(digest, bytes).ok()) std::abort();
  imagefs::store::LayerRecord layer{digest, "application/vnd.oci.image.layer.v1.tar", size, {}};
  {
    auto index = store.cache->get(layer);
    if (index.ok()) walk(**index);
  }
  // Each input starts from nothing, and the store stays small.
  check(imagefs::store::remove_derived(*store.blobs, digest).ok());
  check(store.blobs->remove(digest).ok());
  check(!std::filesystem::exists(store.blobs->derived_dir(digest)));
  return 0;
}
