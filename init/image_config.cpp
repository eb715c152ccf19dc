// OCI image config JSON -> InitConfig, with nlohmann/json (no exceptions: typed access is checked
// first).
#include "init/image_config.h"

#include <nlohmann/json.hpp>
#include <string>

namespace imagefs::init {

namespace {

using nlohmann::json;

Error bad(const std::string& why) {
  return make_error(EINVAL, "the image config is not usable for the default /init: " + why);
}

Result<std::string> string_field(const json& config, const char* name) {
  if (!config.contains(name) || config[name].is_null()) return std::string();
  const json& v = config[name];
  if (!v.is_string()) return bad(std::string(name) + " is not a string");
  std::string s = v.get<std::string>();
  if (s.find('\0') != std::string::npos) return bad(std::string(name) + " holds a NUL character");
  return s;
}

Result<Argv> list_field(const json& config, const char* name) {
  Argv out;
  if (!config.contains(name) || config[name].is_null()) return out;
  const json& v = config[name];
  if (!v.is_array()) return bad(std::string(name) + " is not a list of strings");
  for (const json& item : v) {
    if (!item.is_string()) return bad(std::string(name) + " holds something other than a string");
    std::string s = item.get<std::string>();
    if (s.find('\0') != std::string::npos)
      return bad(std::string(name) + " holds a string with a NUL character");
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

Result<InitConfig> init_config_from_image(std::string_view config_json) {
  const json doc = json::parse(config_json, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return bad("it is not a JSON object");
  InitConfig out;
  if (!doc.contains("config") || doc["config"].is_null()) return out;  // an image without one
  const json& config = doc["config"];
  if (!config.is_object()) return bad("\"config\" is not an object");
  IMAGEFS_TRY(entrypoint, list_field(config, "Entrypoint"));
  IMAGEFS_TRY(cmd, list_field(config, "Cmd"));
  IMAGEFS_TRY(env, list_field(config, "Env"));
  IMAGEFS_TRY(working_dir, string_field(config, "WorkingDir"));
  IMAGEFS_TRY(user, string_field(config, "User"));
  out.entrypoint = std::move(entrypoint);
  out.cmd = std::move(cmd);
  out.env = std::move(env);
  out.working_dir = std::move(working_dir);
  out.user = std::move(user);
  return out;
}

}  // namespace imagefs::init
