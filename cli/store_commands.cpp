// `imagefs pull`, `images`, `rm`, `gc` and `verify`: the store's commands.
#include <algorithm>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>

#include "cli/commands.h"
#include "cli/progress.h"
#include "common/text.h"
#include "cpio/archive.h"
#include "erofs/erofs.h"
#include "registry/puller.h"
#include "registry/reference.h"
#include "store/derived.h"
#include "store/gc.h"
#include "store/lease.h"
#include "store/usage.h"

namespace imagefs::cli {
namespace {

// The shared derived files each image uses (archive plans and segments, rootfs.erofs layouts),
// for gc, rm and usage; and those of images a mount or a build holds.
Result<store::SharedUse> shared_files_by_image(const std::filesystem::path& root) {
  IMAGEFS_TRY(use, cpio::shared_files_by_image(root));
  IMAGEFS_TRY(erofs_use, erofs::shared_files_by_image(root));
  for (auto& [manifest, files] : erofs_use) use[manifest].merge(files);
  return use;
}
Result<std::set<std::filesystem::path>> shared_files_in_use(const std::filesystem::path& root) {
  IMAGEFS_TRY(keep, cpio::shared_files_in_use(root));
  IMAGEFS_TRY(erofs_keep, erofs::shared_files_in_use(root));
  keep.merge(erofs_keep);
  return keep;
}

int64_t now_seconds() { return static_cast<int64_t>(std::time(nullptr)); }

std::string short_digest(const store::Digest& d) { return d.str().substr(0, 19); }

// Renders a pull's events with a ProgressView: one item per layer. On a terminal (`live`), the
// hashing of a stored layer is an item of its own, redrawn as it goes.
class PullProgress : public registry::ProgressSink {
 public:
  PullProgress(ProgressView& view, std::string image, bool live = false)
      : view_(view), image_(std::move(image)), live_(live) {}

  void layer_waiting(const registry::LayerId& layer, uint64_t bytes) override {
    if (auto it = ids_.find(layer.digest.str()); it != ids_.end())
      view_.update(it->second, bytes);
    else
      ids_[layer.digest.str()] =
          view_.start(label(layer), layer.size, "waiting for another download", bytes);
  }
  void layer_started(const registry::LayerId& layer, uint64_t offset) override {
    auto it = ids_.find(layer.digest.str());  // after a wait: the other process stopped
    size_t id = it != ids_.end() ? it->second : view_.start(label(layer), layer.size);
    if (it != ids_.end()) view_.retitle(id, "downloading");
    ids_[layer.digest.str()] = id;
    if (offset) view_.update(id, offset);
  }
  void layer_progress(const registry::LayerId& layer, uint64_t bytes) override {
    if (auto it = ids_.find(layer.digest.str()); it != ids_.end()) view_.update(it->second, bytes);
  }
  void layer_finished(const registry::LayerId& layer) override { end(layer, ItemEnd::done, ""); }
  void layer_cached(const registry::LayerId& layer) override {
    if (auto it = checking_.find(layer.digest.str()); it != checking_.end()) {
      view_.end(it->second, ItemEnd::cached, "its SHA-256 matches");
      checking_.erase(it);
      return;
    }
    if (auto it = ids_.find(layer.digest.str()); it != ids_.end())  // after a wait
      view_.end(it->second, ItemEnd::cached, "another process downloaded it");
    else
      ids_[layer.digest.str()] =
          view_.add_finished(label(layer), layer.size, ItemEnd::cached,
                             checked_.contains(layer.digest.str()) ? "its SHA-256 matches" : "");
  }
  void layer_checking(const registry::LayerId& layer, uint64_t bytes) override {
    checked_.insert(layer.digest.str());
    if (!live_) return;
    auto it = checking_.find(layer.digest.str());
    if (it == checking_.end())
      it = checking_
               .emplace(layer.digest.str(),
                        view_.start(label(layer) + " (checking the stored copy)", layer.size))
               .first;
    view_.update(it->second, bytes);
  }
  void layer_damaged(const registry::LayerId& layer) override {
    const std::string why =
        "the stored copy does not match its digest (the disk changed it): fetching it again";
    if (auto it = checking_.find(layer.digest.str()); it != checking_.end()) {
      view_.end(it->second, ItemEnd::failed, why);
      checking_.erase(it);
    } else {
      view_.message(label(layer) + ": " + why);
    }
  }
  void layer_failed(const registry::LayerId& layer, const Error& error) override {
    if (auto it = checking_.find(layer.digest.str()); it != checking_.end()) {
      view_.end(it->second, ItemEnd::failed, error.message);
      checking_.erase(it);
      return;
    }
    end(layer, ItemEnd::failed, error.message);
  }
  void message(const std::string& text) override { view_.message(image_ + ": " + text); }
  // A mirror (hosts.toml, --mirror) served it: one line, so a log shows where bytes came from.
  void served(const std::string& what, const store::Digest& digest,
              const std::string& host) override {
    view_.message(image_ + ": " + what + " " + short_digest(digest) + " via " + printable(host));
  }

