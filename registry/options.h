// What a user can tell the registry client: insecure registries, trust, credentials, platform,
// parallelism and patience. The CLI and the daemon fill one from their flags.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace imagefs::registry {

struct RegistryOptions {
  // Registries ("host" or "host:port", as in references) that may be reached over plain HTTP
  // (tried after HTTPS, as docker does) and whose HTTPS certificates are not verified. Loopback
  // registries (localhost, 127.0.0.0/8, [::1]) may always fall back to plain HTTP, but their
  // certificates are verified when they speak HTTPS.
  std::vector<std::string> insecure_registries;
  // A PEM file of CA certificates trusted in addition to the system's.
  std::filesystem::path ca_file;
  // Mirrors (registry/hosts.h, docs/MIRRORS.md): containerd's certs.d layout, DIR/<registry>/
  // hosts.toml and DIR/_default/hosts.toml (--hosts-dir; empty: none). A missing directory is
  // an error unless it is the default one.
  std::filesystem::path hosts_dir = "/etc/imagefs/certs.d";
  bool hosts_dir_is_default = true;
  // --mirror REGISTRY=URL, each a host with pull and resolve tried before REGISTRY's others.
  std::vector<std::string> mirrors;
  // docker's config.json; empty: $DOCKER_CONFIG/config.json, else ~/.docker/config.json.
  // Re-read when it changes (registry/credentials.h).
  std::filesystem::path docker_config;
  // A credential helper's answer is used this long, then asked for again (also at once when the
  // registry refuses it).
  std::chrono::seconds credential_helper_max_age{15 * 60};
  // The longest a refusal is remembered by the credentials: a failed helper, a helper asked
  // again after a refusal and refused again. The daemon sets its --negative-ttl.
  std::chrono::milliseconds refusal_ttl{5000};
  // Layers of one image downloaded at once.
  unsigned max_parallel = 3;
  // "os/arch[/variant]" chosen from multi-platform images; empty: the host's.
  std::string platform;
  std::string user_agent = "imagefs/0.1";

  std::chrono::milliseconds connect_timeout{15000};
  // The most one manifest, config or token request may take, retries and backoff included: a
  // registry that accepts connections and never answers (or trickles) fails the request with
  // "registry X did not answer within N s" after this long. 0: no limit.
  std::chrono::seconds request_timeout{30};
  // Blob downloads have no total limit (a large layer on a slow link takes as long as it takes)
  // but a stall rule: a transfer that moves fewer than stall_min_rate bytes a second over
  // stall_window is cut, then resumed with Range like a dropped one. An attempt that moved less
  // than stall_min_rate * stall_window bytes counts against max_attempts, so a registry that
  // trickles a few bytes per attempt is given up on.
  uint64_t stall_min_rate = 1024;
  std::chrono::seconds stall_window{30};
  // Attempts per request for 5xx, 429, timeouts and dropped connections (a dropped blob download
  // that made progress resumes without using up an attempt).
  unsigned max_attempts = 5;
  std::chrono::milliseconds backoff_initial{500};  // doubled per attempt
  std::chrono::milliseconds backoff_max{8000};
  // A Retry-After longer than this is not waited for: the error says when to try again.
  std::chrono::seconds retry_after_max{60};
};

}  // namespace imagefs::registry
