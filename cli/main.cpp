// The imagefs executable: everything happens in cli::run(). Run as mount.fuse.imagefs (the
// symlink the package puts in /sbin, where mount(8) looks for helpers), it is mount's helper.
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "cli/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string_view name = argc > 0 ? argv[0] : "imagefs";
  name = name.substr(name.find_last_of('/') + 1);
  if (name.starts_with("mount.")) return imagefs::cli::run_mount_helper(args, std::cout, std::cerr);
  return imagefs::cli::run(args, std::cout, std::cerr);
}
