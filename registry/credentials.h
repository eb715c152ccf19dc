// Registry credentials from docker's config.json, as `docker login` leaves them: inline `auths`
// entries, per-registry `credHelpers` and a default `credsStore` (docker-credential-NAME get),
// kept current while a daemon runs: the file re-read when it changes, helpers asked again when
// their answer is old or was refused.
//
// Secrets never appear in messages: Credential::source says where a credential came from, and
// Error messages name hosts, files and helpers only.
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/result.h"
#include "common/single_flight.h"
#include "registry/clock.h"

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

// How long what DockerCredentials learned is kept (see README, "Credentials").
struct CredentialPolicy {
  // A credential helper's answer is used this long, then the helper is asked again at the next
  // use. Cloud helpers hand out tokens (gcloud's last 1 h, ACR's 3 h, ECR's 12 h); a bound well
  // under the shortest means a daemon that runs for weeks asks before the registry refuses.
  std::chrono::seconds helper_max_age{15 * 60};
  // The longest a refusal is remembered: a helper that failed is not run again sooner, nor is a
  // helper asked again after a refusal whose new answer was refused again. The daemon gives its
  // --negative-ttl, so nothing here outlives a failed lookup.
  std::chrono::milliseconds refusal_ttl{5000};
  // How long a credential helper may take before it is killed.
  std::chrono::milliseconds helper_timeout{60000};
};

// Credentials for registries from one config.json, kept current for a process that runs for
// weeks. Thread-safe.
// - The file is checked at every lookup (a stat: device, inode, size, mtime, ctime), re-read when
//   it changed, or when it changed so recently (under 2 s) that a same-size write in the same
//   timestamp tick could hide; a new text drops every helper answer. A file that became
//   malformed fails lookups (EINVAL naming it) until it is fixed.
// - A helper's answer (credentials, or "none") is kept for policy.helper_max_age, or until
//   refused() drops it; a helper's failure for policy.refusal_ttl. Concurrent lookups of one
//   host share one helper run. At most 256 hosts' answers are kept (a map keyed by what users
//   type): the oldest go first.
class DockerCredentials {
 public:
  // Reads `path` (empty: default_docker_config()). A missing file means no credentials (until
  // it appears); an unreadable or malformed one is an error (EINVAL) naming the file and the
  // problem. `clock` times helper answers (empty: the system clock).
  static Result<std::shared_ptr<DockerCredentials>> load(const std::filesystem::path& path = {},
                                                         std::shared_ptr<Clock> clock = {},
                                                         CredentialPolicy policy = {});
  // No credentials at all (anonymous access only).
  static std::shared_ptr<DockerCredentials> none();

  DockerCredentials(const DockerCredentials&) = delete;
  DockerCredentials& operator=(const DockerCredentials&) = delete;

  // The credential for `host` (a reference's domain: "docker.io", "127.0.0.1:5000"), or nullopt.
  // Order, as docker's: credHelpers[host], else credsStore, else the auths entry. A helper that
  // answers "not found" means the auths entry, if any; a helper that fails otherwise is an error
  // naming it (EACCES).
  Result<std::optional<Credential>> lookup(const std::string& host);

  // The registry (or its token service) refused `used`, what lookup(host) gave (nullopt: the
  // request went without credentials). Returns true when a new lookup may give something else:
  // the answer came from a credential helper, which the next lookup runs again (or it changed
  // meanwhile). False when `used` came from config.json itself (a change to the file shows at
  // the next lookup anyway), or when the helper was already asked again after a refusal less
  // than policy.refusal_ttl ago and `used` is that answer.
  bool refused(const std::string& host, const std::optional<Credential>& used);

  // "/root/.docker/config.json" (or "no docker config"): where lookups come from, for messages.
  [[nodiscard]] const std::string& describe() const { return description_; }

  void set_helper_timeout(std::chrono::milliseconds timeout) EXCLUDES(mu_);

 private:
  struct Config {
    std::map<std::string, Credential> auths;     // by host
    std::map<std::string, std::string> helpers;  // host -> helper name (credHelpers)
    std::string store;                           // credsStore
  };
  // What a stat of the file says; equal stamps mean an unchanged file (unless racy).
  struct Stamp {
    bool exists = false;
    uint64_t device = 0;
    uint64_t inode = 0;
    int64_t size = -1;
    int64_t mtime_ns = 0;
    int64_t ctime_ns = 0;  // moves on every write, even one that restores the mtime (cp -p)
    bool operator==(const Stamp&) const = default;
  };
  // A helper's answer for one host.
  struct Answer {
    Result<std::optional<Credential>> result;
    std::chrono::steady_clock::time_point obtained;
    bool after_refusal = false;  // asked again because its previous answer was refused
  };

  DockerCredentials(std::filesystem::path path, std::shared_ptr<Clock> clock,
                    CredentialPolicy policy);
  static Result<Config> parse(const std::string& text, const std::string& file);
  static Stamp stamp_of(const struct stat& st);
  // Re-reads the file if it changed; the config's error if it is malformed.
  Result<void> refresh() REQUIRES(mu_);
  [[nodiscard]] std::string helper_for(const std::string& host) const REQUIRES(mu_);
  [[nodiscard]] std::optional<Credential> inline_entry(const std::string& host) const REQUIRES(mu_);
  [[nodiscard]] bool fresh(const Answer& answer) const REQUIRES(mu_);
  void keep(const std::string& host, Answer answer) REQUIRES(mu_);
  Result<std::optional<Credential>> run_helper(const std::string& helper, const std::string& host,
                                               std::chrono::milliseconds timeout) const;

  const std::filesystem::path path_;  // empty: no config at all
  const std::string description_;
  const std::shared_ptr<Clock> clock_;
  SingleFlight<std::string, std::optional<Credential>> helper_runs_;  // by host and helper

  Mutex mu_;
  CredentialPolicy policy_ GUARDED_BY(mu_);
  Config config_ GUARDED_BY(mu_);
  std::optional<Error> config_error_ GUARDED_BY(mu_);  // the file as last read is malformed
  Stamp stamp_ GUARDED_BY(mu_);
  bool racy_ GUARDED_BY(mu_) = false;  // stamp_ may not tell a change apart: compare the text
  std::string text_ GUARDED_BY(mu_);
  uint64_t generation_ GUARDED_BY(mu_) = 0;  // counts texts read; answers of older ones are stale
  std::map<std::string, Answer> answers_ GUARDED_BY(mu_);  // by host
  std::set<std::string> reasked_ GUARDED_BY(mu_);  // hosts whose helper runs after a refusal
};

// Whether two lookups gave the same secret (both none, or the same user, password and token).
bool same_credential(const std::optional<Credential>& a, const std::optional<Credential>& b);

// Base64 (RFC 4648, with padding), for Basic authorization and config.json's `auth`.
std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace imagefs::registry
