// Docker's rules for the command a container runs, shared by the default /init (which applies
// them at boot) and by the tools that report what an image will run.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace imagefs::init {

using Argv = std::vector<std::string>;

// The argv to execute, as `docker run` combines them: Entrypoint followed by Cmd; Cmd alone when
// there is no Entrypoint. `args` (the words after "--" on the kernel command line), when not
// empty, replace Cmd as `docker run IMAGE ARGS...` does. `exec_override` (--exec, or imagefs.exec=
// on the kernel command line) replaces Entrypoint and Cmd, as `docker run --entrypoint PROG IMAGE
// ARGS...` does: the result is the override followed by `args`. Fails (ENOEXEC) when the result is
// empty, saying the image has neither.
Result<Argv> compose_command(const Argv& entrypoint, const Argv& cmd,
                             const std::optional<Argv>& exec_override = std::nullopt,
                             const Argv& args = {});

// The words of `text`, split at spaces, tabs and newlines (no quoting).
Argv split_words(std::string_view text);

// The file to execute for argv[0] `name`, as runc finds it: a name with a '/' is used as it is;
// otherwise the first "DIR/name" along `path` (the command's PATH, ':'-separated; an empty DIR is
// ".") for which `is_executable` is true. ENOENT naming the name and the PATH when there is none.
Result<std::string> find_program(const std::string& name, std::string_view path,
                                 const std::function<bool(const std::string&)>& is_executable);

}  // namespace imagefs::init
