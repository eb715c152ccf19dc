// mount(8)'s helper for fstab lines of type fuse.imagefs: mount runs
// `/sbin/mount.fuse.imagefs SOURCE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v]`, and this turns
// it into `imagefs mount --OPTION... MOUNTPOINT` (the daemon in the background; mount returns
// once the mount is in place). Every option of `imagefs mount` has its -o spelling from the same
// table (OptionSpec), so no option can be added to one and forgotten in the other.
#include <ostream>
#include <set>
#include <sstream>

#include "cli/cli.h"
#include "cli/commands.h"
#include "common/text.h"

namespace imagefs::cli {
namespace {

// Options mount(8), systemd's fstab generator or the kernel's generic mount flags own: not ours.
bool generic_option(const std::string& key) {
  static const std::set<std::string, std::less<>> kGeneric = {
      "rw",         "ro",          "defaults", "auto",       "noauto",   "user",    "nouser",
      "users",      "owner",       "group",    "nofail",     "_netdev",  "nodev",   "dev",
      "nosuid",     "suid",        "noexec",   "exec",       "atime",    "noatime", "relatime",
      "norelatime", "strictatime", "lazytime", "nodiratime", "diratime", "sync",    "async",
      "dirsync",    "loud",        "silent",   "comment",    "fsname",   "subtype"};
  return kGeneric.contains(key) || key.starts_with("x-");
}

}  // namespace

Result<std::vector<std::string>> mount_helper_arguments(const std::vector<std::string>& args,
                                                        bool* fake) {
  std::vector<std::string> positional;
  std::vector<std::string> options;
  bool sloppy = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-o") {
      if (i + 1 >= args.size()) return make_error(EINVAL, "-o needs a value (OPTION,...)");
      options.push_back(args[++i]);
    } else if (a.starts_with("-o")) {
      options.push_back(a.substr(2));
    } else if (a == "-s") {
      sloppy = true;
    } else if (a == "-f") {
      if (fake) *fake = true;
    } else if (a == "-n" || a == "-v") {
      // mtab is the kernel's now; verbosity: the daemon says what it does in its log
    } else if (a == "-N" || a == "-t") {
      ++i;  // a namespace or the type: mount(8) has dealt with them
    } else if (a.starts_with("-") && a.size() > 1) {
      return make_error(EINVAL, "unknown argument " + printable(a));
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2)
    return make_error(EINVAL, "expected SOURCE MOUNTPOINT [-o OPTIONS] (as mount(8) gives them)");
  const Command* mount = nullptr;
  for (const Command& c : commands())
    if (c.name == "mount") mount = &c;
  std::vector<std::string> out{"mount"};
  for (const std::string& list : options) {
    std::istringstream items(list);
    for (std::string item; std::getline(items, item, ',');) {
      if (item.empty()) continue;
      size_t eq = item.find('=');
      std::string key = item.substr(0, eq);
      if (generic_option(key)) continue;
      std::string name = key;
      for (char& c : name)
        if (c == '_') c = '-';
      const OptionSpec* spec = nullptr;
      for (const OptionSpec& s : mount->options)
        if (s.name == name) spec = &s;
      if (!spec) {
        if (sloppy) continue;
        return make_error(EINVAL, "unknown mount option \"" + printable(key) +
                                      "\" (the options of `imagefs mount`, with _ for -: "
                                      "`imagefs help mount` lists them)");
      }
      if (spec->arity == Arity::flag) {
        if (eq != std::string::npos)
          return make_error(EINVAL, "mount option " + key + " takes no value");
        out.push_back("--" + name);
      } else {
        if (eq == std::string::npos) {
          std::string message = "mount option ";
          message.append(key).append(" needs a value (").append(key).append("=");
          message.append(spec->metavar).append(")");
          return make_error(EINVAL, message);
        }
        out.push_back("--" + name + "=" + item.substr(eq + 1));
      }
    }
  }
  out.push_back("--");
  out.push_back(positional[1]);
  return out;
}

int run_mount_helper(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  bool fake = false;
  auto translated = mount_helper_arguments(args, &fake);
  if (!translated.ok()) {
    err << "mount.fuse.imagefs: " << printable(translated.error().message) << "\n";
    return kExitUsage;
  }
  if (fake) return kExitOk;
  return run(*translated, out, err);
}

}  // namespace imagefs::cli
