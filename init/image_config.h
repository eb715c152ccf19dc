// The image config (OCI config.json, as the registry serves it) read into an InitConfig. Used by
// cpio/ at build time; not part of the static /init, which reads only the encoded file.
#pragma once

#include <optional>
#include <string_view>

#include "common/result.h"
#include "init/init_config.h"

namespace imagefs::init {

// Entrypoint, Cmd, Env, WorkingDir and User of config.json's "config" object (all optional; null
// is the same as absent), with `exec` (--exec) as the override of the command. Entrypoint and Cmd
// are read as docker reads them: an array of strings, or one string that is a list of one element
// ("echo hi" is {"echo hi"}); with `exec` they are not read at all (they can be anything). EIO
// naming the field when the JSON is not an object, a field has the wrong type (Env must be an
// array of strings, WorkingDir and User strings), or a string holds a NUL: the image is broken,
// as for any malformed registry document.
Result<InitConfig> init_config_from_image(std::string_view config_json,
                                          std::optional<Argv> exec = std::nullopt);

}  // namespace imagefs::init
