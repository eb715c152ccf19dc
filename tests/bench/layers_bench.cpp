// Measures the layer engine on an image already pulled into a store, for `scripts/bench layers`
// (which runs umoci on the same image in the same run and prints the ratios): ingest time of
// every layer, the time to list the merged root, and 4 KiB reads at random offsets of the largest
// file, first with the page cache dropped (never read before), then again (cached).
//
// usage: layers_bench CACHE_DIR REFERENCE   (prints "key value" lines)
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "overlay/layer_index.h"
#include "overlay/tree.h"
#include "registry/platform.h"
#include "registry/reference.h"
#include "store/blob_store.h"
#include "store/catalog.h"

using namespace imagefs;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

[[noreturn]] void die(const std::string& what, const Error& e) {
  std::fprintf(stderr, "layers_bench: %s: %s\n", what.c_str(), e.message.c_str());
  std::exit(1);
}

bool drop_page_cache() {
  ::sync();
  int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, "3\n", 2) == 2;
  ::close(fd);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: layers_bench CACHE_DIR REFERENCE\n");
    return 2;
  }
  auto ref = registry::parse_reference(argv[2]);
  if (!ref.ok()) die("reference", ref.error());
  auto blobs = store::BlobStore::open(argv[1]);
  if (!blobs.ok()) die("store", blobs.error());
  auto catalog = store::Catalog::open(store::Catalog::file_in(argv[1]));
  if (!catalog.ok()) die("catalog", catalog.error());
  auto rec = (*catalog)->ref(ref->str(), registry::host_platform().str());
  if (!rec.ok() || !*rec) die("ref", make_error(ENOENT, "not pulled: " + ref->str()));
  auto image = (*catalog)->image((**rec).manifest);
  if (!image.ok() || !*image) die("image", make_error(ENOENT, "no image record"));

  auto cache = overlay::LayerCache::create(*blobs);
  if (!cache.ok()) die("layer cache", cache.error());
  auto t0 = Clock::now();
  std::vector<std::shared_ptr<const overlay::LayerIndex>> layers;
  for (const store::LayerRecord& layer : (**image).layers) {
    auto index = (*cache)->get(layer);
    if (!index.ok()) die("ingest", index.error());
    layers.push_back(*index);
  }
  std::printf("ingest_ms %.1f\n", ms_since(t0));

  auto t1 = Clock::now();
  auto tree = overlay::Tree::open(layers);
  if (!tree.ok()) die("tree", tree.error());
  auto root = (*tree)->readdir(overlay::kRootIno);
  if (!root.ok()) die("readdir", root.error());
  std::printf("ls_root_ms %.2f\nls_root_entries %zu\n", ms_since(t1), root->size());

  // The whole tree, to count entries and find the largest file (not timed).
  size_t entries = 0;
  overlay::Attr largest;
  std::string largest_path;
  auto walked = (*tree)->walk([&](const overlay::WalkEntry& e) -> Result<void> {
    ++entries;
    if (S_ISREG(e.attr.mode) && e.attr.size > largest.size) {
      largest = e.attr;
      largest_path = e.path;
    }
    return {};
  });
  if (!walked.ok()) die("walk", walked.error());
  std::printf("entries %zu\nlargest_file /%s\nlargest_size %llu\n", entries, largest_path.c_str(),
              static_cast<unsigned long long>(largest.size));

  std::mt19937_64 rng(42);
  std::vector<uint64_t> offsets;
  for (int i = 0; i < 20; ++i)
    offsets.push_back(largest.size > 4096 ? rng() % (largest.size - 4096) : 0);
  std::vector<uint8_t> buf(4096);
  std::printf("page_cache_dropped %d\n", drop_page_cache() ? 1 : 0);
  double cold_max = 0, warm_max = 0;
  for (uint64_t off : offsets) {
    auto t = Clock::now();
    auto n = (*tree)->read(largest.ino, off, buf);
    if (!n.ok()) die("read", n.error());
    cold_max = std::max(cold_max, ms_since(t));
  }
  for (uint64_t off : offsets) {
    auto t = Clock::now();
    auto n = (*tree)->read(largest.ino, off, buf);
    if (!n.ok()) die("read", n.error());
    warm_max = std::max(warm_max, ms_since(t));
  }
  std::printf("read_4k_cold_max_ms %.3f\nread_4k_warm_max_ms %.3f\n", cold_max, warm_max);
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  std::printf("peak_rss_kib %ld\n", usage.ru_maxrss);
  return 0;
}
