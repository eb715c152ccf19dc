// The environment of the command, as docker and runc build it from an image's Env.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "init/command.h"

namespace imagefs::init {

// docker's PATH for an image whose Env has none.
inline constexpr std::string_view kDefaultPath =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// The value of KEY in "KEY=VALUE" entries (the last one wins); nullopt when absent.
std::optional<std::string> env_value(const Argv& env, std::string_view key);

// docker's rules: PATH=kDefaultPath unless the image sets PATH, HOSTNAME=`hostname`, then the
// image's Env (a later KEY replaces an earlier one, in its place), HOME=`home` unless set by then,
// then `overrides` (imagefs.env= on the kernel command line, as `docker run -e`). Entries without
// '=' are kept as they are (their whole text is the key).
Argv container_environment(const Argv& image_env, std::string_view hostname, std::string_view home,
                           const Argv& overrides = {});

}  // namespace imagefs::init
