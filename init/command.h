// Docker's rules for the command a container runs, shared by the default /init (which applies
// them at boot) and by the tools that report what an image will run.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace imagefs::init {

using Argv = std::vector<std::string>;

// The argv to execute, as `docker run` combines them: Entrypoint followed by Cmd; Cmd alone when
// there is no Entrypoint. `exec_override` (imagefs.exec= on the kernel command line, or --exec)
// replaces both, as `docker run --entrypoint PROG ARGS` does. Fails (ENOEXEC) when the result is
// empty, saying the image has neither.
Result<Argv> compose_command(const Argv& entrypoint, const Argv& cmd,
                             const std::optional<Argv>& exec_override = std::nullopt);

}  // namespace imagefs::init
