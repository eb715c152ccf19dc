// Garbage collection and `rm`: decide what to remove from the catalog's records and the blobs on
// disk, then remove it catalog first, blobs after.
#include "store/gc.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <tuple>

#include "common/errno_error.h"
#include "store/derived.h"
#include "store/file_util.h"
#include "store/lease.h"

namespace imagefs::store {

namespace {

// Bytes of the regular files under `dir` (0 when it does not exist).
uint64_t derived_bytes(const std::filesystem::path& dir) {
  std::error_code ec;
  uint64_t total = 0;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) total += it->file_size(size_ec);
  }
  return total;
}

// Every blob digest an image record names, each once.
std::vector<Digest> digests_of(const ImageRecord& image) {
  std::vector<Digest> out{image.manifest, image.config};
  for (const LayerRecord& layer : image.layers) out.push_back(layer.digest);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// The state of one collection: the records and blobs as loaded, kept up to date as things are
// removed, and the report.
class Collector {
 public:
  Collector(BlobStore& blobs, Catalog& catalog, GcReport& report)
      : blobs_(blobs), catalog_(catalog), report_(report) {}

  Result<void> load() {
    IMAGEFS_TRY(images, catalog_.images());
    IMAGEFS_TRY(refs, catalog_.refs());
    IMAGEFS_TRY(present, blobs_.list());
    images_ = std::move(images);
    refs_ = std::move(refs);
    for (const ImageRecord& image : images_)
      for (const Digest& d : digests_of(image)) ++uses_[d];
    for (const RefRecord& ref : refs_)
      if (ref.index) ++uses_[*ref.index];
    for (BlobInfo& blob : present) {
      // What a blob costs on disk includes what was derived from it (a layer's index and
      // uncompressed data, ~2.5x the compressed layer): --max-size bounds the whole store.
      blob.size += derived_bytes(blobs_.derived_dir(blob.digest));
      total_ += blob.size;
      present_.emplace(blob.digest, std::move(blob));
    }
    report_.size_before = total_;
    report_.size_after = total_;
    return {};
  }

  // Counts the shared derived files in the store's size.
  void add_shared(const std::vector<SharedFile>& files) {
    for (const SharedFile& f : files) total_ += f.size;
    report_.size_before = total_;
    report_.size_after = total_;
  }

  // Counts the partial downloads left (`kept`) in the store's size, and those removed before the
  // collection (`removed`) in its size before.
  void add_partials(const std::vector<PartialInfo>& kept, const std::vector<PartialInfo>& removed) {
    for (const PartialInfo& p : kept) {
      total_ += p.size;
      partials_.push_back(p);
    }
    report_.size_before = total_;
    for (const PartialInfo& p : removed) report_.size_before += p.size;
    report_.size_after = total_;
  }

  // Removes every partial download no writer holds (gc runs under an exclusive pull lease, so
  // none is being written by a pull).
  Result<void> remove_idle_partials() {
    IMAGEFS_TRY(removed, blobs_.remove_stale_partials(std::numeric_limits<int64_t>::max()));
    for (PartialInfo& p : removed) {
      total_ -= std::min(total_, p.size);
      report_.partials_removed.push_back(std::move(p));
    }
    report_.size_after = total_;
    return {};
  }

  [[nodiscard]] bool has_partials() const { return !partials_.empty(); }

  Result<void> remove_shared(const SharedFile& file) {
    if (::unlink(file.path.c_str()) != 0 && errno != ENOENT)
      return errno_error(errno, "cannot remove", file.path);
    total_ -= file.size;
    report_.size_after = total_;
    report_.shared_removed.push_back(file);
    return {};
  }

  [[nodiscard]] const std::vector<ImageRecord>& images() const { return images_; }
  [[nodiscard]] uint64_t total() const { return total_; }
  [[nodiscard]] bool referenced(const Digest& d) const {
    auto it = uses_.find(d);
    return it != uses_.end() && it->second > 0;
  }
  [[nodiscard]] bool named(const Digest& manifest) const {
    return std::any_of(refs_.begin(), refs_.end(),
                       [&](const RefRecord& r) { return r.manifest == manifest; });
  }
  [[nodiscard]] const std::map<Digest, BlobInfo>& present() const { return present_; }

  // Removes the image unless it is in use; returns whether it did.
  Result<bool> remove_image(const Digest& manifest) {
    auto it = std::find_if(images_.begin(), images_.end(),
                           [&](const ImageRecord& i) { return i.manifest == manifest; });
    if (it == images_.end()) return false;
    // Held until the blobs are gone, so that a mount starting now waits and then finds the
    // image missing (and pulls it again) rather than finding a record with missing blobs.
    IMAGEFS_TRY(claim, Lease::try_image_exclusive(blobs_.root(), manifest));
    if (!claim) {
      auto& in_use = report_.images_in_use;
      if (std::find(in_use.begin(), in_use.end(), manifest) == in_use.end())
        in_use.push_back(manifest);
      return false;
    }
    ImageRecord image = std::move(*it);
    images_.erase(it);
    IMAGEFS_TRY(removed_refs, catalog_.remove_image(manifest));
    report_.images_removed.push_back(manifest);

    std::vector<Digest> candidates = digests_of(image);
    for (const Digest& d : candidates) --uses_[d];
    for (const RefRecord& ref : removed_refs) {
      forget_ref(ref);
      if (ref.index) candidates.push_back(*ref.index);
      report_.refs_removed.push_back(ref);
    }
    for (const Digest& d : candidates)
      if (!referenced(d)) IMAGEFS_CHECK(remove_blob(d));
    return true;
  }

  // After a ref was removed from the catalog.
  void forget_ref(const RefRecord& ref) {
    auto it = std::find_if(refs_.begin(), refs_.end(), [&](const RefRecord& r) {
      return r.reference == ref.reference && r.platform == ref.platform;
    });
    if (it == refs_.end()) return;
    if (it->index) --uses_[*it->index];
    refs_.erase(it);
  }

  // Removes a blob (if present) and what was derived from it.
  Result<void> remove_blob(const Digest& d) {
    auto it = present_.find(d);
    if (it == present_.end()) return {};
    // Products first: a crash before the blob goes leaves an unreferenced blob for the next gc,
    // whereas products without their blob would be found only by remove_stale_derived.
    IMAGEFS_CHECK(remove_derived(blobs_, d));
    IMAGEFS_CHECK(blobs_.remove(d));
    total_ -= it->second.size;
    report_.size_after = total_;
    report_.blobs_removed.push_back(std::move(it->second));
    present_.erase(it);
    return {};
  }

 private:
  BlobStore& blobs_;
  Catalog& catalog_;
  GcReport& report_;
  std::vector<ImageRecord> images_;
  std::vector<RefRecord> refs_;
  std::map<Digest, int> uses_;  // how many images (each once) and refs (index) name a digest
  std::map<Digest, BlobInfo> present_;
  uint64_t total_ = 0;
  std::vector<PartialInfo> partials_;  // left after the stale ones went
};

}  // namespace

