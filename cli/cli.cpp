// Command dispatch, usage texts and `imagefs version` for the `imagefs` executable.
#include "cli/cli.h"

#include <archive.h>
#include <curl/curl.h>
#include <isa-l.h>
#include <libdeflate.h>
#include <lmdb.h>
#include <openssl/crypto.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <ostream>
#include <system_error>

#include "cli/commands.h"
#include "cli/config.h"
#include "cli/progress.h"
#include "common/errno_error.h"
#include "common/text.h"
#include "fs/version.h"
#include "registry/hosts.h"
#include "registry/platform.h"
#include "store/cache_dir.h"

#ifndef IMAGEFS_VERSION
#define IMAGEFS_VERSION "unknown"
#endif

namespace imagefs::cli {
namespace {

constexpr const char* kExitStatuses =
    "\nExit status: 0 success; 1 the command failed (the message says which image and why);\n"
    "2 bad usage (an unknown option, a missing or invalid value, a malformed reference).\n";

constexpr const char* kIntro =
    "Presents container images as directories holding their merged root filesystem and\n"
    "bootable initramfs archives.";

// Topics of `imagefs help TOPIC` that are no command; the manual page has them as sections.
struct Topic {
  const char* name;
  const char* title;  // the manual's section heading
  const char* text;
};
constexpr Topic kTopics[] = {
    {"config", "CONFIGURATION FILE",
     "Every command reads defaults for its options from /etc/imagefs/imagefs.conf (or the file\n"
     "that --config FILE or $IMAGEFS_CONFIG names; IMAGEFS_CONFIG= reads none). A missing\n"
     "default file is no error; a missing named one is. Each line is KEY = VALUE, where KEY is a\n"
     "long option name without the dashes (cache-dir, platform, ttl, level, allow-registry, ...;\n"
     "cache_dir is the same) and VALUE what the option takes on the command line. A repeatable\n"
     "option may be given on several lines; a flag takes yes or no. Lines starting with # are\n"
     "comments. A command takes the keys of its own options; the command line wins over the\n"
     "file (its list of a repeatable option replaces the file's). Options of one run are no\n"
     "keys: config, output, tar, json, repair, foreground, debug. An unknown key or a bad\n"
     "value is a usage error (exit status 2) naming the file and the line.\n"},
    {"fstab", "MOUNTING FROM FSTAB",
     "mount(8) mounts an fstab line of type fuse.imagefs through /sbin/mount.fuse.imagefs\n"
     "(the imagefs program under that name), for example:\n\n"
     "  imagefs /mnt/images fuse.imagefs allow_other,allow_registry=ghcr.io,ttl=300 0 0\n\n"
     "Every option of `imagefs mount` has an -o spelling: its long name with _ or - "
     "(cache_dir=DIR,\n"
     "ttl=300, allow_other, allow_registry=HOST, level=N, platform=OS/ARCH, config=FILE, ...;\n"
     "repeat a repeatable one). The options mount(8) itself handles (rw, ro, defaults, auto,\n"
     "noauto, user, nouser, users, owner, nofail, _netdev, nodev, nosuid, noexec, dev, suid,\n"
     "exec, atime, noatime, relatime, x-*, comment=*) are left alone. The daemon is started in\n"
     "the background and mount returns once the mount is in place.\n"},
};

std::string usage() {
  std::string text =
      std::string("usage: imagefs COMMAND [OPTIONS] [ARGS...]\n\n") + kIntro + " Commands:\n\n";
  for (const Command& c : commands()) {
    std::string left = "  " + c.name;
    text += left + std::string(left.size() < 12 ? 12 - left.size() : 1, ' ') + c.summary + "\n";
  }
  text += "\n`imagefs help COMMAND` (or `imagefs COMMAND --help`) describes one command;\n";
  text +=
      "`imagefs help config` the configuration file, `imagefs help fstab` mounting from fstab.\n";
  text += kExitStatuses;
  return text;
}

std::string command_usage(const Command& c) {
  std::string text = "usage: imagefs " + c.synopsis + "\n\n" + c.summary + "\n";
  if (!c.options.empty()) text += "\nOptions:\n" + describe_options(c.options);
  text += kExitStatuses;
  return text;
}

// --- usage checks (Command::check): arguments that no store, registry or mount could make right

Result<void> check_no_positional(const Args& args) {
  if (!args.positional().empty())
    return make_error(EINVAL, "unexpected argument \"" + printable(args.positional()[0]) + "\"");
  return {};
}

Result<void> check_references(const std::vector<std::string>& texts) {
  for (const std::string& text : texts) IMAGEFS_CHECK(registry::parse_reference(text));
  return {};
}

Result<void> check_pull(const Args& args) {
  if (args.positional().empty()) return make_error(EINVAL, "name at least one image reference");
  IMAGEFS_CHECK(check_references(args.positional()));
  IMAGEFS_CHECK(registry_options(args));
  return {};
}

Result<void> check_rm(const Args& args) {
  if (args.positional().empty()) return make_error(EINVAL, "name at least one image reference");
  IMAGEFS_CHECK(check_references(args.positional()));
  if (auto p = args.get("platform")) IMAGEFS_CHECK(registry::parse_platform(*p));
  return {};
}

Result<void> check_gc(const Args& args) {
  IMAGEFS_CHECK(check_no_positional(args));
  auto text = args.get("max-size");
  if (!text) return make_error(EINVAL, "--max-size SIZE is required (e.g. --max-size 10G)");
  auto size = parse_size(*text);
  if (!size.ok()) return size.error().context("--max-size");
  return {};
}

Result<void> check_export(const Args& args) {
  const auto& pos = args.positional();
  auto tar = args.get("tar");
  if (pos.empty() || pos.size() > 2 || (tar && pos.size() != 1) || (!tar && pos.size() != 2))
    return make_error(EINVAL, "give an image and a directory (or --tar FILE)");
  IMAGEFS_CHECK(check_references({pos[0]}));
  IMAGEFS_CHECK(registry_options(args));
  return {};
}

int version(const Args&, Io& io) {
  std::ostream& out = io.out;
  out << "imagefs " << IMAGEFS_VERSION << "\n";
  out << "  " << fs::fuse_version() << "\n";
  out << "  libcurl " << curl_version_info(CURLVERSION_NOW)->version << "\n";
  out << "  " << archive_version_string() << "\n";
  out << "  zlib " << zlibVersion() << "\n";
  out << "  ISA-L " << ISAL_MAJOR_VERSION << "." << ISAL_MINOR_VERSION << "." << ISAL_PATCH_VERSION
      << "\n";
  out << "  libdeflate " << LIBDEFLATE_VERSION_STRING << "\n";
  out << "  zstd " << ZSTD_versionString() << "\n";
  out << "  " << mdb_version(nullptr, nullptr, nullptr) << "\n";
  out << "  " << OpenSSL_version(OPENSSL_VERSION) << "\n";
  return kExitOk;
}

Result<void> check_build(const Args& args) {
  if (args.positional().size() != 1 || !args.get("output"))
    return make_error(EINVAL, "give one image and -o FILE");
  IMAGEFS_CHECK(check_references(args.positional()));
  IMAGEFS_CHECK(registry_options(args));
  IMAGEFS_CHECK(archive_options(args));
  return {};
}

// Text for roff: backslashes and dashes escaped, no line starting with a control character.
std::string roff(std::string_view text) {
  std::string out;
  bool line_start = true;
  for (char c : text) {
    if (line_start && (c == '.' || c == '\'')) out += "\\&";
    if (c == '\\')
      out += "\\e";
    else if (c == '-')
      out += "\\-";
    else
      out += c;
    line_start = c == '\n';
  }
  return out;
}

// The manual page, made from the same tables as `imagefs help` (cli/CMakeLists.txt writes it to
// build/imagefs.1 at build time; scripts/package installs it).
std::string man_page() {
  std::string m = ".TH IMAGEFS 1 \"\" \"imagefs " IMAGEFS_VERSION "\" \"User Commands\"\n";
  m += ".SH NAME\nimagefs \\- container images as directories: merged root file systems and "
       "bootable initramfs archives\n";
  m += ".SH SYNOPSIS\n.B imagefs\n.I COMMAND\n[\\fIOPTIONS\\fR] [\\fIARGS\\fR...]\n";
  m += ".SH DESCRIPTION\n" + roff(kIntro) + "\n";
  m += ".SH COMMANDS\n";
  for (const Command& c : commands()) {
    m += ".SS \"" + roff("imagefs " + c.synopsis) + "\"\n" + roff(c.summary) + "\n";
    for (const OptionSpec& o : c.options) {
      m += ".TP\n.B ";
      if (o.short_name) m += "\\-" + std::string(1, o.short_name) + ", ";
      m += roff("--" + o.name);
      if (o.arity != Arity::flag) m += " \\fI" + roff(o.metavar) + "\\fR";
      m += "\n" + roff(o.help) + (o.arity == Arity::repeated ? " (repeatable)" : "") + "\n";
    }
  }
  for (const Topic& t : kTopics) {
    m += ".SH " + std::string(t.title) + "\n.nf\n" + roff(t.text) + ".fi\n";
  }
  m += ".SH EXIT STATUS\n" +
       roff(std::string_view(kExitStatuses).substr(std::strlen("\nExit status: ")));
  m += ".SH FILES\n.TP\n/etc/imagefs/imagefs.conf\ndefaults for every command's options\n"
       ".TP\n/var/lib/imagefs\nthe store of root (others: $XDG_CACHE_HOME/imagefs)\n"
       ".TP\n/lib/systemd/system/imagefs.service\nthe mount as a systemd service\n";
  m += ".SH SEE ALSO\n.BR mount (8),\n.BR fusermount3 (1),\n.BR systemd.service (5)\n";
  return m;
}

// For the bash completion (packaging/imagefs.bash): a line per command, its name and then its
// options, "--name" for a flag and "--name=METAVAR" for one that takes a value.
std::string completion_table() {
  std::string t;
  for (const Command& c : commands()) {
    t += c.name;
    for (const OptionSpec& o : c.options) {
      t += " --" + o.name;
      if (o.arity != Arity::flag) t += "=" + o.metavar;
    }
    t += "\n";
  }
  return t;
}

int help(const Args& args, Io& io) {
  if (args.has("man")) {
    io.out << man_page();
    return kExitOk;
  }
  if (args.has("complete")) {
    io.out << completion_table();
    return kExitOk;
  }
  if (!args.positional().empty()) {
    for (const Topic& t : kTopics)
      if (args.positional()[0] == t.name) {
        io.out << t.text;
        return kExitOk;
      }
    for (const Command& c : commands())
      if (c.name == args.positional()[0]) {
        io.out << command_usage(c);
        return kExitOk;
      }
    io.err << "imagefs: no command \"" << args.positional()[0] << "\"\n\n" << usage();
    return kExitUsage;
  }
  io.out << usage();
  return kExitOk;
}

}  // namespace

std::vector<OptionSpec> cache_options() {
  return {{"cache-dir", Arity::value,
           "the store (default: /var/lib/imagefs for root, else $XDG_CACHE_HOME/imagefs or "
           "~/.cache/imagefs)",
           "DIR"}};
}

std::vector<OptionSpec> registry_option_specs() {
  return {
      {"platform", Arity::value, "platform of multi-platform images (default: this host's)",
       "OS/ARCH[/VARIANT]"},
      {"insecure-registry", Arity::repeated,
       "a registry that may use plain HTTP or an unverified certificate", "HOST[:PORT]"},
      {"ca-file", Arity::value, "PEM file of CA certificates to trust besides the system's",
       "FILE"},
      {"hosts-dir", Arity::value,
       "containerd-style hosts.toml directory for mirrors, DIR/REGISTRY/hosts.toml "
       "(default: /etc/imagefs/certs.d)",
       "DIR"},
      {"mirror", Arity::repeated, "a mirror tried before REGISTRY for pulls and tags",
       "REGISTRY=URL"},
      {"docker-config", Arity::value,
       "docker's config.json for credentials (default: $DOCKER_CONFIG/config.json, "
       "~/.docker/config.json)",
       "FILE"},
      {"max-parallel", Arity::value, "layers downloaded at once (default: 3)", "N"},
      {"registry-timeout", Arity::value,
       "the most one manifest or token request may take, retries included (default: 30)",
       "SECONDS"},
      {"stall-rate", Arity::value,
       "a layer download moving fewer bytes a second than this over --stall-window is cut "
       "and resumed (default: 1024)",
       "BYTES"},
      {"stall-window", Arity::value, "the window of --stall-rate (default: 30)", "SECONDS"},
  };
}

std::vector<OptionSpec> image_option_specs() {
  std::vector<OptionSpec> specs = registry_option_specs();
  specs.push_back({"pull", Arity::flag,
                   "ask the registry for the tag again even if the store has resolved it", ""});
  return specs;
}

Result<registry::RegistryOptions> registry_options(const Args& args) {
  registry::RegistryOptions options;
  options.insecure_registries = args.all("insecure-registry");
  if (auto v = args.get("ca-file")) {
    if (access(v->c_str(), R_OK) != 0) return errno_error(errno, "--ca-file " + *v);
    options.ca_file = *v;
  }
  if (auto v = args.get("docker-config")) options.docker_config = *v;
  if (auto v = args.get("hosts-dir")) {
    options.hosts_dir = *v;
    options.hosts_dir_is_default = false;
  }
  options.mirrors = args.all("mirror");
  for (const std::string& mirror : options.mirrors)
    IMAGEFS_CHECK(registry::parse_mirror_option(mirror));
  if (auto v = args.get("platform")) {
    auto platform = registry::parse_platform(*v);
    if (!platform.ok()) return platform.error().context("--platform");
    options.platform = *v;
  }
  if (auto v = args.get("max-parallel")) {
    IMAGEFS_TRY(n, parse_number(*v, 1, 64, "--max-parallel"));
    options.max_parallel = static_cast<unsigned>(n);
  }
  if (auto v = args.get("registry-timeout")) {
    IMAGEFS_TRY(n, parse_number(*v, 1, 24L * 3600, "--registry-timeout"));
    options.request_timeout = std::chrono::seconds(n);
  }
  if (auto v = args.get("stall-rate")) {
    IMAGEFS_TRY(n, parse_number(*v, 1, 1L << 30, "--stall-rate"));
    options.stall_min_rate = static_cast<uint64_t>(n);
  }
  if (auto v = args.get("stall-window")) {
    IMAGEFS_TRY(n, parse_number(*v, 1, 3600, "--stall-window"));
    options.stall_window = std::chrono::seconds(n);
  }
  return options;
}

Result<Store> open_store(const Args& args) {
  std::filesystem::path root;
  if (auto dir = args.get("cache-dir")) {
    root = *dir;
  } else {
    IMAGEFS_TRY(dflt, store::default_cache_dir());
    root = dflt;
  }
  IMAGEFS_TRY(blobs, store::BlobStore::open(root));
  IMAGEFS_TRY(catalog, store::Catalog::open(store::Catalog::file_in(root)));
  return Store{blobs, catalog};
}

int report(Io& io, const std::string& what, const Error& error) {
  // "pull alpine" and a message that names the image already ("docker.io/library/alpine:latest:
  // no image for platform ..."; the puller's messages do, for the daemon's log): the reference
  // once, as the message writes it.
  std::string context = what;
  if (size_t space = what.find(' '); space != std::string::npos) {
    std::string named = error.message.substr(0, error.message.find(": "));
    named = named.substr(0, named.find(" ("));  // "REF (linux/arm64)"
    auto subject = registry::parse_reference(what.substr(space + 1));
    auto in_message = registry::parse_reference(named);
    if (subject.ok() && in_message.ok() && subject->str() == in_message->str())
      context = what.substr(0, space);
  }
  // Messages may quote registries and tar names: printable, so no answer can drive the terminal.
  io.err << "imagefs: " << context << ": " << printable(error.message) << "\n";
  return kExitFailed;
}

// build's archive options but --format: a mount serves every format.
static std::vector<OptionSpec> mount_archive_specs() {
  std::vector<OptionSpec> specs = archive_option_specs();
  std::erase_if(specs, [](const OptionSpec& s) { return s.name == "format"; });
  return specs;
}

const std::vector<Command>& commands() {
  static const std::vector<Command> kCommands = [] {
    auto with = [](std::vector<OptionSpec> a, const std::vector<OptionSpec>& b) {
      a.insert(a.end(), b.begin(), b.end());
      return a;
    };
    std::vector<Command> list;
    list.push_back({"pull", "pull [OPTIONS] REF...",
                    "download images into the store (verified against their digests)",
                    with(cache_options(), registry_option_specs()), run_pull, check_pull});
    list.push_back({"images", "images [--cache-dir DIR]",
                    "list the images in the store: reference, digest, platform, size, last use",
                    cache_options(), run_images, check_no_positional});
    list.push_back({"rm", "rm [OPTIONS] REF...",
                    "remove references from the store, and the images no other reference names",
                    with(cache_options(),
                         {{"platform", Arity::value, "only this platform's image (default: all)",
                           "OS/ARCH[/VARIANT]"}}),
                    run_rm, check_rm});
    list.push_back(
        {"gc", "gc --max-size SIZE [--cache-dir DIR]",
         "shrink the store to SIZE (e.g. 10G), least recently used images first",
         with(cache_options(), {{"max-size", Arity::value,
                                 "the size to shrink to: bytes, or with K, M, G, T", "SIZE"}}),
         run_gc, check_gc});
    list.push_back({"verify", "verify [--repair] [OPTIONS]",
                    "re-hash every blob in the store, name the images a bad one belongs to, and "
                    "with --repair fetch it again",
                    with(with(cache_options(), registry_option_specs()),
                         {{"repair", Arity::flag,
                           "fetch bad blobs again from the registries of the images that use "
                           "them, and remove what was built from them",
                           ""}}),
                    run_verify, check_no_positional});
    list.push_back(
        {"build", "build [OPTIONS] REF -o FILE",
         "write an image's initramfs (newc cpio of its root filesystem, /init and "
         "injected files), or with --format erofs its rootfs.erofs disk image",
         with(with(with(cache_options(), image_option_specs()), archive_option_specs()),
              {{"output", Arity::value, "the archive to write (atomically)", "FILE", 'o'}}),
         run_build, check_build});
    list.push_back(
        {"mount", "mount [OPTIONS] MOUNTPOINT",
         "present every image reference as a directory: rootfs/, initramfs.cpio.gz, "
         ".cpio.zst, .cpio, config.json, manifest.json, digest",
         with(with(with(cache_options(), registry_option_specs()), mount_archive_specs()),
              mount_option_specs()),
         run_mount, check_mount});
    list.push_back({"status",
                    "status [--json | --prometheus] [MOUNTPOINT...]",
                    "what running mounts are doing: pulls in flight, recent errors",
                    {{"json", Arity::flag, "print each mount's status as JSON", ""},
                     {"prometheus", Arity::flag,
                      "print one mount's metrics in Prometheus' text format (MOUNT/.metrics)", ""}},
                    run_status});
    list.push_back(
        {"export", "export [OPTIONS] REF DIR | export [OPTIONS] --tar FILE REF",
         "write an image's merged root filesystem to a new directory or a tar file",
         with(with(cache_options(), image_option_specs()),
              {{"tar", Arity::value, "write a tar archive instead of a directory", "FILE"}}),
         run_export, check_export});
    list.push_back({"version",
                    "version",
                    "print the versions of imagefs and the libraries it runs with",
                    {},
                    version,
                    check_no_positional});
    // Every command reads the configuration file (cli/config.h); --config names another.
    for (Command& c : list)
      c.options.push_back({"config", Arity::value,
                           "read defaults for these options from FILE (default: $IMAGEFS_CONFIG, "
                           "else /etc/imagefs/imagefs.conf if it exists)",
                           "FILE"});
    list.push_back(
        {"help",
         "help [COMMAND | config | fstab]",
         "describe the commands, one command, the configuration file or fstab mounts",
         {{"man", Arity::flag, "print the manual page (roff), as man(1) reads it", ""},
          {"complete", Arity::flag, "print each command's options, for the bash completion", ""}},
         help});
    return list;
  }();
  return kCommands;
}

namespace {

int dispatch(const std::vector<std::string>& args, Io& io) {
  if (args.empty()) {
    io.err << usage();
    return kExitUsage;
  }
  std::string name = args[0];
  if (name == "--help" || name == "-h") name = "help";
  if (name == "--version") name = "version";
  for (const Command& c : commands()) {
    if (c.name != name) continue;
    std::vector<std::string> rest(args.begin() + 1, args.end());
    for (const std::string& a : rest)
      if (a == "--help" || a == "-h") {
        io.out << command_usage(c);
        return kExitOk;
      }
    Result<Args> parsed = parse_args(rest, c.options);
    if (!parsed.ok()) {
      io.err << "imagefs " << c.name << ": " << printable(parsed.error().message) << "\n\n"
             << command_usage(c);
      return kExitUsage;
    }
    Args merged = *parsed;
    Config config;
    if (c.name != "help") {
      // The file's values fill in what the command line leaves out; a bad file is a usage error.
      Result<Config> loaded = load_config(parsed->get("config"));
      if (!loaded.ok()) {
        io.err << "imagefs " << c.name << ": " << printable(loaded.error().message) << "\n";
        return kExitUsage;
      }
      config = std::move(*loaded);
      merged = with_config(config, c.options, std::move(merged));
    }
    if (c.check) {
      if (Result<void> checked = c.check(merged); !checked.ok()) {
        Error error = blame_config(config, *parsed, checked.error());
        // Not about an option the file set by name, yet the command line alone passes: the
        // file's values together are at fault.
        if (error.message == checked.error().message && !config.entries.empty() &&
            c.check(*parsed).ok())
          error = error.context(config.file);
        io.err << "imagefs " << c.name << ": " << printable(error.message) << "\nusage: imagefs "
               << c.synopsis << " (`imagefs help " << c.name << "` describes the options)\n";
        return kExitUsage;
      }
    }
    return c.run(merged, io);
  }
  io.err << "imagefs: unknown command \"" << printable(name) << "\"\n\n" << usage();
  return kExitUsage;
}

}  // namespace

int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  bool terminal = false;
  size_t width = 0;
  if (&err == &std::cerr) {
    // Read once at startup, before any thread exists.
    const char* term = std::getenv("TERM");  // NOLINT(concurrency-mt-unsafe)
    terminal = isatty(STDERR_FILENO) && !(term && std::strcmp(term, "dumb") == 0);
    struct winsize size {};
    if (terminal && ::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0) width = size.ws_col;
  }
  if (!terminal) {
    Io io{out, err, false};
    return dispatch(args, io);
  }
  // On a terminal every line of the command's output and messages is printed above the progress
  // area (cli/progress.h), which never overwrites them.
  Screen screen(err, width);
  ScreenBuf out_buf(screen, out);
  ScreenBuf err_buf(screen, err);
  std::ostream screen_out(&out_buf);
  std::ostream screen_err(&err_buf);
  Io io{screen_out, screen_err, true};
  return dispatch(args, io);
}

}  // namespace imagefs::cli
