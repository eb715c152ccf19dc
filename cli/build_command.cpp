// `imagefs build REF -o FILE`: the whole job without FUSE, as a one-shot command for CI
// pipelines and machines without FUSE: pull what is missing, merge, and write the initramfs.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <ostream>
#include <system_error>
#include <vector>

#include "cli/commands.h"
#include "cli/progress.h"
#include "common/errno_error.h"
#include "cpio/archive.h"
#include "erofs/erofs.h"
#include "init/command.h"
#include "registry/platform.h"

namespace imagefs::cli {
namespace {

namespace fsys = std::filesystem;

// --exec's value: the words of a command line split at spaces ("/usr/bin/agent --port 80"), or,
// when it starts with '[', a JSON array of strings as in a Dockerfile's exec form
// ('["/usr/bin/python3", "-c", "print(1 + 1)"]') for arguments with spaces.
Result<std::vector<std::string>> parse_exec(const std::string& text) {
  const size_t start = text.find_first_not_of(" \t\n");
  std::vector<std::string> argv;
  if (start != std::string::npos && text[start] == '[') {
    const nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
    if (doc.is_discarded() || !doc.is_array())
      return make_error(EINVAL, "--exec " + text + ": not a JSON array of strings");
    for (const nlohmann::json& item : doc) {
      if (!item.is_string())
        return make_error(EINVAL, "--exec " + text + ": not a JSON array of strings");
      std::string arg = item.get<std::string>();
      if (arg.find('\0') != std::string::npos)
        return make_error(EINVAL, "--exec " + text + ": an argument holds a NUL character");
      argv.push_back(std::move(arg));
    }
  } else {
    argv = init::split_words(text);
  }
  if (argv.empty() || argv.front().empty())
    return make_error(EINVAL,
                      "--exec names no program: give one, e.g. --exec \"/usr/bin/agent "
                      "--port 80\"");
  return argv;
}

// Writes the archive to `file` through a temporary file in the same directory, renamed into
// place: readers see the old file or the whole new one, never a part.
Result<void> write_atomically(const cpio::Archive& archive, const fsys::path& file) {
  fsys::path dir = file.parent_path().empty() ? fsys::path(".") : file.parent_path();
  std::string tmpl = (dir / ("." + file.filename().string() + ".XXXXXX")).string();
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  int fd = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) return errno_error(errno, "cannot create a temporary file in", dir);
  fsys::path tmp(name.data());
  auto fail = [&](Error e) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return e;
  };
  if (Result<void> written = archive.write_to(fd, file); !written.ok())
    return fail(written.error());
  // No fsync: the rename makes the file appear whole or not at all to readers, which is what a
  // build step needs; durability across a power loss is not worth ~10 ms of every warm build.
  if (::fchmod(fd, 0644) != 0) return fail(errno_error(errno, "cannot write", file));
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return errno_error(errno, "cannot write", file);
  }
  // An existing file is swapped out (RENAME_EXCHANGE) and then removed, rather than renamed over:
  // readers see the same (the old file or the whole new one), but ext4 flushes a file renamed
  // over another at once (auto_da_alloc), which made up half of a warm build's time (~12 ms for
  // 20 MB). Like the missing fsync, that gives up only what a power loss would have kept.
  struct stat old {};
  if (::lstat(file.c_str(), &old) == 0 && S_ISREG(old.st_mode) &&
      ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, file.c_str(), RENAME_EXCHANGE) == 0) {
    (void)::unlink(tmp.c_str());  // now the old file
    return {};
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return errno_error(errno, "cannot rename into", file);
  }
  return {};
}

}  // namespace

// `build --format erofs`: rootfs.erofs (erofs/erofs.h) rather than an initramfs.
bool wants_erofs(const Args& args) {
  auto f = args.get("format");
  return f && *f == "erofs";
}

