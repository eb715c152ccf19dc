// The `imagefs` command line: parses arguments and dispatches to the modules. main() is a thin
// wrapper around run(), so commands can be tested without a process.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace imagefs::cli {

// Runs the command in `args` (without the program name). Returns the process exit status:
// 0 success, 1 the command failed, 2 bad usage.
int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace imagefs::cli
