// OCI image config JSON -> InitConfig, with nlohmann/json (no exceptions: typed access is checked
// first). Entrypoint and Cmd are read as docker reads them: moby's image config declares them as a
// strslice.StrSlice, whose JSON decoding takes an array of strings or a single string, the latter
// being a list of one element (not split at spaces); anything else is refused, as docker does.
#include "init/image_config.h"

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>

namespace imagefs::init {

namespace {

using nlohmann::json;

// EIO, as for any malformed document from a registry (registry/manifest.h): a bad config is the
// image's fault, and the mount answers it with the errno README.md's troubleshooting lists.
Error bad(const std::string& why) {
  return make_error(EIO, "the image config is not usable for the default /init: " + why);
}

Result<std::string> string_field(const json& config, const char* name) {
  if (!config.contains(name) || config[name].is_null()) return std::string();
  const json& v = config[name];
  if (!v.is_string()) return bad(std::string(name) + " is not a string");
  std::string s = v.get<std::string>();
  if (s.find('\0') != std::string::npos) return bad(std::string(name) + " holds a NUL character");
  return s;
}

Result<std::string> checked_string(const json& v, const char* name) {
  std::string s = v.get<std::string>();
  if (s.find('\0') != std::string::npos)
    return bad(std::string(name) + " holds a string with a NUL character");
  return s;
}

enum class Form { list, list_or_string };

// A list of strings (Env), or, with Form::list_or_string, docker's StrSlice (Entrypoint, Cmd):
// "a b" is {"a b"}.
Result<Argv> list_field(const json& config, const char* name, Form form) {
  Argv out;
  if (!config.contains(name) || config[name].is_null()) return out;
  const json& v = config[name];
  if (form == Form::list_or_string && v.is_string()) {
    IMAGEFS_TRY(s, checked_string(v, name));
    out.push_back(std::move(s));
    return out;
  }
  if (!v.is_array())
    return bad(std::string(name) + (form == Form::list_or_string
                                        ? " is neither a string nor a list of strings"
                                        : " is not a list of strings"));
  for (const json& item : v) {
    if (!item.is_string()) return bad(std::string(name) + " holds something other than a string");
    IMAGEFS_TRY(s, checked_string(item, name));
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

Result<InitConfig> init_config_from_image(std::string_view config_json, std::optional<Argv> exec) {
  const json doc = json::parse(config_json, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return bad("it is not a JSON object");
  InitConfig out;
  out.exec = std::move(exec);
  if (!doc.contains("config") || doc["config"].is_null()) return out;  // an image without one
  const json& config = doc["config"];
  if (!config.is_object()) return bad("\"config\" is not an object");
  if (!out.exec) {
    // With --exec the image's command is never run, so nothing in it can stop the build.
    IMAGEFS_TRY(entrypoint, list_field(config, "Entrypoint", Form::list_or_string));
    IMAGEFS_TRY(cmd, list_field(config, "Cmd", Form::list_or_string));
    out.entrypoint = std::move(entrypoint);
    out.cmd = std::move(cmd);
  }
  IMAGEFS_TRY(env, list_field(config, "Env", Form::list));
  IMAGEFS_TRY(working_dir, string_field(config, "WorkingDir"));
  IMAGEFS_TRY(user, string_field(config, "User"));
  out.env = std::move(env);
  out.working_dir = std::move(working_dir);
  out.user = std::move(user);
  return out;
}

}  // namespace imagefs::init
