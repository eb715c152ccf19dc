// `imagefs pull`, `images`, `rm`, `gc` and `verify`: the store's commands.
#include <ctime>
#include <map>
#include <ostream>
#include <sstream>

#include "cli/commands.h"
#include "cli/progress.h"
#include "cpio/archive.h"
#include "registry/puller.h"
#include "registry/reference.h"
#include "store/gc.h"
#include "store/lease.h"

namespace imagefs::cli {
namespace {

int64_t now_seconds() { return static_cast<int64_t>(std::time(nullptr)); }

std::string short_digest(const store::Digest& d) { return d.str().substr(0, 19); }

// Renders a pull's events with a ProgressView: one item per layer.
class PullProgress : public registry::ProgressSink {
 public:
  PullProgress(ProgressView& view, std::string image) : view_(view), image_(std::move(image)) {}

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
    if (auto it = ids_.find(layer.digest.str()); it != ids_.end())  // after a wait
      view_.end(it->second, ItemEnd::cached, "another process downloaded it");
    else
      ids_[layer.digest.str()] = view_.add_finished(label(layer), layer.size, ItemEnd::cached);
  }
  void layer_failed(const registry::LayerId& layer, const Error& error) override {
    end(layer, ItemEnd::failed, error.message);
  }
  void message(const std::string& text) override { view_.message(image_ + ": " + text); }

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
  std::map<std::string, size_t> ids_;  // the puller serializes calls: no lock needed
};

std::string ago(int64_t then, int64_t now) {
  if (then <= 0) return "never";
  int64_t s = now - then;
  if (s < 60) return "just now";
  if (s < 3600) return std::to_string(s / 60) + " minutes ago";
  if (s < 86400) return std::to_string(s / 3600) + " hours ago";
  return std::to_string(s / 86400) + " days ago";
}

void print_gc_report(Io& io, const store::GcReport& r) {
  for (const store::RefRecord& ref : r.refs_removed)
    io.out << "removed " << ref.reference << " (" << ref.platform << ")\n";
  for (const store::Digest& d : r.images_in_use)
    io.out << "kept " << d.str() << ": in use by a running mount or build\n";
  io.out << "freed " << format_size(r.bytes_freed()) << " (" << r.blobs_removed.size() << " blobs, "
         << r.partials_removed.size() << " partial downloads, " << r.shared_removed.size()
         << " archive segments and plans); the store holds " << format_size(r.size_after) << "\n";
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
    PullProgress progress(view, ref.familiar());
    Result<registry::ResolvedImage> image = (*puller)->pull(ref, &progress);
    if (!image.ok()) {
      status = report(io, "pull " + ref.familiar(), image.error());
      continue;
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
  struct Row {
    std::string ref, digest, platform, size, used;
  };
  std::vector<Row> rows{{"REFERENCE", "DIGEST", "PLATFORM", "SIZE", "LAST USED"}};
  int64_t now = now_seconds();
  for (const store::RefRecord& ref : *refs) {
    auto image = store->catalog->image(ref.manifest);
    if (!image.ok()) return report(io, "images", image.error());
    if (!*image) continue;  // a ref whose image gc is removing
    const store::ImageRecord& im = **image;
    rows.push_back({ref.reference, short_digest(im.manifest), im.platform, format_size(im.size),
                    ago(im.last_used, now)});
  }
  size_t w[4] = {0, 0, 0, 0};
  for (const Row& r : rows) {
    w[0] = std::max(w[0], r.ref.size());
    w[1] = std::max(w[1], r.digest.size());
    w[2] = std::max(w[2], r.platform.size());
    w[3] = std::max(w[3], r.size.size());
  }
  auto pad = [](const std::string& s, size_t width) {
    return s + std::string(width - s.size() + 2, ' ');
  };
  for (const Row& r : rows)
    io.out << pad(r.ref, w[0]) << pad(r.digest, w[1]) << pad(r.platform, w[2]) << pad(r.size, w[3])
           << r.used << "\n";
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
    auto removed = store::remove_reference(*store->blobs, *store->catalog, ref->str(), platform);
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
  auto in_use = cpio::shared_files_in_use(store->blobs->root());
  if (!in_use.ok()) return report(io, "gc", in_use.error());
  auto report_or =
      store::collect(*store->blobs, *store->catalog, *max_size, now_seconds(), *in_use);
  if (!report_or.ok()) return report(io, "gc", report_or.error());
  print_gc_report(io, *report_or);
  if (report_or->size_after > *max_size)
    io.err << "imagefs gc: the store is still " << format_size(report_or->size_after)
           << ": the rest is in use\n";
  return kExitOk;
}

int run_verify(const Args& args, Io& io) {
  Result<Store> store = open_store(args);
  if (!store.ok()) return report(io, "verify", store.error());
  auto listed = store->blobs->list();
  if (!listed.ok()) return report(io, "verify", listed.error());
  auto bad = store->blobs->verify();
  if (!bad.ok()) return report(io, "verify", bad.error());
  for (const store::Digest& d : *bad)
    io.err << "imagefs verify: " << store->blobs->path(d).string() << " does not match its name\n";
  io.out << listed->size() << " blobs verified, " << bad->size() << " bad\n";

  // Partial downloads: those that can never become their blob (longer than the size an image
  // record declares for it) or whose blob is already stored are removed; the others wait for a
  // pull to resume them, or for gc.
  auto partials = store->blobs->list_partials();
  if (!partials.ok()) return report(io, "verify", partials.error());
  if (!partials->empty()) {
    auto images = store->catalog->images();
    if (!images.ok()) return report(io, "verify", images.error());
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
  return bad->empty() ? kExitOk : kExitFailed;
}

}  // namespace imagefs::cli
