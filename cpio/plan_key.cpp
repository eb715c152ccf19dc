// The keys of cached plans: the planner version, the level, the /init and the host files'
// identities, hashed (docs/STORE_FORMAT.md, "Archive plans").
#include "cpio/plan_key.h"

#include <string_view>

#include "cpio/inputs.h"
#include "cpio/segment.h"
#include "init/init_config.h"

namespace imagefs::cpio::detail {

namespace {

// Bumped whenever planning or cutting changes, so that an old plan is not used for new rules.
// 2: a top-level TRAILER!!! of the image is left out; an injected file is no directory for the
// tail.
constexpr std::string_view kPlannerVersion = "planner 2";

}  // namespace

std::string options_key_text(const ArchiveOptions& options,
                             const std::vector<HostFileOption>& files,
                             const std::vector<struct stat>& stats) {
  std::string text;
  if (options.init) {
    text += "init\n";
  } else {
    // The default /init: its program (another imagefs may embed another) and the command
    // override. "config 2" names how config.json is read into /.imagefs/init.conf: change it
    // when that changes (2: Entrypoint and Cmd as docker's StrSlice, and unread with --exec).
    text += "default init " + std::string(default_init_file()->digest.hex()) + " config 2\n";
    if (options.exec) {
      text += "exec";
      for (const std::string& arg : *options.exec) {
        text += '\0';
        text += arg;
      }
      text += '\n';
    }
  }
  for (size_t i = 0; i < files.size() && i < stats.size(); ++i) {
    const struct stat& st = stats[i];
    text += files[i].host.string() + '\0' + files[i].guest + '\0' + std::to_string(st.st_size) +
            ' ' + std::to_string(st.st_mtim.tv_sec) + '.' + std::to_string(st.st_mtim.tv_nsec) +
            ' ' + std::to_string(st.st_ctim.tv_sec) + '.' + std::to_string(st.st_ctim.tv_nsec) +
            ' ' + std::to_string(st.st_ino) + ' ' + std::to_string(st.st_dev) + '\n';
  }
  return text;
}

std::string plan_key(const store::Digest& image, const ArchiveOptions& options, int level,
                     const std::vector<struct stat>& stats) {
  std::string text(kPlannerVersion);
  text += '\n';
  text += std::to_string(level) + '\n';
  text += options_key_text(options, host_files(options), stats);
  return image.str() + "/" + std::string(detail::format_dir(options.format)) + "/" +
         std::string(store::Digest::of(text).hex());
}

std::string image_part_key(const store::Digest& image, const ArchiveOptions& options, int level) {
  std::string text(kPlannerVersion);
  text += '\n';
  text += std::to_string(level) + '\n';
  for (const HostFileOption& file : host_files(options)) text += file.guest + '\n';
  // The default /init's config file is a tail entry too: the image part records what the image
  // has at its parent.
  if (!options.init) text += std::string(init::kConfigPath) + '\n';
  return image.str() + "/" + std::string(detail::format_dir(options.format)) + "/image/" +
         std::string(store::Digest::of(text).hex());
}

}  // namespace imagefs::cpio::detail
