// The image config (OCI config.json, as the registry serves it) read into an InitConfig. Used by
// cpio/ at build time; not part of the static /init, which reads only the encoded file.
#pragma once

#include <string_view>

#include "common/result.h"
#include "init/init_config.h"

namespace imagefs::init {

// Entrypoint, Cmd, Env, WorkingDir and User of config.json's "config" object (all optional; null
// is the same as absent). EINVAL naming the field when the JSON is not an object, a field has the
// wrong type (the lists must be arrays of strings), or a string holds a NUL. `exec` is left unset.
Result<InitConfig> init_config_from_image(std::string_view config_json);

}  // namespace imagefs::init
