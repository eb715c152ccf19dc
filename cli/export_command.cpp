// `imagefs export REF DIR` and `imagefs export REF --tar FILE`: the merged root filesystem of an
// image written out as a directory tree or a tar archive (the writers are in export_writers.cpp).
// Useful to users, and the way tests compare our merge with `umoci unpack`. Also the opening of
// an image that every command reading one shares (open_image, open_tree).
#include <filesystem>
#include <ostream>

#include "cli/commands.h"
#include "cli/export.h"
#include "cli/progress.h"
#include "overlay/tree.h"
#include "registry/puller.h"
#include "registry/reference.h"
#include "store/lease.h"

namespace imagefs::cli {

Result<std::shared_ptr<overlay::Tree>> open_tree(OpenImage& image) {
  if (image.tree) return image.tree;
  ProgressView view(image.io->err, image.io->err_is_terminal);
  std::unique_ptr<registry::ProgressSink> progress =
      make_pull_progress(view, image.source.familiar());
  if (!image.opener->has_layers(image.image))
    IMAGEFS_CHECK(image.opener->fetch_layers(image.image, image.source, progress.get()));
  // The progress also shows a layer fetched again because the store's copy rotted.
  IMAGEFS_TRY(tree, image.opener->open_tree(image.image, &image.source, progress.get()));
  image.tree = std::move(tree);
  return image.tree;
}

Result<OpenImage> open_image(const Args& args, const std::string& text, Io& io, TreeWhen when) {
  IMAGEFS_TRY(ref, registry::parse_reference(text));
  IMAGEFS_TRY(options, registry_options(args));
  IMAGEFS_TRY(store, open_store(args));
  IMAGEFS_TRY(puller, registry::Puller::create(store.blobs, store.catalog, options));
  const registry::Platform platform = puller->default_platform();
  IMAGEFS_TRY(layers, overlay::LayerCache::create(store.blobs));
  auto opener = std::make_shared<fs::ImageOpener>(store.blobs, store.catalog, std::move(puller),
                                                  std::move(layers));
  // A tag the store has already resolved is used as it is (no network), as `docker run` uses a
  // local image; --pull asks the registry again. Digest references never need to.
  const fs::Resolve resolve = args.has("pull") ? fs::Resolve::registry : fs::Resolve::stored;
  Result<fs::LeasedImage> leased = [&] {
    ProgressView view(io.err, io.err_is_terminal);
    std::unique_ptr<registry::ProgressSink> progress = make_pull_progress(view, ref.familiar());
    return opener->open(ref, platform, resolve, progress.get());
  }();
  if (!leased.ok()) return leased.error();
  OpenImage open{std::move(store),
                 std::move(leased->record),
                 nullptr,
                 std::make_shared<store::Lease>(std::move(leased->lease)),
                 std::move(opener),
                 std::move(ref),
                 &io};
  if (when == TreeWhen::now) {
    IMAGEFS_TRY(tree, open_tree(open));
    (void)tree;
  }
  return open;
}

int run_export(const Args& args, Io& io) {
  const auto& pos = args.positional();
  auto tar = args.get("tar");
  if (pos.empty() || pos.size() > 2 || (tar && pos.size() != 1) || (!tar && pos.size() != 2)) {
    io.err << "imagefs export: give an image and a directory (or --tar FILE)\n";
    return kExitUsage;
  }
  auto image = open_image(args, pos[0], io);
  if (!image.ok()) return report(io, "export " + pos[0], image.error());
  Result<void> done = tar ? export_to_tar(*image->tree, *tar) : export_to_dir(*image->tree, pos[1]);
  if (!done.ok()) return report(io, "export " + pos[0], done.error());
  return kExitOk;
}

}  // namespace imagefs::cli
