// Archive options: the parsers of their command-line spellings, and their checks for the maker.
#include "cpio/options.h"

#include <sys/stat.h>
#include <zstd.h>

#include <optional>
#include <utility>

#include "common/errno_error.h"
#include "cpio/inputs.h"
#include "init/default_init.h"
#include "store/digest.h"

namespace imagefs::cpio {

namespace fs = std::filesystem;

namespace detail {

Result<int> level_of(const ArchiveOptions& options) {
  switch (options.format) {
    case Format::gzip:
      if (options.gzip_level < 1 || options.gzip_level > 12)
        return make_error(EINVAL, "gzip level " + std::to_string(options.gzip_level) +
                                      " is out of range: use 1 to 12");
      return options.gzip_level;
    case Format::zstd:
      if (options.zstd_level < 1 || options.zstd_level > ZSTD_maxCLevel())
        return make_error(EINVAL, "zstd level " + std::to_string(options.zstd_level) +
                                      " is out of range: use 1 to " +
                                      std::to_string(ZSTD_maxCLevel()));
      return options.zstd_level;
    case Format::none:
      return 0;
  }
  return 0;
}

Result<struct stat> stat_host(const fs::path& host, std::string_view what) {
  struct stat st {};
  if (::stat(host.c_str(), &st) != 0)
    return errno_error(errno, "cannot find " + std::string(what), host);
  if (!S_ISREG(st.st_mode))
    return make_error(ENOENT, std::string(what) + " " + host.string() + " is not a regular file");
  return st;
}

// EINVAL for an `exec` the default /init cannot use.
Result<void> check_exec(const ArchiveOptions& options) {
  if (!options.exec) return {};
  if (options.init)
    return make_error(EINVAL,
                      "--exec replaces the image's command for imagefs' default /init: it cannot "
                      "be used with --init");
  if (options.exec->empty() || options.exec->front().empty())
    return make_error(EINVAL, "--exec names no program");
  // No argv string can hold a NUL, and /.imagefs/init.conf separates its values with NULs (a JSON
  // array can spell one: "\u0000").
  for (const std::string& arg : *options.exec) {
    if (arg.find('\0') != std::string::npos)
      return make_error(EINVAL, "--exec: an argument holds a NUL character");
  }
  return {};
}

// The default /init as a host file: the same bytes, mtime and so segment in every archive.
const std::shared_ptr<const HostFile>& default_init_file() {
  static const std::shared_ptr<const HostFile> file = [] {
    const std::span<const uint8_t> binary = init::default_init_binary();
    std::string bytes(reinterpret_cast<const char*>(binary.data()), binary.size());
    store::Digest digest = store::Digest::of(bytes);
    return std::make_shared<const HostFile>(HostFile{"/init", std::move(bytes), std::move(digest)});
  }();
  return file;
}

// The host files of `options` in order: the init file first, if any, then the injected ones.
std::vector<HostFileOption> host_files(const ArchiveOptions& options, std::string_view init_guest) {
  std::vector<HostFileOption> out;
  if (options.init) out.push_back({*options.init, std::string(init_guest), "init file"});
  for (const Inject& inject : options.injects)
    out.push_back({inject.host, inject.guest, "injected file"});
  return out;
}

}  // namespace detail

namespace {

// "/a//b/./c/" -> "/a/b/c"; nullopt for a ".." component.
std::optional<std::string> clean_guest(std::string_view guest) {
  std::string out;
  size_t i = 0;
  while (i < guest.size()) {
    size_t end = guest.find('/', i);
    if (end == std::string_view::npos) end = guest.size();
    std::string_view part = guest.substr(i, end - i);
    i = end + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return std::nullopt;
    out += '/';
    out += part;
  }
  return out;
}

}  // namespace

Result<Format> parse_format(std::string_view text) {
  if (text == "gz" || text == "gzip") return Format::gzip;
  if (text == "zst" || text == "zstd") return Format::zstd;
  if (text == "none" || text == "cpio") return Format::none;
  return make_error(EINVAL, "unknown archive format \"" + std::string(text) +
                                "\": use gz (gzip), zst (zstd) or none (cpio)");
}

std::string_view file_name(Format format) {
  switch (format) {
    case Format::gzip:
      return "initramfs.cpio.gz";
    case Format::zstd:
      return "initramfs.cpio.zst";
    case Format::none:
      return "initramfs.cpio";
  }
  return "initramfs.cpio";
}

Result<Inject> parse_inject(std::string_view spec) {
  // Split at the first ':' as docker's -v does: host paths with ':' are rarer than guest ones.
  const size_t colon = spec.find(':');
  if (colon == std::string_view::npos || colon == 0)
    return make_error(EINVAL, "--inject " + std::string(spec) + ": expected HOST:GUEST");
  const std::string_view host = spec.substr(0, colon);
  const std::string_view guest = spec.substr(colon + 1);
  if (!guest.starts_with('/') || guest.find('\0') != std::string_view::npos)
    return make_error(EINVAL, "--inject " + std::string(spec) + ": the guest path " +
                                  std::string(guest) + " is not absolute");
  std::optional<std::string> clean = clean_guest(guest);
  if (!clean)
    return make_error(EINVAL, "--inject " + std::string(spec) + ": the guest path " +
                                  std::string(guest) + " has a \"..\" component");
  if (clean->empty())
    return make_error(EINVAL, "--inject " + std::string(spec) + ": the guest path is the root");
  IMAGEFS_TRY(st, detail::stat_host(fs::path(host), "injected file"));
  (void)st;
  return Inject{fs::path(host), std::move(*clean)};
}

}  // namespace imagefs::cpio
