// The subcommands of `imagefs`, each a function from parsed arguments to an exit status, and the
// pieces they share (opening the store, registry options from flags).
#pragma once

#include <filesystem>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "cli/args.h"
#include "common/errno_error.h"
#include "cpio/archive.h"
#include "fs/open_image.h"
#include "overlay/tree.h"
#include "registry/options.h"
#include "registry/progress.h"
#include "registry/reference.h"
#include "store/blob_store.h"
#include "store/catalog.h"
#include "store/lease.h"

namespace imagefs::cli {

// Where a command writes: results to `out` (stdout), progress and errors to `err` (stderr).
struct Io {
  std::ostream& out;
  std::ostream& err;
  bool err_is_terminal = false;
};

struct Command {
  std::string name;
  std::string synopsis;  // "pull [OPTIONS] REF..."
  std::string summary;   // one line
  std::vector<OptionSpec> options;
  int (*run)(const Args& args, Io& io);
  // Checks the arguments without touching the store, a registry or a mount: a failure is a
  // usage error (exit status 2), reported before `run` is called. Null: nothing to check
  // beyond the options' syntax.
  Result<void> (*check)(const Args& args) = nullptr;
};

// Every command, in the order `imagefs help` lists them.
const std::vector<Command>& commands();

// Exit statuses.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

// Shared option groups.
std::vector<OptionSpec> cache_options();
std::vector<OptionSpec> registry_option_specs();
Result<registry::RegistryOptions> registry_options(const Args& args);

struct Store {
  std::shared_ptr<store::BlobStore> blobs;
  std::shared_ptr<store::Catalog> catalog;
};
// Opens the store at --cache-dir, or the default cache directory.
Result<Store> open_store(const Args& args);

// An image ready to read, opened by fs::ImageOpener (fs/open_image.h): resolved (or pulled) if
// missing, leased (gc leaves it alone while this is alive), its layers fetched and ingested and
// merged lazily.
struct OpenImage {
  Store store;
  store::ImageRecord image;
  std::shared_ptr<overlay::Tree> tree;  // null until open_tree() when opened with TreeWhen::later
  std::shared_ptr<store::Lease> lease;
  std::shared_ptr<fs::ImageOpener> opener;
  registry::Reference source;  // where missing layers come from
  Io* io = nullptr;            // where their download's progress is shown
};
// When open_image() ingests the layers and opens the tree: `later` is for commands that may not
// need it (build, when the archive's image part is cached).
enum class TreeWhen { now, later };
// A tag the store already resolved is used without asking the registry unless --pull is given.
Result<OpenImage> open_image(const Args& args, const std::string& reference, Io& io,
                             TreeWhen tree = TreeWhen::now);
// Fetches the layers the store lacks, ingests them (the first time the store sees them) and opens
// the merged tree, once: sets and returns image.tree.
Result<std::shared_ptr<overlay::Tree>> open_tree(OpenImage& image);
// The option group of commands that read images: registry options and --pull.
std::vector<OptionSpec> image_option_specs();

class ProgressView;
// Renders a pull's events in `view`, one item per layer (cli/store_commands.cpp).
std::unique_ptr<registry::ProgressSink> make_pull_progress(ProgressView& view, std::string image);

// Prints "imagefs: WHAT: message" and returns kExitFailed.
int report(Io& io, const std::string& what, const Error& error);

// Command implementations (cli/store_commands.cpp).
int run_pull(const Args& args, Io& io);
int run_images(const Args& args, Io& io);
int run_rm(const Args& args, Io& io);
int run_gc(const Args& args, Io& io);
int run_verify(const Args& args, Io& io);
// "holds 93 MiB (blobs ..., layer indexes and data ..., ...)": the store at `root` as du counts
// it, for `imagefs status` (cli/store_commands.cpp).
std::string store_usage_line(const std::filesystem::path& root);
int run_export(const Args& args, Io& io);  // cli/export_command.cpp
int run_build(const Args& args, Io& io);   // cli/build_command.cpp
// The archive options of `build` (and `mount`): --format, --inject, --init, --exec, --level
// (cli/build_command.cpp). EINVAL or ENOENT with a message naming the option.
std::vector<OptionSpec> archive_option_specs();
Result<cpio::ArchiveOptions> archive_options(const Args& args);
// The usage check of `mount` (Command::check; the other commands' are in cli/cli.cpp).
Result<void> check_mount(const Args& args);
int run_mount(const Args& args, Io& io);   // cli/mount_command.cpp
int run_status(const Args& args, Io& io);  // cli/mount_command.cpp
std::vector<OptionSpec> mount_option_specs();

}  // namespace imagefs::cli
