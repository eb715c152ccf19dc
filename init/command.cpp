// Combination of Entrypoint, Cmd and an override into one argv.
#include "init/command.h"

namespace imagefs::init {

Result<Argv> compose_command(const Argv& entrypoint, const Argv& cmd,
                             const std::optional<Argv>& exec_override) {
  if (exec_override) {
    if (exec_override->empty() || exec_override->front().empty())
      return make_error(ENOEXEC, "the program to run instead of the image's command is empty");
    return *exec_override;
  }
  Argv argv = entrypoint;
  argv.insert(argv.end(), cmd.begin(), cmd.end());
  if (argv.empty() || argv.front().empty())
    return make_error(ENOEXEC, "the image has neither Entrypoint nor Cmd: nothing to run");
  return argv;
}

}  // namespace imagefs::init