Result<cpio::ArchiveOptions> archive_options(const Args& args) {
  cpio::ArchiveOptions options;
  if (wants_erofs(args)) {
    if (args.get("level"))
      return make_error(EINVAL,
                        "--level sets a compression level: --format erofs is not "
                        "compressed");
  } else if (auto f = args.get("format")) {
    Result<cpio::Format> format = cpio::parse_format(*f);
    if (!format.ok())
      return make_error(format.error().code,
                        format.error().message + ", or erofs (rootfs.erofs, a disk image)");
    options.format = *format;
  }
  for (const std::string& spec : args.all("inject")) {
    IMAGEFS_TRY(inject, cpio::parse_inject(spec));
    options.injects.push_back(std::move(inject));
  }
  if (auto init = args.get("init")) {
    struct stat st {};
    if (::stat(init->c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      return make_error(ENOENT, "--init " + *init + ": no such regular file");
    options.init = fsys::absolute(*init);
  }
  if (auto exec = args.get("exec")) {
    if (options.init)
      return make_error(EINVAL,
                        "--exec replaces the command that imagefs' default /init runs: "
                        "it cannot be used with --init");
    IMAGEFS_TRY(argv, parse_exec(*exec));
    options.exec = std::move(argv);
  }
  if (auto level = args.get("level")) {
    bool zstd = options.format == cpio::Format::zstd;
    IMAGEFS_TRY(n, parse_number(*level, 1, zstd ? 19 : 12, "--level"));
    (zstd ? options.zstd_level : options.gzip_level) = static_cast<int>(n);
  }
  return options;
}

std::vector<OptionSpec> archive_option_specs() {
  return {
      {"format", Arity::value,
       "gz (default), zst or none; or erofs: the image's rootfs.erofs, an EROFS disk image",
       "FORMAT"},
      {"inject", Arity::repeated, "put a host file into the archive at GUEST, mode 0755",
       "HOST:GUEST"},
      {"init", Arity::value,
       "a program or script to become /init (mode 0755) instead of imagefs' default /init, "
       "which runs the image's command",
       "FILE"},
      {"exec", Arity::value,
       "the command the default /init runs instead of the image's Entrypoint and Cmd: words "
       "split at spaces, or a JSON array of strings",
       "COMMAND"},
      {"level", Arity::value,
       "compression level: gzip 1-12 (default 6; 12 is smaller than gzip -9), zstd 1-19 "
       "(default 3)",
       "N"},
  };
}

int run_build(const Args& args, Io& io) {
  auto output = args.get("output");
  if (args.positional().size() != 1 || !output) {
    io.err << "imagefs build: give one image and -o FILE\n";
    return kExitUsage;
  }
  const std::string& ref = args.positional()[0];
  auto options = archive_options(args);
  if (!options.ok()) return report(io, "build", options.error());
  // The tree is opened only if the archive's image part is not cached (a new image, or new
  // options): a changed agent reuses that part without reading the layers.
  auto image = open_image(args, ref, io, TreeWhen::later);
  if (!image.ok()) return report(io, "build " + ref, image.error());
  cpio::ImageSource source{image->image.manifest, {}};
  if (!options->init) {
    // The default /init runs the image's command, from its config.
    auto config = image->store.blobs->read(image->image.config);
    if (!config.ok()) return report(io, "build " + ref, config.error());
    source.config_json = std::move(*config);
  }

  ProgressView view(io.err, io.err_is_terminal);
  std::optional<size_t> item;
  // Shown in bytes of cpio made so far (the total is not known until the last segment). Only
  // the segments the store lacks are made: none is downloaded here, and with --format none none
  // is compressed.
  const bool erofs = wants_erofs(args);
  const bool raw = erofs || options->format == cpio::Format::none;
  cpio::BuildProgress progress{[&](size_t, size_t total, uint64_t raw_bytes) {
    if (!item)
      item = view.start(fsys::path(*output).filename().string(), 0,
                        (raw ? "writing " : "compressing ") + plural(total, "segment"));
    view.update(*item, raw_bytes);
  }};
  auto tree = [&] { return open_tree(*image); };
  Result<std::shared_ptr<const cpio::Archive>> archive = make_error(EINVAL, "no maker");
  if (erofs) {
    // The layout comes from the store, or from the tree (no file data is read for it).
    auto maker = erofs::ImageMaker::create(image->store.blobs);
    if (!maker.ok()) return report(io, "build " + ref, maker.error());
    archive = (*maker)->make(source, tree, *options);
  } else {
    auto maker = cpio::ArchiveMaker::create(image->store.blobs);
    if (!maker.ok()) return report(io, "build " + ref, maker.error());
    archive = (*maker)->make(source, tree, *options, &progress);
  }
  if (item) view.end(*item, archive.ok() ? ItemEnd::done : ItemEnd::failed);
  if (!archive.ok()) return report(io, "build " + ref, archive.error());
  if (!options->init) {
    // The default /init is a program of this machine's architecture.
    auto platform = registry::parse_platform(image->image.platform);
    const registry::Platform host = registry::host_platform();
    if (platform.ok() && platform->architecture != host.architecture)
      io.err << "imagefs build: warning: " << ref << " is for " << image->image.platform
             << ", but imagefs' default /init is built for " << host.str()
             << ": it will not run there; give an /init of that platform with --init\n";
  }
  if (auto written = write_atomically(**archive, *output); !written.ok())
    return report(io, "build " + ref, written.error());
  const cpio::ArchiveStats& s = (*archive)->stats();
  if (erofs) {
    io.err << "wrote " << *output << ": " << format_size((*archive)->size()) << " (EROFS, layout "
           << (s.segments_built > 0 ? "computed" : "reused") << ")\n";
    return kExitOk;
  }
  io.err << "wrote " << *output << ": " << format_size((*archive)->size()) << " ("
         << plural(s.segments, "segment") << ": " << s.segments_built
         << (raw ? " written, " : " compressed, ") << s.segments_reused << " reused)\n";
  return kExitOk;
}

}  // namespace imagefs::cli