uint64_t GcReport::bytes_freed() const {
  uint64_t n = 0;
  for (const BlobInfo& b : blobs_removed) n += b.size;
  for (const PartialInfo& p : partials_removed) n += p.size;
  for (const SharedFile& f : shared_removed) n += f.size;
  return n;
}

Result<GcReport> collect(BlobStore& blobs, Catalog& catalog, uint64_t max_size, int64_t now,
                         const std::set<std::filesystem::path>& keep_shared) {
  IMAGEFS_TRY(no_pulls, Lease::pull_exclusive(blobs.root()));
  GcReport report;
  int64_t keep_after = now - kKeepUnreferencedSeconds;

  IMAGEFS_TRY(partials, blobs.remove_stale_partials(keep_after));
  report.partials_removed = std::move(partials);
  // Temporary directories of builders that died, and products whose blob is gone.
  if (auto stale = remove_stale_derived(blobs); !stale.ok()) return stale.error();
  // Lease files of holders that died (their flocks are gone with them).
  IMAGEFS_CHECK(detail::sweep_lock_dir(blobs.root() / "leases"));

  // Temporary shared files nobody holds go now (replace_shared() holds one for microseconds).
  IMAGEFS_TRY(shared, list_shared(blobs.root(), now - 3600));

  Collector c(blobs, catalog, report);
  IMAGEFS_CHECK(c.load());
  c.add_shared(shared);
  IMAGEFS_TRY(partials_left, blobs.list_partials());
  c.add_partials(partials_left, report.partials_removed);

  std::vector<Digest> unnamed;
  for (const ImageRecord& image : c.images())
    if (!c.named(image.manifest)) unnamed.push_back(image.manifest);
  for (const Digest& manifest : unnamed) IMAGEFS_CHECK(c.remove_image(manifest));

  std::vector<Digest> orphans;
  for (const auto& [digest, blob] : c.present())
    if (!c.referenced(digest) && blob.modified < keep_after) orphans.push_back(digest);
  for (const Digest& d : orphans) IMAGEFS_CHECK(c.remove_blob(d));

  std::vector<SharedFile> by_size;  // shared files that stay unless the size demands
  for (const SharedFile& file : shared) {
    if (keep_shared.contains(file.path)) continue;  // in use, however long ago it was marked
    if (file.last_used < now - kKeepUnusedSharedSeconds) {
      IMAGEFS_CHECK(c.remove_shared(file));
    } else if (file.last_used < now - kMarkUsedInterval) {
      by_size.push_back(file);
    }
  }

  // One order of last use for images and shared files.
  struct Candidate {
    int64_t when = 0;
    int kind = 0;  // 0: a shared file (first on a tie), 1: an image
    int64_t pulled_at = 0;
    std::string name;  // a shared file's path, an image's digest
    size_t index = 0;  // in by_size
  };
  std::vector<Candidate> by_use;
  for (size_t i = 0; i < by_size.size(); ++i)
    by_use.push_back({by_size[i].last_used, 0, 0, by_size[i].path.string(), i});
  for (const ImageRecord& image : c.images())
    by_use.push_back({image.last_used, 1, image.pulled_at, image.manifest.str(), 0});
  std::sort(by_use.begin(), by_use.end(), [](const Candidate& a, const Candidate& b) {
    return std::tie(a.when, a.kind, a.pulled_at, a.name) <
           std::tie(b.when, b.kind, b.pulled_at, b.name);
  });
  // Over the limit, young partial downloads go before any image: no pull is running (the
  // exclusive lease), and a pull downloads them again if still wanted.
  if (c.total() > max_size && c.has_partials()) IMAGEFS_CHECK(c.remove_idle_partials());
  for (const Candidate& candidate : by_use) {
    if (c.total() <= max_size) break;
    if (candidate.kind == 0) {
      IMAGEFS_CHECK(c.remove_shared(by_size[candidate.index]));
    } else {
      IMAGEFS_TRY(manifest, Digest::parse(candidate.name));
      IMAGEFS_CHECK(c.remove_image(manifest));
    }
  }
  return report;
}

