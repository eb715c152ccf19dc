// What the default /init needs to know of an image, as cpio/ writes it into the archive at
// kConfigPath and the init reads it at boot (docs/ARCHITECTURE.md, "The default /init").
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "init/command.h"

namespace imagefs::init {

// Where the archive carries the config for the default /init.
inline constexpr std::string_view kConfigPath = "/.imagefs/init.conf";

// The parts of an image's config (config.json's "config" object) that decide how its command
// runs, plus the build's override of the command.
struct InitConfig {
  Argv entrypoint;
  Argv cmd;
  Argv env;                  // "KEY=VALUE", in the image's order
  std::string working_dir;   // "" = "/"
  std::string user;          // "", "name", "uid", "name:group", "uid:gid"
  std::optional<Argv> exec;  // --exec: replaces Entrypoint and Cmd
  friend bool operator==(const InitConfig&, const InitConfig&) = default;
};

// The file's bytes: NUL-terminated fields. The first is "imagefs-init-config 1"; then records of
// a key ("entrypoint", "cmd", "env", "workdir", "user", "exec"), a decimal count N and N values.
// Values must not hold a NUL (no argv or environment string can; init_config_from_image() refuses
// them). Deterministic: the same config gives the same bytes. `exec` is written only when set.
std::string encode_config(const InitConfig& config);

// Parses encode_config()'s bytes. Unknown keys are skipped (a newer imagefs may add some). EINVAL
// for anything else that does not fit: another magic, a newer version, a bad count, a truncated
// file.
Result<InitConfig> decode_config(std::string_view bytes);

}  // namespace imagefs::init
