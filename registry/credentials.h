// Registry credentials from docker's config.json, as `docker login` leaves them: inline `auths`
// entries, per-registry `credHelpers` and a default `credsStore` (docker-credential-NAME get).
//
// Secrets never appear in messages: Credential::source says where a credential came from, and
// Error messages name hosts, files and helpers only.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/result.h"

namespace imagefs::registry {

struct Credential {
  std::string username;
  std::string password;
  // An OAuth refresh token (`identitytoken`, or a helper's Username "<token>"): traded for access
  // tokens with grant_type=refresh_token instead of sending a password.
  std::string identity_token;
  std::string source;  // "/root/.docker/config.json", "docker-credential-pass": for messages

  [[nodiscard]] bool has_password() const { return !username.empty() || !password.empty(); }
};

// The key docker uses for a registry in config.json and with credential helpers:
// "https://index.docker.io/v1/" for docker.io, else the host ("ghcr.io", "127.0.0.1:5000").
std::string docker_server_url(const std::string& host);

// The registry host a config.json key names: "https://index.docker.io/v1/" -> "docker.io",
// "https://ghcr.io/v2/" -> "ghcr.io", "registry-1.docker.io" -> "docker.io".
std::string host_of_config_key(std::string_view key);

// Where docker looks: $DOCKER_CONFIG/config.json, else ~/.docker/config.json.
std::filesystem::path default_docker_config();

// Credentials for registries, read once from one config.json. Thread-safe; each host's lookup
// (which may run a helper program) is cached for the lifetime of the object.
class DockerCredentials {
 public:
  // Reads `path` (empty: default_docker_config()). A missing file means no credentials; an
  // unreadable or malformed one is an error (EINVAL) naming the file and the problem.
  static Result<std::shared_ptr<DockerCredentials>> load(const std::filesystem::path& path = {});
  // No credentials at all (anonymous access only).
  static std::shared_ptr<DockerCredentials> none();

  // The credential for `host` (a reference's domain: "docker.io", "127.0.0.1:5000"), or nullopt.
  // Order, as docker's: credHelpers[host], else credsStore, else the auths entry. A helper that
  // answers "not found" means none; a helper that fails otherwise is an error naming it.
  Result<std::optional<Credential>> lookup(const std::string& host);

  // "/root/.docker/config.json" (or "no docker config"): where lookups come from, for messages.
  [[nodiscard]] const std::string& describe() const { return description_; }

  // How long a credential helper may take before it is killed.
  void set_helper_timeout(std::chrono::milliseconds timeout) { helper_timeout_ = timeout; }

 private:
  DockerCredentials() = default;
  Result<std::optional<Credential>> lookup_uncached(const std::string& host);
  Result<std::optional<Credential>> run_helper(const std::string& helper, const std::string& host);

  std::string description_ = "no docker config";
  std::map<std::string, Credential> auths_;     // by host
  std::map<std::string, std::string> helpers_;  // host -> helper name
  std::string store_;                           // credsStore
  std::chrono::milliseconds helper_timeout_{60000};

  Mutex mu_;
  std::map<std::string, std::optional<Credential>> cache_ GUARDED_BY(mu_);
};

// Base64 (RFC 4648, with padding), for Basic authorization and config.json's `auth`.
std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace imagefs::registry
