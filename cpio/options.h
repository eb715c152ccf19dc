// What an initramfs archive is made of, as users give it: the format, the compression level, the
// host files to inject, the /init to use (or imagefs' default /init with an --exec command), and
// the parsers of their command-line spellings. Part of cpio/'s interface (cpio/archive.h).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace imagefs::cpio {

enum class Format { gzip, zstd, none };

// "gz"/"gzip", "zst"/"zstd", "none"/"cpio". EINVAL names the accepted values.
Result<Format> parse_format(std::string_view text);
// The file name of the archive in an image directory: "initramfs.cpio.gz", ".cpio.zst", ".cpio".
std::string_view file_name(Format format);

// A host file that goes into the archive at `guest` with mode 0755 (root:root).
struct Inject {
  std::filesystem::path host;
  std::string guest;  // absolute, cleaned: "/usr/bin/agent"
};
// Parses "HOST:GUEST". EINVAL when GUEST is not absolute or has a ".." component; ENOENT when
// HOST does not exist or is not a regular file (the message names it).
Result<Inject> parse_inject(std::string_view spec);

struct ArchiveOptions {
  Format format = Format::gzip;
  std::vector<Inject> injects;
  std::optional<std::filesystem::path> init;  // becomes /init (0755), replacing the image's
  // Without `init`, /init is imagefs' default init (init/default_init.h, design decision 7), with
  // the image's config for it at /.imagefs/init.conf (init/init_config.h); `exec` then replaces
  // the image's Entrypoint and Cmd (as `docker run --entrypoint`). Not allowed with `init`.
  std::optional<std::vector<std::string>> exec;
  // Compression levels: libdeflate 1-12 (6 matches gzip -6's size or better; 12 beats gzip -9),
  // zstd 1-19.
  int gzip_level = 6;
  int zstd_level = 3;
};

}  // namespace imagefs::cpio