Result<GcReport> remove_reference(BlobStore& blobs, Catalog& catalog, std::string_view reference,
                                  std::string_view platform) {
  IMAGEFS_TRY(no_pulls, Lease::pull_exclusive(blobs.root()));
  GcReport report;
  IMAGEFS_TRY(refs, catalog.refs());
  std::vector<RefRecord> matches;
  for (RefRecord& ref : refs)
    if (ref.reference == reference && (platform.empty() || ref.platform == platform))
      matches.push_back(std::move(ref));
  if (matches.empty()) {
    std::string what = "no image " + std::string(reference);
    if (!platform.empty()) what += " for platform " + std::string(platform);
    return make_error(ENOENT, what + " in the store");
  }
  for (const RefRecord& ref : matches) {
    IMAGEFS_CHECK(catalog.remove_ref(ref.reference, ref.platform));
    report.refs_removed.push_back(ref);
  }

  Collector c(blobs, catalog, report);
  IMAGEFS_CHECK(c.load());  // sees the catalog without the removed refs
  IMAGEFS_TRY(partials, blobs.list_partials());
  c.add_partials(partials, {});
  std::set<Digest> seen;
  for (const RefRecord& ref : matches) {
    if (seen.insert(ref.manifest).second && !c.named(ref.manifest))
      IMAGEFS_CHECK(c.remove_image(ref.manifest));
    // The index belonged to the name; the image (if kept) does not need it.
    if (ref.index && !c.referenced(*ref.index)) IMAGEFS_CHECK(c.remove_blob(*ref.index));
  }
  return report;
}

}  // namespace imagefs::store