 private:
  std::string label(const registry::LayerId& layer) const {
    return image_ + " layer " + std::to_string(layer.index + 1) + "/" +
           std::to_string(layer.count) + " " + short_digest(layer.digest);
  }
  void end(const registry::LayerId& layer, ItemEnd how, const std::string& note) {
    if (auto it = ids_.find(layer.digest.str()); it != ids_.end()) view_.end(it->second, how, note);
  }

  ProgressView& view_;
  std::string image_;
  bool live_;
  // The puller serializes calls: no lock needed.
  std::map<std::string, size_t> ids_;
  std::map<std::string, size_t> checking_;  // live items of layers being hashed
  std::set<std::string> checked_;           // layers whose stored copy was hashed
};

std::string ago(int64_t then, int64_t now) {
  if (then <= 0) return "never";
  int64_t s = now - then;
  if (s < 60) return "just now";
  if (s < 3600) return std::to_string(s / 60) + " minutes ago";
  if (s < 86400) return std::to_string(s / 3600) + " hours ago";
  return std::to_string(s / 86400) + " days ago";
}

// The kinds of bytes in the store, for people: "blobs 3.1 MiB, layer indexes and data ...".
std::string describe(const store::DiskUsage& d) {
  std::string out = "blobs " + format_size(d.blobs) + ", layer indexes and data " +
                    format_size(d.derived) + ", archive segments " + format_size(d.segments) +
                    ", archive plans " + format_size(d.plans);
  if (d.partials) out += ", partial downloads " + format_size(d.partials);
  out += ", catalog " + format_size(d.catalog) + ", other " + format_size(d.other);
  return out;
}

// What an image is to people: its references (or none), digest and platform.
std::string image_name(const std::vector<store::RefRecord>& refs, const store::ImageRecord& image) {
  std::string names;
  for (const store::RefRecord& ref : refs) {
    if (ref.manifest != image.manifest) continue;
    if (names.find(ref.reference) != std::string::npos) continue;  // one per platform asked
    names += (names.empty() ? "" : ", ") + ref.reference;
  }
  if (names.empty()) names = "an image no reference names";
  return names + " (" + image.manifest.str() + ", " + image.platform + ")";
}

// The images that use blob `d` (as manifest, config, layer, or the index a ref of theirs went
// through), and what it is to the first of them.
std::vector<const store::ImageRecord*> users_of(const std::vector<store::ImageRecord>& images,
                                                const std::vector<store::RefRecord>& refs,
                                                const store::Digest& d, std::string* role) {
  std::vector<const store::ImageRecord*> out;
  for (const store::ImageRecord& image : images) {
    std::string what;
    if (image.manifest == d) what = "manifest";
    if (image.config == d) what = "config";
    for (size_t i = 0; i < image.layers.size(); ++i)
      if (image.layers[i].digest == d)
        what = "layer " + std::to_string(i + 1) + " of " + std::to_string(image.layers.size());
    for (const store::RefRecord& ref : refs)
      if (what.empty() && ref.index == d && ref.manifest == image.manifest) what = "index";
    if (what.empty()) continue;
    if (out.empty() && role != nullptr) *role = what;
    out.push_back(&image);
  }
  return out;
}

// After blobs were found bad (and perhaps repaired): removes what was derived from them, their
// layer indexes and the archive plans and segments of the images that use them (those shared
// with sound images, and those a running mount or build holds, stay). A sentence for people.
Result<std::string> remove_derived_of_bad(const Store& store,
                                          const std::vector<store::Digest>& bad) {
  IMAGEFS_TRY(images, store.catalog->images());
  IMAGEFS_TRY(refs, store.catalog->refs());
  std::set<store::Digest> affected;
  for (const store::Digest& d : bad)
    for (const store::ImageRecord* image : users_of(images, refs, d, nullptr))
      affected.insert(image->manifest);
  const std::filesystem::path& root = store.blobs->root();
  IMAGEFS_TRY(shared_use, shared_files_by_image(root));
  IMAGEFS_TRY(keep, shared_files_in_use(root));
  IMAGEFS_TRY(removed, store::remove_derived_of_bad(*store.blobs, bad, affected, shared_use, keep));
  size_t held = 0;
  for (const store::Digest& manifest : affected)
    if (auto it = shared_use.find(manifest); it != shared_use.end())
      for (const std::filesystem::path& path : it->second)
        held += keep.contains(path) && std::filesystem::exists(path) ? 1 : 0;
  uint64_t bytes = 0;
  for (const store::SharedFile& f : removed) bytes += f.size;
  std::string text = "removed what was built from the bad copies: their layer indexes and " +
                     std::to_string(removed.size()) + " archive segments and plans (" +
                     format_size(bytes) + "), made again when next needed";
  if (held)
    text += "; " + std::to_string(held) +
            " archive files a running mount or build holds stay until it lets go (remount to "
            "rebuild them)";
  return text;
}

void print_gc_report(Io& io, const store::GcReport& r) {
  for (const store::Digest& d : r.images_removed) {
    std::string names;
    for (const store::RefRecord& ref : r.refs_removed)
      if (ref.manifest == d)
        names += (names.empty() ? "" : ", ") + ref.reference + " (" + ref.platform + ")";
    if (names.empty()) names = "an image no reference named";
    auto bytes = r.image_bytes.find(d);
    io.out << "removed " << names << " " << short_digest(d) << ": "
           << format_size(bytes == r.image_bytes.end() ? 0 : bytes->second)
           << " with its layer indexes and archives\n";
  }
  for (const store::RefRecord& ref : r.refs_removed)
    if (std::find(r.images_removed.begin(), r.images_removed.end(), ref.manifest) ==
        r.images_removed.end())
      io.out << "removed " << ref.reference << " (" << ref.platform << ")\n";
  for (const store::Digest& d : r.images_in_use)
    io.out << "kept " << d.str() << ": in use by a running mount or build\n";
  io.out << "freed " << format_size(r.bytes_freed()) << " (" << r.blobs_removed.size()
         << " blobs with their layer indexes, " << r.partials_removed.size()
         << " partial downloads, " << r.shared_removed.size()
         << " archive segments and plans); the store holds " << format_size(r.size_after) << " ("
         << describe(r.disk_after) << ")\n";
}

}  // namespace

std::unique_ptr<registry::ProgressSink> make_pull_progress(ProgressView& view, std::string image) {
  return std::make_unique<PullProgress>(view, std::move(image));
}

int run_pull(const Args& args, Io& io) {
  if (args.positional().empty()) {
    io.err << "imagefs pull: name at least one image reference\n";
    return kExitUsage;
  }
  std::vector<registry::Reference> refs;
  for (const std::string& text : args.positional()) {
    Result<registry::Reference> ref = registry::parse_reference(text);
    if (!ref.ok()) return report(io, "pull", ref.error());
    refs.push_back(*ref);
  }
  Result<registry::RegistryOptions> options = registry_options(args);
  if (!options.ok()) return report(io, "pull", options.error());
  Result<Store> store = open_store(args);
  if (!store.ok()) return report(io, "pull", store.error());
  auto puller = registry::Puller::create(store->blobs, store->catalog, *options);
  if (!puller.ok()) return report(io, "pull", puller.error());

  int status = kExitOk;
  ProgressView view(io.err, io.err_is_terminal);
  for (const registry::Reference& ref : refs) {
    // Keeps gc away while this pull has blobs that no catalog record names yet.
    Result<store::Lease> lease = store::Lease::pull(store->blobs->root());
    if (!lease.ok()) return report(io, "pull " + ref.familiar(), lease.error());
    PullProgress progress(view, ref.familiar(), io.err_is_terminal);
    // The stored layers of an image already present are hashed and, if bad, fetched again: a
    // pull is how a user asks for the image to be whole.
    Result<registry::ResolvedImage> image =
        (*puller)->pull(ref, &progress, registry::StoredBlobs::verify);
    if (!image.ok()) {
      status = report(io, "pull " + ref.familiar(), image.error());
      continue;
    }
    if (!image->repaired.empty()) {
      std::vector<store::Digest> bad;
      for (const registry::RepairedBlob& r : image->repaired) {
        view.message(ref.familiar() + ": repaired " + r.what + " " + r.digest.str() +
                     ": the stored copy did not match its digest (the disk changed it); fetched "
                     "again from the registry");
        bad.push_back(r.digest);
      }
      Result<std::string> cleaned = remove_derived_of_bad(*store, bad);
      if (!cleaned.ok()) {
        status = report(io, "pull " + ref.familiar(), cleaned.error());
        continue;
      }
      view.message(ref.familiar() + ": " + *cleaned);
    }
    io.out << ref.str() << " " << image->image.manifest.str() << " " << image->image.platform
           << "\n";
    io.out.flush();
  }
  return status;
}

int run_images(const Args& args, Io& io) {
  Result<Store> store = open_store(args);
  if (!store.ok()) return report(io, "images", store.error());
  auto refs = store->catalog->refs();
  if (!refs.ok()) return report(io, "images", refs.error());
  auto shared_use = shared_files_by_image(store->blobs->root());
  if (!shared_use.ok()) return report(io, "images", shared_use.error());
  auto usage = store::store_usage(*store->blobs, *store->catalog, *shared_use);
  if (!usage.ok()) return report(io, "images", usage.error());
  std::map<store::Digest, store::ImageUsage> by_image;
  for (const store::ImageUsage& u : usage->images) by_image.emplace(u.manifest, u);
  struct Row {
    std::string ref, digest, platform, size, shared, used;
  };
  std::vector<Row> rows{{"REFERENCE", "DIGEST", "PLATFORM", "SIZE", "SHARED", "LAST USED"}};
  int64_t now = now_seconds();
  for (const store::RefRecord& ref : *refs) {
    auto image = store->catalog->image(ref.manifest);
    if (!image.ok()) return report(io, "images", image.error());
    if (!*image) continue;  // a ref whose image gc is removing
    const store::ImageRecord& im = **image;
    store::ImageUsage u{im.manifest, 0, 0};
    if (auto it = by_image.find(im.manifest); it != by_image.end()) u = it->second;
    rows.push_back({ref.reference, short_digest(im.manifest), im.platform, format_size(u.size),
                    format_size(u.shared), ago(im.last_used, now)});
  }
  size_t w[5] = {0, 0, 0, 0, 0};
  for (const Row& r : rows) {
    w[0] = std::max(w[0], r.ref.size());
    w[1] = std::max(w[1], r.digest.size());
    w[2] = std::max(w[2], r.platform.size());
    w[3] = std::max(w[3], r.size.size());
    w[4] = std::max(w[4], r.shared.size());
  }
  auto pad = [](const std::string& s, size_t width) {
    return s + std::string(width - s.size() + 2, ' ');
  };
  for (const Row& r : rows)
    io.out << pad(r.ref, w[0]) << pad(r.digest, w[1]) << pad(r.platform, w[2]) << pad(r.size, w[3])
           << pad(r.shared, w[4]) << r.used << "\n";
  // The whole store, so that the numbers add up to what du says.
  const store::DiskUsage& d = usage->disk;
  io.out << "the store holds " << format_size(d.total()) << " (" << describe(d) << "); images use "
         << format_size(usage->used_by_images) << " of it\n";
  // Partial downloads take space no image row shows.
  auto partials = store->blobs->list_partials();
  if (!partials.ok()) return report(io, "images", partials.error());
  if (!partials->empty()) {
    uint64_t bytes = 0;
    for (const store::PartialInfo& p : *partials) bytes += p.size;
    io.err << "imagefs images: the store also holds " << partials->size() << " partial downloads ("
           << format_size(bytes)
           << "): the next pull resumes them; `imagefs verify` and `imagefs gc` remove them\n";
  }
  return kExitOk;
}

std::string store_usage_line(const std::filesystem::path& root) {
  auto usage = store::disk_usage(root);
  if (!usage.ok()) return "cannot measure the store: " + usage.error().message;
  return "holds " + format_size(usage->total()) + " (" + describe(*usage) + ")";
}

int run_rm(const Args& args, Io& io) {
  if (args.positional().empty()) {
    io.err << "imagefs rm: name at least one image reference\n";
    return kExitUsage;
  }
  Result<Store> store = open_store(args);
  if (!store.ok()) return report(io, "rm", store.error());
  std::string platform;
  if (auto p = args.get("platform")) {
    auto parsed = registry::parse_platform(*p);
    if (!parsed.ok()) return report(io, "rm", parsed.error());
    platform = parsed->str();
  }
  int status = kExitOk;
  for (const std::string& text : args.positional()) {
    auto ref = registry::parse_reference(text);
    if (!ref.ok()) {
      status = report(io, "rm", ref.error());
      continue;
    }
    // An image's archives (plans, segments) go with it, unless a running mount holds them.
    auto shared_use = shared_files_by_image(store->blobs->root());
    if (!shared_use.ok()) return report(io, "rm", shared_use.error());
    auto in_use = shared_files_in_use(store->blobs->root());
    if (!in_use.ok()) return report(io, "rm", in_use.error());
    auto removed = store::remove_reference(*store->blobs, *store->catalog, ref->str(), platform,
                                           *in_use, *shared_use);
    if (!removed.ok()) {
      status = report(io, "rm " + text, removed.error());
      continue;
    }
    print_gc_report(io, *removed);
  }
  return status;
}

int run_gc(const Args& args, Io& io) {
  auto text = args.get("max-size");
  if (!text) {
    io.err << "imagefs gc: --max-size SIZE is required (e.g. --max-size 10G)\n";
    return kExitUsage;
  }
  auto max_size = parse_size(*text);
  if (!max_size.ok()) return report(io, "gc", max_size.error());
  Result<Store> store = open_store(args);
  if (!store.ok()) return report(io, "gc", store.error());
  // Archive segments and plans are counted and removed by last use with the images, except those
  // of images a mount or a build holds.
  auto in_use = shared_files_in_use(store->blobs->root());
  if (!in_use.ok()) return report(io, "gc", in_use.error());
  // Each image's plans and segments, which go with it.
  auto shared_use = shared_files_by_image(store->blobs->root());
  if (!shared_use.ok()) return report(io, "gc", shared_use.error());
  auto report_or = store::collect(*store->blobs, *store->catalog, *max_size, now_seconds(), *in_use,
                                  *shared_use);
  if (!report_or.ok()) return report(io, "gc", report_or.error());
  const store::GcReport& r = *report_or;
  print_gc_report(io, r);
  if (r.size_after > *max_size) {
    std::string why;
    if (!r.images_in_use.empty()) why += "images a running mount or build holds";
    if (r.recent_shared_kept)
      why += std::string(why.empty() ? "" : ", ") + "archive files made or used in the last day (" +
             format_size(r.recent_shared_kept) + ")";
    if (why.empty()) why = "what gc never removes";
    io.err << "imagefs gc: the store is still " << format_size(r.size_after) << ", over "
           << format_size(*max_size) << ": it keeps " << why << ", the catalog ("
           << format_size(r.disk_after.catalog) << ") and other files ("
           << format_size(r.disk_after.other) << ")\n";
  }
  return kExitOk;
}

int run_verify(const Args& args, Io& io) {
  const bool repair = args.has("repair");
  Result<Store> store = open_store(args);
  if (!store.ok()) return report(io, "verify", store.error());
  auto listed = store->blobs->list();
  if (!listed.ok()) return report(io, "verify", listed.error());
  std::vector<store::Digest> bad;
  {
    uint64_t total = 0;
    for (const store::BlobInfo& b : *listed) total += b.size;
    ProgressView view(io.err, io.err_is_terminal);
    // On a terminal only: elsewhere the result lines say it all.
    std::optional<size_t> item;
    if (io.err_is_terminal)
      item = view.start("hashing " + std::to_string(listed->size()) + " blobs", total);
    uint64_t before = 0;
    for (const store::BlobInfo& b : *listed) {
      store::HashProgress on_hashed;
      if (item) on_hashed = [&](uint64_t n) { view.update(*item, before + n); };
      auto state = store->blobs->check(b.digest, on_hashed);
      if (!state.ok()) return report(io, "verify", state.error());
      if (*state == store::BlobState::bad) bad.push_back(b.digest);
      before += b.size;
    }
    if (item) view.end(*item, ItemEnd::done);
  }
  auto images = store->catalog->images();
  if (!images.ok()) return report(io, "verify", images.error());
  auto refs = store->catalog->refs();
  if (!refs.ok()) return report(io, "verify", refs.error());

  // Each bad blob, the images that use it, and (with --repair) a reference to fetch it from.
  std::vector<store::Digest> unused;
  std::map<store::Digest, std::set<store::Digest>> to_repair;  // by image: its bad blobs
  for (const store::Digest& d : bad) {
    std::string role;
    auto users = users_of(*images, *refs, d, &role);
    io.err << "imagefs verify: blob " << d.str() << (role.empty() ? "" : " (" + role + ")")
           << " in the store does not match its digest: the disk changed it ("
           << store->blobs->path(d).string() << ")\n";
    if (users.empty()) {
      io.err << "  used by no image\n";
      unused.push_back(d);
    }
    for (const store::ImageRecord* image : users) {
      io.err << "  used by " << image_name(*refs, *image) << "\n";
      to_repair[image->manifest].insert(d);
    }
  }
  io.out << listed->size() << " blobs verified, " << bad.size() << " bad\n";
  size_t left = bad.size();
  if (!bad.empty() && !repair) {
    io.err << "imagefs verify: `imagefs verify --repair` fetches the bad blobs again from the "
              "registries of the images that use them (or `imagefs pull` each image named)\n";
  } else if (!bad.empty()) {
    auto options = registry_options(args);
    if (!options.ok()) return report(io, "verify --repair", options.error());
    auto puller = registry::Puller::create(store->blobs, store->catalog, *options);
    if (!puller.ok()) return report(io, "verify --repair", puller.error());
    std::set<store::Digest> fixed;
    ProgressView view(io.err, io.err_is_terminal);
    for (const auto& entry : to_repair) {
      // Named, not a structured binding: the lambdas below capture it (clang before 16).
      const store::Digest& manifest = entry.first;
      const auto& digests = entry.second;
      std::set<store::Digest> wanted;
      for (const store::Digest& d : digests)
        if (!fixed.contains(d)) wanted.insert(d);
      if (wanted.empty()) continue;
      auto image = std::find_if(images->begin(), images->end(), [&](const store::ImageRecord& i) {
        return i.manifest == manifest;
      });
      // The registry and repository to ask: those of a reference that names the image (blobs are
      // fetched by digest, so a tag that moved meanwhile does not matter).
      auto ref = std::find_if(refs->begin(), refs->end(),
                              [&](const store::RefRecord& r) { return r.manifest == manifest; });
      if (ref == refs->end()) {
        io.err << "imagefs verify: cannot repair " << image_name(*refs, *image)
               << ": no reference names it, so its registry is unknown; `imagefs gc` removes it\n";
        continue;
      }
      auto source = registry::parse_reference(ref->reference);
      if (!source.ok()) return report(io, "verify --repair", source.error());
      PullProgress progress(view, source->familiar(), io.err_is_terminal);
      auto repaired = (*puller)->repair(*source, *image, wanted, &progress);
      if (!repaired.ok()) {
        io.err << "imagefs verify: cannot repair " << image_name(*refs, *image) << ": "
               << printable(repaired.error().message) << "\n";
        continue;
      }
      for (const registry::RepairedBlob& r : *repaired) {
        fixed.insert(r.digest);
        io.out << "repaired " << r.digest.str() << " (" << r.what << " of "
               << image_name(*refs, *image) << ") from " << ref->reference << "\n";
      }
    }
    // Bad blobs no image uses: nothing to fetch them for. Removed, under gc's lease (a pull
    // that found one present must not lose it to us).
    if (!unused.empty()) {
      auto no_pulls = store::Lease::pull_exclusive(store->blobs->root());
      if (!no_pulls.ok()) return report(io, "verify --repair", no_pulls.error());
      for (const store::Digest& d : unused) {
        auto state = store->blobs->check(d);
        if (!state.ok()) return report(io, "verify --repair", state.error());
        if (*state != store::BlobState::bad) continue;
        if (auto r = store::remove_derived(*store->blobs, d); !r.ok())
          return report(io, "verify --repair", r.error());
        if (auto r = store->blobs->remove(d); !r.ok())
          return report(io, "verify --repair", r.error());
        io.out << "removed " << d.str() << ": used by no image\n";
        fixed.insert(d);
      }
    }
    auto cleaned = remove_derived_of_bad(*store, bad);
    if (!cleaned.ok()) return report(io, "verify --repair", cleaned.error());
    io.err << "imagefs verify: " << *cleaned << "\n";
    left = 0;
    for (const store::Digest& d : bad) left += fixed.contains(d) ? 0 : 1;
    io.out << fixed.size() << " repaired, " << left << " still bad\n";
    if (left)
      io.err << "imagefs verify: " << left
             << " bad blobs remain: run `imagefs verify --repair` again when their registries "
                "answer, or `imagefs rm` the images named above\n";
  }

  // Partial downloads: those that can never become their blob (longer than the size an image
  // record declares for it) or whose blob is already stored are removed; the others wait for a
  // pull to resume them, or for gc.
  auto partials = store->blobs->list_partials();
  if (!partials.ok()) return report(io, "verify", partials.error());
  if (!partials->empty()) {
    std::map<store::Digest, uint64_t> declared;
    for (const store::ImageRecord& image : *images)
      for (const store::LayerRecord& layer : image.layers) declared[layer.digest] = layer.size;
    uint64_t bytes = 0;
    size_t removed = 0;
    for (const store::PartialInfo& p : *partials) {
      bytes += p.size;
      auto size = declared.find(p.digest);
      bool useless =
          store->blobs->contains(p.digest) || (size != declared.end() && p.size > size->second);
      if (!useless) continue;
      auto gone = store->blobs->remove_partial(p.digest);
      if (!gone.ok()) return report(io, "verify", gone.error());
      if (!*gone) continue;  // a pull is writing it
      io.err << "imagefs verify: removed the partial download of " << p.digest.str() << " ("
             << format_size(p.size) << "): "
             << (size != declared.end() && p.size > size->second
                     ? "longer than the " + std::to_string(size->second) + " bytes of its blob"
                     : std::string("its blob is stored"))
             << "\n";
      ++removed;
    }
    io.out << partials->size() << " partial downloads (" << format_size(bytes) << "), " << removed
           << " removed";
    if (removed < partials->size()) {
      io.out << "; the next pull resumes the others, `imagefs gc` removes those untouched for a "
                "day (all of them when the store is over --max-size)";
    }
    io.out << "\n";
  }
  return left == 0 ? kExitOk : kExitFailed;
}

}  // namespace imagefs::cli
