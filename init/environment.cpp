// The command's environment: the image's Env with docker's additions.
#include "init/environment.h"

namespace imagefs::init {

namespace {

std::string_view key_of(std::string_view entry) { return entry.substr(0, entry.find('=')); }

// Replaces the entry with the same key in place, or appends.
void set(Argv& env, std::string entry) {
  const std::string_view key = key_of(entry);
  for (std::string& e : env) {
    if (key_of(e) == key) {
      e = std::move(entry);
      return;
    }
  }
  env.push_back(std::move(entry));
}

}  // namespace

std::optional<std::string> env_value(const Argv& env, std::string_view key) {
  std::optional<std::string> out;
  for (const std::string& e : env) {
    const size_t eq = e.find('=');
    if (eq != std::string::npos && std::string_view(e).substr(0, eq) == key) out = e.substr(eq + 1);
  }
  return out;
}

Argv container_environment(const Argv& image_env, std::string_view hostname, std::string_view home,
                           const Argv& overrides) {
  Argv env;
  if (!env_value(image_env, "PATH")) env.push_back("PATH=" + std::string(kDefaultPath));
  env.push_back("HOSTNAME=" + std::string(hostname));
  for (const std::string& e : image_env) set(env, e);
  if (!env_value(env, "HOME")) env.push_back("HOME=" + std::string(home));
  for (const std::string& e : overrides) set(env, e);
  return env;
}

}  // namespace imagefs::init
